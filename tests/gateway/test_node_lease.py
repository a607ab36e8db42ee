"""A node's lease (issue 32, item 1): a running `cocharge serve` renews it; killed with -9 it
leaves its row behind, and once the lease ends its stations show offline (CLI, API) and
`remote` no longer tries it, while a node that closes cleanly removes itself at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from tests import forked_cli
from tests.conftest import free_port


def cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return forked_cli.run([*args, "--db", db])


async def shown_online(db: str) -> bool:
    """Whether `station list` shows the (only) station online."""
    listed = json.loads((await asyncio.to_thread(cli, "station", "list", "--json", db=db)).stdout)
    return bool(listed[0]["online"])


async def until_shown(db: str, online: bool, within_s: float, why: str) -> None:
    deadline = time.monotonic() + within_s
    while await shown_online(db) != online:
        assert time.monotonic() < deadline, why
        await asyncio.sleep(0.2)


async def test_a_killed_node_shows_its_stations_offline_when_its_lease_ends(tmp_path):
    db = str(tmp_path / "lease.db")
    config = tmp_path / "cocharge.toml"
    config.write_text("[gateway]\nnode_lease_s = 2.0\n")
    assert cli("db", "init", db=db).returncode == 0
    assert cli("station", "add", "L1", db=db).returncode == 0
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cocharge.cli", "--config", str(config),
                               "serve", "--host", "127.0.0.1", "--port", str(port),
                               "--operator-port", "0", "--upload-port", "0", "--no-api",
                               "--db", db], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        assert server.stdout is not None
        while "cocharge gateway" not in server.stdout.readline():
            assert server.poll() is None, "serve stopped"
        box, reader = await open_wallbox(SimConfig(url=f"ws://127.0.0.1:{port}/ocpp",
                                                   station_id="L1", protocol="2.0.1"))

        try:
            await until_shown(db, True, 15, "never shown online")
            await asyncio.sleep(2.5)  # longer than the lease: renewed, still online
            assert await shown_online(db)
            os.kill(server.pid, signal.SIGKILL)
            server.wait(10)
            await until_shown(db, False, 6, "still online after the lease")
            gone = await asyncio.to_thread(cli, "remote", "reset", "L1", db=db)
            assert gone.returncode == 3 and "no running gateway" in gone.stderr, gone.stderr
        finally:
            await close_wallbox(box, reader)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


async def test_a_node_the_broker_says_is_gone_ends_its_lease_at_once(tmp_path, broker, pg_url):
    """With a broker, a killed node's last will ("offline") reaches the other nodes the
    moment its connection drops: its lease ends then, not when it would have run out (two
    minutes here), so its stations show offline and a charger reconnecting elsewhere is
    accepted without asking the dead node about its connection."""
    from cocharge.node import running_node
    from cocharge.stations import registry
    from tests.conftest import settings, ws_url

    config = tmp_path / "a.toml"
    config.write_text("[gateway]\nnode_lease_s = 120.0\n")
    port = free_port()
    a = subprocess.Popen([sys.executable, "-m", "cocharge.cli", "--config", str(config), "serve",
                          "--host", "127.0.0.1", "--port", str(port), "--operator-port", "0",
                          "--upload-port", "0", "--no-api", "--mqtt", broker.url, "--db", pg_url],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    boxes = []
    try:
        assert a.stdout is not None
        while "cocharge gateway" not in a.stdout.readline():
            assert a.poll() is None, "serve stopped"
        async with running_node(pg_url, settings(node_lease_s=120.0,
                                                 mqtt_url=broker.url)) as b:
            await registry.add_station(b.engine, registry.NewStation("W1"))
            await asyncio.wait_for(b.mqtt.connected.wait(), 10)
            boxes.append(await open_wallbox(SimConfig(url=f"ws://127.0.0.1:{port}/ocpp",
                                                      station_id="W1", protocol="2.0.1")))

            await until_shown(pg_url, True, 15, "never shown online")
            os.kill(a.pid, signal.SIGKILL)
            a.wait(10)
            await until_shown(pg_url, False, 20, "still online: the lease was not ended")
            # The charger comes back through node B at once (no ping of the dead node).
            box, reader = boxes.pop()
            await close_wallbox(box, reader)
            boxes.append(await open_wallbox(SimConfig(url=ws_url(b), station_id="W1",
                                                      protocol="2.0.1")))
            deadline = time.monotonic() + 10
            while "W1" not in b.gateway.connections:
                assert time.monotonic() < deadline, "not accepted by the surviving node"
                await asyncio.sleep(0.1)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait(10)
        for box, reader in boxes:
            await close_wallbox(box, reader)
