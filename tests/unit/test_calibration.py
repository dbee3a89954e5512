"""Precision targets: the bound, the floor, the signals, self-consistency, and the floor in the cascade."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import tool

from slmflow import EscalationReason, Label, Skill, Tier, ToolCalls, ToolRegistry, run_skill
from slmflow.calibration import Outcome, auroc, choose_floor, constraint_id, min_kept, precision_lower_bound
from slmflow.hooks import Floor, serving_floor
from slmflow.learning.floors import read_floors_file, write_floor
from slmflow.learning.hooks import Learning
from slmflow.learning.store import DatasetStore, FloorRecord
from slmflow.models import Completion
from slmflow.testing import Reply, ScriptedServer
from slmflow.verdicts import logprob_signals

LABELS = ("refund", "order_status", "other")
TICKET = {"ticket": "Where is ORD-12345?"}


def completion(logprobs: tuple[float, ...], runner_up: tuple[float | None, ...] = ()) -> Completion:
    return Completion(model="m", text="x", tool_calls=(), finish_reason="stop", input_tokens=1, output_tokens=1,
                      token_logprobs=logprobs, latency_s=0.0, runner_up_logprobs=runner_up)  # fmt: skip


# -- the bound ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("right", "kept", "expected"), [
    (9, 10, 0.6058), (50, 100, 0.4136), (29, 29, 0.9019), (59, 59, 0.9505), (95, 100, 0.8977), (0, 5, 0.0),
])  # fmt: skip
def test_lower_bound_is_the_clopper_pearson_one(right: int, kept: int, expected: float) -> None:
    # Reference values: the Beta(right, kept - right + 1) 5% quantile (95/100 checked by the exact tail: 0.0500).
    assert precision_lower_bound(right, kept) == pytest.approx(expected, abs=1e-4)


def test_upper_bound_mirrors_the_lower_one() -> None:
    from slmflow.calibration import precision_upper_bound

    assert precision_upper_bound(1, 10) == pytest.approx(1 - precision_lower_bound(9, 10))
    assert precision_upper_bound(10, 10) == 1.0


def test_the_fewest_labels_that_can_meet_a_target() -> None:
    assert (min_kept(0.9), min_kept(0.95)) == (29, 59)
    assert precision_lower_bound(28, 28) < 0.9 <= precision_lower_bound(29, 29)


def test_floor_is_the_lowest_whose_bound_meets_the_target() -> None:
    # 60 right answers at high confidence, then 20 answers of which half are wrong, lower down.
    outcomes = [Outcome(0.99 - i * 0.001, True, True) for i in range(60)]
    outcomes += [Outcome(0.5 - i * 0.01, True, i % 2 == 0) for i in range(20)]
    outcomes += [Outcome(0.95, False, False)] * 5  # failed checks: never kept, whatever their confidence
    calibration = choose_floor(outcomes, 0.9)
    assert calibration.floor is not None and calibration.chosen is not None
    assert calibration.chosen.lower >= 0.9
    kept = [o for o in outcomes if o.passed and o.confidence >= calibration.floor]
    assert sum(o.right for o in kept) / len(kept) >= 0.9
    # One step lower would break the bound (the floor is the lowest that holds).
    lower_rows = [r for r in calibration.rows if r.floor < calibration.floor]
    assert all(r.lower < 0.9 for r in lower_rows)
    assert calibration.chosen.coverage == pytest.approx(len(kept) / len(outcomes))


def test_too_few_labels_means_no_floor_and_says_so() -> None:
    calibration = choose_floor([Outcome(0.99, True, True)] * 20, 0.9)
    assert calibration.floor is None
    assert "too few labels" in calibration.reason and "at least 29" in calibration.reason


def test_a_model_that_is_not_good_enough_gets_no_floor() -> None:
    outcomes = [Outcome(0.9, True, i % 3 != 0) for i in range(300)]
    calibration = choose_floor(outcomes, 0.9)
    assert calibration.floor is None and "no floor meets 90%" in calibration.reason


def test_auroc_counts_pairs() -> None:
    assert auroc([Outcome(0.9, True, True), Outcome(0.1, True, False)]) == 1.0
    assert auroc([Outcome(0.1, True, True), Outcome(0.9, True, False)]) == 0.0
    assert auroc([Outcome(0.5, True, True), Outcome(0.5, True, False)]) == 0.5
    assert auroc([Outcome(0.5, True, True)]) is None


# -- the signals -------------------------------------------------------------------------------------


def test_forced_tokens_do_not_dilute_the_free_mean() -> None:
    # Two grammar-forced tokens (logprob 0) and two the model chose.
    signals = logprob_signals(completion((0.0, -0.7, 0.0, -0.1)))
    assert signals["mean"] == pytest.approx(math.exp(-0.8 / 4))
    assert signals["mean_free"] == pytest.approx(math.exp(-0.8 / 2))
    assert signals["min"] == pytest.approx(math.exp(-0.7))
    assert signals["joint"] == pytest.approx(math.exp(-0.8))
    assert "margin" not in signals
    assert logprob_signals(completion((0.0, 0.0)))["mean_free"] == 1.0


def test_margin_is_the_smallest_gap_to_a_runner_up() -> None:
    signals = logprob_signals(completion((math.log(0.6), 0.0), (math.log(0.3), None)))
    assert signals["margin"] == pytest.approx(0.3)


def test_margin_is_only_for_labels() -> None:
    with pytest.raises(ValueError, match="for label skills"):
        Skill(name="x", instructions="x", prompt="{t}", output=ToolCalls(tools=("a",)), confidence="margin")


# -- the floor that serves ---------------------------------------------------------------------------


skill = Skill(name="classify", instructions="Classify.", prompt="{ticket}", output=Label(labels=LABELS))
targeted = skill.model_copy(update={"target_precision": 0.9})


def test_serving_floor_rules() -> None:
    cid = constraint_id(targeted)
    calibrated = Floor(0.8, 0.9, "joint", cid)
    assert serving_floor(skill, None) == 0.0  # no target: today's behaviour
    assert serving_floor(targeted, None) is None  # a target and no calibration: escalate
    assert serving_floor(targeted, calibrated) == 0.8
    assert serving_floor(targeted, Floor(None, 0.9, "joint", cid)) is None
    assert serving_floor(targeted, Floor(0.8, 0.8, "joint", cid)) is None  # calibrated for less
    assert serving_floor(targeted, Floor(0.8, 0.9, "joint", "another")) is None  # the constraint changed
    manual = Skill(name="classify", instructions="Classify.", prompt="{ticket}", output=Label(labels=LABELS),
                   target_precision=0.9, min_confidence=0.3)  # fmt: skip
    assert serving_floor(manual, calibrated) == 0.3  # set explicitly, it wins


def test_a_new_label_voids_the_calibration() -> None:
    other = targeted.model_copy(update={"output": Label(labels=(*LABELS, "cancel"))})
    assert constraint_id(other) != constraint_id(targeted)
    assert constraint_id(targeted.model_copy(update={"confidence": "margin"})) != constraint_id(targeted)


@pytest.fixture
def server() -> Any:
    with ScriptedServer({}) as server:
        yield server


async def run(server: ScriptedServer, skill: Skill, slm: list[Reply], learning: Any = None,
              tools: ToolRegistry | None = None) -> Any:  # fmt: skip
    server.scripts["slm"] = slm
    endpoints = server.endpoints("slm")
    endpoints.learning = learning
    try:
        return await run_skill(skill, TICKET, endpoints, tools=tools)
    finally:
        await endpoints.aclose()


async def test_a_target_with_no_calibration_escalates_even_a_sure_answer(server: ScriptedServer) -> None:
    result = await run(server, targeted, [Reply(text="order_status", logprobs=[-0.001])])
    assert result.status == "needs_review"
    assert result.attempts[0].reason == EscalationReason.LOW_CONFIDENCE
    assert "no calibrated floor" in result.attempts[0].errors[0]


async def test_the_calibrated_floor_gates_the_slm(server: ScriptedServer, tmp_path: Path) -> None:
    store = DatasetStore(f"sqlite:///{tmp_path / 'd.db'}")
    store.add_floor(FloorRecord(skill="classify", model="slm", constraint_id=constraint_id(targeted), signal="joint",
                                target=0.9, floor=0.8, data_hash="abc"))  # fmt: skip
    learning = Learning(store, route_ttl_s=0)
    sure = await run(server, targeted, [Reply(text="order_status", logprobs=[-0.05])], learning)
    assert (sure.status, sure.tier) == ("ok", Tier.SLM)
    unsure = await run(server, targeted, [Reply(text="order_status", logprobs=[-0.5])], learning)
    assert unsure.attempts[0].reason == EscalationReason.LOW_CONFIDENCE
    assert "below the skill's floor 0.80" in unsure.attempts[0].errors[0]


async def test_the_projects_floors_file_serves_when_the_store_has_none(server: ScriptedServer, tmp_path: Path) -> None:
    floors = tmp_path / "floors.json"
    write_floor(floors, FloorRecord(skill="classify", model="slm", constraint_id=constraint_id(targeted),
                                    signal="joint", target=0.9, floor=0.8, data_hash="abc",
                                    input_hashes=["h1"]))  # fmt: skip
    assert [r.floor for r in read_floors_file(floors)] == [0.8]
    assert read_floors_file(floors)[0].input_hashes == []  # the file keeps the data hash, not every input's
    learning = Learning(DatasetStore(f"sqlite:///{tmp_path / 'none.db'}"), route_ttl_s=0, floors_file=floors)
    sure = await run(server, targeted, [Reply(text="order_status", logprobs=[-0.05])], learning)
    assert sure.ok and sure.tier == Tier.SLM


# -- self-consistency --------------------------------------------------------------------------------


sampled = Skill(name="classify", instructions="Classify.", prompt="{ticket}", output=Label(labels=LABELS),
                confidence="agreement", samples=5, min_confidence=0.7)  # fmt: skip


async def test_agreement_scores_the_greedy_answer_by_its_samples(server: ScriptedServer) -> None:
    samples = Reply(choices=[Reply(text="order_status")] * 4 + [Reply(text="refund")])
    result = await run(server, sampled, [Reply(text="order_status"), samples])
    assert result.ok and result.confidence == pytest.approx(0.8)
    greedy, sampling = server.requests_for("slm")
    assert greedy["temperature"] == 0 and "n" not in greedy
    assert (sampling["n"], sampling["temperature"]) == (5, 0.8) and isinstance(sampling["seed"], int)
    assert result.usage.tiers[Tier.SLM].calls == 2  # the samples are counted and costed


async def test_low_agreement_escalates(server: ScriptedServer) -> None:
    samples = Reply(choices=[Reply(text="order_status")] * 2 + [Reply(text="refund")] * 3)
    result = await run(server, sampled, [Reply(text="order_status"), samples])
    assert result.status == "needs_review"
    assert result.attempts[0].reason == EscalationReason.LOW_CONFIDENCE
    assert result.attempts[0].confidence == pytest.approx(0.4)


async def test_the_margin_signal_asks_for_runner_ups(server: ScriptedServer) -> None:
    margin = Skill(name="classify", instructions="Classify.", prompt="{ticket}", output=Label(labels=LABELS),
                   confidence="margin", min_confidence=0.5)  # fmt: skip
    result = await run(server, margin, [Reply(text="refund", logprobs=[math.log(0.55)],
                                              runner_up=[math.log(0.4)])])  # fmt: skip
    assert server.requests_for("slm")[0]["top_logprobs"] == 5
    assert result.attempts[0].reason == EscalationReason.LOW_CONFIDENCE
    assert result.attempts[0].confidence == pytest.approx(0.15)


# -- several calls of one tool -----------------------------------------------------------------------


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by id."""
    return {"order_id": order_id, "status": "shipped"}


async def test_several_calls_of_one_tool_are_not_forced_to_one(server: ScriptedServer) -> None:
    tools = ToolRegistry.of([lookup_order])
    many = Skill(name="lookup", instructions="Look up every order.", prompt="{ticket}",
                 output=ToolCalls(tools=("lookup_order",), max_calls=3))  # fmt: skip
    calls = [("lookup_order", {"order_id": "ORD-1"}), ("lookup_order", {"order_id": "ORD-2"})]
    result = await run(server, many, [Reply(tool_calls=calls)], tools=tools)
    assert server.requests_for("slm")[0]["tool_choice"] == "required"
    assert [c["arguments"]["order_id"] for c in result.answer] == ["ORD-1", "ORD-2"]
    one = many.model_copy(update={"output": ToolCalls(tools=("lookup_order",))})
    await run(server, one, [Reply(tool_calls=calls[:1])], tools=tools)
    assert server.requests_for("slm")[-1]["tool_choice"] == {"type": "function", "function": {"name": "lookup_order"}}


# -- slmflow calibrate -------------------------------------------------------------------------------


def test_calibrate_finds_the_floor_and_stores_it(tmp_path: Path) -> None:
    from tests.unit.test_cli import slmflow

    # 60 tickets answered right and sure, 30 answered wrong and unsure: a floor between them holds 90%.
    cases = [{"input": {"ticket": f"ticket {i}"}, "expected": "refund_request"} for i in range(90)]
    data = tmp_path / "calibration.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in cases))

    def reply(body: dict[str, Any]) -> Reply:
        number = int(body["messages"][1]["content"].split()[1])
        if number < 60:
            return Reply(text="refund_request", logprobs=[-0.01 - number * 0.001])
        return Reply(text="return_request", logprobs=[-1.5 - number * 0.01])

    store = tmp_path / "d.db"
    with ScriptedServer({"base": reply}) as server:
        done = slmflow("calibrate", "classify_intent", "--data", str(data), "--target", "0.9", "--model", "base",
                       "--json", SLMFLOW_SLM_BASE_URL=server.base_url, SLMFLOW_SLM_MODEL="base",
                       SLMFLOW_DATASET_URL=f"sqlite:///{store}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # The lowest floor whose bound holds keeps all 60 right answers and the 2 surest wrong ones:
    # 60/62 has a 95% lower bound of 90.2%, 60/63 would not.
    assert result["floor"] == pytest.approx(math.exp(-1.5 - 61 * 0.01))
    figures = result["figures"]
    assert (figures["kept"], figures["coverage"]) == (62, pytest.approx(62 / 90))
    assert figures["precision"] == pytest.approx(60 / 62) and figures["precision_lower"] >= 0.9
    assert figures["auroc"] == 1.0
    (kept,) = DatasetStore(f"sqlite:///{store}").floors("classify_intent", "base")
    assert kept.id == result["version"] and kept.floor == result["floor"] and len(kept.input_hashes) == 90


def test_calibrate_without_a_target_says_how_to_give_one(tmp_path: Path) -> None:
    from tests.unit.test_cli import assert_user_error, slmflow

    data = tmp_path / "c.jsonl"
    data.write_text(json.dumps({"input": {"ticket": "x"}, "expected": {"order_id": None}}) + "\n")
    assert_user_error(slmflow("calibrate", "extract_fields", "--data", str(data)), "no target_precision", "--target")


async def test_eval_runs_at_the_calibrated_floor_and_reports_precision_and_coverage(
    server: ScriptedServer, tmp_path: Path
) -> None:
    from slmflow.graphs import GraphSpec
    from slmflow.learning.evaluate import Case, evaluate

    store = DatasetStore(f"sqlite:///{tmp_path / 'd.db'}")
    store.add_floor(FloorRecord(skill="classify", model="slm", constraint_id=constraint_id(targeted), signal="joint",
                                target=0.9, floor=0.8, data_hash="abc"))  # fmt: skip

    def reply(body: dict[str, Any]) -> Reply:
        sure = "confident" in body["messages"][1]["content"]
        return Reply(text="order_status" if sure else "refund", logprobs=[-0.01 if sure else -1.0])

    server.scripts["slm"] = reply
    cases = [
        Case(input={"ticket": f"{'confident' if i < 6 else 'doubtful'} {i}"}, expected="order_status") for i in range(8)
    ]
    spec = GraphSpec(name="g", builder=None, input=None, output=None, tools=ToolRegistry.of([]),  # type: ignore[arg-type]
                     skills=(targeted,))  # fmt: skip
    endpoints = server.endpoints("slm")
    try:
        report = await evaluate(targeted, spec, cases, endpoints, hooks=Learning(store, route_ttl_s=0))
        bare = await evaluate(targeted.model_copy(update={"target_precision": None}), spec, cases, endpoints)
    finally:
        await endpoints.aclose()
    assert (report.precision, report.coverage, report.accepted_wrong) == (1.0, 0.75, 0)
    assert (bare.precision, bare.coverage, bare.accepted_wrong) == (0.75, 1.0, 2)
    # The curve covers every SLM answer that passed its checks, kept or gated by the floor.
    assert report.curve == bare.curve
    assert [(p["coverage"], p["precision"]) for p in report.curve] == [(1.0, 0.75), (0.75, 1.0)]
    assert report.coverage_at == {"0.8": 0.75, "0.9": 0.75, "0.95": 0.75}

    from slmflow.learning.evaluate import plot_reports

    plot = plot_reports([report, bare], tmp_path / "curve.png")
    assert plot.read_bytes()[:4] == b"\x89PNG"


# -- audits ------------------------------------------------------------------------------------------


async def test_an_audit_runs_off_the_critical_path_and_is_kept(tmp_path: Path) -> None:
    import time

    store = DatasetStore(f"sqlite:///{tmp_path / 'd.db'}")
    learning = Learning(store, route_ttl_s=0, audit_rate=1.0)
    slow_llm = [Reply(text='{"label": "refund"}', delay=1.5)]  # the LLM disagrees, slowly
    with ScriptedServer({"slm": [Reply(text="order_status", logprobs=[-0.01])], "llm": slow_llm}) as server:
        endpoints = server.endpoints("slm", "llm")
        endpoints.learning = learning
        started = time.perf_counter()
        result = await run_skill(skill, TICKET, endpoints)
        answered_s = time.perf_counter() - started
        assert (result.tier, result.answer) == (Tier.SLM, "order_status")
        assert answered_s < 1.0, answered_s  # the skill did not wait for the LLM
        assert store.audits("classify") == []  # not yet: it is still asking
        await endpoints.aclose()  # closing waits for background work
    (audit,) = store.audits("classify")
    assert (audit.model, audit.agree, audit.llm_answer) == ("slm", False, "refund")
    assert result.usage.tiers.get(Tier.LLM) is None  # the job's usage is the job's


def test_the_alarm_rings_when_the_bound_falls_below_the_target() -> None:
    from slmflow.learning.hooks import audit_alarm
    from slmflow.learning.store import AuditRecord

    def audits(agree: int, disagree: int) -> list[AuditRecord]:
        return [AuditRecord(skill="s", model="m", input_hash="h", agree=True)] * agree + [
            AuditRecord(skill="s", model="m", input_hash="h", agree=False)] * disagree  # fmt: skip

    assert audit_alarm(audits(30, 0), 0.9) is None
    assert audit_alarm(audits(5, 10), 0.9) is None  # fewer than 20 judged audits: too few to mean anything
    reason = audit_alarm(audits(150, 50), 0.9)
    assert reason is not None and "150 of the last 200" in reason and "below the target 90%" in reason
    assert audit_alarm(audits(185, 15), 0.9) is None  # 92.5%: the upper bound is above 90%


def test_audits_default_to_five_percent_only_with_an_llm() -> None:
    from slmflow.settings import load_settings

    assert load_settings(llm_base_url=None).effective_audit_rate == 0.0
    assert load_settings(llm_base_url="http://127.0.0.1:1/v1").effective_audit_rate == 0.05
    assert load_settings(llm_base_url="http://127.0.0.1:1/v1", audit_rate=0.2).effective_audit_rate == 0.2


def test_recorded_runs_and_audits_are_labelled_outcomes(tmp_path: Path) -> None:
    from slmflow.learning.calibrate import recorded_outcomes
    from slmflow.learning.store import AuditRecord, RunRecord

    store = DatasetStore(f"sqlite:///{tmp_path / 'd.db'}")

    def run(slm_said: str, kept: str, confidence: float, source: str = "llm", model: str = "slm",
            reason: str = "low_confidence") -> RunRecord:  # fmt: skip
        attempts = [{"tier": "slm", "number": 1, "model": model, "ok": False, "reason": reason,
                     "confidence": confidence, "output": slm_said},
                    {"tier": "llm", "number": 1, "model": "llm", "ok": True, "output": kept}]  # fmt: skip
        return RunRecord(skill="classify", slm_model=model, source=source, status="ok", input_hash=slm_said + kept,
                         messages=[], attempts=attempts, answer=kept)  # type: ignore[arg-type]  # fmt: skip

    store.add_run(run("refund", "refund", 0.4))  # unsure and right
    store.add_run(run("other", "refund", 0.2))  # unsure and wrong
    store.add_run(run("other", "refund", 0.9, reason="check_failed"))  # failed its checks: never kept
    store.add_run(run("refund", "refund", 0.5, model="adapter-v1"))  # another model
    store.add_run(RunRecord(skill="classify", slm_model="slm", source="slm", status="ok", input_hash="x",
                            messages=[], attempts=[], answer="refund"))  # the SLM alone: no label  # fmt: skip
    store.add_audit(AuditRecord(skill="classify", model="slm", input_hash="a1", confidence=0.95, agree=True))
    store.add_audit(AuditRecord(skill="classify", model="slm", input_hash="a2", confidence=0.9, agree=False))
    store.add_audit(AuditRecord(skill="classify", model="slm", input_hash="a3", confidence=0.9, agree=None))
    labelled = recorded_outcomes(store, targeted, "slm")
    assert sorted((o.confidence, o.passed, o.right) for o in labelled.outcomes) == [
        (0.2, True, False), (0.4, True, True), (0.9, False, False), (0.9, True, False), (0.95, True, True)]  # fmt: skip
    assert labelled.input_hashes == ["a1", "a2", "otherrefund", "refundrefund"] and len(labelled.data_hash) == 64


def test_calibrate_from_an_empty_store_says_what_to_do(tmp_path: Path) -> None:
    from tests.unit.test_cli import assert_user_error, slmflow

    done = slmflow("calibrate", "classify_intent", "--target", "0.9",
                   SLMFLOW_DATASET_URL=f"sqlite:///{tmp_path / 'none.db'}")  # fmt: skip
    assert_user_error(done, "nothing recorded", "--data FILE")
