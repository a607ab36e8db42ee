"""Read models shared by the CLI, the HTTP API and the web console: sessions with their
energy and cost, one session's bill, the money and use of a set of stations."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.settlement import funds, ledger
from cocharge.settlement.settle import property_of, running_costs_fen, terms_from_json
from cocharge.stations import registry
from cocharge.store.db import utcnow
from cocharge.store.schema import meter_samples, sessions, settlements, station_terms, stations
from cocharge.store.sql import among

ENERGY_REGISTER = "Energy.Active.Import.Register"
LOCAL_TZ = ZoneInfo("Asia/Shanghai")  # the product's local time (tariffs, bookings)
_PART = 1000  # sessions of a dashboard read and added up in one turn of the event loop


async def priced(engine: AsyncEngine, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each session with its energy and cost: a running one's so far (from its meter values,
    at its tariff), an ended one's as settled (`kwh`, `cny` as text for people)."""
    running = [r["id"] for r in rows if r["status"] == "active"]
    registers: dict[int, tuple[float, float]] = {}
    payable: dict[int, int] = {}
    async with engine.connect() as conn:
        if running:
            found = await conn.execute(
                select(meter_samples.c.session_id, func.min(meter_samples.c.value),
                       func.max(meter_samples.c.value))
                .where(and_(among(conn, meter_samples.c.session_id, running),
                            meter_samples.c.measurand == ENERGY_REGISTER,
                            meter_samples.c.phase.is_(None)))
                .group_by(meter_samples.c.session_id))
            registers = {int(sid): (float(low), float(high)) for sid, low, high in found}
        ended = [r["id"] for r in rows if r["status"] != "active"]
        if ended:
            payable = {int(sid): int(fen) for sid, fen in await conn.execute(
                select(settlements.c.session_id, settlements.c.payable_fen)
                .where(among(conn, settlements.c.session_id, ended)))}
    so_far = await running_costs_fen(engine, running) if running else {}
    for row in rows:
        if row["status"] == "active":
            low_high = registers.get(row["id"])
            if low_high is not None:  # registers only go up: the last reading is the highest
                start = row["meter_start_wh"] if row["meter_start_wh"] is not None else low_high[0]
                row["energy_wh"] = max(0, int(low_high[1] - start))
            else:
                row["energy_wh"] = None
            cost = so_far.get(row["id"])
            row["cost_so_far_fen"] = cost
        else:
            cost = payable.get(row["id"])
            row["payable_fen"] = cost
        row["kwh"] = None if row["energy_wh"] is None else f"{row['energy_wh'] / 1000:.3f}"
        row["cny"] = None if cost is None else f"{cost / 100:.2f}" + (
            " so far" if row["status"] == "active" else "")
    return rows


async def session_detail(engine: AsyncEngine, session_id: int) -> dict[str, Any] | None:
    """One session, priced, with its bill and split once settled; None if there is none."""
    # The bill is read before the session: a session is settled only once it has ended, and
    # neither goes back, so a bill read first is never shown beside a session still active
    # (read the other way round, a session that ended and was settled between the two reads
    # showed as active with its bill).
    async with engine.connect() as conn:
        bill = (await conn.execute(select(settlements).where(
            settlements.c.session_id == session_id))).first()
        charger = await conn.scalar(select(sessions.c.charger_cost_fen)
                                    .where(sessions.c.id == session_id))
    found = await registry.list_sessions(engine, session_id=session_id)
    if not found:
        return None
    shown = (await priced(engine, found))[0]
    if charger is not None:  # a 2.1 charger's own calculation (checked, not billed)
        shown["charger_cost_fen"] = int(charger)
    if bill is not None:
        shown["bill"] = {"payer": bill.payer, "cost_fen": bill.cost_fen,
                         "discounts": json.loads(bill.discounts),
                         "payable_fen": bill.payable_fen, "paid_fen": bill.paid_fen,
                         "owed_fen": bill.owed_fen, "idle_fee_fen": bill.idle_fee_fen,
                         "cdr": json.loads(bill.cdr),
                         "settled_at": bill.settled_at.isoformat(timespec="seconds") + "Z"}
        shown["split"] = json.loads(bill.split)
    return shown


async def session_curve(engine: AsyncEngine, session_id: int
                        ) -> tuple[list[tuple[datetime, float]], list[tuple[datetime, float]]]:
    """A session's power (kW, the sum of the phases at each reading) and state of charge (%)
    over time, from its meter values."""
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(meter_samples.c.ts, meter_samples.c.measurand, meter_samples.c.value,
                   meter_samples.c.phase)
            .where(meter_samples.c.session_id == session_id,
                   meter_samples.c.measurand.in_(("Power.Active.Import", "SoC")))
            .order_by(meter_samples.c.ts, meter_samples.c.id))).all()
    total: dict[datetime, float] = {}  # a reading without a phase is the whole
    phases: dict[datetime, float] = {}
    soc: list[tuple[datetime, float]] = []
    for r in rows:
        if r.measurand == "SoC":
            soc.append((r.ts, float(r.value)))
        elif not r.phase:
            total[r.ts] = float(r.value) / 1000
        elif r.phase in ("L1", "L2", "L3", "L1-N", "L2-N", "L3-N"):
            phases[r.ts] = phases.get(r.ts, 0.0) + float(r.value) / 1000
    power = {**phases, **total}
    return sorted(power.items()), soc


async def parties(engine: AsyncEngine, only: Collection[str] | None = None
                  ) -> dict[str, tuple[str, str | None]]:
    """Every station's (or `only` these stations') host and property (None unless it is on
    the property model): who earns from it, as its split terms say (the owner when no terms
    name a host)."""
    owner_query = select(stations.c.id, stations.c.owner)
    terms_query = select(station_terms.c.station_id, station_terms.c.body)
    if only is not None:
        owner_query = owner_query.where(among(engine, stations.c.id, only))
        terms_query = terms_query.where(among(engine, station_terms.c.station_id, only))
    async with engine.connect() as conn:
        owners = {r.id: r.owner for r in await conn.execute(owner_query)}
        bodies = {r.station_id: r.body for r in await conn.execute(terms_query)}
    found: dict[str, tuple[str, str | None]] = {}
    for station_id, owner in owners.items():
        terms = terms_from_json(json.loads(bodies[station_id])) if station_id in bodies else None
        host = (terms.host if terms and terms.host else None) or owner or f"owner-of-{station_id}"
        prop = property_of(terms) if terms else None
        found[station_id] = (host, prop)
    return found


def _naming(name: str) -> ColumnElement[bool]:
    """Split terms whose JSON text holds `name` as a value (a superset of the terms that name
    it as their host or property: the caller decides among them)."""
    return or_(*(station_terms.c.body.contains(text, autoescape=True)
                 for text in {json.dumps(name), json.dumps(name, ensure_ascii=False)}))


async def stations_of(engine: AsyncEngine, role: str, name: str) -> set[str]:
    """The stations whose host (`role` "host") or property ("property") is `name`, as
    `parties` says, without reading and parsing every station's terms (a host's or a
    property's every request asks this: at 10,000 stations, all of them took ~0.2 s). The
    database narrows them to the stations whose terms hold the name (as their JSON text
    writes it) or, for a host, that it owns; `parties` decides among those."""
    async with engine.connect() as conn:
        found = set((await conn.execute(select(station_terms.c.station_id).where(
            _naming(name)))).scalars())
        if role == "host":
            found.update((await conn.execute(select(stations.c.id).where(
                stations.c.owner == name))).scalars())
            if name.startswith("owner-of-"):  # the host of a station without an owner
                found.add(name[len("owner-of-"):])
    index = 0 if role == "host" else 1
    return {s for s, p in (await parties(engine, found)).items() if p[index] == name} \
        if found else set()


def hour_of_week(at: datetime) -> int:
    """0 = Monday 00:00-01:00 local time ... 167 = Sunday 23:00-24:00."""
    local = at.replace(tzinfo=UTC).astimezone(LOCAL_TZ)
    return local.weekday() * 24 + local.hour


async def property_since(engine: AsyncEngine, owner: str) -> dict[str, datetime]:
    """When each station's terms with the property `owner` began: it sees those stations'
    sessions from then on, not their earlier history."""
    async with engine.connect() as conn:
        bodies = (await conn.execute(select(station_terms.c.station_id, station_terms.c.body)
                                     .where(_naming(owner)))).all()
    found = {}
    for station_id, body in bodies:
        terms = terms_from_json(json.loads(body))
        if property_of(terms) == owner and terms.property_since is not None:
            found[station_id] = terms.property_since
    return found


async def dashboard(engine: AsyncEngine, station_ids: Collection[str] | None,
                    account: str | None, days: int = 30,
                    from_when: dict[str, datetime] | None = None) -> dict[str, Any]:
    """The money and use of these stations (None: every station) over the last `days`: sessions, kWh, what
    drivers paid and what `account` earned (its share of each split), revenue by day,
    utilisation by hour of week (share of the connectors' time spent charging), and what the
    ledger owes the account now (its balance: payouts not yet made)."""
    since = utcnow() - timedelta(days=days)
    station_query = select(stations.c.id, stations.c.connectors)
    session_query = (
        select(sessions.c.id, sessions.c.station_id, sessions.c.started_at, sessions.c.ended_at,
               sessions.c.energy_wh, sessions.c.status, settlements.c.payable_fen,
               settlements.c.owed_fen, settlements.c.split)
        .select_from(sessions.outerjoin(settlements, settlements.c.session_id == sessions.c.id))
        .where(sessions.c.started_at >= since))
    if station_ids is not None:
        station_query = station_query.where(among(engine, stations.c.id, station_ids))
        session_query = session_query.where(among(engine, sessions.c.station_id, station_ids))
    rows: list[Any] = []
    async with engine.connect() as conn:
        connectors = {r.id: max(1, r.connectors or 1) for r in await conn.execute(station_query)}
        # A month of a large fleet is hundreds of thousands of sessions: read, and below
        # added up, a part at a time, the chargers served by this node's loop in between
        # (40,000 sessions in one go held it 0.1-0.7 s).
        async for part in (await conn.stream(session_query)).partitions(_PART):
            rows.extend(part)
        owed = await ledger.balance(conn, account) if account else None
        waiting = await ledger.balance(conn, funds.owed_account(account)) if account else None
        collected = await funds.collected_for(conn, [r.id for r in rows if r.owed_fen])
    local_today = utcnow().replace(tzinfo=UTC).astimezone(LOCAL_TZ).date()
    by_day = {(local_today - timedelta(days=d)).isoformat(): 0 for d in range(days - 1, -1, -1)}
    busy = [0.0] * 168
    count = energy = billed = unpaid = earned = 0
    now = utcnow()
    for n, r in enumerate(rows, 1):
        if n % _PART == 0:
            await asyncio.sleep(0)
        if from_when and r.station_id in from_when and r.started_at < from_when[r.station_id]:
            continue  # before the viewer's terms with this station began
        count += 1
        energy += int(r.energy_wh or 0)
        billed += int(r.payable_fen or 0)
        unpaid += max(0, int(r.owed_fen or 0) - collected.get(r.id, 0))
        share = int(r.payable_fen or 0)
        if account is not None:
            share = sum(int(v) for who, v in json.loads(r.split)
                        if who == account) if r.split else 0
        earned += share
        day = r.started_at.replace(tzinfo=UTC).astimezone(LOCAL_TZ).date().isoformat()
        if day in by_day:
            by_day[day] += share
        # spread the session's time over the hours of the week it covered
        at, end = r.started_at, r.ended_at or now
        while at < end:
            step = min(end, at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))
            busy[hour_of_week(at)] += (step - at).total_seconds() / 3600
            at = step
    weeks = days / 7
    capacity = max(1, sum(connectors.values())) * weeks  # connector-hours in each hour slot
    return {
        "days": days, "stations": len(connectors), "connectors": sum(connectors.values()),
        "sessions": count, "kwh": f"{energy / 1000:.3f}",
        # What drivers were billed, what of it they paid, what they still owe (not "paid").
        "billed_fen": billed, "paid_fen": billed - unpaid, "owed_by_drivers_fen": unpaid,
        # The payee's share (list price), what is theirs to be paid out, and what of their
        # share waits for drivers' money (it becomes theirs when it is collected).
        "earned_fen": earned, "account": account, "owed_fen": owed,
        "waiting_for_drivers_fen": waiting,
        "revenue_by_day": [{"day": d, "fen": v} for d, v in by_day.items()],
        "utilisation_by_hour_of_week": [round(min(1.0, b / capacity), 4) for b in busy],
    }
