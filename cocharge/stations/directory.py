"""Station state in memory: what the gateway needs to admit and answer a charger.

Loaded from the database at start and kept current by the gateway's own writes, so that a
handshake, a BootNotification of a known station, a StatusNotification and a Heartbeat need
no database read. What others change (the CLI registers, approves or removes a station,
another node takes one over) reaches it three ways: a station not in memory is looked up
(many look-ups share one query), a failed password check looks again before refusing, and
the whole table is re-read every `refresh_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.background import finish
from cocharge.store.schema import connector_status, stations
from cocharge.store.sql import among

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """Look-ups that arrive together share one query: `await get(key)` waits for the next
    round, which asks `fetch` for every key asked since the last one."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]],
                 linger_s: float = 0.005) -> None:
        self._fetch = fetch
        self._linger_s = linger_s
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V | None:
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._round(), name="coalesced look-up")
        return await future

    async def close(self, wait_s: float = 5.0) -> None:
        """Let the round in flight finish (its callers get their answers), then return; a
        round that takes longer than `wait_s` (a database that stopped answering) is
        cancelled, and its callers are told. (A round left running when the node shut down
        kept its database connection checked out past the engine's disposal: a connection
        nobody closed, whose thread failed later on a closed event loop.)"""
        while self._task is not None and not self._task.done():
            await finish(self._task, wait_s)

    async def _round(self) -> None:
        waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        try:
            while self._waiting:
                await asyncio.sleep(self._linger_s)
                waiting, self._waiting = self._waiting, {}
                try:
                    found = await self._fetch(list(waiting))
                except Exception as exc:
                    self._answer(waiting, exc)
                    continue
                for key, futures in waiting.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(found.get(key))
        except asyncio.CancelledError:  # given up by close(): its callers are told
            gone = RuntimeError("the look-up was given up at shutdown")
            self._answer(waiting, gone)
            self._answer(self._waiting, gone)
            raise

    @staticmethod
    def _answer(waiting: dict[K, list[asyncio.Future[V | None]]], exc: BaseException) -> None:
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)


@dataclass
class StationRecord:
    """One registered station as the gateway knows it."""

    id: str
    admission: str                 # accepted | pending
    password_hash: str | None
    connectors: int
    max_power_w: int | None
    node: str | None = None        # the gateway node holding its connection
    vendor: str | None = None      # from its last BootNotification (quirks are keyed by it)
    model: str | None = None
    next_password_hash: str | None = None  # accepted by the station, not used yet (rotation)
    security_profile: int | None = None  # 3: only with its client certificate (mTLS)
    # connector -> (status, error code, charger's time of the status)
    status: dict[int, tuple[str, str | None, datetime]] = field(default_factory=dict)


_COLUMNS = (stations.c.id, stations.c.admission, stations.c.password_hash,
            stations.c.connectors, stations.c.max_power_w, stations.c.node, stations.c.vendor,
            stations.c.model, stations.c.next_password_hash, stations.c.security_profile)


def _record(row: Any) -> StationRecord:
    return StationRecord(row.id, row.admission, row.password_hash, row.connectors or 1,
                         row.max_power_w, row.node, row.vendor, row.model,
                         row.next_password_hash, row.security_profile)


class StationDirectory:
    def __init__(self, engine: AsyncEngine, refresh_s: float = 10.0) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self.stations: dict[str, StationRecord] = {}
        self._lookup: Coalescer[str, StationRecord] = Coalescer(self._fetch)
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Every registered station and its connectors' last states."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(*_COLUMNS))).all()
            states = (await conn.execute(select(connector_status))).all()
        self.stations = {row.id: _record(row) for row in rows}
        for s in states:
            record = self.stations.get(s.station_id)
            if record is not None:
                record.status[s.connector_id] = (s.status, s.error_code, s.updated_at)
        log.info("station directory: %d stations in memory", len(self.stations))

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_forever(), name="station-directory")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._lookup.close()

    def get(self, station_id: str) -> StationRecord | None:
        return self.stations.get(station_id)

    async def find(self, station_id: str, fresh: bool = False) -> StationRecord | None:
        """The station from memory; from the database when it is not there (registered since)
        or when `fresh` is asked (its password or admission may have changed)."""
        record = self.stations.get(station_id)
        if record is not None and not fresh:
            return record
        found = await self._lookup.get(station_id)
        if found is None:
            if fresh:
                self.stations.pop(station_id, None)
            return None
        return self._merge(found)

    def _merge(self, found: StationRecord) -> StationRecord:
        record = self.stations.get(found.id)
        if record is None:
            self.stations[found.id] = found
            return found
        record.admission, record.password_hash = found.admission, found.password_hash
        record.next_password_hash = found.next_password_hash
        record.connectors, record.max_power_w = found.connectors, found.max_power_w
        record.vendor, record.model = found.vendor, found.model
        return record

    async def _fetch(self, ids: list[str]) -> dict[str, StationRecord]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(*_COLUMNS).where(among(conn, stations.c.id, ids)))).all()
        return {row.id: _record(row) for row in rows}

    async def refresh(self, slice_rows: int = 1000) -> None:
        """Re-read the registry (what the CLI or another node changed), a slice at a time so
        that the stations are served in between."""
        seen: set[str] = set()
        after = ""
        while True:
            # A slice's rows are garbage a moment later, freed by reference counting: kept
            # from the cycle collector, which would otherwise walk them as survivors.
            collecting = gc.isenabled()
            gc.disable()
            try:
                async with self.engine.connect() as conn:
                    rows = (await conn.execute(select(*_COLUMNS).where(stations.c.id > after)
                                               .order_by(stations.c.id).limit(slice_rows))).all()
                for row in rows:
                    seen.add(row.id)
                    record = self._merge(_record(row))
                    record.node = row.node
                full = len(rows) == slice_rows
                after = rows[-1].id if rows else after
                del rows
            finally:
                if collecting:
                    gc.enable()
            if not full:
                break
            await asyncio.sleep(0)
        for gone in set(self.stations) - seen:
            del self.stations[gone]

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("station directory: refresh failed")

    def add(self, record: StationRecord) -> None:
        self.stations[record.id] = record
