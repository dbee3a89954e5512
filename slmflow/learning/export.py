"""`slmflow distill export`: a skill's recorded runs as chat-format SFT records, split and de-duplicated.

Kept: answers a reviewer gave, LLM answers that passed the skill's checks, and (when asked) SLM
answers that passed with at least a given confidence. One record per distinct input: a reviewer's
answer wins over the LLM's, the LLM's over the SLM's, and a later answer over an earlier one.
The split is by a hash of the (redacted) prompt, so an input is in the same split in every export.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from slmflow.errors import InvalidInput
from slmflow.learning.store import RunRecord
from slmflow.skills import Label, Object, Skill

__all__ = ["ExportReport", "export_records", "to_chat"]

_RANK = {"human": 3, "llm": 2, "slm": 1}


class ExportReport(BaseModel):
    """What an export wrote."""

    skill: str
    out: str
    runs: int
    kept: int
    train: int
    validation: int
    by_source: dict[str, int]
    rationales: int


def _assistant(skill: Skill, answer: Any) -> dict[str, Any]:
    if isinstance(skill.output, Label):
        return {"role": "assistant", "content": str(answer)}
    if isinstance(skill.output, Object):
        return {"role": "assistant", "content": json.dumps(answer, separators=(",", ":"))}
    calls = [
        {"type": "function", "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))}}
        for c in answer
    ]
    return {"role": "assistant", "content": None, "tool_calls": calls}


def to_chat(skill: Skill, run: RunRecord) -> dict[str, Any]:
    """One run as a chat record: the prompt messages and the kept answer (tools for tool skills)."""
    record: dict[str, Any] = {
        "skill": skill.name,
        "source": run.source,
        "messages": [*run.messages, _assistant(skill, run.answer)],
    }
    if run.tools:
        record["tools"] = run.tools
    return record


def _selected(runs: Iterable[RunRecord], include_slm: bool, min_confidence: float) -> dict[str, RunRecord]:
    chosen: dict[str, RunRecord] = {}
    for run in runs:  # oldest first: a later answer of the same rank replaces an earlier one
        if run.status != "ok" or run.source is None or run.answer is None:
            continue
        if run.source == "slm" and (not include_slm or (run.confidence or 0.0) < min_confidence):
            continue
        # Keyed by the prompt as stored (redacted): two inputs that differ only in an email are one example.
        key = hashlib.sha256(json.dumps(run.messages, sort_keys=True).encode()).hexdigest()
        held = chosen.get(key)
        if held is None or _RANK[run.source] >= _RANK[held.source or "slm"]:
            chosen[key] = run
    return chosen


def export_records(
    skill: Skill,
    runs: Iterable[RunRecord],
    out: Path,
    *,
    include_slm: bool = False,
    min_confidence: float = 0.9,
    validation_fraction: float = 0.1,
    rationales: bool = False,
) -> ExportReport:
    """Write the training records of `skill` to `out` (JSONL with a `split` field)."""
    runs = list(runs)
    chosen = _selected(runs, include_slm, min_confidence)
    lines, by_source, splits, with_rationale = [], dict[str, int](), {"train": 0, "validation": 0}, 0
    for key in sorted(chosen):
        run = chosen[key]
        split = "validation" if int(key[:8], 16) / 0xFFFFFFFF < validation_fraction else "train"
        record = {**to_chat(skill, run), "split": split}
        lines.append(json.dumps(record))
        splits[split] += 1
        by_source[run.source or "?"] = by_source.get(run.source or "?", 0) + 1
        if rationales and run.rationale and split == "train":
            # Distilling step by step: the rationale is a second task on the same input.
            explain = {
                "role": "user",
                "content": f"{run.messages[-1]['content']}\n\nExplain the answer in one sentence.",
            }
            lines.append(json.dumps({
                "skill": skill.name, "source": run.source, "split": "train", "task": "rationale",
                "messages": [*run.messages[:-1], explain, {"role": "assistant", "content": run.rationale}],
            }))  # fmt: skip
            with_rationale += 1
    if out.is_dir():
        raise InvalidInput(f"--out {out} is a directory: give the JSONL file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{line}\n" for line in lines))
    return ExportReport(
        skill=skill.name,
        out=str(out),
        runs=len(runs),
        kept=len(chosen),
        train=splits["train"],
        validation=splits["validation"],
        by_source=by_source,
        rationales=with_rationale,
    )
