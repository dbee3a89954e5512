"""Every error slmflow raises, under one root.

```
SlmflowError
├── UsageError                  the caller must change something (exit code 2 in the CLI)
│   ├── InvalidInput            input fails a graph's or skill's schema
│   │   └── InputTooLarge       an input, metadata or key over its size limit (SLMFLOW_MAX_*)
│   ├── UnknownGraph            (also KeyError) no graph of that name in the project
│   ├── UnknownSkill            (also KeyError)
│   ├── UnknownTool             (also KeyError) a skill grants a tool nobody registered
│   ├── ProjectError            project file missing or broken, graph module fails to import
│   ├── SettingsError           a setting has a bad value
│   ├── IdempotencyConflict     an idempotency key reused with another graph or input
│   └── EndpointUnreachable     nothing answers at a configured endpoint (model server, Redis)
│       └── StoreUnavailable    the job store (Redis) or checkpoints (Postgres) failed mid-run:
│                               transient for a worker (the job is given back, never failed)
├── ModelError                  a model endpoint failed a call (status_code, model)
│   ├── ModelUnavailable        connection refused, 5xx after retries
│   └── ModelTimeout            no answer within the request timeout
├── ToolError                   a tool call was refused or failed
│   ├── ToolNotGranted          the model asked for a tool its skill may not use
│   ├── InvalidToolArguments    arguments fail the tool's schema
│   ├── ToolTimeout
│   ├── ToolFailed              the tool ran and raised
│   └── ToolOutcomeUnknown      a non-idempotent call was interrupted: it may or may not have run
└── JobError
    ├── JobNotFound
    ├── JobFailed
    ├── JobCancelled
    ├── JobNeedsReview          the job waits for a human answer (`Job.review`)
    ├── JobAwaitingApproval     the job waits for a proposed tool call to be approved (`Job.approve`)
    ├── JobTimeout              (also TimeoutError) still not finished when the caller stopped waiting
    └── StepFailed              a step no tier could answer, declared `on_failure="fail"`
```

Each error is built from JSON values only (`message` plus keyword context), so it survives a
trip through Celery's JSON encoding: `SlmflowError.from_dict(err.to_dict())` rebuilds it.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "EndpointUnreachable",
    "IdempotencyConflict",
    "InputTooLarge",
    "InvalidInput",
    "InvalidToolArguments",
    "JobAwaitingApproval",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNeedsReview",
    "JobNotFound",
    "JobTimeout",
    "ModelError",
    "ModelTimeout",
    "ModelUnavailable",
    "ProjectError",
    "SettingsError",
    "SlmflowError",
    "StepFailed",
    "StoreUnavailable",
    "ToolError",
    "ToolFailed",
    "ToolNotGranted",
    "ToolOutcomeUnknown",
    "ToolTimeout",
    "UnknownGraph",
    "UnknownSkill",
    "UnknownTool",
    "UsageError",
]


class SlmflowError(Exception):
    """Root of every slmflow error. `context` holds JSON values: job_id, skill, trace_id, ..."""

    _registry: ClassVar[dict[str, type[SlmflowError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only the framework's own errors rebuild by name: a project's `FooError` cannot shadow one.
        if cls.__module__ == __name__:
            SlmflowError._registry[cls.__name__] = cls

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form of this error."""
        return {"type": type(self).__name__, "message": self.message, "context": self.context}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlmflowError:
        """Rebuild an error written by `to_dict` (unknown types come back as `SlmflowError`)."""
        error_type = cls._registry.get(data.get("type", ""), SlmflowError)
        return error_type(data["message"], **data.get("context", {}))


SlmflowError._registry["SlmflowError"] = SlmflowError


class UsageError(SlmflowError):
    """The caller has to change something: an input, a name, a setting, a file."""


class InvalidInput(UsageError):
    """An input does not match the schema it is checked against."""


class UnknownGraph(UsageError, KeyError):
    """No graph of that name in the project."""


class UnknownSkill(UsageError, KeyError):
    """No skill of that name."""


class UnknownTool(UsageError, KeyError):
    """No tool of that name in the registry."""


class ProjectError(UsageError):
    """The project file is missing or broken, or one of its graphs fails to load."""


class SettingsError(UsageError):
    """A setting has a value slmflow cannot use."""


class IdempotencyConflict(UsageError):
    """An idempotency key already names a job of another graph or with another input."""


class InputTooLarge(InvalidInput):
    """An input, its metadata or its idempotency key is over its size limit."""


class EndpointUnreachable(UsageError):
    """Nothing answers at a configured endpoint (a model server, Redis): fix the URL or start it."""


class StoreUnavailable(EndpointUnreachable):
    """The job store or the checkpoint store failed; in a worker this is transient, not the job's fault."""


class ModelError(SlmflowError):
    """A model endpoint failed a call; `context` has `model` and `status_code` when known."""


class ModelUnavailable(ModelError):
    """The endpoint refused the connection or kept answering 5xx."""


class ModelTimeout(ModelError):
    """The endpoint did not answer within the request timeout."""


class ToolError(SlmflowError):
    """A tool call was refused before dispatch or failed when it ran."""


class ToolNotGranted(ToolError):
    """The model asked for a tool its skill is not granted; the call was never run."""


class InvalidToolArguments(ToolError):
    """The arguments fail the tool's schema; the call was never run."""


class ToolTimeout(ToolError):
    """The tool did not finish within its timeout."""


class ToolFailed(ToolError):
    """The tool ran and raised."""


class ToolOutcomeUnknown(ToolError):
    """A call of a non-idempotent tool was interrupted mid-run: it is never re-run blindly.

    `context` holds the call's `key`, `tool` and `arguments`; the job pauses for review.
    """


class JobError(SlmflowError):
    """A job could not be found or did not succeed."""


class JobNotFound(JobError, KeyError):
    """No job with that id."""


class JobFailed(JobError):
    """The job ended `failed`."""


class JobCancelled(JobError):
    """The job was cancelled."""


class JobNeedsReview(JobError):
    """No tier could answer a step: the job waits for `Job.review(answer)`."""


class JobTimeout(JobError, TimeoutError):
    """The job had not ended when the caller's wait ran out (it goes on running)."""


class JobAwaitingApproval(JobError):
    """A step proposed tool calls that need approval: the job waits for `Job.approve(...)`."""


class StepFailed(JobError):
    """No tier could answer a step whose node says `on_failure="fail"`: the job ends `failed`.

    `context` holds the `step`, its `skill` and the escalation `reasons`.
    """
