"""`slmflow init DIR`: a new project with one graph, its test, and its deploy overlay."""

from __future__ import annotations

import re
import shutil
from importlib import metadata, resources
from pathlib import Path
from typing import Annotated

import typer

from slmflow.cli.output import console
from slmflow.errors import UsageError

__all__ = ["init", "write_project"]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
_TEXT = {".py", ".toml", ".md", ".json", ".yaml", ""}


def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the project (must not exist, or be empty).")],
    name: Annotated[str | None, typer.Option(help="Project name (default: the directory's name).")] = None,
    image: Annotated[str | None, typer.Option(help="Container image of the deploy overlay (no tag).")] = None,
    tag: Annotated[str, typer.Option(help="Its tag.")] = "0.1.0",
) -> None:
    """Write a new project: agents/, tools/, graphs/, workers/, pyproject.toml, a test, a deploy overlay."""
    project = write_project(directory, name, image, tag)
    console.print(f"wrote project {project.name!r} in {directory}")
    console.print(f"  cd {directory}\n  slmflow graphs\n  slmflow run feedback --input examples/praise.json\n"
                  "  python -m pytest tests")  # fmt: skip


def write_project(directory: Path, name: str | None = None, image: str | None = None, tag: str = "0.1.0") -> Path:
    """Copy the project template to `directory`, with slmflow's Kubernetes base as its deploy base."""
    name = name or re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-") or "slmflow-project"
    if not _NAME.match(name):
        raise UsageError(f"project name {name!r}: use lower-case letters, digits and '-', starting with a letter "
                         "(it names the Kubernetes namespace), e.g. --name my-project")  # fmt: skip
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory} exists and is not an empty directory: choose a new one")
    templates = resources.files("slmflow") / "templates"
    values = {"name": name, "image": image or f"registry.example.com/{name}", "tag": tag, "version": _version()}
    with resources.as_file(templates / "project") as source, resources.as_file(templates / "kubernetes") as base:
        shutil.copytree(source, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(base, directory / "deploy" / "kubernetes" / "base",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for path in directory.rglob("*"):
        if path.is_file() and path.suffix in _TEXT and "deploy/kubernetes/base" not in path.as_posix():
            text = path.read_text()
            for key, value in values.items():
                text = text.replace("{{" + key + "}}", value)
            path.write_text(text)
    return directory


def _version() -> str:
    try:
        return metadata.version("slmflow")
    except metadata.PackageNotFoundError:
        return "0.1.0"
