"""Running a command's work on the database: refusals of the store, settlement, ledger and
rewards become one line and exit 2 (nothing written)."""


from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from cocharge.cli.common import fail
from cocharge.settlement.ledger import LedgerError
from cocharge.settlement.loyalty import RewardsError
from cocharge.settlement.memberships import MembershipError
from cocharge.settlement.payouts import PayoutError
from cocharge.settlement.rewards import RulesError
from cocharge.settlement.settle import SettlementError
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


def with_settlement(db: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """with_store, turning settlement and ledger refusals into exit 2."""

    async def guarded(engine: Any) -> T:
        try:
            return await work(engine)
        except (SettlementError, LedgerError) as exc:
            fail(str(exc))
            raise

    return with_store(db, guarded)


def with_rewards(db: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """with_settlement, turning rewards refusals into exit 2 (nothing written)."""

    async def guarded(engine: Any) -> T:
        try:
            return await work(engine)
        except (RewardsError, RulesError) as exc:
            fail(str(exc))
            raise

    return with_settlement(db, guarded)


def with_money(db: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """with_settlement, turning money-flow refusals into one line and exit 2."""

    async def guarded(engine: Any) -> T:
        try:
            return await work(engine)
        except (MembershipError, PayoutError, RewardsError, RulesError) as exc:
            fail(str(exc))
            raise

    return with_settlement(db, guarded)
