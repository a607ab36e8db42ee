"""The stations core at run time: admission, authorization and the session lifecycle.

It consumes the version-neutral events of `cocharge.stations.events`, answers from the
state it keeps in memory (registered stations in `directory.py`, the sessions in
progress here), and persists everything through one journal (`cocharge.store.journal`):
rows are checked against their columns before they join a batch, so one station's bad
data fails only its own message. Every method is safe to call again with the same event:
duplicates are recognised and change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Text, and_, bindparam, case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.background import Background
from cocharge.config import GatewaySettings
from cocharge.settlement import funds, loyalty, memberships
from cocharge.settlement.funds import Funds
from cocharge.settlement.money import fmt
from cocharge.settlement.settle import (
    SettlementDefaults,
    Settler,
    running_cost_fen,
    tariff_in_force,
    tariff_of_session,
    terms_of,
)
from cocharge.settlement.tariff21 import Untranslatable, member_price, tariff_type
from cocharge.stations.auth import Tag, check_tag
from cocharge.stations.certificates import CertificateKeeper
from cocharge.stations.control import SharingController
from cocharge.stations.directory import Coalescer, StationDirectory, StationRecord
from cocharge.stations.display import DISPLAY_TEXTS, display_text
from cocharge.stations.events import (
    ENERGY_REGISTER,
    Admission,
    AuthStatus,
    ConnectorStatus,
    MeterReport,
    MeterSample,
    SessionEnded,
    SessionStarted,
    StationBooted,
    StationNotice,
    TransactionEvent,
)
from cocharge.stations.framelog import FrameLog
from cocharge.stations.load_hooks import GREEN_UPDATE, LoadHooks
from cocharge.stations.metering import assess_energy
from cocharge.stations.observer import StationObserver
from cocharge.stations.passwords import verify_password
from cocharge.stations.policy import SAFETY_ERROR_CODES_16, Decision, Verdict
from cocharge.store.db import utcnow
from cocharge.store.journal import Journal
from cocharge.store.schema import (
    bookings,
    connector_status,
    firmware_files,
    log_uploads,
    members,
    meter_samples,
    sessions,
    station_events,
    station_monitors,
    station_variables,
    stations,
    tx_events,
)
from cocharge.store.sql import BulkInsert, among, check_rows, insert_ignore, upsert

log = logging.getLogger(__name__)


def _number(value: Any) -> str:
    """A JSON number as plain text, the same whoever wrote it: 1000, 1000.0 -> "1000"."""
    return format(Decimal(str(value)).normalize(), "f")


def _monitor_row(station_id: str, monitor_id: int, component: dict[str, Any], variable: str,
                 monitor: dict[str, Any], source: str, now: datetime) -> dict[str, Any]:
    return {"station_id": station_id, "monitor_id": monitor_id,
            "component": component["name"], "evse_id": (component.get("evse") or {}).get("id") or 0,
            "variable": variable, "type": monitor["type"], "value": _number(monitor["value"]),
            "severity": int(monitor["severity"]), "transaction": bool(monitor.get("transaction")),
            "source": source, "updated_at": now}


@dataclass
class OpenSession:
    id: int
    connector_id: int
    ended: bool
    # 2.0.1 seqNos applied; None until read (sessions loaded at start read theirs on first use)
    seen_seq: set[int] | None = field(default_factory=set)


class OpenSessions:
    """The transactions in progress by (station, transaction), each station's indexed: a
    station's sessions are found without scanning the whole fleet's."""

    def __init__(self) -> None:
        self._all: dict[tuple[str, str], OpenSession] = {}
        self._by_station: dict[str, set[tuple[str, str]]] = {}

    def get(self, key: tuple[str, str]) -> OpenSession | None:
        return self._all.get(key)

    def __setitem__(self, key: tuple[str, str], found: OpenSession) -> None:
        self._all[key] = found
        self._by_station.setdefault(key[0], set()).add(key)

    def discard(self, key: tuple[str, str]) -> None:
        if self._all.pop(key, None) is not None:
            keys = self._by_station[key[0]]
            keys.discard(key)
            if not keys:
                del self._by_station[key[0]]

    def values(self) -> Iterable[OpenSession]:
        return self._all.values()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._all)

    def __contains__(self, key: object) -> bool:
        return key in self._all

    def on_connector(self, station_id: str,
                     connector_id: int) -> list[tuple[tuple[str, str], OpenSession]]:
        """The station's sessions open on this connector (EVSE for 2.0.1)."""
        return [(key, self._all[key]) for key in self._by_station.get(station_id, ())
                if not self._all[key].ended and self._all[key].connector_id == connector_id]


@dataclass(frozen=True)
class StationAccess:
    """What the gateway needs to know about a station when it connects."""

    known: bool
    admission: Admission
    password_hash: str | None


def _notice_row(event: StationNotice) -> dict[str, Any]:
    """A station_events row, checked against its columns."""
    row = {"station_id": event.station_id, "ts": event.at, "kind": event.kind,
           "payload": json.dumps(event.payload, default=str, sort_keys=True)}
    check_rows(station_events, [row])
    return row


def _sample_rows(station_id: str, connector_id: int, session_id: int | None,
                 samples: list[MeterSample]) -> list[dict[str, Any]]:
    """Meter rows, checked against their columns (a bad one fails its message, alone)."""
    rows = [
        {"session_id": session_id, "station_id": station_id, "connector_id": connector_id,
         "ts": s.at, "measurand": s.measurand, "phase": s.phase, "value": s.value,
         "unit": s.unit, "context": s.context}
        for s in samples
    ]
    check_rows(meter_samples, rows)
    return rows


# Statements of the hot path, built once so that the journal batches their rows together.
_INSERT_SAMPLES = insert(meter_samples)
_BULK_SAMPLES = BulkInsert(meter_samples)  # the journal's hot path (store/sql.py)
_INSERT_NOTICE = insert(station_events)
_BOOT = (update(stations).where(stations.c.id == bindparam("sid")).values(
    protocol=bindparam("protocol"), vendor=bindparam("vendor"), model=bindparam("model"),
    serial=bindparam("serial"), firmware=bindparam("firmware"),
    last_boot_at=bindparam("boot_at"), last_seen_at=bindparam("boot_at")))
_FIRMWARE_STATUS = (update(stations).where(stations.c.id == bindparam("sid"))
                    .values(firmware_status=bindparam("firmware_status")))
_SEEN = (update(stations).where(stations.c.id == bindparam("sid"))
         .values(last_seen_at=bindparam("seen")))
# A note on what a charger's clock said, added to its session's (the first ones kept).
_NOTE = bindparam("note", type_=Text)
_CLOCK_NOTE = (update(sessions).where(sessions.c.id == bindparam("sid")).values(clock=case(
    (sessions.c.clock.is_(None), _NOTE),
    else_=func.substr(sessions.c.clock + "; " + _NOTE, 1, 2000))))
_HOLD = update(stations).where(stations.c.id == bindparam("sid")).values(node=bindparam("node"))
_RELEASE = (update(stations).where(and_(stations.c.id == bindparam("sid"),
                                        stations.c.node == bindparam("holder")))
            .values(node=None))


def _register_wh(samples: list[MeterSample]) -> tuple[float, datetime] | None:
    """The latest whole-meter energy register reading among `samples`."""
    found = [(s.at, s.value) for s in samples if s.measurand == ENERGY_REGISTER and s.phase is None]
    if not found:
        return None
    at, value = max(found)
    return value, at


_WHY_NOT = {AuthStatus.UNKNOWN: "no member has this tag (`cocharge member add`)",
            AuthStatus.BLOCKED: "the member is blocked",
            AuthStatus.EXPIRED: "the member's card has expired"}
_REFUSAL = {Verdict.NOT_AT_THIS_TIME: AuthStatus.NOT_AT_THIS_TIME,
            Verdict.NOT_AT_THIS_LOCATION: AuthStatus.NOT_AT_THIS_LOCATION}


class StationService:
    def __init__(self, engine: AsyncEngine, settings: GatewaySettings) -> None:
        self.engine = engine
        self.settings = settings
        # Set by the gateway, which gives it the way to command stations.
        self.control: SharingController | None = None
        self.settler: Settler | None = None  # settles each session as it ends
        self.load: LoadHooks | None = None  # load management (cocharge/load/manager.py)
        # Told what changed here that other nodes keep in memory: {"station": id} (its
        # password), {"station": id, "certificate": "revoked"}, {"member": tag} (blocked or
        # accepted again). The MQTT bridge tells the other nodes; None: nobody to tell.
        self.on_station_changed: Callable[[dict[str, str]], None] | None = None
        self.observer = StationObserver()  # told what happened (the MQTT bridge listens)
        self.journal = Journal(engine, settings.sample_batch_rows, settings.sample_batch_linger_s)
        self.directory = StationDirectory(engine, settings.directory_refresh_s)
        self.frames = FrameLog(self.journal, settings)  # the per-station OCPP log
        # Signs the stations' CSRs once the gateway gives it the CA (serve --ca-dir).
        self.certificates = CertificateKeeper(engine, settings, None, self.notice)
        self._status_stmt = upsert(engine, connector_status, ["station_id", "connector_id"],
                                   ["status", "error_code", "updated_at"])
        self._mark_stmt = insert_ignore(engine, tx_events)
        self._variable_stmt = upsert(
            engine, station_variables,
            ["station_id", "component", "component_instance", "evse_id", "connector_id",
             "variable", "variable_instance", "attribute_type"],
            ["value", "mutability", "data_type", "unit", "request_id", "updated_at"])
        self._monitor_stmt = upsert(
            engine, station_monitors, ["station_id", "monitor_id"],
            ["component", "evse_id", "variable", "type", "value", "severity", "transaction",
             "source", "updated_at"])
        self._open = OpenSessions()
        self._seqs: Coalescer[tuple[str, str], set[int]] = Coalescer(self._fetch_seqs)
        self._last_seen: dict[str, datetime] = {}
        self._verified: dict[str, tuple[str, str]] = {}  # station -> (hash, password) seen valid
        # scrypt costs 16 MiB and tens of ms: a bounded number at once, off the event loop
        self._password_checks = asyncio.Semaphore(settings.password_checks_at_once)
        self._seen_task: asyncio.Task[None] | None = None
        self._stale_checks = Background(log, "stale sessions")

    async def start(self) -> None:
        await self.directory.load()
        await self._load_open_sessions()
        self.directory.start()
        self.journal.start(self.settings.wal_checkpoint_s)
        self.frames.start()
        self._seen_task = asyncio.create_task(self._flush_last_seen_forever(), name="last-seen")

    async def close(self) -> None:
        await self._stale_checks.close()
        if self._seen_task is not None:
            self._seen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._seen_task
        with contextlib.suppress(Exception):
            await self._flush_last_seen()
        await self.directory.close()
        await self._seqs.close()
        await self.frames.close()
        await self.journal.close()

    async def _load_open_sessions(self) -> None:
        """The transactions in progress, so that their messages need no look-up."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(sessions.c.id, sessions.c.station_id, sessions.c.tx_ref,
                       sessions.c.connector_id)
                .where(and_(sessions.c.status == "active", sessions.c.ended_at.is_(None),
                            sessions.c.tx_ref.is_not(None))))).all()
        for row in rows:
            self._open[(row.station_id, row.tx_ref)] = OpenSession(
                int(row.id), row.connector_id, ended=False, seen_seq=None)

    async def _fetch_seqs(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], set[int]]:
        found: dict[tuple[str, str], set[int]] = {key: set() for key in keys}
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(tx_events.c.station_id, tx_events.c.tx_ref, tx_events.c.seq_no)
                .where(among(conn, tx_events.c.station_id, {k[0] for k in keys}))
                .where(among(conn, tx_events.c.tx_ref, {k[1] for k in keys})))).all()
        for row in rows:
            key = (row.station_id, row.tx_ref)
            if key in found:
                found[key].add(row.seq_no)
        return found

    async def _seen_seqs(self, key: tuple[str, str], found: OpenSession) -> set[int]:
        if found.seen_seq is None:
            found.seen_seq = await self._seqs.get(key) or set()
        return found.seen_seq

    # --- admission -------------------------------------------------------------------------

    async def access(self, station_id: str) -> StationAccess:
        """From memory (a station registered since start is looked up once)."""
        record = await self.directory.find(station_id)
        if record is None:
            return StationAccess(False, Admission.REJECTED, None)
        admission = Admission.ACCEPTED if record.admission == "accepted" else Admission.PENDING
        return StationAccess(True, admission, record.password_hash)

    async def password_ok(self, station_id: str, password: str, stored_hash: str) -> bool:
        """Check a Basic-auth password: scrypt off the event loop, a bounded number at once,
        and once per station and password (a reconnect storm checks each station once). A
        password that fails against the hash in memory is checked again against the
        database's, which the operator may have changed since."""
        if await self._password_matches(station_id, password, stored_hash):
            return True
        # The password the station accepted a moment ago (rotation): valid from then on,
        # here before its row is committed (a fresh read would not have it yet: the station
        # reconnects with it at once, and was refused when the database was slower).
        known = await self.directory.find(station_id)
        if known is not None and known.next_password_hash is not None and \
                await self._password_matches(station_id, password, known.next_password_hash):
            await self._promote_password(known)
            return True
        record = await self.directory.find(station_id, fresh=True)
        if record is None:
            return False
        if record.password_hash is None:
            return True
        if record.password_hash != stored_hash and await self._password_matches(
                station_id, password, record.password_hash):
            return True
        if record.next_password_hash is not None and await self._password_matches(
                station_id, password, record.next_password_hash):
            await self._promote_password(record)
            return True
        return False

    async def _promote_password(self, record: StationRecord) -> None:
        """The station connected with the password it accepted: it is now the only one."""
        new_hash = record.next_password_hash
        record.password_hash, record.next_password_hash = new_hash, None

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(update(stations).where(and_(
                stations.c.id == record.id, stations.c.next_password_hash == new_hash))
                .values(password_hash=new_hash, next_password_hash=None))
            await conn.execute(_INSERT_NOTICE, [_notice_row(StationNotice(
                record.id, "password_rotated", utcnow(), {"step": "in use"}))])

        await self.journal.run(work)
        self.tell_nodes(record.id)
        log.info("station %s connected with its new password: the old one is no longer valid",
                 record.id)

    async def security_profile(self, station_id: str, profile: int | None, step: str) -> None:
        """Record the station's security profile: 2 once it connected over TLS with its
        password, 3 with a client certificate of ours (from then on it must come so), lower
        only after the operator's forced downgrade."""
        record = self.directory.get(station_id)
        if record is not None:
            record.security_profile = profile
        await self._station_change(station_id, {"security_profile": profile},
                                   "security_profile", {"profile": profile, "step": step})
        log.info("station %s: security profile %s (%s)", station_id, profile, step)

    async def _station_change(self, station_id: str, values: dict[str, Any], kind: str,
                              details: dict[str, Any]) -> None:
        """A change of the station's row and the event that tells it, in one transaction."""
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(update(stations).where(stations.c.id == station_id)
                               .values(**values))
            await conn.execute(_INSERT_NOTICE, [_notice_row(StationNotice(
                station_id, kind, utcnow(), details))])

        await self.journal.run(work)

    async def password_accepted(self, station_id: str, new_hash: str) -> None:
        """The station accepted a new password: valid beside the old one from now on."""
        record = self.directory.get(station_id)
        if record is not None:
            record.next_password_hash = new_hash
        await self._station_change(station_id, {"next_password_hash": new_hash},
                                   "password_rotated", {"step": "accepted by the station"})
        self.tell_nodes(station_id)

    def tell_nodes(self, station_id: str | None = None, **what: str) -> None:
        """Tell the other nodes (through the broker) what changed here: a station's password
        (only `station_id`), its revoked certificate, a member's status."""
        if self.on_station_changed is not None:
            self.on_station_changed({"station": station_id, **what} if station_id else what)

    async def station_changed_elsewhere(self, station_id: str) -> None:
        """Another node changed the station's password: what was checked here is forgotten
        and its record read again (the old password stops working here too, at once)."""
        self._verified.pop(station_id, None)
        await self.directory.find(station_id, fresh=True)

    def password_known(self, station_id: str, password: str, stored_hash: str) -> bool:
        """This password was verified against this hash since start (no scrypt needed)."""
        return self._verified.get(station_id) == (stored_hash, password)

    async def _password_matches(self, station_id: str, password: str, stored_hash: str) -> bool:
        if self._verified.get(station_id) == (stored_hash, password):
            return True
        async with self._password_checks:
            ok = await asyncio.to_thread(verify_password, password, stored_hash)
        if ok:
            self._verified[station_id] = (stored_hash, password)
        return ok

    async def hold(self, station_id: str, node: str, held: bool) -> None:
        """Record (or clear) `node` as the one holding the station's connection."""
        record = self.directory.get(station_id)
        if held:
            await self.journal.write([(_HOLD, [{"sid": station_id, "node": node}])])
            if record is not None:
                record.node = node
        else:
            await self.journal.write([(_RELEASE, [{"sid": station_id, "holder": node}])])
            if record is not None and record.node == node:
                record.node = None

    async def release_node(self, node: str) -> None:
        """A node stops: it holds none of its stations any more."""
        await self.journal.run(lambda conn: conn.execute(
            update(stations).where(stations.c.node == node).values(node=None)))
        for record in self.directory.stations.values():
            if record.node == node:
                record.node = None

    async def boot(self, event: StationBooted) -> Admission:
        """A known, accepted station's boot needs no read: one row for the journal."""
        now = utcnow()
        details = {"sid": event.station_id, "protocol": event.protocol, "vendor": event.vendor,
                   "model": event.model, "serial": event.serial, "firmware": event.firmware,
                   "boot_at": now}
        check_rows(stations, [{"vendor": event.vendor, "model": event.model,
                               "serial": event.serial, "firmware": event.firmware}])
        record = self.directory.get(event.station_id)
        if record is None or record.admission != "accepted":
            record = await self.directory.find(event.station_id, fresh=True)  # approved since?
        if record is None:
            if not self.settings.auto_register:
                log.warning("station %s is not registered: BootNotification rejected",
                            event.station_id)
                return Admission.REJECTED
            await self.journal.run(lambda conn: conn.execute(insert_ignore(conn, stations).values(
                id=event.station_id, connectors=1, admission="pending", created_at=now,
                protocol=event.protocol, vendor=event.vendor, model=event.model,
                serial=event.serial, firmware=event.firmware, last_boot_at=now,
                last_seen_at=now)))
            self.directory.add(StationRecord(event.station_id, "pending", None, 1, None))
            log.info("station %s auto-registered, pending approval", event.station_id)
            return Admission.PENDING
        await self.journal.write([(_BOOT, [details])])
        record.vendor, record.model = event.vendor, event.model
        if record.admission != "accepted":
            return Admission.PENDING
        if self.control is not None:
            self.control.on_boot(event.station_id)
            if self.control.firmware_running:
                await self.control.rollout.booted(event.station_id, event.firmware)
        return Admission.ACCEPTED

    def seen(self, station_id: str, at: datetime | None = None) -> None:
        """Note that a station spoke (`at`, now); written out in one batch every few seconds."""
        self._last_seen[station_id] = at or utcnow()

    async def _flush_last_seen_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.last_seen_flush_s)
            try:
                await self._flush_last_seen()
            except Exception:
                log.exception("writing last-seen times failed")

    async def _flush_last_seen(self) -> None:
        if not self._last_seen:
            return
        seen, self._last_seen = self._last_seen, {}
        rows = [{"sid": k, "seen": v} for k, v in seen.items()]
        # In slices, one after the other: chargers' messages are committed in between.
        for start in range(0, len(rows), 500):
            await self.journal.write([(_SEEN, rows[start:start + 500])])

    # --- authorization ---------------------------------------------------------------------

    async def authorize(self, tag: str, station_id: str | None = None,
                        connector_id: int | None = None) -> AuthStatus:
        """The tag's own state, then the sharing rules of the station (when it has any)."""
        async with self.engine.connect() as conn:
            status, _, _ = await self._authorize_here(conn, tag, station_id, connector_id)
        return status

    async def start_refusal(self, tag: str, station_id: str, connector_id: int | None) -> str | None:
        """Why `tag` may not start at the station, as the charger would be told at its
        Authorize (None: it may): the member's card and the owner's sharing rules, checked
        before a remote start is sent. Money is not checked here: a session ending a moment
        before still holds it; the start itself is refused (NoCredit) if it is missing."""
        async with self.engine.connect() as conn:
            status = await self._authorize(conn, tag)
            if status is not AuthStatus.ACCEPTED:
                return _WHY_NOT.get(status, status.value)
            if self.control is not None:
                decision = await self.control.decide(conn, station_id, connector_id, tag)
                if decision is not None and not decision.allowed:
                    return decision.reason
        return None

    async def money_refusal(self, tag: str) -> str | None:
        """Why `tag` has not the money a session needs to start (the gateway's
        start_minimum_fen; free quota will do), or None: asked before a driver's own start,
        so the phone says why instead of the charger refusing the card a moment later."""
        async with self.engine.connect() as conn:
            return (await self._money(conn, tag, utcnow()))[1]

    async def _money(self, conn: AsyncConnection, tag: str,
                     now: datetime) -> tuple[Funds | None, str | None]:
        """The member's money for a start (None: not checked, a card or no minimum) and why
        it does not do (None: it does)."""
        minimum = self.settings.start_minimum_fen
        if minimum <= 0 or funds.is_card(tag):
            return None, None
        money = await funds.funds_of(conn, tag, quota_wh=await memberships.quota_left(conn, tag, now))
        allowed, reason = money.may_start(minimum)
        return money, None if allowed else reason

    async def _authorize_here(self, conn: AsyncConnection, tag: str, station_id: str | None,
                              connector_id: int | None
                              ) -> tuple[AuthStatus, Decision | None, Funds | None]:
        """The tag's own state, the sharing rules of the station, then the member's money."""
        status = await self._authorize(conn, tag)
        if status is not AuthStatus.ACCEPTED or station_id is None:
            return status, None, None
        decision = None
        if self.control is not None:
            decision = await self.control.decide(conn, station_id, connector_id, tag)
            if decision is not None and not decision.allowed:
                return _REFUSAL[decision.verdict], decision, None
        now = utcnow()
        money, reason = await self._money(conn, tag, now)
        if reason is not None:
            log.info("station %s: %s refused: %s", station_id, tag, reason)
            if self.control is not None:
                self.control.refused(station_id, now, {
                    "tag": tag, "connector_id": connector_id, "reason": reason,
                    "status": AuthStatus.NO_CREDIT.value})
            return AuthStatus.NO_CREDIT, decision, None
        return status, decision, money

    async def _hold(self, conn: AsyncConnection, session_id: int, tag: str,
                    money: Funds | None) -> int | None:
        """At a session's start: hold what its wallet has, and give it the member's available
        money as its budget (None: no budget from the money, e.g. free quota pays first)."""
        if money is None or money.quota_wh > 0:
            return None
        await funds.place_hold(conn, session_id, tag, money.available_fen)
        return money.available_fen

    async def session_of(self, station_id: str, tx_ref: str) -> int | None:
        """The session of a station's transaction (from memory while it runs)."""
        async with self.engine.connect() as conn:
            found = await self._load(conn, station_id, tx_ref)
        return found.id if found is not None else None

    def _defaults(self) -> SettlementDefaults:
        """The settler's defaults (the price when an owner set none), else the shipped ones."""
        return self.settler.defaults if self.settler is not None else SettlementDefaults()

    async def running_cost(self, session_id: int) -> int | None:
        """A running session's cost so far, in fen (the settler's tariff defaults)."""
        return await running_cost_fen(self.engine, session_id, self._defaults())

    async def settled_total(self, session_id: int) -> int | None:
        """Settle an ended session now and return what the driver pays, in fen."""
        if self.settler is None:
            return None
        return await self.settler.settle_now(session_id)

    async def tariff_type(self, station_id: str, evse_id: int) -> dict[str, Any]:
        """The host's tariff of an EVSE as a 2.1 TariffType (raises Untranslatable): that of
        the connector, else of the station, else the settlement's default price."""
        async with self.engine.connect() as conn:
            found = await tariff_in_force(conn, station_id, evse_id)
        return tariff_type(found[1] if found else self._defaults().tariff(),
                           self.settings.currency)

    async def session_tariff_type(self, session_id: int) -> dict[str, Any]:
        """The tariff a session is priced with here (the one it started under), as a 2.1
        TariffType (raises Untranslatable)."""
        return tariff_type(await tariff_of_session(self.engine, session_id, self._defaults()),
                           self.settings.currency)

    async def member_tariff(self, station_id: str, tag: str) -> dict[str, Any] | None:
        """A member's own price at a 2.1 station (AuthorizeResponse.tariff), as settlement
        will price them: nothing for charging in their free charging days (the overstay fee
        stays), else the host's tariff less the green-energy discount where the member chose
        green energy and the charger is green; None: the host's price applies."""
        async with self.engine.connect() as conn:
            if await memberships.free_charging(conn, tag, utcnow()):
                pct, why = Decimal(100), "free charging day"
            else:
                prefers = await conn.scalar(select(members.c.prefers_green)
                                            .where(members.c.tag == tag))
                if not prefers or not (await terms_of(conn, station_id)).green:
                    return None
                pct, why = (await loyalty.current_rules(conn)).green_pct, "green energy"
        try:
            return member_price(await self.tariff_type(station_id, 1), pct, why)
        except Untranslatable:
            return None

    async def card_payment(self, station_id: str, tx_ref: str | None, psp_ref: str,
                           amount_fen: int, receipt: str | None) -> funds.CardPaid:
        """A payment at the charger's terminal or web page (2.1 NotifySettlement) booked:
        from `external:card` to the card's session, whose driver owes it; the host's share
        is theirs once it is collected, as for a member's top-up."""
        session_id = await self.session_of(station_id, tx_ref) if tx_ref else None
        return await funds.card_payment(self.engine, session_id, psp_ref, amount_fen, receipt)

    async def firmware_md5(self, file_id: int) -> str | None:
        """The MD5 of a firmware file (PublishFirmware names the image by it); None: no file."""
        import hashlib

        async with self.engine.connect() as conn:
            content = await conn.scalar(select(firmware_files.c.content)
                                        .where(firmware_files.c.id == file_id))
        return None if content is None else hashlib.md5(content, usedforsecurity=False).hexdigest()

    async def token_types(self, tags: list[str]) -> dict[str, str]:
        """The idToken type each of these members' tokens was last presented with."""
        if not tags:
            return {}
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(members.c.tag, members.c.token_type).where(and_(
                among(conn, members.c.tag, tags), members.c.token_type.is_not(None))))).all()
        return {r.tag: r.token_type for r in rows}

    async def learn_token_type(self, tag: str, token_type: str) -> None:
        """A station presented a member's token with this type: kept (a card's type does
        not change, but a token first seen in a remote start has none)."""
        async with self.engine.begin() as conn:
            await conn.execute(update(members).where(and_(
                members.c.tag == tag, (members.c.token_type.is_(None))
                | (members.c.token_type != token_type))).values(token_type=token_type))

    async def items_per_message(self, station_id: str, component: str, instance: str,
                                variable: str = "ItemsPerMessage") -> int | None:
        """The station's own limit on a request (2.0.1 `ItemsPerMessage[instance]` or
        `BytesPerMessage[instance]` of `component`), as its device model reported it; None
        when unknown."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(select(station_variables.c.value).where(and_(
                station_variables.c.station_id == station_id,
                station_variables.c.component == component,
                station_variables.c.variable == variable,
                station_variables.c.variable_instance == instance,
                station_variables.c.attribute_type == "Actual")).limit(1))
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    async def session_budget(self, session_id: int) -> int | None:
        """What a session may spend (fen): the member's money, or a remote start's budget."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(select(sessions.c.budget_fen)
                                      .where(sessions.c.id == session_id))
        return None if value is None else int(value)

    async def personal_message(self, tag: str, status: AuthStatus) -> dict[str, str] | None:
        """idTokenInfo.personalMessage for a member's card (2.0.1, 2.1): why it is refused,
        or a welcome with what the member may spend, in the member's language (its own, else
        the platform's display_language). None for a tag that is no member's."""
        if funds.is_card(tag) or status.value not in DISPLAY_TEXTS["zh"]:
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(members.c.name, members.c.language)
                                      .where(members.c.tag == tag))).first()
            if row is None:
                return None
            language = row.language or self.settings.display_language
            values: dict[str, str] = {}
            if status is AuthStatus.ACCEPTED:
                available = (await funds.funds_of(conn, tag)).available_fen
                money = fmt(available)
                values = {"name": str(row.name)[:40],
                          "money": f"¥{money}" if language == "zh" else f"CNY {money}"}
        return {"format": "UTF8", "language": language,
                "content": display_text(language, status.value, **values)[:512]}

    async def household(self, tag: str) -> str | None:
        """The member's household or fleet (their cards stop each other's sessions)."""
        async with self.engine.connect() as conn:
            return await conn.scalar(select(members.c.household).where(members.c.tag == tag))

    async def _authorize(self, conn: AsyncConnection, tag: str) -> AuthStatus:
        if funds.is_card(tag):
            # 2.1 DirectPayment: the charger's terminal has authorised a payment for this
            # session (C18): no account, no wallet; the sharing rules still apply.
            return AuthStatus.ACCEPTED
        row = (await conn.execute(
            select(members.c.tag, members.c.status, members.c.expires_at)
            .where(members.c.tag == tag))).first()
        return check_tag(Tag(row.tag, row.status, row.expires_at) if row else None, utcnow())

    # --- status and notices ----------------------------------------------------------------

    async def connector_status(self, event: ConnectorStatus) -> None:
        row = {"station_id": event.station_id, "connector_id": event.connector_id,
               "status": event.status, "error_code": event.error_code, "updated_at": event.at}
        check_rows(connector_status, [row])
        await self.journal.write([(self._status_stmt, [row])])
        record = self.directory.get(event.station_id)
        if record is not None:
            record.status[event.connector_id] = (event.status, event.error_code, event.at)
        self.observer.connector_status(event.station_id, event.connector_id, event.status,
                                       event.error_code, event.at)
        if (event.status == "Available" and event.connector_id > 0
                and self._open.on_connector(event.station_id, event.connector_id)):
            self._spawn_stale_check(event.station_id, event.connector_id)
        if self.control is not None:
            fault = SAFETY_ERROR_CODES_16.get(event.error_code or "")
            if fault is not None:
                await self.control.fault(event.station_id, event.connector_id, fault, event.at)
            else:
                await self.control.connector_state(event.station_id, event.connector_id,
                                                   event.status, event.at)

    async def notice(self, event: StationNotice) -> None:
        notice = _notice_row(event)
        rows: list[tuple[Any, list[dict[str, Any]]]] = [(_INSERT_NOTICE, [notice])]
        if event.kind == "firmware":
            firmware = {"sid": event.station_id,
                        "firmware_status": str(event.payload.get("status"))}
            check_rows(stations, [{"firmware_status": firmware["firmware_status"]}])
            rows.append((_FIRMWARE_STATUS, [firmware]))
        await self.journal.write(rows)
        self.observer.notice(event.station_id, event.kind, event.payload, event.at)

    async def notice_now(self, station_id: str, kind: str, payload: dict[str, Any]) -> None:
        await self.notice(StationNotice(station_id, kind, utcnow(), payload))

    async def device_model(self, station_id: str, request_id: int,
                           report_data: list[dict[str, Any]]) -> int:
        """A NotifyReport part: its components and variables become the station's inventory
        (`cocharge station variables`). Returns how many attribute rows it held."""
        now = utcnow()
        rows = []
        for item in report_data:
            component, variable = item.get("component", {}), item.get("variable", {})
            evse = component.get("evse") or {}
            traits = item.get("variable_characteristics") or {}
            for attribute in item.get("variable_attribute", []):
                rows.append({
                    "station_id": station_id, "component": component.get("name"),
                    "component_instance": component.get("instance") or "",
                    "evse_id": evse.get("id") or 0, "connector_id": evse.get("connector_id") or 0,
                    "variable": variable.get("name"),
                    "variable_instance": variable.get("instance") or "",
                    "attribute_type": attribute.get("type") or "Actual",
                    "value": attribute.get("value"), "mutability": attribute.get("mutability"),
                    "data_type": traits.get("data_type"), "unit": traits.get("unit"),
                    "request_id": request_id, "updated_at": now})
        check_rows(station_variables, rows)
        if rows:
            await self.journal.write([(self._variable_stmt, rows)])
        return len(rows)

    async def monitors_set(self, station_id: str, asked: list[dict[str, Any]],
                           results: list[dict[str, Any]]) -> None:
        """SetVariableMonitoring answered: each accepted monitor is kept with the station's id."""
        now = utcnow()
        rows = []
        for want, result in zip(asked, results, strict=False):
            if result.get("status") != "Accepted" or result.get("id") is None:
                continue
            component = want["component"]
            rows.append(_monitor_row(station_id, int(result["id"]), component,
                                     want["variable"]["name"], want, "set", now))
        check_rows(station_monitors, rows)
        if rows:
            await self.journal.write([(self._monitor_stmt, rows)])

    async def monitors_cleared(self, station_id: str, results: list[dict[str, Any]]) -> None:
        """ClearVariableMonitoring answered: the cleared (or unknown) monitors are forgotten."""
        gone = [int(r["id"]) for r in results if r.get("status") in ("Accepted", "NotFound")]
        if gone:
            await self.journal.run(lambda conn: conn.execute(delete(station_monitors).where(and_(
                station_monitors.c.station_id == station_id,
                station_monitors.c.monitor_id.in_(gone)))))

    async def monitors_reported(self, station_id: str, request_id: int, seq_no: int,
                                monitor: list[dict[str, Any]]) -> int:
        """A NotifyMonitoringReport part: the first part of a report replaces what we knew of
        the station's monitors; returns how many it held."""
        now = utcnow()
        rows = []
        for item in monitor:
            for m in item.get("variable_monitoring", []):
                rows.append(_monitor_row(station_id, int(m["id"]), item["component"],
                                         item["variable"]["name"], m, "report", now))
        check_rows(station_monitors, rows)

        async def work(conn: AsyncConnection) -> None:
            if seq_no == 0:
                await conn.execute(delete(station_monitors).where(
                    station_monitors.c.station_id == station_id))
            if rows:
                await conn.execute(self._monitor_stmt, rows)

        await self.journal.run(work)
        return len(rows)

    async def new_upload(self, station_id: str, kind: str, log_type: str | None) -> tuple[int, str]:
        """A diagnostics or log request: (its id, the one-time token of its upload URL)."""
        token = secrets.token_urlsafe(24)
        now = utcnow()

        async def work(conn: AsyncConnection) -> int:
            return int((await conn.execute(insert(log_uploads).values(
                station_id=station_id, kind=kind, log_type=log_type, token=token,
                status="requested", requested_at=now, updated_at=now,
            ).returning(log_uploads.c.id))).scalar_one())

        return await self.journal.run(work), token

    async def upload_answered(self, upload_id: int, status: str, filename: str | None) -> None:
        values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
        if filename:
            values["filename"] = filename[:255]
        await self.journal.run(lambda conn: conn.execute(
            update(log_uploads).where(log_uploads.c.id == upload_id).values(**values)))

    async def upload_status(self, station_id: str, request_id: int | None, status: str) -> None:
        """Diagnostics/LogStatusNotification: the request's status (1.6 diagnostics carry no
        request id: the station's latest diagnostics request)."""
        async def work(conn: AsyncConnection) -> None:
            if request_id is None:
                target = await conn.scalar(
                    select(log_uploads.c.id).where(and_(
                        log_uploads.c.station_id == station_id,
                        log_uploads.c.kind == "diagnostics"))
                    .order_by(log_uploads.c.id.desc()).limit(1))
            else:
                target = await conn.scalar(select(log_uploads.c.id).where(and_(
                    log_uploads.c.station_id == station_id, log_uploads.c.id == request_id)))
            if target is not None and status != "Idle":
                await conn.execute(update(log_uploads).where(log_uploads.c.id == target)
                                   .values(status=status, updated_at=utcnow()))

        await self.journal.run(work)

    async def variables_set(self, station_id: str, results: list[dict[str, Any]],
                            values: dict[str, str]) -> None:
        """SetVariables answered: the accepted values become the inventory's Actual values."""
        report = []
        for result in results:
            component, variable = result.get("component", {}), result.get("variable", {})
            key = f"{component.get('name')}.{variable.get('name')}"
            if result.get("attributeStatus") in ("Accepted", "RebootRequired") and key in values:
                report.append({"component": {"name": component.get("name")},
                               "variable": {"name": variable.get("name")},
                               "variable_attribute": [{"type": "Actual",
                                                       "value": values[key]}]})
        if report:
            await self.device_model(station_id, 0, report)

    async def firmware_status(self, station_id: str, status: str, request_id: int | None) -> None:
        """A FirmwareStatusNotification: the firmware campaigns follow it."""
        if self.control is not None and self.control.firmware_running:
            await self.control.rollout.progress(station_id, status, request_id)

    async def reservation_ended(self, station_id: str, reservation_id: int, status: str) -> None:
        """The charger ended a reservation of ours (2.0.1 ReservationStatusUpdate: Expired or
        Removed): the booking is no longer reserved there (the controller reserves it again
        if its slot is still running), and the operator sees why."""
        notice = _notice_row(StationNotice(station_id, "reservation", utcnow(), {
            "reservation_id": reservation_id, "status": status}))

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(update(bookings).where(and_(
                bookings.c.id == reservation_id, bookings.c.station_id == station_id))
                .values(reserved=False))
            await conn.execute(_INSERT_NOTICE, [notice])

        await self.journal.run(work)
        log.info("station %s: reservation %s %s", station_id, reservation_id, status.lower())

    async def fault(self, station_id: str, connector_id: int, kind: str, at: datetime) -> None:
        """A safety fault the charger reported (overcurrent, ground fault, over-temperature)."""
        if self.control is not None:
            await self.control.fault(station_id, connector_id, kind, at)

    # --- sessions --------------------------------------------------------------------------

    async def _max_power_w(self, conn: AsyncConnection, station_id: str) -> int:
        value = await conn.scalar(select(stations.c.max_power_w).where(stations.c.id == station_id))
        return int(value) if value else self.settings.default_max_power_w

    # --- stale sessions: the charger forgot a transaction (power loss, reboot, lost stop) ---

    def _spawn_stale_check(self, station_id: str, connector_id: int) -> None:
        """The connector is Available with a session still open: unless the charger's queued
        stop arrives within the grace, or the connector becomes busy again, the session is
        stale."""
        async def check() -> None:
            await asyncio.sleep(self.settings.stale_session_grace_s)
            record = self.directory.get(station_id)
            now_status = record.status.get(connector_id) if record is not None else None
            if now_status is not None and now_status[0] != "Available":
                return
            await self.close_stale(station_id, connector_id,
                                   "the charger reported the connector Available and never "
                                   "ended the transaction")

        self._stale_checks.spawn(check(), f"stale-{station_id}-{connector_id}")

    async def close_stale(self, station_id: str, connector_id: int, reason: str,
                          keep: int | None = None) -> list[int]:
        """Close every session still open on this connector (but `keep`): ended at its last
        meter value, its energy the meter values known, the reason kept in `flag_reason`
        (stop reason "Stale"), then settled like any other. Returns the sessions closed."""
        stale = [(key, s) for key, s in self._open.on_connector(station_id, connector_id)
                 if s.id != keep]
        closed = []
        for key, found in stale:
            async def work(conn: AsyncConnection, found: OpenSession = found) -> int | None:
                row = (await conn.execute(select(sessions.c.status, sessions.c.meter_start_wh,
                                                 sessions.c.started_at)
                                          .where(sessions.c.id == found.id))).first()
                if row is None or row.status != "active":
                    return None
                last = (await conn.execute(
                    select(meter_samples.c.ts, meter_samples.c.value).where(and_(
                        meter_samples.c.session_id == found.id,
                        meter_samples.c.measurand == ENERGY_REGISTER,
                        meter_samples.c.phase.is_(None)))
                    .order_by(meter_samples.c.ts.desc(), meter_samples.c.id.desc()).limit(1))
                    ).first()
                ended = last.ts if last is not None else (row.started_at or utcnow())
                stop = round(last.value) if last is not None else row.meter_start_wh
                await conn.execute(update(sessions).where(sessions.c.id == found.id).values(
                    ended_at=ended, meter_stop_wh=stop, stop_reason="Stale"))
                energy = await self._finish(conn, found.id)
                note = await conn.scalar(select(sessions.c.flag_reason)
                                         .where(sessions.c.id == found.id))
                await conn.execute(update(sessions).where(sessions.c.id == found.id).values(
                    flag_reason=f"stale: {reason}" + (f"; {note}" if note else "")))
                return energy if energy is not None else 0

            energy = await self.journal.run(work)
            found.ended = True
            self._open.discard(key)
            if energy is None:  # already closed meanwhile
                continue
            closed.append(found.id)
            log.warning("session %s at %s/%s closed as stale: %s", found.id, station_id,
                        connector_id, reason)
            self.observer.session_ended(station_id, connector_id, found.id, energy, "Stale",
                                        utcnow())
            if self.load is not None:
                self.load.session_ended(station_id, connector_id, found.id)
            if self.control is not None:
                self.control.session_ended(found.id, station_id, connector_id)
            if self.settler is not None:
                self.settler.submit(found.id)
        return closed

    async def _finish(self, conn: AsyncConnection, session_id: int) -> int | None:
        """Compute energy from the registers (first and last by timestamp) and close the session."""
        row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).one()
        start, stop = row.meter_start_wh, row.meter_stop_wh
        if row.protocol != "1.6":
            first = (await conn.execute(
                select(meter_samples.c.value).where(and_(
                    meter_samples.c.session_id == session_id,
                    meter_samples.c.measurand == ENERGY_REGISTER, meter_samples.c.phase.is_(None)))
                .order_by(meter_samples.c.ts, meter_samples.c.id).limit(1))).scalar()
            last = (await conn.execute(
                select(meter_samples.c.value).where(and_(
                    meter_samples.c.session_id == session_id,
                    meter_samples.c.measurand == ENERGY_REGISTER, meter_samples.c.phase.is_(None)))
                .order_by(meter_samples.c.ts.desc(), meter_samples.c.id.desc()).limit(1))).scalar()
            start = round(first) if first is not None else None
            stop = round(last) if last is not None else None
        verdict = assess_energy(start, stop, row.started_at, row.ended_at,
                                await self._max_power_w(conn, row.station_id),
                                self.settings.misread_power_factor, self.settings.misread_slack_wh)
        await conn.execute(update(sessions).where(sessions.c.id == session_id).values(
            meter_start_wh=start, meter_stop_wh=stop, energy_wh=verdict.energy_wh,
            status="completed" if verdict.billable else "flagged", flag_reason=verdict.reason))
        if not verdict.billable:
            log.warning("session %s flagged: %s", session_id, verdict.reason)
            return None
        return verdict.energy_wh

    async def start_session(self, event: SessionStarted) -> tuple[int, AuthStatus]:
        """OCPP 1.6 StartTransaction: a repeat of the same start returns the same id."""
        check_rows(sessions, [{"connector_id": event.connector_id, "id_tag": event.id_tag,
                               "meter_start_wh": event.meter_start_wh}])

        async def work(conn: AsyncConnection) -> tuple[int, AuthStatus, bool]:
            status, decision, money = await self._authorize_here(
                conn, event.id_tag, event.station_id, event.connector_id)
            same_start = (sessions.c.charger_start == event.charger_at if event.charger_at
                          else sessions.c.started_at == event.at)
            existing = await conn.scalar(select(sessions.c.id).where(and_(
                sessions.c.station_id == event.station_id,
                sessions.c.connector_id == event.connector_id,
                sessions.c.id_tag == event.id_tag, same_start,
                sessions.c.meter_start_wh == event.meter_start_wh)))
            if existing is not None:
                log.info("repeated StartTransaction from %s: same transaction %s",
                         event.station_id, existing)
                return int(existing), status, False
            session_id = int((await conn.execute(insert(sessions).values(
                station_id=event.station_id, connector_id=event.connector_id, protocol="1.6",
                id_tag=event.id_tag, started_at=event.at, meter_start_wh=event.meter_start_wh,
                status="active", created_at=utcnow(), clock=event.clock,
                charger_start=event.charger_at).returning(sessions.c.id))).scalar_one())
            await conn.execute(update(sessions).where(sessions.c.id == session_id)
                               .values(tx_ref=str(session_id)))
            if status is AuthStatus.ACCEPTED:
                budget = await self._hold(conn, session_id, event.id_tag, money)
                if self.control is not None:
                    await self.control.session_started(
                        conn, session_id, event.station_id, event.connector_id, str(session_id),
                        event.id_tag, event.at, event.meter_start_wh, decision, budget)
            return session_id, status, True

        session_id, status, new = await self.journal.run(work)
        if not new:
            return session_id, status
        self._open[(event.station_id, str(session_id))] = OpenSession(
            session_id, event.connector_id, ended=False)
        await self.close_stale(event.station_id, event.connector_id,
                               f"superseded: transaction {session_id} started on the same "
                               "connector", keep=session_id)
        if status is AuthStatus.ACCEPTED:
            self.observer.session_started(event.station_id, event.connector_id, session_id,
                                          event.id_tag, event.at)
            if self.load is not None:
                self.load.session_started(event.station_id, event.connector_id, session_id,
                                          str(session_id), event.id_tag, event.at)
        return session_id, status

    async def _load(self, conn: AsyncConnection, station_id: str, tx_ref: str) -> OpenSession | None:
        cached = self._open.get((station_id, tx_ref))
        if cached is not None:
            return cached
        row = (await conn.execute(select(sessions.c.id, sessions.c.connector_id, sessions.c.ended_at)
                                  .where(and_(sessions.c.station_id == station_id,
                                              sessions.c.tx_ref == tx_ref)))).first()
        if row is None:
            return None
        seqs = (await conn.execute(select(tx_events.c.seq_no).where(and_(
            tx_events.c.station_id == station_id, tx_events.c.tx_ref == tx_ref)))).scalars().all()
        found = OpenSession(int(row.id), row.connector_id, row.ended_at is not None, set(seqs))
        if not found.ended:
            self._open[(station_id, tx_ref)] = found
        return found

    async def end_session(self, event: SessionEnded) -> AuthStatus | None:
        """OCPP 1.6 StopTransaction: closes the session once; repeats change nothing."""
        check_rows(sessions, [{"tx_ref": event.tx_ref, "id_tag": event.id_tag,
                               "meter_stop_wh": event.meter_stop_wh,
                               "stop_reason": event.reason}])
        rows = _sample_rows(event.station_id, 0, None, event.samples)  # checked before the work

        async def work(conn: AsyncConnection) -> tuple[AuthStatus | None, OpenSession | None,
                                                      int | None]:
            status = await self._authorize(conn, event.id_tag) if event.id_tag else None
            found = await self._load(conn, event.station_id, event.tx_ref)
            if found is None:
                # Keep what the charger sent (it may be the stop of a start we never got).
                log.warning("StopTransaction for unknown transaction %s from %s kept as orphan",
                            event.tx_ref, event.station_id)
                await conn.execute(insert_ignore(self.engine, sessions).values(
                    station_id=event.station_id, connector_id=0, tx_ref=f"orphan:{event.tx_ref}",
                    protocol="1.6", id_tag=event.id_tag, ended_at=event.at,
                    meter_stop_wh=event.meter_stop_wh, status="orphan", stop_reason=event.reason,
                    flag_reason="stop for a transaction this central system never started",
                    created_at=utcnow()))
                return status, None, None
            if found.ended:
                log.info("repeated StopTransaction %s from %s ignored", event.tx_ref,
                         event.station_id)
                return status, None, None
            if rows:
                await conn.execute(_INSERT_SAMPLES, [
                    {**row, "connector_id": found.connector_id, "session_id": found.id}
                    for row in rows])
            await conn.execute(update(sessions).where(sessions.c.id == found.id).values(
                ended_at=event.at, meter_stop_wh=event.meter_stop_wh,
                stop_reason=event.reason or "Local"))
            if event.clock:
                await conn.execute(_CLOCK_NOTE, {"sid": found.id, "note": event.clock})
            return status, found, await self._finish(conn, found.id)

        status, found, energy = await self.journal.run(work)
        if found is None:
            return status
        found.ended = True
        self.observer.session_ended(event.station_id, found.connector_id, found.id, energy,
                                    event.reason or "Local", event.at)
        self._open.discard((event.station_id, event.tx_ref))
        if self.load is not None:
            self.load.session_ended(event.station_id, found.connector_id, found.id)
        if self.control is not None:
            self.control.session_ended(found.id, event.station_id, found.connector_id)
        if self.settler is not None:
            self.settler.submit(found.id)
        return status

    async def transaction_event(self, event: TransactionEvent) -> AuthStatus | None:
        """OCPP 2.0.1 TransactionEvent: (station, transaction, seqNo) is applied once."""
        key = (event.station_id, event.tx_ref)
        found = self._open.get(key)
        status: AuthStatus | None = None
        decision: Decision | None = None
        money: Funds | None = None
        if found is None or event.id_tag:  # the hot path (cached session, no token) needs no read
            async with self.engine.connect() as conn:
                found = found or await self._load(conn, event.station_id, event.tx_ref)
                if event.id_tag and found is None and event.event_type != "Ended":
                    # A new transaction: the sharing rules of this EVSE apply.
                    status, decision, money = await self._authorize_here(
                        conn, event.id_tag, event.station_id, event.connector_id)
                elif event.id_tag:
                    status = await self._authorize(conn, event.id_tag)
        if found is not None and event.seq_no in await self._seen_seqs(key, found):
            log.info("repeated TransactionEvent %s seq %s from %s ignored",
                     event.tx_ref, event.seq_no, event.station_id)
            return status
        mark = {"station_id": event.station_id, "tx_ref": event.tx_ref, "seq_no": event.seq_no,
                "event_type": event.event_type, "ts": event.at}
        check_rows(tx_events, [mark])
        rows = _sample_rows(event.station_id, found.connector_id if found else 0,
                            found.id if found else None, event.samples)
        if (found is not None and event.event_type == "Updated" and not found.ended
                and not event.id_tag):
            # The hot path: meter values during a transaction, group-committed.
            await self.journal.write([(_BULK_SAMPLES, rows), (self._mark_stmt, [mark]),
                                      (_CLOCK_NOTE, [{"sid": found.id, "note": event.clock}]
                                       if event.clock else [])], express=True)
            (await self._seen_seqs(key, found)).add(event.seq_no)
            await self._follow(found, event)
            return status
        check_rows(sessions, [{"connector_id": event.connector_id or 0, "id_tag": event.id_tag,
                               "stop_reason": event.stop_reason, "tx_ref": event.tx_ref}])
        known = found

        async def work(conn: AsyncConnection) -> tuple[OpenSession, OpenSession | None, int | None]:
            found, started, ended_energy = known, None, None
            if found is None:
                session_id = int((await conn.execute(insert(sessions).values(
                    station_id=event.station_id, connector_id=event.connector_id or 0,
                    tx_ref=event.tx_ref, protocol=event.protocol, id_tag=event.id_tag,
                    started_at=event.at, status="active", created_at=utcnow(), clock=event.clock,
                ).returning(sessions.c.id))).scalar_one())
                found = OpenSession(session_id, event.connector_id or 0, ended=False)
                if event.id_tag and status is AuthStatus.ACCEPTED and event.event_type != "Ended":
                    started = found
                    budget = await self._hold(conn, session_id, event.id_tag, money)
                    if self.control is not None:
                        start = _register_wh(event.samples)
                        await self.control.session_started(
                            conn, session_id, event.station_id, found.connector_id,
                            event.tx_ref, event.id_tag, event.at, start[0] if start else None,
                            decision, budget)
            else:
                changes: dict[str, Any] = {}
                if event.id_tag:
                    changes["id_tag"] = event.id_tag
                if event.event_type == "Started":
                    began = await conn.scalar(select(sessions.c.started_at)
                                              .where(sessions.c.id == found.id))
                    if began is None or event.at < began:
                        changes["started_at"] = event.at
                    started = found if began is not None else None
                if event.connector_id and not found.connector_id:
                    changes["connector_id"] = found.connector_id = event.connector_id
                if changes:
                    await conn.execute(update(sessions).where(sessions.c.id == found.id)
                                       .values(**changes))
            await conn.execute(self._mark_stmt, [mark])
            if event.clock and known is not None:
                await conn.execute(_CLOCK_NOTE, {"sid": found.id, "note": event.clock})
            if rows:
                await conn.execute(_INSERT_SAMPLES, [
                    {**row, "connector_id": found.connector_id, "session_id": found.id}
                    for row in rows])
            if event.event_type == "Ended":
                ended = await conn.scalar(select(sessions.c.ended_at)
                                          .where(sessions.c.id == found.id))
                if ended is None or event.at > ended:
                    await conn.execute(update(sessions).where(sessions.c.id == found.id).values(
                        ended_at=event.at, stop_reason=event.stop_reason or "Local"))
                if event.charger_cost is not None:
                    await conn.execute(update(sessions).where(sessions.c.id == found.id).values(
                        charger_cost_fen=event.charger_cost[0],
                        charger_idle_fen=event.charger_cost[1]))
                found.ended = True
            if event.charger_tariff is not None:
                await conn.execute(update(sessions).where(sessions.c.id == found.id).values(
                    charger_tariff=event.charger_tariff[:60]))
            if found.ended:
                # Also re-run when a late event of an ended session arrives (offline replay).
                ended_energy = await self._finish(conn, found.id)
            return found, started, ended_energy

        session, started, ended_energy = await self.journal.run(work)
        found = session
        (await self._seen_seqs(key, session)).add(event.seq_no)
        if known is None and found.connector_id:
            await self.close_stale(event.station_id, found.connector_id,
                                   f"superseded: transaction {event.tx_ref} started on the same "
                                   "EVSE", keep=found.id)
        if started is not None:
            self.observer.session_started(event.station_id, found.connector_id, found.id,
                                          event.id_tag, event.at)
            if self.load is not None:
                self.load.session_started(event.station_id, found.connector_id, found.id,
                                          event.tx_ref, event.id_tag or "", event.at)
        if self.load is not None and found.ended and event.samples:
            await self._load_samples(event.station_id, found.connector_id, found.id, event.samples)
        if event.event_type == "Ended":
            self.observer.session_ended(event.station_id, found.connector_id, found.id,
                                        ended_energy, event.stop_reason or "Local", event.at)
        if found.ended:
            self._open.discard(key)
            if self.load is not None:
                self.load.session_ended(event.station_id, found.connector_id, found.id)
            if self.control is not None:
                self.control.session_ended(found.id, event.station_id, found.connector_id)
            if self.settler is not None and (event.event_type == "Ended"
                                             or ended_energy is not None):
                # Ended, or finished again by a late event (offline replay after a stale
                # close or a flag): settled once it is billable (settling is idempotent).
                self.settler.submit(found.id)
        else:
            self._open[key] = found
            await self._follow(found, event)
        return status

    async def _follow(self, found: OpenSession, event: TransactionEvent) -> None:
        """Tell sharing control (and the observer) what a running 2.0.1 transaction reports."""
        reading = _register_wh(event.samples)
        if reading is not None:
            self.observer.meter(event.station_id, found.connector_id, found.id, reading[0], reading[1])
        if self.load is not None and event.samples:
            await self._load_samples(event.station_id, found.connector_id, found.id, event.samples)
        if self.control is None:
            return
        if reading is not None:
            self.control.meter(found.id, reading[0], reading[1])
        if event.charging_state:
            await self.control.connector_state(event.station_id, found.connector_id,
                                               event.charging_state, event.at)

    async def meter_report(self, event: MeterReport) -> None:
        """MeterValues: samples of a known transaction, or of the connector when none is named.
        Samples naming a transaction we do not know are kept as the connector's, and flagged
        with a station event: MeterValues has no way to refuse, and a charger that got an
        error would retry them forever, stalling its queue."""
        session_id: int | None = None
        rows: list[tuple[Any, list[dict[str, Any]]]] = []
        if event.tx_ref is not None:
            found = self._open.get((event.station_id, event.tx_ref))
            if found is None:
                async with self.engine.connect() as conn:
                    found = await self._load(conn, event.station_id, event.tx_ref)
            if found is None:
                log.warning("station %s: MeterValues for unknown transaction %s kept as the "
                            "connector's, flagged", event.station_id, event.tx_ref)
                rows.append((_INSERT_NOTICE, [_notice_row(StationNotice(
                    event.station_id, "unknown_transaction", utcnow(),
                    {"transaction_id": event.tx_ref, "connector_id": event.connector_id,
                     "samples": len(event.samples)}))]))
            else:
                session_id = found.id
        if event.clock and session_id is not None:
            rows.append((_CLOCK_NOTE, [{"sid": session_id, "note": event.clock}]))
        elif event.clock:
            rows.append((_INSERT_NOTICE, [_notice_row(StationNotice(
                event.station_id, "clock", utcnow(),
                {"connector_id": event.connector_id, "note": event.clock}))]))
        rows.append((_BULK_SAMPLES, _sample_rows(
            event.station_id, event.connector_id, session_id, event.samples)))
        if self.load is not None:
            green = self.load.samples(event.station_id, event.connector_id, session_id,
                                      event.samples)
            if green:
                rows.append((GREEN_UPDATE, green))
        await self.journal.write(rows, express=True)  # its session's start is committed
        reading = _register_wh(event.samples)
        if reading is not None:
            self.observer.meter(event.station_id, event.connector_id, session_id, reading[0], reading[1])
        if self.control is not None and session_id is not None and reading is not None:
            self.control.meter(session_id, reading[0], reading[1])

    async def _load_samples(self, station_id: str, connector_id: int, session_id: int,
                            samples: list[MeterSample]) -> None:
        """Meter values for load management; a PV site's surplus-covered energy is written
        with the samples' turn in the journal (before the session can be settled)."""
        assert self.load is not None
        green = self.load.samples(station_id, connector_id, session_id, samples)
        if green:
            await self.journal.write([(GREEN_UPDATE, green)])

    async def session_ref(self, session_id: int) -> tuple[str, str, str] | None:
        """(station, charger's transaction id, protocol) of a session, for a remote stop."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(sessions.c.station_id, sessions.c.tx_ref,
                                             sessions.c.protocol)
                                      .where(sessions.c.id == session_id))).first()
        return (row.station_id, row.tx_ref, row.protocol) if row else None

