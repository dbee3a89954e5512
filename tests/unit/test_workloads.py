"""Real workloads on the scripted server: tools that see their job, answers narrowed to the job's
data, approval before side effects, failure routes, loops, and a call cut off at max_tokens."""

from __future__ import annotations

import json
import operator
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, NotRequired

import pytest
from langchain_core.tools import InjectedToolArg, tool
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel

from slmflow import (
    AskedReview,
    Event,
    Goto,
    GraphSpec,
    InvalidInput,
    JobContext,
    JobState,
    JobStatus,
    Label,
    Narrow,
    Object,
    Skill,
    ToolCalls,
    ToolContext,
    ToolRegistry,
    UsageError,
    ask_human,
    call_tool,
    needs_approval,
    propose_calls,
    run_job,
    run_skill,
    skill_node,
)
from slmflow.checkpoints import open_checkpointer
from slmflow.jobs import NO_RESUME
from slmflow.learning.hooks import Learning
from slmflow.learning.store import DatasetStore
from slmflow.testing import Reply, ScriptedServer

# The shop of these tests: customers and their orders (what a per-job database would hold).
ORDERS = {"ana": ["ORD-1", "ORD-2"], "bo": ["ORD-7"], "cy": []}
REFUNDS: list[tuple[str, str]] = []
"""(order id, call key) of every refund that ran."""
SEEN_CONFIG: list[dict[str, Any]] = []


@tool
def find_orders(customer: str, context: Annotated[ToolContext, InjectedToolArg]) -> list[str]:
    """The customer's order ids."""
    SEEN_CONFIG.append(dict(context.config))
    return ORDERS.get(customer, [])


@needs_approval
@tool
def refund(order_id: str, context: Annotated[ToolContext, InjectedToolArg]) -> str:
    """Refund an order (a side effect: it needs approval)."""
    REFUNDS.append((order_id, context.key))
    return f"refunded {order_id}"


@tool
def hand_over(note: str) -> str:
    """Hand the case to a human agent."""
    return "handed over"


TOOLS = ToolRegistry.of([find_orders, refund, hand_over])


def _only_listed(answer: Any, values: Mapping[str, Any]) -> list[str]:
    return [f"{c.arguments['order_id']} is not an order of this customer"
            for c in answer if c.arguments["order_id"] not in values["orders"]]  # fmt: skip


choose_refund = Skill(
    name="choose_refund",
    instructions="Refund the order the customer asks about.",
    prompt="Orders: {orders}\nRequest: {text}",
    output=ToolCalls(tools=("refund",)),
    checks=(_only_listed,),
    narrow=lambda values: Narrow(arguments={"refund": {"order_id": tuple(values["orders"])}}),
    slm_attempts=1,
)


class Request(BaseModel):
    customer: str
    text: str


class Outcome(BaseModel):
    refund: Any = None
    failure: Any = None


class State(JobState):
    orders: NotRequired[list[str]]
    refund: NotRequired[Any]
    failure: NotRequired[dict[str, Any]]


async def lookup(state: Mapping[str, Any], runtime: Runtime[JobContext]) -> dict[str, Any]:
    return {"orders": await call_tool(runtime, "find_orders", {"customer": state["input"]["customer"]})}


FINISHED: list[str] = []


def finish(state: Mapping[str, Any]) -> dict[str, Any]:
    FINISHED.append("choose_refund:" + ("failed" if state.get("failure") else "ok"))
    return {"output": {"refund": state.get("refund"), "failure": state.get("failure")}}


def refund_graph(on_failure: Any = "review") -> GraphSpec:
    builder = StateGraph(State, context_schema=JobContext)
    builder.add_node("lookup", lookup)
    node = skill_node(choose_refund, lambda s: {"orders": s["orders"], "text": s["input"]["text"]}, "refund",
                      on_failure=on_failure, then="finish")  # fmt: skip
    builder.add_node("choose_refund", node, destinations=("finish", "handover"))
    builder.add_node("handover", lambda s: {"refund": None})
    builder.add_node("finish", finish)
    builder.add_edge(START, "lookup")
    builder.add_edge("lookup", "choose_refund")
    builder.add_edge("handover", "finish")
    builder.add_edge("finish", END)
    return GraphSpec("refunds", builder, Request, Outcome, TOOLS, skills=(choose_refund,))


@pytest.fixture(autouse=True)
def _clean() -> None:
    REFUNDS.clear()
    SEEN_CONFIG.clear()
    FINISHED.clear()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer({"slm": [Reply(tool_calls=[("refund", {"order_id": "ORD-2"})])]}) as server:
        yield server


async def _run(spec: GraphSpec, server: ScriptedServer, data: dict[str, Any], checkpointer: Any, job_id: str,
               resume: Any = None, **extra: Any) -> tuple[Any, list[Event]]:  # fmt: skip
    events: list[Event] = []
    endpoints = server.endpoints("slm")
    result = await run_job(spec, data, endpoints=endpoints, checkpointer=checkpointer, job_id=job_id,
                           emit=events.append, resume=NO_RESUME if resume is None else resume, **extra)  # fmt: skip
    await endpoints.aclose()
    return result, events


# --- tool context and code nodes ------------------------------------------------------------


async def test_a_code_node_calls_a_tool_through_the_executor_and_the_tool_sees_the_job_config(server) -> None:
    async with open_checkpointer("memory") as saver:
        result, events = await _run(refund_graph(), server, {"customer": "ana", "text": "refund ORD-2"}, saver,
                                    "job-1", config={"tenant": "acme"})  # fmt: skip
    assert SEEN_CONFIG == [{"tenant": "acme"}]
    called = [e for e in events if e.kind == "tool_called"]
    assert called[0].data.tool == "find_orders" and called[0].data.key == "job-1:lookup:1:code:1:0"
    assert result.status == JobStatus.AWAITING_APPROVAL  # and the refund waits


async def test_a_code_node_tool_call_is_validated_before_it_runs(server) -> None:
    async def bad(state: Mapping[str, Any], runtime: Runtime[JobContext]) -> dict[str, Any]:
        return {"orders": await call_tool(runtime, "find_orders", {"customer": 7})}

    builder = StateGraph(State, context_schema=JobContext)
    builder.add_node("lookup", bad)
    builder.add_edge(START, "lookup")
    builder.add_edge("lookup", END)
    spec = GraphSpec("bad", builder, Request, Outcome, TOOLS)
    async with open_checkpointer("memory") as saver:
        result, _ = await _run(spec, server, {"customer": "ana", "text": "x"}, saver, "job-2")
    assert result.status == JobStatus.FAILED
    assert result.error.type == "InvalidToolArguments" and "customer" in result.error.message
    assert SEEN_CONFIG == []


async def test_a_reserved_config_key_is_refused_before_the_job_runs(server) -> None:
    async with open_checkpointer("memory") as saver:
        with pytest.raises(InvalidInput, match="thread_id"):
            await _run(refund_graph(), server, {"customer": "ana", "text": "x"}, saver, "job-3",
                       config={"thread_id": "other"})  # fmt: skip


# --- narrowing --------------------------------------------------------------------------------


async def test_narrowed_tool_arguments_reach_the_request_and_the_judge(server) -> None:
    server.scripts["slm"] = [Reply(tool_calls=[("refund", {"order_id": "ORD-9"})])]
    result = await run_skill(choose_refund, {"orders": ["ORD-1", "ORD-2"], "text": "refund"},
                             server.endpoints("slm"), tools=TOOLS)  # fmt: skip
    request = server.requests_for("slm")[0]
    schema = request["tools"][0]["function"]["parameters"]["properties"]["order_id"]
    assert schema["enum"] == ["ORD-1", "ORD-2"]
    assert result.status == "needs_review" and result.escalations[0].reason == "tool_error"
    assert "ORD-9" in result.escalations[0].detail and REFUNDS == []
    assert result.narrowed == {"arguments": {"refund": {"order_id": ["ORD-1", "ORD-2"]}}}


async def test_narrowed_labels_are_the_choice_and_a_label_outside_is_refused(server) -> None:
    skill = Skill(name="pick", instructions="Pick.", prompt="{text}", output=Label(labels=("a", "b", "c")),
                  narrow=lambda v: Narrow(labels=tuple(v["allowed"])), slm_attempts=1)  # fmt: skip
    server.scripts["slm"] = [Reply(text="c")]
    result = await run_skill(skill, {"text": "x", "allowed": ["a", "b"]}, server.endpoints("slm"))
    assert server.requests_for("slm")[0]["structured_outputs"] == {"choice": ["a", "b"]}
    assert result.status == "needs_review" and "not one of the labels: a, b" in result.escalations[0].detail


class Pick(BaseModel):
    order_id: str | None
    note: str


async def test_narrowed_object_fields_are_an_enum_and_judged(server) -> None:
    skill = Skill(name="pick_object", instructions="Pick.", prompt="{text}", output=Object(model=Pick),
                  narrow=lambda v: Narrow(fields={"order_id": (*v["orders"], None)}), slm_attempts=1)  # fmt: skip
    server.scripts["slm"] = [Reply(text=json.dumps({"order_id": "ORD-2", "note": "ok"}))]
    result = await run_skill(skill, {"text": "x", "orders": ["ORD-1", "ORD-2"]}, server.endpoints("slm"))
    schema = server.requests_for("slm")[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["order_id"]["enum"] == ["ORD-1", "ORD-2", None]
    assert result.ok and result.answer == {"order_id": "ORD-2", "note": "ok"}
    result = await run_skill(skill, {"text": "x", "orders": ["ORD-1"]}, server.endpoints("slm"))
    assert not result.ok and "order_id: 'ORD-2' is not one of" in result.escalations[0].detail


async def test_narrowing_to_nothing_asks_no_model(server) -> None:
    result = await run_skill(choose_refund, {"orders": [], "text": "refund"}, server.endpoints("slm"), tools=TOOLS)
    assert server.requests == []
    assert result.status == "needs_review" and "no allowed value for refund.order_id" in result.escalations[0].detail


# --- approval --------------------------------------------------------------------------------


async def test_a_call_needing_approval_is_proposed_then_runs_once_when_approved(server) -> None:
    spec, data = refund_graph(), {"customer": "ana", "text": "refund ORD-2"}
    async with open_checkpointer("memory") as saver:
        paused, _ = await _run(spec, server, data, saver, "job-a")
        assert paused.status == JobStatus.AWAITING_APPROVAL and REFUNDS == []
        assert paused.approval.shown() == [{"name": "refund", "arguments": {"order_id": "ORD-2"}}]
        assert paused.approval.step == "choose_refund" and paused.approval.tier == "slm"
        done, events = await _run(spec, server, data, saver, "job-a", resume={"approve": True})
        again, _ = await _run(spec, server, data, saver, "job-a", resume={"approve": True})  # a late duplicate
    assert done.status == JobStatus.SUCCEEDED
    assert done.output["refund"] == [{"name": "refund", "arguments": {"order_id": "ORD-2"}, "result": "refunded ORD-2"}]
    assert REFUNDS == [("ORD-2", "job-a:choose_refund:2:approved:1:0")]
    assert again.status == JobStatus.SUCCEEDED and len(REFUNDS) == 1
    assert len(server.requests_for("slm")) == 1  # the resumed step asked no model again
    finished = [e for e in events if e.kind == "step_finished" and e.step == "choose_refund"]
    assert finished[-1].data.approval == "approved"


@pytest.mark.parametrize(("decision", "kept"), [
    ({"approve": True}, ("approved", "ORD-2")),
    ({"edit": [{"name": "refund", "arguments": {"order_id": "ORD-1"}}]}, ("edited", "ORD-1")),
])  # fmt: skip
async def test_approved_calls_are_kept_once_as_training_data(server, tmp_path, decision, kept) -> None:
    store = DatasetStore(f"sqlite:///{tmp_path / 'runs.db'}")
    spec, data = refund_graph(), {"customer": "ana", "text": "refund ORD-2"}
    async with open_checkpointer("memory") as saver:
        for resume in (None, decision, decision):  # propose, decide, a late duplicate of the decision
            endpoints = server.endpoints("slm")
            endpoints.learning = Learning(store, record=True, route_ttl_s=0)
            result = await run_job(spec, data, endpoints=endpoints, checkpointer=saver, job_id="job-t",
                                   resume=NO_RESUME if resume is None else resume)  # fmt: skip
            await endpoints.aclose()
    assert result.status == JobStatus.SUCCEEDED
    runs = store.runs("choose_refund")
    # A proposal is kept once a person decides, as the calls they vouched for; a replay keeps nothing more.
    assert [(r.source, r.status) for r in runs] == [("human", "ok")]
    human = runs[-1]
    assert (human.meta["approval"], human.answer[0]["arguments"]["order_id"]) == kept
    assert human.meta["proposed_by"] == "slm" and human.job_id == "job-t" and human.step == "choose_refund"


async def test_an_edited_call_passes_the_same_checks_before_it_runs(server) -> None:
    spec, data = refund_graph(), {"customer": "ana", "text": "refund ORD-2"}
    async with open_checkpointer("memory") as saver:
        await _run(spec, server, data, saver, "job-e")
        refused, _ = await _run(spec, server, data, saver, "job-e",
                                resume={"edit": [{"name": "refund", "arguments": {"order_id": "ORD-7"}}]})  # fmt: skip
        assert refused.status == JobStatus.AWAITING_APPROVAL and REFUNDS == []
        assert "ORD-7" in refused.approval.review_errors[0]
        done, _ = await _run(spec, server, data, saver, "job-e",
                             resume={"edit": [{"name": "refund", "arguments": {"order_id": "ORD-1"}}]})  # fmt: skip
    assert done.status == JobStatus.SUCCEEDED and [r[0] for r in REFUNDS] == ["ORD-1"]


async def test_a_rejection_reaches_the_step_as_feedback_and_a_new_proposal_waits(server) -> None:
    server.scripts["slm"] = [Reply(tool_calls=[("refund", {"order_id": "ORD-2"})]),
                             Reply(tool_calls=[("refund", {"order_id": "ORD-1"})])]  # fmt: skip
    spec, data = refund_graph(), {"customer": "ana", "text": "refund my first order"}
    async with open_checkpointer("memory") as saver:
        await _run(spec, server, data, saver, "job-r")
        second, _ = await _run(spec, server, data, saver, "job-r", resume={"reject": "the customer means ORD-1"})
        assert second.status == JobStatus.AWAITING_APPROVAL and REFUNDS == []
        assert second.approval.round == 1
        assert second.approval.shown() == [{"name": "refund", "arguments": {"order_id": "ORD-1"}}]
        asked = json.dumps(server.requests_for("slm")[1]["messages"])
        assert "the customer means ORD-1" in asked
        done, _ = await _run(spec, server, data, saver, "job-r", resume={"approve": True})
    assert done.status == JobStatus.SUCCEEDED and REFUNDS == [("ORD-1", "job-r:choose_refund:2:approved:2:0")]
    assert len(server.requests_for("slm")) == 2


async def test_a_bad_decision_is_refused_and_the_job_keeps_waiting(server) -> None:
    spec, data = refund_graph(), {"customer": "ana", "text": "refund ORD-2"}
    async with open_checkpointer("memory") as saver:
        await _run(spec, server, data, saver, "job-b")
        result, _ = await _run(spec, server, data, saver, "job-b", resume={"reject": ""})
    assert result.status == JobStatus.AWAITING_APPROVAL and "says why" in result.approval.review_errors[0]
    assert REFUNDS == []


async def test_a_graph_policy_can_require_approval_of_any_tool(server) -> None:
    registry = ToolRegistry.of([find_orders, hand_over])
    assert not registry.get("hand_over").needs_approval
    builder = StateGraph(State, context_schema=JobContext)
    builder.add_node("noop", lambda s: {"output": {}})
    builder.add_edge(START, "noop")
    spec = GraphSpec("policy", builder, Request, Outcome, registry, approve=("hand_over",))
    assert spec.tools.get("hand_over").needs_approval and not spec.tools.get("find_orders").needs_approval


# --- failure routes ----------------------------------------------------------------------------


@pytest.mark.parametrize("customer", ["cy"])  # no orders: narrowing leaves nothing, the step fails
async def test_on_failure_fail_ends_the_job_failed(server, customer) -> None:
    async with open_checkpointer("memory") as saver:
        result, _ = await _run(refund_graph("fail"), server, {"customer": customer, "text": "refund"}, saver, "job-f")
    assert result.status == JobStatus.FAILED
    assert result.error.type == "StepFailed" and result.error.context["step"] == "choose_refund"


async def test_on_failure_goto_routes_the_graph_with_the_failure_in_the_state(server) -> None:
    async with open_checkpointer("memory") as saver:
        result, events = await _run(refund_graph(Goto("handover")), server, {"customer": "cy", "text": "refund"},
                                    saver, "job-g")  # fmt: skip
    assert result.status == JobStatus.SUCCEEDED
    assert result.output["failure"]["step"] == "choose_refund"
    assert result.output["failure"]["reasons"] == ["check_failed"]
    assert result.output["refund"] is None
    assert FINISHED == ["choose_refund:failed"]  # the failure route only, not the success route besides it
    finished = [e for e in events if e.kind == "step_finished" and e.step == "choose_refund"]
    assert [e.data.status for e in finished] == ["needs_review", "routed"] and finished[-1].data.to == "handover"


async def test_on_failure_review_is_the_default_and_shows_what_the_model_answered(server) -> None:
    server.scripts["slm"] = [Reply(text="I cannot do that")]
    async with open_checkpointer("memory") as saver:
        result, _ = await _run(refund_graph(), server, {"customer": "ana", "text": "refund"}, saver, "job-v")
    assert result.status == JobStatus.NEEDS_REVIEW
    assert result.review.last_output == "I cannot do that"


def test_an_unknown_failure_route_is_refused_at_definition() -> None:
    with pytest.raises(UsageError, match="on_failure must be"):
        skill_node(choose_refund, lambda s: s, "x", on_failure="retry")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="then=NODE"):
        skill_node(choose_refund, lambda s: s, "x", on_failure=Goto("handover"))


# --- a call cut off at max_tokens ----------------------------------------------------------


async def test_a_tool_call_cut_off_at_max_tokens_is_reported_as_such(server) -> None:
    server.scripts["slm"] = [Reply(text='<tool_call>{"name": "refund", "argu', finish_reason="length")]
    result = await run_skill(choose_refund, {"orders": ["ORD-1"], "text": "x"}, server.endpoints("slm"), tools=TOOLS)
    assert "cut off at the token limit" in result.escalations[0].detail
    assert "max_tokens" in result.escalations[0].detail


# --- loops ---------------------------------------------------------------------------------------


class LoopState(JobState):
    notes: Annotated[list[Any], operator.add]
    last: NotRequired[Any]


@tool
def note(text: str, context: Annotated[ToolContext, InjectedToolArg]) -> str:
    """Write a note."""
    return f"noted {text} ({context.key})"


LOOP_TOOLS = ToolRegistry.of([note])
write_note = Skill(name="write_note", instructions="Write the next note.", prompt="Notes so far: {notes}",
                   output=ToolCalls(tools=("note",)), slm_attempts=1)  # fmt: skip


def loop_graph() -> GraphSpec:
    builder = StateGraph(LoopState, context_schema=JobContext)
    builder.add_node("write", skill_node(write_note, lambda s: {"notes": s.get("notes", [])}, "last"))
    builder.add_node("keep", lambda s: {"notes": [s["last"][0]["result"]]})
    builder.add_node("finish", lambda s: {"output": {"refund": s["notes"]}})
    builder.add_edge(START, "write")
    builder.add_edge("write", "keep")
    builder.add_conditional_edges("keep", lambda s: "finish" if len(s["notes"]) >= 3 else "write")
    builder.add_edge("finish", END)
    return GraphSpec("notes", builder, Request, Outcome, LOOP_TOOLS, skills=(write_note,))


async def test_a_loop_feeds_each_tool_result_into_the_next_prompt_with_distinct_keys() -> None:
    replies = [Reply(tool_calls=[("note", {"text": f"n{i}"})]) for i in range(3)]
    with ScriptedServer({"slm": replies}) as server:
        async with open_checkpointer("memory") as saver:
            result, _ = await _run(loop_graph(), server, {"customer": "ana", "text": "x"}, saver, "job-l")
        prompts = [r["messages"][-1]["content"] for r in server.requests_for("slm")]
    assert result.status == JobStatus.SUCCEEDED
    notes = result.output["refund"]
    assert [n.split(" (")[0] for n in notes] == ["noted n0", "noted n1", "noted n2"]
    assert len({n.split(" (")[1] for n in notes}) == 3  # every run of the step makes its own key
    assert "noted n0" in prompts[1] and "noted n1" in prompts[2]


# --- pausing from a code node ----------------------------------------------------------------


def confirm_node(state: Mapping[str, Any]) -> dict[str, Any]:
    answer = ask_human("Refund this customer anyway?", customer=state["input"]["customer"])
    return {"refund": answer}


async def propose_node(state: Mapping[str, Any], runtime: Runtime[JobContext]) -> dict[str, Any]:
    decision = await propose_calls(runtime, [{"name": "refund", "arguments": {"order_id": "ORD-1"}}])
    return {"refund": decision.calls if decision.approved else f"rejected: {decision.reason}"}


def code_graph(node: Any) -> GraphSpec:
    builder = StateGraph(State, context_schema=JobContext)
    builder.add_node("decide", node)
    builder.add_node("finish", finish)
    builder.add_edge(START, "decide")
    builder.add_edge("decide", "finish")
    builder.add_edge("finish", END)
    return GraphSpec("code_pause", builder, Request, Outcome, TOOLS)


async def test_a_code_node_asks_a_person_and_gets_the_answer(server) -> None:
    spec, data = code_graph(confirm_node), {"customer": "ana", "text": "x"}
    async with open_checkpointer("memory") as saver:
        paused, _ = await _run(spec, server, data, saver, "job-ask")
        assert paused.status == JobStatus.NEEDS_REVIEW
        assert paused.review == AskedReview(step="decide", question="Refund this customer anyway?",
                                            details={"customer": "ana"})  # fmt: skip
        done, _ = await _run(spec, server, data, saver, "job-ask", resume="yes, once")
    assert done.status == JobStatus.SUCCEEDED and done.output["refund"] == "yes, once"


async def test_a_code_node_proposes_calls_that_run_once_approved_or_not_at_all(server) -> None:
    spec, data = code_graph(propose_node), {"customer": "ana", "text": "x"}
    async with open_checkpointer("memory") as saver:
        paused, _ = await _run(spec, server, data, saver, "job-p1")
        assert paused.status == JobStatus.AWAITING_APPROVAL and paused.approval.tier == "code"
        assert paused.approval.shown() == [{"name": "refund", "arguments": {"order_id": "ORD-1"}}] and REFUNDS == []
        done, _ = await _run(spec, server, data, saver, "job-p1", resume={"approve": True})
        await _run(spec, server, data, saver, "job-p1", resume={"approve": True})
        assert done.output["refund"][0]["result"] == "refunded ORD-1"
        assert REFUNDS == [("ORD-1", "job-p1:decide:1:approved:1:0")]
        await _run(spec, server, data, saver, "job-p2")
        rejected, _ = await _run(spec, server, data, saver, "job-p2", resume={"reject": "not this one"})
    assert rejected.output["refund"] == "rejected: not this one" and len(REFUNDS) == 1


# --- what a person decides holds for what they saw -----------------------------------------


async def test_a_decision_on_an_older_proposal_round_is_refused(server) -> None:
    spec, data = refund_graph(), {"customer": "ana", "text": "refund ORD-2"}
    async with open_checkpointer("memory") as saver:
        await _run(spec, server, data, saver, "job-round")
        stale, _ = await _run(spec, server, data, saver, "job-round", resume={"approve": True, "round": 3})
        assert stale.status == JobStatus.AWAITING_APPROVAL and "round 0, not 3" in stale.approval.review_errors[0]
        done, _ = await _run(spec, server, data, saver, "job-round", resume={"approve": True, "round": 0})
    assert done.status == JobStatus.SUCCEEDED and len(REFUNDS) == 1


async def test_a_reviewers_call_of_a_tool_needing_approval_runs_once(server) -> None:
    server.scripts["slm"] = [Reply(text="I cannot do that")]
    spec, data = refund_graph(), {"customer": "ana", "text": "refund"}
    async with open_checkpointer("memory") as saver:
        await _run(spec, server, data, saver, "job-rev")
        done, _ = await _run(spec, server, data, saver, "job-rev",
                             resume=[{"name": "refund", "arguments": {"order_id": "ORD-2"}}])  # fmt: skip
        await _run(
            spec, server, data, saver, "job-rev", resume=[{"name": "refund", "arguments": {"order_id": "ORD-2"}}]
        )
    assert done.status == JobStatus.SUCCEEDED
    assert REFUNDS == [("ORD-2", "job-rev:choose_refund:2:reviewed:1:0")]
    assert done.output["refund"][0]["result"] == "refunded ORD-2"


async def test_a_review_after_narrowing_to_nothing_is_judged_by_the_declared_skill(server) -> None:
    async with open_checkpointer("memory") as saver:
        paused, _ = await _run(refund_graph(), server, {"customer": "cy", "text": "refund"}, saver, "job-empty")
        assert paused.status == JobStatus.NEEDS_REVIEW
        refused, _ = await _run(refund_graph(), server, {"customer": "cy", "text": "refund"}, saver, "job-empty",
                                resume=[{"name": "refund", "arguments": {"order_id": "ORD-1"}}])  # fmt: skip
    # Not "is not one of []": the step's own check says why this answer cannot be right.
    assert refused.review.review_errors == ["ORD-1 is not an order of this customer"] and REFUNDS == []


async def test_call_tool_refuses_a_tool_that_needs_approval(server) -> None:
    async def sneaky(state: Mapping[str, Any], runtime: Runtime[JobContext]) -> dict[str, Any]:
        return {"refund": await call_tool(runtime, "refund", {"order_id": "ORD-1"})}

    async with open_checkpointer("memory") as saver:
        with pytest.raises(UsageError, match="propose_calls"):  # the project's bug: raised, never a job that ran it
            await _run(code_graph(sneaky), server, {"customer": "ana", "text": "x"}, saver, "job-sneak")
    assert REFUNDS == []


async def test_an_edit_of_a_code_nodes_proposal_keeps_its_tools(server) -> None:
    spec, data = code_graph(propose_node), {"customer": "ana", "text": "x"}
    async with open_checkpointer("memory") as saver:
        await _run(spec, server, data, saver, "job-swap")
        swapped, _ = await _run(spec, server, data, saver, "job-swap",
                                resume={"edit": [{"name": "hand_over", "arguments": {"note": "x"}}]})  # fmt: skip
    assert swapped.status == JobStatus.AWAITING_APPROVAL and "not call hand_over" in swapped.approval.review_errors[0]
