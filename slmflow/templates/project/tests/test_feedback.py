"""The `feedback` graph end to end on a scripted model (real HTTP on loopback, no model server needed).

Run with `python -m pytest tests` from the project's directory.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from graphs.feedback import graph
from langgraph.checkpoint.memory import InMemorySaver

from slmflow import JobResult, JobStatus, run_job
from slmflow.testing import Reply, ScriptedServer

EXAMPLE = json.loads((Path(__file__).parents[1] / "examples" / "praise.json").read_text())


def run(reply: Reply) -> JobResult:
    async def go() -> JobResult:
        with ScriptedServer({"slm": [reply, reply]}) as server:  # an unsure answer is asked twice
            endpoints = server.endpoints(slm_model="slm")
            try:
                return await run_job(graph, EXAMPLE, endpoints=endpoints, checkpointer=InMemorySaver())
            finally:
                await endpoints.aclose()

    return asyncio.run(go())


def test_a_confident_answer_is_kept_and_the_message_filed() -> None:
    result = run(Reply(text="praise", logprobs=[-0.01]))
    assert result.status == JobStatus.SUCCEEDED
    assert result.output == {"category": "praise", "filed": {"filed": "praise", "chars": len(EXAMPLE["text"])}}


def test_an_unsure_answer_is_not_kept() -> None:
    result = run(Reply(text="praise", logprobs=[-2.0]))  # p = 0.14, under the skill's floor
    assert result.status == JobStatus.NEEDS_REVIEW
    assert result.output is None
