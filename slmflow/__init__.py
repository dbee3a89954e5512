"""slmflow: agentic jobs on small language models, escalated to a large one only when they fail.

The names here are the public API; everything else is importable from its module. They load on
first use (PEP 562): `import slmflow` costs nothing but the errors, and a name pulls in only its own
module's dependencies (an SDK client never imports LangGraph's graph runtime or the model client).
"""

import importlib as _importlib
import os as _os
from typing import TYPE_CHECKING, Any

# Checkpoints deserialize only safe types unless the environment says otherwise. Set before
# LangGraph is imported: it reads the variable once, at import.
_os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")

from slmflow.errors import (
    EndpointUnreachable,
    IdempotencyConflict,
    InputTooLarge,
    InvalidInput,
    InvalidToolArguments,
    JobAwaitingApproval,
    JobCancelled,
    JobError,
    JobFailed,
    JobNeedsReview,
    JobNotFound,
    JobTimeout,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    ProjectError,
    SettingsError,
    SlmflowError,
    StepFailed,
    StoreUnavailable,
    ToolError,
    ToolFailed,
    ToolNotGranted,
    ToolOutcomeUnknown,
    ToolTimeout,
    UnknownGraph,
    UnknownSkill,
    UnknownTool,
    UsageError,
)

if TYPE_CHECKING:
    from slmflow.answers import Tier
    from slmflow.cascade import run_skill
    from slmflow.client import AsyncClient, AsyncJob, Client, GraphInfo, Job
    from slmflow.events import Event, JobFinished, JobStarted, StepFinished, StepStarted, ToolCalled
    from slmflow.graphs import GraphSpec, JobContext, JobState
    from slmflow.jobs import run_job
    from slmflow.models import Endpoint, Endpoints
    from slmflow.nodes import Decision, Goto, ask_human, call_tool, propose_calls, skill_node
    from slmflow.outcomes import (
        Approval,
        AskedReview,
        JobFailure,
        JobRecord,
        JobResult,
        JobStatus,
        JobUsage,
        OutcomeUnknownReview,
        ProposedCall,
        Review,
        UnansweredReview,
    )
    from slmflow.results import EscalationReason, SkillResult
    from slmflow.settings import Settings
    from slmflow.skills import Label, Narrow, Object, Skill, ToolCalls
    from slmflow.tools import ToolContext, ToolRegistry, declare_tool, idempotent, needs_approval

_LAZY = {
    "Approval": "slmflow.outcomes",
    "AskedReview": "slmflow.outcomes",
    "AsyncClient": "slmflow.client",
    "AsyncJob": "slmflow.client",
    "Client": "slmflow.client",
    "Decision": "slmflow.nodes",
    "Endpoint": "slmflow.models",
    "Endpoints": "slmflow.models",
    "EscalationReason": "slmflow.results",
    "Event": "slmflow.events",
    "Goto": "slmflow.nodes",
    "GraphInfo": "slmflow.client",
    "GraphSpec": "slmflow.graphs",
    "Job": "slmflow.client",
    "JobContext": "slmflow.graphs",
    "JobFailure": "slmflow.outcomes",
    "JobFinished": "slmflow.events",
    "JobRecord": "slmflow.outcomes",
    "JobResult": "slmflow.outcomes",
    "JobStarted": "slmflow.events",
    "JobState": "slmflow.graphs",
    "JobStatus": "slmflow.outcomes",
    "JobUsage": "slmflow.outcomes",
    "Label": "slmflow.skills",
    "Narrow": "slmflow.skills",
    "Object": "slmflow.skills",
    "OutcomeUnknownReview": "slmflow.outcomes",
    "ProposedCall": "slmflow.outcomes",
    "Review": "slmflow.outcomes",
    "Settings": "slmflow.settings",
    "Skill": "slmflow.skills",
    "SkillResult": "slmflow.results",
    "StepFinished": "slmflow.events",
    "StepStarted": "slmflow.events",
    "Tier": "slmflow.answers",
    "ToolCalled": "slmflow.events",
    "ToolCalls": "slmflow.skills",
    "ToolContext": "slmflow.tools",
    "ToolRegistry": "slmflow.tools",
    "UnansweredReview": "slmflow.outcomes",
    "ask_human": "slmflow.nodes",
    "call_tool": "slmflow.nodes",
    "declare_tool": "slmflow.tools",
    "idempotent": "slmflow.tools",
    "needs_approval": "slmflow.tools",
    "propose_calls": "slmflow.nodes",
    "run_job": "slmflow.jobs",
    "run_skill": "slmflow.cascade",
    "skill_node": "slmflow.nodes",
}
"""Each public name that loads on first use, and the module that defines it."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'slmflow' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    # SDK: submit jobs and follow them (a fleet's Client, or run_job in-process)
    "AsyncClient",
    "AsyncJob",
    "Client",
    "GraphInfo",
    "Job",
    "Settings",
    "run_job",
    # SDK: what a job reports (its outcome, and its events typed by kind)
    "Approval",
    "AskedReview",
    "Event",
    "JobFailure",
    "JobFinished",
    "JobRecord",
    "JobResult",
    "JobStarted",
    "JobStatus",
    "JobUsage",
    "OutcomeUnknownReview",
    "ProposedCall",
    "Review",
    "StepFinished",
    "StepStarted",
    "ToolCalled",
    "UnansweredReview",
    # Authoring: skills, tools and graphs of a project
    "Decision",
    "Endpoint",
    "Endpoints",
    "EscalationReason",
    "Goto",
    "GraphSpec",
    "JobContext",
    "JobState",
    "Label",
    "Narrow",
    "Object",
    "Skill",
    "SkillResult",
    "Tier",
    "ToolCalls",
    "ToolContext",
    "ToolRegistry",
    "ask_human",
    "call_tool",
    "declare_tool",
    "idempotent",
    "needs_approval",
    "propose_calls",
    "run_skill",
    "skill_node",
    # Errors (slmflow.errors): every one slmflow raises
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
