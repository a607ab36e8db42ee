"""Keeping Python's cycle collector from stalling every station at once.

A gateway holding thousands of connections has millions of long-lived objects; a full
collection walks all of them (about 0.5 us each) with the event loop stopped, so while the
fleet grows (a reconnect storm) each full collection stalls every charger for hundreds of
milliseconds. Long-lived objects are frozen instead (`gc.freeze`: the collector no longer
walks them) as soon as the fleet has grown (checked four times a second: a freeze only
moves the collector's lists, it costs nothing); a full collection, which also frees cycles that
died among frozen objects, runs on a long schedule and is logged with its duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class HeapKeeper:
    def __init__(self, connections: Callable[[], int], full_every_s: float = 3600.0,
                 check_every_s: float = 0.25) -> None:
        self._connections = connections
        self._check_every_s = check_every_s
        self._full_every_s = full_every_s
        self._task: asyncio.Task[None] | None = None
        self.freezes = 0

    def start(self) -> None:
        gc.freeze()  # what start-up loaded (the station directory, the schema, the code)
        gc.callbacks.append(self._timed)
        self._task = asyncio.create_task(self._run(), name="heap-keeper")

    _started = 0.0
    slow_passes = 0

    def _timed(self, phase: str, info: dict[str, int]) -> None:
        """Log every collection that stopped the loop for more than 50 ms."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        if took > 0.05:
            self.slow_passes += 1
            log.warning("heap: a generation-%d collection stopped every station for %.0f ms",
                        info["generation"], took * 1000)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._timed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        frozen_at = self._connections()
        next_full = time.monotonic() + self._full_every_s
        while True:
            await asyncio.sleep(self._check_every_s)
            now = self._connections()
            if now - frozen_at >= 100:
                # What the new connections brought lives as long as they do.
                gc.freeze()
                self.freezes += 1
                frozen_at = now
                log.info("heap: %d objects frozen after the fleet grew to %d connections",
                         gc.get_freeze_count(), now)
            if now < frozen_at:
                frozen_at = now
            if time.monotonic() >= next_full:
                next_full = time.monotonic() + self._full_every_s
                started = time.perf_counter()
                gc.unfreeze()
                freed = gc.collect()
                gc.freeze()
                log.info("heap: full collection freed %d objects in %.0f ms", freed,
                         (time.perf_counter() - started) * 1000)
