"""Sites, circuits and attached stations in the database: what `cocharge site`, `circuit`
and `station attach` change, and what the load manager reads (docs/load-management.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.load.allocate import Circuit, SiteError, paths
from cocharge.stations.registry import RegistryError
from cocharge.store.db import utcnow
from cocharge.store.schema import circuits, sites, station_circuits, stations

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MODES = ("fast", "pv", "min+pv")
ROTATIONS_3 = ("L1L2L3", "L2L3L1", "L3L1L2", "L1L3L2", "L3L2L1", "L2L1L3")
ROTATIONS_1 = ("L1", "L2", "L3")


def _name(kind: str, name: str) -> str:
    if not NAME.fullmatch(name):
        raise RegistryError(f"{kind} name {name!r}: letters, digits, '.', '_' or '-' (up to 64), "
                            "starting with a letter or digit")
    return name


def phases_of(rotation: str) -> tuple[int, ...]:
    """"L2L3L1" -> (1, 2, 0): the circuit phases a charger's phases 1, 2, 3 are wired to."""
    return tuple(int(rotation[i + 1]) - 1 for i in range(0, len(rotation), 2))


@dataclass(frozen=True)
class Attached:
    station_id: str
    circuit: str
    phases: int
    rotation: str
    mode: str
    max_current_a: float | None
    profile_purpose: str | None


@dataclass(frozen=True)
class Site:
    name: str
    circuits: tuple[Circuit, ...]
    phases: dict[str, int]        # circuit -> 1 | 3 (kW limits and the display)
    reserve_a: dict[str, float]   # circuit -> fixed reserve per phase
    meters: dict[str, str]        # circuit -> none | mqtt | station:ID
    stations: tuple[Attached, ...]


async def load_sites(conn: AsyncConnection) -> dict[str, Site]:
    site_rows = (await conn.execute(select(sites.c.name))).scalars().all()
    circuit_rows = (await conn.execute(select(circuits).order_by(circuits.c.id))).all()
    attached = (await conn.execute(select(station_circuits))).all()
    site_of = {r.id: r.site for r in circuit_rows}
    found = {}
    for name in site_rows:
        mine = [r for r in circuit_rows if r.site == name]
        found[name] = Site(
            name,
            tuple(Circuit(r.id, r.parent, float(r.limit_a), (float(r.reserve_a),) * 3) for r in mine),
            {r.id: int(r.phases) for r in mine}, {r.id: float(r.reserve_a) for r in mine},
            {r.id: r.meter for r in mine},
            tuple(Attached(a.station_id, a.circuit, int(a.phases), a.rotation, a.mode,
                           a.max_current_a, a.profile_purpose)
                  for a in attached if site_of.get(a.circuit) == name))
    return found


async def add_site(engine: AsyncEngine, name: str) -> None:
    _name("site", name)
    async with engine.begin() as conn:
        if await conn.scalar(select(sites.c.name).where(sites.c.name == name)):
            raise RegistryError(f"site {name!r} exists already: `cocharge site show {name}`")
        await conn.execute(insert(sites).values(name=name, created_at=utcnow()))


async def remove_site(engine: AsyncEngine, name: str) -> None:
    async with engine.begin() as conn:
        await _site_exists(conn, name)
        ids = (await conn.execute(select(circuits.c.id).where(circuits.c.site == name))).scalars().all()
        await conn.execute(delete(station_circuits).where(station_circuits.c.circuit.in_(ids)))
        # Children first: the parent key refers to the same table.
        while ids:
            parents = set((await conn.execute(select(circuits.c.parent).where(
                circuits.c.id.in_(ids)))).scalars().all())
            leaves = [i for i in ids if i not in parents]
            await conn.execute(delete(circuits).where(circuits.c.id.in_(leaves)))
            ids = [i for i in ids if i not in leaves]
        await conn.execute(delete(sites).where(sites.c.name == name))


async def _site_exists(conn: AsyncConnection, name: str) -> None:
    if not await conn.scalar(select(sites.c.name).where(sites.c.name == name)):
        raise RegistryError(f"no site {name!r}: `cocharge site list` shows them, "
                            f"`cocharge site add {name}` makes it")


async def _circuit(conn: AsyncConnection, circuit_id: str) -> Any:
    row = (await conn.execute(select(circuits).where(circuits.c.id == circuit_id))).first()
    if row is None:
        raise RegistryError(f"no circuit {circuit_id!r}: `cocharge site show SITE` lists a "
                            "site's circuits")
    return row


def limit_amps(limit_a: float | None, limit_kw: float | None, phases: int, voltage_v: int) -> float:
    """A circuit's limit per phase from --limit-a or --limit-kw (spread over its phases)."""
    if (limit_a is None) == (limit_kw is None):
        raise RegistryError("give the circuit's limit as --limit-a (per phase) or --limit-kw, "
                            "one of them")
    amps = limit_a if limit_a is not None else limit_kw * 1000 / (voltage_v * phases)  # type: ignore[operator]
    if not 0 < amps <= 10_000:
        raise RegistryError(f"a circuit's limit is more than 0 and at most 10000 A per phase, "
                            f"not {amps:g} A")
    return round(amps, 1)


def _meter(meter: str) -> str:
    if meter in ("none", "mqtt") or (meter.startswith("station:") and NAME.fullmatch(meter[8:])):
        return meter
    raise RegistryError(f"--meter {meter!r}: none, mqtt (docs/load-management.md, topic "
                        "circuit/<id>/load/set) or station:ID (that station's own main meter)")


async def _check_tree(conn: AsyncConnection, site: str) -> None:
    rows = (await conn.execute(select(circuits).where(circuits.c.site == site))).all()
    try:
        paths([Circuit(r.id, r.parent, r.limit_a) for r in rows])
    except SiteError as exc:
        raise RegistryError(str(exc)) from exc


async def add_circuit(engine: AsyncEngine, circuit_id: str, site: str, parent: str | None,
                      limit_a: float, phases: int, reserve_a: float, meter: str) -> None:
    _name("circuit", circuit_id)
    _meter(meter)
    if reserve_a < 0 or reserve_a >= limit_a:
        raise RegistryError(f"--reserve-a {reserve_a:g}: from 0 to below the limit ({limit_a:g} A)")
    async with engine.begin() as conn:
        await _site_exists(conn, site)
        if await conn.scalar(select(circuits.c.id).where(circuits.c.id == circuit_id)):
            raise RegistryError(f"circuit {circuit_id!r} exists already (circuit names are "
                                "unique across sites)")
        if parent is not None:
            above = await _circuit(conn, parent)
            if above.site != site:
                raise RegistryError(f"circuit {parent!r} belongs to site {above.site!r}, not {site!r}")
        elif await conn.scalar(select(circuits.c.id).where(
                (circuits.c.site == site) & circuits.c.parent.is_(None))):
            raise RegistryError(f"site {site!r} has its main circuit already: give --parent")
        await conn.execute(insert(circuits).values(
            id=circuit_id, site=site, parent=parent, limit_a=limit_a, phases=phases,
            reserve_a=reserve_a, meter=meter, created_at=utcnow()))


async def update_circuit(engine: AsyncEngine, circuit_id: str, changes: dict[str, Any]) -> None:
    if "meter" in changes:
        _meter(changes["meter"])
    async with engine.begin() as conn:
        row = await _circuit(conn, circuit_id)
        limit = changes.get("limit_a", row.limit_a)
        reserve = changes.get("reserve_a", row.reserve_a)
        if reserve < 0 or reserve >= limit:
            raise RegistryError(f"the reserve ({reserve:g} A) must be from 0 to below the limit "
                                f"({limit:g} A)")
        if changes.get("parent") is not None:
            above = await _circuit(conn, changes["parent"])
            if above.site != row.site:
                raise RegistryError(f"circuit {changes['parent']!r} belongs to site "
                                    f"{above.site!r}, not {row.site!r}")
        await conn.execute(update(circuits).where(circuits.c.id == circuit_id).values(**changes))
        await _check_tree(conn, row.site)


async def remove_circuit(engine: AsyncEngine, circuit_id: str) -> None:
    async with engine.begin() as conn:
        await _circuit(conn, circuit_id)
        if await conn.scalar(select(circuits.c.id).where(circuits.c.parent == circuit_id)):
            raise RegistryError(f"circuit {circuit_id!r} has circuits under it: remove those first")
        attached = (await conn.execute(select(station_circuits.c.station_id).where(
            station_circuits.c.circuit == circuit_id))).scalars().all()
        if attached:
            raise RegistryError(f"circuit {circuit_id!r} feeds {', '.join(attached)}: attach them "
                                "elsewhere or `cocharge station detach ID` first")
        await conn.execute(delete(circuits).where(circuits.c.id == circuit_id))


async def attach(engine: AsyncEngine, station_id: str, circuit_id: str, rotation: str | None,
                 mode: str, max_current_a: float | None) -> Attached:
    rotation = (rotation or "L1L2L3").upper()
    if rotation not in ROTATIONS_3 + ROTATIONS_1:
        raise RegistryError(f"--phases {rotation!r}: a 3-phase charger's wiring (L1L2L3, L2L3L1, "
                            "L3L1L2, ...) or the one phase of a 1-phase charger (L1, L2, L3)")
    if mode not in MODES:
        raise RegistryError(f"--mode {mode!r}: one of {', '.join(MODES)}")
    if max_current_a is not None and not 6 <= max_current_a <= 1000:
        raise RegistryError("--max-current-a: from 6 to 1000 A")
    async with engine.begin() as conn:
        if not await conn.scalar(select(stations.c.id).where(stations.c.id == station_id)):
            raise RegistryError(f"unknown station {station_id!r}: `cocharge station list`")
        await _circuit(conn, circuit_id)
        values = {"circuit": circuit_id, "phases": len(rotation) // 2, "rotation": rotation, "mode": mode,
                      "max_current_a": max_current_a, "attached_at": utcnow(), "profile_purpose": None}
        if await conn.scalar(select(station_circuits.c.station_id).where(
                station_circuits.c.station_id == station_id)):
            await conn.execute(update(station_circuits).where(
                station_circuits.c.station_id == station_id).values(**values))
        else:
            await conn.execute(insert(station_circuits).values(station_id=station_id, **values))
    return Attached(station_id, circuit_id, len(rotation) // 2, rotation, mode, max_current_a, None)


async def detach(engine: AsyncEngine, station_id: str) -> None:
    async with engine.begin() as conn:
        gone = await conn.execute(delete(station_circuits).where(
            station_circuits.c.station_id == station_id))
        if not gone.rowcount:
            raise RegistryError(f"station {station_id!r} is not attached to a circuit")


def describe(site: Site) -> dict[str, Any]:
    """The stored shape of a site, for `site show` (the live part is added by the gateway)."""
    children: dict[str | None, list[Circuit]] = {}
    for c in site.circuits:
        children.setdefault(c.parent, []).append(c)

    def node(c: Circuit) -> dict[str, Any]:
        return {"circuit": c.id, "limit_a": c.limit_a, "phases": site.phases[c.id],
                "reserve_a": site.reserve_a[c.id], "meter": site.meters[c.id],
                "stations": [{"station": a.station_id, "wiring": a.rotation, "mode": a.mode,
                              "max_current_a": a.max_current_a, "purpose": a.profile_purpose}
                             for a in site.stations if a.circuit == c.id],
                "circuits": [node(k) for k in children.get(c.id, [])]}

    return {"site": site.name, "circuits": [node(c) for c in children.get(None, [])]}
