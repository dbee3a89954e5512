"""The cascade: a skill's tiers in order, SLM first, escalating only on a recorded reason.

```
for attempt in slm_attempts:
    answer = call SLM (temperature 0, constrained decoding)
    verdict = judge(answer)        # parse, schema, checks, confidence, tool arguments
    if verdict.ok: run its tool calls; if they succeed: return it (tier=slm)
    if low confidence: stop retrying (feedback does not make a model surer)
    feed verdict.errors into the next prompt
escalate to the LLM with the last reason; same checks (no confidence floor)
no tier succeeded: needs_review, every reason kept
```

A model error (timeout, unavailable) ends the tier at once: retrying the same endpoint after a
full timeout costs more than escalating. Connection errors and 5xx were already retried with
backoff inside the client.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from slmflow import telemetry
from slmflow.answers import Judged, Tier, answer_key, input_hash, said
from slmflow.errors import ModelError, ModelTimeout, ToolError, ToolOutcomeUnknown
from slmflow.hooks import CascadeHooks, serving_floor, serving_model
from slmflow.models import Completion, Endpoints, ModelClient
from slmflow.narrowing import Narrowed, narrow
from slmflow.prompts import feedback_message, render_messages
from slmflow.results import Attempt, Escalation, EscalationReason, SkillResult
from slmflow.skills import Skill, ToolCalls
from slmflow.tools import InProcessExecutor, ToolCall, ToolContext, ToolExecutor, ToolRegistry
from slmflow.verdicts import Verdict, agreement, constraint, gate, judge, kept_form, scoring_fields

log = logging.getLogger("slmflow.cascade")
__all__ = ["SkillRun", "run_skill"]


@dataclass(frozen=True)
class SkillRun:
    """Where a skill runs: its endpoints, tools and executor, and the step it serves."""

    endpoints: Endpoints
    tools: ToolRegistry | None = None
    executor: ToolExecutor | None = None
    job_id: str = "adhoc"
    step: str | None = None
    run: int = 0
    """The run of the step (see `ToolContext.run`)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The job's values, handed to its tool calls (`ToolContext.config`)."""
    round: int = 0
    """The approval round of the step (a rejected proposal's step runs again in the next round)."""


async def run_skill(
    skill: Skill,
    values: Mapping[str, Any] | BaseModel,
    endpoints: Endpoints,
    *,
    tools: ToolRegistry | None = None,
    executor: ToolExecutor | None = None,
    job_id: str = "adhoc",
    step: str | None = None,
    run: int = 0,
    config: Mapping[str, Any] | None = None,
    feedback: Sequence[tuple[Any, list[str]]] = (),
    round: int = 0,
) -> SkillResult:
    """Run one skill on one input through the cascade; never raises for a bad answer.

    The one exception that passes through is `ToolOutcomeUnknown`: a call that may have run must
    not be tried again by a new attempt (a new key), so the step pauses for a reviewer instead.
    An answer calling a tool that needs approval is checked, not run: status `proposed`.
    `feedback` is (an earlier answer, why it was refused) pairs shown to every attempt, e.g. a
    reviewer's rejection of a proposed call; `round` numbers such runs of one step, so that
    their tool calls never share a key (`ToolContext.tier` reads `slm.r1`, ...).
    """
    data = values.model_dump() if isinstance(values, BaseModel) else dict(values)
    narrowed = narrow(skill, data, tools)
    where = SkillRun(endpoints, narrowed.tools, executor or InProcessExecutor(), job_id, step or skill.name, run,
                     config or {}, round)  # fmt: skip
    with telemetry.skill_span(skill.name, where.step or skill.name, job_id) as span:
        span.set_attribute("slmflow.step_run", run)
        started = time.perf_counter()
        cascade = _Cascade(narrowed.skill, data, where, narrowed)
        cascade.base_messages += [feedback_message(answer, errors) for answer, errors in feedback]
        result = await cascade.run()
        slm_model = cascade.slm_name()
        telemetry.record_skill(skill.name, result.status, [str(e.reason) for e in result.escalations],
                               time.perf_counter() - started, result.usage.cost, result.usage.all_llm_cost,
                               slm_model)  # fmt: skip
        span.set_attribute("slmflow.slm_model", slm_model)
        span.set_attribute("slmflow.status", result.status)
        span.set_attribute("slmflow.tier", str(result.tier or "review"))
        if result.confidence is not None:
            span.set_attribute("slmflow.confidence", result.confidence)
        if result.escalations:
            span.set_attribute("slmflow.escalation_reason", [str(e.reason) for e in result.escalations])
        span.set_attribute("slmflow.cost", result.usage.cost)
        span.set_attribute("slmflow.cost_all_llm", result.usage.all_llm_cost)
        return result


class _Cascade:
    def __init__(self, skill: Skill, values: dict[str, Any], run: SkillRun, narrowed: Narrowed) -> None:
        self.skill, self.values, self.run_, self.narrowed = skill, values, run, narrowed
        self.base_messages = render_messages(skill, values, run.tools)
        self.result = SkillResult(skill=skill.name, status="needs_review", narrowed=narrowed.summary())
        self.slm_model = skill.model
        self.first_slm: Judged | None = None
        """The SLM's first answer as judged (before any tool ran): what a shadow candidate meets."""
        self.floor: float | None = None
        """The floor the SLM's answers must meet (None: no calibration vouches; escalate); set by `run`."""
        self.proposed = False
        """The kept answer calls a tool that needs approval: its calls were not run."""

    def _tier_key(self, tier: Tier) -> str:
        """The tier as tool keys name it: with the approval round after the first (`slm.r1`)."""
        return f"{tier}.r{self.run_.round}" if self.run_.round else str(tier)

    def _held(self, calls: list[ToolCall]) -> bool:
        assert self.run_.tools is not None
        return any(self.run_.tools.get(call.name).needs_approval for call in calls)

    def tiers(self) -> list[tuple[Tier, ModelClient, str | None, int]]:
        tiers = [(Tier.SLM, self.run_.endpoints.slm, self.slm_model, self.skill.slm_attempts)]
        llm = self.run_.endpoints.llm
        if self.skill.escalate and llm is not None and self.skill.llm_attempts > 0:
            tiers.append((Tier.LLM, llm, None, self.skill.llm_attempts))
        return tiers

    async def run(self) -> SkillResult:
        learning = self.run_.endpoints.learning
        if learning is None:
            self.floor = serving_floor(self.skill, None)
            return await self._climb()
        route = await learning.route(self.skill.name)
        self.slm_model = serving_model(self.skill, route, self.run_.endpoints.slm.endpoint.default_model)
        calibrated = None
        if self.skill.target_precision is not None and self.skill.manual_floor is None:
            calibrated = await learning.floor(self.skill, self.slm_model)
        self.floor = serving_floor(self.skill, calibrated)
        shadow = None
        if route.candidate and route.candidate != route.current and random.random() < route.shadow_rate:
            shadow = asyncio.create_task(self._shadow(route.candidate))
        try:
            result = await self._climb()
        except BaseException:
            if shadow is not None:
                shadow.cancel()
            raise
        candidate = await shadow if shadow is not None else None
        compared = None
        if route.candidate and candidate is not None and self.first_slm is not None:
            compared = (route.candidate, candidate)
        if learning.record and result.status != "proposed":  # a proposal is kept once a human decides
            await self._keep(learning)
        llm = self.run_.endpoints.llm
        kept_by_slm = result.ok and result.tier is Tier.SLM
        if kept_by_slm and llm is not None and (compared is not None or random.random() < learning.audit_rate):
            # A shadowed call the SLM answered has no reference yet: the audit gives it one, so the
            # gate can score both models on the calls they keep, not only on the ones escalated.
            self.run_.endpoints.spawn(self._audit(learning, llm, compared))  # off the job's path
        elif compared is not None:
            reference = result.answer if result.ok and not kept_by_slm else None
            await self._compare(learning, compared, reference, str(result.tier) if reference is not None else None)
        return result

    async def _compare(self, learning: CascadeHooks, compared: tuple[str, Judged], reference: Any,
                       source: str | None) -> None:  # fmt: skip
        assert self.first_slm is not None
        await learning.compare_shadow(self.skill.name, self.slm_name(), compared[0], self.first_slm, compared[1],
                                      reference, source, input_hash(self.values))  # fmt: skip

    async def _audit(self, learning: CascadeHooks, llm: ModelClient, compared: tuple[str, Judged] | None) -> None:
        """The LLM answers the same input; does it agree with the kept SLM answer? Its tool calls are
        judged, never run. Kept with the skill and model: online precision, and the alarm; a shadow
        comparison of the same call is scored against the LLM's answer."""
        kept = self.result
        request = constraint(self.skill, llm.endpoint.dialect, self.run_.tools)
        agree: bool | None = None
        answer: Any = None
        with telemetry.chat_span(llm.endpoint.default_model, Tier.LLM, 0) as span:
            span.set_attribute("slmflow.audit", True)
            try:
                completion = await llm.chat(self.base_messages, max_tokens=self.skill.token_budget, request=request)
            except ModelError as exc:
                log.warning("audit of %s: the LLM failed (%s)", self.skill.name, exc)
            else:
                verdict = judge(self.skill, completion, self.values, dialect=llm.endpoint.dialect,
                                tools=self.run_.tools)  # fmt: skip
                if verdict.ok:
                    answer = kept_form(verdict.answer)
                    agree = answer_key(answer) == answer_key(kept.answer)
            span.set_attribute("slmflow.audit_agree", str(agree))
        await learning.keep_audit(self.skill, self.slm_name(), self.values, kept.confidence, agree, answer)
        if compared is not None:
            await self._compare(learning, compared, answer, str(Tier.LLM) if answer is not None else None)

    async def _climb(self) -> SkillResult:
        self.result.usage.all_llm_cost = 0.0
        if self.narrowed.empty:
            # The job's own data leaves nothing to choose from: no model can answer, so none is asked.
            self.result.escalations.append(Escalation(
                skill=self.skill.name, step=self.run_.step, from_tier=Tier.SLM, to="review",
                reason=EscalationReason.CHECK_FAILED,
                detail=f"narrowed to no allowed value for {', '.join(self.narrowed.empty)}",
            ))  # fmt: skip
            return self.result
        tiers = self.tiers()
        for position, (tier, client, model, attempts) in enumerate(tiers):
            verdict = await self._run_tier(tier, client, model, attempts)
            if verdict.ok:
                self.result.status, self.result.tier = "proposed" if self.proposed else "ok", tier
                self.result.answer = kept_form(verdict.answer)
                self.result.confidence = verdict.confidence
                return self.result
            assert verdict.reason is not None
            self.result.escalations.append(
                Escalation(
                    skill=self.skill.name,
                    step=self.run_.step,
                    from_tier=tier,
                    to="llm" if position + 1 < len(tiers) else "review",
                    reason=verdict.reason,
                    detail="; ".join(verdict.errors)[:500],
                )
            )
        return self.result

    async def _run_tier(self, tier: Tier, client: ModelClient, model: str | None, attempts: int) -> Verdict:
        messages = list(self.base_messages)
        request = constraint(self.skill, client.endpoint.dialect, self.run_.tools)
        if tier is Tier.SLM:
            request |= scoring_fields(self.skill)
        verdict = Verdict.reject(EscalationReason.MODEL_UNAVAILABLE, "no attempt was made")
        for number in range(1, attempts + 1):
            with telemetry.chat_span(model or client.endpoint.default_model, tier, number) as span:
                telemetry.content(span, "gen_ai.input.messages", messages)
                verdict, completion = await self._ask(tier, client, model, messages, request)
                _observe(span, self.skill.name, tier, verdict, completion)
            if completion is not None and verdict.ok and isinstance(self.skill.output, ToolCalls):
                if self._held(verdict.answer):
                    self.proposed = True  # a call that needs approval is proposed, never run here
                else:
                    verdict = await self._execute(verdict, tier, number)  # its spans sit beside the model call's
            self._record(tier, number, completion.model if completion else model or client.endpoint.default_model,
                         verdict, completion, client)  # fmt: skip
            if completion is None:
                return verdict  # the endpoint failed: escalate now rather than wait out another timeout
            if verdict.ok or verdict.reason is EscalationReason.LOW_CONFIDENCE:
                # An unsure model is not repaired by feedback: re-asking it at temperature 0 costs a
                # call and rarely changes its mind, so low confidence escalates at once.
                return verdict
            messages = [*self.base_messages, feedback_message(_raw_output(completion), verdict.errors)]
        return verdict

    async def _ask(
        self, tier: Tier, client: ModelClient, model: str | None, messages: list[dict[str, Any]],
        request: dict[str, Any],
    ) -> tuple[Verdict, Completion | None]:  # fmt: skip
        try:
            completion = await client.chat(messages, model=model, max_tokens=self.skill.token_budget, request=request)
        except ModelError as exc:
            reason = EscalationReason.TIMEOUT if isinstance(exc, ModelTimeout) else EscalationReason.MODEL_UNAVAILABLE
            return Verdict.reject(reason, str(exc)), None
        sampled = tier is Tier.SLM and self.skill.signal == "agreement"
        floor = self.floor if tier is Tier.SLM and not sampled else 0.0  # the LLM's answers are not gated
        verdict = judge(self.skill, completion, self.values, dialect=client.endpoint.dialect, tools=self.run_.tools,
                        floor=floor)  # fmt: skip
        if sampled and verdict.ok:
            verdict = gate(verdict, await self._agreement(client, model, messages, request, verdict), self.floor)
        if tier is Tier.SLM and self.first_slm is None:
            self.first_slm = _judged(verdict, completion)
        return verdict, completion

    async def _agreement(
        self, client: ModelClient, model: str | None, messages: list[dict[str, Any]], request: dict[str, Any],
        verdict: Verdict,
    ) -> float | None:  # fmt: skip
        """Self-consistency: the share of `samples` sampled answers (checked like any answer) that
        equal the greedy one; None when sampling failed (nothing vouches: the answer escalates)."""
        skill = self.skill
        seed = int(input_hash(self.values)[:8], 16)
        with telemetry.chat_span(model or client.endpoint.default_model, Tier.SLM, 0) as span:
            span.set_attribute("slmflow.samples", skill.samples)
            try:
                samples = await client.samples(messages, n=skill.samples, temperature=skill.sample_temperature,
                                               seed=seed, model=model, max_tokens=skill.token_budget,
                                               request=request)  # fmt: skip
            except ModelError as exc:
                log.warning("sampling %s failed, so nothing vouches for its answer: %s", skill.name, exc)
                return None
            first = samples[0]
            self.result.usage.add_call(Tier.SLM, first.input_tokens, first.output_tokens, first.latency_s,
                                       client.endpoint.cost(first.input_tokens, first.output_tokens))  # fmt: skip
            share = agreement(skill, verdict.answer, samples, self.values, dialect=client.endpoint.dialect,
                              tools=self.run_.tools)  # fmt: skip
            span.set_attribute("slmflow.agreement", share)
        return share

    async def _shadow(self, candidate: str) -> Judged | None:
        """The candidate adapter's verdict on this input, by its checks alone (the gate calibrates the
        candidate's own floor from its confidences); its tool calls are judged, never run."""
        client = self.run_.endpoints.slm
        request = constraint(self.skill, client.endpoint.dialect, self.run_.tools) | scoring_fields(self.skill)
        with telemetry.chat_span(candidate, Tier.SLM, 0) as span:
            span.set_attribute("slmflow.shadow", True)
            try:
                completion = await client.chat(
                    self.base_messages, model=candidate, max_tokens=self.skill.token_budget, request=request
                )
            except ModelError as exc:
                span.set_attribute("slmflow.verdict", "model_unavailable")
                log.warning("shadow candidate %s of %s failed: %s", candidate, self.skill.name, exc)
                return None
            verdict = judge(self.skill, completion, self.values, dialect=client.endpoint.dialect,
                            tools=self.run_.tools, floor=0.0)  # fmt: skip
            span.set_attribute("slmflow.verdict", "ok" if verdict.ok else str(verdict.reason))
        return _judged(verdict, completion)

    async def _keep(self, learning: CascadeHooks) -> None:
        """Record this run for training; an LLM answer may come with a rationale."""
        rationale = None
        if learning.rationale and self.result.ok and self.result.tier is Tier.LLM:
            rationale = await self._rationale()
        await learning.keep_run(self.skill, self.values, self.base_messages, self.run_.tools, self.result,
                                job_id=self.run_.job_id, step=self.run_.step, slm_model=self.slm_name(),
                                rationale=rationale)  # fmt: skip

    def slm_name(self) -> str:
        """The model or adapter the SLM tier asks."""
        return self.slm_model or self.run_.endpoints.slm.endpoint.default_model

    async def _rationale(self) -> str | None:
        """One sentence from the LLM on why its answer is right: extra signal for distillation."""
        llm = self.run_.endpoints.llm
        assert llm is not None
        messages = [
            *self.base_messages,
            {"role": "assistant", "content": answer_key(self.result.answer)},
            {"role": "user", "content": "In one sentence, explain why that answer is right."},
        ]
        try:
            completion = await llm.chat(messages, max_tokens=80)
        except ModelError as exc:
            log.warning("no rationale for %s: %s", self.skill.name, exc)
            return None
        cost = llm.endpoint.cost(completion.input_tokens, completion.output_tokens)
        self.result.usage.add_attempt(
            Attempt(tier=Tier.LLM, number=0, model=completion.model, ok=True, input_tokens=completion.input_tokens,
                    output_tokens=completion.output_tokens, latency_s=completion.latency_s),
            cost,
        )  # fmt: skip
        return (completion.text or "").strip() or None

    async def _execute(self, verdict: Verdict, tier: Tier, attempt: int) -> Verdict:
        """Run the checked calls (in parallel); a tool error fails the attempt with `tool_error`."""
        assert self.run_.tools is not None and self.run_.executor is not None
        calls: list[ToolCall] = verdict.answer
        step = self.run_.step or self.skill.name
        try:
            results = await asyncio.gather(
                *(
                    self.run_.executor.run(
                        self.run_.tools.get(call.name),
                        call.arguments,
                        ToolContext(
                            self.run_.job_id,
                            step,
                            index,
                            self.run_.run,
                            self._tier_key(tier),
                            attempt,
                            config=self.run_.config,
                        ),
                    )
                    for index, call in enumerate(calls)
                )
            )
        except ToolOutcomeUnknown:
            raise
        except ToolError as exc:
            return Verdict.reject(EscalationReason.TOOL_ERROR, str(exc), confidence=verdict.confidence)
        verdict.answer = [ToolCall(c.name, c.arguments, r) for c, r in zip(calls, results, strict=True)]
        return verdict

    def _record(
        self,
        tier: Tier,
        number: int,
        model: str,
        verdict: Verdict,
        completion: Completion | None,
        client: ModelClient,
    ) -> None:
        attempt = Attempt(
            tier=tier,
            number=number,
            model=model,
            ok=verdict.ok,
            reason=verdict.reason,
            errors=verdict.errors,
            confidence=verdict.confidence,
            input_tokens=completion.input_tokens if completion else 0,
            output_tokens=completion.output_tokens if completion else 0,
            latency_s=completion.latency_s if completion else 0.0,
            output=_raw_output(completion) if completion else None,
        )
        self.result.attempts.append(attempt)
        cost = client.endpoint.cost(attempt.input_tokens, attempt.output_tokens)
        self.result.usage.add_attempt(attempt, cost)
        if completion is not None and not self.result.usage.all_llm_cost:
            # An all-LLM run asks the LLM once with the same prompt for an answer of this size.
            price_in, price_out = self.run_.endpoints.llm_price_per_1k
            self.result.usage.all_llm_cost = (
                completion.input_tokens * price_in + completion.output_tokens * price_out
            ) / 1000


def _raw_output(completion: Completion | None) -> Any:
    if completion is None:
        return None
    if completion.tool_calls:
        return [{"name": c.name, "arguments": c.arguments} for c in completion.tool_calls]
    return completion.text


def _judged(verdict: Verdict, completion: Completion) -> Judged:
    """Whether an answer passed, the answer in the kept answer's form (parsed when valid), its confidence."""
    answer = kept_form(verdict.answer) if verdict.ok else said(_raw_output(completion))
    return Judged(verdict.ok, answer, verdict.confidence)


def _observe(span: Any, skill: str, tier: Tier, verdict: Verdict, completion: Completion | None) -> None:
    """GenAI attributes and metrics of one model call, and its verdict."""
    outcome = "ok" if verdict.ok else str(verdict.reason)
    span.set_attribute("slmflow.verdict", outcome)
    if verdict.confidence is not None:
        span.set_attribute("slmflow.confidence", verdict.confidence)
    if completion is not None:
        telemetry.content(span, "gen_ai.output.messages", _raw_output(completion))
        telemetry.record_call(skill, tier, completion.model, outcome, completion.input_tokens,
                              completion.output_tokens, completion.latency_s)  # fmt: skip
        span.set_attribute("gen_ai.response.model", completion.model)
        span.set_attribute("gen_ai.usage.input_tokens", completion.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", completion.output_tokens)
        span.set_attribute("gen_ai.response.finish_reasons", [completion.finish_reason or "unknown"])
