"""Stations, members and sessions as the operator manages them (used by the CLI)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.stations.passwords import hash_password
from cocharge.store import audit
from cocharge.store.db import identity, node_alive, utcnow
from cocharge.store.schema import (
    connector_status,
    local_lists,
    log_uploads,
    members,
    nodes,
    sessions,
    station_events,
    station_monitors,
    station_variables,
    stations,
)
from cocharge.store.sql import among


class RegistryError(ValueError):
    """An operator request that cannot be applied; the message says why and how to fix it."""


@dataclass(frozen=True)
class NewStation:
    station_id: str
    password: str | None = None
    owner: str | None = None
    connectors: int = 1
    max_power_kw: float | None = None
    area: str | None = None
    lat: float | None = None
    lon: float | None = None
    address: str | None = None


def check_place(lat: float | None, lon: float | None, address: str | None) -> None:
    """Coordinates come as a pair, each in its range; an address fits its column."""
    if (lat is None) != (lon is None):
        raise RegistryError("give --lat and --lon together (WGS-84 degrees, e.g. 31.2304 "
                            "121.4737)")
    if lat is not None and not -90 <= lat <= 90:
        raise RegistryError(f"--lat {lat}: a latitude is between -90 and 90")
    if lon is not None and not -180 <= lon <= 180:
        raise RegistryError(f"--lon {lon}: a longitude is between -180 and 180")
    if address is not None and len(address) > 200:
        raise RegistryError("--address is longer than 200 characters")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value is not None else None


# A station id is the charging station's identity in its URL (OCPP 2.0.1: at most 48
# characters), a member's name what a person is called.
MAX_STATION_ID = 48
MAX_NAME = 100


def check_station_id(station_id: str) -> None:
    if not 1 <= len(station_id) <= MAX_STATION_ID or not station_id.isprintable() or any(
            c in station_id for c in "/ "):
        raise RegistryError(f"station id {station_id[:60]!r}: 1 to {MAX_STATION_ID} printable "
                            "characters without / or spaces (it is the end of the station's URL)")


def check_station_values(owner: str | None, connectors: int | None,
                         max_power_kw: float | None, area: str | None) -> None:
    """A station's owner, connectors, power and area within what they may be (the CLI, the
    API and the console: one place)."""
    if owner is not None and (len(owner) > 100 or not owner.isprintable()):
        raise RegistryError("owner: up to 100 printable characters")
    if connectors is not None and not 1 <= connectors <= 64:
        raise RegistryError("connectors: a whole number 1-64")
    if max_power_kw is not None and not (math.isfinite(max_power_kw)
                                         and 0.1 <= max_power_kw <= 1000):
        raise RegistryError("max_power_kw: 0.1 to 1000 (kW)")
    if area is not None and (len(area) > 100 or not area.isprintable()):
        raise RegistryError("area: up to 100 printable characters")


async def add_station(engine: AsyncEngine, new: NewStation) -> None:
    check_station_id(new.station_id)
    check_station_values(new.owner, new.connectors, new.max_power_kw, new.area)
    check_place(new.lat, new.lon, new.address)
    async with engine.begin() as conn:
        exists = await conn.scalar(select(stations.c.id).where(stations.c.id == new.station_id))
        if exists:
            raise RegistryError(f"station {new.station_id!r} is already registered")
        await conn.execute(
            insert(stations).values(
                id=new.station_id,
                password_hash=hash_password(new.password) if new.password else None,
                owner=new.owner,
                connectors=new.connectors,
                max_power_w=round(new.max_power_kw * 1000) if new.max_power_kw else None,
                admission="accepted",
                area=new.area,
                lat=new.lat,
                lon=new.lon,
                address=new.address or None,
                created_at=utcnow(),
            )
        )


def _station_view(row: Any, statuses: list[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "owner": row.owner,
        "connectors": row.connectors,
        "max_power_kw": row.max_power_w / 1000 if row.max_power_w else None,
        "admission": row.admission,
        "area": row.area,
        "lat": row.lat,
        "lon": row.lon,
        "address": row.address,
        "password": row.password_hash is not None,
        "protocol": row.protocol,
        "vendor": row.vendor,
        "model": row.model,
        "firmware": row.firmware,
        "last_boot_at": _iso(row.last_boot_at),
        "last_seen_at": _iso(row.last_seen_at),
        "connector_status": {
            str(s.connector_id): {"status": s.status, "error_code": s.error_code,
                                  "at": _iso(s.updated_at)}
            for s in statuses
        },
    }


async def running_nodes(engine: AsyncEngine) -> set[str]:
    """Ids of the gateway nodes recorded as running on this very database (not on the one a
    copy was made from) whose lease holds (a node killed with -9 has left its row)."""
    here = await identity(engine)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(nodes.c.id, nodes.c.database,
                                          nodes.c.lease_until))).all()
    now = utcnow()
    return {r.id for r in rows if r.database in (None, here) and node_alive(r, now)}


async def list_stations(engine: AsyncEngine, ids: Collection[str] | None = None
                        ) -> list[dict[str, Any]]:
    """Every station (`ids`: these only), in the order of their ids, with `online` (a running
    node holds its connection) and that node."""
    running = await running_nodes(engine)
    by_station: dict[str, list[Any]] = {}
    listed: list[dict[str, Any]] = []
    if ids is not None and not ids:
        return listed
    which = select(stations).order_by(stations.c.id)
    statuses = select(connector_status)
    if ids is not None:
        which = which.where(among(engine, stations.c.id, ids))
        statuses = statuses.where(among(engine, connector_status.c.station_id, ids))
    # Read and shown a part at a time, each part the node's chargers' turn after it: 10,000
    # stations at once held the event loop ~100 ms (benchmarks/fleet_page.py).
    async with engine.connect() as conn:
        async for part in (await conn.stream(statuses)).partitions(_PART):
            for s in part:
                by_station.setdefault(s.station_id, []).append(s)
        async for part in (await conn.stream(which)).partitions(_PART):
            for r in part:
                view = _station_view(r, sorted(by_station.get(r.id, []),
                                               key=lambda s: s.connector_id))
                view["online"] = r.node is not None and r.node in running
                view["node"] = r.node if view["online"] else None
                listed.append(view)
    return listed


def km_between(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance (haversine, on a sphere of the Earth's mean radius)."""
    rad = math.pi / 180
    a = (math.sin((lat2 - lat1) * rad / 2) ** 2 + math.cos(lat1 * rad) * math.cos(lat2 * rad)
         * math.sin((lon2 - lon1) * rad / 2) ** 2)
    return 6371.0088 * 2 * math.asin(math.sqrt(min(1.0, a)))


async def placed(engine: AsyncEngine, ids: Collection[str] | None = None,
                 near: tuple[float, float] | None = None, limit: int | None = None
                 ) -> list[str]:
    """The stations with a place (`ids`: of these), nearest first from `near` (lat, lon),
    else in the order of their ids; at most `limit` of them. Only the ids and places are
    read: the caller reads the chosen ones whole."""
    query = select(stations.c.id, stations.c.lat, stations.c.lon).where(
        stations.c.lat.is_not(None), stations.c.lon.is_not(None)).order_by(stations.c.id)
    if ids is not None:
        query = query.where(among(engine, stations.c.id, ids))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    if near is not None:
        rows = sorted(rows, key=lambda r: km_between(near[0], near[1], r.lat, r.lon))
    return [r.id for r in rows[:limit]]


@dataclass(frozen=True)
class Listed:
    """What a station list is filtered and counted by, before a page of it is shown."""

    id: str
    online: bool  # a running node holds its connection
    text: str  # its id, owner, area, vendor and model, lower case, for a search


async def station_index(engine: AsyncEngine, ids: Collection[str] | None = None
                        ) -> list[Listed]:
    """Every station (`ids`: these only), in the order of their ids, as little as a filter
    and a count need: a page of 100 of 10,000 stations is then read whole, not every station
    (a fleet page's poll: benchmarks/fleet_page.py)."""
    running = await running_nodes(engine)
    found: list[Listed] = []
    query = select(stations.c.id, stations.c.node, stations.c.owner, stations.c.area,
                   stations.c.vendor, stations.c.model).order_by(stations.c.id)
    if ids is not None:
        query = query.where(among(engine, stations.c.id, ids))
    async with engine.connect() as conn:
        async for part in (await conn.stream(query)).partitions(_PART):
            for r in part:
                found.append(Listed(r.id, r.node is not None and r.node in running, " ".join(
                    str(v or "") for v in (r.id, r.owner, r.area, r.vendor, r.model)).lower()))
    return found


_PART = 500  # rows of a large listing handled at once


async def get_station(engine: AsyncEngine, station_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(stations).where(stations.c.id == station_id))).first()
        if row is None:
            raise RegistryError(f"no station {station_id!r}: see `cocharge station list`")
        status_rows = (await conn.execute(
            select(connector_status).where(connector_status.c.station_id == station_id)
            .order_by(connector_status.c.connector_id))).all()
        held = (await conn.execute(select(local_lists).where(
            local_lists.c.station_id == station_id))).first()
        security = (await conn.execute(
            select(station_events.c.ts, station_events.c.payload)
            .where(and_(station_events.c.station_id == station_id,
                        station_events.c.kind == "security"))
            .order_by(station_events.c.ts.desc()).limit(200))).all()
    shown = _station_view(row, list(status_rows))
    shown["security_profile"] = row.security_profile or "1 (password; 2 once it comes over TLS)"
    # The latest critical security events (OCPP's list; a vendor's own type counts too).
    critical: list[str] = []
    for event in security:
        details = json.loads(event.payload)
        if details.get("criticality", "critical") != "normal" and len(critical) < 5:
            critical.append(f"{_iso(event.ts)} {details.get('type')}"
                            + (f" ({details['tech_info']})" if details.get("tech_info") else ""))
    shown["critical_security_events"] = critical or None
    # The local authorization list the station accepted last (docs/sharing.md).
    shown["local_list"] = None if held is None else {
        "version": held.version, "status": held.status, "updated_at": _iso(held.updated_at),
        "tags": sorted(json.loads(held.entries)) if held.entries else None}
    return shown


async def update_station(engine: AsyncEngine, station_id: str, owner: str | None = None,
                         max_power_kw: float | None = None, area: str | None = None,
                         password: str | None = None, clear_password: bool = False,
                         connectors: int | None = None, lat: float | None = None,
                         lon: float | None = None, address: str | None = None,
                         by: tuple[str, str | None] | None = None) -> dict[str, Any]:
    """Change a station's details (None: unchanged; '' clears owner, area, address); `by`
    (who, from where) goes into the audit trail in the same transaction, the password never.
    Returns what changed."""
    values: dict[str, Any] = {}
    check_station_values(owner, connectors, max_power_kw, area)
    check_place(lat, lon, address)
    if lat is not None:
        values["lat"], values["lon"] = lat, lon
    if address is not None:
        values["address"] = address or None
    if connectors is not None:
        values["connectors"] = connectors
    if password is not None and clear_password:
        raise RegistryError("give --password or --clear-password, not both")
    if password is not None:
        values["password_hash"] = hash_password(password)
    if clear_password:
        values["password_hash"] = None
    if owner is not None:
        values["owner"] = owner.strip() or None
    if max_power_kw is not None:
        values["max_power_w"] = round(max_power_kw * 1000)
    if area is not None:
        values["area"] = area or None
    if not values:
        raise RegistryError("nothing to change: give --owner, --max-power-kw, --area, "
                            "--connectors, --password, --lat/--lon or --address")
    shown = {("max_power_kw" if k == "max_power_w" else k):
             (v / 1000 if k == "max_power_w" else v)
             for k, v in values.items() if k != "password_hash"}
    if "password_hash" in values:
        shown["password"] = "changed" if values["password_hash"] else "cleared"
    async with engine.begin() as conn:
        done = await conn.execute(update(stations).where(stations.c.id == station_id).values(**values))
        if done.rowcount == 0:
            raise RegistryError(f"no station {station_id!r}: see `cocharge station list`")
        if by is not None:
            await audit.record(conn, by[0], by[1], "station-changed", station_id, None, shown)
    return shown


async def approve_station(engine: AsyncEngine, station_id: str) -> None:
    async with engine.begin() as conn:
        done = await conn.execute(
            update(stations).where(stations.c.id == station_id).values(admission="accepted"))
        if done.rowcount == 0:
            raise RegistryError(f"no station {station_id!r}: see `cocharge station list`")


async def _require_station(conn: Any, station_id: str) -> None:
    if (await conn.execute(select(stations.c.id).where(stations.c.id == station_id))).first() is None:
        raise RegistryError(f"no station {station_id!r}: see `cocharge station list`")


async def list_station_events(engine: AsyncEngine, station_id: str, kind: str | None = None,
                         limit: int = 50) -> list[dict[str, Any]]:
    """The station's latest notices, newest first (security events, lockouts, firmware...)."""
    query = select(station_events).where(station_events.c.station_id == station_id)
    if kind is not None:
        query = query.where(station_events.c.kind == kind)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(station_events.c.ts.desc(),
                                                  station_events.c.id.desc()).limit(limit))).all()
        if not rows:
            await _require_station(conn, station_id)
    return [{"at": _iso(r.ts), "kind": r.kind, "details": json.loads(r.payload)} for r in rows]


async def list_station_variables(engine: AsyncEngine, station_id: str,
                                 component: str | None = None) -> list[dict[str, Any]]:
    """A 2.0.1 station's device model as last reported, by component and variable."""
    query = select(station_variables).where(station_variables.c.station_id == station_id)
    if component is not None:
        query = query.where(station_variables.c.component == component)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(
            station_variables.c.component, station_variables.c.evse_id,
            station_variables.c.connector_id, station_variables.c.component_instance,
            station_variables.c.variable, station_variables.c.variable_instance,
            station_variables.c.attribute_type))).all()
        if not rows:
            await _require_station(conn, station_id)
    return [{"component": r.component + (f"[{r.component_instance}]" if r.component_instance
                                         else ""),
             "evse": r.evse_id or None, "connector": r.connector_id or None,
             "variable": r.variable + (f"[{r.variable_instance}]" if r.variable_instance else ""),
             "type": r.attribute_type, "value": r.value, "mutability": r.mutability,
             "data_type": r.data_type, "unit": r.unit, "updated_at": _iso(r.updated_at)}
            for r in rows]


async def list_station_monitors(engine: AsyncEngine, station_id: str) -> list[dict[str, Any]]:
    """A 2.0.1 station's variable monitors, as set from here or last reported by it."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(station_monitors).where(
            station_monitors.c.station_id == station_id)
            .order_by(station_monitors.c.monitor_id))).all()
        if not rows:
            await _require_station(conn, station_id)
    return [{"id": r.monitor_id, "component": r.component, "evse": r.evse_id or None,
             "variable": r.variable, "type": r.type, "value": r.value, "severity": r.severity,
             "transaction": r.transaction, "source": r.source, "updated_at": _iso(r.updated_at)}
            for r in rows]


async def list_uploads(engine: AsyncEngine, station_id: str | None = None) -> list[dict[str, Any]]:
    query = select(log_uploads.c.id, log_uploads.c.station_id, log_uploads.c.kind,
                   log_uploads.c.log_type, log_uploads.c.status, log_uploads.c.filename,
                   log_uploads.c.size, log_uploads.c.requested_at, log_uploads.c.received_at)
    if station_id is not None:
        query = query.where(log_uploads.c.station_id == station_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(log_uploads.c.id))).all()
    return [{"id": r.id, "station": r.station_id, "kind": r.kind, "log_type": r.log_type,
             "status": r.status, "filename": r.filename, "size": r.size,
             "requested_at": _iso(r.requested_at), "received_at": _iso(r.received_at)}
            for r in rows]


async def upload_content(engine: AsyncEngine, request_id: int) -> tuple[str, bytes]:
    """(file name, content) of an uploaded diagnostics or log file."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(log_uploads).where(
            log_uploads.c.id == request_id))).first()
    if row is None:
        raise RegistryError(f"no request {request_id}: see `cocharge logs list`")
    if row.received_at is None:
        raise RegistryError(f"request {request_id} has no file yet (status {row.status})")
    return row.filename or f"{row.station_id}-{row.kind}-{row.id}.log", bytes(row.content or b"")


async def remove_station(engine: AsyncEngine, station_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(connector_status).where(connector_status.c.station_id == station_id))
        done = await conn.execute(delete(stations).where(stations.c.id == station_id))
        if done.rowcount == 0:
            raise RegistryError(f"no station {station_id!r}: see `cocharge station list`")


def normalize_phone(phone: str) -> str:
    """A phone number as stored and compared: digits (a leading + kept), without spaces,
    dashes or brackets; a mainland number's +86 / 0086 prefix dropped."""
    text = re.sub(r"[\s\-().]", "", phone)
    if text.startswith("0086"):
        text = "+86" + text[4:]
    if text.startswith("+86") and len(text) == 14:
        text = text[3:]
    if not re.fullmatch(r"\+?\d{5,20}", text):
        raise RegistryError(f"--phone {phone!r}: a phone number, e.g. 13800138000 or +852 9123 4567")
    return text


async def phone_taken(conn: AsyncConnection, phones: Sequence[str]) -> dict[str, str]:
    """{phone: tag} of the members already holding one of these (normalized) numbers."""
    if not phones:
        return {}
    rows = (await conn.execute(select(members.c.phone, members.c.tag).where(
        among(conn, members.c.phone, phones)))).all()
    return {r.phone: r.tag for r in rows}


async def add_member(engine: AsyncEngine, name: str, tag: str, phone: str | None,
                     expires_at: datetime | None = None, referred_by: str | None = None,
                     household: str | None = None) -> None:
    """Add a member; `referred_by` (an existing member) is set once, here, so referral
    chains only point to earlier members and can never loop. One phone number, one account."""
    if not name.strip() or len(name) > MAX_NAME or not name.isprintable():
        raise RegistryError(f"a member's name: 1 to {MAX_NAME} printable characters")
    if not 1 <= len(tag) <= 20 or not tag.isprintable() or " " in tag:
        raise RegistryError(f"tag {tag[:30]!r}: 1 to 20 printable characters without spaces "
                            "(an RFID card's or app's idTag)")
    if phone is not None:
        phone = normalize_phone(phone) if phone.strip() else None
    async with engine.begin() as conn:
        exists = await conn.scalar(select(members.c.tag).where(members.c.tag == tag))
        if exists:
            raise RegistryError(f"tag {tag!r} already belongs to a member")
        if phone is not None:
            holder = (await phone_taken(conn, [phone])).get(phone)
            if holder is not None:
                raise RegistryError(f"phone {phone} already belongs to member {holder}: one "
                                    "phone number, one account (see `cocharge member list`)")
        if referred_by is not None and await conn.scalar(
                select(members.c.tag).where(members.c.tag == referred_by)) is None:
            raise RegistryError(f"--referred-by {referred_by!r}: no such member "
                                "(the referrer must be added first)")
        await conn.execute(insert(members).values(
            tag=tag, name=name, phone=phone, status="active", expires_at=expires_at,
            referred_by=referred_by, household=household, created_at=utcnow()))


async def list_members(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Every member, in the order of their names."""
    return (await member_page(engine))[0]


async def member_page(engine: AsyncEngine, q: str | None = None, limit: int | None = None,
                      offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The members whose tag, name or phone number holds `q` (any case), in the order of
    their names, from `offset`, at most `limit` of them (None: all); and how many match in
    all. Searched and counted by the database: a page of 100 of 100,000 members reads 100."""
    where = []
    if q:
        text = q.lower()
        where.append(or_(*(func.lower(column).contains(text, autoescape=True)
                           for column in (members.c.tag, members.c.name, members.c.phone))))
    query = select(members).where(*where).order_by(members.c.name, members.c.tag)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        total = (len(rows) if limit is None and not offset else int(await conn.scalar(
            select(func.count()).select_from(members).where(*where)) or 0))
    return [{"tag": r.tag, "name": r.name, "phone": r.phone, "status": r.status,
             "expires_at": _iso(r.expires_at), "household": r.household} for r in rows], total


async def block_member(engine: AsyncEngine, tag: str, blocked: bool = True,
                       by: tuple[str, str | None] | None = None) -> None:
    """Block a tag (it answers Blocked) or, `blocked=False`, accept it again; `by` (who,
    from where) goes into the audit trail in the same transaction."""
    async with engine.begin() as conn:
        done = await conn.execute(update(members).where(members.c.tag == tag).values(
            status="blocked" if blocked else "accepted"))
        if done.rowcount == 0:
            raise RegistryError(f"no member with tag {tag!r}: see `cocharge member list`")
        if by is not None:
            await audit.record(conn, by[0], by[1], "blocked" if blocked else "unblocked",
                               None, f"member:{tag}")


async def list_sessions(engine: AsyncEngine, station_id: str | None = None, *,
                        active: bool = False, since: datetime | None = None,
                        tag: str | None = None, limit: int | None = None,
                        session_id: int | None = None,
                        station_ids: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Sessions in order of their start; `limit` keeps the newest that many; `station_ids`:
    only at these stations."""
    query = select(sessions)
    if station_id:
        query = query.where(sessions.c.station_id == station_id)
    if station_ids is not None:
        query = query.where(among(engine, sessions.c.station_id, station_ids))
    if active:
        query = query.where(sessions.c.status == "active")
    if since is not None:
        query = query.where(or_(sessions.c.started_at >= since, sessions.c.ended_at >= since,
                                sessions.c.status == "active"))
    if tag:
        query = query.where(sessions.c.id_tag == tag)
    if session_id is not None:
        query = query.where(sessions.c.id == session_id)
    query = query.order_by(sessions.c.started_at.desc(), sessions.c.id.desc())
    if limit:
        query = query.limit(limit)
    async with engine.connect() as conn:
        rows = list(reversed((await conn.execute(query)).all()))
    return [{
        "id": r.id,
        "station": r.station_id,
        "connector": r.connector_id,
        "transaction": r.tx_ref,
        "tag": r.id_tag,
        "started": _iso(r.started_at),
        "ended": _iso(r.ended_at),
        "meter_start_wh": r.meter_start_wh,
        "meter_stop_wh": r.meter_stop_wh,
        "energy_wh": r.energy_wh,
        "status": r.status,
        "stop_reason": r.stop_reason,
        "flag_reason": r.flag_reason,
        "clock": r.clock,
        "booking": r.booking_id,
        "group": r.group_id,
    } for r in rows]
