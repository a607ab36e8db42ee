"""Running money work on the database: refusals of settlement, the ledger, rewards,
memberships and payouts become one line and exit 2 (nothing written)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cocharge.cli.common import fail
from cocharge.cli.database import with_store
from cocharge.settlement.disputes import DisputeError
from cocharge.settlement.funds import FundsError
from cocharge.settlement.ledger import LedgerError
from cocharge.settlement.loyalty import RewardsError
from cocharge.settlement.memberships import MembershipError
from cocharge.settlement.payouts import PayoutError
from cocharge.settlement.rewards import RulesError
from cocharge.settlement.settle import SettlementError

T = TypeVar("T")


def with_settlement(db: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """with_store, turning settlement and ledger refusals into exit 2."""

    async def guarded(engine: Any) -> T:
        try:
            return await work(engine)
        except (SettlementError, LedgerError, FundsError, DisputeError) as exc:
            fail(str(exc))
            raise

    return with_store(db, guarded)


async def audited(engine: Any, action: str, account: str | None, op: Callable[[], Awaitable[T]],
                  station: str | None = None, **details: Any) -> T:
    """Run the money operation `op` for the CLI's user: its audit entry (store/audit.py) is
    written in the transaction that posts its transfers; one that posts none (a reference
    booked before, a review that voids) is recorded after it, saying so."""
    from cocharge.store import audit

    by, origin = audit.cli_actor()
    with audit.acting(by, origin, action, account, station, **details) as act:
        done = await op()
    if not act.recorded:
        async with engine.begin() as conn:
            await audit.record(conn, by, origin, action, station, account,
                               {**details, "posted": False})
    return done


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
