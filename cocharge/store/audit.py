"""Who did what (issue 33, item 5): every command an operator, a host or a property sent to
a station, and every money operation (top-ups, withdrawals, corrections, payouts, payments
booked, sessions billed or voided on review), with who asked and from where.

Who: an API key (`operator key ops`, the console's user is its key), a CLI user
(`cli root@gw1`: the shell's user on the machine that ran it), a property over MQTT
(`property sunrise (mqtt)`). From where: the client's address for the API and the console,
the machine for the CLI. Read per station, per account, or all: `cocharge audit`,
`GET /api/v1/audit`, the console's station page.
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
import json
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.store.db import utcnow
from cocharge.store.schema import audit_log


def cli_actor() -> tuple[str, str]:
    """(who, from where) for a command typed at the CLI."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name to be found (a container without one)
        user = "?"
    host = socket.gethostname()
    return f"cli {user}@{host}"[:200], host[:200]


@dataclass
class _Acting:
    actor: str
    origin: str | None
    action: str
    account: str | None
    station: str | None
    details: dict[str, Any] = field(default_factory=dict)
    recorded: bool = False


_acting: contextvars.ContextVar[_Acting | None] = contextvars.ContextVar("audit_acting",
                                                                          default=None)


@contextlib.contextmanager
def acting(actor: str, origin: str | None, action: str, account: str | None = None,
           station: str | None = None, **details: Any) -> Iterator[_Acting]:
    """A money operation under way on behalf of `actor`: its entry is written by the ledger
    in the transaction that posts the operation's transfers (`posted`), so that the money
    moved and the record of who moved it stand or fall together. An operation that moves
    nothing (already booked under its reference) leaves no entry."""
    act = _Acting(actor, origin, action, account, station, dict(details))
    token = _acting.set(act)
    try:
        yield act
    finally:
        _acting.reset(token)


async def posted(conn: AsyncConnection, transfer_ids: Sequence[str]) -> None:
    """The ledger posted transfers in `conn`'s transaction: the entry of the money operation
    under way (`acting`), once, with the first transfers' ids."""
    act = _acting.get()
    if act is None or act.recorded or not transfer_ids:
        return
    await record(conn, act.actor, act.origin, act.action, act.station, act.account,
                 {**act.details, "transfers": list(transfer_ids[:10])})
    act.recorded = True


async def record(conn: AsyncConnection, actor: str, origin: str | None, action: str,
                 station_id: str | None = None, account: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
    """One entry, inside the caller's transaction (it stands or falls with what it records)."""
    await conn.execute(insert(audit_log).values(
        at=utcnow(), actor=actor[:200], origin=(origin or "")[:200] or None, action=action[:64],
        station_id=station_id, account=(account or None) and account[:128],
        details=json.dumps(details or {}, sort_keys=True, default=str)))


async def entries(engine: AsyncEngine, station_id: str | None = None,
                  account: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest entries first, of one station, one account (or an account's prefix ending
    in ':' — `wallet:` for every wallet), or all."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if station_id is not None:
        query = query.where(audit_log.c.station_id == station_id)
    if account is not None:
        query = query.where(audit_log.c.account.startswith(account, autoescape=True)
                            if account.endswith(":") else audit_log.c.account == account)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [{"id": r.id, "at": r.at.isoformat(timespec="seconds") + "Z", "actor": r.actor,
             "origin": r.origin, "action": r.action, "station": r.station_id,
             "account": r.account, "details": json.loads(r.details)} for r in rows]
