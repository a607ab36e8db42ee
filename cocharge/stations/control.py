"""Sharing control at run time: the owner's rules made true at the chargers.

The controller applies `cocharge.stations.policy` decisions: it answers "may this
tag charge here now?", keeps each managed connector's share lock (availability, bay
lock, reservation) equal to what the rules and bookings ask, puts a TxProfile with
the cutoff on every limited session and stops it at the cutoff, turns safety faults
into a stopped session and a Faulted connector, measures overstay, and keeps the
commands for offline stations until they boot.

It never talks OCPP: commands go through a `StationLink` (the gateway's connection)
that the gateway hands in. Hooks called while the gateway handles a charger's
message never wait for a command: they start a task, and the link sends only after
the answer to the charger's message has gone out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.background import Background
from cocharge.config import GatewaySettings
from cocharge.settlement import ledger, loyalty, memberships
from cocharge.settlement.overstay import idle_fee
from cocharge.settlement.settle import quota_left, tariff_in_force
from cocharge.settlement.tariff import per_kwh
from cocharge.stations import commands as cmd
from cocharge.stations import firmware, local_list, policy, sharing
from cocharge.stations.directory import Coalescer
from cocharge.stations.display import display_text
from cocharge.stations.load_hooks import LoadHooks
from cocharge.stations.observer import StationObserver
from cocharge.stations.policy import (
    Booking,
    Cutoff,
    Decision,
    LockState,
    SessionLimits,
    SharingRules,
)
from cocharge.store import audit
from cocharge.store.db import utcnow
from cocharge.store.journal import Journal
from cocharge.store.schema import (
    bookings,
    connector_status,
    firmware_campaigns,
    firmware_files,
    local_lists,
    members,
    pending_commands,
    sessions,
    station_events,
    stations,
)
from cocharge.store.sql import among, upsert

log = logging.getLogger(__name__)

# Connector states in which charging is over but the car is still plugged in.
IDLE_STATES = {"SuspendedEV", "SuspendedEVSE", "Finishing", "EVConnected", "Occupied"}


# The display messages sharing control keeps on a shared station (ids of its own).
PRICE_MESSAGE = 1001
BOOKING_MESSAGE = 1002
PRICE_REFRESH_S = 60.0  # a changed tariff reaches the display within this long


def _iso_z(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class StationLink(Protocol):
    async def command(self, command: cmd.Command, tx_ref: str | None = None) -> cmd.CommandResult: ...


@dataclass
class Track:
    """A running session the controller watches."""

    session_id: int
    station_id: str
    connector_id: int
    tx_ref: str
    tag: str
    started_at: datetime       # charger's clock: TxProfile offsets count from here
    meter_start_wh: float | None
    cutoff: Cutoff | None
    deadline: datetime | None  # server clock: slot, window or next booking
    deadline_s: float | None   # the same in seconds after the start
    power_w: int
    offset_s: int | None
    stopping: bool = False


@dataclass(frozen=True)
class Desired:
    operative: bool
    bay_locked: bool


def _redacted(args: dict[str, Any]) -> dict[str, Any]:
    """A command's arguments as kept: passwords left out."""
    hidden = dict(args)
    if "password" in hidden and hidden["password"] is not None:
        hidden["password"] = "(hidden)"
    if cmd.password_key(str(hidden.get("key", ""))):
        hidden["value"] = "(hidden)"
    if isinstance(hidden.get("values"), dict):
        hidden["values"] = {k: "(hidden)" if cmd.password_key(k) else v
                            for k, v in hidden["values"].items()}
    return hidden


class SharingController:
    def __init__(self, engine: AsyncEngine, settings: GatewaySettings,
                 link: Callable[[str], StationLink | None]) -> None:
        self.engine = engine
        self.settings = settings
        self.link = link
        # Why a member may not start here now (None: they may): the charger-side decision,
        # asked before a remote start is sent (the service sets it).
        self.start_check: Callable[[str, str, int | None], Awaitable[str | None]] | None = None
        self.rules: dict[tuple[str, int], SharingRules] = {}
        self.bookings: list[Booking] = []
        self._booking_station: dict[int, str] = {}
        self._by_station: dict[str, list[Booking]] = {}
        self._connectors: dict[str, int] = {}
        self._applied: dict[tuple[str, int], Desired] = {}
        self._unlocked: dict[tuple[str, int], tuple[str, datetime]] = {}
        self._active: dict[tuple[str, int], int] = {}  # connector -> session in progress
        self._tracks: dict[int, Track] = {}
        # (station, tag) -> limits a remote start carried, "quota only", until when they apply
        self._limits: dict[tuple[str, str], tuple[SessionLimits, bool, datetime]] = {}
        self._idle: dict[tuple[str, int], tuple[int, datetime]] = {}
        self._last_session: dict[tuple[str, int], int] = {}
        self._busy: set[str] = set()
        self._reserve_tried: dict[int, datetime] = {}
        self._background = Background(log, "sharing control")
        self._managed: set[str] = set()  # stations with sharing rules or live bookings
        self.rollout = firmware.Rollout(engine, settings.firmware_timeout_s)
        self.firmware_running = False  # a campaign is running (checked at every tick)
        self._firmware_busy = False
        self._memberships_next: datetime | None = None  # the hourly membership job
        self._list_synced: dict[str, datetime] = {}  # station -> when its local list was checked
        self._no_local_list: set[str] = set()  # stations that answered NotSupported
        # One local list update at a time per station, from reading its version to storing
        # what it answered: two at once (a sync, `remote send-local-list`) sent one version.
        self._list_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # The driver's display (2.0.1): what each station shows of ours (message id -> text),
        # and the stations without a display (they refused a message).
        self._displayed: dict[str, dict[int, str]] = {}
        self._no_display: set[str] = set()
        self._display_busy: set[str] = set()
        # The price line per station and its tariff's time zone, read at most every
        # PRICE_REFRESH_S: the tick compares in memory, and reads tariffs only when due.
        self._price_text: dict[str, tuple[datetime, str, str]] = {}
        self._adoptions: Coalescer[str, bool] = Coalescer(self._adopt)
        self._queued: Coalescer[str, list[Any]] = Coalescer(self._queued_commands)
        # The gateway's journal, for what the controller writes while a charger waits.
        self.journal: Journal | None = None
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # a rule changed here: the next tick now, not in 2 s
        # Called with a session id when its car has left after an overstay (settlement bills it).
        self.overstay_over: Callable[[int], None] | None = None
        self.observer = StationObserver()  # the gateway sets the service's observer here too
        # Load management (the gateway's LoadManager): it writes the TxProfile of a session
        # at an attached station, with the cutoff in it.
        self.load: LoadHooks | None = None  # load management plugs itself in
        self._booked: set[int] = set()  # sessions of a booking (load management serves first)

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._resume_tracks()
        self._loop = asyncio.create_task(self._run(), name="sharing-control")

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        await self._background.close()
        await self._adoptions.close()
        await self._queued.close()

    def _tx(self) -> Any:
        """A write transaction: in the journal's turn when the gateway runs one."""
        return self.journal.transaction() if self.journal is not None else self.engine.begin()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick(utcnow())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sharing control tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.control_interval_s)
            self._wake.clear()

    async def rules_changed(self) -> None:
        """A station's sharing rules were changed through this node (the API, the console):
        its starts are decided by them from now on, and its share lock follows at once."""
        async with self.engine.connect() as conn:
            self.rules = await sharing.load_rules(conn)
        self._wake.set()

    def adopt(self, station_id: str) -> None:
        """A station connected here: follow its running sessions, which may have begun on
        another node (several nodes) or before a restart. The stations of a reconnect storm
        share one query."""
        self._background.spawn(self._adoptions.get(station_id), f"adopt {station_id}")

    async def _adopt(self, station_ids: list[str]) -> dict[str, bool]:
        await self._resume_tracks(station_ids)
        return {}

    async def _resume_tracks(self, station_ids: list[str] | None = None) -> None:
        """After a restart (or when stations move here): watch the sessions still running."""
        async with self.engine.connect() as conn:
            query = select(sessions).where(and_(sessions.c.status == "active",
                                                sessions.c.ended_at.is_(None)))
            if station_ids is None:
                query = query.where(sessions.c.cutoff_reason.is_not(None))
            else:
                query = query.where(among(conn, sessions.c.station_id, station_ids))
            rows = (await conn.execute(query)).all()
            for row in rows:
                if station_ids is not None and row.connector_id:
                    self._active.setdefault((row.station_id, row.connector_id), row.id)
                if row.cutoff_reason is None or row.id in self._tracks:
                    continue
                power = await self._power_w(conn, row.station_id)
                cutoff = Cutoff(row.limit_wh, row.cutoff_at, None, row.cutoff_reason)
                timed = row.cutoff_reason in ("slot", "window", "booking")
                deadline = row.cutoff_at if timed else None
                deadline_s = ((row.cutoff_at - row.started_at).total_seconds()
                              if timed and row.started_at else None)
                self._tracks[row.id] = Track(row.id, row.station_id, row.connector_id, row.tx_ref or "",
                                             row.id_tag or "", row.started_at, row.meter_start_wh,
                                             cutoff, deadline, deadline_s, power, None)
                self._active[(row.station_id, row.connector_id)] = row.id

    async def _no_shows(self, conn: AsyncConnection, missed: Sequence[Any]) -> None:
        await conn.execute(update(bookings).where(bookings.c.id.in_([int(b.id) for b in missed]))
                           .values(status="no_show"))
        for b in missed:
            penalty = await loyalty.penalty_legs(conn, b.tag, "booking_no_show",
                                                 f"booking{b.id}:no_show", str(b.id))
            if penalty.legs:
                await ledger.post(conn, penalty.legs, f"no-show:{b.id}")
            await penalty.record(conn)
            log.info("booking %s: %s did not come (no-show)", b.id, b.tag)

    # --- the tick: time-driven work --------------------------------------------------------

    async def tick(self, now: datetime) -> None:
        async with self.engine.begin() as conn:
            self.rules = await sharing.load_rules(conn)
            # Bookings whose slot is over without a session: no-shows, which cost credit.
            missed = (await conn.execute(select(bookings.c.id, bookings.c.tag).where(and_(
                bookings.c.status == "booked", bookings.c.ends_at <= now)))).all()
            if missed:
                await self._no_shows(conn, missed)
            await sharing.fail_unformed_groups(conn, now)
            await conn.execute(update(pending_commands).where(and_(
                pending_commands.c.status == "pending", pending_commands.c.expires_at <= now))
                .values(status="expired"))
            rows = await sharing.live_bookings(conn, None, now)
            stale = (await conn.execute(select(bookings).where(and_(
                bookings.c.reserved.is_(True),
                (bookings.c.status != "booked") | (bookings.c.ends_at <= now))))).all()
            managed = {s for s, _ in self.rules} | {r.station_id for r in rows}
            station_rows = (await conn.execute(select(stations.c.id, stations.c.connectors)
                                               .where(among(conn, stations.c.id, managed)))).all()
        self.bookings = [sharing.booking_of(r) for r in rows]
        self._booking_station = {int(r.id): r.station_id for r in rows}
        self._by_station = {}
        for r in rows:
            self._by_station.setdefault(r.station_id, []).append(sharing.booking_of(r))
        self._reserve_tried = {k: v for k, v in self._reserve_tried.items() if k in self._booking_station}
        self._connectors = {r.id: r.connectors for r in station_rows}
        self._managed = managed
        for row in stale:
            self._background.spawn(self._cancel_reservation(row.station_id, row.connector_id, int(row.id)),
                        f"cancel reservation {row.id}")
        for row in rows:
            if row.starts_at <= now and not row.reserved:
                self._reserve(row, now)
        for track in list(self._tracks.values()):
            if track.deadline is not None and now >= track.deadline and not track.stopping:
                self._stop(track, track.cutoff.reason if track.cutoff else "deadline")
        for key, (_, until) in list(self._unlocked.items()):
            if until <= now and key not in self._active:
                del self._unlocked[key]
        for station_id in {s for s, _ in self.rules} | set(self._booking_station.values()):
            if station_id not in self._busy and self.link(station_id) is not None:
                self._background.spawn(self._reconcile(station_id, now), f"share lock {station_id}")
        self._local_lists_due(now)
        for station_id in self._managed - self._no_display - self._display_busy:
            link = self.link(station_id)
            if (link is not None and getattr(link, "protocol", None) in ("2.0.1", "2.1")
                    and self._display_due(station_id, now)):
                self._background.spawn(self._show(station_id, now), f"display {station_id}")
        if not self._firmware_busy:
            self._firmware_busy = True
            self._background.spawn(self._firmware_step(now), "firmware campaigns")
        if self._memberships_next is None or now >= self._memberships_next:
            # Levels that ended, the month's quotas (idempotent: `membership expire` is the
            # same job for a database without a running gateway).
            self._memberships_next = now + timedelta(hours=1)
            self._background.spawn(memberships.daily(self.engine, now), "memberships")

    # --- the driver's display -----------------------------------------------------------------

    async def _read_price(self, station_id: str, now: datetime) -> None:
        """The host's price line (the station's tariff, else the default price) and the
        tariff's time zone, kept for PRICE_REFRESH_S."""
        from cocharge.settlement.settle import tariff_in_force

        async with self.engine.connect() as conn:
            found = await tariff_in_force(conn, station_id, 1, now)
        price = Decimal(self.settings.price_fen_per_kwh) / 100
        tz = "Asia/Shanghai"
        if found is not None:
            tz = found[1].tz
            energy = next((e.component("ENERGY") for e in found[1].elements
                           if e.component("ENERGY") is not None), None)
            if energy is not None:
                price = energy.price
        self._price_text[station_id] = (
            now, display_text(self.settings.display_language, "price",
                              price=f"{price:.2f}", currency=self.settings.currency), tz)

    def _display_texts(self, station_id: str) -> dict[int, tuple[str, Any]]:
        """What a shared station's display shows: the host's price (message PRICE_MESSAGE) and
        the next booking (BOOKING_MESSAGE), as message id -> (text, the booking's end)."""
        from zoneinfo import ZoneInfo

        _, price, tz = self._price_text[station_id]
        shown: dict[int, tuple[str, Any]] = {PRICE_MESSAGE: (price, None)}
        booked = sorted(self._by_station.get(station_id, []), key=lambda b: b.start)
        if booked:
            local = ZoneInfo(tz)
            start, end = (moment.replace(tzinfo=UTC).astimezone(local)
                          for moment in (booked[0].start, booked[0].end))
            shown[BOOKING_MESSAGE] = (display_text(self.settings.display_language, "booked",
                                                   start=f"{start:%H:%M}", end=f"{end:%H:%M}"),
                                      booked[0].end)
        return shown

    def _display_due(self, station_id: str, now: datetime) -> bool:
        """Does the station's display need a look (its price is due a re-read, or what it
        shows differs from its price and bookings)? Memory only."""
        read = self._price_text.get(station_id)
        if read is None or (now - read[0]).total_seconds() >= PRICE_REFRESH_S:
            return True
        wanted = {k: text for k, (text, _) in self._display_texts(station_id).items()}
        return self._displayed.get(station_id) != wanted

    async def _show(self, station_id: str, now: datetime) -> None:
        """Keep the station's display in step with its price and bookings: only changes are
        sent; a station that refuses a message is taken to have no display."""
        link = self.link(station_id)
        if link is None:
            return
        self._display_busy.add(station_id)
        try:
            read = self._price_text.get(station_id)
            if read is None or (now - read[0]).total_seconds() >= PRICE_REFRESH_S:
                await self._read_price(station_id, now)
            wanted = self._display_texts(station_id)
            shown = self._displayed.setdefault(station_id, {})
            for message_id, (text, until) in wanted.items():
                if shown.get(message_id) == text:
                    continue
                result = await link.command(cmd.SetDisplayMessage(
                    message_id, text, end=_iso_z(until) if until else None,
                    language=self.settings.display_language))
                if not result.accepted:
                    log.info("station %s: display message refused (%s): no display assumed",
                             station_id, result.status)
                    self._no_display.add(station_id)
                    return
                shown[message_id] = text
            for message_id in [m for m in shown if m not in wanted]:
                await link.command(cmd.ClearDisplayMessage(message_id))
                del shown[message_id]
        except cmd.CommandFailed as exc:
            if exc.kind == "call_error":
                self._no_display.add(station_id)  # NotSupported / NotImplemented
            log.info("station %s: display not updated: %s", station_id, exc)
        except cmd.CommandRejected as exc:
            log.info("station %s: display not updated: %s", station_id, exc)
        finally:
            self._display_busy.discard(station_id)

    async def _firmware_step(self, now: datetime) -> None:
        try:
            async with self.engine.connect() as conn:
                self.firmware_running = (await conn.scalar(select(firmware_campaigns.c.id).where(
                    firmware_campaigns.c.status == "running").limit(1))) is not None
            if not self.firmware_running:
                return
            for station_id, update in await self.rollout.step(
                    lambda s: self.link(s) is not None, now):
                self._background.spawn(self._update_firmware(station_id, update), f"firmware {station_id}")
        finally:
            self._firmware_busy = False

    async def _update_firmware(self, station_id: str, update: cmd.UpdateFirmware) -> None:
        campaign_id = update.request_id
        link = self.link(station_id)
        try:
            if link is None:
                raise cmd.CommandFailed("offline", f"station {station_id} is not connected")
            result = await link.command(update)
            accepted, status = result.accepted, result.status
        except (cmd.CommandFailed, cmd.CommandRejected) as exc:
            accepted, status = False, str(exc)
        log.info("firmware campaign %s: UpdateFirmware to %s: %s", campaign_id, station_id,
                 status)
        await self.rollout.answered(campaign_id, station_id, accepted, status)

    def _station_bookings(self, station_id: str) -> list[Booking]:
        return self._by_station.get(station_id, [])

    def _rules(self, station_id: str, connector_id: int) -> SharingRules | None:
        return sharing.rules_for(self.rules, station_id, connector_id)

    def _reclaimed(self, station_id: str, connector_id: int) -> bool:
        rules = self._rules(station_id, connector_id)
        return bool(rules and rules.owner_priority)

    def desired(self, station_id: str, connector_id: int, now: datetime) -> Desired:
        rules = self._rules(station_id, connector_id) or SharingRules()
        state, _ = policy.lock_state(rules, self._station_bookings(station_id), connector_id,
                                     now, self._reclaimed(station_id, connector_id))
        unlocked = self._unlocked.get((station_id, connector_id))
        if state is LockState.OPEN or (unlocked is not None and unlocked[1] > now):
            return Desired(True, False)
        if state is LockState.BOOKED:
            return Desired(True, True)
        return Desired(False, True)

    async def _reconcile(self, station_id: str, now: datetime) -> None:
        """Make each connector's availability and bay lock what the rules say."""
        link = self.link(station_id)
        if link is None:
            return
        self._busy.add(station_id)
        try:
            for connector_id in range(1, self._connectors.get(station_id, 1) + 1):
                key = (station_id, connector_id)
                if key in self._active:
                    continue  # never lock under a charging car; the cutoff ends the session
                want = self.desired(station_id, connector_id, now)
                have = self._applied.get(key)
                if have == want:
                    continue
                if have is None or have.operative != want.operative:
                    result = await link.command(cmd.SetAvailability(connector_id, want.operative))
                    log.info("%s/%s share lock: %s -> %s", station_id, connector_id,
                             "operative" if want.operative else "inoperative", result.status)
                if have is None or have.bay_locked != want.bay_locked:
                    result = await link.command(cmd.ShareLock(connector_id, want.bay_locked))
                    log.info("%s/%s bay lock %s: %s", station_id, connector_id,
                             "closed" if want.bay_locked else "opened", result.status)
                self._applied[key] = want
        except cmd.CommandFailed as exc:
            log.warning("share lock of %s not applied yet: %s", station_id, exc)
        finally:
            self._busy.discard(station_id)

    def _reserve(self, row: Any, now: datetime) -> None:
        tried = self._reserve_tried.get(int(row.id))
        if tried is not None and now - tried < timedelta(seconds=30):
            return
        if self.link(row.station_id) is None or (row.station_id, row.connector_id) in self._active:
            return
        self._reserve_tried[int(row.id)] = now
        self._background.spawn(self._send_reservation(row), f"reserve {row.id}")

    async def _send_reservation(self, row: Any) -> None:
        link = self.link(row.station_id)
        if link is None:
            return
        result = await link.command(cmd.ReserveNow(row.connector_id, row.tag, row.ends_at, int(row.id)))
        log.info("booking %s: ReserveNow %s/%s for %s: %s", row.id, row.station_id,
                 row.connector_id, row.tag, result.status)
        if result.accepted:
            async with self.engine.begin() as conn:
                await conn.execute(update(bookings).where(bookings.c.id == row.id).values(reserved=True))

    async def _cancel_reservation(self, station_id: str, connector_id: int, booking_id: int) -> None:
        link = self.link(station_id)
        if link is None:
            return
        result = await link.command(cmd.CancelReservation(booking_id))
        log.info("booking %s: CancelReservation on %s/%s: %s", booking_id, station_id,
                 connector_id, result.status)
        async with self.engine.begin() as conn:
            await conn.execute(update(bookings).where(bookings.c.id == booking_id).values(reserved=False))

    # --- boot: re-assert and deliver -------------------------------------------------------

    def forget(self, station_id: str) -> None:
        """What we applied to this station is no longer known to hold: assert it again."""
        for connector_id in range(1, self._connectors.get(station_id, 1) + 1):
            self._applied.pop((station_id, connector_id), None)

    async def _sync_local_lists(self, station_ids: list[str], now: datetime) -> None:
        """Bring these stations' local authorization lists in step with their rules and the
        members (read once for all of them); each station that needs one gets its update."""
        wanted = []
        async with self.engine.connect() as conn:
            people = await local_list.Members(conn, now, self.settings.start_minimum_fen).load()
            for station_id in station_ids:
                rules = [r for (s, _), r in self.rules.items() if s == station_id]
                want = await local_list.desired(people, rules, self.settings.local_list_max)
                if want is not None:
                    wanted.append((station_id, want))
        for station_id, want in wanted:
            self._background.spawn(self._sync_local_list(station_id, want, now),
                                   f"local list {station_id}")

    async def _sync_local_list(self, station_id: str, want: local_list.Entries,
                               now: datetime) -> None:
        async with self._list_locks[station_id]:
            async with self.engine.connect() as conn:
                update = await local_list.update_for(conn, station_id, want)
            if update is not None:
                await self._send_local_list(station_id, update, now)

    async def _send_local_list(self, station_id: str, update: local_list.ListUpdate,
                               now: datetime) -> cmd.CommandResult | None:
        """Send `update` and store what the station answered (under the station's list
        lock, taken by the caller)."""
        link = self.link(station_id)
        if link is None:
            return None
        try:
            result = await link.command(cmd.SendLocalList(update.version, update.full,
                                                          update.entries))
        except cmd.CommandFailed as exc:
            log.warning("station %s: local list version %d not sent: %s", station_id,
                        update.version, exc)
            return None
        log.info("station %s: local list version %d (%s, %d entries): %s", station_id,
                 update.version, "full" if update.full else "differential",
                 len(update.entries), result.status)
        if result.status == "NotSupported":
            self._no_local_list.add(station_id)
        async with self._tx() as conn:
            await conn.execute(upsert(conn, local_lists, ["station_id"],
                                      ["version", "entries", "status", "updated_at"]),
                               [local_list.stored(station_id, update, result.status, now,
                                                  result.accepted)])
        return result

    def _local_lists_due(self, now: datetime) -> None:
        every = timedelta(seconds=self.settings.local_list_sync_s)
        due = []
        for station_id in sorted({s for s, _ in self.rules}):
            synced = self._list_synced.get(station_id)
            if ((synced is None or now - synced >= every) and station_id not in self._no_local_list
                    and self.link(station_id) is not None):
                self._list_synced[station_id] = now
                due.append(station_id)
        if due:
            self._background.spawn(self._sync_local_lists(due, now), "local lists")

    def members_changed(self) -> None:
        """A member was blocked or accepted again (here or on another node): every local list
        this node keeps is checked at the next tick, not at its next `local_list_sync_s`."""
        self._list_synced.clear()

    def on_boot(self, station_id: str) -> None:
        """A station booted (Accepted): it forgot our locks and may hold queued commands."""
        self._list_synced.pop(station_id, None)  # its local list is checked at the next tick
        self._displayed.pop(station_id, None)  # shown again (a reboot may clear the display)
        self.forget(station_id)
        self._background.spawn(self._deliver_queued(station_id), f"deliver queued {station_id}")
        if station_id in self._managed:
            self._background.spawn(self._reconcile(station_id, utcnow()), f"share lock {station_id}")

    async def _queued_commands(self, station_ids: list[str]) -> dict[str, list[Any]]:
        """The commands waiting for these stations (a storm of boots shares one query)."""
        now = utcnow()
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(pending_commands).where(and_(
                among(conn, pending_commands.c.station_id, station_ids),
                pending_commands.c.status == "pending", pending_commands.c.expires_at > now))
                .order_by(pending_commands.c.id))).all()
        found: dict[str, list[Any]] = {}
        for row in rows:
            found.setdefault(row.station_id, []).append(row)
        return found

    async def _deliver_queued(self, station_id: str) -> None:
        for row in await self._queued.get(station_id) or []:
            try:
                command = cmd.build_command(row.command, json.loads(row.args))
                result = await self.send(station_id, command, queue_for_s=None)
                status, text = ("delivered", str(result.get("status")))
            except (cmd.CommandRejected, cmd.CommandFailed) as exc:
                status, text = ("failed", str(exc))
            async with self.engine.begin() as conn:
                await conn.execute(update(pending_commands).where(pending_commands.c.id == row.id)
                                   .values(status=status, delivered_at=utcnow(), result=text))
            log.info("queued command %s (%s) for %s: %s %s", row.id, row.command, station_id,
                     status, text)

    # --- operator commands -----------------------------------------------------------------

    async def send(self, station_id: str, command: cmd.Command, name: str | None = None,
                   args: dict[str, Any] | None = None,
                   queue_for_s: float | None = None, by: str | None = None,
                   origin: str | None = None) -> dict[str, Any]:
        """Send an operator's command; with `queue_for_s`, an offline station gets it later.
        `by` (and `origin`): who asked and from where, kept in the audit log with the answer."""
        tx_ref = None
        if isinstance(command, cmd.RemoteStop | cmd.GetTransactionStatus | cmd.CostUpdated
                      | cmd.SetDisplayMessage | cmd.SetChargingProfile
                      | cmd.UsePriorityCharging | cmd.NotifyAllowedEnergyTransfer
                      | cmd.ChangeTransactionTariff) and (
                          command.session_id is not None):
            ref = await self._session_ref(command.session_id)
            if ref is None:
                raise cmd.CommandRejected(f"no session {command.session_id}: see `cocharge sessions list`")
            if ref[0] != station_id:
                raise cmd.CommandRejected(
                    f"session {command.session_id} is on station {ref[0]}, not {station_id}")
            tx_ref = ref[1]
        if isinstance(command, cmd.RawCall) and cmd.sets_password(command.action,
                                                                  command.payload):
            raise cmd.CommandRejected(cmd.RAW_PASSWORD_REFUSED)
        if isinstance(command, cmd.RemoteStart) and self.start_check is not None:
            refusal = await self.start_check(command.tag, station_id, command.connector_id)
            if refusal is not None:
                raise cmd.CommandRejected(f"{command.tag} may not charge at {station_id}: "
                                          f"{refusal} (nothing sent to the station)")
        link = self.link(station_id)
        if link is None and (
                (isinstance(command, cmd.RotatePassword) and command.password is not None)
                or (isinstance(command, cmd.SetConfiguration) and cmd.password_key(command.key))):
            raise cmd.CommandFailed("offline", f"station {station_id} is not connected (a "
                                    "password is not kept for later: send it when it is online)")
        if link is None:
            if queue_for_s is None or name is None:
                raise cmd.CommandFailed("offline", f"station {station_id} is not connected")
            command_id = await self._queue(station_id, name, args or {}, queue_for_s)
            await self._audit(by, origin, station_id, name, args, "Queued")
            return {"ok": True, "accepted": True, "queued": True, "command_id": command_id,
                    "status": "Queued", "response": {}}
        if isinstance(command, cmd.RemoteStart):
            self.expect_limits(station_id, command)
            command = await self._with_profile(station_id, command)
        if isinstance(command, cmd.UpdateFirmware) and command.file_id is not None:
            command = await self._stored_firmware(command)
        if isinstance(command, cmd.SyncLocalList):
            result = await self.resend_local_list(station_id)
        else:
            result = await link.command(command, tx_ref)
        if name is not None:  # what the operator asked and the station answered, kept
            await self._record(station_id, utcnow(), "command", {
                "command": name, "args": _redacted(args or {}), "status": result.status,
                "response": result.response, **({"by": by, "from": origin} if by else {})})
            await self._audit(by, origin, station_id, name, args, result.status)
        return {"ok": True, "accepted": result.accepted, "status": result.status,
                "response": result.response}

    async def _stored_firmware(self, command: cmd.UpdateFirmware) -> cmd.UpdateFirmware:
        """An update with a stored image carries that image's signature."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(
                firmware_files.c.signature, firmware_files.c.signing_certificate).where(
                firmware_files.c.id == command.file_id))).first()
        if row is None:
            raise cmd.CommandRejected(f"no firmware file {command.file_id}: see "
                                      f"`cocharge firmware add`")
        if command.signature is not None:
            raise cmd.CommandRejected("a stored firmware file carries its own signature")
        return replace(command, signature=row.signature,
                       signing_certificate=row.signing_certificate)

    async def resend_local_list(self, station_id: str) -> cmd.CommandResult:
        """The station's local list, as its sharing rules make it, sent now as a Full update
        (the rules read afresh: the operator may have changed them a moment ago)."""
        async with self.engine.connect() as conn:
            fresh = await sharing.load_rules(conn, [station_id])
        rules = list(fresh.values())
        if not rules:
            raise cmd.CommandRejected(
                f"station {station_id} has no sharing rules, so cocharge keeps no local list for "
                f"it: set them with `cocharge station rules` (or send one with `remote call`)")
        now = utcnow()
        async with self.engine.connect() as conn:
            people = await local_list.Members(conn, now, self.settings.start_minimum_fen).load()
            want = await local_list.desired(people, rules, self.settings.local_list_max)
        if want is None:
            raise cmd.CommandRejected(
                f"more members may charge at {station_id} than a local list holds "
                f"({self.settings.local_list_max}): the station decides online only")
        async with self._list_locks[station_id]:  # after a sync in flight: the next version
            async with self.engine.connect() as conn:
                version = await conn.scalar(select(local_lists.c.version).where(
                    local_lists.c.station_id == station_id)) or 0
            update = local_list.ListUpdate(int(version) + 1, True, dict(want), want)
            self._no_local_list.discard(station_id)
            result = await self._send_local_list(station_id, update, now)
        if result is None:
            raise cmd.CommandFailed("offline", f"station {station_id} did not take the list "
                                    f"(gone or no answer: see the gateway's log)")
        return result

    async def _session_ref(self, session_id: int) -> tuple[str, str] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(sessions.c.station_id, sessions.c.tx_ref)
                                      .where(sessions.c.id == session_id))).first()
        return (row.station_id, row.tx_ref) if row else None

    async def _queue(self, station_id: str, name: str, args: dict[str, Any], for_s: float) -> int:
        now = utcnow()
        async with self.engine.begin() as conn:
            if await conn.scalar(select(stations.c.id).where(stations.c.id == station_id)) is None:
                raise cmd.CommandRejected(f"no station {station_id!r}: see `cocharge station list`")
            command_id = int((await conn.execute(insert(pending_commands).values(
                station_id=station_id, command=name, args=json.dumps(args), created_at=now,
                expires_at=now + timedelta(seconds=for_s), status="pending",
            ).returning(pending_commands.c.id))).scalar_one())
        log.info("station %s offline: %s queued as command %s", station_id, name, command_id)
        return command_id

    def expect_limits(self, station_id: str, start: cmd.RemoteStart) -> None:
        """The next session of this tag here runs with the limits the remote start carried."""
        if start.budget_fen is None and start.energy_wh is None and not start.quota_only:
            return
        limits = SessionLimits(budget_fen=start.budget_fen, energy_wh=start.energy_wh)
        self._limits[(station_id, start.tag)] = (limits, start.quota_only,
                                                 utcnow() + timedelta(minutes=10))

    # --- authorization ---------------------------------------------------------------------

    async def decide(self, conn: AsyncConnection, station_id: str, connector_id: int | None,
                     tag: str) -> Decision | None:
        """The sharing decision for `tag` here and now; None when the station is not managed."""
        connectors = self._connectors.get(station_id) or 1
        scope = [connector_id] if connector_id else list(range(1, connectors + 1))
        if not any(self._rules(station_id, c) for c in scope) and not self._station_bookings(station_id):
            return None
        row = (await conn.execute(select(members).where(members.c.tag == tag))).first()
        member = sharing.member_of(row) if row else policy.Member(tag)
        if any((self._rules(station_id, c) or SharingRules()).min_credit for c in scope):
            member = replace(member, credit=await loyalty.credit_score(conn, tag))
        now = utcnow()
        station_bookings = self._station_bookings(station_id)
        decision: Decision | None = None
        chosen = scope[0]
        for c in scope:
            d = policy.may_charge(self._rules(station_id, c) or SharingRules(), station_bookings,
                                  member, c, now, self._reclaimed(station_id, c))
            if d.allowed:
                decision, chosen = d, c
                break
            decision = decision or d
        assert decision is not None
        if decision.allowed:
            key = (station_id, chosen)
            open_now = Desired(True, False)
            if self._applied.get(key) != open_now and self.desired(station_id, chosen, now) != open_now:
                # The member may charge on a locked connector (booked slot, owner): open it.
                self._unlocked[key] = (tag, now + timedelta(seconds=self.settings.unlock_hold_s))
                self._background.spawn(self._reconcile(station_id, now), f"unlock {station_id}/{chosen}")
        else:
            log.info("station %s connector %s: %s refused: %s", station_id, connector_id or "-",
                     tag, decision.reason)
            self._background.spawn(self._record(station_id, now, "refused", {
                "tag": tag, "connector_id": connector_id, "reason": decision.reason,
                "status": decision.verdict.value}), f"refusal {station_id}")
        return decision

    def refused(self, station_id: str, at: datetime, payload: dict[str, Any]) -> None:
        """Keep a refusal decided elsewhere (the member's money) among the station's events."""
        self._background.spawn(self._record(station_id, at, "refused", payload),
                               f"refusal {station_id}")

    async def _audit(self, by: str | None, origin: str | None, station_id: str, name: str,
                     args: dict[str, Any] | None, status: str) -> None:
        """Who sent an operator's command (store/audit.py); nothing when nobody is named
        (the gateway's own commands, an MQTT request: kept with its request)."""
        if by is None:
            return
        async with self._tx() as conn:
            await audit.record(conn, by, origin, "command", station_id, None, {
                "command": name, "args": _redacted(args or {}), "status": status})

    async def _record(self, station_id: str, at: datetime, kind: str, payload: dict[str, Any]) -> None:
        async with self._tx() as conn:
            await conn.execute(insert(station_events).values(
                station_id=station_id, ts=at, kind=kind, payload=json.dumps(payload, sort_keys=True, default=str)))

    # --- sessions --------------------------------------------------------------------------

    async def session_started(self, conn: AsyncConnection, session_id: int, station_id: str,
                              connector_id: int, tx_ref: str, tag: str, started_at: datetime,
                              meter_start_wh: float | None, decision: Decision | None,
                              available_fen: int | None = None) -> None:
        """Record what limits the session, and arrange its cutoff at the charger: a remote
        start's limits, and the member's available money (`available_fen`) as its budget."""
        now = utcnow()
        key = (station_id, connector_id)
        self._active[key] = session_id
        self._last_session[key] = session_id
        self._idle.pop(key, None)
        self._unlocked.pop(key, None)
        chosen, quota_only, expires = self._limits.pop((station_id, tag), (SessionLimits(), False, now))
        if expires < now:
            chosen, quota_only = SessionLimits(), False
        if available_fen is not None and (chosen.budget_fen is None
                                          or available_fen < chosen.budget_fen):
            chosen = replace(chosen, budget_fen=available_fen)
        quota_wh = None
        if quota_only:  # "quota only": the member's free energy left this month
            quota_wh = max(0, await quota_left(conn, tag, now))
        booking = decision.booking if decision else None
        rules = self._rules(station_id, connector_id)
        window_end = None
        if rules is not None and tag not in rules.owner_tags and rules.windows:
            window_end = policy.open_until(rules, now)
        limits = SessionLimits(chosen.budget_fen, chosen.energy_wh, quota_wh,
                               booking.end if booking else None, window_end,
                               policy.next_booking_start(self._station_bookings(station_id),
                                                         connector_id, tag, now))
        # The tariff in force now is the session's (sealed); its energy price sizes a budget.
        sealed, price, limit_a, effective_w = await self._pricing(conn, station_id, connector_id)
        cutoff = policy.plan_cutoff(limits, now, effective_w, price)
        changes: dict[str, Any] = {"tariff_id": sealed[0]} if sealed else {}
        if chosen.budget_fen is not None:
            changes["budget_fen"] = chosen.budget_fen
        if booking is not None:
            self._booked.add(session_id)
            changes.update(booking_id=booking.id, group_id=booking.group_id)
            link = self.link(station_id)
            if link is not None and getattr(link, "protocol", None) == "2.1":
                # The booked member charges with the station's priority profile (2.1).
                self._background.spawn(self._priority(link, session_id, tx_ref),
                                       f"priority charging {session_id}")
            await conn.execute(update(bookings).where(bookings.c.id == booking.id)
                               .values(status="honoured", session_id=session_id, reserved=False))
        if cutoff is not None:
            changes.update(limit_wh=cutoff.energy_wh, cutoff_at=cutoff.at, cutoff_reason=cutoff.reason)
        if changes:
            await conn.execute(update(sessions).where(sessions.c.id == session_id).values(**changes))
        if cutoff is None:
            return
        deadline = limits.deadline()
        deadline_s = (deadline - now).total_seconds() if deadline else None
        track = Track(session_id, station_id, connector_id, tx_ref, tag, started_at, meter_start_wh,
                      cutoff, deadline, deadline_s, effective_w, cutoff.offset_s)
        self._tracks[session_id] = track
        log.info("session %s on %s/%s: cutoff by %s at %s%s", session_id, station_id, connector_id,
                 cutoff.reason, cutoff.at, f" or {cutoff.energy_wh} Wh" if cutoff.energy_wh else "")
        self._background.spawn(self._send_profile(track, limit_a), f"tx profile {session_id}")

    async def _priority(self, link: StationLink, session_id: int, tx_ref: str) -> None:
        try:
            result = await link.command(cmd.UsePriorityCharging(session_id, True), tx_ref)
            log.info("session %s: priority charging %s", session_id, result.status)
        except (cmd.CommandFailed, cmd.CommandRejected) as exc:
            log.info("session %s: no priority charging (%s)", session_id, exc)

    async def _pricing(self, conn: AsyncConnection, station_id: str, connector_id: int
                       ) -> tuple[tuple[int, Any] | None, Decimal, float, int]:
        """(tariff in force, its energy price, TxProfile current, the power that current gives)."""
        sealed = await tariff_in_force(conn, station_id, connector_id)
        price = per_kwh(sealed[1]) if sealed else None
        if price is None:
            price = Decimal(self.settings.price_fen_per_kwh) / 100
        limit_a = self._limit_a(await self._power_w(conn, station_id))
        effective_w = int(limit_a * self.settings.nominal_voltage_v * self.settings.phases)
        return sealed, price, limit_a, effective_w

    async def _with_profile(self, station_id: str, start: cmd.RemoteStart) -> cmd.RemoteStart:
        """A remote start with a budget, energy or quota limit carries its TxProfile, so the
        charger has the 0 A point from its first second (the start profile is refined later)."""
        if start.budget_fen is None and start.energy_wh is None and not start.quota_only:
            return start
        now = utcnow()
        async with self.engine.connect() as conn:
            _, price, limit_a, effective_w = await self._pricing(conn, station_id,
                                                                 start.connector_id or 1)
            quota = max(0, await quota_left(conn, start.tag, now)) if start.quota_only else None
        cutoff = policy.plan_cutoff(SessionLimits(start.budget_fen, start.energy_wh, quota), now,
                                    effective_w, price)
        if cutoff is None or cutoff.offset_s is None:
            return start
        if self.load is not None and self.load.manages(station_id):
            # On a shared supply the start gets what the connector may draw now.
            limit_a = min(limit_a, self.load.start_limit(station_id, start.connector_id or 1))
        return replace(start, profile_offset_s=cutoff.offset_s, profile_limit_a=limit_a)

    def _limit_a(self, power_w: int) -> float:
        amps = power_w / (self.settings.nominal_voltage_v * self.settings.phases)
        return max(0.1, int(amps * 10) / 10)  # one decimal, rounded down: never above the power

    async def _power_w(self, conn: AsyncConnection, station_id: str) -> int:
        value = await conn.scalar(select(stations.c.max_power_w).where(stations.c.id == station_id))
        return int(value) if value else self.settings.assumed_station_power_w

    def booked(self, session_id: int) -> bool:
        return session_id in self._booked

    def owner_of(self, station_id: str, connector_id: int, tag: str) -> bool:
        rules = self._rules(station_id, connector_id)
        return rules is not None and tag in rules.owner_tags

    def cutoff_offset(self, session_id: int) -> int | None:
        """The 0 A point of a session's cutoff (seconds after its start), if it has one."""
        track = self._tracks.get(session_id)
        return track.offset_s if track is not None and not track.stopping else None

    async def _send_profile(self, track: Track, limit_a: float) -> None:
        link = self.link(track.station_id)
        if link is None or track.offset_s is None:
            return
        if self.load is not None and self.load.manages(track.station_id):
            self.load.cutoff_moved(track.station_id, track.connector_id)
            return
        result = await link.command(cmd.TxLimit(track.connector_id, track.session_id, track.offset_s,
                                                limit_a), track.tx_ref)
        log.info("session %s: TxProfile 0 A after %s s: %s", track.session_id, track.offset_s,
                 result.status)

    def meter(self, session_id: int, register_wh: float, at: datetime) -> None:
        """A fresh energy register reading of a running session (charger's clock)."""
        track = self._tracks.get(session_id)
        if track is None or track.stopping or track.cutoff is None or track.cutoff.energy_wh is None:
            return
        if track.meter_start_wh is None:
            track.meter_start_wh = register_wh
            return
        delivered = register_wh - track.meter_start_wh
        if policy.energy_reached(track.cutoff, delivered, self.settings.cutoff_tolerance):
            self._stop(track, track.cutoff.reason)
            return
        elapsed = (at - track.started_at).total_seconds()
        # (a margin: the charger's relative schedule may start a little after its timestamp)
        if track.offset_s is not None and elapsed >= track.offset_s + self.settings.cutoff_extend_margin_s:
            # The car drew less than full power: move the charger's 0 A point later.
            later = policy.extended_offset(track.cutoff, elapsed, delivered, track.power_w,
                                           track.deadline_s)
            if later is None or later <= track.offset_s:
                return  # the time limit comes first: the tick stops the session
            track.offset_s = later
            log.info("session %s: %.0f of %s Wh after %.0f s, TxProfile extended to %s s",
                     session_id, delivered, track.cutoff.energy_wh, elapsed, track.offset_s)
            self._background.spawn(self._send_profile(track, self._limit_a(track.power_w)),
                        f"tx profile {session_id}")

    def _stop(self, track: Track, reason: str) -> None:
        track.stopping = True
        log.info("session %s on %s: cutoff (%s), stopping", track.session_id, track.station_id, reason)
        self._background.spawn(self._remote_stop(track), f"cutoff {track.session_id}")

    async def _remote_stop(self, track: Track) -> None:
        link = self.link(track.station_id)
        if link is None:
            track.stopping = False  # the charger's own profile stops it; retry when it is back
            return
        try:
            result = await link.command(cmd.RemoteStop(track.session_id), track.tx_ref)
        except cmd.CommandFailed as exc:
            track.stopping = False  # tried again at the next meter value or tick
            log.warning("session %s: remote stop at cutoff failed: %s", track.session_id, exc)
            return
        log.info("session %s: remote stop at cutoff: %s", track.session_id, result.status)

    def session_ended(self, session_id: int, station_id: str, connector_id: int) -> None:
        self._tracks.pop(session_id, None)
        self._booked.discard(session_id)
        key = (station_id, connector_id)
        if self._active.get(key) == session_id:
            del self._active[key]
        self._unlocked.pop(key, None)
        if station_id in self._connectors and station_id not in self._busy and (
                station_id in self._managed or self._station_bookings(station_id)):
            self._background.spawn(self._reconcile(station_id, utcnow()), f"share lock {station_id}")

    # --- connector states: overstay and faults ---------------------------------------------

    async def connector_state(self, station_id: str, connector_id: int, state: str,
                              at: datetime) -> None:
        """Charging state changes (status or 2.0.1 charging state), in the charger's clock."""
        key = (station_id, connector_id)
        session_id = self._active.get(key) or self._last_session.get(key)
        if state == "Occupied" and key in self._active:
            return  # 2.0.1 connector status during a transaction: its charging state tells more
        if state == "Charging":
            if self._idle.pop(key, None) is not None and session_id is not None:
                async with self._tx() as conn:  # charging again: not idle after all
                    await conn.execute(update(sessions).where(sessions.c.id == session_id)
                                       .values(idle_started_at=None))
        elif state in IDLE_STATES and session_id is not None and key not in self._idle:
            self._idle[key] = (session_id, at)
            async with self._tx() as conn:
                await conn.execute(update(sessions).where(and_(
                    sessions.c.id == session_id, sessions.c.idle_started_at.is_(None)))
                    .values(idle_started_at=at))
        elif state == "Available":
            idle = self._idle.pop(key, None)
            self._last_session.pop(key, None)
            if idle is not None:
                await self._charge_idle_fee(idle[0], idle[1], at, station_id, connector_id)

    async def _charge_idle_fee(self, session_id: int, since: datetime, until: datetime,
                               station_id: str, connector_id: int) -> None:
        minutes, fee = idle_fee(self.settings.idle_fee, since, until)
        async with self._tx() as conn:
            await conn.execute(update(sessions).where(sessions.c.id == session_id).values(
                idle_started_at=since, idle_ended_at=until, idle_minutes=minutes, idle_fee_fen=fee))
            if fee:
                await conn.execute(insert(station_events).values(
                    station_id=station_id, ts=until, kind="overstay",
                    payload=json.dumps({"session_id": session_id, "minutes": minutes,
                                        "fee_fen": fee})))
        if fee:
            log.info("session %s overstayed %s min: idle fee %s fen", session_id, minutes, fee)
            self.observer.overstay(station_id, connector_id, session_id, minutes, fee, until)
        if self.overstay_over is not None:
            self.overstay_over(session_id)

    async def fault(self, station_id: str, connector_id: int, kind: str, at: datetime) -> None:
        """A safety fault: the connector is Faulted and its session ends."""
        key = (station_id, connector_id)
        session_id = self._active.get(key)
        stmt = upsert(self.engine, connector_status, ["station_id", "connector_id"],
                      ["status", "error_code", "updated_at"])
        async with self._tx() as conn:
            await conn.execute(stmt.values(station_id=station_id, connector_id=connector_id,
                                           status="Faulted", error_code=kind, updated_at=at))
            await conn.execute(insert(station_events).values(
                station_id=station_id, ts=at, kind="fault",
                payload=json.dumps({"connector_id": connector_id, "fault": kind,
                                    "session_id": session_id})))
            if session_id is not None:
                await conn.execute(update(sessions).where(sessions.c.id == session_id)
                                   .values(fault=kind))
        self.observer.fault(station_id, connector_id, session_id, kind, at)
        log.warning("station %s connector %s: safety fault %s%s", station_id, connector_id, kind,
                    f", ending session {session_id}" if session_id else "")
        if session_id is not None:
            track = self._tracks.get(session_id)
            ref = await self._session_ref(session_id)
            if track is None and ref is not None:
                track = Track(session_id, station_id, connector_id, ref[1], "", at, None, None, None,
                              None, 0, None)
            if track is not None and not track.stopping:
                self._stop(track, f"fault: {kind}")
