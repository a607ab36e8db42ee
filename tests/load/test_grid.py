"""A grid operator's limit on a site (DER control, issue 31 item 5): load management
honours it above the main circuit's own limit, at once, whether it comes from the operator
(`cocharge site grid-limit`, the operator channel) or a backend over MQTT (a real
Mosquitto); lifted, the chargers rise again. A 2.0.1 and a 2.1 charger share the site."""

from __future__ import annotations

import asyncio
import json

import aiomqtt

from cocharge.gateway.operator_client import send_request
from tests import forked_cli
from tests.conftest import Broker, until
from tests.load.sites import big_ev, garage, settled

CHARGERS = [("GRID1", "2.0.1", "L1L2L3"), ("GRID2", "2.1", "L1L2L3")]


def drawn_a(boxes) -> float:
    """What the site draws on its busiest phase now, as the chargers' hardware says."""
    return sum(hw.current_a for box in boxes.values() for hw in box.hw.values())


async def test_a_grid_limit_caps_the_site_and_lifting_it_restores(tmp_path, broker: Broker):
    async with garage(tmp_path / "grid.db", CHARGERS, 63.0, tags=("T1", "T2"),
                      mqtt_url=broker.url) as (node, boxes, watch):
        for i, sid in enumerate(boxes):
            await boxes[sid].charge(1, f"T{i + 1}", ev=big_ev())
        await until(lambda: asyncio.sleep(0, written_a(node) > 60), 20)  # the circuit's 63 A

        # The grid operator: 13.8 kW for the site = 20 A per phase over its three phases.
        answer = await send_request(node.engine, {"command": "grid-limit", "station": "",
                                                  "args": {"site": "GARAGE", "limit_w": 13800,
                                                           "source": "dso-signal-7"}})
        assert answer["ok"], answer
        live = await settled(node, sessions=len(CHARGERS))
        assert live["grid_limit_w"] == 13800 and live["grid_source"] == "dso-signal-7"
        assert sum(c["allocated_a"] for c in live["chargers"]) <= 20.0
        assert all(c["allocated_a"] >= 6 for c in live["chargers"])  # both keep charging
        await until(lambda: asyncio.sleep(0, drawn_a(boxes) <= 20.05), 10)
        # The 2.1 charger holds a Dynamic profile of ours: lowered by moving its limit.
        assert boxes["GRID2"].dynamic_updates, "no UpdateDynamicSchedule reached GRID2"
        [dynamic] = [p for p in boxes["GRID2"].charging_profiles if p.kind == "Dynamic"]
        assert dynamic.periods[0][1] == node.gateway.load.written[("GRID2", 1)].limit_a <= 20

        # Lifted over MQTT; a bad message changes nothing and is answered on .../error.
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("cocharge/v1/sites/GARAGE/grid/error")
            await client.publish("cocharge/v1/sites/GARAGE/grid/set",
                                 json.dumps({"limit_w": "lots"}), qos=1)
            async with asyncio.timeout(10):
                message = await anext(aiomqtt_messages(client))
            assert "limit_w must be a number" in json.loads(message.payload)["error"]
            assert node.gateway.load.live("GARAGE")["grid_limit_w"] == 13800
            await client.publish("cocharge/v1/sites/GARAGE/grid/set",
                                 json.dumps({"limit_w": None}), qos=1)
        await until(lambda: asyncio.sleep(0, node.gateway.load.live("GARAGE")["grid_limit_w"]
                                           is None), 10)
        await until(lambda: asyncio.sleep(0, written_a(node) > 60), 20)  # risen again
        # A change is said to be settling until it is allocated and the chargers hold it.
        load = node.gateway.load
        assert load.grid_limit("GARAGE", 9200, source="test")
        assert load.live("GARAGE")["settling"]
        live = await settled(node, sessions=len(CHARGERS))
        assert live["grid_limit_w"] == 9200
        assert sum(c["allocated_a"] for c in live["chargers"]) <= 9200 / 230 / 3 + 0.05
        assert sum(c["written_a"] for c in live["chargers"]) <= 9200 / 230 / 3 + 0.05


def written_a(node) -> float:
    """What the chargers of the site hold, as written to them."""
    live = node.gateway.load.live("GARAGE")
    return sum(c["written_a"] or 0 for c in live["chargers"]) if live else 0.0


async def aiomqtt_messages(client: aiomqtt.Client):
    async for message in client.messages:
        yield message


async def test_the_operators_grid_limit_from_the_cli(tmp_path):
    db = str(tmp_path / "cli.db")
    async with garage(db, CHARGERS[:1], 63.0) as (node, _boxes, _watch):
        def cli(*args: str):
            return forked_cli.run(["site", "grid-limit", *args, "--db", db])

        done = await asyncio.to_thread(cli, "GARAGE", "--kw", "9.2", "--for", "2h")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "site GARAGE: grid limit 9.2 kW for 2h"
        assert node.gateway.load.grid["GARAGE"][0] == 9200
        for bad, words in ((("NOWHERE", "--kw", "5"), "no site 'NOWHERE'"),
                           (("GARAGE",), "give --kw N (the limit) or --clear"),
                           (("GARAGE", "--kw", "5", "--for", "40d"), "not a duration")):
            refused = await asyncio.to_thread(cli, *bad)
            assert refused.returncode == 2 and words in refused.stderr, refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1
        assert node.gateway.load.grid["GARAGE"][0] == 9200  # nothing changed
        lifted = await asyncio.to_thread(cli, "GARAGE", "--clear")
        assert lifted.returncode == 0 and "GARAGE" not in node.gateway.load.grid
