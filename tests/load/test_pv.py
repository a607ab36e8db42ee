"""A green host's charger in `pv` mode follows the site's PV surplus (a simulated site meter
over a real Mosquitto); its green certificate counts only the surplus-covered energy."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import select

from cocharge.load import sites as store
from cocharge.node import running_node
from cocharge.settlement import settle
from cocharge.simulators.site import SiteMeter
from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.stations import registry
from cocharge.store.schema import green_certificates, sessions
from tests.conftest import Broker, settings, ws_url
from tests.load.sites import LOAD, big_ev

# Seconds from the start -> W. The house uses 300 W; the sun rises, a cloud passes, it returns.
PV = [(0, 0), (2, 0), (4, 3000), (9, 3000), (9.5, 800), (12, 800), (13, 2500), (17, 2500)]
HOUSE = [(0, 300)]


async def test_pv_mode_follows_the_surplus_and_certifies_only_it(tmp_path, broker: Broker) -> None:
    async with running_node(str(tmp_path / "pv.db"), settings(
            **{**LOAD, "load_profile_valid_s": 3600, "pv_enable_delay_s": 1.0,
               "pv_disable_delay_s": 1.5}, mqtt_url=broker.url)) as node:
        await store.add_site(node.engine, "HOME")
        await store.add_circuit(node.engine, "HOUSE", "HOME", None, 40.0, 1, 0.0, "mqtt")
        await registry.add_station(node.engine, registry.NewStation("SUNNY", max_power_kw=7.4))
        await store.attach(node.engine, "SUNNY", "HOUSE", "L1", "pv", 32)
        await settle.set_terms(node.engine, "SUNNY", {"green": True})
        await registry.add_member(node.engine, "neighbour", "N1", None)
        await node.gateway.load.reload()
        await asyncio.wait_for(node.mqtt.connected.wait(), 10)  # type: ignore[union-attr]
        box, reader = await open_wallbox(SimConfig(
            url=ws_url(node), station_id="SUNNY", protocol="2.0.1", speed=30, phases=1,
            meter_interval_s=0.25, max_current_a=32))
        meter = SiteMeter(broker.url, "HOME", PV, HOUSE, circuit="HOUSE", interval_s=0.25)
        expected = {"green": 0.0, "all": 0.0, "last": None}

        def covered(wallbox: object) -> None:  # at every meter value the charger sends
            hw = box.hw[1]
            if expected["last"] is not None and hw.power_w > 0:
                delta = hw.register_wh - expected["last"]
                expected["all"] += delta
                expected["green"] += delta * min(1.0, max(0.0, meter.surplus_w()) / hw.power_w)
            expected["last"] = hw.register_wh

        box.meter_listeners.append(covered)
        try:
            feeding = asyncio.create_task(meter.run(18))
            session = await box.charge(1, "N1", ev=big_ev())
            seen = {}
            for at in (1.5, 7.5, 11.8, 16.5):  # before sunrise, sun, cloud, sun again
                await asyncio.sleep(at - meter.elapsed())
                seen[at] = box.hw[1].current_a
            assert seen[1.5] == 0.0  # waits for the sun
            assert 6.0 <= seen[7.5] <= 2700 / 230 + 0.1  # follows the surplus (11.7 A)
            assert seen[11.8] == 0.0  # paused under the cloud (500 W < 6 A), after the delay
            assert 6.0 <= seen[16.5] <= 2200 / 230 + 0.1
            await feeding
            box.request_stop(session.tx_id)
            await asyncio.wait_for(session.done.wait(), 10)
            for _ in range(100):
                async with node.engine.connect() as conn:
                    cert = (await conn.execute(select(green_certificates))).first()
                    row = (await conn.execute(select(sessions))).one()
                if cert is not None:
                    break
                await asyncio.sleep(0.1)
            assert cert is not None, "no green certificate"
            assert row.green_wh == cert.energy_wh
            assert cert.energy_wh < row.energy_wh  # not the whole session any more
            assert abs(cert.energy_wh - expected["green"]) <= 0.15 * expected["green"] + 5, (
                cert.energy_wh, expected)
        finally:
            await close_wallbox(box, reader)


async def test_a_bad_meter_reading_gets_an_error_and_changes_nothing(tmp_path, broker: Broker) -> None:
    import aiomqtt

    async with running_node(str(tmp_path / "m.db"), settings(mqtt_url=broker.url)) as node:
        await store.add_site(node.engine, "HOME")
        await store.add_circuit(node.engine, "HOUSE", "HOME", None, 25.0, 3, 0.0, "mqtt")
        await node.gateway.load.reload()
        await asyncio.wait_for(node.mqtt.connected.wait(), 10)  # type: ignore[union-attr]
        prefix = "cocharge/v1"
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe(f"{prefix}/circuits/HOUSE/load/error")
            await client.subscribe(f"{prefix}/sites/HOME/pv/error")
            for topic, body in ((f"{prefix}/circuits/HOUSE/load/set", {"v": 1, "current_a": "lots"}),
                                (f"{prefix}/sites/HOME/pv/set", {"v": 1, "pv_w": 10, "surplus_w": 5}),
                                (f"{prefix}/circuits/HOUSE/load/set", "not json")):
                await client.publish(topic, body if isinstance(body, str) else json.dumps(body))
                async with asyncio.timeout(5):
                    message = await anext(aiter(client.messages))
                assert "error" in json.loads(message.payload)
            assert node.gateway.load.other == {} and node.gateway.load.surplus == {}
            await client.publish(f"{prefix}/circuits/HOUSE/load/set",
                                 json.dumps({"v": 1, "current_a": [10, 12, 8]}))
            await client.publish(f"{prefix}/sites/HOME/pv/set",
                                 json.dumps({"v": 1, "pv_w": 3000, "house_w": 500}))
            for _ in range(50):
                if node.gateway.load.surplus:
                    break
                await asyncio.sleep(0.1)
        assert node.gateway.load.other["HOUSE"] == (10.0, 12.0, 8.0)
        assert node.gateway.load.surplus["HOME"][0] == 2500.0
