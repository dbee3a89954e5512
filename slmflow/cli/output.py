"""Consoles and rendering shared by the commands: progress on stderr, results on stdout."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from slmflow.events import Event

__all__ = ["console", "err_console", "print_json", "render_event"]

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Exactly one JSON object on stdout, nothing else."""
    print(json.dumps(data, default=str))


def render_event(event: Event) -> str | None:
    """One progress line for an event, or None for events not worth a line."""
    data = event.data
    if event.kind == "step_finished":
        if data.get("status") == "ok":
            conf = data.get("confidence")
            shown = f" confidence {conf:.2f}" if conf is not None else ""
            return f"[green]✓[/] {event.step} [dim]({data.get('tier')}, {data.get('attempts')} call(s){shown})[/]"
        return f"[yellow]?[/] {event.step} [dim]needs review after {data.get('attempts')} call(s)[/]"
    if event.kind == "skill_escalated":
        detail = escape(str(data.get("detail", ""))[:160])
        return f"  [yellow]↑[/] {event.step}: {data.get('reason')} → {data.get('to')}: [dim]{detail}[/]"
    return None
