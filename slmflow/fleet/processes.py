"""Several worker processes on one host (`slmflow worker --processes N`), supervised as one.

A jobs worker runs every job of its process on one asyncio event loop: one core at most. A host
with more cores runs one worker process per core, each a Celery node with its own slots. The
parent starts them, forwards SIGTERM/SIGINT/SIGQUIT to each (each drains as a single worker does),
and ends when they have: with the first non-zero exit code, after stopping the others if one dies
on its own (the host's supervisor, systemd or Kubernetes, restarts the whole).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["process_count", "run_processes"]

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def process_count(requested: int) -> int:
    """Processes to start: `requested`, or one per core available to this process when 0."""
    if requested > 0:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_processes(commands: Sequence[Sequence[str]], poll_s: float = 0.2) -> int:
    """Run each command as a child process until all have ended; the first non-zero exit code, else 0.

    Each child has its own session: a terminal's Ctrl-C reaches it once, forwarded from here (twice
    would make Celery skip its drain)."""
    children = [subprocess.Popen(list(command), start_new_session=True) for command in commands]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        while any(child.poll() is None for child in children):
            ended = [child for child in children if child.poll() is not None]
            if ended and not stopping:  # one died on its own: stop the rest, let the host restart us
                print(f"worker process {ended[0].pid} exited ({ended[0].returncode}): stopping the others",
                      file=sys.stderr, flush=True)  # fmt: skip
                forward(signal.SIGTERM, None)
            time.sleep(poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return next((child.returncode for child in children if child.returncode), 0)
