"""Which confidence signal separates right from wrong SmolLM2 answers, and what a precision target buys.

For `classify_intent` (labels) and `extract_fields` (an object), every ticket of the calibration
and held-out splits is answered once by the real SLM (greedy, the skill's constraint, with the
runner-up tokens), then sampled `--samples` times at `--temperature` (one request with `n`, a seed
per input). Every signal is computed from the same answers:

- `joint`, `mean`, `mean_free` (over freely chosen tokens), `min`, `margin` (labels), `agreement`.

Reported per skill and signal: AUROC on the calibration split (passed answers, right vs wrong);
the floor `choose_floor` picks there for `--target`; and on the held-out split with that floor:
coverage (kept SLM answers / inputs), precision of the kept answers, accepted-wrong count, and the
escalation rate. "before" is today's rule (the skill's own `min_confidence` on its default signal).
An escalated answer goes to a scripted LLM that answers from the expected answers, so it is right
by construction; the figures of interest are the kept SLM answers.

    python benchmarks/confidence.py [--samples 5] [--temperature 0.8] [--target 0.9] [--limit N]
        [--out benchmarks/results/confidence.json]

Needs the local model server (started if not running) or SLMFLOW_SLM_BASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agents.support_triage import classify, extract  # noqa: E402
from slmflow.answers import input_hash  # noqa: E402
from slmflow.calibration import Outcome, auroc, choose_floor  # noqa: E402
from slmflow.connect import open_endpoints  # noqa: E402
from slmflow.learning.evaluate import matches, read_cases  # noqa: E402
from slmflow.models import ModelClient  # noqa: E402
from slmflow.prompts import render_messages  # noqa: E402
from slmflow.settings import load_settings  # noqa: E402
from slmflow.skills import Skill  # noqa: E402
from slmflow.verdicts import agreement, constraint, judge, kept_form, logprob_signals  # noqa: E402

SPLITS = {
    "classify_intent": (classify, ROOT / "examples/intents/calibration.jsonl", ROOT / "examples/intents/heldout.jsonl"),
    "extract_fields": (extract, ROOT / "examples/extract/calibration.jsonl", ROOT / "examples/extract/heldout.jsonl"),
}
SIGNALS = ("joint", "mean", "mean_free", "min", "margin", "agreement")


async def _one(client: ModelClient, skill: Skill, values: dict[str, Any], expected: Any, samples: int,
               temperature: float) -> dict[str, Any]:  # fmt: skip
    messages = render_messages(skill, values, None)
    request = constraint(skill, "vllm", None) | {"top_logprobs": 5}
    greedy = await client.chat(messages, max_tokens=skill.token_budget, request=request)
    verdict = judge(skill, greedy, values, dialect="vllm", tools=None)
    answer = kept_form(verdict.answer) if verdict.ok else None
    signals = logprob_signals(greedy)
    row: dict[str, Any] = {
        "passed": verdict.ok, "right": verdict.ok and matches(expected, answer), "signals": signals,
        "forced_tokens": sum(lp >= -1e-6 for lp in greedy.token_logprobs), "tokens": len(greedy.token_logprobs),
        "latency_s": greedy.latency_s,
    }  # fmt: skip
    if verdict.ok and samples:
        sampled = await client.samples(messages, n=samples, temperature=temperature,
                                       seed=int(input_hash(values)[:8], 16), max_tokens=skill.token_budget,
                                       request=constraint(skill, "vllm", None))  # fmt: skip
        signals["agreement"] = agreement(skill, verdict.answer, sampled, values, dialect="vllm", tools=None)
        row["sample_latency_s"] = sampled[0].latency_s
    return row


async def _collect(args: argparse.Namespace, console: Console) -> dict[str, dict[str, list[dict[str, Any]]]]:
    settings = load_settings()
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    async with open_endpoints(settings, progress=lambda m: console.print(f"[dim]{m}[/]")) as endpoints:
        gate = asyncio.Semaphore(args.concurrency)
        for name, (skill, calibration, heldout) in SPLITS.items():
            rows[name] = {}
            for split, path in (("calibration", calibration), ("heldout", heldout)):
                cases = read_cases(path)[: args.limit or None]
                started = time.perf_counter()

                async def one(case: Any, skill: Skill = skill) -> dict[str, Any]:
                    async with gate:
                        return await _one(endpoints.slm, skill, case.input, case.expected, args.samples,
                                          args.temperature)  # fmt: skip

                rows[name][split] = list(await asyncio.gather(*(one(c) for c in cases)))
                console.print(f"{name} {split}: {len(cases)} inputs in {time.perf_counter() - started:.0f}s")
    return rows


def _outcomes(rows: list[dict[str, Any]], signal: str) -> list[Outcome]:
    return [Outcome(r["signals"].get(signal, 0.0), r["passed"], r["right"]) for r in rows]


def _kept_figures(rows: list[dict[str, Any]], signal: str, floor: float | None) -> dict[str, Any]:
    kept = [] if floor is None else [r for r in rows if r["passed"] and r["signals"].get(signal, 0.0) >= floor]
    right = sum(r["right"] for r in kept)
    return {
        "inputs": len(rows), "kept": len(kept), "coverage": len(kept) / len(rows) if rows else 0.0,
        "precision": right / len(kept) if kept else None, "accepted_wrong": len(kept) - right,
        "accepted_wrong_share": (len(kept) - right) / len(kept) if kept else None,
        "escalation_rate": 1 - len(kept) / len(rows) if rows else 0.0,
        # Escalations are answered by a scripted LLM from the expected answers: right by construction.
        "skill_accuracy": (right + len(rows) - len(kept)) / len(rows) if rows else 0.0,
    }  # fmt: skip


def _analyse(rows: dict[str, dict[str, list[dict[str, Any]]]], target: float) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, splits in rows.items():
        skill = SPLITS[name][0]
        cal, held = splits["calibration"], splits["heldout"]
        per_signal = {}
        for signal in SIGNALS:
            if not any(signal in r["signals"] for r in cal):
                continue
            calibration = choose_floor(_outcomes(cal, signal), target)
            per_signal[signal] = {
                "auroc_calibration": auroc([o for o in _outcomes(cal, signal) if o.passed]),
                "auroc_heldout": auroc([o for o in _outcomes(held, signal) if o.passed]),
                "floor": calibration.floor, "reason": calibration.reason,
                "calibration": _kept_figures(cal, signal, calibration.floor),
                "heldout": _kept_figures(held, signal, calibration.floor),
            }  # fmt: skip
        before_signal = skill.signal
        report[name] = {
            "slm_right_calibration": sum(r["right"] for r in cal) / len(cal),
            "slm_right_heldout": sum(r["right"] for r in held) / len(held),
            "passed_heldout": sum(r["passed"] for r in held) / len(held),
            "forced_token_share": sum(r["forced_tokens"] for r in cal) / max(1, sum(r["tokens"] for r in cal)),
            "before": {"signal": before_signal, "floor": skill.min_confidence,
                       "heldout": _kept_figures(held, before_signal, skill.min_confidence)},
            "signals": per_signal,
        }  # fmt: skip
    return report


def _show(console: Console, report: dict[str, Any], target: float) -> None:
    for name, figures in report.items():
        title = (f"{name} (SLM right on held-out {figures['slm_right_heldout']:.0%}, "
                 f"forced tokens {figures['forced_token_share']:.0%})")  # fmt: skip
        table = Table(f"{name}: signal", "AUROC cal", "AUROC held", f"floor @{target:.0%}", "held coverage",
                      "held precision", "accepted wrong", title=title)  # fmt: skip
        before, rule = figures["before"]["heldout"], figures["before"]
        table.add_row(f"before ({rule['signal']} >= {rule['floor']})", "", "", "", f"{before['coverage']:.1%}",
                      _pct(before["precision"]), str(before["accepted_wrong"]))  # fmt: skip
        for signal, s in figures["signals"].items():
            held = s["heldout"]
            table.add_row(signal, _num(s["auroc_calibration"]), _num(s["auroc_heldout"]),
                          "none" if s["floor"] is None else f"{s['floor']:.4f}", f"{held['coverage']:.1%}",
                          _pct(held["precision"]), str(held["accepted_wrong"]))  # fmt: skip
        console.print(table)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--limit", type=int, default=0, help="at most this many inputs per split (0: all)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/confidence.json")
    args = parser.parse_args()
    console = Console()
    started = time.time()
    rows = asyncio.run(_collect(args, console))
    report = _analyse(rows, args.target)
    _show(console, report, args.target)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(["python", *sys.argv]), "wall_s": round(time.time() - started, 1),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "samples": args.samples, "temperature": args.temperature, "target": args.target,
        "report": report, "rows": rows,
    }, indent=1, default=str) + "\n")  # fmt: skip
    console.print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
