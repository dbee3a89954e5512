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
    JobCancelled,
    JobError,
    JobFailed,
    JobNeedsReview,
    JobNotFound,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    ProjectError,
    SettingsError,
    SlmflowError,
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
from slmflow.graphs import GraphSpec, JobContext, JobState, skill_node
from slmflow.jobs import JobResult, JobStatus, run_job
from slmflow.models import Endpoint, Endpoints
from slmflow.results import EscalationReason, SkillResult
from slmflow.settings import Settings
from slmflow.skills import Label, Object, Skill, ToolCalls
from slmflow.tools import ToolContext, ToolRegistry, declare_tool, idempotent

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "Client",
    "Endpoint",
    "EndpointUnreachable",
    "Endpoints",
    "EscalationReason",
    "Event",
    "GraphInfo",
    "GraphSpec",
    "IdempotencyConflict",
    "InputTooLarge",
    "InvalidInput",
    "InvalidToolArguments",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobNeedsReview",
    "JobNotFound",
    "JobRecord",
    "JobResult",
    "JobState",
    "JobStatus",
    "Label",
    "ModelError",
    "ModelTimeout",
    "ModelUnavailable",
    "Object",
    "ProjectError",
    "Settings",
    "SettingsError",
    "Skill",
    "SkillResult",
    "SlmflowError",
    "StoreUnavailable",
    "Tier",
    "ToolCalls",
    "ToolContext",
    "ToolError",
    "ToolFailed",
    "ToolNotGranted",
    "ToolOutcomeUnknown",
    "ToolRegistry",
    "ToolTimeout",
    "UnknownGraph",
    "UnknownSkill",
    "UnknownTool",
    "UsageError",
    "declare_tool",
    "idempotent",
    "run_job",
    "run_skill",
    "skill_node",
]
