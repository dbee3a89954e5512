"""The `slmflow` command: a thin shell over the library, one module per command group.

User errors print one line (no traceback) and exit 2; other slmflow errors exit 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from slmflow.cli import calibrate, distill, evaluate, fleet, graphs, jobs, models, run, trace
from slmflow.cli.output import err_console
from slmflow.errors import JobNotFound, SlmflowError, UsageError

__all__ = ["app", "main"]

app = typer.Typer(
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


app.command("run")(run.run)
app.command("graphs")(graphs.graphs)
app.add_typer(models.app, name="models")
app.command("worker")(fleet.worker)
app.command("submit")(jobs.submit)
app.command("status")(jobs.status)
app.command("result")(jobs.result)
app.command("events")(jobs.events)
app.command("cancel")(jobs.cancel)
app.command("list")(jobs.list_jobs)
app.command("review")(jobs.review)
app.command("approve")(jobs.approve)
app.command("trace")(trace.trace)
app.add_typer(distill.app, name="distill")
app.command("eval")(evaluate.evaluate_command)
app.command("calibrate")(calibrate.calibrate_command)


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
