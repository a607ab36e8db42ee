"""The load manager: the sites' allocations made true at the chargers (docs/load-management.md).

One per gateway node. It keeps in memory the sites (re-read every `load_reload_s`), the
sessions running at attached stations, the other load each circuit's meter reports and each
site's PV surplus; it allocates a site again when a session starts or ends, when a meter
moves by `load_meter_delta_a`, and every `load_period_s`, and writes what changed:

- **Profiles, by whatever purpose the station accepts** (learnt, kept in
  `station_circuits.profile_purpose`): TxDefaultProfile per connector, else the station's
  maximum (ChargePointMaxProfile / ChargingStationMaxProfile) for all its connectors, else
  TxProfile per transaction. A session with a cutoff (budget, energy, slot) always gets one
  TxProfile that carries both: its allocation, then 0 A at the cutoff.
- **Stack levels**: 0 is the failsafe (below), 1 the allocation (and the cutoff's
  TxProfile); the operator's own profiles belong at 2 or above. Profile ids from
  2,100,000,000 are the load manager's.
- **Writes are limited**: a decrease goes out at once (the limit depends on it), an increase
  only when it is at least `load_min_change_a` and the connector's last write is
  `load_min_interval_s` old; decreases are written before increases.
- **Failsafe**: every attached station holds, at stack level 0, its safe share: the
  current that all of the site's chargers may draw at once without any circuit over its
  limit (fixed reserves counted). Allocations are written with a duration of
  `load_profile_valid_s` and renewed before they end: a station cut off from us falls back
  to its safe share within that time. Meanwhile its last allocation counts as drawn.
- Chargers without a session hold an allocation too (the lowest class, at most their safe
  share, never below 6 A): an EV that plugs in starts within what is free, before we know.

The manager never waits for a charger inside a charger's message: hooks only note and wake
its task, which sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.background import Background
from cocharge.config import GatewaySettings
from cocharge.load import pv
from cocharge.load.allocate import (
    MIN_CURRENT_A,
    Allocation,
    Circuit,
    Demand,
    allocate,
    floor_tenth,
    safe_shares,
)
from cocharge.load.cluster import SiteOwnership
from cocharge.load.sites import Attached, Site, load_sites, phases_of
from cocharge.stations import commands as cmd
from cocharge.stations.events import MeterSample
from cocharge.stations.load_hooks import GREEN_UPDATE
from cocharge.store.db import utcnow
from cocharge.store.schema import sessions, station_circuits
from cocharge.store.sql import among

log = logging.getLogger(__name__)

FAILSAFE_ID = 2_100_000_000
ALLOCATION_ID = 2_100_000_100  # + connector
CHAIN = ("TxDefaultProfile", "MaxProfile", "TxProfile")
IDLE_PRIORITY = 3


@dataclass
class Running:
    session_id: int
    station_id: str
    connector_id: int
    tx_ref: str
    started_at: datetime  # the charger's clock: a Relative TxProfile counts from here
    arrived: float
    priority: int
    current_a: tuple[float, float, float] | None = None  # measured, per charger phase
    power_w: float = 0.0
    register_wh: float | None = None
    first_wh: float | None = None  # the register's first reading we saw
    green_wh: float = 0.0
    ev_max_a: float | None = None
    wanted_wh: float | None = None
    departure: datetime | None = None
    # The EV asked for a schedule (ISO 15118 NotifyEVChargingNeeds): it gets a TxProfile.
    wants_schedule: bool = False


@dataclass
class Written:
    limit_a: float
    at: float        # monotonic time of the write
    until: float     # monotonic time the profile ends (its duration)
    purpose: str
    dynamic: bool = False  # a 2.1 Dynamic profile: UpdateDynamicSchedule moves its limit


@dataclass
class SiteState:
    allocation: Allocation | None = None
    shares: dict[Any, float] = field(default_factory=dict)  # (station, connector) -> A
    computed_at: float = 0.0
    pv: dict[str, pv.PvState] = field(default_factory=dict)


def _no_higher_than(begun: Allocation | None, newest: Allocation | None) -> Allocation | None:
    """`begun`, each connector's current no higher than in `newest` (_write_site)."""
    if begun is None or newest is None or newest is begun:
        return begun
    return Allocation({key: min(amps, newest.current_a.get(key, amps))
                       for key, amps in begun.current_a.items()}, begun.paused, begun.drawn_a)


class LoadManager:
    def __init__(self, engine: AsyncEngine, settings: GatewaySettings,
                 link: Callable[[str], Any], connectors: Callable[[str], tuple[int, int | None]],
                 tracked: Callable[[int], int | None]) -> None:
        self.engine = engine
        self.settings = settings
        self.link = link
        self.connectors = connectors  # station -> (connectors, max power W or None)
        self.tracked = tracked  # session -> its cutoff's 0 A offset (s after start) or None
        self.sites: dict[str, Site] = {}
        self.attached: dict[str, tuple[Site, Attached]] = {}
        self.state: dict[str, SiteState] = {}
        self.running: dict[tuple[str, int], Running] = {}
        self.written: dict[tuple[str, int], Written] = {}
        # Dynamic allocation profiles the node allocating a site wrote through us to a
        # station held here: (station, connector) -> (limit A, until monotonic); what this
        # node answers the station's PullDynamicScheduleUpdate with.
        self.relayed_limits: dict[tuple[str, int], tuple[float, float]] = {}
        # Dynamic limits on their way to a station ((station, connector) -> A): a station
        # may pull the moment it has accepted, before its answer has reached us.
        self.in_flight: dict[tuple[str, int], float] = {}
        self.failsafe: dict[str, float] = {}  # station -> safe share written (per connector)
        self.purpose: dict[str, str] = {}  # station -> learnt purpose ("none": refuses all)
        self.no_dynamic: set[str] = set()  # 2.1 stations that refused a Dynamic profile
        self.other: dict[str, tuple[float, float, float]] = {}  # circuit -> measured other load
        self.circuit_total: dict[str, bool] = {}  # the reading includes the chargers
        self.surplus: dict[str, tuple[float, float]] = {}  # site -> (surplus W, monotonic)
        # site -> (W the whole site may draw, until (monotonic; None: until cleared), source):
        # a grid operator's limit (DER control, docs/load-management.md), honoured above
        # every circuit's own limit.
        self.grid: dict[str, tuple[float, float | None, str]] = {}
        self.external: dict[tuple[str, int], float] = {}  # (station, evse) -> A (grid operator)
        self.station_meters: dict[str, tuple[float, float, float]] = {}  # other stations' draw
        self.meter_stations: set[str] = set()  # stations whose currents meter a circuit
        self.booked: Callable[[int], bool] = lambda _session_id: False
        self.owner_of: Callable[[str, int, str], bool] = lambda _s, _c, _tag: False
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._busy: set[str] = set()
        self._background = Background(log, "load management")
        self._loop: asyncio.Task[None] | None = None
        self._loaded = 0.0
        self._lowered = False  # a round wrote a decrease (the increases wait load_settle_s)
        # Several nodes (a broker between them): who allocates each site (load/cluster.py).
        self.cluster: SiteOwnership | None = None
        # Stations of a site taken over that are connected nowhere: what they hold from the
        # node before is unknown, so they count at their maximum until it would have ended.
        self.unknown_until: dict[str, float] = {}
        self._owning: asyncio.Task[None] | None = None
        self._claiming = False  # a claim of an unowned site is under way

    # --- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.reload()
        if self.cluster is not None:
            await self._own()
            self._owning = asyncio.create_task(self._own_forever(), name="site leases")
        self._loop = asyncio.create_task(self._run(), name="load-management")

    async def close(self) -> None:
        for task in (self._owning, self._loop):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._background.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):  # the database may be gone already
                await self.cluster.release()

    # --- several nodes: one allocates each site (load/cluster.py) ------------------------------

    def _link(self, station_id: str) -> Any:
        """The way to write to a station: its connection here, or through the node holding
        it when we allocate its site."""
        local = self.link(station_id)
        if local is not None or self.cluster is None:
            return local
        return self.cluster.remote_link(station_id)

    def _elsewhere(self, station_id: str) -> str | None:
        """The other node allocating this station's site (None: we do, or not managed)."""
        found = self.attached.get(station_id)
        if found is None or self.cluster is None:
            return None
        return self.cluster.owner(found[0].name)

    async def _own(self) -> None:
        assert self.cluster is not None
        local = {sid for sid in self.attached if self.link(sid) is not None}
        gained = await self.cluster.round(
            {name: [a.station_id for a in site.stations] for name, site in self.sites.items()},
            local)
        if gained:
            # What the stations hold is not known here: written again from the failsafe up,
            # with the sessions of every node (read from the database).
            until = time.monotonic() + self.settings.load_profile_valid_s
            for name in gained:
                for a in self.sites[name].stations:
                    self.failsafe.pop(a.station_id, None)
                    for key in [k for k in self.written if k[0] == a.station_id]:
                        del self.written[key]
                    if self._link(a.station_id) is None:
                        self.unknown_until[a.station_id] = until
            await self.reload()

    def claim_soon(self) -> None:
        """Claim what can be claimed now, not at the next round (a node just died)."""
        if self.cluster is not None and not self._claiming:
            self._claiming = True
            self._background.spawn(self._claim_now(), "site leases")

    async def _claim_now(self) -> None:
        try:
            await self._own()
        finally:
            self._claiming = False

    async def _own_forever(self) -> None:
        # Renewed well within the lease, and a dead owner's site claimed within a second of
        # its node's lease's end (cluster.py): the site moves within the lease time.
        every = min(self.settings.node_lease_s / 3, 1.0)
        while True:
            await asyncio.sleep(every)
            try:
                await self._own()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away a moment: the lease outlasts two misses
                log.exception("site leases not renewed")

    def remote_event(self, body: dict[str, Any]) -> None:
        """What another node's station of a site we allocate reported (over the broker)."""
        event, station_id = body.get("event"), str(body.get("station", ""))
        if self.cluster is not None and body.get("node"):
            self.cluster.held_elsewhere(station_id, str(body["node"]), body.get("protocol"))
        if event == "started":
            self.session_started(station_id, int(body["connector"]), int(body["session"]),
                                 str(body["tx_ref"]), str(body["tag"]),
                                 datetime.fromisoformat(str(body["started_at"])))
        elif event == "ended":
            self.session_ended(station_id, int(body["connector"]), int(body["session"]))
        elif event == "online":
            self.station_online(station_id, bool(body["online"]))
        elif event == "meter":
            currents = body.get("currents")
            rows = self._metered(station_id, int(body["connector"]), body.get("session"),
                                 tuple(currents) if currents else None, body.get("power"),
                                 body.get("register"))
            if rows:  # the energy PV covered, as the holder would have written it
                self._background.spawn(self._green(rows), "green energy")
        elif event == "external":
            self.external_limit(station_id, int(body["evse"]), body.get("limit_a"))
        elif event == "cutoff":
            self.cutoff_moved(station_id, int(body["connector"]))
        elif event == "grid":
            self.grid_limit(str(body["site"]), body.get("limit_w"), body.get("for_s"),
                            str(body.get("source") or "operator"))

    async def _green(self, rows: list[dict[str, Any]]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(GREEN_UPDATE, rows)

    def _tell_owner(self, station_id: str, owner: str, event: str, **body: Any) -> None:
        assert self.cluster is not None
        link = self.link(station_id)
        self.cluster.tell(owner, {"event": event, "station": station_id,
                                  "node": self.cluster.node_id,
                                  "protocol": getattr(link, "protocol", None), **body})

    async def reload(self) -> None:
        async with self.engine.connect() as conn:
            self.sites = await load_sites(conn)
            attached = {a.station_id: (s, a) for s in self.sites.values() for a in s.stations}
            rows: Sequence[Any] = []
            if attached:
                rows = (await conn.execute(select(sessions).where(and_(
                    sessions.c.status == "active", sessions.c.ended_at.is_(None),
                    among(conn, sessions.c.station_id, attached))))).all()
        self.attached = attached
        self.meter_stations = {m[8:] for s in self.sites.values() for m in s.meters.values()
                               if m.startswith("station:")}
        for station_id, (_, a) in attached.items():
            if a.profile_purpose:
                self.purpose[station_id] = a.profile_purpose
        for row in rows:  # sessions running since before a restart (or begun on another node)
            key = (row.station_id, row.connector_id)
            if key not in self.running and row.started_at is not None:
                self.running[key] = Running(
                    int(row.id), row.station_id, row.connector_id, row.tx_ref or "",
                    row.started_at, row.started_at.timestamp(),
                    0 if row.booking_id else 1 if self.owner_of(row.station_id, row.connector_id,
                                                                row.id_tag or "") else 2,
                    green_wh=float(row.green_wh or 0))
        self.state = {name: self.state.get(name, SiteState()) for name in self.sites}
        self._loaded = time.monotonic()
        self._dirty |= set(self.sites)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.load_period_s):
                        await self._wake.wait()
                self._wake.clear()
                if time.monotonic() - self._loaded >= self.settings.load_reload_s:
                    await self.reload()
                due = {name for name, s in self.state.items()
                       if time.monotonic() - s.computed_at >= self.settings.load_period_s}
                for name in (self._dirty | due) & set(self.sites):
                    self._dirty.discard(name)
                    if self.cluster is None or self.cluster.mine(name):
                        self.rebalance(name)  # (another node allocates the others)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("load management round failed")
                await asyncio.sleep(1.0)

    def _site_changed(self, station_id: str) -> None:
        found = self.attached.get(station_id)
        if found is not None:
            self._dirty.add(found[0].name)
            self._wake.set()

    # --- what the stations report (hooks: never wait) -----------------------------------------

    def manages(self, station_id: str) -> bool:
        return station_id in self.attached

    def session_started(self, station_id: str, connector_id: int, session_id: int, tx_ref: str,
                        tag: str, started_at: datetime) -> None:
        if station_id not in self.attached:
            return
        owner = self._elsewhere(station_id)
        if owner is not None:
            self._tell_owner(station_id, owner, "started", connector=connector_id,
                             session=session_id, tx_ref=tx_ref, tag=tag,
                             started_at=started_at.isoformat())
            return
        priority = 0 if self.booked(session_id) else 1 if self.owner_of(
            station_id, connector_id, tag) else 2
        self.running[(station_id, connector_id)] = Running(
            session_id, station_id, connector_id, tx_ref, started_at, time.time(), priority)
        self._site_changed(station_id)

    def session_ended(self, station_id: str, connector_id: int, session_id: int) -> None:
        owner = self._elsewhere(station_id)
        if owner is not None:
            self._tell_owner(station_id, owner, "ended", connector=connector_id,
                             session=session_id)
            return
        found = self.running.get((station_id, connector_id))
        if found is not None and found.session_id == session_id:
            del self.running[(station_id, connector_id)]
            self._site_changed(station_id)

    def cutoff_moved(self, station_id: str, connector_id: int) -> None:
        """A session's cutoff point changed: its TxProfile is written again (with it)."""
        owner = self._elsewhere(station_id)
        if owner is not None:
            self._tell_owner(station_id, owner, "cutoff", connector=connector_id)
            return
        self.written.pop((station_id, connector_id), None)
        self._site_changed(station_id)

    def start_limit(self, station_id: str, connector_id: int) -> float:
        """What a connector may draw at the start of a session (its idle allocation)."""
        written = self.written.get((station_id, connector_id))
        if written is not None:
            return written.limit_a
        found = self.attached.get(station_id)
        state = self.state.get(found[0].name) if found else None
        if found is not None and (state is None or not state.shares):
            # Another node allocates the site: the connector's safe share, as its failsafe.
            shares = safe_shares(self._circuits(found[0], True), self._chargers(found[0]))  # type: ignore[arg-type]
            return float(shares.get((station_id, connector_id), 0.0))
        return state.shares.get((station_id, connector_id), 0.0) if state else 0.0

    def station_online(self, station_id: str, online: bool) -> None:
        if station_id not in self.attached:
            return
        owner = self._elsewhere(station_id)
        if owner is not None:
            self._tell_owner(station_id, owner, "online", online=online)
            return
        if self.cluster is not None and not online and self.link(station_id) is None:
            self.cluster.holders.pop(station_id, None)
        if (self.cluster is not None and online and not self._claiming
                and self.cluster.unowned(self.attached[station_id][0].name)):
            self._claiming = True  # one claim for a storm of the site's chargers
            self._background.spawn(self._claim_now(), "site leases")
        if online:  # what it holds is unknown after a reboot: write again
            self.unknown_until.pop(station_id, None)
            self.failsafe.pop(station_id, None)
            for key in [k for k in self.written if k[0] == station_id]:
                del self.written[key]
        self._site_changed(station_id)

    def samples(self, station_id: str, connector_id: int, session_id: int | None,
                samples: list[MeterSample]) -> list[dict[str, Any]]:
        """Meter values of an attached (or metering) station; returns rows for
        `stations.load_hooks.GREEN_UPDATE` when a session's surplus-covered energy grew."""
        if station_id not in self.attached and station_id not in self.meter_stations:
            return []  # every meter value of every station passes here: nothing to do
        currents = [0.0, 0.0, 0.0]
        seen_current = False
        power = None
        register = None
        for s in samples:
            if s.measurand == "Current.Import" and s.context != "Transaction.Begin":
                seen_current = True
                index = {"L1": 0, "L2": 1, "L3": 2}.get((s.phase or "")[:2])
                if index is None:
                    currents = [max(c, s.value) for c in currents]
                else:
                    currents[index] = s.value
            elif s.measurand == "Power.Active.Import" and s.phase is None:
                power = s.value
            elif s.measurand == "Energy.Active.Import.Register" and s.phase is None:
                register = s.value
        if seen_current and station_id in self.meter_stations:
            self.station_meters[f"{station_id}/{connector_id}"] = (currents[0], currents[1], currents[2])
        measured = (currents[0], currents[1], currents[2]) if seen_current else None
        owner = self._elsewhere(station_id)
        if owner is not None:
            self._tell_owner(station_id, owner, "meter", connector=connector_id,
                             session=session_id, currents=measured, power=power,
                             register=register)
            return []
        return self._metered(station_id, connector_id, session_id, measured, power, register)

    def _metered(self, station_id: str, connector_id: int, session_id: int | None,
                 measured: tuple[float, ...] | None, power: float | None,
                 register: float | None) -> list[dict[str, Any]]:
        """A reading of a running session (here or reported by another node)."""
        found = self.attached.get(station_id)
        run = self.running.get((station_id, connector_id))
        if found is None or run is None or (session_id is not None and run.session_id != session_id):
            return []
        before = run.current_a
        if measured is not None:
            run.current_a = (measured[0], measured[1], measured[2])
        if power is not None:
            run.power_w = power
        elif measured is not None:
            run.power_w = sum(measured) * self.settings.nominal_voltage_v
        rows = []
        site = found[0]
        if register is not None:
            if run.register_wh is not None and register > run.register_wh and site.name in self.surplus:
                share = pv.green_share(self.surplus[site.name][0], self._site_power_w(site.name))
                run.green_wh += (register - run.register_wh) * share
                rows.append({"sid": run.session_id, "green": int(run.green_wh)})
            run.register_wh = register
            if run.first_wh is None:
                run.first_wh = register
        if before is not None and run.current_a is not None and self._metered_circuit(site) and max(
                abs(a - b) for a, b in zip(before, run.current_a, strict=True)
        ) >= self.settings.load_meter_delta_a:
            self._dirty.add(site.name)
            self._wake.set()
        return rows

    def _metered_circuit(self, site: Site) -> bool:
        return any(self.circuit_total.get(c.id) for c in site.circuits)

    def _site_power_w(self, site: str) -> float:
        return sum(r.power_w for r in self.running.values()
                   if (found := self.attached.get(r.station_id)) and found[0].name == site)

    def circuit_load(self, circuit: str, currents: tuple[float, float, float],
                     includes_chargers: bool) -> None:
        """A circuit's meter (MQTT): the other load on it, or its total with the chargers."""
        old = self.other.get(circuit)
        self.other[circuit] = currents
        self.circuit_total[circuit] = includes_chargers
        site = next((s for s in self.sites.values() if any(c.id == circuit for c in s.circuits)),
                    None)
        if site is not None and (old is None or includes_chargers or max(
                abs(a - b) for a, b in zip(old, currents, strict=True)) >= self.settings.load_meter_delta_a):
            self._dirty.add(site.name)
            self._wake.set()

    def site_surplus(self, site: str, surplus_w: float) -> None:
        old = self.surplus.get(site)
        self.surplus[site] = (surplus_w, time.monotonic())
        if site in self.sites and (old is None or abs(old[0] - surplus_w) >= 230):
            self._dirty.add(site)
            self._wake.set()

    def grid_limit(self, site: str, limit_w: float | None, for_s: float | None = None,
                   source: str = "operator") -> bool:
        """A grid operator's limit on what the whole site draws (W), for `for_s` seconds or
        until cleared (None); False when there is no such site."""
        if site not in self.sites:
            return False
        if limit_w is None:
            self.grid.pop(site, None)
        else:
            until = time.monotonic() + for_s if for_s else None
            self.grid[site] = (max(0.0, limit_w), until, source)
        log.info("site %s: grid limit %s (%s)", site,
                 "cleared" if limit_w is None else f"{limit_w:.0f} W", source)
        if self.cluster is not None and (owner := self.cluster.owner(site)) is not None:
            # Kept here too: this node may allocate the site later.
            self.cluster.tell(owner, {"event": "grid", "site": site, "limit_w": limit_w,
                                      "for_s": for_s, "source": source})
        self._dirty.add(site)
        self._wake.set()
        return True

    def _grid_w(self, site: str) -> float | None:
        found = self.grid.get(site)
        if found is None:
            return None
        if found[1] is not None and time.monotonic() >= found[1]:
            del self.grid[site]  # the signal's time is over
            return None
        return found[0]

    def external_limit(self, station_id: str, evse_id: int, limit_a: float | None) -> None:
        """A limit set outside us (NotifyChargingLimit from the grid operator, EMS); None clears."""
        owner = self._elsewhere(station_id)
        if owner is not None:
            self._tell_owner(station_id, owner, "external", evse=evse_id, limit_a=limit_a)
            return
        if limit_a is None:
            self.external.pop((station_id, evse_id), None)
        else:
            self.external[(station_id, evse_id)] = limit_a
        self._site_changed(station_id)

    def limit_a(self, station_id: str, evse_id: int) -> float | None:
        """What we last allowed this EVSE (A per phase), while it holds; None: no limit of
        ours (not under load management, or nothing written yet)."""
        written = self.written.get((station_id, evse_id))
        if written is None or written.until <= time.monotonic():
            return None
        return written.limit_a

    @staticmethod
    def _dynamic_target(command: Any) -> tuple[int, float] | None:
        """(connector, A) of a command writing or moving one of our Dynamic allocation
        profiles; None for any other command."""
        if (isinstance(command, cmd.SetChargingProfile) and command.kind == "Dynamic"
                and 0 <= command.id - ALLOCATION_ID <= 64 and command.periods):
            return command.id - ALLOCATION_ID, float(command.periods[0][1])
        if (isinstance(command, cmd.UpdateDynamicSchedule) and command.limit is not None
                and 0 <= command.profile_id - ALLOCATION_ID <= 64):
            return command.profile_id - ALLOCATION_ID, float(command.limit)
        return None

    @contextlib.contextmanager
    def sending(self, station_id: str, command: Any) -> Any:
        """While a Dynamic allocation (ours or the site owner's, relayed) is on its way to
        the station, its PullDynamicScheduleUpdate is answered with it."""
        target = self._dynamic_target(command)
        if target is None:
            yield
            return
        key = (station_id, target[0])
        self.in_flight[key] = target[1]
        try:
            yield
        finally:
            if self.in_flight.get(key) == target[1]:
                del self.in_flight[key]

    def relayed(self, station_id: str, command: Any, accepted: bool) -> None:
        """A command the node allocating this station's site sent through us, the station's
        holder: a Dynamic allocation profile (and its moves) is remembered, so that this
        node answers the station's PullDynamicScheduleUpdate with what the owner allotted."""
        target = self._dynamic_target(command)
        if not accepted or target is None:
            return
        key = (station_id, target[0])
        if isinstance(command, cmd.SetChargingProfile):
            valid = command.duration or self.settings.load_profile_valid_s
            self.relayed_limits[key] = (target[1], time.monotonic() + valid)
        elif (held := self.relayed_limits.get(key)) is not None:
            self.relayed_limits[key] = (target[1], held[1])

    def dynamic_limit(self, station_id: str, profile_id: int) -> float | None:
        """2.1 PullDynamicScheduleUpdate: the allocation now of the EVSE whose profile of
        ours this is (A per phase); None for a profile that is not ours. A profile the
        site's owner (another node) wrote through us: what it allotted, while it holds."""
        connector = profile_id - ALLOCATION_ID
        if not 0 <= connector <= 64:
            return None
        if (station_id, connector) in self.in_flight:
            return self.in_flight[(station_id, connector)]
        relayed = self.relayed_limits.get((station_id, connector))
        if relayed is not None and (station_id, connector) not in self.written:
            return relayed[0] if relayed[1] > time.monotonic() else None
        if station_id not in self.attached:
            return None
        written = self.written.get((station_id, connector))
        if written is None or not written.dynamic:
            return None
        state = self.state.get(self.attached[station_id][0].name)
        if state is None or state.allocation is None:
            return self.limit_a(station_id, connector)
        if connector == 0:  # the station's maximum: what its connectors were given
            n, _ = self.connectors(station_id)
            return sum(state.allocation.current_a.get((station_id, k), 0.0)
                       for k in range(1, n + 1))
        return state.allocation.current_a.get((station_id, connector),
                                               self.limit_a(station_id, connector))

    def ev_needs(self, station_id: str, evse_id: int, max_current_a: float | None,
                 energy_wh: float | None, departure: datetime | None) -> bool:
        """NotifyEVChargingNeeds: the EV's own maximum, energy wanted and departure. True when
        a schedule (our allocation) will follow."""
        run = self.running.get((station_id, evse_id))
        if run is None or station_id not in self.attached:
            return False
        run.ev_max_a, run.wanted_wh, run.departure = max_current_a, energy_wh, departure
        run.wants_schedule = True
        self.written.pop((station_id, evse_id), None)  # the EV asks for a schedule: send one
        self._site_changed(station_id)
        return True

    # --- allocation -----------------------------------------------------------------------------

    def _own_max_a(self, a: Attached) -> float:
        if a.max_current_a:
            return a.max_current_a
        _connectors, power_w = self.connectors(a.station_id)
        watts = power_w or self.settings.assumed_station_power_w
        return max(MIN_CURRENT_A, floor_tenth(watts / (self.settings.nominal_voltage_v * a.phases)))

    def _circuits(self, site: Site, failsafe: bool) -> list[Circuit]:
        """The site's circuits with their other load: measured (a total less our chargers'
        measured draw) or the reserve, whichever is more; the failsafe knows only reserves."""
        found = []
        grid_w = self._grid_w(site.name)
        for c in site.circuits:
            other = list(c.other_a)
            limit_a = c.limit_a
            if grid_w is not None and c.parent is None:
                # The grid operator's limit: per phase over the main circuit's phases.
                phases = site.phases.get(c.id, 3)
                limit_a = min(limit_a, grid_w / (self.settings.nominal_voltage_v * phases))
            if not failsafe:
                reading = self.other.get(c.id)
                measured = list(reading) if reading is not None else None
                if measured is not None and self.circuit_total.get(c.id):
                    ours = self._measured_under(site, c.id)
                    measured = [max(0.0, m - o) for m, o in zip(measured, ours, strict=True)]
                meter = site.meters.get(c.id, "none")
                if meter.startswith("station:"):
                    name = meter[8:] + "/"
                    draws = [v for k, v in self.station_meters.items() if k.startswith(name)]
                    measured = [sum(d[p] for d in draws) for p in range(3)] if draws else None
                if measured is not None:
                    other = [max(o, m) for o, m in zip(other, measured, strict=True)]
            found.append(Circuit(c.id, c.parent, limit_a, (other[0], other[1], other[2])))
        return found

    def _measured_under(self, site: Site, circuit: str) -> tuple[float, float, float]:
        below = {circuit}
        grew = True
        while grew:
            grew = False
            for c in site.circuits:
                if c.parent in below and c.id not in below:
                    below.add(c.id)
                    grew = True
        total = [0.0, 0.0, 0.0]
        for r in self.running.values():
            found = self.attached.get(r.station_id)
            if found is None or found[1].circuit not in below or r.current_a is None:
                continue
            for i, p in enumerate(phases_of(found[1].rotation)):
                total[p] += r.current_a[i] if i < 3 else 0.0
        return total[0], total[1], total[2]

    def rebalance(self, site_name: str) -> Allocation | None:
        site = self.sites[site_name]
        state = self.state.setdefault(site_name, SiteState())
        now = time.monotonic()
        chargers = self._chargers(site)
        state.shares = safe_shares(self._circuits(site, True), chargers)  # type: ignore[arg-type]
        demands = []
        pv_sessions = [r for r in self.running.values()
                       if r.station_id in self.attached and self.attached[r.station_id][0] is site
                       and self.attached[r.station_id][1].mode != "fast"]
        surplus = self.surplus.get(site_name, (0.0, 0.0))[0]
        for key, (circuit, phases, own_max) in chargers.items():
            station_id, _connector = key
            a = self.attached[station_id][1]
            online = self._link(station_id) is not None
            purpose = self.purpose.get(station_id)
            run = self.running.get(key)
            if not online or purpose == "none":
                # Offline: its last allocation counts as drawn until it ends (then its safe
                # share); a station that refuses every profile draws what it can.
                written = self.written.get(key)
                fixed = (own_max if purpose == "none" and run is not None
                         else written.limit_a if written and written.until > now
                         else own_max if self.unknown_until.get(station_id, 0.0) > now
                         else state.shares.get(key, own_max))
                demands.append(Demand(key, circuit, phases, fixed_a=fixed))
                continue
            if run is None:
                demands.append(Demand(key, circuit, phases, 0.0, state.shares.get(key, 0.0),
                                      IDLE_PRIORITY, 0.0))
                continue
            high = own_max
            for limit in (run.ev_max_a, self.external.get(key), self.external.get((station_id, 0))):
                if limit is not None:
                    high = min(high, limit)
            high = min(high, self._needed_a(run, a))
            low = MIN_CURRENT_A
            if a.mode != "fast":
                share = surplus / max(1, len(pv_sessions))
                pv_state = state.pv.setdefault(station_id, pv.PvState())
                limits = pv.pv_limits(a.mode, pv.surplus_amps(share, a.phases,
                                                              self.settings.nominal_voltage_v),
                                      MIN_CURRENT_A, high, pv_state, now,
                                      self.settings.pv_enable_delay_s,
                                      self.settings.pv_disable_delay_s)
                if limits is None:
                    demands.append(Demand(key, circuit, phases, 0.0, 0.0, run.priority, run.arrived))
                    continue
                low, high = limits
            demands.append(Demand(key, circuit, phases, low, high, run.priority, run.arrived))
        result = allocate(self._circuits(site, False), demands)
        for held, amps in list(result.current_a.items()):
            if held not in self.running and 0 < amps < MIN_CURRENT_A:
                result.current_a[held] = 0.0  # an idle charger offers 6 A or nothing
        state.allocation = result
        state.computed_at = now
        self._apply(site, state)
        return result

    def _chargers(self, site: Site) -> dict[tuple[str, int], tuple[str, Any, float]]:
        """(station, connector) -> (its circuit, the phases it draws on, its own maximum)."""
        chargers = {}
        for a in site.stations:
            n, _ = self.connectors(a.station_id)
            for c in range(1, n + 1):
                chargers[(a.station_id, c)] = (a.circuit, phases_of(a.rotation), self._own_max_a(a))
        return chargers

    def _needed_a(self, run: Running, a: Attached) -> float:
        """With a departure time and the energy still wanted: the current that meets it (with
        a tenth to spare), so that others get the rest."""
        if run.departure is None or run.wanted_wh is None:
            return float("inf")
        hours = (run.departure - utcnow()).total_seconds() / 3600
        if hours <= 0:
            return float("inf")
        delivered = (run.register_wh or 0.0) - (run.first_wh or 0.0)
        left = max(0.0, run.wanted_wh - delivered)
        return max(MIN_CURRENT_A, left / (hours * self.settings.nominal_voltage_v * a.phases) * 1.1)

    # --- writing profiles -----------------------------------------------------------------------

    def _apply(self, site: Site, state: SiteState) -> None:
        if site.name in self._busy:
            self._dirty.add(site.name)  # written again when the writes in flight are done
            return
        self._busy.add(site.name)
        self._background.spawn(self._write_site(site, state), f"profiles {site.name}")

    async def _write_site(self, site: Site, state: SiteState) -> None:
        """Decreases (and first writes) at every station first, then the increases: the
        circuit is never over its limit between the two."""
        try:
            online = [a for a in site.stations if self._link(a.station_id) is not None]
            # The round writes the allocation it began with. One computed meanwhile (a car
            # arrived during the settle time) may lower others to make room: raising by it
            # now would come before its decreases, and the circuit would be over its limit
            # until the next round. So the increases are of this round's allocation, and
            # none above the newest; the newest is written by the next round, decreases first.
            allocation, shares = state.allocation, state.shares
            self._lowered = False
            lowered = await asyncio.gather(
                *(self._write(a, allocation, shares, True) for a in online), return_exceptions=True)
            # A charger that did not confirm its lower limit may still draw the old one:
            # nothing is raised until it has.
            if not self._unconfirmed(site, online, lowered, "lower limit"):
                if self._lowered:
                    # An EV has seconds to follow a lower limit (IEC 61851-1: 5 s): raise
                    # others only once it has.
                    await asyncio.sleep(self.settings.load_settle_s)
                raise_to = _no_higher_than(allocation, state.allocation)
                raised = await asyncio.gather(*(self._write(a, raise_to, shares, False)
                                                for a in online), return_exceptions=True)
                if not self._unconfirmed(site, online, raised, "higher limit"):
                    return
            # The next round writes what went unconfirmed again (a settle time later, so as
            # not to spin while a charger stays away).
            await asyncio.sleep(self.settings.load_settle_s)
            self._dirty.add(site.name)
        finally:
            self._busy.discard(site.name)
            if site.name in self._dirty:
                self._wake.set()

    @staticmethod
    def _unconfirmed(site: Site, online: list[Attached], results: list[Any], what: str) -> bool:
        """Whether a write of the round went unconfirmed (the charger did not answer, or left):
        said in one line each; any other failure is a bug, raised as it is."""
        unconfirmed = False
        for a, result in zip(online, results, strict=True):
            if isinstance(result, cmd.CommandFailed):
                unconfirmed = True
                log.warning("site %s: station %s did not confirm its %s (%s): written again "
                            "in the next round", site.name, a.station_id, what, result)
            elif isinstance(result, BaseException):
                raise result
        return unconfirmed

    async def _write(self, a: Attached, allocation: Allocation | None, shares: dict[Any, float],
                     lowering: bool) -> None:
        link = self._link(a.station_id)
        if link is None or allocation is None:
            return
        station_id = a.station_id
        n, _ = self.connectors(station_id)
        share = min((shares.get((station_id, c), 0.0) for c in range(1, n + 1)), default=0.0)
        for _ in CHAIN:
            purpose = self.purpose.get(station_id, CHAIN[0])
            if purpose == "none":
                return
            if lowering and self.failsafe.get(station_id) != share and purpose != "TxProfile":
                if not await self._send(link, station_id, self._failsafe(link, purpose, n, share)):
                    await self._next_purpose(station_id, purpose)
                    continue
                self.failsafe[station_id] = share
            if await self._write_allocation(link, a, purpose, allocation, n, lowering):
                return
            await self._next_purpose(station_id, purpose)

    def _failsafe(self, link: Any, purpose: str, n: int, share: float) -> cmd.SetChargingProfile:
        if purpose == "TxDefaultProfile":
            return cmd.SetChargingProfile(0, "TxDefaultProfile", ((0, share),), FAILSAFE_ID, 0,
                                          "Relative")
        return cmd.SetChargingProfile(0, cmd.MAX_PURPOSE[link.protocol], ((0, share * n),),
                                      FAILSAFE_ID, 0, "Absolute")

    async def _write_allocation(self, link: Any, a: Attached, purpose: str,
                                allocation: Allocation, n: int, lowering: bool) -> bool:
        """Write what changed enough: the decreases and first writes (`lowering`), or the
        increases; False when the station refused the purpose."""
        now = time.monotonic()
        valid = self.settings.load_profile_valid_s
        wanted = {c: allocation.current_a.get((a.station_id, c), 0.0) for c in range(1, n + 1)}
        if purpose == "MaxProfile":
            targets = {0: sum(wanted.values())}
        else:
            targets = dict(wanted)
        for c in sorted(targets):
            amps = targets[c]
            key = (a.station_id, c)
            written = self.written.get(key)
            if lowering != (written is None or written.purpose != purpose
                            or amps < written.limit_a - 1e-6):
                continue
            run = self.running.get((a.station_id, c)) if c else None
            if not self._due(written, amps, purpose, now):
                continue
            offset = self.tracked(run.session_id) if run is not None else None
            if run is not None and (offset is not None or purpose == "TxProfile"
                                    or run.wants_schedule):
                elapsed = max(0, int((utcnow() - run.started_at).total_seconds()))
                periods: tuple[tuple[float, ...], ...] = ((0, amps),)
                if offset is not None and offset > 0:
                    periods = ((0, amps), (offset, 0.0))
                profile = cmd.SetChargingProfile(c, "TxProfile", periods, run.session_id, 1,
                                                 "Relative", duration=elapsed + int(valid),
                                                 session_id=run.session_id)
                ok = await self._send(link, a.station_id, profile, run.tx_ref)
                if not ok and offset is None:
                    return False
            elif purpose == "TxProfile":
                continue  # nothing to write for an idle connector of a TxProfile station
            else:
                until, dynamic = now + valid, False
                if await self._move_dynamic(link, a.station_id, c, amps, written, now):
                    assert written is not None
                    until, dynamic = written.until, True
                else:
                    wrote = await self._write_default(link, a.station_id, c, purpose, amps)
                    if wrote is None:
                        return False
                    dynamic = wrote
                self._wrote(key, Written(amps, now, until, purpose, dynamic), written, lowering)
                if purpose == "MaxProfile":
                    for k in range(1, n + 1):
                        self.written[(a.station_id, k)] = Written(wanted[k], now, until, purpose)
                continue
            self._wrote(key, Written(amps, now, now + valid, purpose), written, lowering)
        return True

    def _wrote(self, key: tuple[str, int], new: Written, old: Written | None,
               lowering: bool) -> None:
        if lowering and old is not None and new.limit_a < old.limit_a:
            self._lowered = True
        self.written[key] = new

    async def _move_dynamic(self, link: Any, station_id: str, c: int, amps: float,
                            written: Written | None, now: float) -> bool:
        """2.1: move the limit of the Dynamic profile we wrote (UpdateDynamicSchedule) while
        it holds long enough; False: write it whole instead."""
        if (written is None or not written.dynamic
                or written.until - now < self.settings.load_profile_valid_s / 2):
            return False
        try:
            move = cmd.UpdateDynamicSchedule(ALLOCATION_ID + c, amps)
            with self.sending(station_id, move):
                result = await link.command(move)
        except (cmd.CommandFailed, cmd.CommandRejected) as exc:
            log.info("station %s: dynamic schedule not moved: %s", station_id, exc)
            return False
        return bool(result.accepted)

    async def _write_default(self, link: Any, station_id: str, c: int, purpose: str,
                             amps: float) -> bool | None:
        """The allocation as a default or maximum profile for `valid` seconds (after which
        the failsafe below it holds): Dynamic where the station speaks 2.1 and takes it, so
        later changes only move its limit. Whether it is Dynamic; None: the purpose refused."""
        valid = int(self.settings.load_profile_valid_s)
        target = cmd.MAX_PURPOSE[link.protocol] if purpose == "MaxProfile" else purpose
        if link.protocol == "2.1" and station_id not in self.no_dynamic:
            profile = cmd.SetChargingProfile(c, target, ((0, amps),), ALLOCATION_ID + c, 1,
                                             "Dynamic", duration=valid)
            if await self._send(link, station_id, profile):
                return True
            self.no_dynamic.add(station_id)  # then as it does for older stations
            log.info("station %s takes no Dynamic profile: Absolute ones instead", station_id)
        profile = cmd.SetChargingProfile(c, target, ((0, amps),), ALLOCATION_ID + c, 1,
                                         "Absolute", duration=valid)
        return False if await self._send(link, station_id, profile) else None

    def _due(self, written: Written | None, amps: float, purpose: str, now: float) -> bool:
        if written is None or written.purpose != purpose:
            return True
        if written.until - now < self.settings.load_profile_valid_s / 2:
            return True  # renew before the failsafe takes over
        if amps < written.limit_a - 1e-6:
            return True  # decreases at once
        if amps == written.limit_a:
            return False
        if now - written.at < self.settings.load_min_interval_s:
            return False
        return amps - written.limit_a >= self.settings.load_min_change_a or written.limit_a == 0

    async def _send(self, link: Any, station_id: str, profile: cmd.SetChargingProfile,
                    tx_ref: str | None = None) -> bool:
        try:
            with self.sending(station_id, profile):
                result = await link.command(profile, tx_ref)
        except cmd.CommandFailed as exc:
            if exc.kind != "call_error":
                raise
            log.info("station %s: %s %s refused: %s", station_id, profile.purpose,
                     profile.periods, exc)
            return False
        except cmd.CommandRejected as exc:
            log.warning("station %s: %s not sent: %s", station_id, profile.purpose, exc)
            return False
        if not result.accepted:
            log.info("station %s: %s answered %s", station_id, profile.purpose, result.status)
        return bool(result.accepted)

    async def _next_purpose(self, station_id: str, purpose: str) -> None:
        index = CHAIN.index(purpose) if purpose in CHAIN else len(CHAIN) - 1
        learnt = CHAIN[index + 1] if index + 1 < len(CHAIN) else "none"
        self.purpose[station_id] = learnt
        self.failsafe.pop(station_id, None)
        for key in [k for k in self.written if k[0] == station_id]:
            del self.written[key]
        log.warning("station %s refuses %s: load management uses %s", station_id, purpose, learnt)
        async with self.engine.begin() as conn:
            await conn.execute(update(station_circuits).where(
                station_circuits.c.station_id == station_id).values(profile_purpose=learnt))
        if learnt == "none":
            self._site_changed(station_id)  # it now counts at its maximum

    # --- what `cocharge site show` prints --------------------------------------------------------

    def live(self, site_name: str) -> dict[str, Any] | None:
        site = self.sites.get(site_name)
        state = self.state.get(site_name)
        if site is None or state is None or state.allocation is None:
            return None
        allocation = state.allocation
        circuits_now = {c.id: c for c in self._circuits(site, False)}
        rows = []
        for c in site.circuits:
            rows.append({"circuit": c.id, "limit_a": c.limit_a,
                         "other_a": list(circuits_now[c.id].other_a),
                         "allocated_a": [round(allocation.drawn_a.get((c.id, p), 0.0), 1)
                                         for p in range(3)]})
        chargers = []
        for key, amps in sorted(allocation.current_a.items(), key=lambda kv: str(kv[0])):
            station_id, connector = cast(tuple[str, int], key)
            run = self.running.get((station_id, connector))
            written = self.written.get((station_id, connector))
            chargers.append({
                "station": station_id, "connector": connector,
                "session": run.session_id if run else None,
                "class": ("booked", "owner", "guest")[run.priority] if run else "idle",
                "allocated_a": amps, "written_a": written.limit_a if written else None,
                "measured_a": list(run.current_a) if run and run.current_a else None,
                "safe_a": state.shares.get(key, 0.0),
                "paused": key in allocation.paused,
                "online": self._link(station_id) is not None,
                "purpose": self.purpose.get(station_id, CHAIN[0]),
                "green_wh": int(run.green_wh) if run else None})
        surplus = self.surplus.get(site_name)
        grid_w = self._grid_w(site_name)
        return {"circuits": rows, "chargers": chargers,
                "surplus_w": surplus[0] if surplus else None,
                "grid_limit_w": grid_w,
                "grid_source": self.grid[site_name][2] if grid_w is not None else None,
                "computed_s_ago": round(time.monotonic() - state.computed_at, 1),
                # A change not yet allocated, or this allocation's writes still going out.
                "settling": site_name in self._dirty or site_name in self._busy}
