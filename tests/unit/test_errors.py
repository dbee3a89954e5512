"""The error tree: one root, the branches the module docstring draws, JSON round-trips."""

from __future__ import annotations

import json

import pytest

from slmflow import errors
from slmflow.errors import (
    JobError,
    JobNotFound,
    ModelError,
    SlmflowError,
    ToolError,
    UnknownGraph,
    UnknownSkill,
    UnknownTool,
    UsageError,
)

ALL_ERRORS = [getattr(errors, name) for name in errors.__all__]

BRANCHES = {
    UsageError: [
        "InvalidInput",
        "InputTooLarge",
        "UnknownGraph",
        "UnknownSkill",
        "UnknownTool",
        "ProjectError",
        "SettingsError",
        "IdempotencyConflict",
        "EndpointUnreachable",
        "StoreUnavailable",
    ],
    ModelError: ["ModelUnavailable", "ModelTimeout"],
    ToolError: ["ToolNotGranted", "InvalidToolArguments", "ToolTimeout", "ToolFailed", "ToolOutcomeUnknown"],
    JobError: [
        "JobNotFound",
        "JobFailed",
        "JobCancelled",
        "JobNeedsReview",
        "JobAwaitingApproval",
        "JobTimeout",
        "StepFailed",
    ],
}


@pytest.mark.parametrize("error_type", ALL_ERRORS, ids=lambda t: t.__name__)
def test_every_error_is_a_slmflow_error(error_type: type[Exception]) -> None:
    assert issubclass(error_type, SlmflowError)


@pytest.mark.parametrize("branch", list(BRANCHES), ids=lambda t: t.__name__)
def test_errors_sit_under_the_branch_the_docstring_draws(branch: type[SlmflowError]) -> None:
    for name in BRANCHES[branch]:
        assert issubclass(getattr(errors, name), branch), name
    others = [b for b in BRANCHES if b is not branch]
    assert not any(issubclass(branch, other) for other in others)


def test_docstring_tree_names_every_error() -> None:
    assert errors.__doc__ is not None
    drawn = {name for names in BRANCHES.values() for name in names}
    assert drawn | {b.__name__ for b in BRANCHES} | {"SlmflowError"} == set(errors.__all__)
    for name in errors.__all__:
        assert name in errors.__doc__


@pytest.mark.parametrize("error_type", [UnknownGraph, UnknownSkill, UnknownTool, JobNotFound])
def test_registry_misses_are_also_key_errors(error_type: type[SlmflowError]) -> None:
    assert issubclass(error_type, KeyError)
    with pytest.raises(KeyError):
        raise error_type("missing")


@pytest.mark.parametrize("error_type", ALL_ERRORS, ids=lambda t: t.__name__)
def test_error_survives_a_json_round_trip(error_type: type[SlmflowError]) -> None:
    original = error_type("it broke", job_id="job-1", skill="classify", trace_id="00-abc-01")
    rebuilt = SlmflowError.from_dict(json.loads(json.dumps(original.to_dict())))
    assert type(rebuilt) is error_type
    assert rebuilt.message == "it broke"
    assert str(rebuilt) == "it broke"
    assert rebuilt.context == {"job_id": "job-1", "skill": "classify", "trace_id": "00-abc-01"}


def test_unknown_error_type_comes_back_as_the_root() -> None:
    rebuilt = SlmflowError.from_dict({"type": "NotAnError", "message": "m", "context": {}})
    assert type(rebuilt) is SlmflowError


@pytest.mark.parametrize("error_type", [UnknownGraph, UnknownSkill, UnknownTool, JobNotFound])
def test_key_error_subclass_str_is_the_plain_message(error_type: type[SlmflowError]) -> None:
    assert str(error_type("no graph named 'x'")) == "no graph named 'x'"
