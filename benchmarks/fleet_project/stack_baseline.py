"""The bench_small job hand-built on slmflow's stack, without slmflow: the fleet benchmark's yardstick.

What a competent team would write for the same durable job on the same parts:

- a Celery app on the same Redis broker, JSON only, late acks, prefetch 1; a jobs worker on the
  threads pool whose tasks hand each job to one asyncio event loop per process (as slmflow's does);
- the job is a LangGraph `StateGraph` (label step, tool step, finish) with the same Postgres
  checkpointer (`AsyncPostgresSaver` on a connection pool) and durability `sync`;
- each model call is one `openai.AsyncOpenAI` `chat.completions.create` with the very body slmflow
  sends for that step (given with the job: built by the driver with slmflow's own prompt helpers,
  so both sides send identical requests);
- the tool runs as a Celery task on a tools worker (prefork), its result read back from Redis;
- a record per job in Redis (`stack:job:<id>`: status, output, times), and a done counter.

No retries, no checks beyond "a label" and "the one granted tool", no events, no leases, no
tracing: the floor the framework's own cost is measured against.

Workers: `celery -A stack_baseline worker -Q stack.jobs -P threads -c 200` and
`celery -A stack_baseline worker -Q stack.tools -P prefork -c 2`, with `STACK_REDIS_URL`,
`STACK_CHECKPOINT_URL` and `STACK_MODEL_URL` set (the fleet benchmark starts them).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from concurrent.futures import Future
from typing import Any, TypedDict

from celery import Celery

__all__ = ["JOBS", "TOOLS", "app"]

JOBS, TOOLS = "stack.jobs", "stack.tools"
REDIS_URL = os.environ.get("STACK_REDIS_URL", "redis://127.0.0.1:6379/13")

app = Celery("stack", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"], result_accept_content=["json"],
    task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
    task_routes={"stack.job": {"queue": JOBS}, "stack.tool": {"queue": TOOLS}},
    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
)  # fmt: skip


@app.task(name="stack.tool")
def record(note: str) -> dict[str, Any]:
    """The tool: the same side-effect-free `record` as bench_small's."""
    return {"recorded": note}


class State(TypedDict, total=False):
    label_body: dict[str, Any]
    tool_body: dict[str, Any]
    answer: str
    note: dict[str, Any]
    output: dict[str, Any]


class _Runtime:
    """One event loop per jobs-worker process, with the graph, the model client and the stores."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="stack-loop", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result()

    async def _open(self) -> None:
        import openai
        import redis.asyncio as aioredis
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from langgraph.graph import END, START, StateGraph
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(os.environ["STACK_CHECKPOINT_URL"], max_size=20, open=False,
                                        kwargs={"autocommit": True, "prepare_threshold": 0,
                                                "row_factory": dict_row})  # fmt: skip
        await self.pool.open()
        saver = AsyncPostgresSaver(self.pool)  # type: ignore[arg-type]
        await saver.setup()
        self.redis = aioredis.Redis.from_url(REDIS_URL)
        client = openai.AsyncOpenAI(base_url=os.environ["STACK_MODEL_URL"], api_key="EMPTY", timeout=60,
                                    max_retries=0)  # fmt: skip

        async def ask(body: dict[str, Any]) -> Any:
            fields = dict(body)
            extra = {"structured_outputs": fields.pop("structured_outputs")} if "structured_outputs" in fields else None
            return (await client.chat.completions.create(**fields, extra_body=extra)).choices[0].message

        async def decide(state: State) -> dict[str, Any]:
            answer = ((await ask(state["label_body"])).content or "").strip()
            if answer not in ("yes", "no"):
                raise ValueError(f"not a label: {answer!r}")
            return {"answer": answer}

        async def note(state: State) -> dict[str, Any]:
            calls = (await ask(state["tool_body"])).tool_calls or []
            if len(calls) != 1 or calls[0].function.name != "record":  # type: ignore[union-attr]
                raise ValueError(f"expected one call of record, got {calls}")
            arguments = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
            sent = await asyncio.to_thread(app.send_task, "stack.tool", args=[arguments["note"]], queue=TOOLS)
            # Waiting on a subtask from a task is what this design does (Celery warns against it by default).
            result = await asyncio.to_thread(sent.get, timeout=60, disable_sync_subtasks=False)
            return {"note": result}

        async def finish(state: State) -> dict[str, Any]:
            return {"output": {"answer": state["answer"], "note": state["note"]}}

        builder = StateGraph(State)
        for name, node in (("decide", decide), ("note", note), ("finish", finish)):
            builder.add_node(name, node)
        builder.add_edge(START, "decide")
        builder.add_edge("decide", "note")
        builder.add_edge("note", "finish")
        builder.add_edge("finish", END)
        self.graph = builder.compile(checkpointer=saver)

    async def run(self, job_id: str, label_body: dict[str, Any], tool_body: dict[str, Any]) -> None:
        key = f"stack:job:{job_id}"
        await self.redis.hset(key, mapping={"status": "running", "started_at": time.time()})
        try:
            out = await self.graph.ainvoke({"label_body": label_body, "tool_body": tool_body},
                                           {"configurable": {"thread_id": job_id}}, durability="sync")  # fmt: skip
            fields = {"status": "succeeded", "output": json.dumps(out["output"])}
        except Exception as exc:  # noqa: BLE001 - a record says how the job ended
            fields = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        await self.redis.hset(key, mapping={**fields, "finished_at": time.time()})
        await self.redis.incr("stack:done")


_runtime: _Runtime | None = None
_lock = threading.Lock()


@app.task(name="stack.job", ignore_result=True)  # the record in Redis says how it ended
def job(job_id: str, label_body: dict[str, Any], tool_body: dict[str, Any]) -> None:
    """Run one job on this process's event loop; the task's thread waits for it."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = _Runtime()
    done: Future[None] = asyncio.run_coroutine_threadsafe(_runtime.run(job_id, label_body, tool_body), _runtime.loop)
    done.result()
