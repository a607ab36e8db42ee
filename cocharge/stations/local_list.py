"""Local authorization lists that follow the owners' sharing rules.

A shared wallbox that loses its network decides alone who may charge. So each share-managed
station holds a local list (OCPP SendLocalList) of the members its rules admit at some time:
the owner's tags, the allowed tags and groups (every active member when the rules name
none), vehicle models and minimum credit as the rules say; blocked and expired members are
absent, and an entry expires with the member; so is a member who may not start a session
for want of money (settlement/funds.py: wallet + credit line - owed below the gateway's
start minimum, and no free quota). Opening hours and bookings cannot be said in a local
list: offline, the station admits a listed member at any hour.

The controller (`control.py`) keeps each connected station's list in step: a full list the
first time (or after the station refused an update), then differential updates, each with
the next version number; what the station accepted is recorded in `local_lists`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from cocharge.settlement import funds, loyalty
from cocharge.stations import policy, sharing
from cocharge.stations.policy import SharingRules
from cocharge.store.schema import ledger_balances, local_lists, members

Entries = dict[str, str | None]  # tag -> expiry (ISO 8601, UTC) or None (no expiry)


@dataclass(frozen=True)
class ListUpdate:
    """What to send: the version, full or differential, and the entries (None = remove)."""

    version: int
    full: bool
    entries: dict[str, str | None | bool]  # tag -> expiry | None (no expiry) | False (remove)
    desired: Entries


def _iso(value: datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat() + "Z" if value is not None else None


def _admits(rules: SharingRules, member: policy.Member) -> bool:
    """May this member charge here at some time (hours and bookings aside)?"""
    return policy.member_refusal(rules, member) is None


class Members:
    """The active members, read once for every station a sync round looks at (credit scores
    only when some station's rules ask for one, each member's at most once)."""

    def __init__(self, conn: AsyncConnection, now: datetime, minimum_fen: int = 0) -> None:
        self.conn = conn
        self.now = now
        self.minimum_fen = minimum_fen
        self.rows: list[Any] = []
        self._credit: dict[str, int] = {}

    async def load(self) -> Members:
        rows = (await self.conn.execute(select(members).where(members.c.status == "active"))).all()
        self.rows = [r for r in rows if r.expires_at is None or r.expires_at > self.now]
        if self.minimum_fen > 0:
            self.rows = [r for r in self.rows if r.tag in await self._may_start()]
        return self

    async def _may_start(self) -> set[str]:
        """The members whose money (or free quota) lets them start, read in a few queries."""
        rules = await loyalty.current_rules(self.conn)
        kinds = ("wallet", "receivable", "quota")
        found = (await self.conn.execute(select(
            ledger_balances.c.account, ledger_balances.c.balance).where(
            ledger_balances.c.account.like("wallet:%") | ledger_balances.c.account.like(
                "receivable:%") | ledger_balances.c.account.like("quota:%")))).all()
        money: dict[str, dict[str, int]] = {}
        for account, balance in found:
            kind, _, tag = account.partition(":")
            if kind in kinds:
                money.setdefault(tag, {})[kind] = int(balance)
        allowed = set()
        for row in self.rows:
            held = money.get(row.tag, {})
            line = (funds.credit_line_fen(rules, await self.credit(row.tag))
                    if rules.credit_lines else 0)
            state = funds.Funds(max(0, held.get("wallet", 0)), max(0, -held.get("receivable", 0)),
                                line, max(0, held.get("quota", 0)))
            if state.may_start(self.minimum_fen)[0]:
                allowed.add(row.tag)
        return allowed

    async def credit(self, tag: str) -> int:
        if tag not in self._credit:
            self._credit[tag] = await loyalty.credit_score(self.conn, tag)
        return self._credit[tag]


async def desired(people: Members, rules: list[SharingRules], limit: int) -> Entries | None:
    """The list a station with these connector rules should hold; None when it is not
    share-managed or the list would be longer than `limit` (not managed then)."""
    if not rules:
        return None
    entries: Entries = {}
    needs_credit = any(r.min_credit for r in rules)
    for row in people.rows:
        member = sharing.member_of(row)
        if needs_credit:
            member = replace(member, credit=await people.credit(row.tag))
        if any(_admits(r, member) for r in rules):
            entries[row.tag] = _iso(row.expires_at)
            if len(entries) > limit:
                return None
    return entries


async def update_for(conn: AsyncConnection, station_id: str, want: Entries) -> ListUpdate | None:
    """What to send to bring the station's list to `want`; None when it holds it already."""
    row = (await conn.execute(select(local_lists).where(
        local_lists.c.station_id == station_id))).first()
    if row is None or row.entries is None:
        return ListUpdate((row.version if row else 0) + 1, True, dict(want), want)
    have: Entries = json.loads(row.entries)
    if have == want:
        return None
    changes: dict[str, str | None | bool] = {
        tag: expiry for tag, expiry in want.items() if tag not in have or have[tag] != expiry}
    changes.update({tag: False for tag in have if tag not in want})
    return ListUpdate(row.version + 1, False, changes, want)


def stored(station_id: str, update: ListUpdate, status: str, now: datetime,
           accepted: bool) -> dict[str, Any]:
    """The `local_lists` row after the station answered `status` to `update`."""
    return {"station_id": station_id, "version": update.version, "status": status,
            "entries": json.dumps(update.desired, sort_keys=True) if accepted else None,
            "updated_at": now}
