"""The project's fleet entry point: `slmflow worker` (jobs) and `slmflow worker --queues slmflow.tools`.

Settings come from `SLMFLOW_*` variables; the workers load this project's graphs from the current
directory or `SLMFLOW_PROJECT`.
"""

from slmflow.fleet.app import create_app

__all__ = ["app"]

app = create_app()
