"""Keeping Python's cycle collector from stalling every station at once.

A gateway holding thousands of connections has millions of long-lived objects; a full
collection walks all of them (about 0.5 us each) with the event loop stopped, and CPython
starts one each time the long-lived objects have grown by a quarter: while a fleet
reconnects, every few hundred milliseconds a pause of hundreds of milliseconds. Automatic
full collections are therefore off while the gateway runs (young objects, where nearly all
cyclic garbage dies, are still collected as usual); a full collection runs on a long
schedule instead, logged with its duration, and every collection that stopped the loop for
more than 50 ms is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

log = logging.getLogger(__name__)

# A count of young collections the oldest generation never reaches: no automatic full pass.
_NEVER = 1_000_000_000
# Allocations between young collections (CPython's default is 700): each pass costs about the
# same whatever its size, so fewer, larger ones stop the stations less in all.
_YOUNG = 50_000


class HeapKeeper:
    def __init__(self, full_every_s: float = 3600.0) -> None:
        self._full_every_s = full_every_s
        self._task: asyncio.Task[None] | None = None
        self._thresholds = gc.get_threshold()
        self._started = 0.0
        self.slow_passes = 0

    def start(self) -> None:
        _, middle, _ = self._thresholds
        gc.set_threshold(_YOUNG, middle, _NEVER)
        gc.callbacks.append(self._timed)
        self._task = asyncio.create_task(self._run(), name="heap-keeper")

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._timed)
        gc.set_threshold(*self._thresholds)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

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

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._full_every_s)
            started = time.perf_counter()
            freed = gc.collect()
            log.info("heap: full collection freed %d objects in %.0f ms", freed,
                     (time.perf_counter() - started) * 1000)
