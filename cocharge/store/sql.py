"""Small dialect helpers shared by the stores (one place for SQLite/PostgreSQL differences)."""

from __future__ import annotations

import functools
import json
import math
import operator
import re
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    SmallInteger,
    String,
    Table,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Bound = AsyncEngine | AsyncConnection


# The dialects' modules are imported where they are used: an engine of that dialect has
# loaded them already, and a CLI command on SQLite does not pay for PostgreSQL's (28 ms).
def _insert_for(engine: Bound, table: Table) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql
        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite
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


_FEW = 200  # values: up to this many, a plain IN on SQLite


def among(bound: Bound, column: Any, values: Collection[Any]) -> ColumnElement[bool]:
    """`column IN values` for any number of values (numbers or texts), in one parameter
    whatever their number: a plain `IN (?, ?, ...)` takes a parameter a value, and asyncpg
    refuses more than 32,767 of them (an operator's dashboard over a month of a large fleet
    failed so), SQLite builds from 999 to 250,000.
    - PostgreSQL: `= ANY(array)` (the prepared statement also keeps its index plan);
    - SQLite: a few as a plain IN, more as `IN (SELECT value FROM json_each(?))`, the values
      as one JSON text (SQLite still looks each of them up in the column's index)."""
    listed = list(values)
    if bound.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY
        matches: ColumnElement[bool] = column == any_(bindparam(None, listed,
                                                                 type_=ARRAY(column.type)))
        return matches
    if len(listed) <= _FEW:
        within: ColumnElement[bool] = column.in_(listed)
        return within
    values_of = func.json_each(bindparam(None, json.dumps(listed), type_=String()))
    given: ColumnElement[bool] = column.in_(
        select(literal_column("value")).select_from(values_of).scalar_subquery())
    return given


class BulkInsert:
    """An INSERT of whole rows that the journal hands to the database driver as it is: none
    of SQLAlchemy's per-row parameter processing, which was the
    largest cost of a persisted meter value after the JSON work (benchmarks/fleet.py).

    Each row gives every column but the generated id, as a dict (checked with check_rows like
    any other) or as a tuple in the table's column order; the journal turns them into what
    the dialect it writes to takes (SQLite: tuples for an executemany; PostgreSQL: one list
    per column for a single INSERT of them all, or for many rows the tuples for a binary
    COPY: store/journal.py)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.columns = tuple(c.name for c in table.columns if not c.primary_key)
        self._values = operator.itemgetter(*self.columns)
        # SQLite keeps a DateTime as text in SQLAlchemy's own format, with the microseconds
        # always written: times compare as text there.
        self._times = tuple(i for i, name in enumerate(self.columns)
                            if isinstance(table.c[name].type, DateTime))

    @functools.cached_property
    def sqlite_sql(self) -> str:
        """SQLite: the INSERT of one row, for an executemany of `params("sqlite", rows)`."""
        return (f"INSERT INTO {self.table.name} ({', '.join(self.columns)}) "
                f"VALUES ({', '.join('?' * len(self.columns))})")

    @functools.cached_property
    def unnest_sql(self) -> str:
        """PostgreSQL: one INSERT of every row, its columns as arrays (`columns_of`). An
        executemany runs the INSERT once a row in the server; this runs it once."""
        from sqlalchemy.dialects import postgresql
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        types = [re.sub(r"\(.*?\)", "", self.table.c[name].type.compile(dialect=dialect))
                 for name in self.columns]  # lengths are the columns' to check, not the cast's
        arrays = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(types, 1))
        return (f"INSERT INTO {self.table.name} ({', '.join(self.columns)}) "
                f"SELECT * FROM unnest({arrays})")

    def columns_of(self, rows: Sequence[dict[str, Any] | tuple[Any, ...]]) -> list[list[Any]]:
        """The rows as one list per column, for `unnest_sql`."""
        return [list(column) for column in zip(*self.params("postgresql", rows), strict=True)]

    def params(self, dialect: str, rows: Sequence[dict[str, Any] | tuple[Any, ...]]
               ) -> list[tuple[Any, ...]]:
        values = self._values
        tuples = [row if isinstance(row, tuple) else values(row) for row in rows]
        if dialect != "sqlite" or not self._times:
            return tuples
        # The rows of one message share their time (the same object): written out once,
        # not once a row (a nine-value MeterValues: 6.1 -> 1.9 µs).
        times = self._times
        as_text = []
        last: Any = None
        text: Any = None
        for row in tuples:
            listed = list(row)
            for i in times:
                value = listed[i]
                if value is not last or last is None:
                    if not isinstance(value, datetime):
                        continue
                    last, text = value, value.isoformat(" ", "microseconds")
                listed[i] = text
            as_text.append(tuple(listed))
        return as_text


class RowRejected(ValueError):
    """A row that its table cannot hold (a number out of the column's range, a string too
    long): the message that carried it fails alone, before it joins a batch."""


_ABSENT = object()


def _compile_checks(table: Table) -> Callable[[Sequence[dict[str, Any]]], None]:
    """check_rows for one table, written out column by column and compiled once: rows are
    checked for every message that writes one, and a loop over the columns by kind cost as
    much as the checks (nine meter rows: 8.2 -> 3.9 µs). The same tests, in the same order
    (integers, numbers, strings, then the other columns that may not be empty)."""
    ints, floats, strings, others = [], [], [], []
    for column in table.columns:
        nullable = bool(column.nullable)
        if isinstance(column.type, BigInteger):
            ints.append((column.name, 2**63, nullable))
        elif isinstance(column.type, SmallInteger):
            ints.append((column.name, 2**15, nullable))
        elif isinstance(column.type, Integer):
            ints.append((column.name, 2**31, nullable))
        elif isinstance(column.type, Float):
            floats.append((column.name, nullable))
        elif isinstance(column.type, String) and column.type.length is not None:
            strings.append((column.name, column.type.length, nullable))
        elif not nullable:
            others.append(column.name)
    lines = ["def check(rows):", "    for row in rows:", "        get = row.get"]

    def present(name: str, nullable: bool) -> None:
        lines.append(f"        v = get({name!r}, ABSENT)")
        lines.append("        if v is not ABSENT" + (" and v is not None:" if nullable else ":"))

    for name, bound, nullable in ints:
        present(name, nullable)
        lines.append("            if (type(v) is not int and (not isinstance(v, int) or "
                     f"isinstance(v, bool)) or not {-bound} <= v < {bound}):")
        lines.append(f"                raise out_of_range({table.name!r}, {name!r}, v)")
    for name, nullable in floats:
        present(name, nullable)
        lines.append("            if not isinstance(v, (int, float)) or not isfinite(v):")
        lines.append(f"                raise not_finite({table.name!r}, {name!r}, v)")
    for name, length, nullable in strings:
        present(name, nullable)
        if not nullable:
            lines.append("            if v is None:")
            lines.append(f"                raise empty({table.name!r}, {name!r})")
        lines.append(f"            if len(v) > {length}:")
        lines.append(f"                raise too_long({table.name!r}, {name!r}, {length})")
    for name in others:
        lines.append(f"        if {name!r} in row and row[{name!r}] is None:")
        lines.append(f"            raise empty({table.name!r}, {name!r})")
    scope: dict[str, Any] = {"ABSENT": _ABSENT, "isfinite": math.isfinite, "empty": _empty,
                             "out_of_range": _out_of_range, "not_finite": _not_finite,
                             "too_long": _too_long}
    exec(compile("\n".join(lines), f"<row checks of {table.name}>", "exec"), scope)
    checks: Callable[[Sequence[dict[str, Any]]], None] = scope["check"]
    return checks


_CHECKS: dict[str, Callable[[Sequence[dict[str, Any]]], None]] = {}


def check_rows(table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Raise RowRejected unless every row fits `table`'s columns (a column the row does not
    name is not checked)."""
    checks = _CHECKS.get(table.name)
    if checks is None:
        checks = _CHECKS[table.name] = _compile_checks(table)
    checks(rows)


def _out_of_range(table: str, column: str, value: Any) -> RowRejected:
    if value is None:
        return _empty(table, column)
    return RowRejected(f"{table}.{column}: {str(value)[:40]} is outside the range of its column")


def _not_finite(table: str, column: str, value: Any) -> RowRejected:
    if value is None:
        return _empty(table, column)
    return RowRejected(f"{table}.{column}: {str(value)[:40]} is not a finite number")


def _too_long(table: str, column: str, length: int) -> RowRejected:
    return RowRejected(f"{table}.{column} is longer than {length} characters")


def _empty(table: str, column: str) -> RowRejected:
    return RowRejected(f"{table}.{column} may not be empty")
