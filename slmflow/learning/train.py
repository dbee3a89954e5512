"""LoRA fine-tuning of a skill's base model on an exported dataset (peft + transformers, CPU).

The examples are the chat-format records of `export`: prompt messages (and tools) rendered with the
same chat template the server uses, the loss on the answer tokens only. A skill's examples share a
long prefix (the system prompt: instructions, labels or tools) that is most of every sequence, so a
step runs that shared prefix once, without gradient, and only the rest of each example with it:
about five times less work per example on a CPU than full sequences (the adapter still applies to
the prefix; only the gradient through it is dropped).

The output directory is a PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`) that
vLLM loads with `--lora-modules NAME=DIR` or `/v1/load_lora_adapter`, plus `slmflow-adapter.json`
with what it was trained on and how.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from slmflow.errors import InvalidInput, SettingsError

__all__ = ["TrainConfig", "TrainReport", "read_dataset", "train_adapter"]

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_INFO = "slmflow-adapter.json"


class TrainConfig(BaseModel):
    """How an adapter is trained."""

    epochs: int = Field(default=3, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=8, ge=1)
    rank: int = Field(default=8, ge=1, le=64)
    alpha: int = Field(default=16, ge=1)
    max_length: int = Field(default=2048, ge=16)
    seed: int = 0


class TrainReport(BaseModel):
    """What a training run did; also written to the adapter's `slmflow-adapter.json`."""

    skill: str
    base_model: str
    data: str
    data_sha256: str
    train_examples: int
    validation_examples: int
    config: TrainConfig
    steps: int
    train_loss: float
    validation_loss: float | None
    shared_prefix_tokens: int
    seconds: float
    created_at: float = Field(default_factory=time.time)


Progress = Callable[[int, int, float], None]
"""Called after each optimizer step with (step, total steps, loss)."""


def read_dataset(path: Path) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The skill and the train and validation records of an exported JSONL file."""
    if not path.is_file():
        raise InvalidInput(f"no dataset at {path}: export one with `slmflow distill export SKILL --out {path}`")
    train: list[dict[str, Any]] = []
    validation: list[dict[str, Any]] = []
    skills: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            messages = record["messages"]
            assert isinstance(messages, list) and messages[-1]["role"] == "assistant"
        except (ValueError, KeyError, AssertionError, TypeError, IndexError):
            raise InvalidInput(
                f"{path}:{number} is not a chat record ending in an assistant message: re-export the dataset"
            ) from None
        skills.add(str(record.get("skill", "")))
        (validation if record.get("split") == "validation" else train).append(record)
    if not train:
        raise InvalidInput(f"{path} has no training records: record more escalations, then export again")
    if len(skills) != 1:
        raise InvalidInput(f"{path} mixes skills {sorted(skills)}: train one adapter per skill")
    return skills.pop(), train, validation


@dataclass
class _Example:
    ids: list[int]
    prompt_length: int


def _encode(tokenizer: Any, record: dict[str, Any], max_length: int) -> _Example:
    messages = record["messages"]
    tools = record.get("tools") or None
    prompt = tokenizer.apply_chat_template(messages[:-1], tools=tools, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    if not full.startswith(prompt):
        raise SettingsError("the chat template renders the prompt differently with the answer: cannot mask it")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + answer_ids)[-max_length:]
    return _Example(ids, max(1, len(ids) - len(answer_ids)))


def _shared_prefix(examples: Sequence[_Example]) -> int:
    """Tokens every example starts with, leaving each at least one prompt token of its own."""
    first = examples[0].ids
    length = min(e.prompt_length for e in examples) - 1
    for example in examples[1:]:
        length = min(
            length, next((i for i, (a, b) in enumerate(zip(first, example.ids, strict=False)) if a != b), length)
        )
    return max(0, length)


def _batch_loss(model: Any, batch: Sequence[_Example], torch: Any) -> Any:
    """Mean loss over the answer tokens of a batch, the shared prefix run once without gradient."""
    shared = _shared_prefix(batch)
    cache = None
    if shared:
        with torch.no_grad():
            cache = model(input_ids=torch.tensor([batch[0].ids[:shared]]), use_cache=True).past_key_values
        cache.batch_repeat_interleave(len(batch))
    width = max(len(e.ids) for e in batch) - shared
    input_ids = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attention = torch.zeros((len(batch), shared + width), dtype=torch.long)
    attention[:, :shared] = 1
    for row, example in enumerate(batch):
        rest = example.ids[shared:]
        input_ids[row, : len(rest)] = torch.tensor(rest)
        attention[row, shared : shared + len(rest)] = 1
        answer_from = example.prompt_length - shared
        labels[row, answer_from : len(rest)] = torch.tensor(rest[answer_from:])
    output = model(input_ids=input_ids, attention_mask=attention, past_key_values=cache, labels=labels, use_cache=False)
    return output.loss


def train_adapter(
    data: Path,
    out: Path,
    base_model: Path,
    *,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    skill: str | None = None,
) -> TrainReport:
    """Train a LoRA adapter on `data` (an exported dataset) over `base_model`; write it to `out`."""
    config = config or TrainConfig()
    data_skill, train_records, validation_records = read_dataset(data)
    if skill is not None and skill != data_skill:
        raise InvalidInput(f"{data} holds examples of skill {data_skill!r}, not {skill!r}")
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"--out {out} is a file: give a folder for the adapter")
    if not (base_model / "config.json").exists():
        raise SettingsError(f"no base model at {base_model}: run `slmflow models prepare` first")
    # Imported here: torch, transformers and peft take seconds to import and only training needs them.
    try:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise SettingsError(f"training needs the `train` extra (pip install -e '.[train]'): {exc}") from None

    started = time.perf_counter()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    train = [_encode(tokenizer, r, config.max_length) for r in train_records]
    validation = [_encode(tokenizer, r, config.max_length) for r in validation_records]
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    lora = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, target_modules=list(TARGET_MODULES),
        task_type="CAUSAL_LM",
    )  # fmt: skip
    peft_model: Any = get_peft_model(model, lora)
    model = peft_model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    per_epoch = math.ceil(len(train) / config.batch_size)
    total = per_epoch * config.epochs
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    order = list(range(len(train)))
    step, recent = 0, list[float]()
    model.train()
    for _ in range(config.epochs):
        random.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            loss = _batch_loss(model, [train[i] for i in order[start : start + config.batch_size]], torch)
            loss.backward()
            value = loss.item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            recent = [*recent[-(per_epoch - 1) :], value] if per_epoch > 1 else [value]
            if progress is not None:
                progress(step, total, value)
    validation_loss = _evaluate(model, validation, config.batch_size, torch) if validation else None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    report = TrainReport(
        skill=data_skill,
        base_model=str(base_model),
        data=str(data),
        data_sha256=hashlib.sha256(data.read_bytes()).hexdigest(),
        train_examples=len(train),
        validation_examples=len(validation),
        config=config,
        steps=total,
        train_loss=sum(recent) / len(recent),
        validation_loss=validation_loss,
        shared_prefix_tokens=_shared_prefix(train),
        seconds=time.perf_counter() - started,
    )
    (out / ADAPTER_INFO).write_text(report.model_dump_json(indent=2))
    return report


def _evaluate(model: Any, examples: Sequence[_Example], batch_size: int, torch: Any) -> float:
    model.eval()
    losses: list[float] = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            losses.append(float(_batch_loss(model, batch, torch)) * len(batch))
    model.train()
    return sum(losses) / len(examples)
