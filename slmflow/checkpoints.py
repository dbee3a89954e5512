"""LangGraph checkpointers chosen by URL: `memory`, or `sqlite:///path/to/file.db`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from slmflow.errors import SettingsError

__all__ = ["open_checkpointer"]


@asynccontextmanager
async def open_checkpointer(url: str) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """The checkpointer `url` names, open for the duration of the block."""
    if url == "memory":
        yield InMemorySaver()
        return
    if url.startswith("sqlite:///"):
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        path = Path(url.removeprefix("sqlite:///")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            yield saver
        return
    raise SettingsError(f"SLMFLOW_CHECKPOINT_URL={url!r}: expected 'memory' or 'sqlite:///FILE'")
