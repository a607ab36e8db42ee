"""The operator channel: how `cocharge remote ...` reaches the running gateway.

A second WebSocket listener, on 127.0.0.1:9001 by default, speaking one JSON
request and one JSON answer per command. Each gateway writes its channel's URL and
a fresh random token into the `nodes` table when it starts (and removes them when it
stops); the CLI, pointed at the same database, reads them and authenticates with
`Authorization: Bearer <token>`. Whoever can read the database can command the
stations anyway, so the token adds no new secret to guard.

Request:  {"command": "start", "station": "CP1", "args": {"tag": "T1", "connector_id": 1},
           "expires_s": 3600}
Answer:   {"ok": true, "accepted": true, "status": "Accepted", "response": {...}}
       or {"ok": true, "accepted": true, "queued": true, "command_id": 7, "status": "Queued"}
          (the station is offline: delivered at its next BootNotification unless it expires)
       or {"ok": false, "error": "offline|timeout|call_error|bad_request", "message": "..."}
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from sqlalchemy import delete, insert, update
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from cocharge.gateway.server import Gateway, _response
from cocharge.stations import commands as cmd
from cocharge.stations.commands import CommandFailed, build_command
from cocharge.store.db import identity, utcnow
from cocharge.store.schema import nodes

log = logging.getLogger(__name__)

# The longest an offline station's command is kept (and a datetime can always add it).
MAX_QUEUE_S = 30 * 86400


class OperatorChannel:
    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self.token = secrets.token_urlsafe(32)
        self.node_id = gateway.node_id
        self._server: Server | None = None
        self._lease: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"ws://{host}:{port}"

    async def start(self) -> None:
        self._server = await serve(self._serve, self.host, self.port, compression=None,
                                   process_request=self._authenticate, max_size=2**20)
        database = await identity(self.gateway.engine)
        lease = timedelta(seconds=self.gateway.settings.node_lease_s)
        async with self.gateway.engine.begin() as conn:
            await conn.execute(insert(nodes).values(
                id=self.node_id, operator_url=self.url, token=self.token, pid=os.getpid(),
                started_at=utcnow(), alive=True, database=database,
                lease_until=utcnow() + lease))
        self._lease = asyncio.create_task(self._renew(lease), name="node lease")
        log.info("operator channel on %s", self.url)

    async def _renew(self, lease: timedelta) -> None:
        """Keep this node's lease, renewed every third of it (a failed renewal is retried
        at the next one: the lease outlasts two misses)."""
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                async with self.gateway.engine.begin() as conn:
                    await conn.execute(update(nodes).where(nodes.c.id == self.node_id)
                                       .values(lease_until=utcnow() + lease))
            except Exception as exc:  # the database is away a moment: the next try
                log.warning("node lease not renewed: %s", exc)

    async def close(self) -> None:
        if self._lease is not None:
            self._lease.cancel()
        try:
            async with self.gateway.engine.begin() as conn:
                await conn.execute(delete(nodes).where(nodes.c.id == self.node_id))
        finally:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

    def _authenticate(self, _connection: ServerConnection, request: Request) -> Response | None:
        expected = f"Bearer {self.token}"
        given = request.headers.get("Authorization", "")
        if not secrets.compare_digest(given.encode(), expected.encode()):
            return _response(HTTPStatus.UNAUTHORIZED, "operator token required")
        return None

    async def _serve(self, websocket: ServerConnection) -> None:
        try:
            async for raw in websocket:
                answer = await self.handle(raw)
                await websocket.send(json.dumps(answer, default=str))
        except ConnectionClosed:
            pass

    async def handle(self, raw: str | bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
        except ValueError as exc:
            return {"ok": False, "error": "bad_request", "message": f"malformed request: {exc}"}
        return await self.answer(request)

    async def answer(self, request: Any) -> dict[str, Any]:
        """One request (already parsed) answered: from the operator channel or the HTTP API."""
        try:
            name, station_id = request["command"], request["station"]
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise TypeError("args must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": "bad_request", "message": f"malformed request: {exc}"}
        if name == "status":
            return {"ok": True, "online": sorted(self.gateway.connections)}
        if name == "site":  # the live allocation of a site (`cocharge site show`)
            return {"ok": True, "live": self.gateway.load.live(str(args.get("site", "")))}
        if name == "grid-limit":  # a grid operator's limit on a site (`cocharge site grid-limit`)
            return self._grid_limit(args)
        if name == "station-changed":  # its password was changed in the database (the CLI)
            await self.gateway.service.station_changed_elsewhere(str(station_id))
            self.gateway.service.tell_nodes(str(station_id))
            return {"ok": True}
        if name == "certificate-revoked":  # `station revoke-certificate`: off the line now
            closed = await self.gateway.certificate_revoked(str(station_id))
            self.gateway.service.tell_nodes(str(station_id), certificate="revoked")
            return {"ok": True, "closed": closed}
        if name == "member-changed":  # blocked or accepted again: local lists follow now
            self.gateway.control.members_changed()
            self.gateway.service.tell_nodes(member=str(args.get("tag", "")))
            return {"ok": True}
        try:
            expires_s = request.get("expires_s")
            if expires_s is not None and (not isinstance(expires_s, int | float)
                                          or isinstance(expires_s, bool)
                                          or not 0 < expires_s <= MAX_QUEUE_S):
                raise cmd.CommandRejected("expires_s must be a number of seconds from 1 to "
                                          f"{MAX_QUEUE_S} (30 days)")
            command = build_command(name, args)
            by, origin = request.get("by"), request.get("from")
            return await self.execute(station_id, command, name, args, expires_s,
                                      str(by)[:200] if by else "operator channel",
                                      str(origin)[:200] if origin else None,
                                      queue=request.get("queue") is not False)
        except cmd.CommandRejected as exc:
            return {"ok": False, "error": "bad_request", "message": str(exc)}
        except CommandFailed as exc:
            return {"ok": False, "error": exc.kind, "message": str(exc)}

    def _grid_limit(self, args: dict[str, Any]) -> dict[str, Any]:
        """{"site", "limit_w" (None: clear), "for_s" (None: until cleared), "source"}."""
        limit, for_s = args.get("limit_w"), args.get("for_s")
        for key, value in (("limit_w", limit), ("for_s", for_s)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not 0 <= value <= 10**9):
                return {"ok": False, "error": "bad_request",
                        "message": f"{key} must be a number from 0 to 10^9"}
        site = str(args.get("site", ""))
        if not self.gateway.load.grid_limit(site, limit, for_s, str(args.get("source")
                                                                    or "operator")[:64]):
            return {"ok": False, "error": "bad_request",
                    "message": f"no site {site!r} here: `cocharge site list`"}
        return {"ok": True, "site": site, "limit_w": limit}

    async def execute(self, station_id: str, command: cmd.Command, name: str | None = None,
                      args: dict[str, Any] | None = None,
                      expires_s: float | None = None, by: str | None = None,
                      origin: str | None = None, queue: bool = True) -> dict[str, Any]:
        """Send to the station: here, or through the broker to the node holding it (several
        nodes); a station no node holds gets it at its next boot (queued), unless `queue` is
        False (a driver's start: not hours later, when nobody stands at the charger).
        `by`/`origin`: who asked, from where (the audit log)."""
        if station_id not in self.gateway.connections and name is not None:
            holder = await self.gateway.holder(station_id)
            if holder is not None and self.gateway.router is not None:
                return dict(await self.gateway.router.forward(holder, {
                    "kind": "operator", "station": station_id, "name": name, "args": args or {},
                    "expires_s": expires_s, "by": by, "from": origin, "queue": queue}))
            if holder is not None:
                # No broker to forward through: `cocharge remote` then asks the next node.
                raise CommandFailed("offline", f"station {station_id} is not connected to this "
                                    f"node (node {holder} holds it)")
        return await self.gateway.control.send(
            station_id, command, name, args,
            queue_for_s=None if not queue else expires_s if expires_s is not None
            else self.gateway.settings.command_queue_s, by=by, origin=origin)
