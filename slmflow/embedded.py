"""The embedded default: run one job in this process, starting the local model server if needed.

`run_local` keeps every job in the cache directory (`slmflow.local_jobs`), so that it can be
resumed, reviewed or approved from another process by its id. (The library's own in-process entry
is `slmflow.run_job`, with checkpoints in memory unless given another checkpointer.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from slmflow.checkpoints import open_checkpointer
from slmflow.connect import open_endpoints
from slmflow.errors import IdempotencyConflict, InvalidInput, JobNotFound, UsageError
from slmflow.events import EventSink
from slmflow.graphs import GraphSpec
from slmflow.jobs import NO_RESUME, run_job, validate_input
from slmflow.local_jobs import LocalJobs, local_checkpoint_url
from slmflow.outcomes import JobResult, JobStatus
from slmflow.project import find_project
from slmflow.settings import Settings

__all__ = ["load_graph", "read_input", "run_local"]


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


async def run_local(
    settings: Settings,
    *,
    graph: str | None = None,
    data: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    resume: Any = NO_RESUME,
    waiting: JobStatus | None = None,
    emit: EventSink | None = None,
    progress: Callable[[str], None] = print,
) -> JobResult:
    """The CLI's embedded job, kept in the cache directory under its id.

    A new id (or none) starts `graph` on `data`. A kept job that was interrupted (still `running`)
    resumes from its checkpoint; one that ended or paused is returned as it is, unless `resume` is
    the answer to the pause it is `waiting` in (a review or an approval).
    """
    jobs = LocalJobs.of(settings)
    kept = jobs.get(job_id) if job_id else None
    if kept is None:
        if resume is not NO_RESUME:
            raise JobNotFound(f"no job {job_id} here (embedded jobs are kept in {jobs.path}) and no fleet holds it")
        if graph is None or data is None:
            raise InvalidInput(f"job {job_id} is not kept here: start it with a graph and --input FILE")
        spec = load_graph(graph, settings)
        validate_input(spec, data)
        job_id = job_id or uuid.uuid4().hex
        jobs.start(job_id, graph, dict(data), {})
        run_data: Mapping[str, Any] = data
    else:
        if graph is not None and graph != kept.graph:
            raise IdempotencyConflict(f"job {kept.id} is a job of graph {kept.graph!r}, not {graph!r}: "
                                      "pick a new --job-id")  # fmt: skip
        if data is not None and dict(data) != kept.input:
            raise IdempotencyConflict(f"job {kept.id} is kept with another input: leave out --input to resume it, "
                                      "or pick a new --job-id")  # fmt: skip
        if kept.running_elsewhere():
            raise UsageError(f"job {kept.id} is running in process {kept.pid}: wait for it, or stop that process")
        if resume is NO_RESUME and kept.status != JobStatus.RUNNING and kept.result is not None:
            return kept.result  # ended or paused: nothing to run without an answer
        if resume is not NO_RESUME and kept.status != waiting:
            wanted = waiting.value if waiting else "paused"
            raise UsageError(f"job {kept.id} is {kept.status.value}, not {wanted}: there is nothing to answer")
        spec = load_graph(kept.graph, settings)
        if not jobs.claim(kept.id, kept.status):
            raise UsageError(f"job {kept.id} was resumed by another process meanwhile: see `slmflow run "
                             f"{kept.graph} --job-id {kept.id}`")  # fmt: skip
        job_id, run_data = kept.id, kept.input
    async with (
        open_endpoints(settings, skills=spec.skills, learning=True, progress=progress) as endpoints,
        open_checkpointer(local_checkpoint_url(settings)) as checkpointer,
    ):
        result = await run_job(spec, run_data, endpoints=endpoints, checkpointer=checkpointer, job_id=job_id,
                               emit=emit, memo=jobs.memo(job_id), resume=resume)  # fmt: skip
    jobs.save(result)
    return result
