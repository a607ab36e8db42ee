"""Group commit for the hot path: meter samples and transaction-event marks.

Each caller waits until its rows are committed (so a charger is answered only
once its data is durable), but all callers that arrive while one commit is in
flight share the next commit: one round trip for many messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.store.schema import meter_samples, tx_events
from cocharge.store.sql import insert_ignore

log = logging.getLogger(__name__)

_Pending = tuple[list[dict[str, Any]], list[dict[str, Any]], "asyncio.Future[None]"]


class SampleWriter:
    def __init__(self, engine: AsyncEngine, max_rows: int, linger_s: float) -> None:
        self._engine = engine
        self._max_rows = max_rows
        self._linger_s = linger_s
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.rows_written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sample-writer")

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        while self._pending:
            await self._flush()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def write(self, samples: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        """Queue rows and return once they are committed (raises if the commit failed)."""
        if not samples and not events:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((samples, events, future))
        self._wakeup.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._linger_s:
                await asyncio.sleep(self._linger_s)
            self._wakeup.clear()
            while self._pending:
                await self._flush()

    async def _flush(self) -> None:
        batch: list[_Pending] = []
        rows = 0
        while self._pending and (not batch or rows < self._max_rows):
            item = self._pending.popleft()
            batch.append(item)
            rows += len(item[0]) + len(item[1])
        samples = [row for item in batch for row in item[0]]
        events = [row for item in batch for row in item[1]]
        try:
            async with self._engine.begin() as conn:
                if samples:
                    await conn.execute(insert(meter_samples), samples)
                if events:
                    await conn.execute(insert_ignore(self._engine, tx_events), events)
        except Exception as exc:  # every waiter learns of the failure; the writer keeps going
            log.exception("committing %d meter samples failed", len(samples))
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.commits += 1
        self.rows_written += len(samples)
        for _, _, future in batch:
            if not future.done():
                future.set_result(None)
