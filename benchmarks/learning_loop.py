"""The learning loop on the intent skill, before and after: the figures of the README's table.

The same steps as `tests/integration/test_learning_loop.py`, all through the `slmflow` CLI, timed:

1. `slmflow eval classify_intent --data examples/intents/train.jsonl --record`: the base SmolLM2
   answers the 176 training tickets; what it escalates, a scripted teacher LLM answers from the
   training labels; every run is recorded (redacted) in a fresh dataset store.
2. `slmflow distill export` then `slmflow distill train` (LoRA, CPU).
3. `slmflow distill load`, then `slmflow eval` of the base model and the adapter on the 66
   held-out tickets, with no LLM (the teacher never sees them), sliced by customer segment.

    python benchmarks/learning_loop.py [--epochs 3] [--seed 0] [--out benchmarks/results/learning_loop.json]
                                       [--ship adapters/classify_intent-v1]

The traffic runs on the base model (`--model`), whatever adapter the skill names. `--ship DIR`
copies the trained adapter to DIR (the reference project's shipped adapter) with the figures it
was trained and measured with in its `slmflow-adapter.json`.

Needs the local model server (started if not running) or SLMFLOW_SLM_BASE_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slmflow.learning.evaluate import read_cases  # noqa: E402
from slmflow.local_server import serve  # noqa: E402
from slmflow.settings import load_settings  # noqa: E402
from slmflow.testing import Reply, ScriptedServer  # noqa: E402

INTENTS = ROOT / "examples" / "intents"


def cli(*args: str, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "slmflow", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"slmflow {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - started
    return (json.loads(done.stdout) if "--json" in args else {}), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="training seed (example order, initial weights)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning_loop.json")
    parser.add_argument("--ship", type=Path, default=None, help="copy the adapter here, with its figures")
    args = parser.parse_args()
    settings = load_settings()
    slm_url = settings.slm_base_url or serve(settings).base_url
    work = Path(tempfile.mkdtemp(prefix="slmflow-loop-"))
    env = {"SLMFLOW_DATASET_URL": f"sqlite:///{work / 'dataset.db'}", "SLMFLOW_SLM_BASE_URL": slm_url}
    labels = {c.input["ticket"]: c.expected for c in read_cases(INTENTS / "train.jsonl")}
    asked: list[str] = []

    def teacher(body: dict[str, Any]) -> Reply:
        ticket = body["messages"][1]["content"]
        asked.append(ticket)
        return Reply(text=json.dumps({"label": labels[ticket]}), prompt_tokens=700, completion_tokens=8)

    seconds: dict[str, float] = {}
    with ScriptedServer({"teacher": teacher}) as server:
        traffic_env = {**env, "SLMFLOW_LLM_BASE_URL": server.base_url, "SLMFLOW_LLM_MODEL": "teacher"}
        traffic, seconds["traffic"] = cli("eval", "classify_intent", "--data", str(INTENTS / "train.jsonl"),
                                          "--model", settings.local_model, "--record", "--json",
                                          env=traffic_env)  # fmt: skip
    data = work / "classify_intent.jsonl"
    exported, seconds["export"] = cli("distill", "export", "classify_intent", "--out", str(data), "--json", env=env)
    name = f"classify_intent-{uuid.uuid4().hex[:6]}"
    adapter = work / "adapters" / name
    trained, seconds["train"] = cli("distill", "train", "classify_intent", "--data", str(data), "--out", str(adapter),
                                    "--epochs", str(args.epochs), "--seed", str(args.seed), "--json",
                                    env=env)  # fmt: skip
    _, seconds["load"] = cli("distill", "load", str(adapter), env=env)
    plot = args.out.with_suffix(".png")
    evaluation, seconds["eval"] = cli(
        "eval", "classify_intent", "--data", str(INTENTS / "heldout.jsonl"), "--model", settings.local_model,
        "--model", name, "--slice", "segment", "--plot", str(plot), "--json", env=env,
    )  # fmt: skip
    before, after = evaluation["reports"]
    results = {
        "teacher_calls": len(asked),
        "traffic": traffic["reports"][0],
        "export": exported,
        "train": trained,
        "heldout": {"base": before, "adapter": after},
        "seconds": seconds,
        "plot": str(plot.relative_to(ROOT)) if plot.is_relative_to(ROOT) else str(plot),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.ship is not None:
        ship(adapter, args.ship, trained, exported, before, after, args.seed)
    print("| on the 66 held-out tickets, no LLM | base SmolLM2-135M | + LoRA adapter |")
    print("|---|---|---|")
    for label, key, fmt in (("accuracy (kept answer right)", "accuracy", "{:.1%}"),
                            ("SLM answer right, kept or not", "slm_accuracy", "{:.1%}"),
                            ("escalation rate", "escalation_rate", "{:.1%}"),
                            ("latency p50", "latency_p50_s", "{:.2f} s"),
                            ("cost per 100 (escalations at LLM price)", "cost_per_100", "{:.4f}")):  # fmt: skip
        print(f"| {label} | {fmt.format(before[key])} | {fmt.format(after[key])} |")
    print(json.dumps(seconds))


def ship(adapter: Path, to: Path, trained: dict[str, Any], exported: dict[str, Any], before: dict[str, Any],
         after: dict[str, Any], seed: int) -> None:  # fmt: skip
    """Copy the adapter to `to`, its info file holding what it was trained on and how it measured."""
    if to.exists():
        shutil.rmtree(to)
    shutil.copytree(adapter, to)
    halve(to / "adapter_model.safetensors")
    (to / "README.md").unlink(missing_ok=True)  # peft's empty model card
    keys = ("accuracy", "slm_accuracy", "escalation_rate", "cases")
    info = {
        **trained,
        "base_model": "SmolLM2-135M-Instruct (float32, converted by `slmflow models prepare`)",
        "data": "escalations of examples/intents/train.jsonl on the base model, answered by a scripted teacher "
                "from the training labels (benchmarks/learning_loop.py)",
        "seed": seed,
        "weights": "float16 (trained in float32; halved for shipping, then calibrated as shipped)",
        "exported": {k: exported[k] for k in ("kept", "train", "validation")},
        "heldout_slm": {"base": {k: before[k] for k in keys}, "adapter": {k: after[k] for k in keys}},
    }  # fmt: skip
    (to / "slmflow-adapter.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"shipped {adapter.name} as {to}")


def halve(weights: Path) -> None:
    """Store the adapter's weights as float16: half the size, and vLLM casts them to the model's dtype."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file({k: v.to(torch.float16).contiguous() for k, v in tensors.items()}, weights, metadata={"format": "pt"})


if __name__ == "__main__":
    main()
