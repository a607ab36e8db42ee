"""The gateway process: the charger-facing WebSocket server and the registry of connections.

Stations connect to `ws://HOST:PORT/<anything>/<station_id>` offering `ocpp2.0.1`
and/or `ocpp1.6`; the server picks by its own preference order. A handshake with no
supported subprotocol completes without one and is then closed (1002), as OCPP-J asks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import os
import random
import secrets
import socket
import ssl
import time
from decimal import Decimal
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from cocharge.config import GatewaySettings
from cocharge.gateway import proxy
from cocharge.gateway.connection import StationConnection
from cocharge.gateway.fastpath import FastConnection
from cocharge.gateway.guard import AuthGuard, retry_after
from cocharge.gateway.metrics import GatewayMetrics
from cocharge.gateway.quirks import load_quirks
from cocharge.gateway.uploads import UploadServer
from cocharge.gateway.v16 import V16Connection
from cocharge.gateway.v21 import V21Connection
from cocharge.gateway.v201 import V201Connection
from cocharge.load.manager import LoadManager
from cocharge.settlement.settle import SettlementDefaults, Settler
from cocharge.stations import ca, pairing
from cocharge.stations.certificates import revoked_serials
from cocharge.stations.commands import (
    Command,
    CommandFailed,
    CommandRejected,
    CommandResult,
    RotatePassword,
)
from cocharge.stations.control import SharingController
from cocharge.stations.events import Admission, StationNotice
from cocharge.stations.observer import StationObserver
from cocharge.stations.service import StationAccess, StationService
from cocharge.store.db import utcnow
from cocharge.store.schema import nodes, stations

# A handshake that has not finished within this long is forgotten (websockets' open_timeout).
HANDSHAKE_TIMEOUT_S = 10.0
# The longest station id (the registry's column; OCPP 2.0.1 itself allows 48 characters).
MAX_STATION_ID = 64

log = logging.getLogger(__name__)

# Server preference order: the newer protocol first.
SUBPROTOCOLS: dict[str, type[StationConnection]] = {
    "ocpp2.1": V21Connection,
    "ocpp2.0.1": V201Connection,
    "ocpp1.6": V16Connection,
}


def station_id_from_path(path: str) -> str | None:
    """The last non-empty path segment, URL-decoded (`/ocpp/CP%201` → `CP 1`)."""
    segments = [s for s in urlsplit(path).path.split("/") if s]
    return unquote(segments[-1]) if segments else None


def _basic_credentials(headers: Headers) -> tuple[str, str] | None:
    value = headers.get("Authorization")
    if not value or not value.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def remote_key(connection: ServerConnection) -> str:
    """The address password failures are counted against: the IPv4 address, or the IPv6
    /64 (one household or site gets a whole /64)."""
    address = connection.remote_address
    host = str(address[0]) if address else "unknown"
    if ":" in host:
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_network(f"{host.split('%')[0]}/64", strict=False))
    return host


def _unauthorized(text: str) -> Response:
    return _response(HTTPStatus.UNAUTHORIZED, text,
                     {"WWW-Authenticate": 'Basic realm="cocharge", charset="UTF-8"'})


def _response(status: HTTPStatus, text: str, extra: dict[str, str] | None = None) -> Response:
    headers = Headers({"Content-Type": "text/plain; charset=utf-8", **(extra or {})})
    body = (text + "\n").encode()
    headers["Content-Length"] = str(len(body))
    return Response(status.value, status.phrase, headers, body)


class Gateway:
    """Owns the listening socket, the live connections and the stations service."""

    def __init__(self, engine: AsyncEngine, settings: GatewaySettings,
                 tls: ssl.SSLContext | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.tls = tls
        self.service = StationService(engine, settings)
        self.metrics = GatewayMetrics()  # /metrics (serve --metrics-port)
        self.metrics.attach(self.service.journal)
        self.quirks = load_quirks(settings.quirks_file)
        self.guard = AuthGuard(settings)
        self.uploads = UploadServer(engine, settings, tls)
        self._held: dict[str, int] = {}  # address -> refused attempts held (tarpit)
        self.connections: dict[str, StationConnection] = {}
        self.control = SharingController(engine, settings, self.connection)
        self.service.control = self.control
        self.control.start_check = self.service.start_refusal
        self.control.journal = self.service.journal
        self.settler = Settler(engine, SettlementDefaults(
            Decimal(settings.price_fen_per_kwh) / 100, settings.idle_fee,
            charger_cost_tolerance_fen=settings.charger_cost_tolerance_fen))
        self.service.settler = self.settler
        self.control.overstay_over = self.settler.submit
        self.load = LoadManager(engine, settings, self.connection, self._station_size,
                                self.control.cutoff_offset)
        self.load.booked = self.control.booked
        self.load.owner_of = self.control.owner_of
        self.service.load = self.control.load = self.load
        self.observer = StationObserver()
        self.certificates = self.service.certificates
        self.certificates.authority = ca.load(settings.ca_dir) if settings.ca_dir else None
        self.certificates.send = self._command
        self.certificates.online = lambda station_id: station_id in self.connections
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        # Nodes the broker said are offline (their last will), until they say online.
        self.gone_nodes: set[str] = set()
        self._release_reads = asyncio.Semaphore(4)
        # Set when several nodes share a broker: forwards a command to the node holding a station.
        self.router: Any = None
        self._server: Server | None = None
        self._tls_server: Server | None = None  # the wss:// listener beside a plain one
        # Handshakes in progress: connection -> (station, access, monotonic start).
        self._access: dict[int, tuple[str, StationAccess, float]] = {}
        self.refused_busy = 0  # connections answered 503 (handshake bound reached)
        self._releases: set[asyncio.Task[None]] = set()  # other nodes told to let go

    def set_observer(self, observer: StationObserver) -> None:
        """Who is told what happens at the stations (the MQTT bridge)."""
        self.observer = self.service.observer = self.control.observer = observer

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int | None:
        """The port of the wss:// listener: the one port when it is TLS, else the second."""
        if self._tls_server is not None:
            return int(self._tls_server.sockets[0].getsockname()[1])
        return self.port if self.tls is not None else None

    def _station_size(self, station_id: str) -> tuple[int, int | None]:
        """(connectors, max power W) of a registered station, from memory."""
        record = self.service.directory.stations.get(station_id)
        return (record.connectors, record.max_power_w) if record else (1, None)

    async def _command(self, station_id: str, command: Command) -> CommandResult:
        """A command to a station connected here (the certificate keeper's way out)."""
        connection = self.connections.get(station_id)
        if connection is None:
            raise CommandFailed("offline", f"station {station_id} is not connected")
        return await connection.command(command)

    async def start(self) -> None:
        await self.service.start()
        self.warn_passwordless()
        await self.control.start()
        await self.load.start()
        await self.settler.start()
        separate_tls = self.tls is not None and self.settings.tls_port is not None
        self._server = await self._listen(self.settings.port, None if separate_tls else self.tls)
        if separate_tls:
            assert self.settings.tls_port is not None
            self._tls_server = await self._listen(self.settings.tls_port, self.tls)
        log.info("OCPP gateway listening on %s:%d (%s)%s", self.settings.host, self.port,
                 "TLS" if self.tls and not separate_tls else "plain",
                 f" and {self.tls_port} (TLS)" if separate_tls else "")
        self.certificates.start()
        await self.uploads.start()

    async def _listen(self, port: int, tls: ssl.SSLContext | None) -> Server:
        # Behind a balancer: the charger's own address from PROXY headers of trusted proxies
        # (plain listeners; gateway/proxy.py). Everyday frames the short way (fastpath.py).
        trusting = FastConnection if tls else proxy.connection_class(
            proxy.parse_networks(self.settings.trusted_proxies))
        return await serve(
            self._serve_station,
            self.settings.host,
            port,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request_counted,
            compression=None,  # permessage-deflate costs ~100 KB per idle connection
            max_size=self.settings.max_frame_bytes,
            max_queue=4,
            ping_interval=self.settings.ws_ping_interval_s,
            open_timeout=HANDSHAKE_TIMEOUT_S,
            ssl=tls,
            server_header="cocharge",
            backlog=self.settings.listen_backlog,
            create_connection=trusting,
            reuse_port=self.settings.reuse_port or None,
        )

    def warn_passwordless(self) -> int:
        """Say how many registered stations anyone who knows their id could impersonate."""
        without = sorted(r.id for r in self.service.directory.stations.values()
                         if r.password_hash is None)
        if without and self.settings.require_password:
            log.warning("%d registered station(s) have no password and will be refused "
                        "(require_password): %s", len(without), ", ".join(without[:10]))
        elif without:
            log.warning("%d registered station(s) have no password: anyone who knows their id "
                        "can connect as them (set one with `cocharge station update ID "
                        "--password ...`): %s%s", len(without), ", ".join(without[:10]),
                        " ..." if len(without) > 10 else "")
        return len(without)

    async def close(self) -> None:
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
                await server.wait_closed()
        self._server = self._tls_server = None
        await self.certificates.close()
        await self.uploads.close()
        with contextlib.suppress(Exception):
            await self.service.release_node(self.node_id)
        await self.load.close()
        await self.control.close()
        await self.service.close()
        await self.settler.close()

    # --- handshake -------------------------------------------------------------------------

    @staticmethod
    def _select_subprotocol(_connection: ServerConnection, offered: Any) -> Any:
        for name in SUBPROTOCOLS:
            if name in offered:
                return name
        return None  # complete the handshake, then close: see _serve_station

    def handshakes_in_progress(self) -> int:
        """Handshakes begun and not yet served; stale ones (the client went away) drop out."""
        if len(self._access) >= self.settings.max_handshakes:
            horizon = time.monotonic() - HANDSHAKE_TIMEOUT_S
            for key in [k for k, v in self._access.items() if v[2] < horizon]:
                del self._access[key]
        return len(self._access)

    def _busy(self) -> Response:
        """503 past the handshake bound: the charger retries later instead of timing out."""
        self.refused_busy += 1
        retry = self.settings.retry_after_s
        retry += int(random.uniform(0, retry * 2 * self.settings.interval_jitter))
        return _response(HTTPStatus.SERVICE_UNAVAILABLE, "gateway busy: retry later",
                         {"Retry-After": str(retry)})

    async def _process_request_counted(self, connection: ServerConnection,
                                       request: Request) -> Response | None:
        refused = await self._process_request(connection, request)
        if refused is not None:
            self.metrics.handshakes_refused.labels(str(refused.status_code)).inc()
        return refused

    async def _process_request(self, connection: ServerConnection,
                               request: Request) -> Response | None:
        if isinstance(connection, proxy.ProxiedConnection):
            connection.take_forwarded_for()  # behind an HTTP proxy we trust
        station_id = station_id_from_path(request.path)
        if not station_id:
            return _response(HTTPStatus.NOT_FOUND,
                             "connect to ws://HOST:PORT/<path>/<station_id>")
        if len(station_id) > MAX_STATION_ID or not station_id.isprintable():
            return _response(HTTPStatus.NOT_FOUND, f"a station id is at most {MAX_STATION_ID} "
                             "printable characters")
        if self.handshakes_in_progress() >= self.settings.max_handshakes:
            log.warning("station %s: %d handshakes in progress, answered 503", station_id,
                        len(self._access))
            return self._busy()
        self._access[id(connection)] = (station_id, StationAccess(False, Admission.REJECTED, None),
                                         time.monotonic())
        try:
            return await self._admit(connection, station_id, request)
        except BaseException:
            self._access.pop(id(connection), None)
            raise

    async def _admit(self, connection: ServerConnection, station_id: str,
                     request: Request) -> Response | None:
        access = await self.service.access(station_id)
        if not access.known and await self._pair(connection, station_id, request):
            access = await self.service.access(station_id)
        presented = client_certificate(connection)
        record = self.service.directory.get(station_id)
        if presented is not None:
            refused = await self._check_certificate(station_id, presented, access)
        elif record is not None and record.security_profile == 3:
            log.warning("station %s uses security profile 3 and came without its client "
                        "certificate: refused", station_id)
            refused = _unauthorized(f"station {station_id} must present its client certificate "
                                    "(security profile 3)")
        elif (record is not None and record.security_profile == 2
              and not on_tls(connection)):
            # Once a station has come over TLS, a plain connection in its name is a downgrade
            # (an attacker stripping TLS), refused until the operator moves it down.
            log.warning("station %s uses security profile 2 and came without TLS: refused",
                        station_id)
            refused = _unauthorized(f"station {station_id} must connect over TLS (wss://, "
                                    "security profile 2)")
        elif access.password_hash is not None:
            refused = await self._authenticate(connection, station_id, request,
                                               access.password_hash)
            if (refused is None and record is not None and on_tls(connection)
                    and record.security_profile in (None, 1)):
                await self.service.security_profile(station_id, 2, "connected over TLS with "
                                                    "its password")
        elif self.settings.require_password:
            log.warning("station %s has no password: refused (require_password)", station_id)
            refused = _unauthorized(f"station {station_id} has no password and this gateway "
                                    "requires one")
        else:
            refused = await self._refuse_takeover(station_id)
        if refused is not None:
            self._access.pop(id(connection), None)
            return refused
        self._access[id(connection)] = (station_id, access, self._access[id(connection)][2])
        return None

    async def _pair(self, connection: ServerConnection, station_id: str,
                    request: Request) -> bool:
        """A new charger's first connection with the pairing code its host made (stations/
        pairing.py): registered to the host, and a password rotation queued for its boot.
        Wrong codes count against the address like wrong passwords."""
        credentials = _basic_credentials(request.headers)
        if (credentials is None or credentials[0] != station_id
                or not await pairing.pending(self.engine, station_id)):
            return False
        address = remote_key(connection)
        if self.guard.wait_s(station_id, address) > 0:
            return False
        new = await pairing.redeem(self.engine, station_id, credentials[1])
        if new is None:
            self.guard.failed(station_id, address,
                              self.guard.fingerprint(station_id, credentials[1]), "")
            log.warning("station %s: a wrong pairing code from %s", station_id, address)
            return False
        await self.service.directory.find(station_id, fresh=True)
        log.info("station %s paired: registered to %s; its password is rotated at its boot",
                 station_id, new.owner)
        await self.service.notice(StationNotice(station_id, "paired", utcnow(),
                                                {"owner": new.owner, "from": address}))
        await self.control.send(station_id, RotatePassword(), "rotate-password", {},
                                queue_for_s=86400, by=f"pairing code of {new.owner}",
                                origin=address)
        return True

    async def _authenticate(self, connection: ServerConnection, station_id: str,
                            request: Request, stored_hash: str) -> Response | None:
        """HTTP Basic, with password guessing throttled (gateway/guard.py)."""
        credentials = _basic_credentials(request.headers)
        if credentials is None or credentials[0] != station_id:
            log.warning("station %s: no HTTP Basic credentials for it", station_id)
            return _unauthorized("station authentication failed")
        password = credentials[1]
        if self.service.password_known(station_id, password, stored_hash):
            return None  # verified since start: passes even a lockout
        address = remote_key(connection)
        wait = self.guard.wait_s(station_id, address)
        if wait > 0:
            await self._tarpit(address, wait)
            return _response(HTTPStatus.TOO_MANY_REQUESTS, "too many failed passwords: retry "
                             "later", {"Retry-After": retry_after(self.guard.wait_s(
                                 station_id, address))})
        fingerprint = self.guard.fingerprint(station_id, password)
        if self.guard.repeated(station_id, fingerprint, stored_hash):
            return _unauthorized("station authentication failed")
        if not await self.guard.begin(station_id, address):
            await self._tarpit(address, 1.0)
            return _response(HTTPStatus.TOO_MANY_REQUESTS, "a password check for this station "
                             "is under way, or too many from this address wait", {"Retry-After": "1"})
        try:
            wait = self.guard.wait_s(station_id, address)
            if wait > 0:  # blocked while it waited in line: no scrypt for it
                return _response(HTTPStatus.TOO_MANY_REQUESTS, "too many failed passwords: retry "
                                 "later", {"Retry-After": retry_after(wait)})
            ok = await self.service.password_ok(station_id, password, stored_hash)
        finally:
            self.guard.end(station_id, address)
        if ok:
            self.guard.succeeded(station_id, fingerprint)
            return None
        if self.guard.previous(station_id, fingerprint):
            log.warning("station %s presents its previous password (changed since)", station_id)
        else:
            log.warning("station %s: wrong password from %s", station_id, address)
        for lockout in self.guard.failed(station_id, address, fingerprint, stored_hash):
            log.warning("password guessing: %s %s locked out for %d s after %d wrong "
                        "passwords (last for station %s)", lockout.scope, lockout.key,
                        lockout.seconds, lockout.failures, station_id)
            await self.service.notice(StationNotice(
                station_id, "auth_lockout", utcnow(),
                {"scope": lockout.scope, "key": lockout.key, "failures": lockout.failures,
                 "locked_s": lockout.seconds}))
        return _unauthorized("station authentication failed")

    async def _check_certificate(self, station_id: str, cert: Any,
                                 access: StationAccess) -> Response | None:
        """A client certificate (TLS verified it chains to a CA we trust and is in date):
        it must name this station and not be revoked. It stands in for the password."""
        from cryptography import x509

        assert isinstance(cert, x509.Certificate)
        name = ca.common_name(cert.subject)
        if name != station_id:
            log.warning("station %s: client certificate of %r refused", station_id, name)
            await self.service.notice(StationNotice(station_id, "certificate_refused", utcnow(),
                                                    {"common_name": name}))
            return _unauthorized("the client certificate is not this station's")
        if not access.known and not self.settings.auto_register:
            return _unauthorized(f"station {station_id} is not registered")
        if ca.serial_hex(cert) in await revoked_serials(self.engine):
            log.warning("station %s: revoked client certificate %s refused", station_id,
                        ca.serial_hex(cert))
            return _unauthorized("the client certificate is revoked")
        record = self.service.directory.get(station_id)
        if record is not None and record.security_profile != 3:
            await self.service.security_profile(station_id, 3, "connected with its client "
                                                "certificate")
        return None

    async def _tarpit(self, address: str, wait: float) -> None:
        """Hold a refused attempt a while before answering it: a guesser opening connection
        after connection then makes a few a second, not thousands (each costs us a
        handshake). A bounded number per address are held; beyond it, answered at once."""
        held = self._held.get(address, 0)
        if held >= self.settings.auth_tarpit_per_address:
            return
        self._held[address] = held + 1
        try:
            await asyncio.sleep(min(wait, self.settings.auth_tarpit_s))
        finally:
            left = self._held[address] - 1
            if left:
                self._held[address] = left
            else:
                del self._held[address]

    async def _refuse_takeover(self, station_id: str) -> Response | None:
        """Anyone who knows a password-less station's id could take its place: a live
        connection (one that answers a ping, on this node or the node holding it) is not
        replaced unless the operator allows it."""
        if self.settings.allow_takeover:
            return None
        if station_id in self.connections:
            alive = await self.answers_ping(station_id)
        else:
            alive = await self._alive_elsewhere(station_id)
        if not alive:
            return None  # the old connection is gone (a charger reconnecting): replace it
        log.warning("station %s has no password and is connected: second connection refused "
                    "(set a password, or allow_takeover)", station_id)
        await self.service.notice(StationNotice(station_id, "takeover_refused", utcnow(), {}))
        return _response(HTTPStatus.CONFLICT, f"station {station_id} is connected already")

    async def answers_ping(self, station_id: str) -> bool:
        """Does the station's connection on this node answer a WebSocket ping in time?"""
        live = self.connections.get(station_id)
        if live is None:
            return False
        try:
            pong = await live.websocket.ping()
            async with asyncio.timeout(self.settings.takeover_ping_s):
                await pong
        except (TimeoutError, ConnectionClosed):
            return False
        return True

    async def _alive_elsewhere(self, station_id: str) -> bool:
        """Another node (its lease alive) holds the station: does its connection answer a
        ping there? Asked through the broker; a node that cannot be asked counts as gone."""
        if self.router is None:
            return False  # one node (or no broker to ask through): nobody else to ask
        record = self.service.directory.get(station_id)
        if record is not None and record.node in self.gone_nodes:
            return False  # its node is dead (the broker said so): nothing to ask, no read
        if record is not None and record.node in (None, self.node_id):
            # As far as this node knows, nobody else holds it: no read on a reconnect storm's
            # path (the directory's view is at most `directory_refresh_s` old).
            return False
        holder = await self.holder(station_id)  # read: our directory may not know it yet
        if holder is None:
            return False
        try:
            answer = await self.router.forward(holder, {"kind": "ping", "station": station_id},
                                               self.settings.takeover_ping_s + 2)
        except (CommandFailed, CommandRejected) as exc:
            log.info("station %s: node %s not asked whether its connection lives: %s",
                     station_id, holder, exc)
            return False
        return bool(answer.get("alive"))

    async def release(self, station_id: str) -> bool:
        """Another node took the station's connection: ours (if any) is closed."""
        live = self.connections.get(station_id)
        if live is None:
            return False
        log.info("station %s connected to another node: closing its connection here", station_id)
        try:  # the charger moved on: it may never answer the close
            await asyncio.wait_for(live.websocket.close(
                1000, "replaced by a new connection on another node"), 1.0)
        except TimeoutError:
            live.websocket.transport.abort()
        return True

    async def certificate_revoked(self, station_id: str) -> bool:
        """A certificate was revoked: the station's connection here, if it came with a
        revoked client certificate, is closed (it is refused when it comes again)."""
        live = self.connections.get(station_id)
        cert = client_certificate(live.websocket) if live is not None else None
        if live is None or cert is None:
            return False
        if ca.serial_hex(cert) not in await revoked_serials(self.engine):
            return False
        log.warning("station %s: its client certificate %s was revoked: connection closed",
                    station_id, ca.serial_hex(cert))
        await self.service.notice(StationNotice(station_id, "certificate_refused", utcnow(),
                                                {"serial": ca.serial_hex(cert),
                                                 "step": "revoked while connected"}))
        try:
            await asyncio.wait_for(live.websocket.close(1008, "client certificate revoked"), 2.0)
        except TimeoutError:
            live.websocket.transport.abort()
        return True

    def _release_elsewhere(self, station_id: str, previous_node: str | None) -> None:
        """The station was held by another node: that node closes its old connection (a
        charger that reconnected through the balancer left it half-open there)."""
        if (previous_node in (None, self.node_id) or previous_node in self.gone_nodes
                or self.router is None):
            return  # nobody to tell (a dead node's chargers coming back: not one read each)
        router = self.router

        async def tell() -> None:
            try:
                async with self._release_reads:  # a storm of them must not take the pool
                    holder = await self.holder(station_id)  # a node whose lease lives
                    if holder is None or holder == self.node_id:
                        holder = previous_node if await self._lease_alive(previous_node) else None
                if holder is not None:
                    with contextlib.suppress(CommandFailed, CommandRejected):
                        await router.forward(holder, {"kind": "release", "station": station_id})
            except Exception as exc:  # the database away a moment: the old node's
                log.info("station %s: node %s not told to release it: %s", station_id,
                         previous_node, exc)  # connection ends with its lease anyway

        task = asyncio.create_task(tell(), name=f"release {station_id}")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _lease_alive(self, node: str | None) -> bool:
        if node is None:
            return False
        async with self.engine.connect() as conn:
            until = await conn.scalar(select(nodes.c.lease_until).where(nodes.c.id == node))
        return until is not None and until > utcnow()

    # --- connections -----------------------------------------------------------------------

    async def _serve_station(self, websocket: ServerConnection) -> None:
        handshake = self._access.pop(id(websocket), None)
        if handshake is None:  # forgotten as stale while the handshake dragged on
            station_id = station_id_from_path(websocket.request.path if websocket.request else "")
            if not station_id:
                return
            access = await self.service.access(station_id)
        else:
            station_id, access, _ = handshake
        if websocket.subprotocol is None:
            log.warning("station %s offered no supported subprotocol: closing", station_id)
            await websocket.close(1002, "offer ocpp2.0.1 or ocpp1.6 as subprotocol")
            return
        handler_class = SUBPROTOCOLS[websocket.subprotocol]
        admission = access.admission if access.known else None
        if admission is Admission.PENDING:
            admission = None  # a pending station must boot again to be told it is pending
        connection = handler_class(station_id, websocket, self.service, self.settings, admission,
                                   self.quirks)
        connection.upload_port = self.uploads.port
        connection.upload_scheme = "https" if self.tls else "http"
        connection.tls_port = self.tls_port
        connection.metrics = self.metrics
        self.control.forget(station_id)  # a reconnected charger may have lost our share lock
        record = self.service.directory.get(station_id)
        self._release_elsewhere(station_id, record.node if record is not None else None)
        previous = self.connections.get(station_id)
        self.connections[station_id] = connection
        if previous is not None:
            log.info("station %s connected again: closing its previous connection", station_id)
            asyncio.create_task(previous.websocket.close(1000, "replaced by a new connection"))
        log.info("station %s connected (OCPP %s)", station_id, handler_class.protocol)
        self.service.frames.add(station_id, "note", f"connected (OCPP {handler_class.protocol}) "
                                f"from {remote_key(websocket)}")
        await self.service.hold(station_id, self.node_id, True)
        self.control.adopt(station_id)  # its running limited sessions, wherever they began
        self.observer.station_online(station_id, True, handler_class.protocol)
        self.load.station_online(station_id, True)
        try:
            await connection.start()
        except ConnectionClosed:
            pass
        finally:
            closed = websocket.close_code
            self.service.frames.add(station_id, "note", "disconnected" + (
                f" (close code {closed}{', ' + websocket.close_reason if websocket.close_reason else ''})"
                if closed is not None else ""))
            if self.connections.get(station_id) is connection:
                del self.connections[station_id]
                await self.service.hold(station_id, self.node_id, False)
                self.observer.station_online(station_id, False, handler_class.protocol)
                self.load.station_online(station_id, False)
            log.info("station %s disconnected", station_id)

    def connection(self, station_id: str) -> StationConnection | None:
        return self.connections.get(station_id)

    # --- which node holds which station (several nodes on one database) ----------------------

    async def node_gone(self, node: str) -> None:
        """The broker says another node is offline (its last will): its lease ends now, so
        its stations show offline, reconnecting chargers are not held up asking it about
        its connections, and the sites it allocated are claimed at once. A node that is in
        fact alive (cut from the broker only) renews its lease within a third of it."""
        self.gone_nodes.add(node)
        async with self.engine.begin() as conn:
            ended = await conn.execute(update(nodes).where(
                nodes.c.id == node, nodes.c.lease_until > utcnow()).values(lease_until=utcnow()))
        if ended.rowcount:
            log.warning("node %s is offline (the broker said so): its lease ended now", node)
            self.load.claim_soon()

    def node_back(self, node: str) -> None:
        """The broker says a node is online (again: it was only cut from the broker)."""
        self.gone_nodes.discard(node)

    async def holder(self, station_id: str) -> str | None:
        """The other running node holding the station's connection, if any."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(stations.c.node).select_from(
                stations.join(nodes, nodes.c.id == stations.c.node))
                .where(stations.c.id == station_id, or_(  # its lease holds
                    nodes.c.lease_until.is_(None), nodes.c.lease_until > utcnow())))).first()
        if row is None or row.node == self.node_id:
            return None
        return str(row.node)


# OCPP 1.6 security whitepaper and 2.0.1 part 2 A00.FR.3xx (OCTT TC_086, TC_A_04/07): TLS 1.2
# or newer, and for TLS 1.2 these four suites (ECDSA ones with an ECDSA certificate, the RSA
# ones with an RSA certificate). TLS 1.3 keeps OpenSSL's AEAD suites.
OCPP_TLS12_CIPHERS = ":".join(["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                               "AES128-GCM-SHA256", "AES256-GCM-SHA384"])


def tls_context(cert: str, key: str, client_cas: str | None = None,
                rsa: tuple[str, str] | None = None) -> ssl.SSLContext:
    """Server TLS (security profile 2) from PEM files (`rsa`: a second certificate and key,
    served to clients that offer RSA suites only); with `client_cas` (PEM text), client
    certificates of those CAs are verified when a station presents one (profile 3)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(OCPP_TLS12_CIPHERS)
    context.load_cert_chain(cert, key)
    if rsa is not None:
        context.load_cert_chain(*rsa)
    if client_cas:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cadata=client_cas)
    return context


def client_cas(settings: GatewaySettings) -> str | None:
    """The CA certificates a station's client certificate may chain to: our CA (current and
    not yet forgotten ones) and the operator's extra file."""
    parts = []
    if settings.ca_dir:
        parts.append(ca.load(settings.ca_dir).trust_pem())
    if settings.client_ca_file:
        with open(settings.client_ca_file) as handle:
            parts.append(handle.read())
    return "".join(parts) or None


def on_tls(connection: ServerConnection) -> bool:
    transport = getattr(connection, "transport", None)
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def client_certificate(connection: ServerConnection) -> Any:
    """The station's verified client certificate (an x509.Certificate), or None."""
    transport = getattr(connection, "transport", None)
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    from cryptography import x509

    return x509.load_der_x509_certificate(der)
