"""LangGraph checkpointers chosen by URL: `memory`, `sqlite:///path/to/file.db`, `postgresql://...`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from slmflow.errors import SettingsError
from slmflow.redaction import mask_url

__all__ = ["open_checkpointer", "setup_postgres"]

_SETUP_LOCK = 5_871_442  # an advisory lock id of slmflow's own


async def setup_postgres(saver: Any, pool: Any, *statements: str) -> None:
    """Create or migrate the checkpoint tables, one process at a time.

    LangGraph's migrations race when several workers start on an empty database together
    (`UniqueViolation` on `checkpoint_migrations_pkey`): a Postgres advisory lock serializes them.
    """
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        try:
            await saver.setup()  # idempotent: creates or migrates the checkpoint tables
            for statement in statements:  # slmflow's own tables beside them
                await conn.execute(statement)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))


@asynccontextmanager
async def open_checkpointer(url: str, pool_size: int = 10) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """The checkpointer `url` names, open for the duration of the block."""
    if url == "memory":
        yield InMemorySaver()
        return
    if url.startswith("sqlite:///"):
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        path = Path(url.removeprefix("sqlite:///")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(str(path)) as sqlite_saver:
            yield sqlite_saver
        return
    if url.startswith(("postgresql://", "postgres://")):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        # A pool, not one connection: a jobs worker writes checkpoints for hundreds of jobs at once.
        options = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        async with AsyncConnectionPool(url, min_size=1, max_size=pool_size, kwargs=options, open=False) as pool:
            postgres_saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await setup_postgres(postgres_saver, pool)
            yield postgres_saver
        return
    raise SettingsError(
        f"SLMFLOW_CHECKPOINT_URL={mask_url(url)!r}: expected 'memory', 'sqlite:///FILE' or 'postgresql://...'"
    )
