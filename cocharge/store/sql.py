"""Small dialect helpers shared by the stores (one place for SQLite/PostgreSQL differences)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Bound = AsyncEngine | AsyncConnection


def _insert_for(engine: Bound, table: Table) -> Any:
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignore(engine: Bound, table: Table) -> Any:
    """INSERT that silently skips rows whose primary key already exists."""
    return _insert_for(engine, table).on_conflict_do_nothing()


def upsert(engine: Bound, table: Table, keys: list[str], update: list[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET the `update` columns from the new row."""
    stmt = _insert_for(engine, table)
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={name: stmt.excluded[name] for name in update}
    )
