"""How the real SmolLM2 does on the sample tickets, skill by skill and as whole jobs (no LLM).

Each skill runs on every ticket with the *expected* upstream values (gold intent and order id), so
a skill's figures do not depend on the skills before it. Then every ticket runs as a whole job.

    python benchmarks/support_triage_slm.py [--skills-only] [--out benchmarks/results/support_triage_slm.json]

Needs the local model server (started if not running) or SLMFLOW_SLM_BASE_URL.
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
os.environ.setdefault("SHOP_DB", str(Path(tempfile.mkdtemp()) / "shop.db"))

from agents.support_triage import classify, draft_reply, extract, lookup, resolve  # noqa: E402
from slmflow.cascade import run_skill  # noqa: E402
from slmflow.checkpoints import open_checkpointer  # noqa: E402
from slmflow.jobs import run_job  # noqa: E402
from slmflow.local_server import serve  # noqa: E402
from slmflow.models import Endpoints  # noqa: E402
from slmflow.project import find_project  # noqa: E402
from slmflow.settings import load_settings  # noqa: E402
from tools.shop import check_refund_eligibility, lookup_order  # noqa: E402

EXAMPLES = ROOT / "examples" / "support_triage"


def _tickets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    rows = [json.loads(line) for line in (EXAMPLES / "expected.jsonl").read_text().splitlines()]
    return [(json.loads((EXAMPLES / r["file"]).read_text()), r) for r in rows]


def _text(ticket: dict[str, Any]) -> str:
    return f"Subject: {ticket['subject']}\n\n{ticket['body']}"


async def _skill_runs(endpoints: Endpoints, tools: Any) -> dict[str, Any]:
    stats: dict[str, dict[str, Any]] = {}
    for ticket, expected in _tickets():
        text, gold = _text(ticket), expected["fields"]
        order_id = gold["order_id"]
        order = lookup_order.invoke({"order_id": order_id}) if order_id else None
        resolution = (
            {
                "tool": "check_refund_eligibility",
                "result": check_refund_eligibility.invoke({"order_id": order_id}),
            }
            if order_id
            else None
        )
        runs: list[tuple[Any, dict[str, Any], Any]] = [
            (classify, {"ticket": text}, expected["intent"]),
            (extract, {"ticket": text}, gold),
            (draft_reply, {"ticket": text, "intent": expected["intent"], "order_id": order_id,
                           "email": gold["email"], "customer_email": (order or {}).get("customer_email"),
                           "resolution": json.dumps(resolution)}, None),
        ]  # fmt: skip
        if order_id:
            runs.insert(2, (lookup, {"ticket": text, "order_id": order_id}, None))
            runs.insert(3, (resolve, {"ticket": text, "intent": expected["intent"], "order_id": order_id,
                                      "order": json.dumps(order)}, None))  # fmt: skip
        for skill, values, want in runs:
            result = await run_skill(skill, values, endpoints, tools=tools, job_id=ticket["ticket_id"])
            s = stats.setdefault(skill.name, {"runs": 0, "passed": 0, "correct": 0, "graded": 0,
                                               "first_try": 0, "reasons": Counter(), "latency_s": 0.0,
                                               "confidences": []})  # fmt: skip
            s["runs"] += 1
            s["passed"] += result.ok
            s["first_try"] += result.ok and len(result.attempts) == 1
            s["latency_s"] += sum(a.latency_s for a in result.attempts)
            s["reasons"].update(str(a.reason) for a in result.attempts if not a.ok)
            first = result.attempts[0]
            if want is not None:
                s["graded"] += 1
                answer = result.answer
                s["correct"] += bool(result.ok and answer == want)
                if isinstance(want, str):  # a label: is the first answer's confidence a good signal?
                    s["confidences"].append([first.confidence, first.output == want])
            print(f"{ticket['ticket_id']} {skill.name:16} {result.status:12} "
                  f"{[str(a.reason) if a.reason else 'ok' for a in result.attempts]} {str(result.answer)[:80]}",
                  flush=True)  # fmt: skip
    for s in stats.values():
        s["reasons"] = dict(s["reasons"])
    return stats


async def _job_runs(endpoints: Endpoints) -> dict[str, Any]:
    spec = find_project(ROOT).load_graph("support_triage")
    statuses: Counter[str] = Counter()
    stopped_at: Counter[str] = Counter()
    wrong: list[dict[str, Any]] = []
    started = time.perf_counter()
    for ticket, expected in _tickets():
        async with open_checkpointer("memory") as checkpointer:
            result = await run_job(spec, ticket, endpoints=endpoints, checkpointer=checkpointer)
        statuses[result.status] += 1
        if result.review:
            stopped_at[f"{result.review['step']}:{result.review['reasons'][-1]}"] += 1
        if result.status == "succeeded" and result.output is not None:
            # Wrong: a succeeded job whose intent or fields differ from the expected ones.
            got = {"intent": result.output["intent"], "fields": result.output["fields"]}
            if got != {"intent": expected["intent"], "fields": expected["fields"]}:
                wrong.append({"ticket": ticket["ticket_id"], "got": got, "reply": result.output["reply"]})
        print(
            f"job {ticket['ticket_id']} {result.status} {result.review and result.review['step']}",
            flush=True,
        )
    return {"statuses": dict(statuses), "needs_review_at": dict(stopped_at), "succeeded_wrong": len(wrong),
            "wrong": wrong, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skills-only", action="store_true")
    parser.add_argument("--jobs-only", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "support_triage_slm.json")
    args = parser.parse_args()
    settings = load_settings()
    if not settings.slm_base_url:
        serve(settings)
    endpoints = Endpoints.from_settings(settings)
    spec = find_project(ROOT).load_graph("support_triage")
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "llm": settings.llm_base_url}
    report["skills"] = {} if args.jobs_only else await _skill_runs(endpoints, spec.tools)
    if not args.skills_only:
        report["jobs"] = await _job_runs(endpoints)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(
        json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk != "confidences"} for k, v in report["skills"].items()},
            indent=1,
        )
    )
    print(json.dumps(report.get("jobs"), indent=1))


if __name__ == "__main__":
    asyncio.run(main())
