"""The fleet: Celery workers on Redis that run jobs submitted through the SDK."""

from slmflow.fleet.app import create_app

__all__ = ["create_app"]
