"""Where a py-spy profile's samples went, by library: the innermost frame outside the standard library.

    python benchmarks/profile_summary.py PROFILE.txt [--top 15] [--json]

PROFILE.txt is py-spy's raw (collapsed) output: one `frame;frame;...;frame COUNT` line per stack,
outermost first (`benchmarks/fleet_throughput.py --py-spy FILE` writes one). A sample is charged to
the library of its innermost frame that is not the standard library (asyncio's loop, threading),
so time in `ssl` or `selectors` under redis-py counts as redis-py's; slmflow's own code is
`slmflow`. Samples with no such frame are `stdlib`.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

_SITE = re.compile(r"site-packages/([A-Za-z0-9_]+)")
_OWN = re.compile(r"/(slmflow|benchmarks)/[^/]*(?:/[^/]*)*\.py:")


def library(frame: str) -> str | None:
    """The library a py-spy frame (`function (/full/path.py:line)`, from `--full-filenames`) belongs
    to; None for the standard library. A file under site-packages belongs to its top folder there
    (slmflow installed editable is found by its own folder)."""
    site = _SITE.search(frame)
    if site:
        return site.group(1)
    own = _OWN.search(frame)
    return own.group(1) if own else None


def summarize(lines: list[str]) -> Counter[str]:
    """Samples per library (see the module docstring)."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        owner = next((lib for lib in map(library, reversed(stack.split(";"))) if lib), "stdlib")
        counts[owner] += int(count)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = summarize(args.profile.read_text().splitlines())
    total = sum(counts.values()) or 1
    shares = {lib: round(100 * n / total, 1) for lib, n in counts.most_common(args.top)}
    if args.json:
        print(json.dumps({"samples": total, "percent": shares}))
        return
    print(f"{total} samples")
    for lib, share in shares.items():
        print(f"{share:6.1f}%  {lib}")


if __name__ == "__main__":
    main()
