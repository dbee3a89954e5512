"""The chaos suite at full size: kills, restarts and hostile input against a private fleet, with times.

    python benchmarks/chaos.py [--jobs 10000] [--rate 10] [--seed S] [--scenario all|combined|kill|redis|
        postgres|sigterm|freeze|model|messages] [--out benchmarks/results/chaos.json] [--keep]

`combined` (the issue's full run) pushes `--jobs` jobs at `--rate` jobs/s through 2 jobs workers and 1
tools worker while SIGKILLs of both kinds land every 4-8 s (each worker restarted after 1-2 s), with
one Redis restart (SIGKILL, 5 s down, back on its AOF; workers it killed are restarted, and named)
and one Postgres restart (immediate stop, 3 s down). `all` runs `combined`, then every other
scenario at its own (smaller) size. Everything is in `tests/chaos/harness.py`: its own redis-server
and PostgreSQL cluster on free loopback ports, a scripted model in this process, workers as
subprocesses; all of it stopped at the end.

Printed: a table per scenario (jobs, statuses, lost, stuck, duplicated effects per tool, unknown
outcomes, kills by kind, restarts, faults by kind, resume after a jobs-worker kill p50/p95/max),
and the whole result as JSON in `--out` (`chaos.json` for all/combined, `chaos_<scenario>.json`
for one other scenario).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.chaos.harness import SCENARIOS, Bounds, ChaosEnv, install_sigterm_cleanup  # noqa: E402

# Sizes of the other scenarios in `all` (they test one mechanism each; their size is not the point).
SMALL = {"kill": 1000, "redis": 300, "postgres": 300, "sigterm": 60, "freeze": 100, "model": 300, "messages": 20}


def row(table: Table, name: str, value: Any, ok: bool | None = None) -> None:
    """One line; red when a count that must be 0 is not."""
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    style = None if ok is None else ("green" if ok else "bold red")
    table.add_row(name, f"[{style}]{text}[/{style}]" if style else text)


def show(console: Console, result: dict[str, Any]) -> None:
    """The counts of one scenario as a table."""
    table = Table(title=f"chaos: {result['scenario']} (seed {result['seed']})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    jobs = result["jobs"]
    row(table, "jobs submitted / recorded", f"{jobs['submitted']} / {jobs['recorded']}")
    row(table, "by status", jobs["by_status"])
    row(table, "lost", result["lost"], result["lost"] == 0)
    row(table, "stuck", result["stuck"], result["stuck"] == 0)
    row(table, "duplicated (idempotent stamp)", result["duplicated"]["stamp"], result["duplicated"]["stamp"] == 0)
    row(table, "duplicated (charge, not idempotent)", result["duplicated"]["charge"],
        result["duplicated"]["charge"] == 0)  # fmt: skip
    # Every unknown outcome must be a call that a killed tools-worker process was running (a 6-slot
    # worker cuts up to 6 calls at once): nothing else may cause one.
    row(table, "outcome_unknown pauses / of them on runs a tools kill cut off",
        f"{result['outcome_unknown']} / {result['outcome_unknown_on_killed_runs']} "
        f"(tools kills mid-call {result['tools_kills_mid_call']}, cut-off runs {result['interrupted_runs']})",
        result["outcome_unknown"] == result["outcome_unknown_on_killed_runs"])  # fmt: skip
    row(table, "forked (two terminal job_finished)", result["forked"], result["forked"] == 0)
    row(table, "dead-lettered", result["dead_lettered"])
    row(table, "kills by kind", result["kills"])
    row(table, "restarts", result["restarts"])
    row(table, "faults by kind", result["faults"])
    resume = result["resume_s"]
    if resume["n"] or resume["never_resumed"]:
        row(table, "resume after a jobs-worker kill (s)",
            f"p50 {resume['p50']}  p95 {resume['p95']}  max {resume['max']}  (n {resume['n']}, "
            f"never {resume['never_resumed']}, by {resume['attributed_by']})",
            resume["never_resumed"] == 0 and (resume["max"] or 0) <= 30)  # fmt: skip
    for key in ("workers_died", "workers_died_of_redis_restart", "sigterm_exit_s", "forged_runs",
                "pickle_deserialized", "needs_review_reasons", "failed_reasons", "submit_errors"):  # fmt: skip
        if result.get(key) not in (None, {}, []):
            row(table, key.replace("_", " "), result[key])
    row(table, "duration (s) / settled after last fault (s)",
        f"{result['duration_s']} / {result['settled_after_last_fault_s']}")  # fmt: skip
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs of the combined (or chosen) scenario")
    parser.add_argument("--rate", type=float, default=10.0, help="jobs submitted per second")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault schedule (default: random)")
    parser.add_argument("--scenario", default="all", choices=["all", *SCENARIOS])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--kill-every", default="4,8", help="combined: seconds between kills, MIN,MAX (uniform)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (worker logs) at the end")
    args = parser.parse_args()
    install_sigterm_cleanup()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    console = Console(stderr=True)
    console.print(f"[bold]chaos[/bold]: scenario {args.scenario}, {args.jobs} jobs at {args.rate}/s, seed {seed}")
    names = ["combined", *[n for n in SCENARIOS if n != "combined"]] if args.scenario == "all" else [args.scenario]
    out = args.out or ROOT / "benchmarks" / "results" / (
        "chaos.json" if args.scenario in ("all", "combined") else f"chaos_{args.scenario}.json")  # fmt: skip
    results: list[dict[str, Any]] = []
    started = time.time()
    with ChaosEnv.create(keep=args.keep) as env:
        for index, name in enumerate(names):
            size = args.jobs if name == args.scenario or name == "combined" else SMALL[name]
            kwargs: dict[str, Any] = {}
            if name in ("kill", "redis", "postgres", "model", "combined"):
                kwargs["rate"] = args.rate
            if name == "combined":
                kwargs["kill_every"] = tuple(float(x) for x in args.kill_every.split(","))
            if size > 2000:  # a long run: leave recovery more room before calling a job stuck
                kwargs["bounds"] = Bounds(stuck_after_s=60, lost_after_s=60)
            result = SCENARIOS[name](size, seed + index, env, **kwargs)
            results.append(result)
            show(console, result)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(_document(args, seed, started, results), indent=1, default=str) + "\n")
        if args.keep:
            console.print(f"workdir kept: {env.workdir}")
    console.print(f"written: {out}")
    bad = [r["scenario"] for r in results
           if r["lost"] or r["stuck"] or r["duplicated"]["stamp"] or r["duplicated"]["charge"] or r["forked"]
           or r["outcome_unknown"] != r["outcome_unknown_on_killed_runs"] or r.get("forged_runs")]  # fmt: skip
    if bad:
        console.print(f"[bold red]counts not met in: {', '.join(bad)}[/bold red]")
    return 1 if bad else 0


def _document(args: argparse.Namespace, seed: int, started: float, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "command": " ".join(["python", "benchmarks/chaos.py", *sys.argv[1:]]),
        "seed": seed,
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "scenarios": results,
    }


if __name__ == "__main__":
    sys.exit(main())
