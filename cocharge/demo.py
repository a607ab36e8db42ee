"""`cocharge demo`: a gateway on a temporary SQLite, simulated wallboxes and a report."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

import click

from cocharge.config import GatewaySettings
from cocharge.gateway.app import running_node
from cocharge.gateway.operator import send_request
from cocharge.simulators.hardware import EV
from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.stations import registry


def _say(text: str) -> None:
    click.echo(text)


async def run_demo(stations: int) -> None:
    started = time.monotonic()
    folder = tempfile.mkdtemp(prefix="cocharge-demo-")
    db = os.path.join(folder, "demo.db")
    settings = GatewaySettings(host="127.0.0.1", port=0, operator_port=0)
    async with running_node(db, settings) as node:
        url = f"ws://127.0.0.1:{node.gateway.port}/ocpp"
        _say(f"gateway on {url} (database {db})")
        tags = [f"MEMBER{n}" for n in range(1, stations + 1)]
        for n in range(1, stations + 1):
            await registry.add_station(node.engine, registry.NewStation(
                f"WB{n:02d}", owner=f"host{n}", connectors=1, max_power_kw=11))
            await registry.add_member(node.engine, f"Member {n}", tags[n - 1], None)
        await registry.add_member(node.engine, "Blocked Bob", "BLOCKED1", None)
        await registry.block_member(node.engine, "BLOCKED1")
        boxes = []
        for n in range(1, stations + 1):
            protocol = "1.6" if n % 2 else "2.0.1"
            boxes.append(await open_wallbox(SimConfig(
                url=url, station_id=f"WB{n:02d}", protocol=protocol, speed=600,
                meter_interval_s=0.2)))
        _say(f"{stations} wallboxes connected (OCPP 1.6J and 2.0.1), all Accepted")

        # Everyone charges a few kWh; the last wallbox is driven from the operator channel.
        runs = []
        for n, (box, _) in enumerate(boxes[:-1], start=1):
            runs.append(await box.charge(1, tags[n - 1], energy_wh=3000 + 1000 * n,
                                         ev=EV(soc=0.5)))
        last_box, _ = boxes[-1]
        answer = await send_request(node.engine, {"command": "start", "station": last_box.id,
                                                  "args": {"tag": tags[-1], "connector_id": 1}})
        _say(f"remote start on {last_box.id}: {answer.get('status')}")
        while 1 not in last_box.sessions or not last_box.sessions[1].tx_id:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        listed = await registry.list_sessions(node.engine, last_box.id)
        answer = await send_request(node.engine, {"command": "stop", "station": last_box.id,
                                                  "args": {"session_id": listed[-1]["id"]}})
        _say(f"remote stop of session {listed[-1]['id']}: {answer.get('status')}")
        for run in runs:
            await run.done.wait()
        while last_box.sessions:
            await asyncio.sleep(0.05)
        # A blocked member is refused at the charger.
        blocked = await boxes[0][0].charge(1, "BLOCKED1")
        await blocked.done.wait()
        _say(f"blocked tag on {boxes[0][0].id}: {'refused' if not blocked.authorized else 'charged'}")
        for box, reader in boxes:
            await close_wallbox(box, reader)
        await asyncio.sleep(0.2)
        report: list[dict[str, Any]] = await registry.list_sessions(node.engine)
        station_rows = await registry.list_stations(node.engine)

    _say("\nSessions")
    _say(f"{'id':>3} {'station':8} {'tag':9} {'kWh':>7} {'status':10} stop reason")
    total = 0
    for s in report:
        kwh = (s["energy_wh"] or 0) / 1000
        total += s["energy_wh"] or 0
        _say(f"{s['id']:>3} {s['station']:8} {s['tag'] or '':9} {kwh:7.3f} {s['status']:10} "
             f"{s['stop_reason'] or ''}")
    _say(f"total {len(report)} sessions, {total / 1000:.3f} kWh")
    _say("\nStations")
    for st in station_rows:
        statuses = ", ".join(f"connector {k} {v['status']}" for k, v in st["connector_status"].items())
        _say(f"  {st['id']}  OCPP {st['protocol']:5}  {st['admission']:8}  {statuses}")
    _say(f"\ndemo finished in {time.monotonic() - started:.1f} s")
