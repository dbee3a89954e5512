"""The `slmflow` command as a user meets it: one-line errors with exit 2, one JSON object with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slmflow import JobResult, Tier
from slmflow.testing import ScriptedServer
from tests.conftest import EXAMPLES, ROOT, SCRATCH

T01 = str(EXAMPLES / "t01_refund_request.json")


def slmflow(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    # The tests' own dataset store (conftest), never the one in the developer's or CI's cache.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SLMFLOW_") or k == "SLMFLOW_DATASET_URL"}
    # Embedded jobs the CLI keeps go to the tests' scratch cache, never the developer's or CI's.
    environment["SLMFLOW_CACHE_DIR"] = str(SCRATCH / "cache")
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "slmflow", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def assert_user_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert done.stdout == ""


def test_unknown_graph_names_the_known_ones() -> None:
    assert_user_error(slmflow("run", "nope", "--input", T01), "no graph named 'nope'", "support_triage")


def test_input_failing_the_graph_model_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ticket_id": "T1", "subject": "hi"}))
    assert_user_error(slmflow("run", "support_triage", "--input", str(bad)), "body: Field required")


def test_unreadable_input_file_is_named(tmp_path: Path) -> None:
    assert_user_error(slmflow("run", "support_triage", "--input", str(tmp_path / "missing.json")),
                      "cannot read input file", "missing.json")  # fmt: skip
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_user_error(slmflow("run", "support_triage", "--input", str(broken)), "not valid JSON")


def test_missing_project_file_says_how_to_declare_one(tmp_path: Path) -> None:
    assert_user_error(slmflow("graphs", cwd=tmp_path), "no slmflow project file", "[graphs]")


def test_unreachable_endpoint_is_a_user_error() -> None:
    done = slmflow("run", "support_triage", "--input", T01, SLMFLOW_SLM_BASE_URL="http://127.0.0.1:9/v1")
    assert_user_error(done, "nothing answers at http://127.0.0.1:9/v1", "SLMFLOW_SLM_BASE_URL")


def test_bad_setting_is_a_user_error() -> None:
    assert_user_error(slmflow("graphs", SLMFLOW_REQUEST_TIMEOUT="soon"), "SLMFLOW_REQUEST_TIMEOUT")


def test_skill_model_not_served_is_a_user_error(triage_server: ScriptedServer) -> None:
    done = slmflow("run", "support_triage", "--input", T01,
                   SLMFLOW_SLM_BASE_URL=triage_server.base_url, SLMFLOW_SLM_MODEL="classify-v2")  # fmt: skip
    assert_user_error(done, "does not serve classify-v2")
    assert triage_server.requests == []  # nothing was asked of a model


def test_graphs_lists_the_input_fields() -> None:
    done = slmflow("graphs", "--json")
    assert done.returncode == 0, done.stderr
    graphs = {graph["name"]: graph for graph in json.loads(done.stdout)}
    assert sorted(graphs) == ["order_change", "support_triage"]
    assert graphs["support_triage"]["input"]["required"] == ["ticket_id", "subject", "body"]
    assert graphs["order_change"]["input"]["required"] == ["request_id", "email", "message"]


def test_run_json_prints_exactly_one_result_object(triage_server: ScriptedServer) -> None:
    done = slmflow("run", "support_triage", "--input", T01, "--json",
                   SLMFLOW_SLM_BASE_URL=triage_server.base_url, SLMFLOW_SLM_MODEL="slm")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # the whole of stdout is one JSON document
    assert set(result) >= {"job_id", "graph", "status", "output", "usage", "trace_id"}
    assert (result["graph"], result["status"], result["trace_id"]) == (
        "support_triage",
        "succeeded",
        None,
    )
    usage = result["usage"]
    assert set(usage["tiers"]) == {"slm"} and usage["tiers"]["slm"]["calls"] == 5
    assert usage["tiers"]["slm"]["input_tokens"] > 0 and usage["tiers"]["slm"]["output_tokens"] > 0
    assert usage["escalations"] == []
    assert usage["cost"] > 0 and usage["all_llm_cost"] > 0
    assert JobResult.model_validate(result).usage.calls(Tier.SLM) == 5  # the JSON is the SDK's own model
    assert "✓ classify_intent" in done.stderr  # progress goes to stderr, never into the JSON


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_job_needing_review_exits_1(triage_server: ScriptedServer, json_flag: list[str], tmp_path: Path) -> None:
    ticket = json.loads(Path(T01).read_text())
    ticket["body"] = ticket["body"].replace("ORD-10012", "my order")  # the scripted id is now invented
    path = tmp_path / "ticket.json"
    path.write_text(json.dumps(ticket))
    done = slmflow("run", "support_triage", "--input", str(path), *json_flag,
                   SLMFLOW_SLM_BASE_URL=triage_server.base_url, SLMFLOW_SLM_MODEL="slm")  # fmt: skip
    assert done.returncode == 1, done.stderr
    if json_flag:
        result = json.loads(done.stdout)
        assert result["status"] == "needs_review"
        assert result["usage"]["escalations"][0]["step"] == "extract_fields"
    else:
        assert "needs_review" in done.stdout and "extract_fields" in done.stdout
