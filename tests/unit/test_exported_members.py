"""The public API is one sorted list, every module declares its own, and no project is imported."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest

import slmflow
from slmflow import errors

PACKAGE_DIR = Path(slmflow.__file__).parent
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(slmflow.__path__, prefix="slmflow.")
    if not info.name.rsplit(".", 1)[-1].startswith("_")
)
PROJECT_IMPORT = re.compile(r"^(import|from)\s+(agents|tools|graphs|workers)\b", re.MULTILINE)


PUBLIC_API = json.loads((Path(__file__).parent / "public_api.json").read_text())
"""The committed public surface, by group: a change to it is a change to this file, on purpose."""


def test_public_api_is_the_committed_snapshot_in_its_groups() -> None:
    groups = ("sdk", "outcomes", "authoring", "errors")
    assert slmflow.__all__ == [name for group in groups for name in PUBLIC_API[group]]
    for group in PUBLIC_API.values():
        assert group == sorted(group)
    assert len(slmflow.__all__) == len(set(slmflow.__all__))


def test_every_error_is_exported() -> None:
    assert PUBLIC_API["errors"] == sorted(errors.__all__)
    raised = {name for name, value in vars(errors).items()
              if isinstance(value, type) and issubclass(value, errors.SlmflowError)}  # fmt: skip
    assert raised == set(PUBLIC_API["errors"])


def test_every_exported_name_exists_and_is_public() -> None:
    for name in slmflow.__all__:
        assert not name.startswith("_"), name
        assert hasattr(slmflow, name), name


def test_module_walk_reaches_the_cli_package() -> None:
    assert "slmflow.cli.run" in MODULES
    assert "slmflow.errors" in MODULES


@pytest.mark.parametrize("module_name", MODULES)
def test_every_module_declares_all(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{module_name} has no __all__"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name!r}"


def test_framework_never_imports_the_project() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE_DIR)}: {match.group(0)}"
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if "templates" not in path.relative_to(PACKAGE_DIR).parts  # `slmflow init`'s project: data, not slmflow
        for match in PROJECT_IMPORT.finditer(path.read_text())
    ]
    assert offenders == []
