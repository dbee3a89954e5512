"""A job's trace lands in a real OpenTelemetry backend: Arize Phoenix, receiving OTLP over HTTP.

Phoenix lives in its own venv (its dependencies are not ours): `make otel-backend` installs it at
`$SLMFLOW_PHOENIX_VENV` (default ~/.cache/slmflow/phoenix-venv). Without it this test fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.support_triage import INTENT_ADAPTER
from slmflow.testing import ScriptedServer
from tests.conftest import EXAMPLES, ROOT, TRIAGE_ALIASES, triage_reply

pytestmark = pytest.mark.otel

PHOENIX = (
    Path(os.environ.get("SLMFLOW_PHOENIX_VENV", Path.home() / ".cache" / "slmflow" / "phoenix-venv"))
    / "bin"
    / "phoenix"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert PHOENIX.exists(), f"Phoenix is not installed at {PHOENIX}: run `make otel-backend`"
    port = _free_port()
    env = {**os.environ, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(_free_port()),
           "PHOENIX_WORKING_DIR": str(tmp_path_factory.mktemp("phoenix"))}  # fmt: skip
    process = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(f"{url}/v1/projects")
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "Phoenix did not start"
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def test_job_spans_reach_phoenix_with_their_attributes(phoenix: str) -> None:
    with ScriptedServer({"slm": triage_reply}, TRIAGE_ALIASES) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLMFLOW_", "OTEL_"))}
        env.update(SLMFLOW_SLM_BASE_URL=server.base_url, SLMFLOW_SLM_MODEL="slm", OTEL_TRACES_EXPORTER="otlp",
                   OTEL_EXPORTER_OTLP_ENDPOINT=phoenix, OTEL_SERVICE_NAME="slmflow-e2e")  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "slmflow", "run", "support_triage", "--input",
             str(EXAMPLES / "t01_refund_request.json"), "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trace_id = json.loads(done.stdout)["trace_id"]
    assert trace_id and len(trace_id) == 32
    deadline = time.monotonic() + 30
    while True:
        spans = [s for s in _get(f"{phoenix}/v1/projects/default/spans?limit=200")["data"]
                 if s["context"]["trace_id"] == trace_id]  # fmt: skip
        if len(spans) >= 13 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    names = sorted(s["name"] for s in spans)
    # The intent step asks the shipped adapter; the four others the endpoint's model.
    assert names.count("chat slm") == 4 and names.count(f"chat {INTENT_ADAPTER}") == 1
    assert names.count("execute_tool lookup_order") == 1
    assert "invoke_workflow support_triage" in names and "invoke_agent draft_reply" in names
    [chat] = [s for s in spans if s["name"] == "chat slm" and s["attributes"].get("slmflow.attempt") == 1][:1]
    assert chat["attributes"]["gen_ai.request.model"] == "slm"
    assert chat["attributes"]["gen_ai.usage.input_tokens"] == 20
    assert chat["attributes"]["slmflow.tier"] == "slm"
