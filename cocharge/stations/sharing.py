"""Sharing rules, bookings, groups and queued commands in the database.

The operator's side (CLI) writes here; the running gateway's controller reads the
same tables and acts on them, so nothing needs the gateway to be running to be
recorded. Every check is made by `cocharge.stations.policy`; this module only loads
and stores.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.hours import RuleError, parse_window
from cocharge.settlement import loyalty
from cocharge.stations import policy
from cocharge.stations.policy import Booking, Member, SharingRules
from cocharge.stations.registry import (
    MAX_NAME,
    RegistryError,
    _iso,
    normalize_phone,
    phone_taken,
)
from cocharge.store import audit
from cocharge.store.db import utcnow
from cocharge.store.schema import (
    bookings,
    charge_groups,
    group_members,
    members,
    pending_commands,
    station_rules,
    stations,
)
from cocharge.store.sql import among

LIVE_BOOKING = ("booked",)


def _fail(exc: RuleError) -> RegistryError:
    return RegistryError(str(exc))


# --- rules ----------------------------------------------------------------------------------

async def load_rules(conn: AsyncConnection,
                     station_ids: Sequence[str] | None = None) -> dict[tuple[str, int], SharingRules]:
    """Every stored rule set, keyed by (station, connector); connector 0 is the station's."""
    query = select(station_rules.c.station_id, station_rules.c.connector_id, station_rules.c.rules)
    if station_ids is not None:
        query = query.where(among(conn, station_rules.c.station_id, station_ids))
    rows = (await conn.execute(query)).all()
    return {(r.station_id, r.connector_id): _parsed(r.rules) for r in rows}


@functools.lru_cache(maxsize=20_000)
def _parsed(text: str) -> SharingRules:
    """A stored rule set, parsed once for each text (the sharing controller reads every
    station's rules each tick, every 2 s: 10,000 stations' parsed anew took 0.3 s of CPU,
    in one hold of the event loop). SharingRules is frozen: one object serves them all."""
    return SharingRules.from_json(json.loads(text))


def rules_for(all_rules: dict[tuple[str, int], SharingRules], station_id: str,
              connector_id: int) -> SharingRules | None:
    """The rules governing one connector; None when the owner set none (not shared-managed)."""
    return all_rules.get((station_id, connector_id)) or all_rules.get((station_id, 0))


async def _active_member(conn: AsyncConnection, tag: str) -> None:
    status = await conn.scalar(select(members.c.status).where(members.c.tag == tag))
    if status is None:
        raise RegistryError(f"no member with tag {tag!r}: see `cocharge member list`")
    if status != "active":
        raise RegistryError(f"member {tag!r} is {status}: a {status} member cannot book")


async def _station(conn: AsyncConnection, station_id: str) -> Any:
    row = (await conn.execute(select(stations).where(stations.c.id == station_id))).first()
    if row is None:
        raise RegistryError(f"no station {station_id!r}: see `cocharge station list`")
    return row


def rule_changes(given: dict[str, Any]) -> dict[str, Any]:
    """Sharing rules to change (fields of SharingRules), from what people and programs
    write: the CLI's options, the API's body and the console's form read the same way here.
    `windows` ['mon-fri 19:00-23:00'] ([]: around the clock), `closed_dates` ['2026-12-25'],
    `allowed_tags` / `allowed_groups` / `allowed_models`, `owner_tags` (lists), `bookings`,
    `owner_priority` (true/false), `tz`, `min_credit` (0 to 1,000,000). RuleError says what
    is wrong; nothing is written here."""
    changes: dict[str, Any] = {}
    if "windows" in given:
        changes["windows"] = tuple(parse_window(str(w)) for w in given["windows"] or ())
    if "closed_dates" in given:
        days = set()
        for text in given["closed_dates"] or ():
            try:
                days.add(date.fromisoformat(str(text).strip()))
            except ValueError:
                raise RuleError(f"closed date {str(text)[:30]!r}: write it as YYYY-MM-DD, "
                                "e.g. 2026-12-25") from None
        changes["closed_dates"] = frozenset(days)
    for key in ("allowed_tags", "allowed_groups", "allowed_models", "owner_tags"):
        if key in given:
            changes[key] = frozenset(str(t).strip() for t in given[key] or () if str(t).strip())
    for key in ("bookings", "owner_priority"):
        if key in given:
            if not isinstance(given[key], bool):
                raise RuleError(f"{key}: true or false")
            changes[key] = given[key]
    if "tz" in given:
        changes["tz"] = str(given["tz"])
    if "min_credit" in given:
        least = given["min_credit"]
        if isinstance(least, bool) or not isinstance(least, int) or not 0 <= least <= 1_000_000:
            raise RuleError(f"min_credit {least!r}: a whole number from 0 to 1,000,000")
        changes["min_credit"] = least
    return changes


async def set_rules(engine: AsyncEngine, station_id: str, connector_id: int,
                    changes: dict[str, Any], reset: bool = False,
                    by: tuple[str, str | None] | None = None,
                    said: dict[str, Any] | None = None) -> SharingRules:
    """Merge `changes` (fields of SharingRules) into the stored rules and save them; `by`
    (who, from where) goes into the audit trail with `said` (the change as it was asked) in
    the same transaction."""
    async with engine.begin() as conn:
        station = await _station(conn, station_id)
        if connector_id > station.connectors:
            raise RegistryError(f"station {station_id} has connectors 1..{station.connectors}")
        stored = await load_rules(conn, [station_id])
        current = SharingRules() if reset else (
            stored.get((station_id, connector_id))
            or (stored.get((station_id, 0)) if connector_id else None) or SharingRules())
        try:
            rules = policy.check_rules(replace(current, **changes))
        except RuleError as exc:
            raise _fail(exc) from exc
        await conn.execute(delete(station_rules).where(and_(
            station_rules.c.station_id == station_id, station_rules.c.connector_id == connector_id)))
        await conn.execute(insert(station_rules).values(
            station_id=station_id, connector_id=connector_id,
            rules=json.dumps(rules.to_json(), sort_keys=True), updated_at=utcnow()))
        if by is not None:
            await audit.record(conn, by[0], by[1], "rules", station_id, None,
                               {**(said or {}), **({"connector": connector_id}
                                                   if connector_id else {})})
    return rules


async def clear_rules(engine: AsyncEngine, station_id: str) -> None:
    async with engine.begin() as conn:
        await _station(conn, station_id)
        await conn.execute(delete(station_rules).where(station_rules.c.station_id == station_id))


async def show_rules(engine: AsyncEngine, station_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        await _station(conn, station_id)
        found = await load_rules(conn, [station_id])
    return {("station" if c == 0 else f"connector {c}"): r.to_json()
            for (_, c), r in sorted(found.items())}


# --- members --------------------------------------------------------------------------------

def member_of(row: Any) -> Member:
    groups = frozenset(g.strip() for g in (row.groups or "").split(",") if g.strip())
    return Member(row.tag, groups, row.vehicle_model)


async def update_member(engine: AsyncEngine, tag: str, groups: str | None = None,
                        vehicle_model: str | None = None, quota_wh: int | None = None,
                        prefers_green: bool | None = None, household: str | None = None,
                        pay_with: str | None = None, language: str | None = None, *,
                        name: str | None = None, phone: str | None = None,
                        expires: datetime | Literal[""] | None = None,
                        by: tuple[str, str | None] | None = None) -> dict[str, Any]:
    """Change a member's details (None: unchanged; '' clears a text, `expires=''` the
    expiry): the one place the CLI, the API and the console change a member. `by` (who,
    from where) goes into the audit trail in the same transaction. Returns what changed,
    as stored."""
    values: dict[str, Any] = {}
    if name is not None:
        if not name.strip() or len(name) > MAX_NAME or not name.isprintable():
            raise RegistryError(f"name: 1 to {MAX_NAME} printable characters")
        values["name"] = name.strip()
    if phone is not None:
        values["phone"] = normalize_phone(phone) if phone.strip() else None
    if expires is not None:
        values["expires_at"] = (None if expires == "" else
                                expires.astimezone(UTC).replace(tzinfo=None)
                                if expires.tzinfo else expires)
    if language is not None:
        from cocharge.stations.display import LANGUAGES

        if language not in (*LANGUAGES, ""):
            raise RegistryError(f"language {language!r}: one of {', '.join(LANGUAGES)} ('' for "
                                "the platform's display_language)")
        values["language"] = language or None
    if pay_with is not None:
        chosen = [p.strip() for p in pay_with.split(",") if p.strip()]
        if any(p not in ("coins", "points") for p in chosen):
            raise RegistryError(f"pay with {pay_with!r}: coins, points, coins,points or '' "
                                "(the wallet only)")
        values["pay_with"] = ",".join(sorted(set(chosen))) or None
    if household is not None:
        if len(household.strip()) > 20 or not household.isprintable():
            raise RegistryError(f"household {household!r}: up to 20 printable characters "
                                "(OCPP's limit)")
        values["household"] = household.strip() or None
    if groups is not None:
        chosen = [g.strip() for g in groups.split(",") if g.strip()]
        if len(",".join(chosen)) > 500 or not all(g.isprintable() for g in chosen):
            raise RegistryError("groups: comma-separated names, 500 printable characters in all")
        values["groups"] = ",".join(chosen) or None
    if vehicle_model is not None:
        if len(vehicle_model) > 100 or not vehicle_model.isprintable():
            raise RegistryError("vehicle: up to 100 printable characters")
        values["vehicle_model"] = vehicle_model.strip() or None
    if quota_wh is not None:
        if not 0 <= quota_wh <= 100_000_000:
            raise RegistryError("quota: 0 to 100,000 kWh a month")
        values["quota_wh"] = quota_wh
    if prefers_green is not None:
        values["prefers_green"] = prefers_green
    if not values:
        raise RegistryError("nothing to change: give --name, --phone, --expires, --groups, "
                            "--vehicle, --quota-kwh, --green, --household, --pay-with or --lang")
    async with engine.begin() as conn:
        if values.get("phone") is not None:
            holder = (await phone_taken(conn, [values["phone"]])).get(values["phone"])
            if holder not in (None, tag):
                raise RegistryError(f"phone {values['phone']} already belongs to member "
                                    f"{holder}: one phone number, one account")
        done = await conn.execute(update(members).where(members.c.tag == tag).values(**values))
        if done.rowcount == 0:
            raise RegistryError(f"no member with tag {tag!r}: see `cocharge member list`")
        shown = {k: _iso(v) if isinstance(v, datetime) else v for k, v in values.items()}
        if by is not None:
            await audit.record(conn, by[0], by[1], "member-changed", None, f"member:{tag}",
                               shown)
    return shown


async def member_details(engine: AsyncEngine, tag: str) -> dict[str, Any]:
    """What `update_member` changes, as it stands (the console's edit form)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(members).where(members.c.tag == tag))).first()
    if row is None:
        raise RegistryError(f"no member with tag {tag!r}: see `cocharge member list`")
    return {"tag": row.tag, "name": row.name, "phone": row.phone, "status": row.status,
            "expires_at": _iso(row.expires_at), "groups": row.groups or "",
            "vehicle_model": row.vehicle_model or "",
            "quota_kwh": "" if row.quota_wh is None else str(Decimal(row.quota_wh) / 1000),
            "prefers_green": bool(row.prefers_green), "household": row.household or "",
            "pay_with": row.pay_with or "", "language": row.language or "",
            "referred_by": row.referred_by}


# --- bookings -------------------------------------------------------------------------------

def booking_of(row: Any) -> Booking:
    return Booking(int(row.id), row.connector_id, row.tag, row.starts_at, row.ends_at, row.group_id)


async def live_bookings(conn: AsyncConnection, station_ids: Sequence[str] | None,
                        now: datetime) -> list[Any]:
    """Bookings not yet over and not cancelled (rows)."""
    query = select(bookings).where(and_(bookings.c.status.in_(LIVE_BOOKING),
                                        bookings.c.ends_at > now))
    if station_ids is not None:
        query = query.where(among(conn, bookings.c.station_id, station_ids))
    return list((await conn.execute(query.order_by(bookings.c.starts_at))).all())


async def _group_holds(conn: AsyncConnection, station_id: str, start: datetime, end: datetime,
                       connectors: int, except_group: int | None = None) -> list[Booking]:
    """A forming group holds its whole slot on every connector of its station."""
    rows = (await conn.execute(select(charge_groups).where(and_(
        charge_groups.c.station_id == station_id, charge_groups.c.status == "forming",
        charge_groups.c.slot_start < end, charge_groups.c.slot_end > start)))).all()
    return [Booking(-int(g.id), c, f"group {g.id}", g.slot_start, g.slot_end, int(g.id))
            for g in rows if g.id != except_group for c in range(1, connectors + 1)]


@dataclass(frozen=True)
class _BookingScene:
    """What a booking at a station is checked against (`policy.check_booking`)."""

    connectors: int
    rules: SharingRules
    existing: list[Booking]
    member: Member

    def check(self, connector_id: int, tag: str, start: datetime, end: datetime,
              now: datetime) -> None:
        policy.check_booking(self.rules, self.existing, Booking(0, connector_id, tag, start, end),
                             now, self.connectors, self.member)


async def _booking_scene(conn: AsyncConnection, station: Any, connector_id: int, tag: str,
                         start: datetime, end: datetime, now: datetime) -> _BookingScene:
    """The station's rules for the connector, its live bookings and the groups' holds between
    `start` and `end`, and the member as the rules see it (with its credit when they ask)."""
    station_id = str(station.id)
    rules = rules_for(await load_rules(conn, [station_id]), station_id, connector_id) or SharingRules()
    existing = [booking_of(r) for r in await live_bookings(conn, [station_id], now)]
    existing += await _group_holds(conn, station_id, start, end, station.connectors)
    row = (await conn.execute(select(members).where(members.c.tag == tag))).first()
    member = member_of(row) if row is not None else Member(tag)
    if rules.min_credit:
        member = replace(member, credit=await loyalty.credit_score(conn, tag))
    return _BookingScene(station.connectors, rules, existing, member)


async def add_booking(engine: AsyncEngine, station_id: str, connector_id: int, tag: str,
                      start: datetime, end: datetime, now: datetime | None = None) -> int:
    now = now or utcnow()
    async with engine.begin() as conn:
        station = await _station(conn, station_id)
        await _active_member(conn, tag)
        scene = await _booking_scene(conn, station, connector_id, tag, start, end, now)
        try:
            scene.check(connector_id, tag, start, end, now)
        except RuleError as exc:
            raise _fail(exc) from exc
        return int((await conn.execute(insert(bookings).values(
            station_id=station_id, connector_id=connector_id, tag=tag, starts_at=start,
            ends_at=end, status="booked", reserved=False, created_at=now,
        ).returning(bookings.c.id))).scalar_one())


async def free_slots(engine: AsyncEngine, station_id: str, connector_id: int, tag: str,
                     count: int = 6, hours: int = 1, within_h: int = 48,
                     now: datetime | None = None) -> list[tuple[datetime, datetime]]:
    """The next `count` slots of `hours` (on the hour, within `within_h`) that `tag` could
    book at the connector: checked as a booking is (`add_booking`: open, shared with the
    member, free); [] when the owner takes no bookings there."""
    now = now or utcnow()
    first = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    async with engine.connect() as conn:
        scene = await _booking_scene(conn, await _station(conn, station_id), connector_id, tag,
                                     first, first + timedelta(hours=within_h), now)
    if not scene.rules.bookings:
        return []
    found: list[tuple[datetime, datetime]] = []
    for n in range(within_h):
        start = first + timedelta(hours=n)
        end = start + timedelta(hours=hours)
        try:
            scene.check(connector_id, tag, start, end, now)
        except RuleError:
            continue
        found.append((start, end))
        if len(found) == count:
            break
    return found


async def list_bookings(engine: AsyncEngine, station_id: str | None = None,
                        tag: str | None = None,
                        station_ids: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Bookings in the order of their slots: at `station_id`, of `tag`, at `station_ids`
    (each only when given; chosen by the database, not read whole and dropped)."""
    query = select(bookings).order_by(bookings.c.starts_at, bookings.c.id)
    if station_id:
        query = query.where(bookings.c.station_id == station_id)
    if tag is not None:
        query = query.where(bookings.c.tag == tag)
    if station_ids is not None:
        query = query.where(among(engine, bookings.c.station_id, station_ids))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [{"id": r.id, "station": r.station_id, "connector": r.connector_id, "tag": r.tag,
             "from": _iso(r.starts_at), "to": _iso(r.ends_at), "status": r.status,
             "reserved": r.reserved, "group": r.group_id, "session": r.session_id} for r in rows]


async def cancel_booking(engine: AsyncEngine, booking_id: int) -> None:
    """Cancel a booking; the gateway cancels the charger's reservation at its next tick."""
    async with engine.begin() as conn:
        row = (await conn.execute(select(bookings).where(bookings.c.id == booking_id))).first()
        if row is None:
            raise RegistryError(f"no booking {booking_id}: see `cocharge booking list`")
        if row.status != "booked":
            raise RegistryError(f"booking {booking_id} is {row.status}; only a booked slot can be cancelled")
        await conn.execute(update(bookings).where(bookings.c.id == booking_id)
                           .values(status="cancelled"))


# --- groups ---------------------------------------------------------------------------------

async def create_group(engine: AsyncEngine, station_id: str, start: datetime, end: datetime,
                       min_members: int | None, initiator: str | None,
                       now: datetime | None = None) -> int:
    """Open a group; it forms at `min_members` (None: the rule table's `group.min_members`,
    which is also the least a group may ask for)."""
    from cocharge.settlement import loyalty

    now = now or utcnow()
    if end <= start:
        raise RegistryError("the group's slot must end after it starts")
    if start <= now:
        raise RegistryError("the group's slot must start in the future: members join before it")
    async with engine.begin() as conn:
        least = (await loyalty.current_rules(conn)).group_min_members
        if min_members is None:
            min_members = least
        elif min_members < least:
            raise RegistryError(f"a group needs at least {least} members (group.min_members in "
                                f"`cocharge rewards rules show`), not {min_members}")
        station = await _station(conn, station_id)
        rules = rules_for(await load_rules(conn, [station_id]), station_id, 1) or SharingRules()
        taken = [booking_of(r) for r in await live_bookings(conn, [station_id], now)]
        taken += await _group_holds(conn, station_id, start, end, station.connectors)
        for c in range(1, station.connectors + 1):
            try:
                policy.check_booking(rules, taken, Booking(0, c, "group", start, end), now,
                                     station.connectors)
            except RuleError as exc:
                raise _fail(exc) from exc
        if initiator:
            await _active_member(conn, initiator)
        group_id = int((await conn.execute(insert(charge_groups).values(
            station_id=station_id, slot_start=start, slot_end=end, min_members=min_members,
            status="forming", initiator=initiator, created_at=now,
        ).returning(charge_groups.c.id))).scalar_one())
    if initiator:
        await join_group(engine, group_id, initiator, now)
    return group_id


async def join_group(engine: AsyncEngine, group_id: int, tag: str,
                     now: datetime | None = None) -> str:
    """Join; returns the group's status afterwards (it forms on reaching its minimum)."""
    from cocharge.settlement import loyalty

    now = now or utcnow()
    async with engine.begin() as conn:
        group = (await conn.execute(select(charge_groups).where(charge_groups.c.id == group_id))).first()
        if group is None:
            raise RegistryError(f"no group {group_id}: see `cocharge group list`")
        if group.status == "failed":
            raise RegistryError(f"group {group_id} did not form before its slot")
        if group.slot_start <= now:
            raise RegistryError(f"group {group_id}'s slot has started: joining is closed")
        await _active_member(conn, tag)
        joined = await conn.scalar(select(group_members.c.tag).where(and_(
            group_members.c.group_id == group_id, group_members.c.tag == tag)))
        if joined:
            raise RegistryError(f"{tag} is already in group {group_id}")
        reward_rules = await loyalty.current_rules(conn)
        if reward_rules.group_min_credit > 0:
            credit = await loyalty.credit_score(conn, tag, reward_rules)
            if credit < reward_rules.group_min_credit:
                raise RegistryError(f"{tag}'s credit score is {credit}; joining a group needs "
                                    f"{reward_rules.group_min_credit} (group.min_credit)")
        await conn.execute(insert(group_members).values(group_id=group_id, tag=tag, joined_at=now))
        tags = list((await conn.execute(select(group_members.c.tag)
                                        .where(group_members.c.group_id == group_id)
                                        .order_by(group_members.c.joined_at, group_members.c.tag)))
                    .scalars())
        status = group.status
        if len(tags) >= group.min_members:
            status = "formed"
            station = await _station(conn, group.station_id)
            # (Re)book every member's share of the slot.
            await conn.execute(delete(bookings).where(bookings.c.group_id == group_id))
            for b in policy.group_bookings(tags, station.connectors, group.slot_start,
                                           group.slot_end, group_id):
                await conn.execute(insert(bookings).values(
                    station_id=group.station_id, connector_id=b.connector_id, tag=b.tag,
                    starts_at=b.start, ends_at=b.end, status="booked", reserved=False,
                    group_id=group_id, created_at=now))
            values: dict[str, Any] = {"status": "formed", "formed_at": group.formed_at or now}
            if group.status != "formed":
                # Chosen once, now: the highest credit score at this moment (ties: who joined
                # first); settlement honours it whatever the scores do later.
                values["free_tag"] = await _highest_credit(conn, tags, reward_rules)
            await conn.execute(update(charge_groups).where(charge_groups.c.id == group_id)
                               .values(**values))
    return str(status)


async def _highest_credit(conn: AsyncConnection, tags: Sequence[str], rules: Any) -> str | None:
    """The member (in join order) with the highest credit above 0; the first of equals."""
    from cocharge.settlement import loyalty

    best, best_credit = None, 0
    for tag in tags:
        credit = await loyalty.credit_score(conn, tag, rules)
        if credit > best_credit:
            best, best_credit = tag, credit
    return best


async def show_group(engine: AsyncEngine, group_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        group = (await conn.execute(select(charge_groups).where(charge_groups.c.id == group_id))).first()
        if group is None:
            raise RegistryError(f"no group {group_id}: see `cocharge group list`")
        tags = list((await conn.execute(select(group_members.c.tag)
                                        .where(group_members.c.group_id == group_id)
                                        .order_by(group_members.c.joined_at, group_members.c.tag)))
                    .scalars())
        slots = (await conn.execute(select(bookings).where(bookings.c.group_id == group_id)
                                    .order_by(bookings.c.starts_at, bookings.c.connector_id))).all()
    return {"id": group.id, "station": group.station_id, "from": _iso(group.slot_start),
            "to": _iso(group.slot_end), "min_members": group.min_members, "status": group.status,
            "initiator": group.initiator, "members": tags, "free_session": group.free_tag,
            "bookings": [f"{b.tag}: connector {b.connector_id} {_iso(b.starts_at)}-{_iso(b.ends_at)}"
                         f" ({b.status})" for b in slots]}


async def list_groups(engine: AsyncEngine, station_ids: Collection[str] | None = None,
                      member: str | None = None) -> list[dict[str, Any]]:
    """Group-charging slots in the order of their start, each with its member count: at
    `station_ids`, those `member` joined (each only when given)."""
    query = select(charge_groups).order_by(charge_groups.c.slot_start)
    if station_ids is not None:
        query = query.where(among(engine, charge_groups.c.station_id, station_ids))
    if member is not None:
        query = query.where(charge_groups.c.id.in_(
            select(group_members.c.group_id).where(group_members.c.tag == member)))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        counts: dict[int, int] = dict((await conn.execute(
            select(group_members.c.group_id, func.count())
            .where(among(conn, group_members.c.group_id, [int(g.id) for g in rows]))
            .group_by(group_members.c.group_id))).all()) if rows else {}
    return [{"id": g.id, "station": g.station_id, "from": _iso(g.slot_start), "to": _iso(g.slot_end),
             "members": counts.get(g.id, 0), "min": g.min_members, "status": g.status} for g in rows]


async def fail_unformed_groups(conn: AsyncConnection, now: datetime) -> list[int]:
    """Groups still forming when their slot starts did not form."""
    ids = list((await conn.execute(select(charge_groups.c.id).where(and_(
        charge_groups.c.status == "forming", charge_groups.c.slot_start <= now)))).scalars())
    if ids:
        await conn.execute(update(charge_groups).where(charge_groups.c.id.in_(ids))
                           .values(status="failed"))
    return [int(i) for i in ids]


# --- queued commands ------------------------------------------------------------------------

async def list_commands(engine: AsyncEngine, station_id: str | None = None) -> list[dict[str, Any]]:
    now = utcnow()
    query = select(pending_commands).order_by(pending_commands.c.id)
    if station_id:
        query = query.where(pending_commands.c.station_id == station_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [{"id": r.id, "station": r.station_id, "command": r.command,
             "args": r.args, "queued": _iso(r.created_at), "expires": _iso(r.expires_at),
             "status": "expired" if r.status == "pending" and r.expires_at <= now else r.status,
             "delivered": _iso(r.delivered_at), "result": r.result} for r in rows]


def parse_when(text: str, tz: str = "Asia/Shanghai") -> datetime:
    """A CLI time: ISO 8601 with offset or 'Z', or local wall-clock time of `tz`; naive UTC out."""
    from zoneinfo import ZoneInfo

    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise RegistryError(f"{text!r} is not a time: write 2026-11-24T19:00 (station time) "
                            "or 2026-11-24T11:00Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz))
    return value.astimezone(UTC).replace(tzinfo=None)
