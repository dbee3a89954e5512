"""One way to open the model endpoints: for `slmflow run`, eval, calibrate, distill and the fleet.

`open_endpoints` starts (or reuses) the local vLLM server when no `SLMFLOW_SLM_BASE_URL` is set,
attaches the learning hooks only when asked (`learning=True`: adapter routes, shadow, recording
from the dataset store), checks that every endpoint answers and serves the models the skills
will ask for (promoted adapters included), and closes the clients at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

from slmflow import telemetry
from slmflow.hooks import CascadeHooks, serving_model
from slmflow.learning.hooks import Learning
from slmflow.local_server import serve
from slmflow.models import Endpoints, check_reachable
from slmflow.settings import Settings
from slmflow.skills import Skill

__all__ = ["open_endpoints"]


@asynccontextmanager
async def open_endpoints(
    settings: Settings,
    *,
    skills: Iterable[Skill] = (),
    models: Iterable[str] = (),
    learning: bool | CascadeHooks = False,
    start_local: bool = True,
    check: bool = True,
    progress: Callable[[str], None] = print,
) -> AsyncIterator[Endpoints]:
    """The endpoints the settings describe, open for the block.

    `skills` and `models` name what must be served (each skill by the model that serves it);
    `learning`: True for the hooks the settings describe, or hooks of your own; `start_local`:
    start the local server when no SLM URL is set (a fleet worker never does); `check`: fail fast
    (`EndpointUnreachable`, `UsageError`) before anything runs.
    """
    telemetry.capture_content(settings.capture_content)  # the settings given decide, not only the environment
    slm_base_url = None
    if start_local and not settings.slm_base_url:
        slm_base_url = serve(settings, progress=progress).base_url
    endpoints = Endpoints.from_settings(settings, slm_base_url=slm_base_url)
    if learning is True:
        endpoints.learning = Learning.from_settings(settings)
    elif learning is not False:
        endpoints.learning = learning
    try:
        if check:
            default = endpoints.slm.endpoint.default_model
            wanted = set(models)
            for skill in skills:
                route = await endpoints.learning.route(skill.name) if endpoints.learning is not None else None
                wanted.add(serving_model(skill, route, default))
            await check_reachable(endpoints.slm, sorted(wanted or {default}))
            if endpoints.llm is not None:
                await check_reachable(endpoints.llm, [])
        yield endpoints
    finally:
        await endpoints.aclose()
