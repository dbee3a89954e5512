"""Recording, redaction, routes and shadow in the cascade, on a scripted server and a real store.

The store runs on SQLite (the embedded default) and on the real PostgreSQL (marker `postgres`).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.support_triage import classify
from graphs.support_triage import graph
from slmflow import JobStatus, Tier, run_job, run_skill
from slmflow.checkpoints import open_checkpointer
from slmflow.graphs import MemoryMemo
from slmflow.learning.hooks import Learning
from slmflow.learning.store import AdapterEvent, DatasetStore, Route, RunRecord
from slmflow.testing import Reply, ScriptedServer
from tests.conftest import TRIAGE_ALIASES, triage_reply
from tests.unit.test_cascade import TOOLS, tool_skill

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
EMAIL, CARD = "jane.doe@example.org", "4111 1111 1111 1111"
TICKET = f"Subject: card declined\n\nMy card {CARD} was declined for ORD-10012. Reach me at {EMAIL}."


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatasetStore]:
    if request.param == "sqlite":
        store = DatasetStore(f"sqlite:///{tmp_path / 'dataset.db'}")
        yield store
        store.close()
        return
    store = DatasetStore(POSTGRES_URL)
    yield store
    for table in ("slmflow_skill_runs", "slmflow_routes", "slmflow_shadow_calls_v2", "slmflow_adapter_events"):
        store._execute(f"DELETE FROM {table} WHERE skill LIKE ?", ("test_%",))
    store.close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer({}) as server:
        yield server


# The intent skill on the endpoint's model (`slm`), kept above a hand-set floor of 0.3.
base_classify = classify.model_copy(update={"model": None, "target_precision": None, "min_confidence": 0.3})


def skill_named(prefix: str) -> Any:
    # A fresh skill name per test keeps tests apart in the shared Postgres database.
    return base_classify.model_copy(update={"name": f"test_{prefix}_{uuid.uuid4().hex[:8]}"})


def shadowing(store: DatasetStore, skill: str, candidate: str) -> None:
    """`candidate` answers beside the skill's model on every call."""
    store.set_route(Route(skill=skill, candidate=candidate, shadow_rate=1.0),
                    AdapterEvent(skill=skill, action="shadow", adapter=candidate, previous=None))  # fmt: skip


def endpoints_with(server: ScriptedServer, store: DatasetStore, llm: str | None = "llm", **options: Any) -> Any:
    endpoints = server.endpoints("slm", llm)
    endpoints.learning = Learning(store, route_ttl_s=0, **options)
    return endpoints


def everything_stored(store: DatasetStore, skill: str) -> str:
    """Every text the store holds about a skill's runs (and, on SQLite, the raw file bytes)."""
    rows = store._execute("SELECT * FROM slmflow_skill_runs WHERE skill = ?", (skill,))
    text = json.dumps([list(r) for r in rows], default=str)
    if store.path is not None:
        text += store.path.read_bytes().decode("latin-1")
    return text


async def test_an_escalated_run_is_recorded_with_its_reasons_and_no_personal_data(
    server: ScriptedServer, store: DatasetStore
) -> None:
    skill = skill_named("record")
    server.scripts.update({"slm": [Reply(text="refund_request", logprobs=[-2.0])],  # p = 0.14 < 0.3
                           "llm": [Reply(text='{"label": "payment_failed"}')]})  # fmt: skip
    endpoints = endpoints_with(server, store, record=True)
    result = await run_skill(skill, {"ticket": TICKET}, endpoints)
    await endpoints.aclose()
    assert result.tier is Tier.LLM
    [run] = store.runs(skill.name)
    assert (run.source, run.status, run.answer, run.reasons) == ("llm", "ok", "payment_failed", ["low_confidence"])
    assert run.slm_model == "slm" and [a["tier"] for a in run.attempts] == ["slm", "llm"]
    assert run.messages[1]["content"] == TICKET.replace(CARD, "[card]").replace(EMAIL, "[email]")
    stored = everything_stored(store, skill.name)
    assert EMAIL not in stored and CARD not in stored and "4111" not in stored
    assert not re.search(r"[\w.+-]+@example\.org", stored)


async def test_nothing_is_recorded_unless_recording_is_on(server: ScriptedServer, store: DatasetStore) -> None:
    skill = skill_named("off")
    server.scripts["slm"] = [Reply(text="payment_failed", logprobs=[-0.01])]
    endpoints = endpoints_with(server, store, llm=None)
    assert (await run_skill(skill, {"ticket": TICKET}, endpoints)).ok
    await endpoints.aclose()
    assert store.runs(skill.name) == []


async def test_a_rationale_is_asked_of_the_llm_kept_redacted_and_costed(
    server: ScriptedServer, store: DatasetStore
) -> None:
    skill = skill_named("why")
    server.scripts.update({
        "slm": [Reply(text="other", logprobs=[-3.0])],
        "llm": [Reply(text='{"label": "payment_failed"}'),
                Reply(text=f"The card {CARD} was declined.", prompt_tokens=500, completion_tokens=12)],
    })  # fmt: skip
    endpoints = endpoints_with(server, store, record=True, rationale=True)
    result = await run_skill(skill, {"ticket": TICKET}, endpoints)
    await endpoints.aclose()
    [run] = store.runs(skill.name)
    assert run.rationale == "The card [card] was declined."
    assert result.usage.tiers[Tier.LLM].calls == 2 and result.usage.tiers[Tier.LLM].input_tokens >= 500
    why = server.requests_for("llm")[1]["messages"]
    assert why[-2] == {"role": "assistant", "content": '"payment_failed"'} and "why" in why[-1]["content"]


async def test_a_route_sends_the_skill_to_its_adapter(server: ScriptedServer, store: DatasetStore) -> None:
    skill = skill_named("route")
    store.set_route(Route(skill=skill.name, current="intent-v2"),
                    AdapterEvent(skill=skill.name, action="promote", adapter="intent-v2", previous=None))  # fmt: skip
    server.scripts["intent-v2"] = [Reply(text="payment_failed", logprobs=[-0.01])]
    endpoints = endpoints_with(server, store, llm=None, record=True)
    result = await run_skill(skill, {"ticket": TICKET}, endpoints)
    await endpoints.aclose()
    assert result.ok and result.attempts[0].model == "intent-v2" and server.requests_for("slm") == []
    assert store.runs(skill.name)[0].slm_model == "intent-v2"
    [figures] = store.version_figures(skill.name)
    assert (figures.slm_model, figures.runs, figures.escalated) == ("intent-v2", 1, 0)


async def test_a_candidate_in_shadow_answers_beside_the_current_model(
    server: ScriptedServer, store: DatasetStore
) -> None:
    skill = skill_named("shadow")
    shadowing(store, skill.name, "intent-v2")
    server.scripts.update({
        "slm": [Reply(text="refund_request", logprobs=[-2.0])] * 2,
        "intent-v2": [Reply(text="payment_failed", logprobs=[-0.05]), Reply(text="refund_request", logprobs=[-0.05])],
        "llm": [Reply(text='{"label": "payment_failed"}')] * 2,
    })  # fmt: skip
    endpoints = endpoints_with(server, store)
    for _ in range(2):
        result = await run_skill(skill, {"ticket": TICKET}, endpoints)
        assert result.tier is Tier.LLM and result.answer == "payment_failed"  # the candidate never decides
    await endpoints.aclose()
    first, second = store.shadow_calls(skill.name, "intent-v2", "slm")
    assert (first.agree, first.current_ok, first.candidate_ok) == (False, False, True)
    assert (first.final_source, first.current_right, first.candidate_right) == ("llm", False, True)
    assert (second.agree, second.candidate_right) == (True, False)
    assert server.requests_for("intent-v2")[0]["messages"] == server.requests_for("slm")[0]["messages"]


async def test_a_shadowed_call_the_slm_kept_is_scored_against_the_llm_off_the_jobs_path(
    server: ScriptedServer, store: DatasetStore
) -> None:
    skill = skill_named("shadow_audit")
    shadowing(store, skill.name, "intent-v2")
    server.scripts.update({
        "slm": [Reply(text="refund_request", logprobs=[-0.01])],
        "intent-v2": [Reply(text="payment_failed", logprobs=[-0.05])],
        "llm": [Reply(text='{"label": "refund_request"}', delay=0.5)],
    })  # fmt: skip
    endpoints = endpoints_with(server, store)  # audit rate 0: only the shadowed call is audited
    result = await run_skill(skill, {"ticket": TICKET}, endpoints)
    assert result.tier is Tier.SLM and store.shadow_calls(skill.name, "intent-v2", "slm") == []  # not waited for
    await endpoints.aclose()
    [call] = store.shadow_calls(skill.name, "intent-v2", "slm")
    assert (call.final_source, call.current_ok, call.current_right, call.candidate_right) == ("llm", True, True, False)
    assert call.candidate_confidence is not None and abs(call.candidate_confidence - math.exp(-0.05)) < 1e-6
    [audit] = store.audits(skill.name, "slm", 10)
    assert audit.agree is True


async def test_a_shadow_tool_call_is_judged_but_never_run(server: ScriptedServer, store: DatasetStore) -> None:
    store.set_route(Route(skill="lookup", candidate="lookup-v2", shadow_rate=1.0),
                    AdapterEvent(skill="lookup", action="shadow", adapter="lookup-v2", previous=None))  # fmt: skip
    server.scripts.update({
        "slm": [Reply(tool_calls=[("lookup_order", {"order_id": "ORD-12345"})])],
        "lookup-v2": [Reply(tool_calls=[("delete_account", {"email": "x@example.com"})])],
    })  # fmt: skip
    endpoints = endpoints_with(server, store, llm=None)
    from tests.unit import test_cascade

    before = list(test_cascade.OPENED)
    result = await run_skill(tool_skill, {"ticket": "Where is ORD-12345?"}, endpoints, tools=TOOLS)
    await endpoints.aclose()
    assert result.ok and test_cascade.OPENED == before  # the candidate's non-granted call never ran
    [call] = store.shadow_calls("lookup", "lookup-v2", "slm")
    assert (call.current_ok, call.candidate_ok, call.agree) == (True, False, False)
    if store.path is None:
        store._execute("DELETE FROM slmflow_shadow_calls_v2 WHERE skill = 'lookup'")
        store._execute("DELETE FROM slmflow_routes WHERE skill = 'lookup'")
        store._execute("DELETE FROM slmflow_adapter_events WHERE skill = 'lookup'")


async def test_an_unreachable_store_never_fails_a_run(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    server.scripts["slm"] = [Reply(text="payment_failed", logprobs=[-0.01])]
    endpoints = endpoints_with(server, DatasetStore("postgresql://postgres@127.0.0.1:1/none"), llm=None, record=True)
    result = await run_skill(base_classify, {"ticket": TICKET}, endpoints)
    await endpoints.aclose()
    assert result.ok
    assert "using the base model" in caplog.text and "could not record" in caplog.text


async def test_a_reviewers_answer_is_recorded_as_the_human_source(tmp_path: Path) -> None:
    store = DatasetStore(f"sqlite:///{tmp_path / 'dataset.db'}")
    ticket = json.loads((Path(__file__).parents[2] / "examples/support_triage/t01_refund_request.json").read_text())

    def unsure(body: dict[str, Any]) -> Reply:
        return Reply(text="other", logprobs=[-3.0]) if "structured_outputs" in body else triage_reply(body)

    with ScriptedServer({"slm": unsure}, TRIAGE_ALIASES) as server:
        endpoints = server.endpoints("slm")
        endpoints.learning = Learning(store, record=True)
        memo = MemoryMemo()  # as the fleet's memo does: the paused step is not asked of the model again
        async with open_checkpointer(f"sqlite:///{tmp_path / 'cp.db'}") as checkpointer:
            paused = await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer, memo=memo)
            assert paused.status == JobStatus.NEEDS_REVIEW
            done = await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer, memo=memo,
                                 job_id=paused.job_id, resume="refund_request")  # fmt: skip
        await endpoints.aclose()
    assert done.status == JobStatus.SUCCEEDED
    intent = store.runs("classify_intent")
    assert [(r.source, r.status, r.answer) for r in intent] == [(None, "needs_review", None),
                                                                 ("human", "ok", "refund_request")]  # fmt: skip
    assert intent[0].input_hash == intent[1].input_hash
    assert "maria.lopez@example.com" not in everything_stored(store, "classify_intent")


def test_store_keeps_runs_routes_and_events(store: DatasetStore) -> None:
    skill = f"test_store_{uuid.uuid4().hex[:8]}"
    run = RunRecord(skill=skill, status="ok", source="llm", input_hash="ab" * 32, answer={"x": [1, "y"]},
                    messages=[{"role": "user", "content": "hi"}], slm_model="base",
                    reasons=["check_failed"])  # fmt: skip
    store.add_run(run)
    assert store.runs(skill) == [run]
    assert store.route(skill) == Route(skill=skill)
    first = AdapterEvent(skill=skill, action="promote", adapter="a", previous=None, figures={"calls": 3})
    store.set_route(Route(skill=skill, current="a", shadow_rate=0.5), first)
    store.set_route(Route(skill=skill, current="b", previous="a"),
                    AdapterEvent(skill=skill, action="promote", adapter="b", previous="a"))  # fmt: skip
    assert store.route(skill) == Route(skill=skill, current="b", previous="a")
    assert [(e.adapter, e.figures) for e in store.events(skill)] == [("a", {"calls": 3}), ("b", {})]


def test_redaction_covers_cut_off_echoes_and_numbers() -> None:
    from slmflow.redaction import excerpt, redact_value

    long_label = "x" * 90 + " jane.doe@example.org"
    assert "jane" not in excerpt(long_label, 100) and "[email]" in excerpt(long_label, 100)
    assert redact_value({"card": 4111111111111111, "amount": 59.99, "ok": True}) == {
        "card": "[card]", "amount": 59.99, "ok": True,
    }  # fmt: skip


async def test_a_label_echoed_in_an_error_is_redacted_before_it_is_cut(
    server: ScriptedServer, store: DatasetStore
) -> None:
    skill = skill_named("echo")
    server.scripts["slm"] = [Reply(text="y" * 95 + f" {EMAIL}")] * 2  # not a label: echoed in the error
    endpoints = endpoints_with(server, store, llm=None, record=True)
    result = await run_skill(skill.model_copy(update={"min_confidence": 0.0}), {"ticket": "hi"}, endpoints)
    await endpoints.aclose()
    assert result.attempts[0].errors and "jane.doe" not in result.attempts[0].errors[0]
    stored = everything_stored(store, skill.name)
    assert "jane.doe" not in stored and "@example" not in stored
