"""The embedded default: run one job in this process, starting the local model server if needed."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from slmflow.checkpoints import open_checkpointer
from slmflow.connect import open_endpoints
from slmflow.errors import InvalidInput
from slmflow.events import EventSink
from slmflow.graphs import GraphSpec
from slmflow.jobs import JobResult, run_job, validate_input
from slmflow.project import find_project
from slmflow.settings import Settings

__all__ = ["load_graph", "read_input", "run_graph"]


def read_input(path: Path) -> dict[str, Any]:
    """A job input from a JSON file; unreadable or non-object files are `InvalidInput`."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"cannot read input file {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"input file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"input file {path} must hold a JSON object, not {type(data).__name__}")
    return data


def load_graph(name: str, settings: Settings) -> GraphSpec:
    """The graph `name` of the project the settings point at (or the cwd's)."""
    return find_project(settings.project).load_graph(name)


async def run_graph(
    name: str,
    data: Mapping[str, Any],
    settings: Settings,
    *,
    emit: EventSink | None = None,
    progress: Callable[[str], None] = print,
) -> JobResult:
    """Run graph `name` on `data` in-process: validate, reach the models, run, sum usage.

    Input is validated before any server starts. With no `SLMFLOW_SLM_BASE_URL`, the local vLLM
    server is started (or reused).
    """
    spec = load_graph(name, settings)
    validate_input(spec, data)
    async with (
        open_endpoints(settings, skills=spec.skills, learning=True, progress=progress) as endpoints,
        open_checkpointer(settings.checkpoint_url) as checkpointer,
    ):
        return await run_job(spec, data, endpoints=endpoints, checkpointer=checkpointer, emit=emit)
