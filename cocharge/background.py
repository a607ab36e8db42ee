"""Background tasks of one owner (sharing control, load management): started without
waiting, each failure logged with its name, all cancelled when the owner closes; and
`finish`, for a task that is let finish at close, within a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any


class Background:
    def __init__(self, log: logging.Logger, owner: str) -> None:
        self.log = log
        self.owner = owner
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("%s: %s failed", self.owner, name)

        task = asyncio.create_task(guarded(), name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def finish(task: asyncio.Task[Any], wait_s: float) -> bool:
    """Let `task` finish within `wait_s` seconds; past that it is cancelled (and awaited).
    True if it finished by itself."""
    done, _ = await asyncio.wait({task}, timeout=wait_s)
    if done:
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False
