"""The per-station OCPP log: every frame in and out, and the connection's notes (connected,
closed), kept per station in a bounded store (`cocharge logs STATION`, the station's history
when a charger misbehaves).

Frames are buffered in memory and written through the journal every `frame_log_flush_s`,
never on a frame's own path: one row per station and flush, holding its frames of that second
(a row per frame, written and again pruned, took a third of PostgreSQL's CPU under
saturated MeterValues and a tenth of a SQLite node's: benchmarks/fleet.py).
A station keeps its last `frame_log_per_station` frames and none older than `frame_log_days`.
Secrets a frame may carry (the stations' passwords: AuthorizationKey, BasicAuthPassword) are
replaced before they are kept. `read_frames` gives them back one by one, each with an id that
grows with time (a reader's `after`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from cocharge.background import Background
from cocharge.config import GatewaySettings
from cocharge.store.db import utcnow
from cocharge.store.frames import keep_last, pack
from cocharge.store.journal import Journal
from cocharge.store.schema import FRAMES_PER_ROW, frame_chunks
from cocharge.store.sql import BulkInsert

log = logging.getLogger(__name__)

_SECRET_HINTS = ("AuthorizationKey", "BasicAuthPassword", "basicAuthPassword")
_INSERT = BulkInsert(frame_chunks)
REDACTED = "<redacted>"
_PRUNE_CHUNK = 50  # stations pruned in one journal turn
_FLUSH_TURN = 500  # stations whose frames are packed in one turn of the event loop


def _scrub(node: Any) -> Any:
    if isinstance(node, list):
        return [_scrub(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _scrub(v) for k, v in node.items()}
    if out.get("key") == "AuthorizationKey" and "value" in out:  # 1.6 ChangeConfiguration
        out["value"] = REDACTED
    variable = out.get("variable")
    if isinstance(variable, dict) and variable.get("name") == "BasicAuthPassword":
        for field in ("attributeValue", "variableAttribute"):
            if isinstance(out.get(field), str):
                out[field] = REDACTED
    if "basicAuthPassword" in out:  # SetNetworkProfile's connection data
        out["basicAuthPassword"] = REDACTED
    return out


def redact(frame: str) -> str:
    """The frame as it may be kept: the stations' passwords replaced."""
    if "uthorizationKey" not in frame and "asicAuthPassword" not in frame:  # _SECRET_HINTS
        return frame
    try:
        return json.dumps(_scrub(json.loads(frame)), separators=(",", ":"))
    except ValueError:  # not JSON, yet naming a secret: keep only that it was there
        return "<unparseable frame naming a password: not kept>"


class FrameLog:
    def __init__(self, journal: Journal, settings: GatewaySettings) -> None:
        self.journal = journal
        self.keep = settings.frame_log_per_station
        self.days = settings.frame_log_days
        self.flush_s = settings.frame_log_flush_s
        self.max_chars = settings.max_frame_bytes
        # station -> its frames since the last flush: (at, direction, text)
        self._rows: dict[str, list[tuple[datetime, str, str]]] = {}
        self._written: set[str] = set()  # stations written since the last prune
        self._background = Background(log, "frame log")
        self._pruned_at = utcnow()

    @property
    def enabled(self) -> bool:
        return self.keep > 0

    def add(self, station_id: str, direction: str, frame: str | bytes,
            at: datetime | None = None) -> None:
        """Keep a frame (in | out) or a note about the connection, received or sent `at`
        (now); returns at once."""
        if self.keep <= 0:
            return
        text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
        kept = self._rows.get(station_id)
        if kept is None:
            kept = self._rows[station_id] = []
        kept.append((at or utcnow(), direction, redact(text[:self.max_chars])))

    def start(self) -> None:
        if self.keep > 0:
            self._background.spawn(self._flush_forever(), "frame-log")

    async def close(self) -> None:
        await self._background.close()
        with contextlib.suppress(Exception):
            await self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
                if utcnow() - self._pruned_at >= timedelta(seconds=max(60.0, self.flush_s)):
                    await self.prune()
            except Exception:  # the log must never stop the gateway
                log.exception("frame log: write failed; these frames are not kept")

    async def flush(self) -> None:
        buffered, self._rows = self._rows, {}
        rows = []
        for n, (station_id, frames) in enumerate(buffered.items(), 1):
            if n % _FLUSH_TURN == 0:
                # The chargers' turn (frames they send meanwhile go to the next flush): the
                # frames of 10,000 stations after a reconnect storm, packed in one go, held
                # the event loop 25-70 ms.
                await asyncio.sleep(0)
            # A row in frame_chunks' column order (the journal's BulkInsert takes it as it is).
            for start in range(0, len(frames), FRAMES_PER_ROW):
                part = frames[start:start + FRAMES_PER_ROW]
                rows.append((station_id, part[0][0], part[-1][0], 0, len(part), pack(part)))
        self._written.update(buffered)
        if rows:
            await self.journal.write([(_INSERT, rows)])

    async def prune(self) -> None:
        """Drop what is beyond each written station's last `keep` frames, and what is older
        than `days` (every station)."""
        stations = sorted(self._written)
        self._written = set()
        self._pruned_at = utcnow()
        cutoff = utcnow() - timedelta(days=self.days)
        keep = self.keep

        async def old(conn: AsyncConnection) -> None:
            await conn.execute(delete(frame_chunks).where(frame_chunks.c.last_ts < cutoff))

        def beyond(chunk: list[str]) -> Callable[[AsyncConnection], Awaitable[None]]:
            async def work(conn: AsyncConnection) -> None:
                for sid in chunk:
                    await keep_last(conn, sid, keep)
            return work

        await self.journal.run(old)
        # A few stations per journal turn: the chargers' own writes go between them (one
        # turn for a fleet of 10,000 held every charger's answer for seconds, once a minute).
        for start in range(0, len(stations), _PRUNE_CHUNK):
            await self.journal.run(beyond(stations[start:start + _PRUNE_CHUNK]))
