"""A scripted OpenAI-compatible model for the one-machine topology in CI: no weights, no GPU, instant answers.

    MODEL_PORT=8000 SLMFLOW_SLM_MODEL=smollm2-135m python deploy/local/scripted_model.py

It serves `slmflow.testing.ScriptedServer` on 127.0.0.1:$MODEL_PORT under the name $SLMFLOW_SLM_MODEL (plus
any names in $SCRIPTED_MODEL_ALIASES, comma-separated, e.g. LoRA adapters a project's skills ask for), and
`GET /health` like vLLM. Every answer is the simplest one the request's constraint allows: a label skill gets
its first label, an object skill the smallest object its JSON Schema accepts, a tool skill one call of its
first (or named) tool with the smallest valid arguments. That answers `bench_small`
(benchmarks/fleet_project) right: label `yes`, then `record(note="ok")`. A real deployment points
SLMFLOW_SLM_BASE_URL at vLLM instead (compose.yaml's `model` service).
"""

from __future__ import annotations

import json
import os
from typing import Any

from slmflow.testing import Reply, ScriptedServer

__all__ = ["answer", "main", "smallest"]


def smallest(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """The smallest value `schema` accepts: required properties only, first enum value, first branch."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return smallest(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for branches in ("anyOf", "oneOf", "allOf"):
        if schema.get(branches):
            choices = [b for b in schema[branches] if b.get("type") != "null"] or schema[branches]
            return smallest(choices[0], defs)
    kind = schema.get("type", "object")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: smallest(properties.get(name, {}), defs) for name in schema.get("required", [])}
    if kind == "array":
        return [smallest(schema.get("items", {}), defs) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "ok".ljust(schema.get("minLength", 0), "k")
    if kind in ("integer", "number"):
        if "exclusiveMinimum" in schema:
            return schema["exclusiveMinimum"] + 1
        return schema.get("minimum", 0)
    return True if kind == "boolean" else None


def answer(body: dict[str, Any]) -> Reply:
    """The simplest answer a chat-completion request's constraint allows."""
    choice = (body.get("structured_outputs") or {}).get("choice")
    if choice:
        return Reply(text=choice[0])
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return Reply(text=json.dumps(smallest(response_format["json_schema"]["schema"])))
    tools = [t["function"] for t in body.get("tools", [])]
    if tools:
        tool_choice = body.get("tool_choice")  # "required", or {"type": "function", "function": {"name": ...}}
        wanted = tool_choice["function"]["name"] if isinstance(tool_choice, dict) else None
        tool = next((t for t in tools if t["name"] == wanted), tools[0])
        return Reply(tool_calls=[(tool["name"], smallest(tool.get("parameters", {})))])
    return Reply(text="ok")


def main() -> None:
    """Serve until killed (SIGTERM's default action: there is nothing to save)."""
    port = int(os.environ.get("MODEL_PORT", "8000"))
    model = os.environ.get("SLMFLOW_SLM_MODEL") or "smollm2-135m"
    aliases = {name: model for name in os.environ.get("SCRIPTED_MODEL_ALIASES", "").split(",") if name}
    server = ScriptedServer({model: answer}, aliases, port=port, keep_requests=False)  # it may serve for hours
    print(f"scripted model {model!r} on http://127.0.0.1:{port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
