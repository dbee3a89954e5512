"""`slmflow graphs`: the project's graphs and their input fields."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from slmflow.cli.output import console, print_json
from slmflow.project import find_project
from slmflow.settings import load_settings

__all__ = ["graphs"]


def graphs(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    project: Annotated[Path | None, typer.Option(help="Project directory (default: cwd).")] = None,
) -> None:
    """List the project's graphs with their input fields."""
    settings = load_settings(**({"project": project} if project else {}))
    specs = find_project(settings.project).load_all()
    if json_output:
        print_json([
            {"name": s.name, "version": s.version, "description": s.description,
             "input": s.input.model_json_schema(), "output": s.output.model_json_schema()}
            for s in specs.values()
        ])  # fmt: skip
        return
    table = Table("graph", "version", "input fields", "description")
    for spec in specs.values():
        fields = ", ".join(f"{n}: {t}" for n, t in spec.input_fields().items())
        table.add_row(spec.name, spec.version, fields, spec.description)
    console.print(table)
