"""slmflow: agentic jobs on small language models, escalated to a large one only when they fail.

The names here are the public API; everything else is importable from its module.
"""

import os as _os

# Checkpoints deserialize only safe types unless the environment says otherwise. Set before
# LangGraph is imported: it reads the variable once, at import.
_os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")

from slmflow.answers import Tier
from slmflow.cascade import run_skill
from slmflow.client import AsyncClient, AsyncJob, Client, GraphInfo, Job
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
