"""Finding a project and loading its graphs, the way LangGraph's CLI finds `langgraph.json`.

A project file at the project's root names its graphs as `module:attribute`, either in
`slmflow.toml`:

```toml
[graphs]
support_triage = "graphs.support_triage:graph"
```

or under `[tool.slmflow.graphs]` in its `pyproject.toml`. The project root goes on `sys.path`, so
the project's own packages (`agents`, `tools`, `graphs`) import as they do in its tests.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from slmflow.errors import ProjectError, UnknownGraph, UnknownSkill
from slmflow.graphs import GraphSpec
from slmflow.skills import Skill

__all__ = ["Project", "find_project"]

_HOW_TO = (
    'add a slmflow.toml with a [graphs] table (name = "module:attribute"), '
    "or run from the project's directory / pass --project DIR / set SLMFLOW_PROJECT"
)


@dataclass(frozen=True)
class Project:
    """A project: its root, the file that declares it, and its graphs by name."""

    root: Path
    file: Path
    graphs: dict[str, str]

    def load_graph(self, name: str) -> GraphSpec:
        """Import the graph `name`; a missing name or a broken module is a clear error."""
        if name not in self.graphs:
            known = ", ".join(sorted(self.graphs)) or "none"
            raise UnknownGraph(f"no graph named {name!r} in {self.file} (graphs: {known})", graph=name)
        target = self.graphs[name]
        module_name, _, attribute = target.partition(":")
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ProjectError(
                f"graph {name!r} ({target}, declared in {self.file}) failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        spec = getattr(module, attribute or "graph", None)
        if not isinstance(spec, GraphSpec):
            raise ProjectError(f"{target} (declared in {self.file}) is {type(spec).__name__}, expected a GraphSpec")
        return spec

    def load_all(self) -> dict[str, GraphSpec]:
        """Every graph of the project, by name."""
        return {name: self.load_graph(name) for name in sorted(self.graphs)}

    def find_skill(self, name: str) -> tuple[Skill, GraphSpec]:
        """The skill `name` and the first graph that uses it (its tools are the skill's)."""
        specs = self.load_all()
        for spec in specs.values():
            for skill in spec.skills:
                if skill.name == name:
                    return skill, spec
        known = sorted({s.name for spec in specs.values() for s in spec.skills})
        raise UnknownSkill(
            f"no skill named {name!r} in the graphs of {self.file} (skills: {', '.join(known)})", skill=name
        )


def find_project(start: Path | None = None) -> Project:
    """The project at `start` (default: the cwd) or the nearest parent that declares one."""
    start = (start or Path.cwd()).resolve()
    if not start.is_dir():
        raise ProjectError(f"project directory {start} does not exist: {_HOW_TO}")
    for directory in (start, *start.parents):
        project = _read(directory)
        if project is not None:
            return project
    raise ProjectError(f"no slmflow project file in {start} or its parents: {_HOW_TO}")


def _read(directory: Path) -> Project | None:
    for file, table_path in (
        (directory / "slmflow.toml", ()),
        (directory / "pyproject.toml", ("tool", "slmflow")),
    ):
        if not file.is_file():
            continue
        try:
            data = tomllib.loads(file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ProjectError(f"cannot read project file {file}: {exc}") from None
        for key in table_path:
            data = data.get(key, {})
        if not data:
            continue  # a pyproject.toml without [tool.slmflow] is not a project file
        graphs = data.get("graphs")
        if not isinstance(graphs, dict) or not all(isinstance(v, str) and ":" in v for v in graphs.values()):
            raise ProjectError(f'{file}: expected a graphs table of name = "module:attribute", got {graphs!r}')
        return Project(root=directory, file=file, graphs=dict(graphs))
    return None
