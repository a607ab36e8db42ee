"""Settling a finished session: CDR, discounts, split, one atomic ledger batch.

`settle_session` is idempotent: a session is settled once (its `settlements` row and
its ledger batch are written in the same transaction); running it again changes
nothing. `settle_pending` settles every completed session that is not settled yet
(after a crash, or with `cocharge settle`). `Settler` does it in the gateway, one
session at a time, as sessions end.

A session that fails to settle never blocks the others: the settler retries it with a
growing delay a few times, then (or at once, when its times cannot be priced) quarantines
it: status `quarantined`, the reason kept on it (`sessions list`, the console, the
liability report), its hold still held until an operator's `sessions review`.

Ledger legs of a session (asset CNY, ids `s<session>:<leg>`):
  wallet:<tag>     -> clearing:sessions   what the wallet can pay
  receivable:<tag> -> clearing:sessions   the shortfall (the member owes it)
  clearing:sessions -> host:<name> / platform / property:<name> / operator:<name>
Free quota (asset QUOTA_WH): pool:quota -> quota:<tag> once a month (the month's
allowance, after the rest of the last month's expired back), quota:<tag> -> pool:quota
for the energy a session used.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, desc, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.settlement import funds, ledger, loyalty, memberships, points
from cocharge.settlement.discounts import DiscountContext, Priced, apply_discounts, pct_of
from cocharge.settlement.ledger import Transfer
from cocharge.settlement.money import MoneyError, fmt, to_fen
from cocharge.settlement.overstay import IdleFeeRule, idle_fee
from cocharge.settlement.split import SplitTerms, split_amount
from cocharge.settlement.tariff import (
    Cdr,
    SessionTimesError,
    Tariff,
    Usage,
    compute_cdr,
    simple_tariff,
    tariff_from_json,
    tariff_to_json,
)
from cocharge.settlement.tariff21 import MEMBER_PREFIX
from cocharge.store.db import utcnow
from cocharge.store.schema import (
    ENERGY_REGISTER,
    charge_groups,
    members,
    meter_samples,
    sessions,
    settlements,
    station_events,
    station_terms,
    stations,
    tariffs,
)
from cocharge.store.sql import among, upsert

log = logging.getLogger(__name__)
QUOTA = "QUOTA_WH"
COIN, GREEN_PT = "COIN", "GREEN_PT"


class SettlementError(ValueError):
    """An operator request about tariffs or terms that cannot apply."""


class Unbillable(SettlementError):
    """A completed session without what a bill needs (a tag, its times): set apart at once."""


@dataclass(frozen=True)
class SettlementDefaults:
    """What applies when an owner set nothing (SPEC §3 numbers)."""

    price_per_kwh: Decimal = Decimal("1.50")
    idle: IdleFeeRule = IdleFeeRule()
    tz: str = "Asia/Shanghai"
    # How far a 2.1 charger's own cost (costDetails) may be from ours before the session is
    # flagged for review instead of billed.
    charger_cost_tolerance_fen: int = 1

    def tariff(self) -> Tariff:
        return simple_tariff(self.price_per_kwh, idle=self.idle, tz=self.tz)


# --- tariffs --------------------------------------------------------------------------------

async def set_tariff(engine: AsyncEngine, station_id: str, connector_id: int, tariff: Tariff) -> int:
    """Add a tariff; sessions already started keep theirs (tariffs are never edited)."""
    async with engine.begin() as conn:
        row = (await conn.execute(select(stations.c.connectors).where(stations.c.id == station_id))).first()
        if row is None:
            raise SettlementError(f"no station {station_id!r}: see `cocharge station list`")
        if connector_id > row.connectors:
            raise SettlementError(f"station {station_id} has connectors 1..{row.connectors}")
        return int((await conn.execute(insert(tariffs).values(
            station_id=station_id, connector_id=connector_id,
            body=json.dumps(tariff_to_json(tariff), sort_keys=True), created_at=utcnow(),
        ).returning(tariffs.c.id))).scalar_one())


async def tariff_in_force(conn: AsyncConnection, station_id: str, connector_id: int,
                          at: datetime | None = None) -> tuple[int, Tariff] | None:
    """The newest tariff of the connector (else of the station) created by `at`."""
    query = (select(tariffs).where(and_(tariffs.c.station_id == station_id,
                                        tariffs.c.connector_id.in_([connector_id, 0])))
             .order_by(desc(tariffs.c.connector_id), desc(tariffs.c.created_at), desc(tariffs.c.id))
             .limit(1))
    if at is not None:
        query = query.where(tariffs.c.created_at <= at)
    row = (await conn.execute(query)).first()
    return (int(row.id), tariff_from_json(json.loads(row.body))) if row else None


async def tariffs_in_force(conn: AsyncConnection, station_ids: Sequence[str],
                           connector_id: int) -> dict[str, Tariff]:
    """`tariff_in_force` of one connector at many stations now, in one query: station ->
    its tariff (a station without one is left out)."""
    if not station_ids:
        return {}
    rows = (await conn.execute(select(tariffs).where(and_(
        among(conn, tariffs.c.station_id, station_ids),
        tariffs.c.connector_id.in_([connector_id, 0]))))).all()
    of_station: dict[str, list[Any]] = {}
    for row in rows:
        of_station.setdefault(row.station_id, []).append(row)
    newest = {sid: _newest(found, connector_id) for sid, found in of_station.items()}
    return {sid: tariff_from_json(json.loads(row.body)) for sid, row in newest.items()
            if row is not None}


def _newest(rows: Sequence[Any], connector_id: int, at: datetime | None = None) -> Any | None:
    """Of a station's tariff rows, the one `tariff_in_force` picks: the connector's before
    the station's (connector 0), the newest created by `at`."""
    return max((r for r in rows if r.connector_id in (connector_id, 0)
                and (at is None or r.created_at <= at)),
               default=None, key=lambda r: (r.connector_id, r.created_at, r.id))


async def show_tariffs(engine: AsyncEngine, station_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(tariffs).where(tariffs.c.station_id == station_id)
                                   .order_by(tariffs.c.id))).all()
    return [{"id": r.id, "connector": r.connector_id,
             "since": r.created_at.isoformat(timespec="seconds") + "Z", "tariff": json.loads(r.body)}
            for r in rows]


# --- split terms ----------------------------------------------------------------------------

def terms_to_json(terms: SplitTerms) -> dict[str, Any]:
    data = asdict(terms)
    for key, value in data.items():
        if isinstance(value, Decimal):
            data[key] = str(value)
        elif isinstance(value, datetime):
            data[key] = value.isoformat()
    return data


def terms_from_json(data: dict[str, Any]) -> SplitTerms:
    values = dict(data)
    for key in ("platform_pct", "green_platform_pct", "property_pct"):
        if key in values:
            values[key] = Decimal(values[key])
    for key in ("onboarded_at", "property_since"):
        if values.get(key):
            values[key] = datetime.fromisoformat(values[key])
    return SplitTerms(**values)


def property_of(terms: SplitTerms) -> str | None:
    """The property a station belongs to (sees it, commands it over MQTT, gets its events):
    the one its terms name while they are on the property model. A station moved to the
    host model (`split set --model host`) keeps the name in its terms, and leaves that
    property."""
    return terms.property if terms.model == "property" and terms.property else None


@functools.lru_cache(maxsize=20_000)
def property_in(body: str) -> str | None:
    """`property_of` the terms stored as this text, parsed once for each text (the MQTT side
    asks it of every station every few seconds)."""
    return property_of(terms_from_json(json.loads(body)))


async def terms_of(conn: AsyncConnection, station_id: str) -> SplitTerms:
    """The station's terms; by default a private host (its owner) onboarded when registered."""
    station = (await conn.execute(select(stations.c.owner, stations.c.created_at)
                                  .where(stations.c.id == station_id))).first()
    body = await conn.scalar(select(station_terms.c.body).where(station_terms.c.station_id == station_id))
    terms = terms_from_json(json.loads(body)) if body else SplitTerms()
    if terms.host is None:
        owner = station.owner if station and station.owner else f"owner-of-{station_id}"
        terms = replace(terms, host=owner)
    if terms.onboarded_at is None and station is not None:
        terms = replace(terms, onboarded_at=station.created_at)
    return terms


async def set_terms(engine: AsyncEngine, station_id: str, changes: dict[str, Any]) -> SplitTerms:
    async with engine.begin() as conn:
        if await conn.scalar(select(stations.c.id).where(stations.c.id == station_id)) is None:
            raise SettlementError(f"no station {station_id!r}: see `cocharge station list`")
        body = await conn.scalar(select(station_terms.c.body).where(station_terms.c.station_id == station_id))
        current = terms_from_json(json.loads(body)) if body else SplitTerms()
        if changes.get("property") and changes["property"] != current.property:
            changes = {**changes, "property_since": utcnow().replace(microsecond=0)}
        try:
            terms = replace(current, **changes).check()
        except MoneyError as exc:
            raise SettlementError(str(exc)) from exc
        if terms.model == "property" and not (terms.property and terms.operator):
            raise SettlementError("a property charger needs --property NAME and --operator NAME")
        stmt = upsert(conn, station_terms, ["station_id"], ["body", "updated_at"])
        await conn.execute(stmt.values(station_id=station_id,
                                       body=json.dumps(terms_to_json(terms), sort_keys=True),
                                       updated_at=utcnow()))
    return terms


# --- free quota -----------------------------------------------------------------------------

def quota_month(at: datetime, tz: str = "Asia/Shanghai") -> str:
    return at.replace(tzinfo=UTC).astimezone(ZoneInfo(tz)).strftime("%Y-%m")


async def quota_left(conn: AsyncConnection, tag: str, at: datetime) -> int:
    """Free Wh the member has left this month (see cocharge.settlement.memberships)."""
    return await memberships.quota_left(conn, tag, at)


async def _quota_legs(conn: AsyncConnection, tag: str, at: datetime,
                      used_wh: int, session_id: int) -> list[Transfer]:
    legs = await memberships.quota_legs(conn, tag, at)
    if used_wh > 0:
        legs.append(Transfer(f"s{session_id}:quota", f"quota:{tag}", "pool:quota", used_wh, QUOTA,
                             "quota-use", str(session_id)))
    return legs


# --- paying with coins and green points -------------------------------------------------------

def _redeemable(balance: int, fen_per_unit: Decimal, most_fen: int) -> tuple[int, int]:
    """(units, fen): as many units as pay at most `most_fen`, never more than held; each
    unit taken is worth what it pays (no fraction of a fen is lost)."""
    if balance <= 0 or fen_per_unit <= 0 or most_fen <= 0:
        return 0, 0
    units = min(balance, int(Decimal(most_fen) / fen_per_unit))
    fen = int(Decimal(units) * fen_per_unit)
    if fen <= 0:
        return 0, 0
    units = min(units, int(-(-Decimal(fen) // fen_per_unit)))  # the fewest units that pay `fen`
    return units, fen


async def _redemption(conn: AsyncConnection, row: Any, chosen: str | None, charge_fen: int,
                      rules: Any, session_id: int) -> tuple[list[list[Any]], list[Transfer]]:
    """What the member's coins and released green points pay of the charge (each within its
    share of the charge, coins first), if the member chose to pay with them. The platform
    funds it: the host's share is the same."""
    kinds = set((chosen or "").split(","))
    tag = row.id_tag
    lines: list[list[Any]] = []
    legs: list[Transfer] = []
    left = charge_fen
    for kind, account, asset, fen_per_unit, pct in (
            ("coins", f"coins:{tag}", COIN, rules.coin_value * 100, rules.coins_max_share_pct),
            ("points", f"greenpt:{tag}", GREEN_PT, rules.point_value * 100 / points.GREEN_SCALE,
             rules.points_max_share_pct)):
        if kind not in kinds:
            continue
        most = min(left, int(Decimal(charge_fen) * pct / 100))
        units, fen = _redeemable(await ledger.balance(conn, account, asset), fen_per_unit, most)
        if not units:
            continue
        left -= fen
        lines.append([asset, units, fen])
        ref = str(session_id)
        legs += [Transfer(f"s{session_id}:{kind}", account, f"redeemed:{kind}", units, asset,
                          "redeem", ref, f"session {session_id}"),
                 Transfer(f"s{session_id}:{kind}-cny", "platform", "clearing:sessions", fen, "CNY",
                          "redemption", ref, f"{units} {asset} at {fen_per_unit} fen")]
    return lines, legs


# --- settling -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settled:
    session_id: int
    cdr: Cdr
    priced: Priced
    paid_fen: int
    owed_fen: int
    split: list[tuple[str, int]]


async def _tariff_of(conn: AsyncConnection, row: Any,
                     defaults: SettlementDefaults) -> tuple[int | None, Any]:
    """The session's tariff: the one it started under, else the one in force then."""
    found = None
    if row.tariff_id is not None:
        body = await conn.scalar(select(tariffs.c.body).where(tariffs.c.id == row.tariff_id))
        found = (int(row.tariff_id), tariff_from_json(json.loads(body))) if body else None
    if found is None:
        found = await tariff_in_force(conn, row.station_id, row.connector_id, row.started_at)
    return found if found else (None, defaults.tariff())


async def tariff_of_session(engine: AsyncEngine, session_id: int,
                            defaults: SettlementDefaults = SettlementDefaults()) -> Tariff:
    """The tariff a session is priced with (the one it started under, else the one in force
    then, else the default)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).first()
        if row is None:
            raise SettlementError(f"no session {session_id}: see `cocharge sessions list`")
        return (await _tariff_of(conn, row, defaults))[1]  # type: ignore[no-any-return]


async def running_cost_fen(engine: AsyncEngine, session_id: int,
                           defaults: SettlementDefaults = SettlementDefaults()) -> int | None:
    """What a running session costs so far at its tariff (before discounts, which settlement
    applies at the end): the energy its meter shows now, the time until now. Shown to the
    driver at the charger (CostUpdated)."""
    return (await running_costs_fen(engine, [session_id], defaults)).get(session_id)


# Sessions a round of queries: few enough that the gateway's chargers, served by the same
# event loop, wait at most a few milliseconds behind one (benchmarks/fleet_page.py: 50 a
# round held the loop 75 ms on SQLite, 25 held it 4 ms).
_RUNNING_CHUNK = 25


async def running_costs_fen(engine: AsyncEngine, session_ids: Sequence[int],
                            defaults: SettlementDefaults = SettlementDefaults()
                            ) -> dict[int, int | None]:
    """`running_cost_fen` of many sessions (a fleet page of running sessions, polled): a
    query for their rows, one for the tariffs they started under and one for their meter
    readings, not three a session (1.3 ms a session of database round trips and statement
    building, measured). A session without a cost (not found, not started) maps to None."""
    costs: dict[int, int | None] = {}
    async with engine.connect() as conn:
        for first in range(0, len(session_ids), _RUNNING_CHUNK):
            ids = list(session_ids[first:first + _RUNNING_CHUNK])
            rows = (await conn.execute(select(sessions).where(sessions.c.id.in_(ids)))).all()
            tariff_ids = {int(r.tariff_id) for r in rows if r.tariff_id is not None}
            bodies = {int(t.id): tariff_from_json(json.loads(t.body)) for t in (
                await conn.execute(select(tariffs.c.id, tariffs.c.body)
                                   .where(tariffs.c.id.in_(sorted(tariff_ids))))
            ) if t.body} if tariff_ids else {}
            # Sessions that did not seal one: every tariff of their stations, chosen below
            # as `tariff_in_force` chooses (the connector's before the station's, the newest
            # created by the session's start).
            unsealed = sorted({r.station_id for r in rows
                               if r.tariff_id is None or int(r.tariff_id) not in bodies})
            of_station: dict[str, list[Any]] = {}
            if unsealed:
                for t in await conn.execute(select(tariffs).where(
                        tariffs.c.station_id.in_(unsealed))):
                    of_station.setdefault(t.station_id, []).append(t)
            readings: dict[int, list[tuple[datetime, float]]] = {}
            for sid, ts, value in await conn.execute(
                    select(meter_samples.c.session_id, meter_samples.c.ts, meter_samples.c.value)
                    .where(and_(meter_samples.c.session_id.in_(ids),
                                meter_samples.c.measurand == ENERGY_REGISTER,
                                meter_samples.c.phase.is_(None)))
                    .order_by(meter_samples.c.session_id, meter_samples.c.ts)):
                readings.setdefault(int(sid), []).append((ts, value))
            now = utcnow()
            for row in rows:
                if row.started_at is None:
                    continue
                tariff = bodies.get(int(row.tariff_id)) if row.tariff_id is not None else None
                if tariff is None:  # the one in force when it started, else the default
                    newest = _newest(of_station.get(row.station_id, []), row.connector_id,
                                     row.started_at)
                    tariff = (tariff_from_json(json.loads(newest.body)) if newest is not None
                              else defaults.tariff())
                costs[int(row.id)] = _cost_so_far(row, tariff, readings.get(int(row.id), []), now)
            await asyncio.sleep(0)  # the chargers' turn
    return costs


def _cost_so_far(row: Any, tariff: Tariff, readings: list[tuple[datetime, float]],
                 now: datetime) -> int | None:
    """A running session's cost at `now` (or at its last reading, if later: a charger's
    clock ahead of ours) from its energy register's readings, in the order of their time."""
    if readings and readings[-1][0] > now:
        now = readings[-1][0]
    base = float(row.meter_start_wh) if row.meter_start_wh is not None else (
        readings[0][1] if readings else 0.0)
    started = row.started_at
    points = [(started, 0.0)]
    energy = 0.0
    for ts, value in readings:
        if ts > started:
            energy = max(energy, value - base)
            points.append((ts, energy))
    points.append((now, energy))
    try:
        return int(compute_cdr(tariff, Usage(started, now, points, None, None)).total_fen)
    except SessionTimesError:
        return None  # shown without a cost; settlement quarantines it when it ends


async def payable_fen(engine: AsyncEngine, session_id: int) -> int | None:
    """What the driver pays for a settled session (after discounts); None if not settled."""
    async with engine.connect() as conn:
        value = await conn.scalar(select(settlements.c.payable_fen)
                                  .where(settlements.c.session_id == session_id))
    return None if value is None else int(value)


async def _usage(conn: AsyncConnection, row: Any) -> Usage:
    start, end = row.started_at, row.ended_at
    total = float(row.energy_wh or 0)
    samples = (await conn.execute(select(meter_samples.c.ts, meter_samples.c.value).where(and_(
        meter_samples.c.session_id == row.id, meter_samples.c.measurand == ENERGY_REGISTER,
        meter_samples.c.phase.is_(None))).order_by(meter_samples.c.ts))).all()
    base = float(row.meter_start_wh) if row.meter_start_wh is not None else (
        samples[0].value if samples else 0.0)
    points = [(start, 0.0)]
    for s in samples:
        if start < s.ts < end:
            value = min(max(points[-1][1], s.value - base), total)  # registers only go up
            points.append((s.ts, value))
    points.append((end, total))
    parking_start = row.idle_started_at
    parking_end = row.idle_ended_at
    if parking_start is not None and parking_end is None:
        parking_start = None  # still parked or never measured: not billed as parking
    return Usage(start, end, points, parking_start, parking_end)


async def _free_once(conn: AsyncConnection, group_id: int, tag: str, session_id: int) -> bool:
    """The member the group chose when it formed (highest credit then), first session."""
    chosen = await conn.scalar(select(charge_groups.c.free_tag).where(charge_groups.c.id == group_id))
    if chosen != tag:
        return False
    used = (await conn.execute(select(settlements.c.discounts).join(
        sessions, sessions.c.id == settlements.c.session_id).where(and_(
            sessions.c.group_id == group_id, sessions.c.id_tag == tag,
            sessions.c.id != session_id)))).scalars().all()
    return not any("free once" in text for text in used)


async def settle_session(engine: AsyncEngine, session_id: int,
                         defaults: SettlementDefaults = SettlementDefaults()) -> Settled | None:
    """Settle one completed session; None when it is settled already or cannot be billed."""
    async with engine.begin() as conn:
        row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).first()
        if row is not None and row.status == "flagged":
            await _void_hold(conn, row, "the session is flagged for review")
            return None
        if row is None or row.status != "completed":
            return None
        if row.started_at is None or row.ended_at is None or not row.id_tag:
            missing = [what for what, value in (("start time", row.started_at), ("end time",
                       row.ended_at), ("member tag", row.id_tag)) if not value]
            raise Unbillable(f"no {' or '.join(missing)}: nobody or nothing to bill")
        if await conn.scalar(select(settlements.c.session_id)
                             .where(settlements.c.session_id == session_id)) is not None:
            return None
        tariff_id, tariff = await _tariff_of(conn, row, defaults)
        cdr = compute_cdr(tariff, await _usage(conn, row))
        terms = await terms_of(conn, row.station_id)
        member = (await conn.execute(select(members.c.prefers_green, members.c.pay_with)
                                     .where(members.c.tag == row.id_tag))).first()
        group = False
        free = False
        if row.group_id is not None:
            status = await conn.scalar(select(charge_groups.c.status)
                                       .where(charge_groups.c.id == row.group_id))
            group = status == "formed"
            free = group and await _free_once(conn, row.group_id, row.id_tag, session_id)
        rules = await loyalty.current_rules(conn)
        context = DiscountContext(
            quota_left_wh=await quota_left(conn, row.id_tag, row.ended_at), group=group,
            free_once=free, green=bool(terms.green and member and member.prefers_green),
            group_pct=rules.group_pct, green_pct=rules.green_pct, budget_fen=row.budget_fen,
            free_day=await memberships.free_charging(conn, row.id_tag, row.started_at))
        # A 2.1 charger's own figure: at the host's price, or (its member tariff) less what
        # the member's own price took off (all of it on a free charging day, else green).
        member_pct = (Decimal(100) if context.free_day
                      else rules.green_pct if context.green else Decimal(0))
        differs = _charger_cost_differs(row, cdr, defaults.charger_cost_tolerance_fen,
                                        member_pct)
        if differs is not None:
            await conn.execute(update(sessions).where(sessions.c.id == session_id).values(
                status="flagged", flag_reason=differs[:2000]))
            await conn.execute(insert(station_events).values(
                station_id=row.station_id, ts=utcnow(), kind="flag", payload=json.dumps(
                    {"session": session_id, "reason": differs}, sort_keys=True)))
            await _void_hold(conn, row, "the charger's cost differs from ours")
            log.warning("session %s flagged: %s", session_id, differs)
            return None
        priced = apply_discounts(cdr, context)
        discharged_wh, feed_in_fen = await _feed_in(conn, row, tariff)
        legs = await _quota_legs(conn, row.id_tag, row.ended_at, priced.quota_used_wh, session_id)
        redeemed, redeem_legs = await _redemption(
            conn, row, member.pay_with if member else None,
            priced.payable_fen - priced.idle_fee_fen, rules, session_id)
        legs += redeem_legs
        paid, owed, parts, money_legs = await _payment_legs(
            conn, row, terms, priced.payable_fen, f"s{session_id}", "session",
            already_paid=sum(r[2] for r in redeemed),
            sponsors=await _sponsors(conn, row.id_tag, row.started_at, priced.lines),
            guarantee=rules.guarantee_payees)
        legs += money_legs
        rewarded = await loyalty.session_rewards_for(conn, row, terms.green, rules)
        legs += rewarded.legs
        if legs:
            await ledger.post(conn, legs, f"settle:{session_id}")
        await rewarded.record(conn)
        idle_known = row.idle_ended_at is not None  # else billed by settle_idle when the car leaves
        now = utcnow()
        await conn.execute(insert(settlements).values(
            session_id=session_id, tariff_id=tariff_id, payer=row.id_tag,
            cdr=json.dumps({**cdr.summary(), **({"discharged_wh": round(discharged_wh),
                                                  "feed_in_fen": feed_in_fen}
                                                 if discharged_wh else {})}, sort_keys=True),
            cost_fen=cdr.total_fen,
            discounts=json.dumps(priced.lines), payable_fen=priced.payable_fen, paid_fen=paid,
            owed_fen=owed, split=json.dumps(parts), settled_at=now,
            redeemed=json.dumps(redeemed) if redeemed else None,
            idle_fee_fen=cdr.idle_fee_fen if idle_known else None,
            idle_settled_at=now if idle_known else None))
    log.info("session %s settled: cost %s, payable %s fen (paid %s, owed %s)", session_id,
             cdr.total_fen, priced.payable_fen, paid, owed)
    return Settled(session_id, cdr, priced, paid, owed, parts)


EXPORT_REGISTER = "Energy.Active.Export.Register"
FEED_IN_SOURCE = "external:feed-in"


async def _feed_in(conn: AsyncConnection, row: Any, tariff: Any) -> tuple[float, int]:
    """V2X: the energy the car gave back through the charger in this session (its export
    register's rise) and the driver's credit for it at the tariff's feed-in price, booked
    now (from `external:feed-in`, reconciled with the grid or site's feed-in statement) so
    that it pays this session first. (Wh, fen)."""
    values = (await conn.execute(select(meter_samples.c.value).where(and_(
        meter_samples.c.session_id == row.id, meter_samples.c.measurand == EXPORT_REGISTER,
        meter_samples.c.phase.is_(None))).order_by(meter_samples.c.ts))).scalars().all()
    discharged = max(0.0, float(values[-1]) - float(values[0])) if len(values) >= 2 else 0.0
    price = tariff.feed_in_per_kwh
    if not discharged or price is None or funds.is_card(row.id_tag):
        return discharged, 0
    credit = to_fen(Decimal(str(round(discharged, 1))) / 1000 * price)
    if credit > 0:
        transfer_id = f"s{row.id}:feed-in"
        await ledger.post(conn, [Transfer(
            transfer_id, FEED_IN_SOURCE, f"wallet:{row.id_tag}", credit, kind="v2x-credit",
            ref=str(row.id), memo=f"{discharged / 1000:.3f} kWh given back at {price} CNY/kWh")],
            transfer_id)
    return discharged, credit


def _charger_cost_differs(row: Any, cdr: Any, tolerance_fen: int,
                          member_pct: Decimal) -> str | None:
    """Why a 2.1 charger's own cost of the session cannot be let pass (None: it agrees with
    our tariff's, within the tolerance, or the charger calculated nothing). The idle part is
    left out on both sides: we bill the overstay in full minutes once the car has left. A
    charger that priced the session with the member's own tariff (AuthorizeResponse.tariff)
    is checked against our price less the member's discount (`member_pct`)."""
    if row.charger_cost_fen is None or "reviewed: billed" in (row.flag_reason or ""):
        return None
    theirs = int(row.charger_cost_fen) - int(row.charger_idle_fen or 0)
    ours = cdr.tariff_total_fen - cdr.costs.get("PARKING_TIME", 0)
    if (row.charger_tariff or "").startswith(MEMBER_PREFIX):
        ours -= pct_of(ours, member_pct)  # as the discount itself takes it
    if abs(theirs - ours) <= tolerance_fen:
        return None
    return (f"the charger calculated {fmt(theirs)} CNY, our tariff {fmt(ours)} CNY (more than "
            f"{fmt(tolerance_fen)} apart): bill ours or void it with `cocharge sessions review "
            f"{row.id} --bill|--void --note ...`")


async def _sponsors(conn: AsyncConnection, tag: str, at: datetime,
                    lines: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Who pays each promotion of a session: the free quota of an OEM membership its brand
    (invoiced monthly: statements.brand_statement), everything else the platform."""
    brand = await memberships.quota_brand(conn, tag, at)
    by: dict[str, int] = {}
    for name, fen in lines:
        payer = (funds.brand_sponsor(brand) if brand and name.startswith("free quota")
                 else funds.SPONSOR)
        by[payer] = by.get(payer, 0) + fen
    return sorted(by.items())


async def _void_hold(conn: AsyncConnection, row: Any, why: str) -> None:
    """Give a session's held money back to its wallet (once): nothing of it is taken."""
    legs = funds.hold_legs(row.id, row.id_tag, await funds.held_for(conn, row.id), 0)
    if legs:
        await ledger.post(conn, [replace(legs[0], memo=f"hold voided: {why}")], f"void:{row.id}")


async def review_session(engine: AsyncEngine, session_id: int, bill: bool, note: str, actor: str,
                         defaults: SettlementDefaults = SettlementDefaults()) -> Settled | None:
    """An operator's decision on a flagged or quarantined session: bill it as metered (settled
    now; a quarantined one that still fails stays as it was), or void it (never billed, its
    hold released). The decision, who made it and why are kept on the session and among the
    station's events."""
    if not note.strip():
        raise SettlementError("give --note: why the session is billed or voided")
    async with engine.begin() as conn:
        row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).first()
        if row is None:
            raise SettlementError(f"no session {session_id}: see `cocharge sessions list`")
        if row.status not in ("flagged", "quarantined"):
            raise SettlementError(f"session {session_id} is {row.status}: only a flagged or "
                                  "quarantined session is reviewed")
        decision = "billed" if bill else "voided"
        reason = f"{row.flag_reason or 'flagged'}; reviewed: {decision} by {actor}: {note}"
        await conn.execute(update(sessions).where(sessions.c.id == session_id).values(
            status="completed" if bill else "void", flag_reason=reason[:2000]))
        await conn.execute(insert(station_events).values(
            station_id=row.station_id, ts=utcnow(), kind="review", payload=json.dumps(
                {"session": session_id, "decision": decision, "by": actor, "note": note},
                sort_keys=True)))
        if not bill:
            await _void_hold(conn, row, f"voided by {actor}")
    if not bill:
        return None
    try:
        return await settle_session(engine, session_id, defaults)
    except Exception as exc:  # noqa: BLE001 - kept on the session, said to the operator
        await quarantine(engine, session_id, failure_reason(exc))
        raise SettlementError(f"session {session_id} still cannot be settled "
                              f"({failure_reason(exc)}): it stays quarantined") from None


async def _payment_legs(conn: AsyncConnection, row: Any, terms: SplitTerms, amount: int,
                        prefix: str, kind: str, already_paid: int = 0,
                        sponsors: Sequence[tuple[str, int]] = (),
                        guarantee: bool = False,
                        ) -> tuple[int, int, list[tuple[str, int]], list[Transfer]]:
    """The member pays `amount` (less `already_paid` with coins and points, already in
    clearing): from the session's hold first, then the wallet; the rest is owed. The sponsor
    of each promotion pays what it took off (`sponsors`: [(account, fen)]), so the payees
    share the list price, `amount` plus the promotions, by the terms. The payees' part of what
    is owed waits in `owed:<payee>` until the member's money for it comes in
    (funds.top_up), unless the platform guarantees the payees (`funds.guarantee_payees`): then
    they are paid at once and what is owed is the platform's risk. Returns (paid, owed,
    [[account, share]], legs)."""
    tag = row.id_tag
    wallet = f"wallet:{tag}"
    due = amount - already_paid
    held = await funds.held_for(conn, row.id) if kind == "session" else 0
    from_hold = min(due, held)
    legs = funds.hold_legs(row.id, tag, held, from_hold)
    released = held - from_hold
    from_wallet = min(due - from_hold, max(0, await ledger.balance(conn, wallet) + released))
    paid = already_paid + from_hold + from_wallet
    owed = amount - paid
    names = {"host": f"host:{terms.host}", "platform": "platform",
             "property": f"property:{terms.property}", "operator": f"operator:{terms.operator}"}
    sponsored = sum(fen for _, fen in sponsors)
    listed = amount + sponsored
    parts = [(names[p], a) for p, a in split_amount(listed, terms, row.ended_at)]
    ref = str(row.id)
    for account, fen in sponsors:
        if fen:
            legs.append(Transfer(f"{prefix}:sponsor:{account.split(':', 1)[1]}", account,
                                 "clearing:sessions", fen, kind=f"{kind}-sponsored", ref=ref,
                                 memo="promotions paid by their sponsor, not the payees"))
    if from_wallet:
        legs.append(Transfer(f"{prefix}:pay", wallet, "clearing:sessions", from_wallet,
                             kind=f"{kind}-payment", ref=ref))
    if owed:
        legs.append(Transfer(f"{prefix}:owed", f"receivable:{tag}", "clearing:sessions",
                             owed, kind=f"{kind}-receivable", ref=ref,
                             memo="guaranteed by the platform: its risk" if guarantee else ""))
    waiting = funds.shares_of(0 if guarantee else owed, parts)
    for (account, share), later in zip(parts, waiting, strict=True):
        if share - later:
            legs.append(Transfer(f"{prefix}:{account.split(':')[0]}", "clearing:sessions", account,
                                 share - later, kind=f"{kind}-split", ref=ref))
        if later:
            legs.append(Transfer(f"{prefix}:{account.split(':')[0]}:owed", "clearing:sessions",
                                 funds.owed_account(account), later, kind=funds.OWED_SPLIT,
                                 ref=ref, memo="owed by the driver: the payee's once collected"))
    return paid, owed, parts, legs


async def settle_idle(engine: AsyncEngine, session_id: int,
                      defaults: SettlementDefaults = SettlementDefaults()) -> int | None:
    """Bill the overstay of a settled session once the car has left; returns the fee (fen),
    None when there is nothing (more) to bill."""
    async with engine.begin() as conn:
        done = (await conn.execute(select(settlements).where(
            settlements.c.session_id == session_id))).first()
        row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).first()
        if done is None or done.idle_settled_at is not None or row is None or row.idle_ended_at is None:
            return None
        body = await conn.scalar(select(tariffs.c.body).where(tariffs.c.id == done.tariff_id)) \
            if done.tariff_id is not None else None
        tariff = tariff_from_json(json.loads(body)) if body else defaults.tariff()
        fee = 0
        if tariff.idle is not None and row.idle_started_at is not None:
            fee = idle_fee(tariff.idle, row.idle_started_at, row.idle_ended_at)[1]
        if fee:
            terms = await terms_of(conn, row.station_id)
            guarantee = (await loyalty.current_rules(conn)).guarantee_payees
            _, _, _, legs = await _payment_legs(conn, row, terms, fee, f"s{session_id}:idle", "idle",
                                                guarantee=guarantee)
            penalty = await loyalty.penalty_legs(conn, row.id_tag, "overstay", f"s{session_id}:overstay",
                                                 str(session_id))
            await ledger.post(conn, legs + penalty.legs, f"idle:{session_id}")
            await penalty.record(conn)
        await conn.execute(update(settlements).where(settlements.c.session_id == session_id)
                           .values(idle_fee_fen=fee, idle_settled_at=utcnow()))
    log.info("session %s: overstay fee %s fen", session_id, fee)
    return fee


async def idle_unsettled(engine: AsyncEngine) -> list[int]:
    """Settled sessions whose car has left but whose overstay is not billed yet."""
    query = (select(settlements.c.session_id).join(sessions, sessions.c.id == settlements.c.session_id)
             .where(and_(settlements.c.idle_settled_at.is_(None), sessions.c.idle_ended_at.is_not(None)))
             .order_by(settlements.c.session_id))
    async with engine.connect() as conn:
        return [int(i) for i in (await conn.execute(query)).scalars().all()]


async def unsettled(engine: AsyncEngine, since: datetime | None = None) -> list[int]:
    query = (select(sessions.c.id).outerjoin(settlements, settlements.c.session_id == sessions.c.id)
             .where(and_(sessions.c.status == "completed", settlements.c.session_id.is_(None)))
             .order_by(sessions.c.id))
    if since is not None:
        query = query.where(or_(sessions.c.ended_at >= since, sessions.c.ended_at.is_(None)))
    async with engine.connect() as conn:
        return [int(i) for i in (await conn.execute(query)).scalars().all()]


def failure_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


async def quarantine(engine: AsyncEngine, session_id: int, reason: str) -> None:
    """Set a session that cannot be settled apart, with its reason (module docstring)."""
    async with engine.begin() as conn:
        row = (await conn.execute(select(sessions.c.station_id, sessions.c.status)
                                  .where(sessions.c.id == session_id))).first()
        if row is None or row.status != "completed":
            return
        await conn.execute(update(sessions).where(sessions.c.id == session_id).values(
            status="quarantined", flag_reason=f"not settled: {reason}"[:2000]))
        await conn.execute(insert(station_events).values(
            station_id=row.station_id, ts=utcnow(), kind="quarantine",
            payload=json.dumps({"session": session_id, "reason": reason}, sort_keys=True)))
    log.error("session %s quarantined: %s (`cocharge sessions review` decides on it)",
              session_id, reason)


async def settle_pending(engine: AsyncEngine, since: datetime | None = None,
                         defaults: SettlementDefaults = SettlementDefaults()
                         ) -> tuple[list[Settled], list[tuple[int, str]]]:
    """Settle every completed session that is not settled yet (idempotent); one that fails
    is quarantined with its reason, and the others are settled all the same."""
    done, failed = [], []
    for session_id in await unsettled(engine, since):
        try:
            result = await settle_session(engine, session_id, defaults)
        except Exception as exc:  # noqa: BLE001 - any failure of one session is kept on it
            failed.append((session_id, failure_reason(exc)))
            await quarantine(engine, session_id, failed[-1][1])
            continue
        if result is not None:
            done.append(result)
    for session_id in await idle_unsettled(engine):
        try:
            await settle_idle(engine, session_id, defaults)
        except Exception as exc:  # noqa: BLE001
            log.error("idle fee of session %s not settled: %s", session_id, failure_reason(exc))
    return done, failed


async def settlement_report(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(settlements, sessions.c.station_id, sessions.c.energy_wh)
                                   .join(sessions, sessions.c.id == settlements.c.session_id)
                                   .order_by(settlements.c.session_id))).all()
    return [{"session": r.session_id, "station": r.station_id, "payer": r.payer,
             "energy_wh": r.energy_wh, "cost_fen": r.cost_fen,
             "discounts": json.loads(r.discounts), "payable_fen": r.payable_fen,
             "paid_fen": r.paid_fen, "owed_fen": r.owed_fen, "split": json.loads(r.split),
             "idle_fee_fen": r.idle_fee_fen} for r in rows]


class Settler:
    """Settles sessions as they end, one at a time, in the gateway process."""

    def __init__(self, engine: AsyncEngine, defaults: SettlementDefaults,
                 retry_s: float = 30.0, attempts: int = 4) -> None:
        self.engine = engine
        self.defaults = defaults
        # A failed session is tried again after retry_s, 4x that, 16x that ... (with jitter),
        # `attempts` times in all, then quarantined.
        self.retry_s = retry_s
        self.attempts = attempts
        self._failures: dict[int, int] = {}
        self._retries: dict[int, asyncio.TimerHandle] = {}
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._settling = asyncio.Lock()  # one settlement at a time (the queue's, settle_now's)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="settler")
        for session_id in await unsettled(self.engine) + await idle_unsettled(self.engine):
            self.submit(session_id)  # heal what a crash left

    def submit(self, session_id: int) -> None:
        self._queue.put_nowait(session_id)

    async def settle_now(self, session_id: int) -> int | None:
        """Settle the session now (the driver's total for the station's display), not after
        the queue; returns what the driver pays in fen (None: not billable). The queued
        settlement of the same session then finds it done."""
        try:
            async with self._settling:
                await settle_session(self.engine, session_id, self.defaults)
            return await payable_fen(self.engine, session_id)
        except Exception as exc:  # noqa: BLE001 - the queued settlement retries it
            log.warning("session %s not settled at its end (%s): the settler tries again",
                        session_id, failure_reason(exc))
            return None

    async def drain(self) -> None:
        """Wait until everything submitted so far is settled (or failed)."""
        await self._queue.join()

    async def close(self) -> None:
        for handle in self._retries.values():
            handle.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            session_id = await self._queue.get()
            self._retries.pop(session_id, None)
            try:
                async with self._settling:
                    await settle_session(self.engine, session_id, self.defaults)
                await settle_idle(self.engine, session_id, self.defaults)
                self._failures.pop(session_id, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - kept on the session (module docstring)
                await self._failed(session_id, exc)
            finally:
                self._queue.task_done()

    async def _failed(self, session_id: int, exc: Exception) -> None:
        tries = self._failures.get(session_id, 0) + 1
        reason = failure_reason(exc)
        if tries >= self.attempts or isinstance(exc, SessionTimesError | Unbillable):
            self._failures.pop(session_id, None)
            try:
                await quarantine(self.engine, session_id,
                                 f"{reason} ({tries} attempt{'s' if tries > 1 else ''})")
            except Exception:  # noqa: BLE001 - the database is away: tried again at start
                log.exception("session %s could not be quarantined", session_id)
            return
        self._failures[session_id] = tries
        delay = self.retry_s * 4 ** (tries - 1) * random.uniform(0.8, 1.2)
        log.warning("settling session %s failed (%s); trying again in %.0f s", session_id,
                    reason, delay)
        if session_id not in self._retries:
            self._retries[session_id] = asyncio.get_running_loop().call_later(
                delay, self.submit, session_id)
