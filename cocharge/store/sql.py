"""Small dialect helpers shared by the stores (one place for SQLite/PostgreSQL differences)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
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


def among(bound: Bound, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values`; on PostgreSQL as `= ANY(array)`: one parameter, so the prepared
    statement keeps its index plan however many values there are."""
    if bound.dialect.name == "postgresql":
        matches: ColumnElement[bool] = column == any_(bindparam(None, list(values),
                                                                 type_=ARRAY(column.type)))
        return matches
    within: ColumnElement[bool] = column.in_(list(values))
    return within
