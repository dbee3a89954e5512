"""What starting slmflow costs: wall time of fresh interpreters that import it or print the CLI's help.

Each case runs `--runs` times in a new process (the first run is dropped: it warms the OS file
cache); the median and the best are reported, beside a bare `python -c pass` as the floor.

    python benchmarks/startup.py [--runs 15] [--out benchmarks/results/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLMFLOW = Path(sys.executable).parent / "slmflow"

CASES: dict[str, list[str]] = {
    "python (floor)": [sys.executable, "-c", "pass"],
    "import slmflow": [sys.executable, "-c", "import slmflow"],
    "SDK: from slmflow import Client": [sys.executable, "-c", "from slmflow import Client"],
    "slmflow --help": [str(SLMFLOW), "--help"],
    "in-process runtime: from slmflow import run_job": [sys.executable, "-c", "from slmflow import run_job"],
}


def timed(command: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=cwd, timeout=120)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args()
    results = {}
    # From an empty directory: the installed slmflow (or PYTHONPATH's) is measured, never a checkout's
    # found through the working directory; `--help` needs no project.
    with tempfile.TemporaryDirectory() as cwd:
        for name, command in CASES.items():
            times = [timed(command, cwd) for _ in range(args.runs + 1)][1:]
            results[name] = {"median_s": round(statistics.median(times), 3), "best_s": round(min(times), 3)}
            print(f"{name:<50} median {results[name]['median_s']:.3f} s  best {results[name]['best_s']:.3f} s",
                  flush=True)  # fmt: skip
    out = {
        "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "goal_s": 0.3,
        "results": results,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
