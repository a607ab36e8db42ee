"""Granting a membership level: an OEM activation by VIN or a purchase, with the starter
reward of an OEM activation (the rules: memberships.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.settlement import ledger, loyalty
from cocharge.settlement.ledger import Transfer
from cocharge.settlement.memberships import (
    QUOTA,
    VIN,
    MembershipError,
    active_at,
    add_months,
    month_of,
    quota_legs,
)
from cocharge.store.db import utcnow
from cocharge.store.schema import members, memberships


@dataclass(frozen=True)
class Granted:
    id: int
    new: bool
    tag: str
    level: str
    starts_at: datetime
    ends_at: datetime
    quota_wh: int
    coins: int
    credit: int



async def grant(engine: AsyncEngine, tag: str, *, brand: str | None = None, vin: str | None = None,
                level: str | None = None, months: int | None = None, days: int | None = None,
                ref: str | None = None, now: datetime | None = None) -> Granted:
    """An OEM activation (`brand` and `vin`) or a purchase (`level`, `months`, `ref`)."""
    now = now or utcnow()
    oem = vin is not None
    if vin is not None:
        vin = vin.strip().upper()
        if not VIN.match(vin):
            raise MembershipError(f"VIN {vin!r}: 17 letters and digits (no I, O or Q)")
        if not brand:
            raise MembershipError("an OEM activation needs --brand (the vehicle's make)")
        ref = f"vin:{vin}"
    elif not ref:
        raise MembershipError("a purchased level needs --ref (the payment's id): it is granted once")
    if not oem and not level:
        raise MembershipError("give --brand and --vin (OEM activation) or --level and --months")
    async with engine.begin() as conn:
        await ledger.lock(conn)
        if await conn.scalar(select(members.c.tag).where(members.c.tag == tag)) is None:
            raise MembershipError(f"no member with tag {tag!r}: see `cocharge member list`")
        rules = await loyalty.current_rules(conn)
        old = (await conn.execute(select(memberships).where(memberships.c.ref == ref))).first()
        if old is not None:
            if old.tag != tag:
                what = f"VIN {vin}" if oem else f"ref {ref!r}"
                raise MembershipError(f"{what} was already used for {old.tag}'s membership "
                                      f"{old.id}: a VIN activates once")
            return Granted(int(old.id), False, tag, old.level, old.starts_at, old.ends_at,
                           int(old.quota_wh), 0, 0)
        length: int | None
        if oem:
            assert brand is not None
            try:
                row = rules.brand(brand)
            except ValueError as exc:
                raise MembershipError(str(exc)) from exc
            brand_name, level_name, length = brand.upper(), row.level, months or row.months
        else:
            assert level is not None
            brand_name, level_name, length = "-", level, months
            if level not in rules.levels:
                raise MembershipError(f"no level {level!r}: one of {', '.join(rules.levels)} "
                                      "(membership.levels in `cocharge rewards rules show`)")
        if (length or 0) <= 0 and not days:
            raise MembershipError("give --months (at least 1)")
        held = await conn.scalar(select(memberships.c.id).where(and_(
            memberships.c.tag == tag, memberships.c.brand == brand_name, active_at(now))))
        if oem and held is not None:
            raise MembershipError(f"{tag} already holds a {brand_name} membership ({held}) that "
                                  "has not ended: one per member and brand")
        lvl = rules.levels[level_name]
        ends = now + timedelta(days=days) if days else add_months(now, int(length or 0))
        # This month's quota already granted (another level, a quota set by hand): the new
        # level's quota is added for the rest of the month.
        topped = await ledger.posted(conn, f"quota-grant:{tag}:{month_of(now)}")
        membership_id = int((await conn.execute(insert(memberships).values(
            tag=tag, level=level_name, brand=brand_name, vin=vin if oem else None,
            source="oem" if oem else "purchase", ref=ref, starts_at=now, ends_at=ends,
            quota_wh=lvl.quota_wh, free_charging=lvl.free_charging, status="active",
            created_at=now).returning(memberships.c.id))).scalar_one())
        coins = credit = 0
        top_up = ([Transfer(f"quota-grant:{tag}:{month_of(now)}:m{membership_id}", "pool:quota",
                            f"quota:{tag}", lvl.quota_wh, QUOTA, "quota-grant", str(membership_id),
                            f"free energy for {month_of(now)}, {level_name}")]
                  if topped and lvl.quota_wh > 0 else [])
        if oem:
            # The starter reward, once per member whatever the number of cars.
            event_id = f"oem_activated:{tag}"
            if not await loyalty.event_applied(conn, event_id):
                batch = loyalty.RewardBatch(rules)
                await batch.reward(conn, tag, "oem_activated", event_id,
                                   rules.reward("oem_activated"), ref)
                legs = batch.legs + await quota_legs(conn, tag, now) + top_up
                if legs:
                    await ledger.post(conn, legs, f"membership:{membership_id}")
                await batch.record(conn)
                coins, credit = batch.events[0]["coins"], batch.events[0]["credit"]
                return Granted(membership_id, True, tag, level_name, now, ends, lvl.quota_wh,
                               coins, credit)
        legs = await quota_legs(conn, tag, now) + top_up
        if legs:
            await ledger.post(conn, legs, f"membership:{membership_id}")
    return Granted(membership_id, True, tag, level_name, now, ends, lvl.quota_wh, coins, credit)
