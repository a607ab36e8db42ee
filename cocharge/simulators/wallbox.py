"""A virtual wallbox: a real OCPP 1.6J or 2.0.1 client over a real WebSocket.

It knows nothing of the server's insides: it connects, boots, reports status, charges
virtual EVs with a hardware model, and answers commands as a charger does. Where each part
lives: charger.py (what every version shares), v16.py, v201.py and v21.py (the messages; v21.py's
charger calculates its cost from a tariff itself: tariffs.py),
hardware.py (meter, EV, lock), security.py (passwords, CSR, certificates, TLS), smart.py and
profiles.py (charging profiles, composite schedules)."""

from __future__ import annotations

import asyncio

from cocharge.simulators.charger import connect_station
from cocharge.simulators.state import SimClock, SimConfig, SimSession
from cocharge.simulators.v16 import Wallbox16
from cocharge.simulators.v21 import Wallbox21
from cocharge.simulators.v201 import Wallbox201

__all__ = ["SimClock", "SimConfig", "SimSession", "Wallbox", "Wallbox16", "Wallbox201",
           "Wallbox21", "close_wallbox", "open_wallbox"]

Wallbox = Wallbox16 | Wallbox201
_CLASSES: dict[str, type[Wallbox]] = {"1.6": Wallbox16, "2.0.1": Wallbox201, "2.1": Wallbox21}


async def open_wallbox(config: SimConfig) -> tuple[Wallbox, asyncio.Task[None]]:
    """Connect, start reading, boot and report status; returns the wallbox and its reader task."""
    connection = await connect_station(config)
    box: Wallbox = _CLASSES[config.protocol](config, connection)
    reader = asyncio.create_task(box.start())
    box.watch(reader)
    await box.boot_and_report()
    return box, reader


async def close_wallbox(box: Wallbox, reader: asyncio.Task[None] | None = None) -> None:
    for task in list(box._tasks):
        task.cancel()
    for reading in (reader, box.reader):
        if reading is not None:
            reading.cancel()
    await box._connection.close()
