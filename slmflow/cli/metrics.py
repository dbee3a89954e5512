"""`slmflow metrics`: the fleet's demand for autoscalers and dashboards, read from the job store."""

from __future__ import annotations

import json
import threading
from http.server import ThreadingHTTPServer
from typing import Annotated

import redis
import typer
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from slmflow.cli.output import console, print_json
from slmflow.errors import StoreUnavailable
from slmflow.fleet.demand import DemandReader
from slmflow.fleet.health import ProbeHandler
from slmflow.redaction import mask_url
from slmflow.settings import load_settings

__all__ = ["metrics"]


def metrics(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 in a container).")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: SLMFLOW_METRICS_PORT, 9100).")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Print the demand once and exit, instead of serving it.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="With --once: print JSON.")] = False,
) -> None:
    """Serve the fleet's demand: jobs queued and running (exact), slots, oldest job, tools queues.

    `/metrics` is Prometheus text, `/metrics.json` JSON (what KEDA's metrics-api scaler reads:
    `jobs.active` against each jobs worker's slots), `/livez` and `/readyz` (200 while Redis answers).
    """
    settings = load_settings()
    reader = DemandReader(settings)
    try:
        demand = reader.read()
    except redis.RedisError as exc:
        raise StoreUnavailable(
            f"cannot reach Redis at {mask_url(settings.redis_url)} (SLMFLOW_REDIS_URL): {exc}"
        ) from None
    if once:
        if json_output:
            print_json(demand.model_dump(mode="json"))
        else:
            jobs, workers = demand.jobs, demand.workers
            console.print(f"jobs: {jobs.queued} queued, {jobs.running} running ({jobs.active} active), oldest "
                          f"{jobs.oldest_age_s:.1f}s; jobs workers: {workers.jobs} with {workers.slots} slots; "
                          f"demand {demand.demand if demand.demand is not None else '-'}")  # fmt: skip
        return
    server = _server(reader, host, port or settings.metrics_port)
    console.print(f"serving the fleet's demand on http://{host}:{server.server_port}/metrics (and /metrics.json)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _server(reader: DemandReader, host: str, port: int) -> ThreadingHTTPServer:
    lock = threading.Lock()  # one Redis script at a time, however many scrapers

    class Handler(ProbeHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/livez":
                self.send(200, b'{"live": true}')
                return
            if self.path not in ("/metrics", "/metrics.json", "/readyz"):
                self.send(404, b'{"error": "not found: /metrics, /metrics.json, /livez, /readyz"}')
                return
            try:
                with lock:
                    demand = reader.read()
            except redis.RedisError as exc:
                self.send(503, json.dumps({"error": f"job store: {exc}"}).encode())
                return
            if self.path == "/metrics":
                self.send(200, reader.prometheus(demand), CONTENT_TYPE_LATEST)
            elif self.path == "/metrics.json":
                self.send(200, demand.model_dump_json().encode())
            else:
                self.send(200, b'{"ready": true}')

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
