"""The reference project's fleet entry point: `celery -A workers worker` (or `slmflow worker`).

Settings come from `SLMFLOW_*` (Redis URL, checkpoint URL, model endpoints, tool queues); the
worker loads the project's graphs from the current directory or `SLMFLOW_PROJECT`.
"""

from slmflow.fleet.app import create_app

__all__ = ["app"]

app = create_app()
