"""A virtual wallbox: a real OCPP 1.6J or 2.0.1 client over a real WebSocket.

It knows nothing of the server's insides: it connects, boots, reports status,
charges virtual EVs with a hardware model, and answers commands as a charger does.
Handlers never await a call of their own (the reply must go out first): follow-up
messages are sent from tasks.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import ssl
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import ocpp.messages
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake

from cocharge.simulators.hardware import EV, Connector
from cocharge.simulators.profiles import MAX, Profile, composite, from_ocpp, next_change, purpose_of

ocpp.messages.ASYNC_VALIDATION = False
log = logging.getLogger(__name__)

FAULT_STOP_REASONS = {
    "1.6": {"overcurrent": "EmergencyStop", "ground fault": "EmergencyStop",
            "over-temperature": "EmergencyStop"},
    "2.0.1": {"overcurrent": "OvercurrentFault", "ground fault": "GroundFault",
              "over-temperature": "EmergencyStop"},
}
FAULT_CODES_16 = {"overcurrent": "OverCurrentFailure", "ground fault": "GroundFailure",
                  "over-temperature": "HighTemperature"}
FAULT_EVENTS_201 = {"overcurrent": ("OverCurrentProtection", "Operated"),
                    "ground fault": ("RCD", "Tripped"),
                    "over-temperature": ("EVSE", "OverTemperature")}


@dataclass
class SimConfig:
    url: str
    station_id: str
    protocol: str = "1.6"  # or "2.0.1"
    connectors: int = 1
    max_current_a: float = 16
    password: str | None = None
    speed: float = 1.0  # simulated seconds per real second
    meter_interval_s: float = 1.0  # real seconds between meter reports
    vendor: str = "cocharge-sim"
    model: str = "VirtualWallbox"
    # Real seconds a driver waits at a locked bay for the central system to open it.
    bay_wait_s: float = 5.0
    firmware: str = "1.0.0"
    # A firmware update downloads, then fails to install (a broken unit in a campaign).
    firmware_fails: bool = False
    # A new password: refused, or accepted and then used to reconnect (as OCPP asks).
    refuse_password: bool = False
    reconnect_on_password: bool = True
    # Certificates: the organisation its CSRs name (the operator's, as installed), the
    # central system's root it trusts from the factory (PEM), and (1.6, whose profile change
    # keeps the address) its wss:// address for profiles 2 and 3.
    organisation: str = "cocharge"
    ca_pem: str | None = None
    secure_url: str | None = None
    # A display for the driver (messages, the cost); without one, display calls are refused.
    display: bool = True
    # 1 or 3 phases (a 1-phase charger draws on its phase L1 only); the profile purposes it
    # refuses (a "strict" charger, e.g. ("TxDefaultProfile",)).
    phases: int = 3
    refuse_purposes: tuple[str, ...] = ()


class SimClock:
    """Simulated time: starts now, runs `speed` times faster than the wall clock."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._origin = datetime.now(UTC)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self._origin + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def iso(self) -> str:
        return self.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class SimSession:
    connector_id: int
    tag: str
    tx_id: str | int | None = None
    authorized: bool = True
    energy_wh: float = 0.0
    stop_reason: str | None = None
    refused: str | None = None  # why the charger did not start ("Blocked", "bay locked", ...)
    # The transaction's TxProfile as (seconds after start, limit in W), by start (what it
    # holds is in the charger's profiles; this is the view tests read).
    profile: list[tuple[float, float]] = field(default_factory=list)
    start_profile: dict[str, Any] | None = None  # a TxProfile the remote start carried
    tx_start: datetime | None = None  # simulated clock at the transaction's start
    device_s: float = 0.0  # simulated seconds since the transaction started
    t0: float = 0.0  # monotonic time of the transaction's start
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Any] | None = None  # what runs it (power_loss cancels it)



def signature_valid(image: bytes, signature: str, certificate_pem: str) -> bool:
    """What a charger checks before it installs a signed image (SHA-256; RSA or ECDSA)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    try:
        key = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
        raw = base64.b64decode(signature, validate=True)
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, image, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, image, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (ValueError, InvalidSignature):
        return False
    return True


def _hash_data(cert: Any, algorithm: str = "SHA256") -> dict[str, str]:
    """A root certificate's CertificateHashDataType (RFC 6960 hashes), snake_case."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp

    digest: dict[str, hashes.HashAlgorithm] = {"SHA256": hashes.SHA256(),
                                               "SHA384": hashes.SHA384(),
                                               "SHA512": hashes.SHA512()}
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, cert, digest[algorithm]).build()
    return {"hash_algorithm": algorithm, "issuer_name_hash": request.issuer_name_hash.hex(),
            "issuer_key_hash": request.issuer_key_hash.hex(),
            "serial_number": f"{cert.serial_number:x}"}


def _tls_context(roots: list[str], chain: str | None, key_pem: bytes | None) -> ssl.SSLContext:
    """What the charger trusts (its installed central-system roots) and, for profile 3,
    its client certificate."""
    context = ssl.create_default_context(cadata="".join(roots) or None) if roots else \
        ssl.create_default_context()
    if chain and key_pem:
        with tempfile.TemporaryDirectory() as folder:
            cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
            cert_file.write_text(chain)
            key_file.write_bytes(key_pem)
            key_file.chmod(0o600)
            context.load_cert_chain(cert_file, key_file)
    return context


class WallboxMixin:
    """Protocol-neutral behaviour; the protocol classes below supply the messages."""

    config: SimConfig
    if TYPE_CHECKING:  # from the ocpp ChargePoint each protocol class also derives from
        async def call(self, payload: Any) -> Any: ...
        async def start(self) -> None: ...

    def _init_wallbox(self, config: SimConfig) -> None:
        self.config = config
        self.clock = SimClock(config.speed)
        self.hw = {n: Connector(n, max_current_a=config.max_current_a, phases=config.phases)
                   for n in range(1, config.connectors + 1)}
        self.charging_profiles: list[Profile] = []
        # Called with this wallbox at every meter value it sends (a site's checks listen).
        self.meter_listeners: list[Any] = []
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

    def new_password(self, password: str) -> str:
        """A new Basic-auth password (1.6 AuthorizationKey, 2.0.1 BasicAuthPassword): kept,
        then the charger reconnects with it, as the specifications ask. A charger set to
        refuse (`refuse_password`) keeps the old one."""
        if self.config.refuse_password or not 16 <= len(password) <= 40:
            return "Rejected"
        self.config.password = password
        self.password_changes += 1
        if self.config.reconnect_on_password:
            self._spawn(self._reconnect_with_new_password())
        return "Accepted"

    async def _reconnect_with_new_password(self) -> None:
        await asyncio.sleep(0.05)  # our answer goes first
        await self.drop_connection()
        await self.reconnect()

    # certificates and security profiles ----------------------------------------------------

    def csr(self) -> str:
        """A new key and its CSR (common name: the station's identity; organisation: the
        operator's), as A02/A03 and the 1.6 security whitepaper ask."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._pending_key = ec.generate_private_key(ec.SECP256R1())
        request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, self.config.station_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.config.organisation)]))
        return request.sign(self._pending_key, hashes.SHA256()).public_bytes(
            serialization.Encoding.PEM).decode()

    def accept_certificate(self, chain: str) -> bool:
        """A CertificateSigned chain: kept if its leaf is for the key of our last CSR."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            leaf = x509.load_pem_x509_certificates(chain.encode())[0]
        except ValueError:
            return False
        if self._pending_key is None:
            return False
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(serialization.Encoding.DER, spki) != \
                self._pending_key.public_key().public_bytes(serialization.Encoding.DER, spki):
            return False
        self.client_key = self._pending_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        self.client_chain = chain
        self._pending_key = None
        self.certificates_received += 1
        return True

    def install_root(self, kind: str, pem: str) -> str:
        from cryptography import x509

        kind = {"CentralSystemRootCertificate": "CSMSRootCertificate"}.get(kind, kind)
        try:
            x509.load_pem_x509_certificate(pem.encode())
        except ValueError:
            return "Rejected"
        self.roots.setdefault(kind, []).append(pem)
        return "Accepted"

    def installed_roots(self, kinds: list[str]) -> list[dict[str, Any]]:
        from cryptography import x509

        found = []
        for kind in kinds or list(self.roots):
            ours = {"CentralSystemRootCertificate": "CSMSRootCertificate"}.get(kind, kind)
            for pem in self.roots.get(ours, []):
                found.append({"certificate_type": kind, "certificate_hash_data": _hash_data(
                    x509.load_pem_x509_certificate(pem.encode()))})
        return found

    def delete_root(self, hash_data: dict[str, Any]) -> str:
        from cryptography import x509

        for pems in self.roots.values():
            for pem in pems:
                cert = x509.load_pem_x509_certificate(pem.encode())
                if _hash_data(cert, hash_data["hash_algorithm"]) == {
                        k: str(v).lower() if k != "hash_algorithm" else v
                        for k, v in hash_data.items() if k in (
                            "hash_algorithm", "issuer_name_hash", "issuer_key_hash",
                            "serial_number")}:
                    pems.remove(pem)
                    return "Accepted"
        return "NotFound"

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.config.url.startswith("wss"):
            return None
        if self.security_profile == 3:
            return _tls_context(self.roots["CSMSRootCertificate"], self.client_chain,
                                self.client_key)
        return _tls_context(self.roots["CSMSRootCertificate"], None, None)

    async def move_to(self, url: str, profile: int) -> bool:
        """Connect the new way (a new security profile); back to the old way if that fails,
        as a charger falls back to its previous connection profile."""
        old = (self.config.url, self.security_profile)
        await self.drop_connection()
        self.config.url, self.security_profile = url, profile
        try:
            await self.reconnect()
        except (OSError, ssl.SSLError, InvalidHandshake, TimeoutError) as exc:
            log.warning("%s: cannot connect with profile %d (%s): back to the old one",
                        self.config.station_id, profile, exc)
            self.config.url, self.security_profile = old
            await self.reconnect()
            return False
        return True

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
            await self.send_status(session.connector_id, "Available")
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
                session.energy_wh += hw.step(piece, self.limit_w(session))
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

    # charging profiles (cocharge/simulators/profiles.py) -------------------------------------

    def _to_w(self, connector_id: int) -> float:
        hw = self.hw[connector_id]
        return hw.voltage_v * hw.phases

    def install_profile(self, connector_id: int, raw: dict[str, Any]) -> str:
        """SetChargingProfile: Accepted, or Rejected (a refused purpose, no such connector,
        a TxProfile without its transaction)."""
        name = raw["charging_profile_purpose"]
        if name in self.config.refuse_purposes or (
                purpose_of(name) == MAX and any(purpose_of(r) == MAX
                                                for r in self.config.refuse_purposes)):
            return "Rejected"
        if connector_id and connector_id not in self.hw:
            return "Rejected"
        profile = from_ocpp(connector_id, raw)
        if profile.purpose == MAX and connector_id:
            return "Rejected"
        session = self.sessions.get(connector_id) if connector_id else None
        if profile.purpose == "TxProfile":
            if session is None or session.tx_start is None or (
                    profile.tx_id is not None and session.tx_id is not None
                    and str(session.tx_id) != profile.tx_id):
                return "Rejected"
            profile = replace(profile, tx_id=str(session.tx_id) if session.tx_id is not None
                              else profile.tx_id)
        self.charging_profiles = [
            p for p in self.charging_profiles
            if p.id != profile.id and not (p.connector == profile.connector
                                           and p.purpose == profile.purpose
                                           and p.stack_level == profile.stack_level)]
        self.charging_profiles.append(profile)
        if session is not None and profile.purpose == "TxProfile":
            start = 0.0
            if profile.kind == "Absolute" and profile.start is not None and session.tx_start:
                start = (profile.start - session.tx_start).total_seconds()
            to_w = self._to_w(connector_id) if profile.unit == "A" else 1.0
            session.profile = [(start + begin, limit * to_w) for begin, limit in profile.periods]
        return "Accepted"

    def clear_profiles(self, profile_id: int | None, connector_id: int | None,
                       purpose: str | None, stack_level: int | None) -> bool:
        def matches(p: Profile) -> bool:
            if profile_id is not None:
                return p.id == profile_id
            return ((connector_id is None or p.connector == connector_id)
                    and (purpose is None or p.purpose == purpose_of(purpose))
                    and (stack_level is None or p.stack_level == stack_level))
        kept = [p for p in self.charging_profiles if not matches(p)]
        cleared = len(kept) != len(self.charging_profiles)
        self.charging_profiles = kept
        return cleared

    def _tx_profiles_end(self, session: SimSession) -> None:
        self.charging_profiles = [p for p in self.charging_profiles
                                  if not (p.purpose == "TxProfile"
                                          and p.connector == session.connector_id)]

    def limit_a(self, connector_id: int, at: datetime) -> float | None:
        """The composite limit (A) on a connector at a moment."""
        session = self.sessions.get(connector_id)
        tx_start = session.tx_start if session else None
        return composite(self.charging_profiles, connector_id,
                         str(session.tx_id) if session and session.tx_id is not None else None,
                         tx_start, at, max(1, len(self.sessions)), {"W": self._to_w(connector_id)})

    def limit_w(self, session: SimSession) -> float | None:
        if session.tx_start is None:
            return None
        amps = self.limit_a(session.connector_id,
                            session.tx_start + timedelta(seconds=session.device_s))
        return None if amps is None else amps * self._to_w(session.connector_id)

    def next_change_s(self, session: SimSession) -> float | None:
        """Seconds after the transaction's start of the next change of its limit."""
        if session.tx_start is None:
            return None
        t = session.tx_start + timedelta(seconds=session.device_s)
        change = next_change(self.charging_profiles, t, session.tx_start)
        return None if change is None else (change - session.tx_start).total_seconds()

    def composite_schedule(self, connector_id: int, duration: int, unit: str | None
                           ) -> dict[str, Any]:
        """GetCompositeSchedule: the limits from now for `duration` seconds (the hardware's
        maximum where no profile limits), in A or W."""
        start = self.clock.now().replace(microsecond=0)
        hw = self.hw[max(1, connector_id)]
        session = self.sessions.get(connector_id)
        tx_start = session.tx_start if session else None
        to_w = self._to_w(max(1, connector_id))
        periods: list[dict[str, Any]] = []
        t = start
        end = start + timedelta(seconds=duration)
        while t < end:
            if connector_id:
                amps = self.limit_a(connector_id, t)
            else:
                amps = sum((self.limit_a(c, t) or h.max_current_a) for c, h in self.hw.items())
            amps = hw.max_current_a if amps is None else amps
            limit = round(amps * to_w, 1) if unit == "W" else round(amps, 1)
            offset = int((t - start).total_seconds())
            if not periods or periods[-1]["limit"] != limit:
                periods.append({"start_period": offset, "limit": limit})
            change = next_change(self.charging_profiles, t, tx_start)
            if change is None or change <= t:
                break
            t = change
        return {"start": start.isoformat().replace("+00:00", "Z"), "duration": duration,
                "unit": unit or "A", "periods": periods}

    def start_profile(self, connector_id: int, profile: dict[str, Any] | None
                      ) -> dict[str, Any] | None:
        """The TxProfile a remote start carried, installed once the transaction starts."""
        if not profile or profile.get("charging_profile_purpose") != "TxProfile":
            return None
        return profile

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
        if call.done():
            return call.result()
        call.cancel()
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

    async def reconnect(self) -> None:
        """Connect again, boot, report status and replay what was kept while offline."""
        self._connection = await _connect(self.config, self.tls_context(),
                                          basic=self.security_profile < 3)
        self._lost = asyncio.Event()
        self.online = True
        self.reader = asyncio.create_task(self.start())
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


class Wallbox16(WallboxMixin, ChargePoint16):
    def __init__(self, config: SimConfig, connection: ClientConnection) -> None:
        ChargePoint16.__init__(self, config.station_id, connection, response_timeout=30)
        self._init_wallbox(config)
        self.settings = {"HeartbeatInterval": "300", "MeterValueSampleInterval": "60",
                         "NumberOfConnectors": str(config.connectors),
                         "SecurityProfile": str(self.security_profile)}

    async def boot(self) -> None:
        answer = await self.call(call16.BootNotification(
            charge_point_model=self.config.model, charge_point_vendor=self.config.vendor,
            firmware_version=self.firmware))
        self.registration = answer.status
        self.heartbeat_s = answer.interval or 300

    async def heartbeat(self) -> None:
        await self.send(call16.Heartbeat())

    async def send_status(self, connector_id: int, status: str, error_code: str = "NoError") -> None:
        await self.send(call16.StatusNotification(connector_id=connector_id, error_code=error_code,
                                                  status=status, timestamp=self.clock.iso()))

    async def authorize(self, tag: str) -> bool:
        answer = await self.send(call16.Authorize(id_tag=tag))
        if answer is not None:
            self.groups[tag] = answer.id_tag_info.get("parent_id_tag")
        return bool(answer and answer.id_tag_info["status"] == "Accepted")

    async def start_transaction(self, session: SimSession, register_wh: float) -> None:
        reservation = self.hw[session.connector_id].reservation
        request = call16.StartTransaction(
            connector_id=session.connector_id, id_tag=session.tag, meter_start=int(register_wh),
            timestamp=self.clock.iso(), reservation_id=reservation[0] if reservation else None)
        if not self.online:
            # Offline (the local list admitted the tag): charge now; the central system's
            # transaction id comes with the answer once the queued start is delivered, and the
            # transaction's later messages wait behind it.
            async def replay() -> None:
                answer = await self.send(request)
                if answer is not None:
                    session.tx_id = answer.transaction_id
            self.outbox.append(replay)
            return
        answer = await self.send(request)
        if answer is None:
            raise RuntimeError("StartTransaction needs the central system's transaction id")
        session.tx_id = answer.transaction_id
        if answer.id_tag_info["status"] != "Accepted":
            session.stop_reason = "DeAuthorized"

    async def _send_for(self, session: SimSession, build: Any) -> None:
        """A transaction message: built now, or (its transaction id not known yet: started
        offline) when the queued start has been delivered."""
        if session.tx_id is None:
            async def later() -> None:
                await self.send(build(), keep=True)
            self.outbox.append(later)
            return
        await self.send(build(), keep=True)

    async def charging_state(self, session: SimSession, state: str) -> None:
        await self.send_status(session.connector_id, state)

    async def report_fault(self, connector_id: int, kind: str) -> None:
        await self.send_status(connector_id, "Faulted", FAULT_CODES_16[kind])

    async def send_meter(self, session: SimSession, hw: Connector) -> None:
        sampled = [{"timestamp": self.clock.iso(), "sampledValue": [
            {"value": str(int(hw.register_wh)), "measurand": "Energy.Active.Import.Register",
             "unit": "Wh"},
            {"value": f"{hw.power_w:.0f}", "measurand": "Power.Active.Import", "unit": "W"},
            *({"value": f"{hw.current_a:.2f}", "measurand": "Current.Import", "unit": "A",
               "phase": f"L{n}"} for n in range(1, hw.phases + 1)),
            {"value": f"{(hw.ev.soc if hw.ev else 0) * 100:.0f}", "measurand": "SoC",
             "unit": "Percent"}]}]
        await self._send_for(session, lambda: call16.MeterValues(
            connector_id=session.connector_id, transaction_id=session.tx_id,
            meter_value=sampled))

    async def stop_transaction(self, session: SimSession, register_wh: float) -> None:
        at = self.clock.iso()
        await self._send_for(session, lambda: call16.StopTransaction(
            meter_stop=int(register_wh), timestamp=at, transaction_id=session.tx_id,
            reason=session.stop_reason, id_tag=session.tag))

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, connector_id: int | None = None,
                        charging_profile: dict[str, Any] | None = None,
                        **_: Any) -> result16.RemoteStartTransaction:
        n = connector_id or next((c for c in self.hw if c not in self.sessions), None)
        if n is None or n not in self.hw or n in self.sessions or not self.hw[n].operative:
            return result16.RemoteStartTransaction(status="Rejected")
        self._spawn(self.charge(n, id_tag, profile=self.start_profile(n, charging_profile)))
        return result16.RemoteStartTransaction(status="Accepted")

    @on("RemoteStopTransaction")
    def on_remote_stop(self, transaction_id: int) -> result16.RemoteStopTransaction:
        ok = self.request_stop(transaction_id)
        return result16.RemoteStopTransaction(status="Accepted" if ok else "Rejected")

    @on("UnlockConnector")
    def on_unlock(self, connector_id: int) -> result16.UnlockConnector:
        if connector_id not in self.hw:
            return result16.UnlockConnector(status="NotSupported")
        session = self.sessions.get(connector_id)
        if session is not None:
            session.stop_reason = "UnlockCommand"
        self.hw[connector_id].cable_locked = False
        return result16.UnlockConnector(status="Unlocked")

    @on("ChangeAvailability")
    def on_change_availability(self, connector_id: int, type: str) -> result16.ChangeAvailability:
        targets = list(self.hw) if connector_id == 0 else [connector_id]
        return result16.ChangeAvailability(status=self.set_availability(targets, type == "Operative"))

    @on("Reset")
    def on_reset(self, type: str) -> result16.Reset:
        for session in self.sessions.values():
            session.stop_reason = "HardReset" if type == "Hard" else "SoftReset"
        self._spawn(self._after_reset(power_cycle=type == "Hard"))
        return result16.Reset(status="Accepted")

    @on("TriggerMessage")
    def on_trigger(self, requested_message: str, connector_id: int | None = None) -> result16.TriggerMessage:
        senders = {"Heartbeat": self.heartbeat, "BootNotification": self.boot,
                   "StatusNotification": lambda: self.send_status(connector_id or 1, "Available")}
        if requested_message not in senders:
            return result16.TriggerMessage(status="NotImplemented")
        self._spawn(senders[requested_message]())
        return result16.TriggerMessage(status="Accepted")

    @on("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None) -> result16.GetConfiguration:
        wanted = key or list(self.settings)
        known = [{"key": k, "readonly": k == "NumberOfConnectors", "value": self.settings[k]}
                 for k in wanted if k in self.settings]
        unknown = [k for k in wanted if k not in self.settings]
        return result16.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str) -> result16.ChangeConfiguration:
        if key == "AuthorizationKey":
            return result16.ChangeConfiguration(status=self.new_password(value))
        if key == "SecurityProfile":
            return result16.ChangeConfiguration(status=self.change_profile(value))
        if key not in self.settings:
            return result16.ChangeConfiguration(status="NotSupported")
        if key == "NumberOfConnectors":
            return result16.ChangeConfiguration(status="Rejected")
        self.settings[key] = value
        return result16.ChangeConfiguration(status="Accepted")

    def change_profile(self, value: str) -> str:
        """1.6 security whitepaper: a higher profile only, with what it needs in place;
        the charge point then reconnects that way (wss:// at `secure_url` for 2 and 3)."""
        if not value.isdigit() or not 1 <= int(value) <= 3 or int(value) <= self.security_profile:
            return "Rejected"
        profile = int(value)
        url = self.config.url if self.config.url.startswith("wss") else self.config.secure_url
        if url is None or (profile == 3 and self.client_chain is None):
            return "Rejected"
        self.settings["SecurityProfile"] = value
        self._spawn(self._after_answer16(lambda: self.move_to(url, profile)))
        return "Accepted"

    async def _after_answer16(self, work: Any) -> None:
        await asyncio.sleep(0.05)  # our answer goes first
        await work()

    @on("ExtendedTriggerMessage")
    def on_extended_trigger(self, requested_message: str,
                            connector_id: int | None = None) -> result16.ExtendedTriggerMessage:
        if requested_message == "SignChargePointCertificate":
            self._spawn(self._after_answer16(lambda: self.send(call16.SignCertificate(
                csr=self.csr()))))
            return result16.ExtendedTriggerMessage(status="Accepted")
        senders = {"Heartbeat": self.heartbeat, "BootNotification": self.boot,
                   "StatusNotification": lambda: self.send_status(connector_id or 1, "Available")}
        if requested_message not in senders:
            return result16.ExtendedTriggerMessage(status="NotImplemented")
        self._spawn(senders[requested_message]())
        return result16.ExtendedTriggerMessage(status="Accepted")

    @on("CertificateSigned")
    def on_certificate_signed(self, certificate_chain: str) -> result16.CertificateSigned:
        ok = self.accept_certificate(certificate_chain)
        return result16.CertificateSigned(status="Accepted" if ok else "Rejected")

    @on("InstallCertificate")
    def on_install_certificate(self, certificate_type: str,
                               certificate: str) -> result16.InstallCertificate:
        return result16.InstallCertificate(status=self.install_root(certificate_type, certificate))

    @on("GetInstalledCertificateIds")
    def on_get_installed_ids(self, certificate_type: str) -> result16.GetInstalledCertificateIds:
        found = [f["certificate_hash_data"] for f in self.installed_roots([certificate_type])]
        return result16.GetInstalledCertificateIds(status="Accepted" if found else "NotFound",
                                                   certificate_hash_data=found or None)

    @on("DeleteCertificate")
    def on_delete_certificate(self, certificate_hash_data: dict[str, Any]
                              ) -> result16.DeleteCertificate:
        return result16.DeleteCertificate(status=self.delete_root(certificate_hash_data))

    @on("SendLocalList")
    def on_send_local_list(self, list_version: int, update_type: str,
                           local_authorization_list: list[dict[str, Any]] | None = None,
                           **_: Any) -> result16.SendLocalList:
        entries = {e["id_tag"]: ((e["id_tag_info"]["status"], e["id_tag_info"].get("expiry_date"))
                                 if e.get("id_tag_info") else None)
                   for e in local_authorization_list or []}
        return result16.SendLocalList(status=self.apply_local_list(
            list_version, update_type == "Full", entries))

    @on("GetLocalListVersion")
    def on_get_local_list_version(self) -> result16.GetLocalListVersion:
        return result16.GetLocalListVersion(list_version=self.local_list_version)

    @on("UpdateFirmware")
    def on_update_firmware(self, location: str, retrieve_date: str,
                           **_: Any) -> result16.UpdateFirmware:
        async def report(status: str) -> None:
            await self.send(call16.FirmwareStatusNotification(status=status))
        self._spawn(self.update_firmware(location, report))
        return result16.UpdateFirmware()

    @on("SignedUpdateFirmware")
    def on_signed_update_firmware(self, request_id: int, firmware: dict[str, Any],
                                  **_: Any) -> result16.SignedUpdateFirmware:
        async def report(status: str) -> None:
            await self.send(call16.SignedFirmwareStatusNotification(status=status,
                                                                    request_id=request_id))
        self._spawn(self.update_firmware(firmware["location"], report, firmware["signature"],
                                         firmware["signing_certificate"]))
        return result16.SignedUpdateFirmware(status="Accepted")

    @on("GetLog")
    def on_get_log(self, log: dict[str, Any], log_type: str, request_id: int,
                   **_: Any) -> result16.GetLog:
        return result16.GetLog(status="Accepted",
                               filename=self.start_log_upload(log, log_type, request_id))

    @on("GetDiagnostics")
    def on_get_diagnostics(self, location: str, **_: Any) -> result16.GetDiagnostics:
        name = f"{self.config.station_id}-diagnostics.log"
        self._spawn(self._send_diagnostics(location, name))
        return result16.GetDiagnostics(file_name=name)

    async def _send_diagnostics(self, location: str, name: str) -> None:
        await asyncio.sleep(0.05)  # after our answer
        await self.send(call16.DiagnosticsStatusNotification(status="Uploading"))
        ok = await self.upload(location, name, self.log_file())
        await self.send(call16.DiagnosticsStatusNotification(
            status="Uploaded" if ok else "UploadFailed"))

    @on("ClearCache")
    def on_clear_cache(self) -> result16.ClearCache:
        return result16.ClearCache(status="Accepted")

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None,
                         data: str | None = None) -> result16.DataTransfer:
        if vendor_id == "cocharge" and message_id == "CostUpdated":
            if not self.config.display:
                return result16.DataTransfer(status="UnknownMessageId")
            try:
                cost = json.loads(data or "")
                self.costs_shown.setdefault(str(cost["transactionId"]), []).append(
                    str(cost["totalCost"]))
            except (ValueError, KeyError, TypeError):
                return result16.DataTransfer(status="Rejected")
            return result16.DataTransfer(status="Accepted")
        if vendor_id == "cocharge" and message_id == "ShareLock":
            try:
                request = json.loads(data or "")
                ok = self.set_bay_lock(int(request["connectorId"]), bool(request["locked"]))
            except (ValueError, KeyError, TypeError):
                return result16.DataTransfer(status="Rejected")
            return result16.DataTransfer(status="Accepted" if ok else "Rejected")
        if vendor_id == "cocharge":
            return result16.DataTransfer(status="UnknownMessageId")
        return result16.DataTransfer(status="Accepted", data=data)

    @on("ReserveNow")
    def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str, reservation_id: int,
                       **_: Any) -> result16.ReserveNow:
        return result16.ReserveNow(status=self.reserve(connector_id, id_tag, reservation_id, expiry_date))

    @on("CancelReservation")
    def on_cancel_reservation(self, reservation_id: int) -> result16.CancelReservation:
        ok = self.cancel_reservation(reservation_id)
        return result16.CancelReservation(status="Accepted" if ok else "Rejected")

    @on("SetChargingProfile")
    def on_set_charging_profile(self, connector_id: int,
                                cs_charging_profiles: dict[str, Any]) -> result16.SetChargingProfile:
        return result16.SetChargingProfile(status=self.install_profile(connector_id,
                                                                       cs_charging_profiles))

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, id: int | None = None, connector_id: int | None = None,
                                  charging_profile_purpose: str | None = None,
                                  stack_level: int | None = None,
                                  **_: Any) -> result16.ClearChargingProfile:
        cleared = self.clear_profiles(id, connector_id, charging_profile_purpose, stack_level)
        return result16.ClearChargingProfile(status="Accepted" if cleared else "Unknown")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, connector_id: int, duration: int,
                                  charging_rate_unit: str | None = None,
                                  **_: Any) -> result16.GetCompositeSchedule:
        if connector_id and connector_id not in self.hw:
            return result16.GetCompositeSchedule(status="Rejected")
        found = self.composite_schedule(connector_id, duration, charging_rate_unit)
        return result16.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=found["start"],
            charging_schedule={"duration": duration, "start_schedule": found["start"],
                               "charging_rate_unit": found["unit"],
                               "charging_schedule_period": found["periods"]})


class Wallbox201(WallboxMixin, ChargePoint201):
    def __init__(self, config: SimConfig, connection: ClientConnection) -> None:
        ChargePoint201.__init__(self, config.station_id, connection, response_timeout=30)
        self._init_wallbox(config)
        self.settings = {"OCPPCommCtrlr.HeartbeatInterval": "300",
                         "SampledDataCtrlr.TxUpdatedInterval": "60",
                         "OCPPCommCtrlr.NetworkConfigurationPriority": "1",
                         "SecurityCtrlr.SecurityProfile": str(self.security_profile)}
        self._seq = itertools.count()
        # Variable monitors: id -> {component, evse, variable, type, value, severity, ...}
        self.monitors: dict[int, dict[str, Any]] = {}
        self._monitor_ids = itertools.count(1)
        self.monitoring_level = 9
        self._tripped: set[int] = set()  # threshold monitors now beyond their value
        # Slot 1: how it was installed (the URL it connects to now).
        self.network_profiles: dict[int, dict[str, Any]] = {1: {
            "ocpp_csms_url": config.url, "security_profile": self.security_profile}}
        self.customer_data_cleared: list[str] = []

    async def boot(self) -> None:
        answer = await self.call(call201.BootNotification(
            charging_station={"model": self.config.model, "vendor_name": self.config.vendor,
                              "firmware_version": self.firmware},
            reason="PowerUp"))
        self.registration = answer.status
        self.heartbeat_s = answer.interval or 300

    async def heartbeat(self) -> None:
        await self.send(call201.Heartbeat())

    async def send_status(self, connector_id: int, status: str) -> None:
        neutral = {"Preparing": "Occupied", "Charging": "Occupied", "Finishing": "Occupied"}
        await self.send(call201.StatusNotification(
            timestamp=self.clock.iso(), connector_status=neutral.get(status, status),
            evse_id=connector_id, connector_id=1))

    async def authorize(self, tag: str) -> bool:
        answer = await self.send(call201.Authorize(id_token={"id_token": tag, "type": "ISO14443"}))
        if answer is not None:
            self.groups[tag] = (answer.id_token_info.get("group_id_token") or {}).get("id_token")
        return bool(answer and answer.id_token_info["status"] == "Accepted")

    async def charging_state(self, session: SimSession, state: str) -> None:
        await self.send(call201.TransactionEvent(
            event_type="Updated", timestamp=self.clock.iso(), trigger_reason="ChargingStateChanged",
            seq_no=next(self._seq), transaction_info={"transaction_id": session.tx_id,
                                                      "charging_state": state}), keep=True)

    async def report_fault(self, connector_id: int, kind: str) -> None:
        component, variable = FAULT_EVENTS_201[kind]
        await self.send(call201.NotifyEvent(generated_at=self.clock.iso(), seq_no=0, event_data=[{
            "event_id": next(self._seq), "timestamp": self.clock.iso(), "trigger": "Alerting",
            "actual_value": "true", "event_notification_type": "HardWiredNotification",
            "component": {"name": component, "evse": {"id": connector_id}},
            "variable": {"name": variable}}]))
        await self.send_status(connector_id, "Faulted")

    def _register(self, hw: Connector, context: str) -> list[dict[str, Any]]:
        return [{"timestamp": self.clock.iso(), "sampled_value": [
            {"value": round(hw.register_wh, 1), "measurand": "Energy.Active.Import.Register",
             "context": context, "unit_of_measure": {"unit": "Wh"}},
            {"value": round(hw.power_w), "measurand": "Power.Active.Import", "context": context,
             "unit_of_measure": {"unit": "W"}},
            *({"value": round(hw.current_a, 2), "measurand": "Current.Import", "context": context,
               "phase": f"L{n}", "unit_of_measure": {"unit": "A"}}
              for n in range(1, hw.phases + 1))]}]

    async def start_transaction(self, session: SimSession, register_wh: float) -> None:
        session.tx_id = str(uuid.uuid4())
        answer = await self.send(call201.TransactionEvent(
            event_type="Started", timestamp=self.clock.iso(), trigger_reason="Authorized",
            seq_no=next(self._seq), transaction_info={"transaction_id": session.tx_id,
                                                      "charging_state": "Charging"},
            evse={"id": session.connector_id, "connector_id": 1},
            id_token={"id_token": session.tag, "type": "ISO14443"},
            meter_value=self._register(self.hw[session.connector_id], "Transaction.Begin")),
            keep=True)
        if answer and answer.id_token_info and answer.id_token_info["status"] != "Accepted":
            session.stop_reason = "DeAuthorized"

    async def send_meter(self, session: SimSession, hw: Connector) -> None:
        await self.send(call201.TransactionEvent(
            event_type="Updated", timestamp=self.clock.iso(), trigger_reason="MeterValuePeriodic",
            seq_no=next(self._seq), transaction_info={"transaction_id": session.tx_id},
            meter_value=self._register(hw, "Sample.Periodic")), keep=True)
        await self.check_monitors("EVSE", session.connector_id, "Power", hw.power_w,
                                  transaction=True)

    def variable_value(self, component: str, evse_id: int | None, variable: str) -> float | None:
        """The present value of a monitorable variable (None: no such variable here)."""
        if component == "EVSE" and variable == "Power":
            hw = self.hw.get(evse_id or 1)
            return hw.power_w if hw is not None else None
        value = self.settings.get(f"{component}.{variable}")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    async def check_monitors(self, component: str, evse_id: int | None, variable: str,
                             value: float, transaction: bool = False,
                             previous: float | None = None) -> None:
        """Fire NotifyEvent for the monitors this new value trips (thresholds once per
        crossing, a delta when it moved by at least the monitor's value)."""
        events = []
        for monitor_id, m in sorted(self.monitors.items()):
            if (m["component"], m["variable"]) != (component, variable) or (
                    m["evse"] not in (None, evse_id)) or m["severity"] > self.monitoring_level:
                continue
            if m["transaction"] and not transaction:
                continue
            if m["type"] in ("UpperThreshold", "LowerThreshold"):
                beyond = value > m["value"] if m["type"] == "UpperThreshold" else value < m["value"]
                if beyond == (monitor_id in self._tripped):
                    continue
                (self._tripped.add if beyond else self._tripped.discard)(monitor_id)
                fire, cleared = True, not beyond
            elif m["type"] == "Delta":
                fire = previous is not None and abs(value - previous) >= m["value"]
                cleared = False
            else:
                fire, cleared = False, False
            if fire:
                target = {"name": component, **({"evse": {"id": evse_id}} if evse_id else {})}
                events.append({
                    "event_id": next(self._seq), "timestamp": self.clock.iso(),
                    "trigger": "Delta" if m["type"] == "Delta" else "Alerting",
                    "actual_value": f"{value:g}", "cleared": cleared,
                    "event_notification_type": "CustomMonitor", "variable_monitoring_id": monitor_id,
                    "component": target, "variable": {"name": variable}})
        if events:
            await self.send(call201.NotifyEvent(generated_at=self.clock.iso(), seq_no=0,
                                                event_data=events))

    async def stop_transaction(self, session: SimSession, register_wh: float) -> None:
        answer = await self.send(call201.TransactionEvent(
            event_type="Ended", timestamp=self.clock.iso(), trigger_reason="StopAuthorized"
            if session.stop_reason == "Local" else "RemoteStop" if session.stop_reason == "Remote"
            else "EVCommunicationLost", seq_no=next(self._seq),
            transaction_info={"transaction_id": session.tx_id,
                              "stopped_reason": session.stop_reason or "Local"},
            meter_value=self._register(self.hw[session.connector_id], "Transaction.End")), keep=True)
        if answer is not None and answer.total_cost is not None:
            self.total_costs[str(session.tx_id)] = f"{answer.total_cost:.2f}"

    @on("CostUpdated")
    def on_cost_updated(self, total_cost: float, transaction_id: str,
                        **_: Any) -> result201.CostUpdated:
        self.costs_shown.setdefault(transaction_id, []).append(f"{total_cost:.2f}")
        return result201.CostUpdated()

    @on("SetDisplayMessage")
    def on_set_display_message(self, message: dict[str, Any],
                               **_: Any) -> result201.SetDisplayMessage:
        if not self.config.display:
            return result201.SetDisplayMessage(status="Rejected")
        if message["message"].get("format") not in ("UTF8", "ASCII"):
            return result201.SetDisplayMessage(status="NotSupportedMessageFormat")
        if message.get("transaction_id") and not any(
                str(s.tx_id) == message["transaction_id"] for s in self.sessions.values()):
            return result201.SetDisplayMessage(status="UnknownTransaction")
        self.display[message["id"]] = message
        return result201.SetDisplayMessage(status="Accepted")

    @on("GetDisplayMessages")
    def on_get_display_messages(self, request_id: int, id: list[int] | None = None,
                                priority: str | None = None, state: str | None = None,
                                **_: Any) -> result201.GetDisplayMessages:
        found = [m for m in self.display.values()
                 if (not id or m["id"] in id) and (priority is None or m["priority"] == priority)
                 and (state is None or m.get("state") == state)]
        if not found:
            return result201.GetDisplayMessages(status="Unknown")
        self._spawn(self._after_answer(lambda: self.send(call201.NotifyDisplayMessages(
            request_id=request_id, message_info=found))))
        return result201.GetDisplayMessages(status="Accepted")

    @on("ClearDisplayMessage")
    def on_clear_display_message(self, id: int, **_: Any) -> result201.ClearDisplayMessage:
        if self.display.pop(id, None) is None:
            return result201.ClearDisplayMessage(status="Unknown")
        return result201.ClearDisplayMessage(status="Accepted")

    def shown(self) -> list[str]:
        """What the display shows now, as text."""
        return [m["message"]["content"] for m in self.display.values()]

    @on("RequestStartTransaction")
    def on_request_start(self, id_token: dict[str, Any], remote_start_id: int,
                         evse_id: int | None = None, charging_profile: dict[str, Any] | None = None,
                         **_: Any) -> result201.RequestStartTransaction:
        n = evse_id or next((c for c in self.hw if c not in self.sessions), None)
        if n is None or n not in self.hw or n in self.sessions or not self.hw[n].operative:
            return result201.RequestStartTransaction(status="Rejected")
        self._spawn(self.charge(n, id_token["id_token"],
                                profile=self.start_profile(n, charging_profile)))
        return result201.RequestStartTransaction(status="Accepted")

    @on("RequestStopTransaction")
    def on_request_stop(self, transaction_id: str, **_: Any) -> result201.RequestStopTransaction:
        ok = self.request_stop(transaction_id)
        return result201.RequestStopTransaction(status="Accepted" if ok else "Rejected")

    @on("UnlockConnector")
    def on_unlock(self, evse_id: int, connector_id: int, **_: Any) -> result201.UnlockConnector:
        if evse_id not in self.hw:
            return result201.UnlockConnector(status="UnknownConnector")
        if evse_id in self.sessions:
            return result201.UnlockConnector(status="OngoingAuthorizedTransaction")
        self.hw[evse_id].cable_locked = False
        return result201.UnlockConnector(status="Unlocked")

    @on("ChangeAvailability")
    def on_change_availability(self, operational_status: str, evse: dict[str, Any] | None = None,
                               **_: Any) -> result201.ChangeAvailability:
        targets = list(self.hw) if not evse else [evse["id"]]
        return result201.ChangeAvailability(
            status=self.set_availability(targets, operational_status == "Operative"))

    @on("Reset")
    def on_reset(self, type: str, evse_id: int | None = None,
                 **_: Any) -> result201.Reset:
        self.last_reset = (type, evse_id)
        if evse_id is not None:  # one EVSE: its session ends, the station stays up
            session = self.sessions.get(evse_id)
            if session is not None and type == "Immediate":
                session.stop_reason = "ImmediateReset"
            return result201.Reset(status="Accepted" if session is None or type == "Immediate"
                                   else "Scheduled")
        if self.sessions and type == "OnIdle":
            self._spawn(self._after_reset())
            return result201.Reset(status="Scheduled")
        for session in self.sessions.values():
            session.stop_reason = "ImmediateReset"
        self._spawn(self._after_reset(power_cycle=True))
        return result201.Reset(status="Accepted")

    @on("ReserveNow")
    def on_reserve_now(self, id: int, expiry_date_time: str, id_token: dict[str, Any],
                       evse_id: int | None = None, **_: Any) -> result201.ReserveNow:
        return result201.ReserveNow(
            status=self.reserve(evse_id, id_token["id_token"], id, expiry_date_time))

    @on("CancelReservation")
    def on_cancel_reservation(self, reservation_id: int, **_: Any) -> result201.CancelReservation:
        ok = self.cancel_reservation(reservation_id)
        return result201.CancelReservation(status="Accepted" if ok else "Rejected")

    @on("SetChargingProfile")
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any],
                                **_: Any) -> result201.SetChargingProfile:
        return result201.SetChargingProfile(status=self.install_profile(evse_id, charging_profile))

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, charging_profile_id: int | None = None,
                                  charging_profile_criteria: dict[str, Any] | None = None,
                                  **_: Any) -> result201.ClearChargingProfile:
        criteria = charging_profile_criteria or {}
        cleared = self.clear_profiles(charging_profile_id, criteria.get("evse_id"),
                                      criteria.get("charging_profile_purpose"),
                                      criteria.get("stack_level"))
        return result201.ClearChargingProfile(status="Accepted" if cleared else "Unknown")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, duration: int, evse_id: int,
                                  charging_rate_unit: str | None = None,
                                  **_: Any) -> result201.GetCompositeSchedule:
        if evse_id and evse_id not in self.hw:
            return result201.GetCompositeSchedule(status="Rejected")
        found = self.composite_schedule(evse_id, duration, charging_rate_unit)
        return result201.GetCompositeSchedule(status="Accepted", schedule={
            "evse_id": evse_id, "duration": duration, "schedule_start": found["start"],
            "charging_rate_unit": found["unit"], "charging_schedule_period": found["periods"]})

    @on("GetChargingProfiles")
    def on_get_charging_profiles(self, request_id: int, charging_profile: dict[str, Any],
                                 evse_id: int | None = None,
                                 **_: Any) -> result201.GetChargingProfiles:
        wanted = charging_profile
        found = [p for p in self.charging_profiles
                 if (evse_id is None or p.connector == evse_id)
                 and (wanted.get("charging_profile_purpose") is None
                      or p.purpose == purpose_of(wanted["charging_profile_purpose"]))
                 and (wanted.get("stack_level") is None or p.stack_level == wanted["stack_level"])
                 and (not wanted.get("charging_profile_id") or p.id in wanted["charging_profile_id"])
                 and (not wanted.get("charging_limit_source")
                      or "CSO" in wanted["charging_limit_source"])]
        if not found:
            return result201.GetChargingProfiles(status="NoProfiles")
        by_evse: dict[int, list[Profile]] = {}
        for p in found:
            by_evse.setdefault(p.connector, []).append(p)

        async def report() -> None:
            for n, (evse, profiles) in enumerate(sorted(by_evse.items())):
                await self.send(call201.ReportChargingProfiles(
                    request_id=request_id, charging_limit_source="CSO", evse_id=evse,
                    charging_profile=[self._profile_201(p) for p in profiles],
                    tbc=n < len(by_evse) - 1))
        self._spawn(self._after_answer(report))
        return result201.GetChargingProfiles(status="Accepted")

    def _profile_201(self, p: Profile) -> dict[str, Any]:
        schedule: dict[str, Any] = {"id": p.id, "charging_rate_unit": p.unit,
                                    "charging_schedule_period": [
                                        {"start_period": int(b), "limit": limit}
                                        for b, limit in p.periods]}
        if p.start is not None:
            schedule["start_schedule"] = p.start.isoformat().replace("+00:00", "Z")
        if p.duration is not None:
            schedule["duration"] = int(p.duration)
        purpose = "ChargingStationMaxProfile" if p.purpose == MAX else p.purpose
        found: dict[str, Any] = {"id": p.id, "stack_level": p.stack_level,
                                 "charging_profile_purpose": purpose,
                                 "charging_profile_kind": p.kind, "charging_schedule": [schedule]}
        if p.tx_id is not None and p.purpose == "TxProfile":
            found["transaction_id"] = p.tx_id
        return found

    @on("TriggerMessage")
    def on_trigger(self, requested_message: str, evse: dict[str, Any] | None = None,
                   **_: Any) -> result201.TriggerMessage:
        senders = {"Heartbeat": self.heartbeat, "BootNotification": self.boot,
                   "StatusNotification": lambda: self.send_status((evse or {}).get("id", 1), "Available"),
                   "SignChargingStationCertificate": lambda: self._after_answer(
                       lambda: self.send(call201.SignCertificate(
                           csr=self.csr(), certificate_type="ChargingStationCertificate")))}
        if requested_message not in senders:
            return result201.TriggerMessage(status="NotImplemented")
        self._spawn(senders[requested_message]())
        return result201.TriggerMessage(status="Accepted")

    async def switch_network(self) -> bool:
        """After a reset: connect by the first profile in NetworkConfigurationPriority if
        that is not how we are connected (B10); False if nothing changed."""
        first = self.settings["OCPPCommCtrlr.NetworkConfigurationPriority"].split(",")[0]
        profile = self.network_profiles.get(int(first)) if first.strip().isdigit() else None
        if profile is None or (profile["ocpp_csms_url"], profile["security_profile"]) == (
                self.config.url, self.security_profile):
            return False
        moved = await self.move_to(profile["ocpp_csms_url"], profile["security_profile"])
        if moved:
            self.settings["SecurityCtrlr.SecurityProfile"] = str(self.security_profile)
        return True

    @on("CertificateSigned")
    def on_certificate_signed(self, certificate_chain: str, certificate_type: str | None = None,
                              **_: Any) -> result201.CertificateSigned:
        ok = certificate_type in (None, "ChargingStationCertificate") and \
            self.accept_certificate(certificate_chain)
        return result201.CertificateSigned(status="Accepted" if ok else "Rejected")

    @on("InstallCertificate")
    def on_install_certificate(self, certificate_type: str, certificate: str,
                               **_: Any) -> result201.InstallCertificate:
        return result201.InstallCertificate(status=self.install_root(certificate_type,
                                                                     certificate))

    @on("GetInstalledCertificateIds")
    def on_get_installed_ids(self, certificate_type: list[str] | None = None,
                             **_: Any) -> result201.GetInstalledCertificateIds:
        found = self.installed_roots(certificate_type or [])
        return result201.GetInstalledCertificateIds(
            status="Accepted" if found else "NotFound", certificate_hash_data_chain=found or None)

    @on("DeleteCertificate")
    def on_delete_certificate(self, certificate_hash_data: dict[str, Any],
                              **_: Any) -> result201.DeleteCertificate:
        return result201.DeleteCertificate(status=self.delete_root(certificate_hash_data))

    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> result201.GetVariables:
        results = []
        for item in get_variable_data:
            key = f"{item['component']['name']}.{item['variable']['name']}"
            entry = {"component": item["component"], "variable": item["variable"]}
            if key in self.settings:
                entry.update(attribute_status="Accepted", attribute_value=self.settings[key])
            else:
                entry.update(attribute_status="UnknownVariable")
            results.append(entry)
        return result201.GetVariables(get_variable_result=results)

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> result201.SetVariables:
        results = []
        for item in set_variable_data:
            key = f"{item['component']['name']}.{item['variable']['name']}"
            evse = (item["component"].get("evse") or {}).get("id")
            if key == "ShareLock.Locked":
                value = str(item["attribute_value"]).lower()
                ok = value in ("true", "false") and self.set_bay_lock(evse or 1, value == "true")
                status = "Accepted" if ok else "Rejected"
            elif key == "SecurityCtrlr.BasicAuthPassword":
                status = self.new_password(str(item["attribute_value"]))
            else:
                status = "Accepted" if key in self.settings else "UnknownVariable"
            if status == "Accepted" and key in self.settings:
                before = self.variable_value(item["component"]["name"], None,
                                             item["variable"]["name"])
                self.settings[key] = item["attribute_value"]
                after = self.variable_value(item["component"]["name"], None,
                                            item["variable"]["name"])
                if after is not None:
                    component, variable = item["component"]["name"], item["variable"]["name"]
                    self._spawn(self._after_answer(lambda c=component, v=variable, a=after,
                                                   b=before: self.check_monitors(
                                                       c, None, v, a, previous=b)))
            results.append({"attribute_status": status, "component": item["component"],
                            "variable": item["variable"]})
        return result201.SetVariables(set_variable_result=results)

    async def _after_answer(self, work: Any) -> None:
        await asyncio.sleep(0.05)  # our answer goes first
        await work()

    @on("ClearCache")
    def on_clear_cache(self, **_: Any) -> result201.ClearCache:
        return result201.ClearCache(status="Accepted")

    @on("SendLocalList")
    def on_send_local_list(self, version_number: int, update_type: str,
                           local_authorization_list: list[dict[str, Any]] | None = None,
                           **_: Any) -> result201.SendLocalList:
        entries = {e["id_token"]["id_token"]: (
            (e["id_token_info"]["status"], e["id_token_info"].get("cache_expiry_date_time"))
            if e.get("id_token_info") else None) for e in local_authorization_list or []}
        return result201.SendLocalList(status=self.apply_local_list(
            version_number, update_type == "Full", entries))

    @on("GetLocalListVersion")
    def on_get_local_list_version(self, **_: Any) -> result201.GetLocalListVersion:
        return result201.GetLocalListVersion(version_number=self.local_list_version)

    @on("UpdateFirmware")
    def on_update_firmware(self, request_id: int, firmware: dict[str, Any],
                           **_: Any) -> result201.UpdateFirmware:
        async def report(status: str) -> None:
            await self.send(call201.FirmwareStatusNotification(status=status,
                                                               request_id=request_id))
        self._spawn(self.update_firmware(firmware["location"], report, firmware.get("signature"),
                                         firmware.get("signing_certificate")))
        return result201.UpdateFirmware(status="Accepted")

    @on("GetTransactionStatus")
    def on_get_transaction_status(self, transaction_id: str | None = None,
                                  **_: Any) -> result201.GetTransactionStatus:
        queued = bool(self.outbox)
        if transaction_id is None:
            return result201.GetTransactionStatus(messages_in_queue=queued)
        ongoing = any(s.tx_id == transaction_id for s in self.sessions.values())
        return result201.GetTransactionStatus(messages_in_queue=queued, ongoing_indicator=ongoing)

    @on("GetLog")
    def on_get_log(self, log: dict[str, Any], log_type: str, request_id: int,
                   **_: Any) -> result201.GetLog:
        return result201.GetLog(status="Accepted",
                                filename=self.start_log_upload(log, log_type, request_id))

    @on("GetBaseReport")
    def on_get_base_report(self, request_id: int, report_base: str,
                           **_: Any) -> result201.GetBaseReport:
        self._spawn(self._notify_report(request_id, report_base))
        return result201.GetBaseReport(status="Accepted")

    def device_model(self, report_base: str) -> list[dict[str, Any]]:
        """The sim's components and variables, as NotifyReport reports them."""
        items = []
        for key, value in sorted(self.settings.items()):
            component, variable = key.split(".", 1)
            items.append({"component": {"name": component}, "variable": {"name": variable},
                          "variable_attribute": [{"type": "Actual", "value": value,
                                                  "mutability": "ReadWrite"}],
                          "variable_characteristics": {"data_type": "integer",
                                                       "supports_monitoring": False}})
        if report_base == "ConfigurationInventory":
            return items
        items.append({"component": {"name": "ChargingStation"}, "variable": {"name": "Model"},
                      "variable_attribute": [{"type": "Actual", "value": self.config.model,
                                              "mutability": "ReadOnly"}],
                      "variable_characteristics": {"data_type": "string",
                                                   "supports_monitoring": False}})
        max_w = str(round(self.config.max_current_a * 230 * 3))
        for evse_id in range(1, self.config.connectors + 1):
            items.append({"component": {"name": "EVSE", "evse": {"id": evse_id}},
                          "variable": {"name": "Power"},
                          "variable_attribute": [{"type": "MaxSet", "value": max_w,
                                                  "mutability": "ReadOnly"}],
                          "variable_characteristics": {"unit": "W", "data_type": "decimal",
                                                       "supports_monitoring": True}})
        return items

    async def _notify_report(self, request_id: int, report_base: str,
                             items: list[dict[str, Any]] | None = None) -> None:
        await asyncio.sleep(0.05)  # after our answer to GetBaseReport / GetReport
        items = items if items is not None else self.device_model(report_base)
        parts = [p for p in (items[: len(items) // 2], items[len(items) // 2:]) if p]
        for seq_no, part in enumerate(parts):
            await self.send(call201.NotifyReport(
                request_id=request_id, generated_at=self.clock.iso(), seq_no=seq_no,
                report_data=part, tbc=seq_no < len(parts) - 1))

    @on("GetReport")
    def on_get_report(self, request_id: int, component_variable: list[dict[str, Any]] | None = None,
                      component_criteria: list[str] | None = None,
                      **_: Any) -> result201.GetReport:
        items = self.report_items(component_variable, component_criteria)
        if not items:
            return result201.GetReport(status="EmptyResultSet")
        self._spawn(self._notify_report(request_id, "", items))
        return result201.GetReport(status="Accepted")

    def report_items(self, wanted: list[dict[str, Any]] | None,
                     criteria: list[str] | None) -> list[dict[str, Any]]:
        """The device model filtered as GetReport asks (every component here is Active,
        Available and Enabled; none has a Problem)."""
        items = self.device_model("FullInventory")
        if criteria and not set(criteria) & {"Active", "Available", "Enabled"}:
            return []

        def picked(item: dict[str, Any]) -> bool:
            for w in wanted or []:
                if w["component"]["name"] != item["component"]["name"]:
                    continue
                evse = (w["component"].get("evse") or {}).get("id")
                if evse is not None and evse != (item["component"].get("evse") or {}).get("id"):
                    continue
                if w.get("variable") is None or w["variable"]["name"] == item["variable"]["name"]:
                    return True
            return not wanted
        return [item for item in items if picked(item)]

    @on("SetNetworkProfile")
    def on_set_network_profile(self, configuration_slot: int, connection_data: dict[str, Any],
                               **_: Any) -> result201.SetNetworkProfile:
        # A real station refuses a slot it does not have, and a profile below its own.
        if not 1 <= configuration_slot <= 3 or connection_data["security_profile"] < (
                2 if self.config.url.startswith("wss") else 1):
            return result201.SetNetworkProfile(status="Rejected")
        if connection_data["security_profile"] == 3 and self.client_chain is None:
            return result201.SetNetworkProfile(status="Rejected")  # no certificate to use
        self.network_profiles[configuration_slot] = connection_data
        return result201.SetNetworkProfile(status="Accepted")

    @on("SetVariableMonitoring")
    def on_set_variable_monitoring(self, set_monitoring_data: list[dict[str, Any]],
                                   **_: Any) -> result201.SetVariableMonitoring:
        results = []
        for item in set_monitoring_data:
            component, variable = item["component"], item["variable"]
            evse = (component.get("evse") or {}).get("id")
            known = self.variable_value(component["name"], evse, variable["name"]) is not None
            result = {"type": item["type"], "severity": item["severity"],
                      "component": component, "variable": variable}
            if not known:
                result["status"] = ("UnknownVariable" if component["name"] in
                                    {k.split(".")[0] for k in self.settings} | {"EVSE"}
                                    else "UnknownComponent")
            elif item["type"] == "PeriodicClockAligned":
                result["status"] = "UnsupportedMonitorType"
            elif item.get("id") is not None and item["id"] not in self.monitors:
                result["status"] = "Rejected"
            else:
                monitor_id = item.get("id") or next(self._monitor_ids)
                self.monitors[monitor_id] = {
                    "component": component["name"], "evse": evse, "variable": variable["name"],
                    "type": item["type"], "value": float(item["value"]),
                    "severity": item["severity"], "transaction": bool(item.get("transaction"))}
                self._tripped.discard(monitor_id)
                result.update(status="Accepted", id=monitor_id)
            results.append(result)
        return result201.SetVariableMonitoring(set_monitoring_result=results)

    @on("SetMonitoringBase")
    def on_set_monitoring_base(self, monitoring_base: str, **_: Any) -> result201.SetMonitoringBase:
        if monitoring_base != "All":  # the custom monitors go; this sim has no preconfigured ones
            self.monitors.clear()
            self._tripped.clear()
        return result201.SetMonitoringBase(status="Accepted")

    @on("SetMonitoringLevel")
    def on_set_monitoring_level(self, severity: int, **_: Any) -> result201.SetMonitoringLevel:
        if not 0 <= severity <= 9:
            return result201.SetMonitoringLevel(status="Rejected")
        self.monitoring_level = severity
        return result201.SetMonitoringLevel(status="Accepted")

    @on("ClearVariableMonitoring")
    def on_clear_variable_monitoring(self, id: list[int],
                                     **_: Any) -> result201.ClearVariableMonitoring:
        results = []
        for monitor_id in id:
            found = self.monitors.pop(monitor_id, None) is not None
            self._tripped.discard(monitor_id)
            results.append({"id": monitor_id, "status": "Accepted" if found else "NotFound"})
        return result201.ClearVariableMonitoring(clear_monitoring_result=results)

    @on("GetMonitoringReport")
    def on_get_monitoring_report(self, request_id: int,
                                 component_variable: list[dict[str, Any]] | None = None,
                                 monitoring_criteria: list[str] | None = None,
                                 **_: Any) -> result201.GetMonitoringReport:
        kinds = {"ThresholdMonitoring": {"UpperThreshold", "LowerThreshold"},
                 "DeltaMonitoring": {"Delta"}, "PeriodicMonitoring": {"Periodic"}}
        allowed = set().union(*(kinds[c] for c in monitoring_criteria)) if monitoring_criteria \
            else {t for k in kinds.values() for t in k}
        names = {(w["component"]["name"], (w.get("variable") or {}).get("name"))
                 for w in component_variable or []}
        chosen = {i: m for i, m in self.monitors.items() if m["type"] in allowed and (
            not names or (m["component"], m["variable"]) in names
            or (m["component"], None) in names)}
        if not chosen:
            return result201.GetMonitoringReport(status="EmptyResultSet")
        self._spawn(self._notify_monitoring_report(request_id, chosen))
        return result201.GetMonitoringReport(status="Accepted")

    async def _notify_monitoring_report(self, request_id: int,
                                        chosen: dict[int, dict[str, Any]]) -> None:
        await asyncio.sleep(0.05)
        items = [{"component": {"name": m["component"],
                                **({"evse": {"id": m["evse"]}} if m["evse"] else {})},
                  "variable": {"name": m["variable"]},
                  "variable_monitoring": [{"id": i, "transaction": m["transaction"],
                                           "value": m["value"], "type": m["type"],
                                           "severity": m["severity"]}]}
                 for i, m in sorted(chosen.items())]
        for seq_no, item in enumerate(items):  # one monitor per part: tbc until the last
            await self.send(call201.NotifyMonitoringReport(
                request_id=request_id, seq_no=seq_no, generated_at=self.clock.iso(),
                monitor=[item], tbc=seq_no < len(items) - 1))

    @on("CustomerInformation")
    def on_customer_information(self, request_id: int, report: bool, clear: bool,
                                id_token: dict[str, Any] | None = None,
                                customer_identifier: str | None = None,
                                customer_certificate: dict[str, Any] | None = None,
                                **_: Any) -> result201.CustomerInformation:
        if id_token is None and customer_identifier is None and customer_certificate is None:
            return result201.CustomerInformation(status="Invalid")
        tag = (id_token or {}).get("id_token") or customer_identifier or ""
        lines = []
        if tag in self.local_list:
            expiry = self.local_list[tag]
            lines.append(f"local list: {tag} until {expiry.isoformat() if expiry else 'no expiry'}")
        for done in self.finished:
            if done.tag == tag:
                lines.append(f"session {done.tx_id} on EVSE {done.connector_id}")
        if clear:
            self.local_list.pop(tag, None)
            for done in self.finished:
                if done.tag == tag:
                    done.tag = ""
            self.customer_data_cleared.append(tag)
        if report:
            text = "\n".join(lines) or f"no data held for {tag}"
            if clear:
                text += "\ncleared"
            self._spawn(self._notify_customer(request_id, text))
        return result201.CustomerInformation(status="Accepted")

    async def _notify_customer(self, request_id: int, text: str) -> None:
        await asyncio.sleep(0.05)
        parts = [text[i:i + 512] for i in range(0, len(text), 512)] or [""]
        for seq_no, part in enumerate(parts):
            await self.send(call201.NotifyCustomerInformation(
                data=part, seq_no=seq_no, generated_at=self.clock.iso(), request_id=request_id,
                tbc=seq_no < len(parts) - 1))

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: Any = None,
                         **_: Any) -> result201.DataTransfer:
        return result201.DataTransfer(status="Accepted", data=data)


Wallbox = Wallbox16 | Wallbox201


async def _connect(config: SimConfig, tls: ssl.SSLContext | None = None,
                   basic: bool = True) -> ClientConnection:
    headers = {}
    if config.password and basic:  # profile 3: the client certificate instead
        token = base64.b64encode(f"{config.station_id}:{config.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    subprotocol = "ocpp1.6" if config.protocol == "1.6" else "ocpp2.0.1"
    url = config.url.rstrip("/") + "/" + config.station_id
    if tls is None and url.startswith("wss"):
        tls = _tls_context([config.ca_pem] if config.ca_pem else [], None, None)
    return await connect(url, subprotocols=[subprotocol],  # type: ignore[list-item]
                         additional_headers=headers, compression=None, open_timeout=10,
                         ssl=tls)


async def open_wallbox(config: SimConfig) -> tuple[Wallbox, asyncio.Task[None]]:
    """Connect, start reading, boot and report status; returns the wallbox and its reader task."""
    connection = await _connect(config)
    box: Wallbox = (Wallbox16 if config.protocol == "1.6" else Wallbox201)(config, connection)
    box.reader = asyncio.create_task(box.start())
    await box.boot_and_report()
    return box, box.reader


async def close_wallbox(box: Wallbox, reader: asyncio.Task[None] | None = None) -> None:
    for task in list(box._tasks):
        task.cancel()
    for reading in (reader, box.reader):
        if reading is not None:
            reading.cancel()
    await box._connection.close()
