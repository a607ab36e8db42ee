"""Running a whole gateway node: store, OCPP server and operator channel together."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.config import GatewaySettings
from cocharge.gateway.operator import OperatorChannel
from cocharge.gateway.server import Gateway
from cocharge.store.db import open_store


@dataclass
class Node:
    engine: AsyncEngine
    gateway: Gateway
    operator: OperatorChannel


@contextlib.asynccontextmanager
async def running_node(db: str | None, settings: GatewaySettings,
                       tls: ssl.SSLContext | None = None) -> AsyncIterator[Node]:
    """A started gateway with its operator channel; everything is closed on exit."""
    engine = await open_store(db)
    gateway = Gateway(engine, settings, tls)
    await gateway.start()
    operator = OperatorChannel(gateway, settings.operator_host, settings.operator_port)
    try:
        await operator.start()
        yield Node(engine, gateway, operator)
    finally:
        await operator.close()
        await gateway.close()
        await engine.dispose()


async def serve_forever(db: str | None, settings: GatewaySettings,
                        tls: ssl.SSLContext | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_node(db, settings, tls) as node:
        print(f"cocharge gateway: OCPP on {'wss' if tls else 'ws'}://{settings.host}:"
              f"{node.gateway.port}/ocpp/<station_id>, operator channel {node.operator.url}",
              flush=True)
        await stop.wait()
