"""What narrowing to the job's own data does: both reference graphs on their sample inputs, on the
real SmolLM2 with no LLM, with each skill's `narrow` applied and with it switched off.

    python benchmarks/narrowing.py [--graphs support_triage,order_change] [--concurrency 4] [--out FILE]

Per graph and mode, jobs: `right` (succeeded, or waiting for approval, with the expected outcome,
by `slmflow eval`'s rules), `wrong` (ended with another outcome: a wrong change, refusal or reply),
`review` (paused for a human), `handed_over` (order_change gave it to a person instead of the
expected outcome); per step, how often it was reached, kept (an SLM answer passed every check) and
failed (with no LLM: review or a hand-over).
Switching narrowing off replaces `slmflow.narrowing.narrow` where the cascade and the skill nodes
call it with one that narrows nothing; nothing else changes. Needs the local model server (started
if not running) or SLMFLOW_SLM_BASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SHOP_DB", str(Path(tempfile.mkdtemp()) / "shop.db"))  # no approval runs: read-only

import slmflow.cascade  # noqa: E402
import slmflow.nodes  # noqa: E402
from slmflow.answers import Tier  # noqa: E402
from slmflow.checkpoints import open_checkpointer  # noqa: E402
from slmflow.connect import open_endpoints  # noqa: E402
from slmflow.events import Event, StepFinished  # noqa: E402
from slmflow.graphs import GraphSpec  # noqa: E402
from slmflow.jobs import run_job  # noqa: E402
from slmflow.learning.evaluate import Case, matches, outcome, read_cases  # noqa: E402
from slmflow.learning.hooks import Learning, project_floors_file  # noqa: E402
from slmflow.learning.store import DatasetStore  # noqa: E402
from slmflow.models import Endpoints  # noqa: E402
from slmflow.narrowing import Narrowed, narrow  # noqa: E402
from slmflow.outcomes import JobStatus  # noqa: E402
from slmflow.project import find_project  # noqa: E402
from slmflow.settings import load_settings  # noqa: E402
from slmflow.skills import Skill  # noqa: E402
from slmflow.tools import ToolRegistry  # noqa: E402

DATA = {"support_triage": ROOT / "examples/support_triage/cases.jsonl",
        "order_change": ROOT / "examples/order_change/cases.jsonl"}  # fmt: skip


def _no_narrowing(skill: Skill, values: Any, tools: ToolRegistry | None) -> Narrowed:
    return Narrowed(skill, tools)


def _narrowing(on: bool) -> None:
    chosen = narrow if on else _no_narrowing
    slmflow.cascade.narrow = chosen  # type: ignore[attr-defined]
    slmflow.nodes.narrow = chosen  # type: ignore[attr-defined]


async def _case(spec: GraphSpec, case: Case, endpoints: Endpoints, hooks: Learning) -> dict[str, Any]:
    events: list[Event] = []
    endpoints.learning = hooks
    async with open_checkpointer("memory") as checkpointer:
        job = await run_job(spec, case.input, endpoints=endpoints, checkpointer=checkpointer, emit=events.append)
    steps = {e.step: e.data for e in events if isinstance(e.data, StepFinished) and e.data.attempts}
    right = job.status in (JobStatus.SUCCEEDED, JobStatus.AWAITING_APPROVAL) and matches(case.expected, outcome(job))
    handed = job.status == JobStatus.SUCCEEDED and (job.output or {}).get("decision") == "handed_over"
    if right:
        verdict = "right"
    elif job.status == JobStatus.NEEDS_REVIEW:
        verdict = "review"
    elif handed:  # an honest "a person must look at it", not a wrong change or a wrong refusal
        verdict = "handed_over"
    else:
        verdict = "wrong"
    statuses = {step: data.status for step, data in steps.items()}
    return {"verdict": verdict, "steps": statuses, "calls": job.usage.calls(Tier.SLM)}


VERDICTS = ("right", "wrong", "review", "handed_over")


def _summary(runs: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    steps: dict[str, Counter[str]] = {}
    for run in runs:
        for step, status in run["steps"].items():
            steps.setdefault(step, Counter())[status] += 1
    return {
        "cases": len(runs),
        **{
            verdict: sum(r["verdict"] == verdict for r in runs)
            for verdict in ("right", "wrong", "review", "handed_over")
        },
        "slm_calls": sum(r["calls"] for r in runs),
        "steps": {
            step: {"reached": sum(c.values()), "kept": c["ok"] + c["proposed"], "failed": c["needs_review"]}
            for step, c in steps.items()
        },  # fmt: skip
        "seconds": round(seconds, 1),
    }


async def main(graphs: list[str], concurrency: int, out: Path) -> None:
    settings = load_settings(project=ROOT)
    project = find_project(ROOT)
    store = DatasetStore(f"sqlite:///{Path(tempfile.mkdtemp()) / 'dataset.db'}")
    hooks = Learning(store, follow_routes=False, floors_file=project_floors_file(settings))
    results: dict[str, Any] = {"graphs": {}, "llm": None, "model": None}
    async with open_endpoints(settings, progress=lambda m: print(m, file=sys.stderr)) as endpoints:
        results["model"] = endpoints.slm.endpoint.default_model
        for name in graphs:
            spec = project.load_graph(name)
            cases = read_cases(DATA[name])
            results["graphs"][name] = {}
            for mode in ("narrowed", "not_narrowed"):
                _narrowing(mode == "narrowed")
                started = time.perf_counter()
                gate = asyncio.Semaphore(concurrency)

                async def one(case: Case, gate: asyncio.Semaphore = gate, spec: GraphSpec = spec) -> dict[str, Any]:
                    async with gate:
                        return await _case(spec, case, endpoints, hooks)

                runs = await asyncio.gather(*(one(case) for case in cases))
                summary = _summary(list(runs), time.perf_counter() - started)
                results["graphs"][name][mode] = summary
                print(name, mode, json.dumps(summary), file=sys.stderr)
    _narrowing(True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", default="support_triage,order_change")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/narrowing.json")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.graphs.split(","), arguments.concurrency, arguments.out))
