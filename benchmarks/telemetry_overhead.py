"""What tracing costs: 200 in-process support_triage jobs on a scripted model, telemetry off vs on.

"On" exports every span over OTLP/HTTP (protobuf, the BatchSpanProcessor) to, by default, a null
sink: a loopback HTTP server in its own process that reads each export and answers 200, so the
figure is what tracing costs the job's process, not what a backend sharing the cores costs the
machine. `--backend phoenix` exports to a real Arize Phoenix started here instead (from the venv
that `make otel-backend` installs). The model server runs in its own process too. Each mode runs
in its own process (a tracer provider is global); modes alternate, and the median run of each counts.

    python benchmarks/telemetry_overhead.py [--jobs 200] [--repeats 7] [--backend null|phoenix]
        [--out benchmarks/results/telemetry_overhead.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHOENIX = (
    Path(os.environ.get("SLMFLOW_PHOENIX_VENV", Path.home() / ".cache" / "slmflow" / "phoenix-venv"))
    / "bin"
    / "phoenix"
)


async def _run_jobs(count: int, model_url: str) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from graphs.support_triage import graph
    from slmflow import Tier, run_job
    from slmflow.checkpoints import open_checkpointer
    from slmflow.models import Endpoint, Endpoints, ModelClient
    from slmflow.telemetry import setup_tracing
    from tests.conftest import project_hooks

    split = os.environ.get("BENCH_SPLIT")
    if split:  # where the cost is: spans alone, then the batch processor, then OTLP encoding
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class _Exporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                if split == "batch-encode":
                    encode_spans(spans).SerializePartialToString()
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        if split != "spans":
            provider.add_span_processor(BatchSpanProcessor(_Exporter()))
        trace.set_tracer_provider(provider)
    setup_tracing("slmflow-bench")
    ticket = json.loads((ROOT / "examples" / "support_triage" / "t01_refund_request.json").read_text())
    slm = ModelClient(Endpoint(Tier.SLM, model_url, "slm", dialect="vllm", timeout=5.0, max_retries=1,
                               price_per_1k_input=1.0, price_per_1k_output=1.0))  # fmt: skip
    endpoints = Endpoints(slm=slm, llm=None, llm_price_per_1k=(10.0, 10.0), _owned=[slm])
    endpoints.learning = project_hooks()  # the project's committed floors, as in production
    async with open_checkpointer("memory") as checkpointer:
        for _ in range(10):  # warm-up: pools open, code paths run once
            await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer)
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(count):
            result = await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer)
            assert result.status == "succeeded", result
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await endpoints.aclose()
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush:
        flush()
    return {"wall_s": elapsed, "cpu_s": cpu}


def _serve_model() -> None:
    sys.path.insert(0, str(ROOT))
    from slmflow.testing import ScriptedServer
    from tests.conftest import triage_reply

    # The reference project routes classify_intent to its adapter: answered by the same script.
    with ScriptedServer({"slm": triage_reply}, aliases={"classify_intent-v1": "slm"}) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


def _serve_null() -> None:
    class Sink(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{httpd.server_address[1]}", flush=True)
    sys.stdin.read()
    httpd.shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _mode(count: int, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", str(count)], env=env, capture_output=True, text=True,
                          cwd=ROOT)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"a benchmark run failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _helper(flag: str) -> tuple[subprocess.Popen[str], str]:
    """A server in its own process (stopped by closing its stdin) and the URL it prints."""
    process = subprocess.Popen([sys.executable, __file__, flag], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, cwd=ROOT)  # fmt: skip
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def _phoenix() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(_free_port()), "PHOENIX_WORKING_DIR": tempfile.mkdtemp()}  # fmt: skip
    process = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/projects", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    return process, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backend", choices=("null", "phoenix"), default="null")
    parser.add_argument(
        "--split",
        action="store_true",
        help="also: spans with no processor, a batch processor exporting nowhere, and encoding too",
    )
    parser.add_argument("--child", type=int)
    parser.add_argument("--serve-model", action="store_true")
    parser.add_argument("--serve-null", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "telemetry_overhead.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_run_jobs(args.child, os.environ["BENCH_MODEL_URL"]))))
        return
    if args.serve_model:
        return _serve_model()
    if args.serve_null:
        return _serve_null()
    model, model_url = _helper("--serve-model")
    sink, sink_url = _phoenix() if args.backend == "phoenix" else _helper("--serve-null")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SLMFLOW_"))}
    base["SHOP_DB"] = str(Path(tempfile.mkdtemp()) / "shop.db")
    base["BENCH_MODEL_URL"] = model_url
    on_env = {**base, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url}
    off: list[dict[str, float]] = []
    on: list[dict[str, float]] = []
    splits: dict[str, list[dict[str, float]]] = {}
    try:
        for _ in range(args.repeats):  # alternate, so that drift of a shared machine hits both
            off.append(_mode(args.jobs, base))
            on.append(_mode(args.jobs, on_env))
            for split in ("spans", "batch-null", "batch-encode") if args.split else ():
                splits.setdefault(split, []).append(_mode(args.jobs, {**base, "BENCH_SPLIT": split}))
    finally:
        for process in (model, sink):
            if process.stdin is not None:
                process.stdin.close()
            else:
                process.terminate()
            process.wait(30)
    # Medians over the repeats: single runs on a shared VM spread by +-15%.
    best_off, best_on = statistics.median(r["wall_s"] for r in off), statistics.median(r["wall_s"] for r in on)
    cpu_off, cpu_on = statistics.median(r["cpu_s"] for r in off), statistics.median(r["cpu_s"] for r in on)
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": args.jobs, "repeats": args.repeats,
        "nproc": os.cpu_count(),
        "job": "support_triage T01: 5 model calls (scripted, 0 ms, own process) + 2 tool calls, memory checkpointer",
        "backend": {"null": "null OTLP/HTTP sink (own process)", "phoenix": "Arize Phoenix over OTLP/HTTP"}[
            args.backend] + ", BatchSpanProcessor",
        "off": off, "on": on,
        "off_ms_per_job": round(best_off / args.jobs * 1000, 3), "on_ms_per_job": round(best_on / args.jobs * 1000, 3),
        "off_cpu_ms_per_job": round(cpu_off / args.jobs * 1000, 3),
        "on_cpu_ms_per_job": round(cpu_on / args.jobs * 1000, 3),
        "ratio_on_over_off": round(best_on / best_off, 3), "cpu_ratio_on_over_off": round(cpu_on / cpu_off, 3),
        "goal_ratio": 1.05,
    }  # fmt: skip
    if splits:
        report["split_note"] = (
            "CPU ms per job, medians: spans = SDK tracer provider with no processor; batch-null = "
            "BatchSpanProcessor exporting nowhere; batch-encode = also OTLP protobuf encoding"
        )
        report["split_cpu_ms_per_job"] = {
            "off": report["off_cpu_ms_per_job"],
            **{k: round(statistics.median(r["cpu_s"] for r in v) / args.jobs * 1000, 3) for k, v in splits.items()},
            "otlp_null_sink": report["on_cpu_ms_per_job"],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
