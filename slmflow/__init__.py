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
from slmflow.events import Event
from slmflow.fleet.records import JobRecord
from slmflow.graphs import GraphSpec, JobContext, JobState
from slmflow.jobs import JobResult, JobStatus, run_job
from slmflow.models import Endpoint, Endpoints
from slmflow.nodes import Decision, Goto, ask_human, call_tool, propose_calls, skill_node
from slmflow.results import EscalationReason, SkillResult
from slmflow.settings import Settings
from slmflow.skills import Label, Narrow, Object, Skill, ToolCalls
from slmflow.tools import ToolContext, ToolRegistry, declare_tool, idempotent, needs_approval

__all__ = [
    # SDK: submit jobs and follow them (a fleet's Client, or run_job in-process)
    "AsyncClient",
    "AsyncJob",
    "Client",
    "Event",
    "GraphInfo",
    "Job",
    "JobRecord",
    "JobResult",
    "JobStatus",
    "Settings",
    "run_job",
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
