"""All of slmflow's settings, in one typed schema read from `SLMFLOW_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from slmflow.errors import SettingsError
from slmflow.redaction import mask_url

__all__ = ["Settings", "load_settings"]


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "slmflow"


class Settings(BaseSettings):
    """slmflow's settings; every field reads `SLMFLOW_<FIELD>` from the environment."""

    model_config = SettingsConfigDict(env_prefix="SLMFLOW_", extra="ignore", frozen=True)

    slm_base_url: str | None = None
    """OpenAI-compatible endpoint of the small models (a vLLM server). Unset: the local server."""
    slm_model: str | None = None
    """Model asked of the SLM endpoint when a skill names none. Unset: `local_model`."""
    slm_api_key: SecretStr = SecretStr("EMPTY")
    """API key for the SLM endpoint."""
    llm_base_url: str | None = None
    """OpenAI-compatible endpoint of the large model. Unset: no escalation, `needs_review`."""
    llm_model: str | None = None
    """Model name asked of the LLM endpoint."""
    llm_api_key: SecretStr = SecretStr("EMPTY")
    """API key for the LLM endpoint."""
    llm_dialect: Literal["vllm", "openai"] = "openai"
    """How to constrain LLM output: `openai` (response_format only) or `vllm` (structured_outputs)."""
    checkpoint_url: str = "memory"
    """Where LangGraph checkpoints go: `memory`, `sqlite:///path/to/file.db` or `postgresql://...`."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis for the fleet: Celery broker and results, job records, events, leases, catalog."""
    job_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    """How long job records, events and tool results are kept in Redis."""
    job_timeout_s: float = Field(default=900.0, gt=0)
    """Deadline of one run of a job on a worker (enforced in the task's own code)."""
    lease_ttl_s: float = Field(default=10.0, gt=0)
    """A running job's lease; renewed by heartbeat, so a dead worker's job is taken over after it."""
    max_job_attempts: int = Field(default=3, ge=1)
    """Runs in a row that made no progress (wrote no checkpoint) before a job is dead-lettered `failed`."""
    reconcile_after_s: float = Field(default=10.0, gt=0)
    """A `queued` or `running` job with no live lease and no message for this long is published again."""
    drain_s: float = Field(default=25.0, ge=0)
    """On SIGTERM a jobs worker finishes what it can within this, then hands the rest back (below
    Kubernetes' default 30 s grace period)."""
    health_port: int = Field(default=8081, ge=0, lt=65536)
    """Each worker serves /livez, /readyz and /metrics on this port (0: no endpoint); with
    `--processes N`, process i serves this port plus i."""
    metrics_port: int = Field(default=9100, gt=0, lt=65536)
    """`slmflow metrics` serves the fleet's demand (/metrics, /metrics.json) on this port."""
    max_input_bytes: int = Field(default=1024 * 1024, gt=0)
    """Largest job input accepted by `submit`, as UTF-8 JSON."""
    max_metadata_bytes: int = Field(default=64 * 1024, gt=0)
    """Largest job metadata accepted by `submit`, as UTF-8 JSON."""
    max_key_chars: int = Field(default=256, gt=0)
    """Longest idempotency key accepted by `submit`."""
    max_event_bytes: int = Field(default=64 * 1024, gt=0)
    """Largest event kept in a job's stream; a larger one keeps its kind and step, its data cut."""
    tool_queues: dict[str, str] = Field(default_factory=dict)
    """Celery queue per tool name (JSON), e.g. {"open_case": "slmflow.tools.crm"}; default `slmflow.tools`."""
    tool_time_limit_s: float = Field(default=300.0, gt=10)
    """Hard limit of a tool task on a prefork tools worker (each tool also enforces its own timeout)."""
    visibility_timeout_s: int = Field(default=7200, gt=0)
    """Redis visibility timeout; must exceed the job and tool hard time limits."""
    request_timeout: float = Field(default=60.0, gt=0)
    """Seconds a single model request may take before it counts as a timeout."""
    max_retries: int = Field(default=2, ge=0)
    """Retries of a model request on connection errors and 5xx (never on 4xx or timeouts)."""
    slm_price_per_1k_input: float = Field(default=0.00002, ge=0)
    """Estimated cost of 1k input tokens on the SLM tier (for usage and cost reports)."""
    slm_price_per_1k_output: float = Field(default=0.00004, ge=0)
    """Estimated cost of 1k output tokens on the SLM tier."""
    llm_price_per_1k_input: float = Field(default=0.0025, ge=0)
    """Estimated cost of 1k input tokens on the LLM tier."""
    llm_price_per_1k_output: float = Field(default=0.01, ge=0)
    """Estimated cost of 1k output tokens on the LLM tier."""
    capture_content: bool = False
    """Put prompts, completions and tool arguments on spans (emails and card numbers redacted)."""
    trace_url: str | None = None
    """Link to a trace in your backend, with `{trace_id}`: e.g. http://localhost:16686/trace/{trace_id}."""
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    """Where the local model, its server log and other caches live."""
    local_model: str = "smollm2-135m"
    """Name the local vLLM server serves the base model under."""
    local_port: int = Field(default=8765, gt=0, lt=65536)
    """Port of the local vLLM server on 127.0.0.1."""
    record: bool = False
    """Keep every skill run (redacted) in the dataset store: the training data of `slmflow distill`."""
    dataset_url: str | None = None
    """Dataset store: `sqlite:///FILE` or `postgresql://...`. Unset: `sqlite:///<cache_dir>/dataset.db`."""
    record_rationale: bool = False
    """With `record`, also ask the LLM for a one-sentence rationale of each answer it gives (one more call)."""
    adapters_dir: Path | None = None
    """LoRA adapters the local server serves, one folder each. Unset: `adapters/` in the project."""
    audit_rate: float | None = Field(default=None, ge=0, le=1)
    """Share of the SLM answers the cascade keeps that the LLM also answers, off the job's path, to
    measure precision online. Unset: 0.05 when an LLM is configured, else 0 (no audit)."""
    route_ttl_s: float = Field(default=5.0, ge=0)
    """How long a process trusts the skill-to-adapter routes it read from the dataset store."""
    promote_min_calls: int = Field(default=20, ge=1)
    """Shadow calls a candidate adapter needs before `slmflow distill promote` may switch to it."""
    promote_margin: float = Field(default=0.05, ge=0, le=1)
    """How much more of the shadow calls a candidate must keep (at its calibrated floor) than the current
    model keeps, to be promoted; its precision must meet the target as well."""
    project: Path | None = None
    """Project directory (holding `slmflow.toml` or `[tool.slmflow]`); default: the cwd."""

    @property
    def effective_audit_rate(self) -> float:
        """`audit_rate`, or its default: 5% of kept SLM answers when there is an LLM to ask, else none."""
        if self.audit_rate is not None:
            return self.audit_rate if self.llm_base_url else 0.0
        return 0.05 if self.llm_base_url else 0.0

    @field_validator("slm_base_url", "llm_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL ending in /v1, got {value!r}")
        return value

    @field_validator("dataset_url")
    @classmethod
    def _dataset_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(f"expected 'sqlite:///FILE' or 'postgresql://...', got {value!r}")
        return value

    @field_validator("checkpoint_url")
    @classmethod
    def _checkpoint_url(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(f"expected 'memory', 'sqlite:///FILE' or 'postgresql://...', got {value!r}")
        return value

    @model_validator(mode="after")
    def _timeouts_are_ordered(self) -> Settings:
        # HTTP timeout < job deadline < visibility timeout: else a live job is delivered twice.
        if not (self.request_timeout < self.job_timeout_s < self.visibility_timeout_s
                and self.tool_time_limit_s < self.visibility_timeout_s):  # fmt: skip
            raise ValueError(
                "expected SLMFLOW_REQUEST_TIMEOUT < SLMFLOW_JOB_TIMEOUT_S < SLMFLOW_VISIBILITY_TIMEOUT_S, got "
                f"{self.request_timeout} / {self.job_timeout_s} / {self.visibility_timeout_s}"
            )
        return self

    @property
    def dataset_store_url(self) -> str:
        """`dataset_url`, or the SQLite file in the cache directory."""
        return self.dataset_url or f"sqlite:///{self.cache_dir / 'dataset.db'}"

    @property
    def local_base_url(self) -> str:
        """Base URL of the local vLLM server."""
        return f"http://127.0.0.1:{self.local_port}/v1"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; a bad value is a `SettingsError` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "SLMFLOW_" + str(first["loc"][0]).upper() if first["loc"] else "SLMFLOW_*"
        raise SettingsError(mask_url(f"bad setting {name}: {first['msg']}")) from None
