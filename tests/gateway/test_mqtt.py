"""Property backends over MQTT, against a real Mosquitto: retained state, live meter, session
events, commands with acks (once per request_id), refusals, per-property authorisation, and
a broker that is down or comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import func, select

from cocharge.gateway.mqtt import CommandError, _plan, acl_file
from cocharge.mqtt_url import parse_mqtt_url
from cocharge.node import running_node
from cocharge.settlement import ledger, settle
from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.stations import registry
from cocharge.store.schema import mqtt_requests, sessions
from tests.conftest import Broker, raw_station, settings, until, ws_url

P = "cocharge/v1"


class Backend:
    """A property backend: subscribes, collects every message, publishes commands."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: list[tuple[str, Any, bool]] = []  # (topic, payload or None when empty, retain)
        self._task: asyncio.Task[None] | None = None

    async def _collect(self) -> None:
        async for m in self.client.messages:
            try:
                payload = json.loads(m.payload) if m.payload else None
            except ValueError:
                payload = m.payload  # a malformed command, as the test sent it
            self.seen.append((m.topic.value, payload, m.retain))

    async def wait(self, check: Callable[[], Any], timeout: float = 15.0) -> Any:
        for _ in range(int(timeout / 0.05)):
            found = check()
            if found:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"not seen within {timeout} s; seen: {self.seen[-15:]}")

    def on(self, topic: str) -> list[Any]:
        return [p for t, p, _ in self.seen if t == topic]

    async def command(self, verb: str, body: Any, prop: str = "sunrise", retain: bool = False) -> None:
        payload = body if isinstance(body, str | bytes) else json.dumps(body)
        await self.client.publish(f"{P}/{prop}/cmd/{verb}", payload, qos=1, retain=retain)

    def acks(self, request_id: str | None, prop: str = "sunrise") -> list[dict[str, Any]]:
        return [p for p in self.on(f"{P}/{prop}/ack")
                if isinstance(p, dict) and p.get("request_id") == request_id]


@contextlib.asynccontextmanager
async def backend(broker: Broker, *topics: str) -> AsyncIterator[Backend]:
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        for topic in topics or (f"{P}/sunrise/#", f"{P}/gateway/+/status"):
            await client.subscribe(topic, qos=1)
        b = Backend(client)
        b._task = asyncio.create_task(b._collect())
        try:
            yield b
        finally:
            b._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await b._task


async def stations(node: Any) -> None:
    engine = node.engine
    for sid, prop in (("WB1", "sunrise"), ("WB2", "harbour")):
        await registry.add_station(engine, registry.NewStation(sid, owner="op", max_power_kw=11))
        await settle.set_terms(engine, sid, {"model": "property", "property": prop,
                                             "operator": "install-co"})
    await registry.add_member(engine, "Ann", "ANN", None)
    await node.mqtt.refresh()


async def test_state_meter_and_session_events_reach_the_property(broker, sqlite_url):
    async with running_node(sqlite_url, settings(mqtt_url=broker.url, control_interval_s=0.2,
                                                 mqtt_meter_interval_s=0.2)) as node:
        await stations(node)
        await asyncio.wait_for(node.mqtt.connected.wait(), 10)
        async with backend(broker) as b:
            gateway_status = f"{P}/gateway/{node.operator.node_id}/status"
            await b.wait(lambda: any(p["state"] == "online" for p in b.on(gateway_status)))
            box1, r1 = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1", speed=300,
                                                    meter_interval_s=0.05))
            box2, r2 = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB2", speed=300,
                                                    meter_interval_s=0.05))
            try:
                base = f"{P}/sunrise/stations/WB1"
                await b.wait(lambda: any(p["online"] for p in b.on(f"{base}/status")))
                charged = await box1.charge(1, "ANN", energy_wh=1500)
                assert charged.authorized, charged.refused
                await asyncio.wait_for(charged.done.wait(), 20)
                [ended] = await b.wait(lambda: b.on(f"{P}/sunrise/events/ended"))
            finally:
                await close_wallbox(box1, r1)
                await close_wallbox(box2, r2)
            async with node.engine.connect() as conn:
                row = (await conn.execute(select(sessions).where(sessions.c.station_id == "WB1"))).one()
            [started] = b.on(f"{P}/sunrise/events/started")
            assert started["event_id"] == f"started:{row.id}" and started["tag"] == "ANN"
            assert ended["event_id"] == f"ended:{row.id}" and ended["energy_wh"] == row.energy_wh
            assert started["v"] == 1 and ended["station"] == "WB1"
            # The current session was retained while it ran, then cleared.
            current = b.on(f"{base}/connectors/1/session")
            assert current[0]["session"] == row.id and current[-1] is None
            meters = b.on(f"{base}/connectors/1/meter")
            assert meters and all(m["session"] == row.id for m in meters if m["session"])
            readings = [m["energy_wh"] for m in meters]
            assert readings == sorted(readings)
            assert "Charging" in [p["status"] for p in b.on(f"{base}/connectors/1/status")]
            # Another property's station is never published to this property's topics.
            assert not [t for t, _, _ in b.seen if "WB2" in t]
            await b.wait(lambda: any(not p["online"] for p in b.on(f"{base}/status")))
        # A backend that connects later gets the retained state, and no stale session.
        async with backend(broker) as late:
            await late.wait(lambda: late.on(f"{base}/connectors/1/status"))
            await asyncio.sleep(0.3)
            assert late.on(f"{base}/connectors/1/session") == []
            assert late.on(f"{base}/status")[-1]["online"] is False
        async with backend(broker, f"{P}/harbour/#") as harbour:
            await harbour.wait(lambda: harbour.on(f"{P}/harbour/stations/WB2/status"))
    # The gateway went away: its status says so.
    async with backend(broker, f"{P}/gateway/+/status") as after:
        await after.wait(lambda: after.on(gateway_status) and after.on(gateway_status)[-1]["state"] == "offline")


async def test_a_block_during_a_session_is_scheduled_then_applied(broker, sqlite_url):
    """The charger answers ChangeAvailability Scheduled while it charges: the backend hears
    "scheduled", not "accepted", and "applied" once the session ended and the connector is
    Unavailable."""
    async with running_node(sqlite_url, settings(mqtt_url=broker.url, control_interval_s=0.2)) as node:
        await stations(node)
        await asyncio.wait_for(node.mqtt.connected.wait(), 10)
        box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1", speed=60,
                                                   meter_interval_s=0.1))
        try:
            async with backend(broker) as b:
                session = await box.charge(1, "ANN", energy_wh=50_000)
                await asyncio.wait_for(session.started.wait(), 10)
                await b.command("block", {"v": 1, "request_id": "s-1", "station": "WB1",
                                          "connector": 1})
                answers = await b.wait(lambda: len(b.acks("s-1")) >= 2 and b.acks("s-1"))
                assert [a["state"] for a in answers] == ["received", "scheduled"], answers
                assert answers[1]["ocpp_status"] == "Scheduled"
                await asyncio.sleep(0.3)
                assert len(b.acks("s-1")) == 2  # not applied while the session runs
                box.request_stop(session.tx_id)
                answers = await b.wait(lambda: len(b.acks("s-1")) >= 3 and b.acks("s-1"))
                assert answers[2]["state"] == "applied"
                assert answers[2]["ocpp_status"] == "Unavailable"
                assert not box.hw[1].operative
        finally:
            await close_wallbox(box, reader)


async def test_commands_are_acked_applied_once_and_checked(broker, sqlite_url):
    async with running_node(sqlite_url, settings(mqtt_url=broker.url, control_interval_s=0.2)) as node:
        await stations(node)
        await asyncio.wait_for(node.mqtt.connected.wait(), 10)
        box1, r1 = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1", speed=60,
                                                meter_interval_s=0.1))
        box2, r2 = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB2"))
        try:
            async with backend(broker) as b:
                await b.command("block", {"v": 1, "request_id": "r-1", "station": "WB1", "connector": 1})
                answers = await b.wait(lambda: len(b.acks("r-1")) >= 2 and b.acks("r-1"))
                assert [a["state"] for a in answers] == ["received", "accepted"]
                assert answers[1]["ocpp_status"] == "Accepted"
                hw = box1.hw[1]
                assert not hw.operative and hw.bay_locked
                # Released by another request; then the first one arrives again: same answer,
                # not applied again (the bay stays released).
                await b.command("release", {"request_id": "r-2", "station": "WB1", "connector": 1})
                await b.wait(lambda: len(b.acks("r-2")) >= 2)
                assert hw.operative and not hw.bay_locked
                await b.command("block", {"v": 1, "request_id": "r-1", "station": "WB1", "connector": 1})
                await b.wait(lambda: len(b.acks("r-1")) >= 4)
                assert [a["state"] for a in b.acks("r-1")] == ["received", "accepted"] * 2
                await asyncio.sleep(0.3)
                assert hw.operative and not hw.bay_locked
                async with node.engine.connect() as conn:
                    assert await conn.scalar(select(func.count()).select_from(mqtt_requests)) == 2
                # Refusals, each naming the problem; nothing is applied.
                await b.command("block", {"request_id": "r-3", "station": "WB1", "connector": 1},
                                retain=True)
                [ack] = await b.wait(lambda: b.acks("r-3"))
                assert ack["state"] == "error" and "retained" in ack["error"]
                await b.command("block", "{not json")
                [ack] = await b.wait(lambda: b.acks(None))
                assert ack["state"] == "error" and "not JSON" in ack["error"]
                await b.command("block", {"request_id": "r-4", "station": "WB1", "connector": "one"})
                [ack] = await b.wait(lambda: b.acks("r-4"))
                assert ack["state"] == "error" and "connector" in ack["error"]
                await b.command("launch", {"request_id": "r-5", "station": "WB1"})
                [ack] = await b.wait(lambda: b.acks("r-5"))
                assert "unknown command" in ack["error"]
                await b.command("release", {"request_id": "r-1", "station": "WB1", "connector": 1})
                await b.wait(lambda: any(a["state"] == "error" for a in b.acks("r-1")))
                assert "already used" in b.acks("r-1")[-1]["error"]
                assert hw.operative and not hw.bay_locked
                # Another property's station, commanded from this property's topic.
                await b.command("block", {"request_id": "r-6", "station": "WB2", "connector": 1})
                answers = await b.wait(lambda: len(b.acks("r-6")) >= 2 and b.acks("r-6"))
                assert answers[1]["state"] == "rejected" and "harbour" not in answers[1]["error"]
                assert box2.hw[1].operative and not box2.hw[1].bay_locked
                # Expired before it arrived.
                await b.command("set-availability", {"request_id": "r-7", "station": "WB1",
                                                     "connector": 1, "operative": False,
                                                     "expires_at": "2020-01-01T00:00:00Z"})
                answers = await b.wait(lambda: len(b.acks("r-7")) >= 2 and b.acks("r-7"))
                assert answers[1]["state"] == "expired" and hw.operative
                # Reserve, cancel, and a remote stop of the running session by connector.
                await b.command("reserve", {"request_id": "r-8", "station": "WB1", "connector": 1,
                                            "tag": "ANN", "minutes": 30})
                answers = await b.wait(lambda: len(b.acks("r-8")) >= 2 and b.acks("r-8"))
                assert answers[1]["state"] == "accepted" and hw.reservation is not None
                await b.command("cancel-reservation", {"request_id": "r-9", "station": "WB1",
                                                       "reservation_id": answers[1]["reservation_id"]})
                await b.wait(lambda: len(b.acks("r-9")) >= 2)
                assert b.acks("r-9")[1]["state"] == "accepted" and hw.reservation is None
                charging = await box1.charge(1, "ANN", energy_wh=50_000)
                await asyncio.wait_for(charging.started.wait(), 10)
                await b.command("remote-stop", {"request_id": "r-10", "station": "WB1", "connector": 1})
                answers = await b.wait(lambda: len(b.acks("r-10")) >= 2 and b.acks("r-10"))
                assert answers[1]["state"] == "accepted"
                await asyncio.wait_for(charging.done.wait(), 15)
                assert charging.energy_wh < 50_000
        finally:
            await close_wallbox(box1, r1)
            await close_wallbox(box2, r2)


async def test_ocpp_keeps_working_while_the_broker_is_down_and_it_reconnects(sqlite_url):
    broker = Broker()  # not started: the broker is down
    async with running_node(sqlite_url, settings(mqtt_url=broker.url, mqtt_queue_size=5,
                                                 mqtt_meter_interval_s=0)) as node:
        await stations(node)
        box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1", speed=300,
                                                   meter_interval_s=0.05))
        try:
            charged = await box.charge(1, "ANN", energy_wh=1000)
            assert charged.authorized
            await asyncio.wait_for(charged.done.wait(), 20)  # OCPP is not held up by MQTT
            assert not node.mqtt.connected.is_set()
            assert node.mqtt.dropped > 0 and node.mqtt.queue.qsize() == 5  # bounded, counted
            await broker.start()
            try:
                await asyncio.wait_for(node.mqtt.connected.wait(), 40)  # reconnects with backoff
                async with backend(broker) as b:
                    # The retained state is published again on reconnect.
                    await b.wait(lambda: b.on(f"{P}/sunrise/stations/WB1/status"))
                    await b.command("block", {"request_id": "k-1", "station": "WB1", "connector": 1})
                    await b.wait(lambda: len(b.acks("k-1")) >= 2)
                    assert b.acks("k-1")[1]["state"] == "accepted"
            finally:
                await broker.stop()
                broker.remove()
        finally:
            await close_wallbox(box, reader)


def test_urls_plans_and_the_acl_file():
    target = parse_mqtt_url("mqtt://gw:s%40cret@broker.example:8883/acme/v1")
    assert (target.host, target.port, target.username, target.password, target.prefix) == (
        "broker.example", 8883, "gw", "s@cret", "acme/v1")
    assert parse_mqtt_url("mqtt://localhost").prefix == "cocharge/v1"
    for bad in ("http://x", "mqtt://", "mqtt://h:99999", "mqtt://h/a/#"):
        with pytest.raises(ValueError):
            parse_mqtt_url(bad)
    assert _plan("remote-stop", {"request_id": "a", "station": "S", "session_id": 7}).session_id == 7
    for verb, body, words in [
        ("remote-stop", {"request_id": "a", "station": "S"}, "one of them"),
        ("reserve", {"request_id": "a", "station": "S", "connector": 1, "tag": "T", "minutes": 0},
         "minutes"),
        ("block", {"request_id": "", "station": "S", "connector": 1}, "request_id"),
        ("block", {"request_id": "a", "station": "S", "connector": 1, "force": True}, "takes no force"),
        ("block", {"v": 2, "request_id": "a", "station": "S", "connector": 1}, "version"),
    ]:
        with pytest.raises(CommandError, match=words):
            _plan(verb, body)
    acl = acl_file(["sunrise", "harbour"])
    assert "user sunrise\ntopic read cocharge/v1/gateway/+/status" in acl
    assert "topic write cocharge/v1/sunrise/cmd/+" in acl and "topic readwrite cocharge/v1/#" in acl
    assert "harbour/stations" not in acl.split("user sunrise")[1].split("user")[0]


def test_mqtt_cli_acl_and_a_bad_url(tmp_path):
    from tests.cli.test_cli import cocharge

    db = str(tmp_path / "c.db")
    assert cocharge("station", "add", "WB1", db=db).returncode == 0
    assert cocharge("split", "set", "WB1", "--model", "property", "--property", "sunrise",
                    "--operator", "install-co", db=db).returncode == 0
    acl = cocharge("mqtt", "acl", db=db)
    assert acl.returncode == 0 and "user sunrise" in acl.stdout
    assert "topic write cocharge/v1/sunrise/cmd/+" in acl.stdout
    # moved to the host model, the station no longer makes sunrise a property of the ACL
    assert cocharge("split", "set", "WB1", "--model", "host", db=db).returncode == 0
    acl = cocharge("mqtt", "acl", db=db)
    assert acl.returncode == 0 and "sunrise" not in acl.stdout
    bad = cocharge("serve", "--mqtt", "http://broker", db=db)
    assert bad.returncode == 2 and "mqtt://" in bad.stderr


async def test_two_nodes_one_database_one_broker(broker, pg_url):
    from dataclasses import replace

    from cocharge.gateway.operator_client import send_request
    from cocharge.store.schema import stations as stations_table

    config = settings(mqtt_url=broker.url, control_interval_s=0.2)
    async with running_node(pg_url, config) as a, running_node(pg_url, config) as b:
        await stations(a)
        await b.mqtt.refresh()
        await asyncio.wait_for(a.mqtt.connected.wait(), 10)
        await asyncio.wait_for(b.mqtt.connected.wait(), 10)

        async def holder() -> str | None:
            async with a.engine.connect() as conn:
                return await conn.scalar(select(stations_table.c.node).where(stations_table.c.id == "WB1"))

        box, reader = await open_wallbox(SimConfig(url=ws_url(a), station_id="WB1", speed=120,
                                                   meter_interval_s=0.1))
        try:
            for _ in range(100):
                if await holder() == a.operator.node_id:
                    break
                await asyncio.sleep(0.05)
            assert await holder() == a.operator.node_id
            hw = box.hw[1]
            async with backend(broker) as back:
                # The broker hands each command to one node (a shared subscription); the one
                # that does not hold WB1 forwards it through the broker to the one that does.
                for n in range(1, 7):
                    verb = "block" if n % 2 else "release"
                    await back.command(verb, {"request_id": f"m-{n}", "station": "WB1", "connector": 1})
                    answers = await back.wait(lambda n=n: len(back.acks(f"m-{n}")) >= 2 and back.acks(f"m-{n}"))
                    assert answers[1]["state"] == "accepted", answers
                    assert hw.bay_locked == (verb == "block")
                async with a.engine.connect() as conn:
                    received_by = set((await conn.execute(select(mqtt_requests.c.node))).scalars())
                assert received_by == {a.operator.node_id, b.operator.node_id}
            # The operator channel of either node reaches the station: the newest node (b) is
            # asked first and forwards to a.
            answer = await send_request(a.engine, {"command": "availability", "station": "WB1",
                                                   "args": {"connector_id": 1, "operative": True}})
            assert answer["accepted"] and hw.operative
            # A session starts on a; the station reconnects to b; the session goes on and ends once.
            charging = await box.charge(1, "ANN", energy_wh=3000)
            assert charging.authorized, charging.refused
            for _ in range(200):
                if charging.energy_wh > 500:
                    break
                await asyncio.sleep(0.05)
            await box.drop_connection()
            box.config = replace(box.config, url=ws_url(b))
            await box.reconnect()
            for _ in range(100):
                if await holder() == b.operator.node_id:
                    break
                await asyncio.sleep(0.05)
            assert await holder() == b.operator.node_id
            await asyncio.wait_for(charging.done.wait(), 30)
            await asyncio.sleep(0.5)
            async with a.engine.connect() as conn:
                rows = (await conn.execute(select(sessions).where(sessions.c.station_id == "WB1"))).all()
            [row] = rows
            assert row.ended_at is not None and row.energy_wh == pytest.approx(3000, rel=0.02)
            await b.gateway.settler.drain()
            await a.gateway.settler.drain()
            async with a.engine.connect() as conn:
                from cocharge.store.schema import settlements
                settled = (await conn.execute(select(settlements).where(
                    settlements.c.session_id == row.id))).all()
            assert len(settled) == 1
        finally:
            await close_wallbox(box, reader)


async def test_the_broker_acl_keeps_each_property_to_its_own_stations(sqlite_url):
    users = {"cocharge": "gw-secret", "sunrise": "s-secret", "harbour": "h-secret"}
    broker = Broker(users=users, acl=acl_file(["sunrise", "harbour"]))
    await broker.start()
    try:
        url = f"mqtt://cocharge:gw-secret@127.0.0.1:{broker.port}"
        async with running_node(sqlite_url, settings(mqtt_url=url)) as node:
            await stations(node)
            await asyncio.wait_for(node.mqtt.connected.wait(), 10)
            box1, r1 = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1"))
            box2, r2 = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB2"))
            try:
                async with aiomqtt.Client("127.0.0.1", broker.port, username="sunrise",
                                          password="s-secret") as sun_client, \
                        aiomqtt.Client("127.0.0.1", broker.port, username="harbour",
                                       password="h-secret") as harbour_client:
                    sunrise = Backend(sun_client)
                    await sun_client.subscribe(f"{P}/#", qos=1)  # asks for everything
                    sunrise._task = asyncio.create_task(sunrise._collect())
                    await sunrise.wait(lambda: sunrise.on(f"{P}/sunrise/stations/WB1/status"))
                    # harbour tries to block sunrise's station: the broker drops it.
                    await harbour_client.publish(f"{P}/sunrise/cmd/block", json.dumps(
                        {"request_id": "evil-1", "station": "WB1", "connector": 1}), qos=1)
                    # sunrise's own command works.
                    await sunrise.command("block", {"request_id": "ok-1", "station": "WB1",
                                                    "connector": 1})
                    await sunrise.wait(lambda: len(sunrise.acks("ok-1")) >= 2)
                    await asyncio.sleep(0.5)
                    assert sunrise.acks("evil-1") == []
                    async with node.engine.connect() as conn:
                        ids = set((await conn.execute(select(mqtt_requests.c.request_id))).scalars())
                    assert ids == {"ok-1"}
                    # sunrise never receives harbour's station, nor the gateways' internal topics.
                    assert not [t for t, _, _ in sunrise.seen
                                if "WB2" in t or "/harbour/" in t or "/_nodes/" in t]
                    sunrise._task.cancel()
                with pytest.raises(aiomqtt.MqttError):
                    async with aiomqtt.Client("127.0.0.1", broker.port):  # anonymous: refused
                        pass
            finally:
                await close_wallbox(box1, r1)
                await close_wallbox(box2, r2)
    finally:
        await broker.stop()
        broker.remove()


@contextlib.asynccontextmanager
async def sunrise_charger(broker: Broker, db: str, protocol: str, **overrides: Any
                          ) -> AsyncIterator[tuple[Any, Backend, Any]]:
    """A node with the properties' stations, the sunrise backend on MQTT, and sunrise's WB1
    as a simulated charger of `protocol`: (node, backend, wallbox)."""
    async with running_node(db, settings(mqtt_url=broker.url, **overrides)) as node:
        await stations(node)
        await asyncio.wait_for(node.mqtt.connected.wait(), 10)
        async with backend(broker) as b:
            box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1",
                                                       protocol=protocol, speed=300,
                                                       meter_interval_s=0.05))
            try:
                yield node, b, box
            finally:
                await close_wallbox(box, reader)


async def test_fleet_operations_and_their_events_over_mqtt(broker, sqlite_url):
    """Every named operation of `cocharge remote` is a verb: the charger's answer comes back
    in the ack, what it reports later (log upload, monitor events, firmware) as events; a
    property cannot send raw OCPP, and a wrong field is refused before anything is sent."""
    async with sunrise_charger(broker, sqlite_url, "2.0.1", control_interval_s=0.2) as (
            node, b, box):
        await b.wait(lambda: any(p["online"] for p in
                                 b.on(f"{P}/sunrise/stations/WB1/status")))
        await b.command("get-log", {"v": 1, "request_id": "log-1", "station": "WB1",
                                    "log_type": "DiagnosticsLog"})
        [_, done] = await b.wait(lambda: len(b.acks("log-1")) == 2 and b.acks("log-1"))
        assert done["state"] == "accepted" and done["ocpp_status"] == "Accepted"
        upload = done["response"]["requestId"]
        logs = await b.wait(lambda: [e for e in b.on(f"{P}/sunrise/events/log")
                                     if e["status"] == "Uploaded"])
        assert logs[0]["station"] == "WB1" and logs[0]["request_id"] == upload
        assert logs[0]["event_id"].startswith("log:WB1:")

        await b.command("set-variable-monitoring", {
            "v": 1, "request_id": "mon-1", "station": "WB1", "variable": "EVSE.Power",
            "type": "UpperThreshold", "value": 500, "evse_id": 1})
        [_, done] = await b.wait(lambda: len(b.acks("mon-1")) == 2 and b.acks("mon-1"))
        assert done["state"] == "accepted", done
        monitor_id = done["response"]["setMonitoringResult"][0]["id"]
        charged = await box.charge(1, "ANN", energy_wh=1000)
        assert charged.authorized
        fired = await b.wait(lambda: b.on(f"{P}/sunrise/events/monitor"))
        [data] = fired[0]["event_data"]
        assert data["variable_monitoring_id"] == monitor_id

        # Firmware progress of the property's station, as events.
        await b.command("update-firmware", {"v": 1, "request_id": "fw-1",
                                            "station": "WB1", "url": "http://127.0.0.1:9/x"})
        await b.wait(lambda: len(b.acks("fw-1")) == 2)
        failed = await b.wait(lambda: [e for e in b.on(f"{P}/sunrise/events/firmware")
                                       if e["status"] == "DownloadFailed"])
        assert failed[0]["station"] == "WB1"

        # Refused with the reason, nothing sent: a wrong type, raw OCPP, another
        # property's station.
        await b.command("set-monitoring-level", {"v": 1, "request_id": "bad-1",
                                                 "station": "WB1", "severity": "low"})
        [bad] = await b.wait(lambda: b.acks("bad-1"))
        assert bad["state"] == "error" and "severity must be a whole number" in bad["error"]
        await b.command("call", {"v": 1, "request_id": "bad-2", "station": "WB1",
                                 "action": "Reset", "payload": {"type": "Immediate"}})
        [bad] = await b.wait(lambda: b.acks("bad-2"))
        assert bad["state"] == "error" and "unknown command 'call'" in bad["error"]
        await b.command("get-log", {"v": 1, "request_id": "bad-3", "station": "WB2"})
        [_, bad] = await b.wait(lambda: len(b.acks("bad-3")) == 2 and b.acks("bad-3"))
        assert bad["state"] == "rejected" and "not one of sunrise" in bad["error"]
        assert box.monitoring_level == 9


# verb, fields, expected state at a 1.6 station, at a 2.0.1 station ("error": refused before
# anything is sent, naming why; "rejected": the gateway or the charger refused it).
OPERATION_CASES = [
    ("reset", {"hard": False}, "accepted", "accepted"),
    ("trigger", {"message": "Heartbeat"}, "accepted", "accepted"),
    ("unlock", {"connector_id": 1}, "accepted", "accepted"),
    ("config-get", {"keys": ["HeartbeatInterval"]}, "accepted", "rejected"),
    ("config-set", {"key": "OCPPCommCtrlr.HeartbeatInterval", "value": "120"}, "rejected",
     "accepted"),
    ("set-variables", {"values": {"OCPPCommCtrlr.HeartbeatInterval": "90"}}, "rejected",
     "accepted"),
    ("clear-cache", {}, "accepted", "accepted"),
    ("data-transfer", {"vendor_id": "acme", "data": "hi"}, "accepted", "accepted"),
    ("share-lock", {"connector_id": 1, "locked": False}, "accepted", "accepted"),
    ("get-base-report", {}, "rejected", "accepted"),
    ("get-report", {"component_variables": ["EVSE"]}, "rejected", "accepted"),
    ("get-transaction-status", {}, "rejected", "accepted"),
    ("get-local-list-version", {}, "accepted", "accepted"),
    ("send-local-list", {}, "rejected", "rejected"),  # no sharing rules: no list to send
    ("get-diagnostics", {}, "accepted", "rejected"),
    ("get-log", {"log_type": "SecurityLog"}, "accepted", "accepted"),
    ("update-firmware", {"url": "http://127.0.0.1:9/fw"}, "accepted", "accepted"),
    ("set-network-profile", {"configuration_slot": 1, "ocpp_csms_url": "ws://gw/ocpp",
                             "security_profile": 1}, "rejected", "accepted"),
    ("set-variable-monitoring", {"variable": "EVSE.Power", "type": "Delta", "value": 100},
     "rejected", "accepted"),
    ("set-monitoring-base", {"monitoring_base": "All"}, "rejected", "accepted"),
    ("set-monitoring-level", {"severity": 5}, "rejected", "accepted"),
    ("get-monitoring-report", {}, "rejected", "accepted"),
    ("clear-variable-monitoring", {"ids": [1]}, "rejected", "accepted"),
    ("customer-information", {"id_token": "ANN"}, "rejected", "accepted"),
    ("start", {"tag": "ANN", "connector_id": 1}, "accepted", "accepted"),
    ("set-monitoring-level", {"severity": 12}, "error", "error"),
    ("get-log", {"log_type": 5}, "error", "error"),
    # A station's password is the operator's: whoever sets it can pose as the station.
    ("config-set", {"key": "AuthorizationKey", "value": "p" * 20}, "error", "error"),
    ("config-set", {"key": "SecurityCtrlr.BasicAuthPassword", "value": "p" * 20}, "error",
     "error"),
    ("rotate-password", {}, "error", "error"),
    ("extended-trigger-message", {"message": "Heartbeat"}, "accepted", "accepted"),
    ("get-installed-certificate-ids", {"certificate_types": ["CSMSRootCertificate"]},
     "rejected", "rejected"),  # none installed: NotFound
    # Whom the station trusts and how it proves who it is: the operator's alone.
    ("install-certificate", {"certificate_type": "CSMSRootCertificate", "certificate": "x"},
     "error", "error"),
    ("delete-certificate", {"issuer_name_hash": "a", "issuer_key_hash": "b",
                            "serial_number": "1"}, "error", "error"),
    ("certificate-signed", {"certificate_chain": "x"}, "error", "error"),
    ("security-profile", {"profile": 1, "force": True}, "error", "error"),
]


@pytest.mark.parametrize("protocol", ["1.6", "2.0.1"])
async def test_every_operation_is_an_mqtt_verb(broker, sqlite_url, protocol):
    async with running_node(sqlite_url, settings(mqtt_url=broker.url)) as node:
        await stations(node)
        await asyncio.wait_for(node.mqtt.connected.wait(), 10)
        async with backend(broker) as b:
            box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1",
                                                       protocol=protocol, speed=300))
            try:
                for n, (verb, fields, at16, at201) in enumerate(OPERATION_CASES):
                    rid = f"op-{n}"
                    await b.command(verb, {"v": 1, "request_id": rid, "station": "WB1",
                                           **fields})
                    want = at16 if protocol == "1.6" else at201
                    final = await b.wait(lambda r=rid: [a for a in b.acks(r)
                                                        if a["state"] != "received"])
                    assert final[0]["state"] == want, (verb, fields, final)
                    if want == "accepted":
                        assert "ocpp_status" in final[0] and "response" in final[0]
                    else:
                        assert final[0].get("error") or final[0].get("ocpp_status"), final
                kept = await registry.list_station_events(node.engine, "WB1", "command", 100)
                sent = [k["details"]["command"] for k in kept]
                assert "customer-information" in sent or protocol == "1.6"
                assert "get-log" in sent and "reset" in sent
            finally:
                await close_wallbox(box, reader)


async def test_critical_security_events_are_raised_and_shown(broker, sqlite_url):
    """Kept with their criticality (OCPP's list, which differs between the versions); the
    critical ones reach the property as events and `station show`."""
    from tests.conftest import raw_station

    now = "2026-11-01T10:00:00Z"
    async with running_node(sqlite_url, settings(mqtt_url=broker.url)) as node:
        await stations(node)
        await asyncio.wait_for(node.mqtt.connected.wait(), 10)
        async with backend(broker) as b:
            wb1 = await raw_station(node, "WB1", "ocpp2.0.1")
            for kind in ("InvalidMessages", "InvalidFirmwareSignature", "TamperDetectionActivated"):
                payload = {"type": kind, "timestamp": now}
                if kind == "TamperDetectionActivated":
                    payload["techInfo"] = "case opened"
                answer = await wb1.call("SecurityEventNotification", payload)
                assert answer[0] == 3, answer
            wb1_16 = await raw_station(node, "WB2", "ocpp1.6")
            await wb1_16.call("SecurityEventNotification", {"type": "InvalidFirmwareSignature",
                                                            "timestamp": now})
            raised = await b.wait(lambda: len(b.on(f"{P}/sunrise/events/security")) >= 2
                                  and b.on(f"{P}/sunrise/events/security"))
            await asyncio.sleep(0.3)
            assert sorted(e["type"] for e in b.on(f"{P}/sunrise/events/security")) == [
                "InvalidFirmwareSignature", "TamperDetectionActivated"]
            assert all(e["criticality"] == "critical" for e in raised)
            kept = await registry.list_station_events(node.engine, "WB1", "security")
            assert {e["details"]["type"]: e["details"]["criticality"] for e in kept} == {
                "InvalidMessages": "normal", "InvalidFirmwareSignature": "critical",
                "TamperDetectionActivated": "critical"}
            # 1.6's whitepaper does not call a bad firmware signature critical.
            [kept16] = await registry.list_station_events(node.engine, "WB2", "security")
            assert kept16["details"]["criticality"] == "normal"
            shown = await registry.get_station(node.engine, "WB1")
            assert len(shown["critical_security_events"]) == 2
            assert any("TamperDetectionActivated (case opened)" in e
                       for e in shown["critical_security_events"])
            assert (await registry.get_station(node.engine, "WB2"))[
                "critical_security_events"] is None


async def test_reward_events_arrive_over_mqtt_acknowledged_once(broker, sqlite_url):
    """The community app reports events on its own command topic: applied once per event
    ref (and answered again, not applied, for a repeated request), refused when unknown."""
    from cocharge.settlement import loyalty

    async with running_node(sqlite_url, settings(mqtt_url=broker.url)) as node:
        await registry.add_member(node.engine, "Ann", "ANN", None)
        await loyalty.set_rule(node.engine, "events.share_green_bill", "coins=20,limit=2,period=month")
        await asyncio.wait_for(node.mqtt.connected.wait(), 10)
        async with backend(broker, f"{P}/app/#") as b:
            event = {"v": 1, "request_id": "e-1", "tag": "ANN", "event": "share_green_bill",
                     "ref": "bill-7"}
            await b.command("reward-event", event, prop="app")
            answers = await b.wait(lambda: len(b.acks("e-1", "app")) >= 2 and b.acks("e-1", "app"))
            assert [a["state"] for a in answers] == ["received", "accepted"]
            assert answers[1]["coins"] == 20 and answers[1]["new"] is True
            # The same request again: the same answers, nothing applied twice.
            await b.command("reward-event", event, prop="app")
            await b.wait(lambda: len(b.acks("e-1", "app")) >= 4)
            # The same event under another request id: acknowledged, not applied again.
            await b.command("reward-event", {**event, "request_id": "e-2"}, prop="app")
            [_, again] = await b.wait(lambda: len(b.acks("e-2", "app")) >= 2 and b.acks("e-2", "app"))
            assert again["state"] == "accepted" and again["new"] is False
            for rid, body, words in [
                ("e-3", {"tag": "ANN", "event": "dancing", "ref": "x"}, "unknown event"),
                ("e-4", {"tag": "NOBODY", "event": "share_green_bill", "ref": "x"}, "no member"),
                ("e-5", {"tag": "ANN", "event": "share_green_bill"}, "ref must be"),
            ]:
                await b.command("reward-event", {"request_id": rid, **body}, prop="app")
                found = await b.wait(lambda rid=rid: [a for a in b.acks(rid, "app")
                                                      if a["state"] != "received"])
                assert found[0]["state"] in ("rejected", "error") and words in found[0]["error"]
        async with node.engine.connect() as conn:
            assert await ledger.balance(conn, "coins:ANN", "COIN") == 20


async def test_21_der_controls_and_card_payments_reach_the_property(broker, sqlite_url):
    """A property's 2.1 charger over MQTT: a grid code sent with the `set-der-control` verb,
    its start published as an event; a card payment at the charger's terminal published as
    a payment event, booked for its session."""
    async with sunrise_charger(broker, sqlite_url, "2.1", tariff_sync_s=0.3) as (_, b, box):
        await b.command("set-der-control", {
            "v": 1, "request_id": "der-1", "station": "WB1", "control_id": "dso-1",
            "control_type": "LimitMaxDischarge",
            "settings": {"priority": 0, "pctMaxDischargePower": 40}})
        [_, done] = await b.wait(lambda: len(b.acks("der-1")) == 2 and b.acks("der-1"))
        assert done["state"] == "accepted", done
        started = await b.wait(lambda: b.on(f"{P}/sunrise/events/der-control"))
        assert started[0]["control_id"] == "dso-1" and started[0]["started"] is True
        session = await box.charge(1, "card:4000123412341234", energy_wh=1000)
        await asyncio.wait_for(session.done.wait(), 30)
        paid = await b.wait(lambda: b.on(f"{P}/sunrise/events/payment"))
        assert paid[0]["station"] == "WB1" and paid[0]["status"] == "Settled"
        assert paid[0]["booked"]["paid_fen"] > 0 and paid[0]["booked"]["left_fen"] == 0


async def test_a_password_change_reaches_the_other_node_at_once(broker, pg_url):
    """Issue 32, item 3: node b checked a station's old password (and would believe it until
    its directory's next refresh); node a changes it and tells the others over the broker:
    b refuses the old password within a second and takes the new one."""
    from websockets.exceptions import InvalidStatus

    old, new = "old-password-1234", "new-password-5678"
    config = settings(mqtt_url=broker.url, directory_refresh_s=3600)
    async with running_node(pg_url, config) as a, running_node(pg_url, config) as b:
        await registry.add_station(a.engine, registry.NewStation("PW1", password=old))
        await asyncio.wait_for(a.mqtt.connected.wait(), 10)
        await asyncio.wait_for(b.mqtt.connected.wait(), 10)

        async def connects(node: Any, password: str) -> bool:
            try:
                box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="PW1",
                                                           protocol="2.0.1", password=password,
                                                           connect_attempts=1))
            except InvalidStatus:
                return False
            await close_wallbox(box, reader)
            return True

        assert await connects(b, old)  # b has checked it: remembered
        await registry.update_station(a.engine, "PW1", password=new)
        a.gateway.service.tell_nodes("PW1")  # what a does after a change of its own
        refused_at = asyncio.get_running_loop().time()
        while await connects(b, old):
            assert asyncio.get_running_loop().time() - refused_at < 1.0, "b still takes it"
            await asyncio.sleep(0.05)
        assert await connects(b, new)


async def test_a_live_connection_on_another_node_is_not_taken_over(broker, pg_url):
    """Issue 32, item 3: a password-less station connected to node a; a second connection
    in its name at node b is refused while a's connection answers pings (b asks a through
    the broker). Once a's connection stops answering (a half-open link), b takes the
    station and a closes its old connection."""
    from websockets.exceptions import InvalidStatus

    config = settings(mqtt_url=broker.url, takeover_ping_s=0.5)
    async with running_node(pg_url, config) as a, running_node(pg_url, config) as b:
        await registry.add_station(a.engine, registry.NewStation("TK1"))
        await asyncio.wait_for(a.mqtt.connected.wait(), 10)
        await asyncio.wait_for(b.mqtt.connected.wait(), 10)
        first = await raw_station(a, "TK1")
        await until(lambda: b.gateway.holder("TK1"))  # recorded in the database
        with pytest.raises(InvalidStatus) as refused:
            await raw_station(b, "TK1")
        assert refused.value.response.status_code == 409
        assert "TK1" in a.gateway.connections
        # a's charger goes silent (no pongs): the next connection at b takes its place.
        first.ws.transport.pause_reading()
        second = await raw_station(b, "TK1")
        assert (await second.call("Heartbeat", {}))[0] == 3
        await until(lambda: asyncio.sleep(0, "TK1" not in a.gateway.connections))
        assert "TK1" in b.gateway.connections


async def test_a_blocked_member_leaves_the_chargers_of_every_node_at_once(broker, pg_url):
    """Issue 32, item 3: a member blocked through node a (the operator channel, as `cocharge
    member block` and the API do) leaves the local list of a charger held by node b within
    a second or two, not at b's next list check (an hour here)."""
    from cocharge.stations import sharing

    config = settings(mqtt_url=broker.url, control_interval_s=0.2, local_list_sync_s=3600)
    async with running_node(pg_url, config) as a, running_node(pg_url, config) as b:
        await registry.add_station(a.engine, registry.NewStation("LL1", max_power_kw=11))
        for tag in ("OWNER", "NEIGHBOUR"):
            await registry.add_member(a.engine, tag.title(), tag, None)
        await sharing.set_rules(a.engine, "LL1", 0, {"owner_tags": frozenset({"OWNER"}),
                                                     "allowed_tags": frozenset({"NEIGHBOUR"})})
        await asyncio.wait_for(a.mqtt.connected.wait(), 10)
        await asyncio.wait_for(b.mqtt.connected.wait(), 10)
        box, reader = await open_wallbox(SimConfig(url=ws_url(b), station_id="LL1",
                                                   protocol="2.0.1"))
        try:
            await until(lambda: asyncio.sleep(0, set(box.local_list) == {"OWNER", "NEIGHBOUR"}))
            await registry.block_member(a.engine, "NEIGHBOUR")
            answer = await a.operator.answer({"command": "member-changed", "station": "",
                                              "args": {"tag": "NEIGHBOUR"}})
            assert answer == {"ok": True}
            await until(lambda: asyncio.sleep(0, set(box.local_list) == {"OWNER"}), 5)
        finally:
            await close_wallbox(box, reader)


async def test_a_station_moved_off_the_property_model_leaves_its_property(broker, sqlite_url):
    """`split set WB1 --model host` ends the property's hold on WB1 at once: its next command
    is refused (not after the map's next refresh), nothing is applied, and WB1's events no
    longer reach that property (the name stays in the terms; the model decides)."""
    async with running_node(sqlite_url, settings(mqtt_url=broker.url)) as node:
        await stations(node)
        await asyncio.wait_for(node.mqtt.connected.wait(), 10)
        box1, r1 = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1"))
        box2, r2 = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB2"))
        try:
            async with backend(broker, f"{P}/#") as b:
                await b.command("block", {"request_id": "r-1", "station": "WB1", "connector": 1})
                answers = await b.wait(lambda: len(b.acks("r-1")) >= 2 and b.acks("r-1"))
                assert answers[1]["state"] == "accepted" and not box1.hw[1].operative
                await settle.set_terms(node.engine, "WB1", {"model": "host"})
                async with node.engine.connect() as conn:
                    assert (await settle.terms_of(conn, "WB1")).property == "sunrise"
                await b.command("release", {"request_id": "r-2", "station": "WB1", "connector": 1})
                answers = await b.wait(lambda: len(b.acks("r-2")) >= 2 and b.acks("r-2"))
                assert answers[1]["state"] == "rejected" and "not one of" in answers[1]["error"]
                await asyncio.sleep(0.3)
                assert not box1.hw[1].operative  # still blocked: the release was not applied
                await node.mqtt.refresh()  # (as every few seconds)
                seen = len(b.seen)
                await close_wallbox(box1, r1)
                await until(lambda: _gone(node, "WB1"))
                await close_wallbox(box2, r2)  # WB2 is still harbour's: its news comes after
                await b.wait(lambda: any(t == f"{P}/harbour/stations/WB2/status" and p
                                         and p["online"] is False for t, p, _ in b.seen[seen:]))
                assert [t for t, _, _ in b.seen[seen:] if "WB1" in t] == []
        finally:
            await close_wallbox(box1, r1)
            await close_wallbox(box2, r2)


async def _gone(node: Any, station_id: str) -> bool:
    return station_id not in node.gateway.connections
