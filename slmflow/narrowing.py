"""Narrowing a skill's answer to one input's data (`Skill.narrow`).

The narrowed skill and tool registry replace the declared ones for that run: the request's
constrained decoding (a smaller `choice`, an `enum` in the object's or the tool arguments' schema)
and the judging of every tier's answer both read them, so an answer outside the job's own data is
neither decoded nor kept. The narrowing is kept with the run (result, training record).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from slmflow.errors import UsageError
from slmflow.skills import Label, Narrow, Object, Skill, ToolCalls
from slmflow.tools import ToolRegistry

__all__ = ["Narrowed", "narrow"]


@dataclass(frozen=True)
class Narrowed:
    """A skill and registry narrowed for one input; `empty` names what has no allowed value left."""

    skill: Skill
    tools: ToolRegistry | None
    applied: Narrow | None = None
    empty: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any] | None:
        """The narrowing as JSON (kept with the run), or None when nothing was narrowed."""
        return self.applied.model_dump(mode="json", exclude_defaults=True) if self.applied else None


def narrow(skill: Skill, values: Mapping[str, Any], tools: ToolRegistry | None) -> Narrowed:
    """`skill` and `tools` narrowed by `skill.narrow(values)`; a narrowing that widens the declared
    constraint (a label, field, tool or argument it does not have) is the project's bug: `UsageError`."""
    applied = skill.narrow(values) if skill.narrow is not None else None
    if applied is None:
        return Narrowed(skill, tools)
    if not isinstance(applied, Narrow):
        raise UsageError(f"skill {skill.name!r}: narrow() must return a slmflow.Narrow or None, "
                         f"not {type(applied).__name__}")  # fmt: skip
    output, empty = skill.output, list[str]()
    if applied.labels is not None:
        output, empty = _labels(skill, output, applied.labels)
    if applied.fields:
        output, empty = _fields(skill, output, applied.fields)
    if applied.arguments:
        tools, empty = _arguments(skill, output, applied.arguments, tools)
    narrowed = skill.model_copy(update={"output": output})
    return Narrowed(narrowed, tools, applied, tuple(empty))


def _labels(skill: Skill, output: Any, labels: tuple[str, ...]) -> tuple[Any, list[str]]:
    if not isinstance(output, Label):
        raise UsageError(f"skill {skill.name!r} narrows labels but its output is {output.kind}")
    unknown = [label for label in labels if label not in output.labels]
    if unknown:
        raise UsageError(f"skill {skill.name!r}: narrow() allowed labels it does not have: {unknown}")
    kept = tuple(dict.fromkeys(labels))
    # One label is still a choice the model makes (and is judged on); none leaves nothing to answer.
    return Label.model_construct(kind="label", labels=kept), [] if kept else ["labels"]


def _fields(skill: Skill, output: Any, fields: Mapping[str, tuple[Any, ...]]) -> tuple[Any, list[str]]:
    if not isinstance(output, Object):
        raise UsageError(f"skill {skill.name!r} narrows fields but its output is {output.kind}")
    unknown = [name for name in fields if name not in output.model.model_fields]
    if unknown:
        raise UsageError(f"skill {skill.name!r}: narrow() names fields {output.model.__name__} lacks: {unknown}")
    enums = tuple((name, tuple(dict.fromkeys(values))) for name, values in sorted(fields.items()))
    return output.model_copy(update={"enums": enums}), [name for name, values in enums if not values]


def _arguments(
    skill: Skill, output: Any, arguments: Mapping[str, Mapping[str, tuple[Any, ...]]], tools: ToolRegistry | None
) -> tuple[ToolRegistry | None, list[str]]:
    if not isinstance(output, ToolCalls) or tools is None:
        raise UsageError(f"skill {skill.name!r} narrows tool arguments but its output is {output.kind}")
    specs = {name: tools.get(name) for name in tools.names()}
    empty = []
    for tool, allowed in arguments.items():
        if tool not in output.tools:
            raise UsageError(f"skill {skill.name!r}: narrow() names tool {tool!r}, which is not granted to it")
        spec = specs[tool]
        properties = dict(spec.parameters.get("properties", {}))
        for argument, values in allowed.items():
            if argument not in properties:
                raise UsageError(f"skill {skill.name!r}: tool {tool!r} has no argument {argument!r}")
            kept = list(dict.fromkeys(values))
            properties[argument] = {**properties[argument], "enum": kept}
            if not kept:
                empty.append(f"{tool}.{argument}")
        specs[tool] = replace(spec, parameters={**spec.parameters, "properties": properties})
    return ToolRegistry.of(specs.values()), empty
