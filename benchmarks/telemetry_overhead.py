"""What tracing costs: 200 in-process support_triage jobs on a scripted model, telemetry off vs on.

"On" exports every span over OTLP/HTTP to a real Arize Phoenix started here (from the venv that
`make otel-backend` installs). Each mode runs in its own process (a tracer provider is global).

    python benchmarks/telemetry_overhead.py [--jobs 200] [--out benchmarks/results/telemetry_overhead.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOENIX = (
    Path(os.environ.get("SLMFLOW_PHOENIX_VENV", Path.home() / ".cache" / "slmflow" / "phoenix-venv"))
    / "bin"
    / "phoenix"
)


async def _run_jobs(count: int) -> float:
    sys.path.insert(0, str(ROOT))
    from graphs.support_triage import graph
    from slmflow import run_job
    from slmflow.checkpoints import open_checkpointer
    from slmflow.telemetry import setup_tracing
    from slmflow.testing import ScriptedServer
    from tests.conftest import triage_reply

    setup_tracing("slmflow-bench")
    ticket = json.loads((ROOT / "examples" / "support_triage" / "t01_refund_request.json").read_text())
    with ScriptedServer({"slm": triage_reply}) as server:
        endpoints = server.endpoints("slm")
        async with open_checkpointer("memory") as checkpointer:
            await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer)  # warm-up
            started = time.perf_counter()
            for _ in range(count):
                result = await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer)
                assert result.status == "succeeded"
            elapsed = time.perf_counter() - started
        await endpoints.aclose()
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush:
        flush()
    return elapsed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _mode(count: int, env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, __file__, "--child", str(count)], env=env, capture_output=True, text=True,
                          check=True, cwd=ROOT)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--child", type=int)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "telemetry_overhead.json")
    args = parser.parse_args()
    if args.child:
        print(asyncio.run(_run_jobs(args.child)))
        return
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SLMFLOW_"))}
    base["SHOP_DB"] = str(Path(tempfile.mkdtemp()) / "shop.db")
    port = _free_port()
    phoenix_env = {**os.environ, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
                   "PHOENIX_GRPC_PORT": str(_free_port()), "PHOENIX_WORKING_DIR": tempfile.mkdtemp()}  # fmt: skip
    phoenix = subprocess.Popen([str(PHOENIX), "serve"], env=phoenix_env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/projects", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        off = [_mode(args.jobs, base) for _ in range(2)]
        on_env = {**base, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        on = [_mode(args.jobs, on_env) for _ in range(2)]
    finally:
        phoenix.terminate()
        phoenix.wait(30)
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": args.jobs, "nproc": os.cpu_count(),
        "job": "support_triage T01: 5 model calls (scripted, 0 ms) + 2 tool calls, memory checkpointer",
        "off_s": off, "on_s": on,
        "off_ms_per_job": min(off) / args.jobs * 1000, "on_ms_per_job": min(on) / args.jobs * 1000,
        "ratio_on_over_off": min(on) / min(off), "backend": "Arize Phoenix over OTLP/HTTP (BatchSpanProcessor)",
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
