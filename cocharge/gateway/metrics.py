"""Prometheus metrics and a health check of one gateway node (`serve --metrics-port`):
GET /metrics (the text exposition format) and GET /healthz, on the operator's address.

Counters are bumped where things happen (a frame, a refused handshake, a journal commit);
the rest is read from the gateway when scraped. prometheus-client (ARCHITECTURE.md) writes
the format; the HTTP side is a few lines of asyncio, like the upload server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from cocharge.store.schema import ledger_transfers

if TYPE_CHECKING:
    from cocharge.gateway.server import Gateway

log = logging.getLogger(__name__)


class GatewayMetrics:
    """The node's counters and histograms; `collector` adds what is read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter("cocharge_ocpp_messages", "OCPP frames by direction and action "
                                "(calls; answers and errors count as their kind)",
                                ["direction", "action"], registry=self.registry)
        self.handshakes_refused = Counter("cocharge_handshakes_refused",
                                          "WebSocket handshakes refused, by HTTP status",
                                          ["status"], registry=self.registry)
        self._frames: dict[tuple[str, str], Any] = {}
        self.journal_batch = Histogram("cocharge_journal_batch_rows", "Rows per journal commit",
                                       buckets=(1, 5, 20, 100, 500, 2000, 5000),
                                       registry=self.registry)
        self.journal_commit = Histogram("cocharge_journal_commit_seconds",
                                        "Time of one journal commit",
                                        buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.5, 2, 10),
                                        registry=self.registry)

    def attach(self, gateway: Gateway) -> None:
        gateway.service.journal.observe = self._journal

    def _journal(self, rows: int, seconds: float) -> None:
        self.journal_batch.observe(rows)
        self.journal_commit.observe(seconds)

    def frame(self, direction: str, frame: str | bytes) -> None:
        """Count a frame: calls by action, answers as CallResult / CallError."""
        text_ = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
        head = text_[:80]
        if head.startswith("[2"):
            parts = head.split(",", 3)
            action = parts[2].strip().strip('"') if len(parts) > 2 else "?"
            action = action if action.isidentifier() and len(action) <= 40 else "(invalid)"
        elif head.startswith("[3"):
            action = "CallResult"
        elif head.startswith("[4"):
            action = "CallError"
        else:
            action = "(invalid)"
        counter = self._frames.get((direction, action))
        if counter is None:  # the label lookup once per kind, not once per frame
            counter = self._frames[(direction, action)] = self.messages.labels(direction, action)
        counter.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


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
        finally:
            writer.close()

    async def _health(self) -> tuple[str, bytes]:
        """200 when the database answers within 2 s (and the node serves stations); 503 not."""
        started = time.monotonic()
        try:
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
