"""Small dialect helpers shared by the stores (one place for SQLite/PostgreSQL differences)."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    any_,
    bindparam,
)
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


class BulkInsert:
    """An INSERT of whole rows that the journal hands to the database driver as it is (one
    executemany of tuples): none of SQLAlchemy's per-row parameter processing, which was the
    largest cost of a persisted meter value after the JSON work (benchmarks/fleet.py).

    Each row gives every column but the generated id, as a dict (checked with check_rows like
    any other) or as a tuple in the table's column order; the journal turns them into the
    tuples the dialect it writes to takes."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.columns = tuple(c.name for c in table.columns if not c.primary_key)
        self._values = operator.itemgetter(*self.columns)
        # SQLite keeps a DateTime as text in SQLAlchemy's own format, with the microseconds
        # always written: times compare as text there.
        self._times = tuple(i for i, name in enumerate(self.columns)
                            if isinstance(table.c[name].type, DateTime))
        self._sql: dict[str, str] = {}

    def sql(self, dialect: str) -> str:
        """The statement in the driver's own parameter style."""
        text = self._sql.get(dialect)
        if text is None:
            marks = (", ".join(f"${n}" for n in range(1, len(self.columns) + 1))
                     if dialect == "postgresql" else ", ".join("?" * len(self.columns)))
            text = self._sql[dialect] = (f"INSERT INTO {self.table.name} "
                                         f"({', '.join(self.columns)}) VALUES ({marks})")
        return text

    def params(self, dialect: str, rows: Sequence[dict[str, Any] | tuple[Any, ...]]
               ) -> list[tuple[Any, ...]]:
        values = self._values
        tuples = [row if isinstance(row, tuple) else values(row) for row in rows]
        if dialect != "sqlite" or not self._times:
            return tuples
        times = self._times
        as_text = []
        for row in tuples:
            listed = list(row)
            for i in times:
                if isinstance(listed[i], datetime):
                    listed[i] = listed[i].isoformat(" ", "microseconds")
            as_text.append(tuple(listed))
        return as_text


class RowRejected(ValueError):
    """A row that its table cannot hold (a number out of the column's range, a string too
    long): the message that carried it fails alone, before it joins a batch."""


_INT_RANGE = {"SMALLINT": 2**15, "INTEGER": 2**31, "BIGINT": 2**63}


def _column_checks(table: Table) -> list[tuple[str, str, int | None, bool]]:
    checks = []
    for column in table.columns:
        kind = type(column.type).__name__.upper()
        if isinstance(column.type, BigInteger):
            kind = "BIGINT"
        elif isinstance(column.type, Integer):
            kind = "INTEGER"
        elif isinstance(column.type, Float):
            kind = "FLOAT"
        elif isinstance(column.type, String):
            kind = "STRING"
        length = getattr(column.type, "length", None)
        checks.append((column.name, kind, length, bool(column.nullable)))
    return checks


_CHECKS: dict[str, list[tuple[str, str, int | None, bool]]] = {}


def check_rows(table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Raise RowRejected unless every row fits `table`'s columns."""
    checks = _CHECKS.get(table.name)
    if checks is None:
        checks = _CHECKS[table.name] = _column_checks(table)
    for row in rows:
        for name, kind, length, nullable in checks:
            if name not in row:
                continue
            value = row[name]
            if value is None:
                if not nullable:
                    raise RowRejected(f"{table.name}.{name} may not be empty")
                continue
            if kind in _INT_RANGE:
                if (not isinstance(value, int) or isinstance(value, bool)
                        or not -_INT_RANGE[kind] <= value < _INT_RANGE[kind]):
                    raise RowRejected(f"{table.name}.{name}: {str(value)[:40]} is outside the "
                                      f"range of its column")
            elif kind == "FLOAT":
                if not isinstance(value, int | float) or not math.isfinite(value):
                    raise RowRejected(f"{table.name}.{name}: {str(value)[:40]} is not a finite "
                                      "number")
            elif kind == "STRING" and length is not None and len(value) > length:
                raise RowRejected(f"{table.name}.{name} is longer than {length} characters")
