"""The charger every simulated wallbox is, whatever its OCPP version: configuration, a clock
that runs fast, sessions with a hardware model (hardware.py), the local list, uploads and
firmware, reservations, the connection and its offline queue. The messages themselves are
the version's (v16.py, v201.py); certificates and security profiles are security.py's,
charging profiles smart.py's.

Handlers never await a call of their own (the reply must go out first): follow-up
messages are sent from tasks."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import ocpp.messages
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from cocharge.simulators.hardware import EV, Connector
from cocharge.simulators.profiles import Profile
from cocharge.simulators.security import SecurityMixin, signature_valid, tls_client_context
from cocharge.simulators.smart import SmartChargingMixin
from cocharge.simulators.state import FAULT_STOP_REASONS, SimClock, SimConfig, SimSession

ocpp.messages.ASYNC_VALIDATION = False
log = logging.getLogger(__name__)


async def connect_station(config: SimConfig, tls: ssl.SSLContext | None = None,
                          basic: bool = True) -> ClientConnection:
    """Connect as the station. A central system that answers 429 or 503 (busy, or a storm
    of reconnecting chargers) is asked again after its Retry-After, stretched by a random
    quarter so that the chargers of a storm spread out, up to config.connect_attempts."""
    headers = {}
    if config.password and basic:  # profile 3: the client certificate instead
        token = base64.b64encode(f"{config.station_id}:{config.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    subprotocol = f"ocpp{config.protocol}"
    url = config.url.rstrip("/") + "/" + config.station_id
    if tls is None and url.startswith("wss"):
        tls = tls_client_context([config.ca_pem] if config.ca_pem else [], None, None)
    for attempt in range(1, config.connect_attempts + 1):
        try:
            return await connect(url, subprotocols=[subprotocol],  # type: ignore[list-item]
                                 additional_headers=headers, compression=None, open_timeout=10,
                                 ssl=tls)
        except InvalidStatus as refused:
            status = refused.response.status_code
            if status not in (429, 503) or attempt == config.connect_attempts:
                raise
            wait = retry_after_s(refused.response.headers.get("Retry-After"))
            log.info("%s: HTTP %d, connecting again in %.1f s", config.station_id, status, wait)
            await asyncio.sleep(wait * random.uniform(1.0, 1.25))
    raise AssertionError("unreachable")


def retry_after_s(value: str | None) -> float:
    """Retry-After in seconds (1 when absent or unreadable; at most a minute)."""
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), 60.0) if seconds == seconds else 1.0


class WallboxMixin(SecurityMixin, SmartChargingMixin):
    """Protocol-neutral behaviour; the protocol classes (v16.py, v201.py) supply the messages."""

    config: SimConfig
    if TYPE_CHECKING:  # from the ocpp ChargePoint each protocol class also derives from
        async def call(self, payload: Any) -> Any: ...
        async def start(self) -> None: ...

    def _init_wallbox(self, config: SimConfig) -> None:
        self.config = config
        self.clock = SimClock(config.speed, config.clock_lead_s)
        self.hw = {n: Connector(n, max_current_a=config.max_current_a, phases=config.phases)
                   for n in range(1, config.connectors + 1)}
        self.charging_profiles: list[Profile] = []
        self.dynamic_updates: list[tuple[int, dict[str, Any]]] = []  # 2.1 UpdateDynamicSchedule
        # Called with this wallbox at every meter value it sends (a site's checks listen).
        self.meter_listeners: list[Any] = []
        # Called with this wallbox whenever its charging profiles changed (a site's checks).
        self.profile_listeners: list[Any] = []
        # Cleared: a hung charger, that takes a SetChargingProfile and answers nothing (nor
        # anything after it) until set again.
        self.answering_profiles = asyncio.Event()
        self.answering_profiles.set()
        self.sessions: dict[int, SimSession] = {}
        self.finished: list[SimSession] = []
        self.registration: str | None = None
        self.heartbeat_s = 300
        self.settings: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.online = True
        self._lost = asyncio.Event()
        self.outbox: list[Any] = []  # transaction messages kept while offline, sent on reconnect
        self.boots = 0  # reboots after a Reset
        self.reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()  # one reconnection at a time
        # The local authorization list: tag -> expiry (None: none); what decides offline.
        self.local_list: dict[str, datetime | None] = {}
        self.local_list_version = 0
        self.firmware = config.firmware
        self.password_changes = 0
        # Security: roots by type (PEM), its own key and certificate chain (profile 3).
        self.security_profile = 2 if config.url.startswith("wss") else 1
        self.roots: dict[str, list[str]] = {"CSMSRootCertificate": [config.ca_pem]
                                            if config.ca_pem else [],
                                            "ManufacturerRootCertificate": []}
        self.client_key: bytes | None = None
        self.client_chain: str | None = None
        self._pending_key: Any = None  # the key of the CSR sent, until its certificate comes
        self.certificates_received = 0
        self.groups: dict[str, str | None] = {}  # tag -> its group (groupIdToken/parentIdTag)
        # The display: message id -> message (2.0.1 MessageInfo, snake_case); and the costs it
        # showed: transaction id -> [running costs as sent], and the final totals.
        self.display: dict[int, dict[str, Any]] = {}
        self.costs_shown: dict[str, list[str]] = {}
        self.total_costs: dict[str, str] = {}

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def charge(self, connector_id: int, tag: str, energy_wh: float | None = None,
                     ev: EV | None = None, stay_s: float = 0.0,
                     profile: dict[str, Any] | None = None) -> SimSession:
        """A driver arrives: swipe `tag`, wait for the bay lock, plug in, charge until the EV
        is full, `energy_wh` is delivered, or the central system stops it; the car then stays
        plugged in for `stay_s` simulated seconds. Returns once started (or refused)."""
        if connector_id in self.sessions:
            raise RuntimeError(f"connector {connector_id} is busy")
        session = SimSession(connector_id, tag, start_profile=profile)
        self.sessions[connector_id] = session
        session.task = self._spawn(self._run_session(session, energy_wh, ev or EV(), stay_s))
        await session.started.wait()
        return session

    async def power_loss(self) -> None:
        """The charger loses its power mid-transaction and forgets its transactions (a
        charger without a persistent message queue): no stop is ever sent for them; it boots
        again and reports its connectors (Available: the cars were unplugged meanwhile)."""
        lost = [s for s in self.sessions.values() if s.task is not None]
        for session in lost:
            session.stop_reason = "PowerLoss"
            assert session.task is not None
            session.task.cancel()
        for session in lost:
            await session.done.wait()
        for hw in self.hw.values():
            hw.relay_closed = False
            hw.power_w = 0
            hw.cable_locked = False
            hw.ev = None
            hw.bay_locked = False
            hw.reservation = None
        self.boots += 1
        await self.boot_and_report()

    def apply_local_list(self, version: int, full: bool,
                         entries: dict[str, tuple[str, str | None] | None]) -> str:
        """SendLocalList: entries tag -> (status, expiry) or None (removed)."""
        if not full and version <= self.local_list_version:
            return "VersionMismatch"
        if full:
            self.local_list = {}
        for tag, entry in entries.items():
            if entry is None or entry[0] != "Accepted":
                self.local_list.pop(tag, None)
            else:
                expiry = entry[1]
                self.local_list[tag] = datetime.fromisoformat(expiry) if expiry else None
        self.local_list_version = version
        return "Accepted"


    def local_list_allows(self, tag: str) -> bool:
        if tag not in self.local_list:
            return False
        expiry = self.local_list[tag]
        return expiry is None or expiry > self.clock.now()

    def log_file(self) -> bytes:
        """What the sim's diagnostics or log file holds."""
        return "".join(f"{self.clock.iso()} {self.config.station_id} connector {n}: "
                       f"register {hw.register_wh:.1f} Wh\n"
                       for n, hw in self.hw.items()).encode()

    async def upload(self, location: str, filename: str, content: bytes) -> bool:
        """HTTP PUT of a file to `location` + `/filename` (what a charger does with an http
        URL); True when the server answered 2xx."""
        url = urlsplit(location)
        path = f"{url.path.rstrip('/')}/{filename}"
        reader, writer = await asyncio.open_connection(url.hostname, url.port or 80)
        try:
            writer.write(f"PUT {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                         f"Content-Type: text/plain\r\nContent-Length: {len(content)}\r\n"
                         "Connection: close\r\n\r\n".encode() + content)
            await writer.drain()
            status_line = await reader.readline()
        finally:
            writer.close()
        parts = status_line.split()
        return len(parts) > 1 and parts[1].startswith(b"2")

    def start_log_upload(self, log: dict[str, Any], log_type: str, request_id: int) -> str:
        """GetLog accepted: the file's name; the upload follows our answer."""
        name = f"{self.config.station_id}-{log_type}.log"
        self._spawn(self._send_log(log["remote_location"], name, request_id))
        return name

    async def _send_log(self, location: str, name: str, request_id: int) -> None:
        """GetLog: upload the log, with LogStatusNotifications before and after."""
        await asyncio.sleep(0.05)  # after our answer
        status = call16.LogStatusNotification if self.config.protocol == "1.6" \
            else call201.LogStatusNotification
        await self.send(status(status="Uploading", request_id=request_id))
        ok = await self.upload(location, name, self.log_file())
        await self.send(status(status="Uploaded" if ok else "UploadFailed",
                               request_id=request_id))

    async def download(self, location: str) -> bytes | None:
        """HTTP GET of a firmware image; None when it cannot be fetched."""
        url = urlsplit(location)
        try:
            reader, writer = await asyncio.open_connection(url.hostname, url.port or 80)
        except OSError:
            return None
        try:
            writer.write(f"GET {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                         "Connection: close\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.read()
        finally:
            writer.close()
        return body if head.split()[1:2] == [b"200"] else None

    async def update_firmware(self, location: str, report: Any, signature: str | None = None,
                              certificate: str | None = None) -> None:
        """Download, verify a signed image, install, reboot with the new version (the image's
        content names it); `report(status)` sends each firmware status notification."""
        await asyncio.sleep(0.05)  # after our answer
        await report("Downloading")
        image = await self.download(location)
        if image is None:
            await report("DownloadFailed")
            return
        await report("Downloaded")
        if signature is not None:
            if not signature_valid(image, signature, certificate or ""):
                await report("InvalidSignature")
                return
            await report("SignatureVerified")
        await report("Installing")
        if self.config.firmware_fails:
            await report("InstallationFailed")
            return
        self.firmware = image.decode(errors="replace").strip()[:50] or self.firmware
        await report("Installed")
        self._spawn(self._after_reset(power_cycle=True))

    async def _authorized(self, tag: str) -> bool:
        """Online the central system decides; offline the local list does."""
        if not self.online:
            return self.local_list_allows(tag)
        return await self.authorize(tag)

    async def _admitted(self, session: SimSession) -> bool:
        """Authorize, then wait for the connector to be operative, free of other reservations
        and its bay open, as the central system decides."""
        hw = self.hw[session.connector_id]
        if not await self._authorized(session.tag):
            session.refused = "authorization refused"
            return False
        deadline = time.monotonic() + self.config.bay_wait_s
        while True:
            reservation = hw.reservation
            if reservation is not None and reservation[2] <= self.clock.now().timestamp():
                hw.reservation = reservation = None
            reason = ("connector inoperative" if not hw.operative
                      else "bay locked" if hw.bay_locked
                      else "reserved for another member" if reservation and reservation[1] != session.tag
                      else "faulted" if hw.faulted else None)
            if reason is None:
                return True
            if time.monotonic() >= deadline:
                session.refused = reason
                return False
            await asyncio.sleep(0.05)

    async def _run_session(self, session: SimSession, energy_wh: float | None, ev: EV,
                           stay_s: float) -> None:
        hw = self.hw[session.connector_id]
        try:
            if not await self._admitted(session):
                session.authorized = False
                session.stop_reason = "DeAuthorized"
                log.info("%s/%s: %s cannot charge: %s", self.config.station_id,
                         session.connector_id, session.tag, session.refused)
                return
            hw.ev = ev
            hw.reservation = None
            await self.send_status(session.connector_id, "Preparing")
            hw.cable_locked = True
            hw.relay_closed = True
            # The transaction (and a Relative profile's time) starts at its timestamp.
            session.t0 = time.monotonic()
            session.tx_start = self.clock.now()
            await self.start_transaction(session, hw.register_wh)
            if session.start_profile is not None:
                self.install_profile(session.connector_id, session.start_profile)
            session.started.set()
            await self.send_status(session.connector_id, "Charging")
            await self._deliver(session, hw, energy_wh, stay_s)
            hw.relay_closed = False
            hw.power_w = 0
            await self.stop_transaction(session, hw.register_wh)
            if hw.faulted:
                return
            if session.stop_reason != "EVDisconnected" and stay_s > 0:
                await self.send_status(session.connector_id, "Finishing")
                await asyncio.sleep(stay_s / self.config.speed)
            hw.cable_locked = False
            hw.ev = None
            # A change of availability scheduled during the session takes effect now.
            await self.send_status(session.connector_id,
                                   "Available" if hw.operative else "Unavailable")
        except Exception:
            log.exception("%s: session on connector %s failed", self.config.station_id,
                          session.connector_id)
            session.stop_reason = session.stop_reason or "Other"
        finally:
            self._tx_profiles_end(session)
            self.sessions.pop(session.connector_id, None)
            self.finished.append(session)
            session.started.set()
            session.done.set()

    async def _deliver(self, session: SimSession, hw: Connector, energy_wh: float | None,
                       stay_s: float) -> None:
        """Run the hardware, honouring the transaction's charging profile, until a stop."""
        last = session.t0 or time.monotonic()
        state = "Charging"
        full_since: float | None = None
        while session.stop_reason is None:
            await asyncio.sleep(self.config.meter_interval_s)
            now = time.monotonic()
            remaining = (now - last) * self.config.speed
            last = now
            while remaining > 1e-9:  # step piecewise so a profile change lands on its second
                change = self.next_change_s(session)
                piece = remaining if change is None else min(remaining, change - session.device_s)
                session.energy_wh += hw.step(piece, self.limit_w(session),
                                             self.setpoint_w(session))
                session.device_s += piece
                remaining -= piece
            limit = self.limit_w(session)
            if hw.ev is not None and hw.ev.full:
                full_since = session.device_s if full_since is None else full_since
                if session.device_s - full_since >= stay_s:
                    session.stop_reason = "EVDisconnected"
            elif energy_wh is not None and session.energy_wh >= energy_wh:
                session.stop_reason = "Local"
            if session.stop_reason is None:
                now_state = ("SuspendedEV" if full_since is not None
                             else "SuspendedEVSE" if limit is not None and limit <= 0 else "Charging")
                if now_state != state:
                    state = now_state
                    await self.charging_state(session, state)
                for listener in self.meter_listeners:
                    listener(self)
                await self.send_meter(session, hw)

    async def present_card(self, connector_id: int, tag: str) -> bool:
        """A card held to the reader of a charging connector: the card that started the
        session stops it; another card only if the central system says it is of the same
        group (2.0.1 groupIdToken, C09; 1.6 parentIdTag)."""
        session = self.sessions.get(connector_id)
        if session is None:
            return False
        if tag != session.tag:
            if not await self.authorize(tag):
                return False
            group = self.groups.get(tag)
            if group is None or group != self.groups.get(session.tag):
                return False
        session.stop_reason = "Local"
        return True

    def request_stop(self, tx_id: Any, reason: str = "Remote") -> bool:
        for session in self.sessions.values():
            if session.tx_id is not None and str(session.tx_id) == str(tx_id):
                session.stop_reason = reason
                return True
        return False

    def set_availability(self, targets: list[int], operative: bool) -> str:
        """ChangeAvailability as hardware does it: Scheduled while a connector is charging."""
        if any(t not in self.hw for t in targets):
            return "Rejected"
        busy = any(t in self.sessions for t in targets)
        for t in targets:
            self.hw[t].operative = operative
            if t not in self.sessions:
                self._spawn(self.send_status(t, "Available" if operative else "Unavailable"))
        return "Scheduled" if busy else "Accepted"

    async def _after_reset(self, power_cycle: bool = False) -> None:
        """Reboot once the sessions have ended; a hard reset cuts the power, which releases
        the bay locks and forgets reservations (the central system must assert them again)."""
        while self.sessions:
            await asyncio.sleep(0.05)
        if power_cycle:
            for hw in self.hw.values():
                hw.bay_locked = False
                hw.reservation = None
        self.boots += 1
        if await self.switch_network():
            return  # reconnected (and booted) by another network profile
        await self.boot_and_report()

    async def switch_network(self) -> bool:
        return False  # 1.6 changes its profile by SecurityProfile, at once

    def connector_state(self, n: int) -> str:
        hw = self.hw[n]
        if hw.faulted:
            return "Faulted"
        if n in self.sessions:
            return "Charging"
        if not hw.operative:
            return "Unavailable"
        return "Reserved" if hw.reservation else "Available"

    async def boot_and_report(self) -> None:
        await self.boot()
        if self.registration == "Accepted":
            for n in self.hw:
                await self.send_status(n, self.connector_state(n))
            self._spawn(self._heartbeats())

    # share lock, reservations, profiles: the same for both protocols ----------------------

    def set_bay_lock(self, connector_id: int, locked: bool) -> bool:
        if connector_id not in self.hw:
            return False
        self.hw[connector_id].bay_locked = locked
        return True

    def reserve(self, connector_id: int | None, tag: str, reservation_id: int, expiry: str) -> str:
        n = connector_id or next((c for c in self.hw if c not in self.sessions), None)
        if n is None or n not in self.hw:
            return "Rejected"
        hw = self.hw[n]
        if hw.faulted:
            return "Faulted"
        if not hw.operative:
            return "Unavailable"
        if n in self.sessions:
            return "Occupied"
        expires = datetime.fromisoformat(expiry).timestamp()
        hw.reservation = (reservation_id, tag, expires)
        self._spawn(self.send_status(n, "Reserved"))
        return "Accepted"

    def cancel_reservation(self, reservation_id: int) -> bool:
        for n, hw in self.hw.items():
            if hw.reservation is not None and hw.reservation[0] == reservation_id:
                hw.reservation = None
                if n not in self.sessions:
                    self._spawn(self.send_status(n, self.connector_state(n)))
                return True
        return False


    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self.heartbeat()

    # faults, connection loss ---------------------------------------------------------------

    async def fault(self, connector_id: int, kind: str) -> None:
        """A safety fault on demand: "overcurrent", "ground fault" or "over-temperature".
        The relay opens, the charger reports the fault and ends the transaction itself."""
        hw = self.hw[connector_id]
        hw.faulted = True
        hw.relay_closed = False
        await self.report_fault(connector_id, kind)
        session = self.sessions.get(connector_id)
        if session is not None:
            session.stop_reason = FAULT_STOP_REASONS[self.config.protocol][kind]
            await session.done.wait()

    async def send(self, request: Any, keep: bool = False) -> Any:
        """Send a call; offline (or when the link drops meanwhile) a transaction message
        (`keep`) waits in the outbox for the next connection and None is returned."""
        if not self.online:
            if keep:
                self.outbox.append(request)
            return None
        call = asyncio.ensure_future(self.call(request))
        lost = asyncio.ensure_future(self._lost.wait())
        await asyncio.wait({call, lost}, return_when=asyncio.FIRST_COMPLETED)
        lost.cancel()
        if call.done() and not isinstance(call.exception(), ConnectionClosed):
            return call.result()
        call.cancel()  # (or it failed as the link dropped, before we heard: the same)
        if keep:
            self.outbox.append(request)
        return None

    async def drop_connection(self) -> None:
        """Lose the connection (the hardware keeps running on its own)."""
        self.online = False
        self._lost.set()
        if self.reader is not None:
            self.reader.cancel()
        await self._connection.close()

    async def stay_connected(self, leave: asyncio.Event) -> None:
        """Until `leave` is set: when the connection drops (the central system restarted),
        connect again after a delay that doubles up to 30 s, with jitter, then boot, report
        the connectors and replay what was kept meanwhile (the offline queue)."""
        while not leave.is_set():
            leaving = asyncio.ensure_future(leave.wait())
            waits: set[asyncio.Future[Any]] = {leaving}
            if self.reader is not None:
                waits.add(self.reader)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            leaving.cancel()
            if leave.is_set():
                return
            self.connection_ended(self.reader)
            delay = 1.0
            while not leave.is_set():
                try:
                    await self.reconnect()
                    log.info("%s: connected again", self.config.station_id)
                    break
                except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
                    log.info("%s: cannot connect (%s); again in %.0f s", self.config.station_id,
                             exc or type(exc).__name__, delay)
                    self.online = False
                    try:
                        await asyncio.wait_for(leave.wait(), delay * random.uniform(1.0, 1.25))
                    except TimeoutError:
                        pass
                    delay = min(delay * 2, 30.0)

    def watch(self, reader: asyncio.Task[None]) -> None:
        """Read the connection in `reader`; when it ends, the wallbox is offline at once: its
        calls waiting for an answer give up and keep transaction messages for later."""
        self.reader = reader
        reader.add_done_callback(self.connection_ended)

    def connection_ended(self, reader: asyncio.Task[None] | None) -> None:
        if reader is None or reader is not self.reader:
            return  # an earlier connection's reader
        if not reader.cancelled():
            reader.exception()  # the connection's end (ConnectionClosed), seen
        self.online = False
        self._lost.set()

    async def reconnect(self) -> None:
        """Connect again, boot, report status and replay what was kept while offline. Two
        reasons to reconnect at once (a new password, and `stay_connected` seeing the old
        link end) make one connection: whoever comes second finds it up and leaves it."""
        async with self._connecting:
            if self.online and self.reader is not None and not self.reader.done():
                return
            self._connection = await connect_station(self.config, self.tls_context(),
                                                     basic=self.security_profile < 3)
            self._lost = asyncio.Event()
            self.online = True
            self.watch(asyncio.create_task(self.start()))
            await self.boot_and_report()
        kept, self.outbox = self.outbox, []
        for request in kept:
            if callable(request):  # a message that could only be built once back online
                await request()
            else:
                await self.send(request, keep=True)

    # protocol hooks -----------------------------------------------------------------------
    async def boot(self) -> None: ...
    async def heartbeat(self) -> None: ...
    async def send_status(self, connector_id: int, status: str) -> None: ...
    async def authorize(self, tag: str) -> bool:
        raise NotImplementedError
    async def start_transaction(self, session: SimSession, register_wh: float) -> None: ...
    async def send_meter(self, session: SimSession, hw: Connector) -> None: ...
    async def stop_transaction(self, session: SimSession, register_wh: float) -> None: ...
    async def charging_state(self, session: SimSession, state: str) -> None: ...
    async def report_fault(self, connector_id: int, kind: str) -> None: ...
