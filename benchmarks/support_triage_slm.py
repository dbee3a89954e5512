"""The sample tickets on the real SmolLM2, skill by skill and as whole jobs, graded step by step.

Each skill runs on every ticket with the *expected* upstream values (gold intent and order id), so
a skill's figures do not depend on the skills before it; then every ticket runs as a whole job.
Answers are graded by the reference project's rules (`agents/grading.py`). Per skill: escalation
rate, coverage and precision of the kept SLM answers, and how many wrong ones were kept
(accepted wrong). Per job: how many succeeded, and how many of those are wrong at any step.

    python benchmarks/support_triage_slm.py [--llm expected] [--skills before|after]
        [--skills-only | --jobs-only] [--out FILE]

`--llm expected`: a scripted LLM on loopback answers every escalation from the expected answers
(a consistent reply for the reply step), so only kept SLM answers can be wrong. `--skills before`
runs the reference skills as they were before the shipped intent adapter (the base model, the
hand-set floor 0.3); `after` (default) as they are. Floors: the project's committed ones.
Needs the local model server (started if not running) or SLMFLOW_SLM_BASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SHOP_DB", str(Path(tempfile.mkdtemp()) / "shop.db"))

from agents.grading import expected_tool, grade  # noqa: E402
from agents.support_triage import classify  # noqa: E402
from slmflow.answers import Tier  # noqa: E402
from slmflow.cascade import run_skill  # noqa: E402
from slmflow.checkpoints import open_checkpointer  # noqa: E402
from slmflow.connect import open_endpoints  # noqa: E402
from slmflow.graphs import GraphSpec  # noqa: E402
from slmflow.jobs import run_job  # noqa: E402
from slmflow.learning.hooks import Learning, project_floors_file  # noqa: E402
from slmflow.learning.store import DatasetStore  # noqa: E402
from slmflow.models import Endpoints  # noqa: E402
from slmflow.outcomes import UnansweredReview  # noqa: E402
from slmflow.project import find_project  # noqa: E402
from slmflow.settings import load_settings  # noqa: E402
from slmflow.testing import Reply, ScriptedServer  # noqa: E402
from tools.shop import check_refund_eligibility, lookup_order  # noqa: E402

EXAMPLES = ROOT / "examples" / "support_triage"
STEPS = ("classify_intent", "extract_fields", "lookup_order", "resolve", "draft_reply")
ORDER_ID = re.compile(r"ORD-\d{5}")


def tickets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    rows = [json.loads(line) for line in (EXAMPLES / "expected.jsonl").read_text().splitlines()]
    return [(json.loads((EXAMPLES / r["file"]).read_text()), r) for r in rows]


def text_of(ticket: dict[str, Any]) -> str:
    return f"Subject: {ticket['subject']}\n\n{ticket['body']}"


def teacher(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> Any:
    """A scripted LLM that answers each step from the ticket's expected values."""

    def expected_for(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "user" else ""
        prompt = next((m["content"] for m in body["messages"] if m["role"] == "user"), prompt)
        return next(e for t, e in rows if t["body"] in prompt)

    def reply(body: dict[str, Any]) -> Reply:
        expected = expected_for(body)
        order_id = expected["fields"]["order_id"]
        tools = [t["function"]["name"] for t in body.get("tools") or []]
        if tools == ["lookup_order"]:
            return Reply(tool_calls=[("lookup_order", {"order_id": order_id})])
        if tools:
            tool = expected_tool(expected["intent"])
            args = {"order_id": order_id} | ({"summary": "The customer needs a colleague's help."}
                                             if tool == "open_case" else {})  # fmt: skip
            return Reply(tool_calls=[(tool, args)])
        name = body["response_format"]["json_schema"]["name"]
        if name == "extract_fields":
            return Reply(text=json.dumps(expected["fields"]))
        if name == "draft_reply":
            return Reply(text=json.dumps({"reply": consistent_reply(body, order_id)}))
        return Reply(text=json.dumps({"label": expected["intent"]}))

    return reply


def consistent_reply(body: dict[str, Any], order_id: str | None) -> str:
    """A reply that agrees with the resolution the reply step was given."""
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
    about = f" about {order_id}" if order_id else ""
    if '"eligible": true' in prompt:
        return f"Hello, thank you for your message{about}. Your refund is being processed."
    if '"eligible": false' in prompt:
        return f"Hello, thank you for your message{about}. This order is outside our refund window; we can offer help."
    return f"Hello, thank you for your message{about}. A colleague will follow up within one working day."


def skills(which: str) -> dict[str, Any]:
    """The reference skills as they are (`after`), or as they were before the shipped adapter."""
    spec = find_project(ROOT).load_graph("support_triage")
    found = {s.name: s for s in spec.skills}
    if which == "before":
        found["classify_intent"] = classify.model_copy(
            update={"model": None, "target_precision": None, "min_confidence": 0.3}
        )
    return found


def step_inputs(ticket: dict[str, Any], expected: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each step's input built from the expected upstream values."""
    text, gold = text_of(ticket), expected["fields"]
    order_id = gold["order_id"]
    order = lookup_order.invoke({"order_id": order_id}) if order_id else None
    tool = expected_tool(expected["intent"])
    result = check_refund_eligibility.invoke({"order_id": order_id}) if order_id and tool != "open_case" else None
    resolution = ({"tool": tool, "result": result if result is not None else {"case_id": 1, "order_id": order_id}}
                  if order_id else None)  # fmt: skip
    inputs = {
        "classify_intent": {"ticket": text},
        "extract_fields": {"ticket": text},
        "draft_reply": {"ticket": text, "intent": expected["intent"], "order_id": order_id, "email": gold["email"],
                        "customer_email": (order or {}).get("customer_email"), "resolution": json.dumps(resolution)},
    }  # fmt: skip
    if order_id:
        inputs["lookup_order"] = {"ticket": text, "order_id": order_id}
        inputs["resolve"] = {"ticket": text, "intent": expected["intent"], "order_id": order_id,
                             "order": json.dumps(order)}  # fmt: skip
    return inputs


def comparable(answer: Any) -> Any:
    """Tool calls without their results (what the model chose)."""
    if isinstance(answer, list):
        return [{"name": c.get("name"), "arguments": c.get("arguments")} for c in answer]
    return answer


async def skill_runs(endpoints: Endpoints, spec: GraphSpec, found: dict[str, Any]) -> dict[str, Any]:
    stats: dict[str, dict[str, Any]] = {}
    for ticket, expected in tickets():
        for step, values in step_inputs(ticket, expected).items():
            # Tools run against the shop database; open_case writes a case, which is harmless here.
            result = await run_skill(found[step], values, endpoints, tools=spec.tools, job_id=ticket["ticket_id"])
            s = stats.setdefault(step, Counter())
            s["runs"] += 1
            kept_by_slm = result.ok and result.tier is Tier.SLM
            right = result.ok and grade(step, comparable(result.answer), expected, values)
            s["slm_kept"] += kept_by_slm
            s["slm_kept_right"] += kept_by_slm and right
            s["escalated"] += bool(result.escalations)
            s["ok"] += result.ok
            s["right"] += right
            print(f"{ticket['ticket_id']} {step:16} {result.status:12} {result.tier} right={right} "
                  f"{str(result.answer)[:70]}", flush=True)  # fmt: skip
    return {step: figures(dict(s)) for step, s in stats.items()}


def figures(s: dict[str, int]) -> dict[str, Any]:
    kept, runs = s.get("slm_kept", 0), s["runs"]
    return {
        **s,
        "escalation_rate": s.get("escalated", 0) / runs,
        "coverage": kept / runs,
        "precision": s.get("slm_kept_right", 0) / kept if kept else None,
        "accepted_wrong": kept - s.get("slm_kept_right", 0),
    }


async def job_runs(endpoints: Endpoints, spec: GraphSpec) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    stopped_at: Counter[str] = Counter()
    wrong: list[dict[str, Any]] = []
    started = time.perf_counter()
    for ticket, expected in tickets():
        async with open_checkpointer("memory") as checkpointer:
            result = await run_job(spec, ticket, endpoints=endpoints, checkpointer=checkpointer)
        statuses[result.status] += 1
        if isinstance(result.review, UnansweredReview):
            stopped_at[f"{result.review.step}:{result.review.reasons[-1]}"] += 1
        if result.status == "succeeded" and result.output is not None:
            bad = wrong_steps(result.output, expected)
            if bad:
                wrong.append({"ticket": ticket["ticket_id"], "wrong_steps": bad, "reply": result.output["reply"]})
        print(f"job {ticket['ticket_id']} {result.status} {result.review and result.review.step}", flush=True)
    return {"statuses": dict(statuses), "needs_review_at": dict(stopped_at), "succeeded_wrong": len(wrong),
            "wrong": wrong, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def wrong_steps(output: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The steps of a succeeded job whose answers the grading rules call wrong."""
    order_id = output["fields"].get("order_id")
    bad = [] if output["intent"] == expected["intent"] else ["classify_intent"]
    if not grade("extract_fields", output["fields"], expected, {}):
        bad.append("extract_fields")
    if expected["fields"]["order_id"] and output["resolution"] is not None:
        call = [{"name": output["resolution"]["tool"], "arguments": {"order_id": order_id}}]
        if not grade("resolve", call, expected, {}):
            bad.append("resolve")
    values = {"ticket": "", "order_id": order_id, "email": output["fields"].get("email"),
              "customer_email": (output["order"] or {}).get("customer_email"),
              "resolution": json.dumps(output["resolution"])}  # fmt: skip
    if not grade("draft_reply", {"reply": output["reply"]}, expected, values):
        bad.append("draft_reply")
    return bad


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", choices=["none", "expected"], default="none")
    parser.add_argument("--skills", choices=["before", "after"], default="after")
    parser.add_argument("--skills-only", action="store_true")
    parser.add_argument("--jobs-only", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / f"support_triage_{args.skills}_{args.llm}.json"
    rows = tickets()
    with ScriptedServer({"teacher": teacher(rows)}) as server:
        if args.llm == "expected":
            os.environ.update(SLMFLOW_LLM_BASE_URL=server.base_url, SLMFLOW_LLM_MODEL="teacher")
        settings = load_settings()
        spec = find_project(ROOT).load_graph("support_triage")
        found = skills(args.skills)
        store = DatasetStore(f"sqlite:///{Path(tempfile.mkdtemp()) / 'dataset.db'}")
        hooks = Learning(store, follow_routes=False, floors_file=project_floors_file(settings))
        report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "llm": args.llm, "skills_as": args.skills,
                                  "models": {s.name: s.model for s in found.values()}}  # fmt: skip
        async with open_endpoints(settings, skills=found.values(), learning=hooks) as endpoints:
            report["skills"] = {} if args.jobs_only else await skill_runs(endpoints, spec, found)
            if not args.skills_only:
                # Jobs run the graph's own skills: "before" jobs are measured on the commit before the change.
                report["jobs"] = await job_runs(endpoints, spec) if args.skills == "after" else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    asyncio.run(main())
