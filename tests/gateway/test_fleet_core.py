"""Fleet core: no station hurts another; admission under a storm; memory agrees with the DB."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
from sqlalchemy import delete, func, select, text
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from cocharge.node import running_node
from cocharge.stations import registry
from cocharge.stations.directory import Coalescer, StationDirectory
from cocharge.store.schema import connector_status, meter_samples, sessions, stations
from tests.conftest import raw_station, register, settings, until, ws_url


def status(connector: int, state: str = "Available") -> dict:
    return {"connectorId": connector, "errorCode": "NoError", "status": state}


def meter(value: str, connector: int = 1) -> dict:
    return {"connectorId": connector, "meterValue": [{"timestamp": "2026-11-01T10:00:00Z",
            "sampledValue": [{"value": value, "measurand": "Energy.Active.Import.Register"}]}]}


async def count(node, table, station_id) -> int:
    async with node.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)
                                     .where(table.c.station_id == station_id)))


async def test_a_row_the_database_refuses_fails_only_its_own_station(node):
    await register(node, "GOOD", "GONE")
    good = await raw_station(node, "GOOD")
    gone = await raw_station(node, "GONE")
    # The operator removed GONE behind the gateway's back: its status row breaks the foreign
    # key, in the same group commit as GOOD's.
    async with node.engine.begin() as conn:
        await conn.execute(delete(stations).where(stations.c.id == "GONE"))
    answers = await asyncio.gather(good.call("StatusNotification", status(1, "Preparing")),
                                   gone.call("StatusNotification", status(1, "Preparing")))
    assert answers[0][0] == 3
    assert answers[1][0] == 4 and answers[1][2] == "InternalError"
    async with node.engine.connect() as conn:
        rows = (await conn.execute(select(connector_status.c.station_id,
                                          connector_status.c.status))).all()
    assert [tuple(r) for r in rows] == [("GOOD", "Preparing")]
    assert (await good.call("Heartbeat", {}))[0] == 3  # and it goes on being served


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400", "123456789012345678901234567890"])
async def test_a_value_no_column_can_hold_fails_alone_and_stores_nothing(node, value):
    await register(node, "GOOD", "BAD", "GOOD2")
    good = await raw_station(node, "GOOD")
    bad = await raw_station(node, "BAD")
    good2 = await raw_station(node, "GOOD2")
    answers = await asyncio.gather(good.call("MeterValues", meter("1000")),
                                   bad.call("MeterValues", meter(value)),
                                   good2.call("MeterValues", meter("1010")))
    assert answers[0][0] == 3 and answers[2][0] == 3
    assert answers[1][0] == 4
    assert answers[1][2] in ("PropertyConstraintViolation", "TypeConstraintViolation")
    assert await count(node, meter_samples, "GOOD") == 1
    assert await count(node, meter_samples, "GOOD2") == 1
    assert await count(node, meter_samples, "BAD") == 0
    assert (await bad.call("MeterValues", meter("2000")))[0] == 3  # BAD itself is still served


async def test_an_absurd_multiplier_is_refused_without_stalling_anyone(node):
    await register(node, "HUGE", "CALM")
    huge = await raw_station(node, "HUGE", "ocpp2.0.1")
    calm = await raw_station(node, "CALM")
    frame = {"evseId": 1, "meterValue": [{"timestamp": "2026-11-01T10:00:00Z", "sampledValue": [
        {"value": 1, "measurand": "Energy.Active.Import.Register",
         "unitOfMeasure": {"unit": "Wh", "multiplier": 10_000_000}}]}]}
    started = time.monotonic()
    answer, heartbeat = await asyncio.gather(huge.call("MeterValues", frame),
                                             calm.call("Heartbeat", {}))
    assert time.monotonic() - started < 1.0
    assert answer[0] == 4 and answer[2] == "PropertyConstraintViolation"
    assert heartbeat[0] == 3
    assert await count(node, meter_samples, "HUGE") == 0
    # a real meter's multiplier (kilo) is fine
    frame["meterValue"][0]["sampledValue"][0]["unitOfMeasure"]["multiplier"] = 3
    assert (await huge.call("MeterValues", frame))[0] == 3
    async with node.engine.connect() as conn:
        assert await conn.scalar(select(meter_samples.c.value)
                                 .where(meter_samples.c.station_id == "HUGE")) == 1000


async def test_past_the_handshake_bound_a_station_gets_503_and_connects_later(sqlite_url):
    # One handshake at a time, one password check at a time: while the first station's scrypt
    # runs, the others are past the bound.
    async with running_node(sqlite_url, settings(max_handshakes=1, password_checks_at_once=1,
                                                 retry_after_s=1)) as node:
        ids = [f"PW{n}" for n in range(6)]
        for sid in ids:
            await registry.add_station(node.engine, registry.NewStation(
                sid, password=f"secret-password-{sid}"))
        refused: list[str] = []

        async def charger(sid: str) -> None:
            while True:
                try:
                    ws = await connect(f"{ws_url(node)}/{sid}", subprotocols=["ocpp1.6"],
                                       additional_headers={"Authorization": basic(sid)})
                    await ws.close()
                    return
                except InvalidStatus as exc:
                    assert exc.response.status_code == 503
                    retry = int(exc.response.headers["Retry-After"])
                    assert 1 <= retry <= 2
                    refused.append(sid)
                    await asyncio.sleep(retry)

        await asyncio.wait_for(asyncio.gather(*(charger(sid) for sid in ids)), 30)
        assert refused, "no station was past the bound"
        assert node.gateway.refused_busy == len(refused)
        assert node.gateway.handshakes_in_progress() == 0


def basic(station_id: str) -> str:
    import base64
    token = base64.b64encode(f"{station_id}:secret-password-{station_id}".encode()).decode()
    return f"Basic {token}"


async def test_station_state_in_memory_agrees_with_the_database(any_node):
    node = any_node
    await register(node, "M16", "M201")
    st16 = await raw_station(node, "M16")
    st201 = await raw_station(node, "M201", "ocpp2.0.1")
    for connector in (0, 1):
        assert (await st16.call("StatusNotification", status(connector)))[0] == 3
    assert (await st201.call("StatusNotification", {
        "timestamp": "2026-11-01T10:00:00Z", "connectorStatus": "Occupied", "evseId": 1,
        "connectorId": 1}))[0] == 3
    start = await st16.call("StartTransaction", {"connectorId": 1, "idTag": "TAG1",
                                                 "meterStart": 100,
                                                 "timestamp": "2026-11-01T10:00:00Z"})
    assert (await st16.call("StatusNotification", status(1, "Charging")))[0] == 3
    assert (await st201.call("TransactionEvent", {
        "eventType": "Started", "timestamp": "2026-11-01T10:00:00Z", "triggerReason": "Authorized",
        "seqNo": 0, "transactionInfo": {"transactionId": "t-1"}, "evse": {"id": 1},
        "idToken": {"idToken": "TAG1", "type": "ISO14443"}}))[0] == 3

    fresh = StationDirectory(node.engine)
    await fresh.load()
    live = node.gateway.service.directory
    for sid in ("M16", "M201"):
        assert live.get(sid).status == fresh.get(sid).status
        assert live.get(sid).node == fresh.get(sid).node == node.gateway.node_id
    assert live.get("M16").status[1][0] == "Charging"
    async with node.engine.connect() as conn:
        active = {(r.station_id, r.tx_ref) for r in (await conn.execute(
            select(sessions.c.station_id, sessions.c.tx_ref)
            .where(sessions.c.status == "active"))).all()}
    assert active == set(node.gateway.service._open) == {
        ("M16", str(start[2]["transactionId"])), ("M201", "t-1")}

    await st16.call("StopTransaction", {"transactionId": start[2]["transactionId"],
                                        "meterStop": 600, "timestamp": "2026-11-01T11:00:00Z"})
    await st16.ws.close()
    for _ in range(50):
        if node.gateway.service.directory.get("M16").node is None:
            break
        await asyncio.sleep(0.05)
    await fresh.load()
    assert fresh.get("M16").node is None and live.get("M16").node is None
    assert ("M16", str(start[2]["transactionId"])) not in node.gateway.service._open


async def test_a_restarted_gateway_knows_the_running_sessions(sqlite_url):
    async with running_node(sqlite_url, settings()) as node:
        await register(node, "R1")
        st = await raw_station(node, "R1", "ocpp2.0.1")
        await st.call("TransactionEvent", {
            "eventType": "Started", "timestamp": "2026-11-01T10:00:00Z",
            "triggerReason": "Authorized", "seqNo": 0, "transactionInfo": {"transactionId": "t-9"},
            "evse": {"id": 1}, "idToken": {"idToken": "TAG1", "type": "ISO14443"}})
        await st.ws.close()
    async with running_node(sqlite_url, settings()) as node:
        assert ("R1", "t-9") in node.gateway.service._open
        st = await raw_station(node, "R1", "ocpp2.0.1")
        replay = {"eventType": "Updated", "timestamp": "2026-11-01T10:05:00Z",
                  "triggerReason": "MeterValuePeriodic", "seqNo": 1,
                  "transactionInfo": {"transactionId": "t-9"}, "meterValue": [{
                      "timestamp": "2026-11-01T10:05:00Z", "sampledValue": [{"value": 500}]}]}
        assert (await st.call("TransactionEvent", replay))[0] == 3
        assert (await st.call("TransactionEvent", replay))[0] == 3  # a repeat: stored once
        assert await count(node, meter_samples, "R1") == 1


async def test_meter_values_survive_the_database_dropping_the_gateways_connections(pg_url):
    """The journal keeps its own connection between commits; when the database drops it (a
    restart, an operator killing sessions) the next batch is written on a new one: every
    message is still answered, and stored."""
    async with running_node(pg_url, settings()) as node:
        await register(node, "KEPT")
        station = await raw_station(node, "KEPT")
        assert (await station.call("MeterValues", meter("1000")))[0] == 3
        async with node.engine.connect() as conn:
            killed = await conn.scalar(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        assert killed >= 1  # the journal's connection was among them
        assert (await station.call("MeterValues", meter("1010")))[0] == 3
        assert (await station.call("MeterValues", meter("1020")))[0] == 3
        assert await count(node, meter_samples, "KEPT") == 3



async def test_look_ups_in_flight_at_shutdown_leave_no_database_connection_open(sqlite_url):
    """Chargers keep connecting while the node stops: the look-ups their connections start
    (sessions to adopt, queued commands) that are in flight finish before the engine is
    disposed. (Left running, one finished after the node had gone, on a connection that
    nobody closed, whose thread later failed on a closed event loop.)"""
    before = {t.ident for t in threading.enumerate()}
    knocked = 0

    async def knock(n: int) -> None:
        nonlocal knocked
        while True:
            with contextlib.suppress(Exception):
                async with connect(f"{url}/KNOCK{n}", subprotocols=["ocpp1.6"]):
                    pass
            knocked += 1
            await asyncio.sleep(0.001)

    async with running_node(sqlite_url, settings()) as node:
        url = ws_url(node)
        await register(node, *(f"KNOCK{n}" for n in range(8)))
        knockers = [asyncio.create_task(knock(n)) for n in range(8)]

        async def knocking() -> bool:
            return knocked >= 40

        await until(knocking)
    for task in knockers:
        task.cancel()
    await asyncio.gather(*knockers, return_exceptions=True)
    left = [t.name for t in threading.enumerate()
            if t.ident not in before and "_connection_worker_thread" in t.name]
    assert left == []


async def test_closing_a_coalescer_lets_its_round_finish_and_gives_up_a_stuck_one():
    release = asyncio.Event()
    fetched: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, str]:
        fetched.append(keys)
        await release.wait()
        return {key: key.lower() for key in keys}

    lookups = Coalescer(fetch, linger_s=0)
    first = asyncio.create_task(lookups.get("A"))
    second = asyncio.create_task(lookups.get("B"))
    while not fetched:
        await asyncio.sleep(0)
    closing = asyncio.create_task(lookups.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # it waits for the round in flight ...
    release.set()
    await closing
    assert (first.done(), second.done()) == (True, True)  # ... which answered its callers
    assert (first.result(), second.result()) == ("a", "b") and fetched == [["A", "B"]]

    release.clear()
    stuck = asyncio.create_task(lookups.get("C"))
    while len(fetched) < 2:
        await asyncio.sleep(0)
    await lookups.close(wait_s=0.05)  # a database that stopped answering: given up
    with pytest.raises(RuntimeError, match="given up at shutdown"):
        await stuck
