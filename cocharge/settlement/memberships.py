"""Membership levels with a start and an end (SPEC §4: "OEM membership activated by VIN:
6 months gold (brand-specific: 8 or 12), 50 kWh/month free, +200 coins, +10 credit").

A level comes from an OEM activation (by VIN: the brand table of the rule table gives its
level and months), a purchase (a level and months, with the payment's reference), or a
reward rule (free charging days). A VIN activates once, ever; a member holds one level per
brand. The starter reward (`events.oem_activated`) is given once per member.

The free-energy quota exists only while a level lasts: `allowance` is what the member's
levels (and a quota an operator set by hand on the member) grant at a moment. Each month's
allowance is granted on the ledger at the start of the month by the daily job
(`membership expire`, also run by the gateway), or at the member's first session of the
month if that comes first; when a level ends, what is left of its quota goes back.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.settlement import ledger
from cocharge.settlement.ledger import Transfer
from cocharge.store.db import utcnow
from cocharge.store.schema import members, memberships
from cocharge.store.sql import among

QUOTA = "QUOTA_WH"
TZ = "Asia/Shanghai"
# ISO 3779: 17 characters, digits and capital letters without I, O and Q.
VIN = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")


class MembershipError(ValueError):
    """A membership request that cannot apply; nothing was written."""


def add_months(at: datetime, months: int) -> datetime:
    """The same day and time `months` later (the month's last day when it is shorter)."""
    month = at.month - 1 + months
    year, month = at.year + month // 12, month % 12 + 1
    return at.replace(year=year, month=month, day=min(at.day, calendar.monthrange(year, month)[1]))


def month_of(at: datetime, tz: str = TZ) -> str:
    return at.replace(tzinfo=UTC).astimezone(ZoneInfo(tz)).strftime("%Y-%m")


def month_start(at: datetime, tz: str = TZ) -> datetime:
    """The first moment (naive UTC) of the local month that `at` (naive UTC) falls in."""
    local = at.replace(tzinfo=UTC).astimezone(ZoneInfo(tz))
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return first.astimezone(UTC).replace(tzinfo=None)


def active_at(at: datetime) -> Any:
    return and_(memberships.c.starts_at <= at, memberships.c.ends_at > at,
                memberships.c.status == "active")


async def allowance(conn: AsyncConnection, tag: str, at: datetime) -> int:
    """Free Wh a month the member is entitled to at `at`: a quota set by hand on the member,
    plus each level in force then."""
    manual = int(await conn.scalar(select(members.c.quota_wh).where(members.c.tag == tag)) or 0)
    levels = int(await conn.scalar(select(func.coalesce(func.sum(memberships.c.quota_wh), 0))
                                   .where(and_(memberships.c.tag == tag, active_at(at)))) or 0)
    return manual + levels


async def free_charging(conn: AsyncConnection, tag: str, at: datetime) -> bool:
    """Is `at` within one of the member's free charging days?"""
    found = await conn.scalar(select(memberships.c.id).where(and_(
        memberships.c.tag == tag, memberships.c.free_charging.is_(True), active_at(at))).limit(1))
    return found is not None


async def quota_legs(conn: AsyncConnection, tag: str, at: datetime) -> list[Transfer]:
    """The month's grant of the free quota, when it is due and not posted yet (with the
    expiry of what was left from before)."""
    month = month_of(at)
    grant_id = f"quota-grant:{tag}:{month}"
    amount = await allowance(conn, tag, at)
    if amount <= 0 or await ledger.posted(conn, grant_id):
        return []
    legs = []
    leftover = await ledger.balance(conn, f"quota:{tag}", QUOTA)
    if leftover > 0:
        legs.append(Transfer(f"quota-expire:{tag}:{month}", f"quota:{tag}", "pool:quota",
                             leftover, QUOTA, "quota-expire", None, f"unused quota before {month}"))
    legs.append(Transfer(grant_id, "pool:quota", f"quota:{tag}", amount, QUOTA, "quota-grant",
                         None, f"free energy for {month}"))
    return legs


async def quota_left(conn: AsyncConnection, tag: str, at: datetime) -> int:
    """Free Wh the member has left this month (the allowance, if not granted yet); none once
    every level that gave it has ended."""
    amount = await allowance(conn, tag, at)
    if amount <= 0:
        return 0
    if not await ledger.posted(conn, f"quota-grant:{tag}:{month_of(at)}"):
        return amount
    return min(amount, await ledger.balance(conn, f"quota:{tag}", QUOTA))


def _row(r: Any, now: datetime) -> dict[str, Any]:
    state = r.status if r.status != "active" else ("active" if r.ends_at > now else "ended")
    return {"id": int(r.id), "tag": r.tag, "level": r.level, "brand": r.brand, "vin": r.vin,
            "source": r.source, "ref": r.ref, "from": r.starts_at.isoformat(timespec="seconds") + "Z",
            "until": r.ends_at.isoformat(timespec="seconds") + "Z",
            "quota_kwh_per_month": int(r.quota_wh) / 1000, "free_charging": bool(r.free_charging),
            "status": state}


async def quota_brand(conn: AsyncConnection, tag: str, at: datetime) -> str | None:
    """The brand of the member's OEM membership that gives free quota at `at` (the first by
    start when several do): it pays for that quota."""
    return await conn.scalar(select(memberships.c.brand).where(and_(
        memberships.c.tag == tag, memberships.c.source == "oem", memberships.c.quota_wh > 0,
        active_at(at))).order_by(memberships.c.starts_at, memberships.c.id).limit(1))


async def reward_days(conn: AsyncConnection, tag: str, days: int, ref: str,
                      now: datetime) -> None:
    """Free charging days a reward rule grants (inside the caller's transaction; once per ref)."""
    if await conn.scalar(select(memberships.c.id).where(memberships.c.ref == ref)) is not None:
        return
    await conn.execute(insert(memberships).values(
        tag=tag, level="free-days", brand=f"reward:{ref}"[:32], vin=None, source="reward",
        ref=ref, starts_at=now, ends_at=now + timedelta(days=days), quota_wh=0,
        free_charging=True, status="active", created_at=now))


async def rows_of(conn: AsyncConnection, tag: str) -> list[dict[str, Any]]:
    rows = (await conn.execute(select(memberships).where(memberships.c.tag == tag)
                               .order_by(memberships.c.starts_at, memberships.c.id))).all()
    now = utcnow()
    return [_row(r, now) for r in rows]


async def of_member(engine: AsyncEngine, tag: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        if await conn.scalar(select(members.c.tag).where(members.c.tag == tag)) is None:
            raise MembershipError(f"no member with tag {tag!r}: see `cocharge member list`")
        return await rows_of(conn, tag)


async def list_all(engine: AsyncEngine, active_only: bool = False) -> list[dict[str, Any]]:
    now = utcnow()
    query = select(memberships).order_by(memberships.c.tag, memberships.c.starts_at)
    if active_only:
        query = query.where(active_at(now))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [_row(r, now) for r in rows]


@dataclass(frozen=True)
class DailyRun:
    expired: list[int]      # memberships ended by this run
    returned_wh: int        # quota taken back from them
    granted: list[str]      # members whose month's quota was granted by this run


async def daily(engine: AsyncEngine, now: datetime | None = None) -> DailyRun:
    """End the levels whose time is over (their unused quota goes back) and grant this
    month's quota to every member entitled to one. Idempotent: a second run changes nothing."""
    now = now or utcnow()
    expired: list[int] = []
    returned = 0
    granted: list[str] = []
    async with engine.begin() as conn:
        await ledger.lock(conn)
        ended = (await conn.execute(select(memberships).where(and_(
            memberships.c.status == "active", memberships.c.ends_at <= now))
            .order_by(memberships.c.id))).all()
        legs: list[Transfer] = []
        for m in ended:
            expired.append(int(m.id))
            if int(m.quota_wh) <= 0:
                continue
            # What is left this month beyond what the levels still running keep.
            left = await ledger.balance(conn, f"quota:{m.tag}", QUOTA)
            left -= sum(t.amount for t in legs if t.debit == f"quota:{m.tag}")
            keep = await allowance(conn, m.tag, now)
            back = max(0, left - keep)
            if back:
                legs.append(Transfer(f"quota-end:{m.id}", f"quota:{m.tag}", "pool:quota", back,
                                     QUOTA, "quota-expire", str(m.id), f"membership {m.id} ended"))
                returned += back
        if legs:
            await ledger.post(conn, legs, f"membership-expire:{now.date().isoformat()}:{expired[0]}")
        if expired:
            await conn.execute(update(memberships).where(among(conn, memberships.c.id, expired))
                               .values(status="expired", expired_at=now))
        entitled = (await conn.execute(select(memberships.c.tag).distinct().where(and_(
            active_at(now), memberships.c.quota_wh > 0)))).scalars().all()
        manual = (await conn.execute(select(members.c.tag).where(members.c.quota_wh > 0)))\
            .scalars().all()
        for tag in sorted(set(entitled) | set(manual)):
            grant_legs = await quota_legs(conn, tag, now)
            if grant_legs:
                await ledger.post(conn, grant_legs, f"quota-month:{tag}:{month_of(now)}")
                granted.append(tag)
    return DailyRun(expired, returned, granted)


async def ungranted_wh(conn: AsyncConnection, now: datetime) -> int:
    """Free Wh members are entitled to this month whose grant is not on the ledger yet (the
    liability report counts them: a quota is owed from the first of the month)."""
    entitled = set((await conn.execute(select(memberships.c.tag).distinct().where(and_(
        active_at(now), memberships.c.quota_wh > 0)))).scalars().all())
    entitled |= set((await conn.execute(select(members.c.tag).where(members.c.quota_wh > 0)))
                    .scalars().all())
    month = month_of(now)
    total = 0
    for tag in entitled:
        if not await ledger.posted(conn, f"quota-grant:{tag}:{month}"):
            total += await allowance(conn, tag, now)
    return total
