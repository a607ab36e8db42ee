"""`cocharge serve --workers N` (issue 32, item 5): N gateway processes on one machine share
the OCPP port (SO_REUSEPORT), each a node on PostgreSQL with the broker between them;
stations land on either, and a command reaches a station whichever worker holds it. A
worker killed with -9 is started again; SIGTERM stops them all. SQLite says no."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from sqlalchemy import func, select

from cocharge.gateway.operator_client import send_request
from cocharge.stations import registry
from cocharge.store.db import make_engine, utcnow
from cocharge.store.schema import nodes, stations
from tests import forked_cli
from tests.conftest import RawStation, free_port, until

STATIONS = [f"WK{i:02d}" for i in range(16)]


async def alive_nodes(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(nodes).where(
            nodes.c.lease_until > utcnow())) or 0)


async def test_two_workers_share_the_port_and_commands_reach_either(broker, pg_url):
    port, api_port = free_port(), free_port()
    engine = make_engine(pg_url)
    server = subprocess.Popen([
        sys.executable, "-m", "cocharge.cli", "serve", "--workers", "2", "--host", "127.0.0.1",
        "--port", str(port), "--operator-port", str(free_port()), "--upload-port",
        str(free_port()), "--api-port", str(api_port), "--mqtt", broker.url, "--db", pg_url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        await until(lambda: _started(engine, server), 60)
        for sid in STATIONS:
            await registry.add_station(engine, registry.NewStation(sid))
        from websockets.asyncio.client import connect

        chargers = {}
        for sid in STATIONS:
            ws = await connect(f"ws://127.0.0.1:{port}/ocpp/{sid}", subprotocols=["ocpp1.6"])
            chargers[sid] = RawStation(ws)
            booted = await chargers[sid].call("BootNotification", {
                "chargePointVendor": "raw", "chargePointModel": "raw"})
            assert booted[2]["status"] == "Accepted"

        async def holders() -> dict[str, str] | None:
            async with engine.connect() as conn:
                rows = (await conn.execute(select(stations.c.id, stations.c.node).where(
                    stations.c.id.in_(STATIONS)))).all()
            found = {r.id: r.node for r in rows if r.node}
            return found if len(found) == len(STATIONS) else None

        held = await until(holders, 20)
        assert len(set(held.values())) == 2, held  # the kernel spread them over both
        # A command for one station on each worker, sent from here through any node.
        for node_id in sorted(set(held.values())):
            sid = next(s for s, n in held.items() if n == node_id)
            asked = asyncio.create_task(send_request(engine, {
                "command": "trigger", "station": sid, "args": {"message": "Heartbeat"}}))
            frame = await chargers[sid].answer()
            assert frame[2] == "TriggerMessage", frame
            await chargers[sid].ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
            assert (await asked)["accepted"], node_id
        # The console is served (by the first worker).
        listing = await asyncio.to_thread(forked_cli.run, ["station", "list", "--json",
                                                           "--db", pg_url])
        assert sum(1 for s in json.loads(listing.stdout) if s["online"]) == len(STATIONS)
        # A worker killed with -9 is started again.
        pids = await _worker_pids(engine)
        os.kill(pids[-1], signal.SIGKILL)
        started_again = await until(lambda: _new_pids(engine, pids), 30)
        for charger in chargers.values():
            await charger.ws.close()
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0, server.stderr.read() if server.stderr else ""
        running = [pids[0], *started_again]
        assert not set(await _worker_pids(engine)) & set(running)  # each removed itself
    finally:
        if server.poll() is None:
            server.kill()
        await engine.dispose()


async def _started(engine: Any, server: subprocess.Popen[str]) -> bool:
    assert server.poll() is None, server.stderr.read() if server.stderr else "serve stopped"
    try:
        return await alive_nodes(engine) == 2
    except Exception:  # the schema is being created
        return False


async def _worker_pids(engine: Any) -> list[int]:
    async with engine.connect() as conn:
        return sorted(int(p) for p in (await conn.execute(select(nodes.c.pid).where(
            nodes.c.lease_until > utcnow()))).scalars())


async def _new_pids(engine: Any, before: list[int]) -> list[int]:
    return sorted(set(await _worker_pids(engine)) - set(before))


def test_sqlite_keeps_one_process(tmp_path):
    db = str(tmp_path / "one.db")
    started = time.monotonic()
    refused = forked_cli.run(["serve", "--workers", "2", "--db", db])
    assert refused.returncode == 2 and time.monotonic() - started < 30
    assert refused.stderr.strip() == ("error: --workers 2 needs PostgreSQL (--db "
                                      "postgresql://...): SQLite keeps one process, one writer")
    assert not os.path.exists(db)


async def test_the_workers_stop_when_their_serve_is_killed(broker, pg_url):
    """A `serve --workers 2` killed with -9 leaves no worker behind (nobody would restart or
    stop it, and the next `serve` would run beside it): each stops as `serve` does on
    SIGTERM, removing its node, and the port is free."""
    port = free_port()
    engine = make_engine(pg_url)
    server = subprocess.Popen([
        sys.executable, "-m", "cocharge.cli", "serve", "--workers", "2", "--host", "127.0.0.1",
        "--port", str(port), "--operator-port", "0", "--upload-port", str(free_port()),
        "--no-api", "--mqtt", broker.url, "--db", pg_url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        await until(lambda: _started(engine, server), 60)
        pids = await _worker_pids(engine)
        server.kill()
        server.wait(10)

        async def gone() -> bool:
            return not await _worker_pids(engine) and not any(
                os.path.exists(f"/proc/{pid}") for pid in pids)

        await until(gone, 30)
        with socket.socket() as free:  # nothing listens on the port any more
            free.bind(("127.0.0.1", port))
    finally:
        if server.poll() is None:
            server.kill()
        for pid in pids:  # should the test fail: none left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await engine.dispose()

