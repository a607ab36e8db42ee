"""GET /metrics (the text exposition format) and GET /healthz of one gateway node, on the
operator's address: the node's counters (metrics.py) and what the gateway holds now, read at
each scrape. The HTTP side is a few lines of asyncio, like the upload server's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from cocharge.gateway.metrics import GatewayMetrics
from cocharge.gateway.server import Gateway
from cocharge.store.schema import ledger_transfers

log = logging.getLogger(__name__)


class _Live(Collector):
    """What the gateway holds now, read at each scrape."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.transfers: int | None = None

    def collect(self) -> Iterator[Any]:
        g = self.gateway
        yield GaugeMetricFamily("cocharge_stations_connected", "Stations connected to this node",
                                value=len(g.connections))
        yield GaugeMetricFamily("cocharge_handshakes_in_progress", "WebSocket handshakes begun "
                                "and not yet served", value=len(g._access))
        yield GaugeMetricFamily("cocharge_sessions_open", "Transactions open on this node",
                                value=sum(1 for s in g.service._open.values() if not s.ended))
        yield GaugeMetricFamily("cocharge_settlement_queue", "Ended sessions waiting to be "
                                "settled (settlement lag)", value=g.settler._queue.qsize())
        journal = g.service.journal
        yield GaugeMetricFamily("cocharge_journal_pending", "Journal entries waiting for a "
                                "commit", value=len(journal._pending))
        bridge = g.router  # the MQTT bridge, when the node has a broker
        if bridge is not None and hasattr(bridge, "queue"):
            yield GaugeMetricFamily("cocharge_mqtt_queue", "MQTT messages waiting for the "
                                    "broker", value=bridge.queue.qsize())
            yield CounterMetricFamily("cocharge_mqtt_dropped", "MQTT messages dropped (queue "
                                      "full)", value=bridge.dropped)
        if self.transfers is not None:
            yield CounterMetricFamily("cocharge_ledger_transfers", "Transfers in the ledger",
                                      value=self.transfers)

    async def refresh(self) -> None:
        """Read what needs the database (before a scrape is answered)."""
        async with self.gateway.engine.connect() as conn:
            self.transfers = int(await conn.scalar(
                select(func.count()).select_from(ledger_transfers)) or 0)


class MetricsServer:
    """GET /metrics and GET /healthz over plain HTTP/1.1 (one request per connection)."""

    def __init__(self, gateway: Gateway, metrics: GatewayMetrics, host: str, port: int) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._live = _Live(gateway)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.metrics.registry.register(self._live)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method != "GET":
                status, kind, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._live.refresh(), 5)
                status, kind = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
                body = self.metrics.exposition()
            elif path == "/healthz":
                status, body = await self._health()
                kind = "application/json"
            else:
                status, kind, body = "404 Not Found", "text/plain", b"/metrics or /healthz\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: "
                         f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        except RuntimeError:  # the checker hung up before the answer (its own timeout)
            pass
        finally:
            writer.close()

    async def _health(self) -> tuple[str, bytes]:
        """200 when the database answers within 2 s (and the node serves stations); 503 not."""
        started = time.monotonic()
        try:
            # A commit of the journal in the last two seconds shows the database answering
            # (a node busy with a reconnect storm must not be taken out of the balancer
            # because its check waited behind the storm for a pooled connection).
            if started - self.gateway.service.journal.committed_at > 2:
                async with asyncio.timeout(2):
                    async with self.gateway.engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
            database = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure is "not healthy"
            database = f"failing: {type(exc).__name__}"
        healthy = database == "ok"
        body = json.dumps({"status": "ok" if healthy else "failing", "database": database,
                           "database_ms": round((time.monotonic() - started) * 1000, 1),
                           "stations_connected": len(self.gateway.connections),
                           "node": self.gateway.node_id}).encode()
        return ("200 OK" if healthy else "503 Service Unavailable"), body
