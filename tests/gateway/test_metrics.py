"""GET /metrics and /healthz of a node, scraped after a simulated session."""

from __future__ import annotations

import asyncio
import json

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.util import greenlet_spawn
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from cocharge.node import running_node
from cocharge.settlement.settle import payable_fen
from tests.conftest import register, settings, simulated, ws_url


async def get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):  # also checks the format
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def test_metrics_after_a_simulated_session(sqlite_url):
    async with running_node(sqlite_url, settings(metrics_port=0)) as node:
        assert node.metrics is not None
        port = node.metrics.port
        await register(node, "CP1")
        async with simulated(node, "CP1", "2.0.1", meter_interval_s=0.1) as box:
            session = await box.charge(1, "TAG1", energy_wh=2_000)
            await session.done.wait()
            for _ in range(600):  # settled (the bill's transfers counted); 30 s at most
                if await payable_fen(node.engine, 1):
                    break
                await asyncio.sleep(0.05)
            status, text = await get(port, "/metrics")
            assert status == 200
            found = samples(text)
            events = found[("cocharge_ocpp_messages_total",
                            (("action", "TransactionEvent"), ("direction", "in")))]
            assert events >= 3  # Started, Updated..., Ended
            assert found[("cocharge_ocpp_messages_total",
                          (("action", "BootNotification"), ("direction", "in")))] == 1
            assert found[("cocharge_ocpp_messages_total",
                          (("action", "CallResult"), ("direction", "out")))] >= events
            assert found[("cocharge_stations_connected", ())] == 1
            assert found[("cocharge_journal_batch_rows_count", ())] > 0
            assert found[("cocharge_journal_commit_seconds_count", ())] > 0
            assert found[("cocharge_ledger_transfers_total", ())] > 0  # the session's bill
            assert found[("cocharge_settlement_queue", ())] == 0
        refused = 0
        try:  # a station id no charger can have is refused at the handshake, and counted
            async with connect(f"{ws_url(node)}/{'X' * 100}", subprotocols=["ocpp1.6"]):  # type: ignore[list-item]
                pass
        except InvalidStatus as exc:
            refused = exc.response.status_code
        assert refused == 404
        found = samples((await get(port, "/metrics"))[1])
        assert found[("cocharge_handshakes_refused_total", (("status", str(refused)),))] == 1
        assert found[("cocharge_stations_connected", ())] == 0
        status, body = await get(port, "/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok" and health["database"] == "ok"
        assert (await get(port, "/nothing"))[0] == 404


async def test_healthz_fails_when_the_database_does(sqlite_url):
    import os

    async with running_node(sqlite_url, settings(metrics_port=0)) as node:
        assert node.metrics is not None
        assert (await get(node.metrics.port, "/healthz"))[0] == 200
        # No pooled connection: the next one opens the path. (The pool's own dispose: the
        # engine's would give the journal's checked-out connection to an orphaned pool,
        # closed by the garbage collector in a later test, after this loop is gone.)
        await greenlet_spawn(node.engine.sync_engine.pool.dispose)
        os.rename(sqlite_url, sqlite_url + ".away")
        os.mkdir(sqlite_url)  # a directory where the database was: nobody can open it
        try:
            status, body = await get(node.metrics.port, "/healthz")
        finally:
            os.rmdir(sqlite_url)
            os.rename(sqlite_url + ".away", sqlite_url)
        assert status == 503 and json.loads(body)["status"] == "failing"
        assert (await get(node.metrics.port, "/healthz"))[0] == 200
