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
from cocharge.gateway.mqtt import MqttBridge, parse_mqtt_url
from cocharge.gateway.operator import OperatorChannel
from cocharge.gateway.server import Gateway
from cocharge.store.db import open_store


@dataclass
class Node:
    engine: AsyncEngine
    gateway: Gateway
    operator: OperatorChannel
    mqtt: MqttBridge | None = None


@contextlib.asynccontextmanager
async def running_node(db: str | None, settings: GatewaySettings,
                       tls: ssl.SSLContext | None = None) -> AsyncIterator[Node]:
    """A started gateway with its operator channel; everything is closed on exit."""
    target = parse_mqtt_url(settings.mqtt_url) if settings.mqtt_url else None
    engine = await open_store(db)
    gateway = Gateway(engine, settings, tls)
    operator = OperatorChannel(gateway, settings.operator_host, settings.operator_port)
    bridge = None
    if target is not None:
        bridge = MqttBridge(gateway, target, operator.node_id, settings.mqtt_queue_size,
                            settings.mqtt_meter_interval_s)
        gateway.set_observer(bridge)
        gateway.router = bridge
        await bridge.start()
    try:
        await gateway.start()
        await operator.start()
        yield Node(engine, gateway, operator, bridge)
    finally:
        await operator.close()
        await gateway.close()
        if bridge is not None:
            await bridge.close()
        await engine.dispose()


async def serve_forever(db: str | None, settings: GatewaySettings,
                        tls: ssl.SSLContext | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_node(db, settings, tls) as node:
        print(f"cocharge gateway: OCPP on {'wss' if tls else 'ws'}://{settings.host}:"
              f"{node.gateway.port}/ocpp/<station_id>, operator channel {node.operator.url}"
              + (f", MQTT {node.mqtt.target} as node {node.gateway.node_id}" if node.mqtt else ""),
              flush=True)
        await stop.wait()
