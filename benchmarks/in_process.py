"""What slmflow adds in-process: a 5-step job against a bare LangGraph graph making the same calls.

Both sides run one job at a time on the same machine, against the same zero-latency scripted model
server (a subprocess, so that its CPU is not counted in ours):

- **slmflow**: `run_job` on a graph of five `skill_node` label steps (the cascade, checks,
  confidence from logprobs, events, usage), an in-memory checkpointer, durability `sync`;
- **bare LangGraph**: a `StateGraph` of five nodes, each sending the very request body slmflow sent
  for that step (captured from a first slmflow job) through one `openai.AsyncOpenAI` client with
  the same settings, and keeping the answer if it is one of the labels; the same checkpointer and
  durability. Nothing else: no confidence, no events, no usage, no retries.

The two alternate in rounds (A B A B ...) so that drift of a shared machine hits both alike; the
figure is the ratio of median per-job wall times (and of CPU per job, from `time.process_time`).

    python benchmarks/in_process.py [--jobs 200] [--rounds 5] [--out benchmarks/results/in_process.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from slmflow import GraphSpec, JobContext, JobState, Label, Skill, Tier, ToolRegistry, run_job, skill_node  # noqa: E402
from slmflow.models import Endpoint, Endpoints, ModelClient  # noqa: E402
from slmflow.testing import Reply, ScriptedServer  # noqa: E402

STEPS = 5
LABELS = ("yes", "no", "maybe")
MODEL = "slm"


class Text(BaseModel):
    text: str


class Answers(BaseModel):
    answers: list[str]


SKILLS = [
    Skill(name=f"step{i}", instructions=f"Answer question {i} about the text with one label.",
          prompt="Text: {text}", output=Label(labels=LABELS))
    for i in range(STEPS)
]  # fmt: skip


class State(JobState, total=False):
    step0: str
    step1: str
    step2: str
    step3: str
    step4: str


def slmflow_graph() -> GraphSpec:
    builder = StateGraph(State, context_schema=JobContext)
    previous = START
    for skill in SKILLS:
        builder.add_node(skill.name, skill_node(skill, lambda s: {"text": s["input"]["text"]}, skill.name))
        builder.add_edge(previous, skill.name)
        previous = skill.name

    async def finish(state: dict[str, Any]) -> dict[str, Any]:
        return {"output": {"answers": [state[s.name] for s in SKILLS]}}

    builder.add_node("finish", finish)
    builder.add_edge(previous, "finish")
    builder.add_edge("finish", END)
    return GraphSpec("five_labels", builder, Text, Answers, ToolRegistry(), skills=tuple(SKILLS))


class BareState(TypedDict, total=False):
    text: str
    answers: list[str]
    output: dict[str, Any]


KNOWN = {"model", "messages", "max_tokens", "temperature", "logprobs", "top_logprobs", "n", "seed",
         "response_format", "tools", "tool_choice"}  # fmt: skip


def bare_graph(bodies: list[dict[str, Any]], client: openai.AsyncOpenAI) -> Any:
    """Five nodes, each sending one captured body through `client` and keeping a label answer."""
    builder = StateGraph(BareState)

    def node(body: dict[str, Any]) -> Any:
        known = {k: v for k, v in body.items() if k in KNOWN}
        extra = {k: v for k, v in body.items() if k not in KNOWN}

        async def ask(state: BareState) -> dict[str, Any]:
            response = await client.chat.completions.create(**known, extra_body=extra or None)
            label = (response.choices[0].message.content or "").strip()
            if label not in LABELS:
                raise RuntimeError(f"not a label: {label!r}")
            return {"answers": [*state.get("answers", []), label]}

        return ask

    async def finish(state: BareState) -> dict[str, Any]:  # as slmflow's graph: the output in one node
        return {"output": {"answers": state["answers"]}}

    previous = START
    for i, body in enumerate(bodies):
        builder.add_node(f"step{i}", node(body))
        builder.add_edge(previous, f"step{i}")
        previous = f"step{i}"
    builder.add_node("finish", finish)
    builder.add_edge(previous, "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=InMemorySaver())


def serve() -> None:
    """The model server, in its own process: every request answered at once."""
    server = ScriptedServer({MODEL: [Reply(text="yes")]})
    server.start()
    print(json.dumps({"base_url": server.base_url}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()


async def measure(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    # The request bodies slmflow sends, captured once from an in-process server.
    with ScriptedServer({MODEL: [Reply(text="yes")]}) as capture:
        endpoints = capture.endpoints(MODEL)
        spec = slmflow_graph()
        first = await run_job(spec, {"text": "the text"}, endpoints=endpoints, checkpointer=InMemorySaver())
        await endpoints.aclose()
        assert first.status == "succeeded", first
        bodies = capture.requests_for(MODEL)
    assert len(bodies) == STEPS

    endpoint = Endpoint(Tier.SLM, base_url, MODEL, dialect="vllm", timeout=5.0, max_retries=1,
                        price_per_1k_input=1.0, price_per_1k_output=1.0)  # fmt: skip
    slm = ModelClient(endpoint)
    endpoints = Endpoints(slm=slm, llm=None, llm_price_per_1k=(10.0, 10.0), _owned=[slm])
    # The same client library with the same settings as slmflow's ModelClient.
    client = openai.AsyncOpenAI(base_url=base_url, api_key=endpoint.api_key, timeout=endpoint.timeout, max_retries=0)
    slm_saver = InMemorySaver()
    bare = bare_graph(bodies, client)

    async def one_slmflow(i: int) -> None:
        result = await run_job(spec, {"text": "the text"}, endpoints=endpoints, checkpointer=slm_saver,
                               job_id=f"s{i}")  # fmt: skip
        assert result.status == "succeeded"

    async def one_bare(i: int) -> None:
        out = await bare.ainvoke({"text": "the text"}, {"configurable": {"thread_id": f"b{i}"}}, durability="sync")
        assert len(out["answers"]) == STEPS

    runs: dict[str, list[float]] = {"slmflow": [], "bare": []}
    cpu: dict[str, float] = {"slmflow": 0.0, "bare": 0.0}
    for warm in range(20):  # both paths warm: pools open, code compiled
        await one_slmflow(-warm - 1)
        await one_bare(-warm - 1)
    counter = 0
    for _ in range(args.rounds):
        for name, one in (("slmflow", one_slmflow), ("bare", one_bare)):
            cpu_started = time.process_time()
            for _ in range(args.jobs // args.rounds):
                counter += 1
                started = time.perf_counter()
                await one(counter)
                runs[name].append(time.perf_counter() - started)
            cpu[name] += time.process_time() - cpu_started
    await endpoints.aclose()
    await client.close()
    median = {name: statistics.median(times) * 1000 for name, times in runs.items()}
    cpu_ms = {name: cpu[name] * 1000 / len(runs[name]) for name in runs}
    return {
        "jobs_per_side": len(runs["slmflow"]),
        "steps": STEPS,
        "median_ms": {k: round(v, 3) for k, v in median.items()},
        "p90_ms": {k: round(statistics.quantiles(v, n=10)[-1] * 1000, 3) for k, v in runs.items()},
        "cpu_ms_per_job": {k: round(v, 3) for k, v in cpu_ms.items()},
        "ratio": round(median["slmflow"] / median["bare"], 3),
        "cpu_ratio": round(cpu_ms["slmflow"] / cpu_ms["bare"], 3),
        "goal_ratio": 1.15,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "in_process.json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert server.stdout is not None
        base_url = json.loads(server.stdout.readline())["base_url"]
        results = asyncio.run(measure(args, base_url))
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=10)
    print(json.dumps(results, indent=1))
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
