"""Adapters: the folders a server serves, loading one into a running vLLM, and the promotion gate.

A skill's route says which adapter serves it (`current`, None for the base model) and which one
runs beside it in shadow (`candidate`, on a `shadow_rate` sample of live calls). `promote` switches
to the candidate only when its shadow figures beat the current model's by the set margin on enough
calls; `rollback` switches back. Every change, and every refusal, is an event with its figures.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from slmflow.errors import EndpointUnreachable, InvalidInput, UsageError
from slmflow.learning.store import AdapterEvent, DatasetStore, Route, ShadowCall
from slmflow.local_server import server_is_up
from slmflow.redaction import mask_url

__all__ = [
    "ShadowFigures",
    "load_adapter",
    "promote",
    "rollback",
    "shadow_figures",
    "require_served",
    "start_shadow",
    "validate_rate",
]


def load_adapter(base_url: str, name: str, path: Path, timeout: float = 120.0) -> None:
    """Load the adapter at `path` into the vLLM server at `base_url` as model `name`."""
    if not (path / "adapter_config.json").is_file():
        raise InvalidInput(
            f"{path} is not an adapter folder (no adapter_config.json): train one with `slmflow distill train`"
        )
    body = json.dumps({"lora_name": name, "lora_path": str(path.resolve())}).encode()
    request = urllib.request.Request(
        f"{base_url}/load_lora_adapter", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        if exc.code == 400 and "already been loaded" in detail:
            raise UsageError(
                f"{mask_url(base_url)} already serves an adapter named {name!r}: adapters are versions, "
                "give this one a new name (e.g. --name SKILL-v2)"
            ) from None
        if exc.code in (404, 405):
            raise UsageError(
                f"{mask_url(base_url)} does not load adapters at runtime: start it with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora (`slmflow models serve` does)"
            ) from None
        raise UsageError(f"{mask_url(base_url)} refused adapter {name!r} from {path}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise EndpointUnreachable(
            f"nothing answers at {mask_url(base_url)} ({exc}): start the model server first"
        ) from None


class ShadowFigures(BaseModel):
    """How a candidate did beside the current model on the same live calls."""

    skill: str
    current: str
    candidate: str
    calls: int
    agreement: float
    current_pass_rate: float
    candidate_pass_rate: float
    referenced: int
    """Calls whose kept answer came from the LLM or a reviewer: the reference both are scored on."""
    current_accuracy: float | None
    candidate_accuracy: float | None

    @classmethod
    def of(cls, skill: str, current: str, candidate: str, calls: list[ShadowCall]) -> ShadowFigures:
        """Figures over a list of shadow calls."""
        n = len(calls)
        referenced = [c for c in calls if c.current_right is not None]

        def rate(values: list[bool]) -> float:
            return sum(values) / len(values) if values else 0.0

        return cls(
            skill=skill,
            current=current,
            candidate=candidate,
            calls=n,
            agreement=rate([c.agree for c in calls]),
            current_pass_rate=rate([c.current_ok for c in calls]),
            candidate_pass_rate=rate([c.candidate_ok for c in calls]),
            referenced=len(referenced),
            current_accuracy=rate([bool(c.current_right) for c in referenced]) if referenced else None,
            candidate_accuracy=rate([bool(c.candidate_right) for c in referenced]) if referenced else None,
        )


def _current_name(route: Route, base_model: str) -> str:
    return route.current or base_model


def validate_rate(rate: float) -> float:
    """A shadow sample rate, or `InvalidInput` saying what it must be."""
    if not 0.0 < rate <= 1.0:
        raise InvalidInput(f"shadow rate {rate} must be in (0, 1]: the share of live calls the candidate also answers")
    return rate


def require_served(base_url: str, name: str) -> None:
    """Fail unless the server at `base_url` serves model `name` (a shadow of nothing helps no one)."""
    served = server_is_up(base_url, timeout=10.0)
    if served is None:
        raise EndpointUnreachable(
            f"nothing answers at {mask_url(base_url)}: start the model server, then load the adapter"
        )
    if name not in served:
        raise UsageError(
            f"{mask_url(base_url)} does not serve {name!r} (it serves: {', '.join(served)}): "
            "load it first with `slmflow distill load ADAPTER_DIR`"
        )


def start_shadow(store: DatasetStore, skill: str, candidate: str, rate: float) -> Route:
    """Run `candidate` beside the skill's current model on a `rate` sample of live calls."""
    validate_rate(rate)
    route = store.route(skill)
    if candidate == route.current:
        raise InvalidInput(f"{candidate!r} already serves {skill}: shadow a different adapter")
    new = route.model_copy(update={"candidate": candidate, "shadow_rate": rate})
    store.set_route(new, AdapterEvent(skill=skill, action="shadow", adapter=candidate, previous=route.current,
                                      figures={"shadow_rate": rate}))  # fmt: skip
    return new


def shadow_figures(store: DatasetStore, skill: str, base_model: str) -> ShadowFigures:
    """The shadow figures of the skill's candidate against its current model."""
    route = store.route(skill)
    if not route.candidate:
        raise InvalidInput(
            f"{skill} has no candidate in shadow: start one with `slmflow distill shadow {skill} ADAPTER`"
        )
    current = _current_name(route, base_model)
    return ShadowFigures.of(skill, current, route.candidate, store.shadow_calls(skill, route.candidate, current))


def promote(
    store: DatasetStore, skill: str, base_model: str, *, min_calls: int, margin: float
) -> tuple[bool, ShadowFigures, str]:
    """Switch the skill to its candidate if the shadow figures justify it; (promoted, figures, why)."""
    figures = shadow_figures(store, skill, base_model)
    route = store.route(skill)
    why = _refusal(figures, min_calls, margin)
    data: dict[str, Any] = {**figures.model_dump(), "min_calls": min_calls, "margin": margin}
    if why:
        store.add_event(AdapterEvent(skill=skill, action="refuse", adapter=route.candidate, previous=route.current,
                                     figures=data, note=why))  # fmt: skip
        return False, figures, why
    why = (
        f"pass rate {figures.candidate_pass_rate:.2f} vs {figures.current_pass_rate:.2f} over {figures.calls} calls "
        f"(margin {margin:.2f})"
    )
    new = Route(skill=skill, current=route.candidate, previous=route.current, candidate=None, shadow_rate=0.0)
    store.set_route(new, AdapterEvent(skill=skill, action="promote", adapter=route.candidate, previous=route.current,
                                      figures=data, note=why))  # fmt: skip
    return True, figures, why


def _refusal(figures: ShadowFigures, min_calls: int, margin: float) -> str | None:
    if figures.calls < min_calls:
        return f"only {figures.calls} shadow calls of the {min_calls} needed (SLMFLOW_PROMOTE_MIN_CALLS): wait for more"
    gain = figures.candidate_pass_rate - figures.current_pass_rate
    if gain < margin:
        return (
            f"the candidate passes {figures.candidate_pass_rate:.2f} of calls against {figures.current_pass_rate:.2f}: "
            f"a gain of {gain:+.2f}, under the margin of {margin:.2f} (SLMFLOW_PROMOTE_MARGIN)"
        )
    if figures.candidate_accuracy is not None and figures.current_accuracy is not None:
        if figures.candidate_accuracy < figures.current_accuracy:
            return (
                f"the candidate agrees with the LLM/reviewer answers less often ({figures.candidate_accuracy:.2f} "
                f"against {figures.current_accuracy:.2f} on {figures.referenced} calls)"
            )
    return None


def rollback(store: DatasetStore, skill: str) -> Route:
    """Switch the skill back to the model it used before its last promotion."""
    route = store.route(skill)
    if route.current is None:
        raise InvalidInput(f"{skill} runs on the base model: there is nothing to roll back")
    if route.previous is None and any(e.action == "rollback" for e in store.events(skill)[-1:]):
        raise InvalidInput(f"{skill} was just rolled back: promote a candidate to move forward again")
    versions = {v.slm_model: v for v in store.version_figures(skill)}
    figures = {
        name: {"runs": v.runs, "escalation_rate": v.escalation_rate}
        for name in (route.current, route.previous) if name and (v := versions.get(name))
    }  # fmt: skip
    # No way forward again by rolling back twice: the rolled-back adapter must be promoted anew.
    new = Route(skill=skill, current=route.previous, previous=None, candidate=None, shadow_rate=0.0)
    store.set_route(new, AdapterEvent(skill=skill, action="rollback", adapter=route.previous, previous=route.current,
                                      figures=figures, note=f"back from {route.current}"))  # fmt: skip
    return new
