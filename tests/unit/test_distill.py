"""Export, the promotion gate, rollback, and `slmflow distill` / `slmflow eval` as a user meets them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from agents.support_triage import classify, extract, lookup
from slmflow import local_server
from slmflow.calibration import constraint_id
from slmflow.learning import adapters
from slmflow.learning.export import export_records
from slmflow.learning.store import AdapterEvent, DatasetStore, FloorRecord, Route, RunRecord, ShadowCall
from slmflow.learning.train import read_dataset
from slmflow.testing import Reply, ScriptedServer
from tests.conftest import EXAMPLES, TRIAGE_ALIASES, triage_reply
from tests.unit.test_cli import assert_user_error, slmflow

SYSTEM = {"role": "system", "content": "Pick the intent."}


def run(ticket: str, source: str | None, answer: Any, *, confidence: float | None = None, at: float = 0.0) -> RunRecord:
    return RunRecord(skill="classify_intent", source=source, status="ok" if source else "needs_review",
                     input_hash=hashlib.sha256(ticket.encode()).hexdigest(), answer=answer, confidence=confidence,
                     messages=[SYSTEM, {"role": "user", "content": ticket}], created_at=at)  # fmt: skip


def test_export_keeps_teacher_answers_once_per_input_best_source_first(tmp_path: Path) -> None:
    runs = [
        run("a", "llm", "refund_request", at=1), run("a", "human", "return_request", at=2),
        run("a", "llm", "complaint", at=3),  # a later LLM answer does not beat a reviewer's
        run("b", "slm", "order_status", confidence=0.95), run("c", "slm", "order_status", confidence=0.5),
        run("d", None, None), *(run(f"t{i}", "llm", "other") for i in range(40)),
    ]  # fmt: skip
    out = tmp_path / "data.jsonl"
    report = export_records(classify, runs, out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert report.kept == len(records) == 41 and report.by_source == {"human": 1, "llm": 40}
    [a] = [r for r in records if r["messages"][1]["content"] == "a"]
    assert a["messages"][-1] == {"role": "assistant", "content": "return_request"} and a["source"] == "human"
    assert report.validation == sum(r["split"] == "validation" for r in records) > 0
    with_slm = export_records(classify, runs, out, include_slm=True, min_confidence=0.9)
    assert with_slm.by_source == {"human": 1, "llm": 40, "slm": 1}  # only the confident SLM answer
    skill, train, validation = read_dataset(out)
    assert skill == "classify_intent" and len(train) + len(validation) == 42


def test_export_writes_objects_as_json_and_tool_calls_as_calls(tmp_path: Path) -> None:
    fields = {"order_id": "ORD-10012", "amount": None, "email": None}
    obj = run("x", "llm", fields).model_copy(update={"skill": "extract_fields"})
    export_records(extract, [obj], tmp_path / "e.jsonl")
    [record] = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert json.loads(record["messages"][-1]["content"]) == fields
    tool = {"type": "function", "function": {"name": "lookup_order", "parameters": {}}}
    calls = run("y", "human", [{"name": "lookup_order", "arguments": {"order_id": "ORD-10012"}}])
    calls = calls.model_copy(update={"skill": "lookup_order", "tools": [tool]})
    export_records(lookup, [calls], tmp_path / "l.jsonl")
    [record] = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert record["tools"] == [tool]
    [call] = record["messages"][-1]["tool_calls"]
    assert call["function"] == {"name": "lookup_order", "arguments": '{"order_id": "ORD-10012"}'}


def test_a_rationale_becomes_a_second_task_on_the_same_input(tmp_path: Path) -> None:
    runs = [run(f"t{i}", "llm", "other").model_copy(update={"rationale": "It asks about a store."}) for i in range(30)]
    report = export_records(classify, runs, tmp_path / "r.jsonl", rationales=True)
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    extra = [r for r in records if r.get("task") == "rationale"]
    assert len(extra) == report.rationales == report.train
    assert extra[0]["messages"][-1]["content"] == "It asks about a store." and extra[0]["split"] == "train"


def test_train_refuses_a_dataset_that_is_not_one(tmp_path: Path) -> None:
    from slmflow.errors import InvalidInput

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(InvalidInput, match="bad.jsonl:1 is not a chat record"):
        read_dataset(bad)
    with pytest.raises(InvalidInput, match="slmflow distill export"):
        read_dataset(tmp_path / "missing.jsonl")


SKILL = classify.model_copy(update={"name": "s"})


def shadowed(store: DatasetStore, skill: str, calls: list[tuple[bool, bool, float, bool | None]],
             current_right: bool | None = None) -> None:  # fmt: skip
    """Shadow calls of candidate v2 beside `base`: (current kept, candidate passed, candidate's
    confidence, candidate right: None when the call has no reference)."""
    store.set_route(Route(skill=skill, candidate="v2", shadow_rate=0.5),
                    AdapterEvent(skill=skill, action="shadow", adapter="v2", previous=None))  # fmt: skip
    for i, (current_ok, candidate_ok, confidence, right) in enumerate(calls):
        store.add_shadow_call(ShadowCall(
            skill=skill, current="base", candidate="v2", input_hash=f"h{i}", agree=current_ok == candidate_ok,
            current_ok=current_ok, candidate_ok=candidate_ok, candidate_confidence=confidence,
            final_source=None if right is None else "llm", candidate_right=right,
            current_right=None if right is None else current_ok and bool(current_right),
        ))  # fmt: skip


def test_promotion_is_refused_on_too_few_calls(tmp_path: Path) -> None:
    store = DatasetStore(f"sqlite:///{tmp_path / 'd.db'}")
    shadowed(store, "s", [(False, True, 0.99, True)] * 5)
    promoted, _, why = adapters.promote(store, SKILL, "base", min_calls=20, margin=0.05, target=0.9)
    assert not promoted and "only 5 shadow calls of the 20 needed" in why
    assert store.route("s").current is None


def test_a_higher_pass_rate_with_a_lower_precision_is_never_promoted(tmp_path: Path) -> None:
    store = DatasetStore(f"sqlite:///{tmp_path / 'd.db'}")
    # The candidate passes its checks on every call (the current model keeps half), and is right on
    # 40 of 60 whatever its confidence: by pass rate (and even accuracy) it looks better; it is not
    # right often enough anywhere to be vouched for at 90%.
    calls = [(i % 2 == 0, True, 0.5 + (i % 10) / 20, i % 3 != 0) for i in range(60)]
    shadowed(store, "s", calls, current_right=True)
    promoted, figures, why = adapters.promote(store, SKILL, "base", min_calls=20, margin=0.05, target=0.9)
    assert figures.candidate_pass_rate == 1.0 and figures.current_pass_rate == 0.5
    assert figures.candidate_accuracy is not None and abs(figures.candidate_accuracy - 40 / 60) < 1e-9
    assert not promoted and figures.candidate_floor is None
    assert "cannot be vouched for at 90% on the 60 shadow calls with an LLM or reviewer answer" in why
    assert store.route("s").current is None and store.floors("s", "v2") == []
    [refusal] = [e for e in store.events("s") if e.action == "refuse"]
    assert refusal.figures["candidate_pass_rate"] == 1.0 and refusal.note == why


def test_a_precise_candidate_that_keeps_more_is_promoted_at_its_floor_and_rolls_back(tmp_path: Path) -> None:
    store = DatasetStore(f"sqlite:///{tmp_path / 'd.db'}")
    # Sure and right on 45 calls, unsure and wrong on 15; the current model keeps 20 of the 60.
    calls = [(i < 20, True, 0.95, True) for i in range(45)] + [(False, True, 0.3, False)] * 15
    shadowed(store, "s", calls, current_right=True)
    promoted, figures, why = adapters.promote(store, SKILL, "base", min_calls=20, margin=0.05, target=0.9)
    assert promoted, why
    assert figures.candidate_floor == 0.95 and figures.candidate_precision == 1.0
    assert figures.candidate_precision_lower is not None and figures.candidate_precision_lower >= 0.9
    assert (figures.candidate_coverage, round(figures.current_coverage, 3)) == (0.75, 0.333)
    assert store.route("s") == Route(skill="s", current="v2", previous=None)
    [floor] = store.floors("s", "v2")  # the candidate serves at the floor it was judged at
    assert (floor.floor, floor.target, floor.signal) == (0.95, 0.9, SKILL.signal)
    assert len(floor.input_hashes) == 60
    back = adapters.rollback(store, "s")
    assert (back.current, back.previous) == (None, None)
    assert [e.action for e in store.events("s")] == ["shadow", "promote", "rollback"]
    from slmflow.errors import InvalidInput

    with pytest.raises(InvalidInput, match="nothing to roll back"):
        adapters.rollback(store, "s")


def test_a_precise_candidate_that_keeps_no_more_than_the_current_model_is_refused(tmp_path: Path) -> None:
    store = DatasetStore(f"sqlite:///{tmp_path / 'd.db'}")
    # Right and sure on 30 calls (enough for the bound), but the current model already keeps 40 of 60.
    calls = [(i < 40, True, 0.95 if i < 30 else 0.2, i < 30) for i in range(60)]
    shadowed(store, "s", calls, current_right=True)
    promoted, figures, why = adapters.promote(store, SKILL, "base", min_calls=20, margin=0.05, target=0.9)
    assert not promoted and figures.candidate_floor == 0.95
    assert "keeps 50.0% of calls against 66.7% for the current model" in why


def test_distill_commands_report_user_errors_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    assert_user_error(slmflow("distill", "export", "nope", "--out", str(tmp_path / "x.jsonl")), "no skill named 'nope'")
    assert_user_error(slmflow("distill", "export", "classify_intent", "--out", "x.jsonl", SLMFLOW_DATASET_URL=url),
                      "nothing recorded yet", "SLMFLOW_RECORD=true")  # fmt: skip
    assert_user_error(slmflow("distill", "train", "classify_intent", "--data", str(tmp_path / "none.jsonl"),
                              "--out", str(tmp_path / "ad")), "no dataset at")  # fmt: skip
    assert_user_error(slmflow("distill", "load", str(tmp_path)), "is not an adapter folder")
    assert_user_error(slmflow("distill", "shadow", "classify_intent", "v2", "--rate", "2", SLMFLOW_DATASET_URL=url),
                      "shadow rate 2.0 must be in (0, 1]")  # fmt: skip
    assert_user_error(
        slmflow("distill", "promote", "classify_intent", SLMFLOW_DATASET_URL=url), "no candidate in shadow"
    )
    assert_user_error(slmflow("eval", "nope", "--data", "x.jsonl"), "no skill named 'nope'", "support_triage")
    assert_user_error(slmflow("eval", "classify_intent", "--data", str(tmp_path / "none.jsonl")), "no evaluation data")
    assert_user_error(slmflow("distill", "export", "classify_intent", "--out", "x", SLMFLOW_DATASET_URL="mysql://x"),
                      "SLMFLOW_DATASET_URL")  # fmt: skip


def test_promote_cli_exits_1_with_the_reason_and_0_when_promoted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = DatasetStore(url)
    store.set_route(Route(skill="classify_intent", candidate="v2", shadow_rate=1.0),
                    AdapterEvent(skill="classify_intent", action="shadow", adapter="v2", previous=None))  # fmt: skip
    refused = slmflow("distill", "promote", "classify_intent", "--json", SLMFLOW_DATASET_URL=url)
    assert refused.returncode == 1 and json.loads(refused.stdout)["reason"].startswith("only 0 shadow calls")
    for i in range(30):  # 30 right answers: enough for a 90% bound (29), none from the current model
        store.add_shadow_call(ShadowCall(skill="classify_intent", current=classify.model or "smollm2-135m",
                                         candidate="v2", input_hash=str(i), agree=False, current_ok=False,
                                         candidate_ok=True, candidate_confidence=0.9, final_source="llm",
                                         current_right=False, candidate_right=True))  # fmt: skip
    done = slmflow("distill", "promote", "classify_intent", "--target", "0.9", SLMFLOW_DATASET_URL=url,
                   SLMFLOW_PROMOTE_MIN_CALLS="3")  # fmt: skip
    assert done.returncode == 0 and "promoted v2 for classify_intent" in done.stdout
    status = json.loads(slmflow("distill", "status", "classify_intent", "--json", SLMFLOW_DATASET_URL=url).stdout)
    assert status["route"]["current"] == "v2" and [e["action"] for e in status["events"]] == ["shadow", "refuse",
                                                                                               "promote"]  # fmt: skip


def intent_model(right: dict[str, str], confident: bool) -> Any:
    def reply(body: dict[str, Any]) -> Reply:
        ticket = body["messages"][1]["content"]
        return Reply(text=right.get(ticket, "other"), logprobs=[-0.01 if confident else -3.0])

    return reply


def test_eval_compares_two_models_by_slice_with_a_plot(tmp_path: Path) -> None:
    cases = [{"input": {"ticket": f"ticket {i}"}, "expected": "refund_request" if i % 2 else "order_status",
              "segment": "business" if i < 4 else "consumer"} for i in range(8)]  # fmt: skip
    data = tmp_path / "cases.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in cases))
    answers = {c["input"]["ticket"]: c["expected"] for c in cases}
    half = {t: a for i, (t, a) in enumerate(answers.items()) if i < 4}  # right on the business tickets only
    scripts = {"base": intent_model(half, confident=False), "tuned": intent_model(answers, confident=True)}
    url = f"sqlite:///{tmp_path / 'd.db'}"
    for model in scripts:  # the intent skill has a precision target: each model runs at its calibrated floor
        DatasetStore(url).add_floor(FloorRecord(skill="classify_intent", model=model, constraint_id=constraint_id(
            classify), signal="joint", target=0.95, floor=0.5, data_hash="test"))  # fmt: skip
    with ScriptedServer(scripts) as server:  # type: ignore[arg-type]
        done = slmflow("eval", "classify_intent", "--data", str(data), "-m", "base", "-m", "tuned", "--slice",
                       "segment", "--plot", str(tmp_path / "p.png"), "--json", SLMFLOW_DATASET_URL=url,
                       SLMFLOW_SLM_BASE_URL=server.base_url, SLMFLOW_SLM_MODEL="base")  # fmt: skip
    assert done.returncode == 0, done.stderr
    base, tuned = json.loads(done.stdout)["reports"]
    assert (base["model"], base["slm_accuracy"], base["accuracy"], base["escalation_rate"]) == ("base", 0.5, 0.0, 1.0)
    assert base["reasons"] == {"low_confidence": 8} and base["usage"]["tiers"]["slm"]["calls"] == 8
    assert set(base["usage"]["tiers"]) == {"slm"}
    assert (tuned["accuracy"], tuned["escalation_rate"]) == (1.0, 0.0)
    assert base["slices"]["segment"]["business"] == {"cases": 4, "accuracy": 0.0, "escalation_rate": 1.0}
    assert tuned["cost_per_100"] < base["cost_per_100"]  # escalations are priced at the LLM
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    with ScriptedServer(scripts) as server:  # type: ignore[arg-type]
        stricter = slmflow("eval", "classify_intent", "--data", str(data), "-m", "tuned", "--target", "0.99",
                           "--json", SLMFLOW_DATASET_URL=url, SLMFLOW_SLM_BASE_URL=server.base_url)  # fmt: skip
    [at_99] = json.loads(stricter.stdout)["reports"]
    assert at_99["escalation_rate"] == 1.0  # floors calibrated for 0.95 vouch for nothing at 0.99


def test_the_local_server_serves_every_adapter_folder_and_allows_runtime_loading(tmp_path: Path) -> None:
    from slmflow.local_server import serve_command
    from slmflow.settings import load_settings

    (tmp_path / "classify_intent-v1").mkdir()
    (tmp_path / "classify_intent-v1" / "adapter_config.json").write_text("{}")
    (tmp_path / "notes").mkdir()  # not an adapter: no adapter_config.json
    settings = load_settings(adapters_dir=tmp_path)
    found = local_server.discover(local_server.adapters_dir(settings))
    assert found == {"classify_intent-v1": (tmp_path / "classify_intent-v1").resolve()}
    command = serve_command(settings, found)
    assert command[command.index("--lora-modules") + 1] == f"classify_intent-v1={tmp_path / 'classify_intent-v1'}"
    assert "--enable-lora" in command


def test_a_running_local_server_is_given_the_project_adapters_it_lacks(tmp_path: Path) -> None:
    from slmflow.settings import load_settings

    (tmp_path / "classify_intent-v1").mkdir()
    (tmp_path / "classify_intent-v1" / "adapter_config.json").write_text("{}")
    with ScriptedServer({"smollm2-135m": []}) as server:
        port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
        settings = load_settings(adapters_dir=tmp_path, local_port=port)
        reused = local_server.serve(settings, progress=lambda message: None)
        assert reused.process is None  # reused, not started
        assert server.loaded == {"classify_intent-v1": str((tmp_path / "classify_intent-v1").resolve())}
        assert set(reused.models) == {"smollm2-135m", "classify_intent-v1"}
        local_server.serve(settings, progress=lambda message: None)
        assert len(server.loaded) == 1  # served now: not loaded twice


def test_a_routed_adapter_the_server_does_not_serve_fails_before_the_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    gone = "classify_intent-gone"
    event = AdapterEvent(skill="classify_intent", action="promote", adapter=gone, previous=None)
    DatasetStore(url).set_route(Route(skill="classify_intent", current=gone), event)
    ticket = str(EXAMPLES / "t01_refund_request.json")
    with ScriptedServer({"slm": triage_reply}, TRIAGE_ALIASES) as server:
        done = slmflow("run", "support_triage", "--input", ticket, SLMFLOW_SLM_BASE_URL=server.base_url,
                       SLMFLOW_SLM_MODEL="slm", SLMFLOW_DATASET_URL=url)  # fmt: skip
    assert_user_error(done, "does not serve classify_intent-gone", "load the adapter")


def test_a_rolled_back_adapter_does_not_come_back_by_rolling_back_again(tmp_path: Path) -> None:
    store = DatasetStore(f"sqlite:///{tmp_path / 'd.db'}")
    for name, previous in (("a", None), ("b", "a")):
        store.set_route(Route(skill="s", current=name, previous=previous),
                        AdapterEvent(skill="s", action="promote", adapter=name, previous=previous))  # fmt: skip
    assert adapters.rollback(store, "s").current == "a"
    from slmflow.errors import InvalidInput

    with pytest.raises(InvalidInput, match="just rolled back"):
        adapters.rollback(store, "s")
    assert store.route("s").current == "a"


def test_eval_data_with_a_bad_line_names_it(tmp_path: Path) -> None:
    data = tmp_path / "cases.jsonl"
    data.write_text('{"input": {"ticket": "hi"}, "expected": "other"}\n{"input": "hi", "expected": "other"}\n')
    assert_user_error(slmflow("eval", "classify_intent", "--data", str(data)), "cases.jsonl:2", "'input' object")
    assert_user_error(slmflow("eval", "classify_intent", "--data", str(data), "--slice", "segment"),
                      "cases.jsonl:1 has no field 'segment'")  # fmt: skip


def test_eval_of_a_graph_compares_the_job_output_with_the_expected_fields(tmp_path: Path) -> None:
    cases = [json.loads(line) for line in (EXAMPLES / "cases.jsonl").read_text().splitlines()][:2]
    data = tmp_path / "jobs.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in cases))  # T01 (the scripted model's) and T02
    with ScriptedServer({"slm": triage_reply}, TRIAGE_ALIASES) as server:
        done = slmflow("eval", "support_triage", "--data", str(data), "--json", SLMFLOW_SLM_BASE_URL=server.base_url,
                       SLMFLOW_SLM_MODEL="slm", SHOP_DB=str(tmp_path / "shop.db"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)["reports"]
    # The scripted model answers every step for T01; on T02 its extraction invents T01's fields,
    # which T02's narrowing (the ids and emails T02 quotes) refuses as invalid.
    assert (report["target"], report["cases"], report["accuracy"]) == ("support_triage", 2, 0.5)
    assert report["escalation_rate"] == 0.5 and report["reasons"] == {"invalid_output": 1}


def test_shadow_needs_the_candidate_to_be_served(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    with ScriptedServer({"slm": [], "classify_intent-v2": []}) as server:
        missing = slmflow("distill", "shadow", "classify_intent", "classify_intent-v3", SLMFLOW_DATASET_URL=url,
                          SLMFLOW_SLM_BASE_URL=server.base_url)  # fmt: skip
        assert_user_error(missing, "does not serve 'classify_intent-v3'", "slmflow distill load")
        done = slmflow("distill", "shadow", "classify_intent", "classify_intent-v2", SLMFLOW_DATASET_URL=url,
                       SLMFLOW_SLM_BASE_URL=server.base_url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert DatasetStore(url).route("classify_intent").candidate == "classify_intent-v2"
    down = slmflow("distill", "shadow", "classify_intent", "v2", SLMFLOW_SLM_BASE_URL="http://127.0.0.1:9/v1")
    assert_user_error(down, "nothing answers at http://127.0.0.1:9/v1")
