"""What the README says about settings is what the code does: every variable in its table is a
`Settings` field, every field is in the table, and a literal default is the field's default."""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path

from slmflow.settings import Settings
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
TABLE = README[README.index("## Settings") : README.index("\n## ", README.index("## Settings") + 5)]
ROWS = [line for line in TABLE.splitlines() if line.startswith("| `SLMFLOW_")]


def _names(cell: str) -> list[str]:
    """`SLMFLOW_MAX_INPUT_BYTES` / `_METADATA_BYTES` -> the two fields (a `_TAIL` keeps the first
    name's first word); `SLMFLOW_{X,Y}_P_{Q,R}` -> every combination."""
    names = [n.removeprefix("SLMFLOW_") for n in re.findall(r"`(SLMFLOW_[A-Z0-9_{},]+|_[A-Z0-9_]+)`", cell)]
    expanded = []
    for name in names:
        if name.startswith("_"):
            name = names[0].split("_")[0] + name
        parts = re.split(r"\{([^}]*)\}", name)
        choices = [part.split(",") if index % 2 else [part] for index, part in enumerate(parts)]
        expanded += ["".join(choice) for choice in product(*choices)]
    return [name.lower() for name in expanded]


def _documented() -> dict[str, str]:
    fields: dict[str, str] = {}
    for row in ROWS:
        variable, default = (cell.strip() for cell in row.strip("|").split("|")[:2])
        for name in _names(variable):
            fields[name] = default
    return fields


def test_every_variable_in_the_table_is_a_setting() -> None:
    assert set(_documented()) - set(Settings.model_fields) == set()


def test_every_setting_is_in_the_table() -> None:
    assert set(Settings.model_fields) - set(_documented()) == set()


def test_a_literal_default_in_the_table_is_the_fields_default() -> None:
    settings = Settings.model_construct()
    checked = 0
    for name, default in _documented().items():
        literal = re.fullmatch(r"`([^`]*)`", default)
        if literal is None:
            continue
        value = getattr(settings, name)
        value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        said = literal.group(1)
        if isinstance(value, bool):
            assert said == str(value).lower(), f"SLMFLOW_{name.upper()}: {default}"
        elif isinstance(value, int | float):
            assert float(said) == float(value), f"SLMFLOW_{name.upper()}: {default}"
        else:
            assert said == str(value).replace(str(Path.home()), "~"), f"SLMFLOW_{name.upper()}: {default}"
        checked += 1
    assert checked >= 10
