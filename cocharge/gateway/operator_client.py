"""The CLI's side of the operator channel (gateway/operator.py has the gateway's side): find
the running gateways of a database and send one request. Light on purpose: every `cocharge
remote ...` command imports it, not the gateway."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from cocharge.store.db import identity, node_alive, utcnow
from cocharge.store.schema import nodes


class OperatorError(Exception):
    """A failed operator request; `kind` says which (unreachable, offline, bad_request, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


async def operator_nodes(engine: AsyncEngine) -> list[tuple[str, str]]:
    """(url, token) of every running gateway writing to this database, newest first. The
    rows of a copy (a backup, `sqlite3 .backup`) name the database they were copied from: its
    gateways are not this database's, and are never sent a command through it."""
    here = await identity(engine)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(nodes.c.operator_url, nodes.c.token, nodes.c.database,
                                          nodes.c.lease_until)
                                   .order_by(nodes.c.started_at.desc()))).all()
    now = utcnow()
    return [(r.operator_url, r.token) for r in rows
            if r.database in (None, here) and node_alive(r, now)]


async def send_request(engine: AsyncEngine, request: dict[str, Any],
                       timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to a running gateway; raises OperatorError("unreachable") if none answers."""
    found = await operator_nodes(engine)
    if not found:
        raise OperatorError("unreachable", "no running gateway is recorded in this database: "
                            "start one with `cocharge serve` (same --db)")
    problems = []
    for url, token in found:
        try:
            async with connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                               open_timeout=5, compression=None) as websocket:
                async with asyncio.timeout(timeout):
                    await websocket.send(json.dumps(request))
                    answer = json.loads(await websocket.recv(decode=True))
                if not (answer.get("ok") is False and answer.get("error") == "offline"
                        and len(found) > 1):
                    return dict(answer)
                problems.append(f"{url}: {answer.get('message')}")
        except (OSError, InvalidHandshake, InvalidStatus, ConnectionClosed, TimeoutError) as exc:
            problems.append(f"{url}: {exc}")
    if all("is not connected" in p for p in problems):
        return {"ok": False, "error": "offline", "message": "; ".join(problems)}
    raise OperatorError("unreachable", "cannot reach the gateway's operator channel: "
                        + "; ".join(problems))
