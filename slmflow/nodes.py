"""The nodes of a graph: a skill step (`skill_node`), and what code nodes call (`call_tool`,
`ask_human`, `propose_calls`).

A skill node runs a skill through the cascade with what the job provides (`JobContext`). A skill no
tier could answer pauses the graph with a LangGraph `interrupt` (the job is `needs_review`), fails
the job or routes the graph, as its node's `on_failure` says. Tool calls that need approval pause
it too (`awaiting_approval`), and run once approved. Every pause re-runs the node from its start
when resumed: the step memo keeps what was computed, so a replay asks no model and makes the same
tool keys.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langgraph.config import get_config
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from slmflow.answers import Tier
from slmflow.cascade import run_skill
from slmflow.errors import StepFailed, ToolError, ToolOutcomeUnknown, UsageError
from slmflow.events import Event, StepFinished, StepStarted
from slmflow.graphs import JobContext
from slmflow.narrowing import Narrowed, narrow
from slmflow.results import Escalation, EscalationReason
from slmflow.skills import Object, Skill, ToolCalls
from slmflow.tools import ToolCall, ToolContext, ToolRegistry
from slmflow.verdicts import approval_errors, kept_form, review_errors

__all__ = [
    "APPROVAL",
    "ASKED",
    "Decision",
    "Goto",
    "OnFailure",
    "Then",
    "ask_human",
    "call_tool",
    "propose_calls",
    "skill_node",
]

NodeInputs = Callable[[Mapping[str, Any]], Mapping[str, Any]]
Node = Callable[[Mapping[str, Any], Runtime[JobContext]], Awaitable[Any]]


APPROVAL = "approval"
"""The `reason` of a pause for approval (a review payload's is absent or `outcome_unknown`)."""


@dataclass(frozen=True)
class Goto:
    """An `on_failure` route: the graph goes on at node `node` (a LangGraph `Command(goto=...)`),
    with the failed step's summary in state key `key` (declare it in the graph's state).

    LangGraph follows a node's edges besides a `Command`'s goto, so a node with a failure route
    routes its success with `then` too and has no edges of its own: declare it with
    `builder.add_node(name, node, destinations=(...))`.
    """

    node: str
    key: str = "failure"


OnFailure = Literal["review", "fail"] | Goto
"""What a step no tier could answer does: `review` pauses the job for a human (`needs_review`),
`fail` ends it `failed` (`StepFailed`), a `Goto` routes the graph (e.g. to a human hand-over)."""


Then = str | Callable[[Mapping[str, Any]], str]
"""Where a node with a failure route goes on success: a node name, or a function of the state."""


def skill_node(
    skill: Skill,
    inputs: NodeInputs,
    output_key: str,
    *,
    step: str | None = None,
    on_failure: OnFailure = "review",
    then: Then | None = None,
) -> Node:
    """A graph node that runs `skill` on `inputs(state)` and writes its answer to `output_key`.

    Tool calls that need approval are proposed: the job pauses `awaiting_approval` until a human
    approves, edits or rejects them (a rejection is fed back to a new run of the skill). A step no
    tier could answer does what `on_failure` says; with a `Goto` route, `then` says where success
    goes (a node name, or a function of the updated state).
    """
    step_name = step or skill.name
    if not (on_failure in ("review", "fail") or isinstance(on_failure, Goto)):
        raise UsageError(f"step {step_name!r}: on_failure must be 'review', 'fail' or Goto(node), not {on_failure!r}")
    if isinstance(on_failure, Goto) and then is None:
        raise UsageError(f"step {step_name!r} routes failures to {on_failure.node!r}: say where success goes with "
                         "then=NODE (LangGraph would follow the node's own edges on failure too)")  # fmt: skip

    def success(state: Mapping[str, Any], update: dict[str, Any]) -> Any:
        if then is None:
            return update
        return Command(goto=then if isinstance(then, str) else then({**state, **update}), update=update)

    async def node(state: Mapping[str, Any], runtime: Runtime[JobContext]) -> Any:
        context = _context(runtime, f"graph step {step_name!r}")
        # The run of this step: LangGraph's step number, the same when a crashed or paused run is
        # replayed, new each time a loop comes back here. Tool keys and the memo carry it.
        run = int(get_config().get("metadata", {}).get("langgraph_step", 0))
        values = dict(inputs(state))
        here = _Step(skill, step_name, run, values, context, narrow(skill, values, context.tools))
        recorded = await here.settle()
        if recorded["status"] == "ok":
            return success(state, {output_key: recorded["answer"], "skill_results": [recorded]})
        if on_failure == "fail":
            await here.finished({**recorded, "status": "failed"})
            reasons = [e["reason"] for e in recorded.get("escalations", [])]
            why = ", ".join(reasons) or "no reason"
            raise StepFailed(f"step {step_name!r} failed: no tier could answer it ({why})",
                             step=step_name, skill=skill.name, reasons=reasons)  # fmt: skip
        if isinstance(on_failure, Goto):
            await here.finished({**recorded, "status": "routed", "to": on_failure.node})
            failure = {"step": step_name, "skill": skill.name, **_failure_summary(recorded)}
            return Command(goto=on_failure.node, update={on_failure.key: failure, "skill_results": [recorded]})
        answer = await here.review(recorded)
        reviewed = {**recorded, "status": "ok", "tier": "human", "answer": answer}
        return success(state, {output_key: answer, "skill_results": [reviewed]})

    node.__name__ = step_name
    return node


def _failure_summary(recorded: Mapping[str, Any]) -> dict[str, Any]:
    attempts = recorded.get("attempts", [])
    return {
        "reasons": [e["reason"] for e in recorded.get("escalations", [])],
        "last_errors": attempts[-1].get("errors", []) if attempts else [],
        "last_output": attempts[-1].get("output") if attempts else None,
    }


@dataclass
class _Step:
    """One run of a skill node: its cascade runs (one per approval round), approvals and review."""

    skill: Skill
    name: str
    run: int
    values: dict[str, Any]
    context: JobContext
    narrowed: Narrowed

    async def settle(self) -> dict[str, Any]:
        """The step's result once no approval is pending: `ok`, or failed (`needs_review`)."""
        feedback: list[tuple[Any, list[str]]] = []
        for round_ in itertools.count():
            # A step paused (for approval or review) re-runs from its start when resumed: every
            # cascade run is remembered, so a replay asks no model twice and makes the same keys.
            memo_key = f"{self.name}:{self.run}" + (f":{round_}" if round_ else "")
            recorded = await self.context.memo.recall(memo_key)
            if recorded is None:
                recorded = await self._run_settled(feedback, round_)
                if recorded["status"] != "ok":
                    await self.context.memo.remember(memo_key, recorded)
            if recorded["status"] != "proposed":
                return recorded
            decision, calls = self._decide(recorded, round_)
            if decision == "reject":
                feedback.append(([{"name": c["name"], "arguments": c["arguments"]} for c in recorded["answer"]],
                                 [f"a reviewer rejected the call(s): {calls}"]))  # fmt: skip
                continue
            return await self._run_approved(recorded, calls, round_, edited=decision == "edit")
        raise AssertionError("unreachable")

    def _decide(self, recorded: dict[str, Any], round_: int) -> tuple[str, Any]:
        """Pause for approval of the proposed calls; ("approve"|"edit", calls) or ("reject", why)."""
        proposed = [{"name": c["name"], "arguments": c["arguments"]} for c in recorded["answer"]]
        payload: dict[str, Any] = {"reason": APPROVAL, "step": self.name, "skill": self.skill.name, "round": round_,
                                   "calls": proposed, "tier": recorded.get("tier"),
                                   "confidence": recorded.get("confidence"), "result": recorded}  # fmt: skip
        while True:
            answer = interrupt(payload)
            decision, value, errors = _approval_decision(answer, proposed, round_)
            if decision == "edit" and not errors:
                errors = approval_errors(self.narrowed.skill, value, self.values, self.narrowed.tools)
            if not errors:
                return decision, value
            payload = {**payload, "review_errors": errors}

    async def _run_approved(self, recorded: dict[str, Any], calls: list[dict[str, Any]], round_: int, *,
                            edited: bool) -> dict[str, Any]:  # fmt: skip
        """Run the approved calls, keyed by this round (a replay after a crash reuses the keys: a
        fleet runs each once, or pauses `outcome_unknown` for a call that may have run). The outcome
        is remembered at once: a later pause of this step (a review after a failed call) replays it,
        never the calls."""
        memo_key = f"{self.name}:{self.run}:approved:{round_}"
        if (remembered := await self.context.memo.recall(memo_key)) is not None:
            return remembered
        tools = self.narrowed.tools
        assert tools is not None
        contexts = [ToolContext(self.context.job_id, self.name, index, self.run, "approved", round_ + 1,
                                config=self.context.config) for index in range(len(calls))]  # fmt: skip
        try:
            results = await _run_calls(self.context, self.name, self.skill.name, tools, calls, contexts)
        except ToolError as exc:
            failed = Escalation(skill=self.skill.name, step=self.name, from_tier=Tier(recorded["tier"]),
                                to="review", reason=EscalationReason.TOOL_ERROR, detail=str(exc)[:500])  # fmt: skip
            outcome = {**recorded, "status": "needs_review",
                       "escalations": [*recorded.get("escalations", []), failed.model_dump(mode="json")]}  # fmt: skip
            await self.context.memo.remember(memo_key, outcome)
            return outcome
        answer = kept_form([ToolCall(c["name"], c["arguments"], r) for c, r in zip(calls, results, strict=True)])
        done = {**recorded, "status": "ok", "answer": answer, "approval": "edited" if edited else "approved"}
        await self.context.memo.remember(memo_key, done)
        await self._keep_approved(done)
        await self.finished(done)
        return done

    async def _keep_approved(self, done: dict[str, Any]) -> None:
        """A person vouched for these calls (as proposed, or edited): keep them as training data,
        once (after the memo: a replay returns before this), under the narrowing they were judged by."""
        learning = self.context.endpoints.learning
        if learning is None or not learning.record:
            return
        meta = {"approval": done["approval"], "proposed_by": done.get("tier"),
                **({"narrowed": done["narrowed"]} if done.get("narrowed") else {})}  # fmt: skip
        await learning.keep_review(self.narrowed.skill, self.values, done["answer"], self.narrowed.tools,
                                   job_id=self.context.job_id, step=self.name, meta=meta)  # fmt: skip

    async def _run_settled(self, feedback: list[tuple[Any, list[str]]], round_: int) -> dict[str, Any]:
        """Run the step; a tool call whose outcome is unknown pauses it until a reviewer settles it."""
        while True:
            try:
                return await _run_step(self.skill, self.name, self.run, self.values, self.context, feedback, round_)
            except ToolOutcomeUnknown as exc:
                await _settle_unknown(self.context, self.name, self.skill.name, exc)

    async def review(self, recorded: dict[str, Any]) -> Any:
        """Pause for a human answer (checked by the step's schema, narrowing and checks); keep it."""
        context = self.context
        # A narrowing that left nothing would refuse every answer: the person decides within the
        # declared constraint then (the payload's escalation says why no model could answer).
        skill, tools = (
            (self.skill, context.tools) if self.narrowed.empty else (self.narrowed.skill, self.narrowed.tools)
        )
        # The payload is what a reviewer needs to answer; an answer that fails the step's schema or
        # checks is refused and the step asks again.
        payload: dict[str, Any] = {"step": self.name, "skill": skill.name, "result": recorded}
        while errors := self._review_errors(skill, answer := interrupt(payload), tools):
            payload = {**payload, "review_errors": errors}
        if isinstance(skill.output, Object):
            answer = skill.output.model.model_validate(answer).model_dump(mode="json")
        if isinstance(skill.output, ToolCalls) and tools is not None:
            answer = await self._run_reviewed(answer, tools)
        learning = context.endpoints.learning
        if learning is not None and learning.record:
            await learning.keep_review(skill, self.values, answer, context.tools, job_id=context.job_id, step=self.name)
        await context.publish(Event(kind="step_finished", step=self.name, skill=skill.name,
                                    data=StepFinished(status="ok", tier="human", run=self.run)))  # fmt: skip
        return answer

    def _review_errors(self, skill: Skill, answer: Any, tools: ToolRegistry | None) -> list[str]:
        """The step's schema, narrowing and checks; calls a reviewer gives for a tool that needs
        approval will run (see `_run_reviewed`), so they meet the step's checks as the model's would."""
        if errors := review_errors(skill, answer, self.values, tools):
            return errors
        if not isinstance(skill.output, ToolCalls) or tools is None:
            return []
        to_run = [ToolCall(c["name"], tools.get(c["name"]).validate(c.get("arguments", {}))) for c in answer
                  if "result" not in c and tools.get(c["name"]).needs_approval]  # fmt: skip
        return [e for check in skill.checks for e in check(to_run, self.values)] if to_run else []

    async def _run_reviewed(self, calls: list[dict[str, Any]], tools: ToolRegistry) -> list[dict[str, Any]]:
        """A reviewer's calls are taken as done (their results are theirs to give), except a call of
        a tool that needs approval given without a result: the reviewer approved it, so it runs, once."""
        pending = [index for index, call in enumerate(calls)
                   if "result" not in call and tools.get(call["name"]).needs_approval]  # fmt: skip
        if not pending:
            return calls
        memo_key = f"{self.name}:{self.run}:reviewed"
        if (remembered := await self.context.memo.recall(memo_key)) is not None:
            return list(remembered["answer"])
        chosen = [calls[i] for i in pending]
        contexts = [ToolContext(self.context.job_id, self.name, i, self.run, "reviewed", 1, config=self.context.config)
                    for i in pending]  # fmt: skip
        results = await _run_calls(self.context, self.name, self.skill.name, tools, chosen, contexts)
        done = kept_form([ToolCall(c["name"], c.get("arguments", {}), r) for c, r in zip(chosen, results, strict=True)])
        ran = dict(zip(pending, done, strict=True))
        answer = [ran.get(i, call) for i, call in enumerate(calls)]
        await self.context.memo.remember(memo_key, {"answer": answer})
        return answer

    async def finished(self, recorded: dict[str, Any]) -> None:
        """The step's `step_finished` event for an ending decided here: `ok` once approved (with
        `approval`), `failed` (the job fails) or `routed` (on to node `to`)."""
        await self.context.publish(Event(kind="step_finished", step=self.name, skill=self.skill.name,
                                         data=StepFinished(status=recorded["status"], tier=recorded.get("tier"),
                                                           run=self.run, approval=recorded.get("approval"),
                                                           to=recorded.get("to"))))  # fmt: skip


async def _settle_unknown(context: JobContext, step: str, skill: str | None, exc: ToolOutcomeUnknown) -> None:
    """Pause for a reviewer to settle a call whose outcome is unknown, then record their answer."""
    payload = {"step": step, "skill": skill, "reason": "outcome_unknown", "message": exc.message,
               **{k: exc.context.get(k) for k in ("tool", "key", "arguments")}}  # fmt: skip
    while errors := _settle_errors(answer := interrupt(payload)):
        payload = {**payload, "review_errors": errors}
    await context.executor.resolve(context.job_id, str(exc.context["key"]), answer)


async def _run_calls(context: JobContext, step: str, skill: str | None, tools: ToolRegistry,
                     calls: list[dict[str, Any]], contexts: list[ToolContext]) -> list[Any]:  # fmt: skip
    """Run validated calls (in parallel) through the job's executor; a call whose outcome is unknown
    pauses the step until a reviewer settles it (then the calls run again under the same keys)."""
    while True:
        try:
            return list(await asyncio.gather(*(
                context.executor.run(tools.get(c["name"]), tools.get(c["name"]).validate(c["arguments"]), ctx)
                for c, ctx in zip(calls, contexts, strict=True)
            )))  # fmt: skip
        except ToolOutcomeUnknown as exc:
            await _settle_unknown(context, step, skill, exc)


def _approval_decision(answer: Any, proposed: list[dict[str, Any]], round_: int = 0) -> tuple[str, Any, list[str]]:
    """A reviewer's decision: {"approve": true}, {"edit": [calls]} or {"reject": "why"}."""
    usage = ['answer {"approve": true}, {"edit": [{"name": ..., "arguments": {...}}]} or {"reject": "why"}']
    if not isinstance(answer, dict) or not answer:
        return "", None, usage
    if "round" in answer and answer["round"] != round_:
        # An approval (or edit, or rejection) made on an earlier proposal holds for that one only.
        return "", None, [f"this is proposal round {round_}, not {answer['round']}: decide on these calls"]
    answer = {k: v for k, v in answer.items() if k != "round"}
    if answer.get("approve") is True and set(answer) <= {"approve", "calls"}:
        # The SDK and CLI send the calls they showed: an approval holds only for what was seen.
        if "calls" in answer and answer["calls"] != proposed:
            return "", None, ["the proposed calls changed since they were shown: decide on these"]
        return "approve", proposed, []
    if len(answer) != 1:
        return "", None, usage
    if "reject" in answer:
        why = answer["reject"]
        if not isinstance(why, str) or not why.strip():
            return "", None, ['a rejection says why, for the next attempt: {"reject": "why"}']
        return "reject", why.strip(), []
    if "edit" in answer:
        calls = answer["edit"]
        if not isinstance(calls, list) or not calls or not all(isinstance(c, dict) and "name" in c for c in calls):
            return "", None, ['an edit is a list of calls: {"edit": [{"name": ..., "arguments": {...}}]}']
        return "edit", [{"name": c["name"], "arguments": c.get("arguments", {})} for c in calls], []
    return "", None, usage


async def call_tool(runtime: Runtime[JobContext], name: str, arguments: Mapping[str, Any]) -> Any:
    """Run tool `name` from a code node, through the job's executor, as a model's call would run:
    arguments validated against its schema first (`InvalidToolArguments`), keyed by the node's run
    and the call's order in it (a replayed node makes the same keys), traced, with a `tool_called`
    event from the executor. Its failure is the typed `ToolError`, which ends the job `failed`
    unless the node catches it."""
    context = _context(runtime, "call_tool")
    step, run = _code_node_run()
    spec = context.tools.get(name)
    if spec.needs_approval:
        raise UsageError(f"tool {name!r} needs approval: propose it with propose_calls(runtime, [...]), not call_tool")
    checked = spec.validate(arguments)
    tool_context = ToolContext(context.job_id, step, _next_index(context, step, run), run, "code", 1,
                               config=context.config)  # fmt: skip
    while True:
        try:
            return await context.executor.run(spec, checked, tool_context)
        except ToolOutcomeUnknown as exc:
            await _settle_unknown(context, step, None, exc)


def _code_node_run() -> tuple[str, int]:
    """The running code node's name and run (LangGraph's step number: the same on a replay)."""
    metadata = get_config().get("metadata", {})
    return str(metadata.get("langgraph_node", "code")), int(metadata.get("langgraph_step", 0))


def _next_index(context: JobContext, step: str, run: int) -> int:
    """The next call index of a code node's run: its calls are keyed in the order it makes them."""
    counter = f"{step}:{run}"
    index = context._calls.get(counter, 0)
    context._calls[counter] = index + 1
    return index


ASKED = "asked"
"""The `reason` of a pause a code node asked for (`ask_human`)."""


def ask_human(question: str, **details: Any) -> Any:
    """Pause the job from a code node for a person's answer (status `needs_review`; answered with
    `Job.review(answer)` or `slmflow review`) and return that answer when the job resumes. The node
    runs again from its start on resume (LangGraph): keep work before the call idempotent."""
    step, _ = _code_node_run()
    return interrupt({"step": step, "reason": ASKED, "question": question, "details": details})


@dataclass(frozen=True)
class Decision:
    """What a person decided on calls a code node proposed (`propose_calls`)."""

    approved: bool
    calls: list[dict[str, Any]]
    """The calls that ran, with their results (the edited ones if edited); empty when rejected."""
    reason: str | None = None
    """Why they were rejected."""


async def propose_calls(runtime: Runtime[JobContext], calls: list[dict[str, Any]]) -> Decision:
    """From a code node: propose tool calls (`[{"name": ..., "arguments": {...}}]`, arguments
    validated first), pause the job `awaiting_approval`, and once approved (or edited) run them once
    through the job's executor, keyed like a skill's approved calls; a rejection is returned, not run."""
    context = _context(runtime, "propose_calls")
    step, run = _code_node_run()
    proposed = [{"name": c["name"], "arguments": context.tools.get(c["name"]).validate(c.get("arguments", {}))}
                for c in calls]  # fmt: skip
    # Each call of this node's run has its own index (shared with call_tool): a second proposal
    # never reuses the first one's keys, and a replay makes the same ones.
    indexes = [_next_index(context, step, run) for _ in proposed]
    payload: dict[str, Any] = {"reason": APPROVAL, "step": step, "skill": None, "round": 0, "calls": proposed,
                               "tier": "code", "confidence": None}  # fmt: skip
    while True:
        decision, value, errors = _approval_decision(interrupt(payload), proposed)
        if decision == "edit" and not errors:
            errors = _calls_errors(value, context.tools, {c["name"] for c in proposed}, len(proposed))
        if not errors:
            break
        payload = {**payload, "review_errors": errors}
    if decision == "reject":
        return Decision(False, [], value)
    checked = [{"name": c["name"], "arguments": context.tools.get(c["name"]).validate(c["arguments"])} for c in value]
    contexts = [
        ToolContext(context.job_id, step, index, run, "approved", 1, config=context.config) for index in indexes
    ]
    results = await _run_calls(context, step, None, context.tools, checked, contexts)
    return Decision(
        True, kept_form([ToolCall(c["name"], c["arguments"], r) for c, r in zip(checked, results, strict=True)])
    )


def _calls_errors(calls: list[dict[str, Any]], tools: ToolRegistry, allowed: set[str], count: int) -> list[str]:
    """What is wrong with a reviewer's edit of a code node's proposal: the same tools, as many calls."""
    if len(calls) != count:
        return [f"an edit keeps the proposal's {count} call(s), got {len(calls)}"]
    if stray := sorted({c["name"] for c in calls} - allowed):
        return [f"an edit may only change the arguments of {', '.join(sorted(allowed))}, not call {', '.join(stray)}"]
    try:
        for call in calls:
            tools.get(call["name"]).validate(call["arguments"])
    except (ToolError, UsageError) as exc:
        return [str(exc)]
    return []


def _context(runtime: Runtime[JobContext], what: str) -> JobContext:
    if runtime.context is None:
        raise UsageError(f"{what} ran without a JobContext: run the graph as a job (run_job, slmflow run, a fleet)")
    return runtime.context


def _settle_errors(answer: Any) -> list[str]:
    if isinstance(answer, dict) and (answer.get("retry") is True or "result" in answer):
        return []
    return ['answer {"result": <what the tool returned>} or {"retry": true} (run the call again)']


async def _run_step(
    skill: Skill,
    step: str,
    run: int,
    values: Mapping[str, Any],
    context: JobContext,
    feedback: Sequence[tuple[Any, list[str]]] = (),
    round_: int = 0,
) -> dict[str, Any]:
    await context.publish(Event(kind="step_started", step=step, skill=skill.name, data=StepStarted(run=run)))
    result = await run_skill(
        skill, values, context.endpoints, tools=context.tools, executor=context.executor,
        job_id=context.job_id, step=step, run=run, config=context.config, feedback=feedback, round=round_,
    )  # fmt: skip
    for escalation in result.escalations:
        await context.publish(Event(kind="skill_escalated", step=step, skill=skill.name, data=escalation))
    last = result.attempts[-1] if result.attempts else None
    await context.publish(Event(kind="step_finished", step=step, skill=skill.name, data=StepFinished(
        status=result.status, tier=result.tier, attempts=len(result.attempts), run=run,
        confidence=result.confidence if result.ok else (last.confidence if last else None),
        input_tokens=sum(a.input_tokens for a in result.attempts),
        output_tokens=sum(a.output_tokens for a in result.attempts),
    )))  # fmt: skip
    return {**result.model_dump(mode="json"), "step": step}
