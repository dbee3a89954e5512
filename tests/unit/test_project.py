"""Finding a project file and loading its graphs, with clear errors for every way it breaks."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from slmflow.errors import ProjectError, UnknownGraph
from slmflow.graphs import GraphSpec
from slmflow.project import find_project

GRAPH_MODULE = """
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from slmflow import GraphSpec, JobState, ToolRegistry


class Text(BaseModel):
    text: str


def echo(state):
    return {"output": {"text": state["input"]["text"]}}


builder = StateGraph(JobState)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
builder.add_edge("echo", END)
graph = GraphSpec(name="echo", builder=builder, input=Text, output=Text, tools=ToolRegistry.of([]))
not_a_graph = 42
"""


@pytest.fixture
def module_name(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module name no other test uses; sys.path and the imported module are undone after."""
    name = f"graphs_{uuid.uuid4().hex}"
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield name
    sys.modules.pop(name, None)


def write_module(root: Path, name: str, source: str = GRAPH_MODULE) -> None:
    (root / f"{name}.py").write_text(source)


def test_finds_graphs_in_slmflow_toml(tmp_path: Path) -> None:
    (tmp_path / "slmflow.toml").write_text('[graphs]\necho = "graphs.echo:graph"\n')
    project = find_project(tmp_path)
    assert project.root == tmp_path.resolve()
    assert project.file == tmp_path.resolve() / "slmflow.toml"
    assert project.graphs == {"echo": "graphs.echo:graph"}


def test_finds_graphs_in_pyproject_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.slmflow.graphs]\necho = "graphs.echo:graph"\n'
    )
    project = find_project(tmp_path)
    assert project.file.name == "pyproject.toml"
    assert project.graphs == {"echo": "graphs.echo:graph"}


def test_search_from_a_subdirectory_finds_the_parent_project(tmp_path: Path) -> None:
    (tmp_path / "slmflow.toml").write_text('[graphs]\necho = "graphs.echo:graph"\n')
    nested = tmp_path / "src" / "deep"
    nested.mkdir(parents=True)
    assert find_project(nested).root == tmp_path.resolve()


def test_missing_project_file_explains_slmflow_toml(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="slmflow.toml"):
        find_project(tmp_path)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "slmflow.toml"
    file.write_text("[graphs\necho = \n")
    with pytest.raises(ProjectError) as caught:
        find_project(tmp_path)
    assert str(file.resolve()) in str(caught.value)


def test_graph_loads_as_a_graph_spec(tmp_path: Path, module_name: str) -> None:
    write_module(tmp_path, module_name)
    (tmp_path / "slmflow.toml").write_text(f'[graphs]\necho = "{module_name}:graph"\n')
    spec = find_project(tmp_path).load_graph("echo")
    assert isinstance(spec, GraphSpec)
    assert spec.name == "echo"


def test_graph_module_that_raises_names_the_graph_and_file(tmp_path: Path, module_name: str) -> None:
    write_module(tmp_path, module_name, "raise RuntimeError('boom at import')\n")
    file = tmp_path / "slmflow.toml"
    file.write_text(f'[graphs]\nbroken = "{module_name}:graph"\n')
    with pytest.raises(ProjectError) as caught:
        find_project(tmp_path).load_graph("broken")
    message = str(caught.value)
    assert "'broken'" in message
    assert str(file.resolve()) in message
    assert "boom at import" in message


def test_unknown_graph_lists_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "slmflow.toml").write_text('[graphs]\necho = "graphs.echo:graph"\ntriage = "graphs.triage:graph"\n')
    project = find_project(tmp_path)
    with pytest.raises(UnknownGraph, match="echo, triage") as caught:
        project.load_graph("nope")
    assert isinstance(caught.value, KeyError)
    assert "'nope'" in str(caught.value)


def test_attribute_that_is_not_a_graph_spec_is_a_project_error(tmp_path: Path, module_name: str) -> None:
    write_module(tmp_path, module_name)
    (tmp_path / "slmflow.toml").write_text(f'[graphs]\nnumber = "{module_name}:not_a_graph"\n')
    with pytest.raises(ProjectError, match="expected a GraphSpec"):
        find_project(tmp_path).load_graph("number")
