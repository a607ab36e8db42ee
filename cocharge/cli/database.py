"""Running a command's work on the database: a missing or foreign database, a refusal of
the registry or an unreachable server becomes one line and exit 2 (nothing written).
Money commands add their own refusals (cli/settlement.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from cocharge.cli.common import fail
from cocharge.stations import registry
from cocharge.store.db import (
    DatabaseURLError,
    StoreError,
    describe_error,
    open_existing,
    open_store,
)

T = TypeVar("T")


def with_store(db: str | None, work: Callable[[Any], Awaitable[T]], create: bool = False) -> T:
    """Run `work` on the database. Only `create` (db init|upgrade) makes or migrates a schema:
    every other command needs an existing database at this cocharge's schema, so a typo in
    --db (or an unset COCHARGE_DB under cron) is an error, never a new empty database."""
    async def run() -> T:
        engine = await (open_store(db) if create else open_existing(db))
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except registry.RegistryError as exc:
        fail(str(exc))
    except (DatabaseURLError, StoreError) as exc:
        fail(str(exc))
    except (SQLAlchemyError, OSError) as exc:
        fail(describe_error(exc, db))
    raise AssertionError("unreachable")
