"""Start-up stays light: `import slmflow`, the SDK client and `slmflow --help` load no model client,
no graph runtime and no Celery app; the lazy tables say exactly what the modules define.

Timing is measured by `benchmarks/startup.py`; these tests hold what makes it fast.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

import slmflow
from slmflow.cli import COMMANDS, app

HEAVY = ("langgraph", "openai", "langchain_core", "celery.app", "vllm", "torch", "opentelemetry.sdk.trace")
"""Modules a start-up path must not load (each costs 0.1 to several seconds)."""

PROBE = """
import json, sys
{code}
print(json.dumps(sorted(m for m in sys.modules if m in {heavy!r} or m.split(".")[0] in {heavy!r})))
"""


def loaded_by(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running `code`."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)], capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return list(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import slmflow",
        "from slmflow import Client, JobStatus, JobRecord, JobFailed",
        "import sys; sys.argv = ['slmflow', '--help']\nfrom slmflow.cli import main\ntry:\n    main()\n"
        "except SystemExit:\n    pass",
    ],
    ids=["import", "sdk", "help"],
)
def test_a_start_up_path_loads_no_heavy_module(code: str) -> None:
    assert loaded_by(code) == []


def test_a_name_that_needs_the_runtime_still_loads_it() -> None:
    # The probe can see what it forbids: run_job needs LangGraph, and gets it on first use.
    assert "langgraph" in loaded_by("from slmflow import run_job")


def test_every_lazy_name_resolves_and_type_checkers_see_the_same_table() -> None:
    for name in slmflow.__all__:
        assert getattr(slmflow, name) is not None
    tree = ast.parse(Path(slmflow.__file__).read_text())
    [checking] = [n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    seen = {a.name: n.module for n in checking.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert seen == slmflow._LAZY
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = slmflow.nope  # type: ignore[attr-defined]


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").split("\n\n")[0].split())


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_listing_shows_each_commands_own_help(name: str) -> None:
    group = typer.main.get_command(app)
    command = group.load(name)  # type: ignore[attr-defined]
    assert command.name == name
    assert _first_paragraph(COMMANDS[name][1]) == _first_paragraph(command.help)
