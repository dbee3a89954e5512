"""A project's committed floors: `floors.json` beside its skills, used when the store has none.

A fresh machine (or a fleet with an empty dataset store) then runs at the floors the project
calibrated and reviewed. `slmflow calibrate ... --write` adds or replaces a skill's entry.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from slmflow.errors import ProjectError
from slmflow.learning.store import FloorRecord

__all__ = ["FLOORS_FILE", "read_floors_file", "write_floor"]

FLOORS_FILE = "floors.json"


def read_floors_file(path: Path) -> list[FloorRecord]:
    """The floors in `path` (none when it does not exist); a broken file is a `ProjectError`."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        return [FloorRecord.model_validate(entry) for entry in data.get("floors", [])]
    except (ValueError, AttributeError, ValidationError) as exc:
        raise ProjectError(f"{path} is not a floors file ({exc}): fix it, or write it again with "
                           "`slmflow calibrate SKILL --data FILE --write`") from None  # fmt: skip


def write_floor(path: Path, record: FloorRecord) -> None:
    """Add `record` to the floors file, replacing the entry of the same skill and model."""
    kept = [r for r in read_floors_file(path) if (r.skill, r.model) != (record.skill, record.model)]
    entries = [r.model_dump(mode="json", exclude={"input_hashes"}) for r in [*kept, record]]
    entries.sort(key=lambda e: (e["skill"], e["model"]))
    path.write_text(json.dumps({"floors": entries}, indent=1) + "\n")
