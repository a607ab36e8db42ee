"""Sharing control end to end: a real gateway, simulated wallboxes over real sockets.

Share lock, bookings, cutoff (also with the connection cut), overstay, safety faults,
group charging; every test runs for OCPP 1.6J and 2.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import or_, select

from cocharge.gateway.operator_client import send_request
from cocharge.node import Node, running_node
from cocharge.settlement import loyalty
from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.stations import registry, sharing
from cocharge.stations.policy import parse_window
from cocharge.store.db import utcnow
from cocharge.store.schema import (
    bookings,
    connector_status,
    ledger_transfers,
    meter_samples,
    sessions,
    settlements,
    station_events,
)
from tests.conftest import register, settings, ws_url

PROTOCOLS = ["1.6", "2.0.1", "2.1"]


@pytest.fixture
async def node(sqlite_url: str) -> AsyncIterator[Node]:
    """A gateway whose sharing controller checks every 0.2 s (the default is 2 s)."""
    async with running_node(sqlite_url, settings(control_interval_s=0.2)) as running:
        yield running


@pytest.fixture
async def any_node(db_url: str) -> AsyncIterator[Node]:
    """The same on SQLite and on PostgreSQL."""
    async with running_node(db_url, settings(control_interval_s=0.2)) as running:
        yield running


async def until(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    for _ in range(int(seconds / 0.05)):
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {seconds} s")


async def session_rows(node: Node, station_id: str) -> list[Any]:
    async with node.engine.connect() as conn:
        return list((await conn.execute(select(sessions).where(sessions.c.station_id == station_id)
                                        .order_by(sessions.c.id))).all())


async def open_box(node: Node, station_id: str, protocol: str, **kw: Any) -> Any:
    config = SimConfig(url=ws_url(node), station_id=station_id, protocol=protocol,
                       bay_wait_s=2.0, **kw)
    box, _ = await open_wallbox(config)
    return box


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_booked_connector_refuses_others_and_serves_its_member(any_node, protocol):
    node = any_node
    await register(node, "WB1", tags=("ALICE", "BOB"), max_power_kw=11)
    now = utcnow()
    booking_id = await sharing.add_booking(node.engine, "WB1", 1, "BOB", now - timedelta(seconds=1),
                                           now + timedelta(minutes=30))
    box = await open_box(node, "WB1", protocol, speed=60, meter_interval_s=0.1)
    try:
        # The controller reserves the connector and closes the bay for everyone else.
        await until(lambda: box.hw[1].reservation is not None and box.hw[1].bay_locked)
        assert box.hw[1].reservation[:2] == (booking_id, "BOB")
        alice = await box.charge(1, "ALICE", energy_wh=300)
        await alice.done.wait()
        assert not alice.authorized and alice.refused == "authorization refused"
        assert box.hw[1].bay_locked and box.hw[1].register_wh == 0
        bob = await box.charge(1, "BOB", energy_wh=300)
        assert bob.authorized and bob.tx_id is not None  # the bay opened for him
        await asyncio.wait_for(bob.done.wait(), 20)
        [row] = [r for r in await session_rows(node, "WB1") if r.id_tag == "BOB"]
        assert row.booking_id == booking_id and row.status == "completed"
        async with node.engine.connect() as conn:
            status = (await conn.execute(select(bookings.c.status, bookings.c.session_id)
                                         .where(bookings.c.id == booking_id))).one()
        assert tuple(status) == ("honoured", row.id)
        assert not any(r.id_tag == "ALICE" for r in await session_rows(node, "WB1"))
    finally:
        await close_wallbox(box)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_outside_opening_hours_the_connector_is_locked_except_for_the_owner(
        node, protocol):
    await register(node, "WB2", tags=("ALICE", "OWNER"), max_power_kw=11)
    local_hour = (utcnow() + timedelta(hours=8)).hour  # Asia/Shanghai
    closed_window = f"mon-sun {(local_hour + 2) % 24:02d}:00-{(local_hour + 3) % 24:02d}:00"
    await sharing.set_rules(node.engine, "WB2", 0, {"windows": (parse_window(closed_window),),
                                                    "owner_tags": frozenset({"OWNER"})})
    box = await open_box(node, "WB2", protocol, speed=60, meter_interval_s=0.1)
    try:
        await until(lambda: not box.hw[1].operative and box.hw[1].bay_locked)
        alice = await box.charge(1, "ALICE", energy_wh=200)
        await alice.done.wait()
        assert not alice.authorized
        owner = await box.charge(1, "OWNER", energy_wh=200)
        assert owner.authorized, owner.refused
        await asyncio.wait_for(owner.done.wait(), 20)
        # After the owner's session the share lock closes again.
        await until(lambda: not box.hw[1].operative and box.hw[1].bay_locked)
        # A hard reset cuts the power and opens the bay lock: after the reboot the gateway
        # locks it again.
        answer = await send_request(node.engine, {"command": "reset", "station": "WB2",
                                                  "args": {"hard": True}})
        assert answer["accepted"]
        await until(lambda: box.boots == 1 and box.hw[1].bay_locked and not box.hw[1].operative)
        async with node.engine.connect() as conn:
            events = (await conn.execute(select(station_events.c.kind)
                                         .where(station_events.c.station_id == "WB2"))).scalars().all()
        assert "fault" not in events
    finally:
        await close_wallbox(box)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_budget_cutoff_stops_the_energy_at_the_paid_kwh(any_node, protocol):
    node = any_node
    await register(node, "WB3", tags=("CARA",), max_power_kw=11)
    box = await open_box(node, "WB3", protocol, speed=120, meter_interval_s=0.1)
    try:
        # 3.00 CNY at the default 1.50 CNY/kWh buys 2 kWh.
        answer = await send_request(node.engine, {"command": "start", "station": "WB3", "args": {
            "tag": "CARA", "connector_id": 1, "budget_fen": 300}})
        assert answer["accepted"]
        session = await until(lambda: box.sessions.get(1) or (box.finished[-1] if box.finished else None))
        await asyncio.wait_for(session.done.wait(), 30)
        assert session.profile and session.profile[-1][1] == 0  # the TxProfile ends at 0 A
        assert session.energy_wh == pytest.approx(2000, rel=0.01)
        [row] = await session_rows(node, "WB3")
        assert row.cutoff_reason == "budget" and row.limit_wh == 2000
        assert row.energy_wh == pytest.approx(2000, rel=0.01)
        assert row.stop_reason == "Remote"
    finally:
        await close_wallbox(box)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_quota_only_with_a_slow_car_moves_the_zero_point_until_the_quota_is_used(node, protocol):
    await register(node, "WB9", tags=("HUA",), max_power_kw=11)
    await sharing.update_member(node.engine, "HUA", quota_wh=1000)
    box = await open_box(node, "WB9", protocol, speed=120, meter_interval_s=0.1)
    try:
        answer = await send_request(node.engine, {"command": "start", "station": "WB9", "args": {
            "tag": "HUA", "connector_id": 1, "quota_only": True}})
        assert answer["accepted"]
        session = await until(lambda: box.sessions.get(1))
        # The EV draws 5 kW of the 11 kW the profile allows: the first 0 A point comes too soon.
        (await until(lambda: box.hw[1].ev)).max_power_w = 5000
        await asyncio.wait_for(session.done.wait(), 30)
        assert session.energy_wh == pytest.approx(1000, rel=0.01)
        assert session.profile[-1][0] > 1000 * 3600 / 10_900  # moved past the full-power time
        [row] = await session_rows(node, "WB9")
        assert row.cutoff_reason == "quota" and row.limit_wh == 1000
    finally:
        await close_wallbox(box)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_simulated_meter_stamps_a_reading_with_the_time_it_was_taken(node, protocol):
    """A reading that waits before it goes out (here 50 ms: 6 s of the charger's time at 120x;
    on a loaded machine, a status notification's round trip) keeps the time its register is
    of. The quota test above computes its moves from these times: stamped when sent, the
    moved 0 A point came that much late and the session overshot its quota."""
    await register(node, "WB10", tags=("MEI",), max_power_kw=11)
    box = await open_box(node, "WB10", protocol, speed=120, meter_interval_s=0.1)
    taken: list[datetime] = []

    def slow_to_send(charger: Any) -> None:
        session = charger.sessions.get(1)
        if session is not None and session.sampled_at is not None:
            taken.append(session.sampled_at.astimezone(UTC).replace(tzinfo=None))
        time.sleep(0.05)  # the reading is taken; the message waits

    box.meter_listeners.append(slow_to_send)
    try:
        answer = await send_request(node.engine, {"command": "start", "station": "WB10",
                                                  "args": {"tag": "MEI", "connector_id": 1}})
        assert answer["accepted"]
        await until(lambda: len(taken) >= 6)
        [row] = await until(lambda: session_rows(node, "WB10"))
        async with node.engine.connect() as conn:
            stamps = list((await conn.execute(
                select(meter_samples.c.ts).where(
                    meter_samples.c.station_id == "WB10",
                    meter_samples.c.measurand == "Energy.Active.Import.Register",
                    meter_samples.c.ts > row.started_at,  # periodic: 1.6 says no context
                    or_(meter_samples.c.context.is_(None),
                        meter_samples.c.context == "Sample.Periodic"))
                .order_by(meter_samples.c.ts))).scalars())
    finally:
        await close_wallbox(box)
    assert len(stamps) >= 4
    for stamp in stamps:
        assert min(abs((stamp - at).total_seconds()) for at in taken) < 0.002, stamp


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_charger_stops_by_itself_when_the_connection_is_cut_before_the_cutoff(
        node, protocol):
    await register(node, "WB4", tags=("DAN",), max_power_kw=11)
    box = await open_box(node, "WB4", protocol, speed=120, meter_interval_s=0.1)
    try:
        answer = await send_request(node.engine, {"command": "start", "station": "WB4", "args": {
            "tag": "DAN", "connector_id": 1, "energy_wh": 2000}})
        assert answer["accepted"]
        # The TxProfile came with the remote start; cut the connection while charging.
        session = await until(lambda: box.sessions.get(1) if box.sessions.get(1)
                              and box.sessions[1].profile and box.sessions[1].energy_wh > 200
                              else None)
        await box.drop_connection()
        assert session.energy_wh < 1500  # cut well before the cutoff
        # Offline, the charger follows its TxProfile: 0 A at the cutoff, no more energy.
        offset = session.profile[-1][0]
        await until(lambda: session.device_s > offset + 120, 20)
        delivered = box.hw[1].register_wh
        assert delivered == pytest.approx(2000, rel=0.01) and box.hw[1].power_w == 0
        await asyncio.sleep(0.5)
        assert box.hw[1].register_wh == delivered
        # Back online: the kept messages are replayed and the central system ends it.
        await box.reconnect()
        await asyncio.wait_for(session.done.wait(), 20)
        [row] = await until(lambda: _ended(node, "WB4"))
        assert row.energy_wh == pytest.approx(2000, rel=0.01) and row.cutoff_reason == "energy"
    finally:
        await close_wallbox(box)


async def _ended(node: Node, station_id: str) -> list[Any] | None:
    rows = await session_rows(node, station_id)
    return rows if rows and rows[0].ended_at is not None else None


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_slot_end_stops_the_session(node, protocol):
    await register(node, "WB5", tags=("EVA",), max_power_kw=11)
    now = utcnow()
    await sharing.add_booking(node.engine, "WB5", 1, "EVA", now, now + timedelta(seconds=3))
    box = await open_box(node, "WB5", protocol, speed=1, meter_interval_s=0.2)
    try:
        await until(lambda: box.hw[1].reservation is not None)
        session = await box.charge(1, "EVA")
        assert session.authorized, session.refused
        await asyncio.wait_for(session.done.wait(), 10)
        [row] = await session_rows(node, "WB5")
        assert row.cutoff_reason == "slot" and row.stop_reason == "Remote"
        # Stopped at the slot's end (3 s), give or take a loaded machine's seconds: not left
        # to run on.
        assert row.ended_at <= now + timedelta(seconds=6)
    finally:
        await close_wallbox(box)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_overstay_accrues_an_idle_fee_after_the_grace_period(node, protocol):
    await register(node, "WB6", tags=("FEI",), max_power_kw=11)
    # 300x: a simulated minute is 200 ms of real time, so a slow answer under load does not
    # add a minute to the charger's own timestamps.
    box = await open_box(node, "WB6", protocol, speed=300, meter_interval_s=0.05)
    try:
        # Charges 500 Wh, then the car stays plugged in for 40 simulated minutes.
        session = await box.charge(1, "FEI", energy_wh=500, stay_s=40 * 60)
        await asyncio.wait_for(session.done.wait(), 20)
        [row] = await until(lambda: _fee_set(node, "WB6"))
        # 40 idle minutes - 15 grace = 25 billable minutes at 0.50 CNY (one more if the
        # status crossed a minute boundary), under the 60 CNY cap.
        assert row.idle_minutes in (25, 26)
        assert row.idle_fee_fen == row.idle_minutes * 50
        # Settlement bills it once the car has left, as its own ledger transfers.
        await node.gateway.settler.drain()
        async with node.engine.connect() as conn:
            billed = (await conn.execute(select(settlements.c.idle_fee_fen).where(
                settlements.c.session_id == row.id))).scalar_one()
            legs = (await conn.execute(select(ledger_transfers.c.id, ledger_transfers.c.amount).where(
                ledger_transfers.c.batch == f"idle:{row.id}"))).all()
        assert billed == row.idle_fee_fen
        assert dict(legs)[f"s{row.id}:idle:owed"] == billed  # FEI's wallet is empty: owed
        async with node.engine.connect() as conn:
            assert await loyalty.credit_score(conn, "FEI") == 100 - 5  # the overstay penalty
    finally:
        await close_wallbox(box)


async def _fee_set(node: Node, station_id: str) -> list[Any] | None:
    rows = await session_rows(node, station_id)
    return rows if rows and rows[0].idle_fee_fen is not None else None


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_safety_fault_ends_the_session_and_faults_the_connector(node, protocol):
    await register(node, "WB7", tags=("GUO",), max_power_kw=11)
    box = await open_box(node, "WB7", protocol, speed=60, meter_interval_s=0.1)
    try:
        session = await box.charge(1, "GUO")
        await asyncio.sleep(0.5)
        await box.fault(1, "ground fault")
        assert session.done.is_set()
        [row] = await until(lambda: _ended(node, "WB7"))
        assert row.fault == "ground fault"
        async with node.engine.connect() as conn:
            status = (await conn.execute(select(connector_status.c.status).where(
                connector_status.c.station_id == "WB7"))).scalar_one()
        assert status == "Faulted"
    finally:
        await close_wallbox(box)


async def test_group_forms_at_its_minimum_and_books_every_member(node):
    await register(node, "WB8", tags=("M1", "M2", "M3"), max_power_kw=11)
    await loyalty.set_rule(node.engine, "group.min_members", "3")  # the default is 5
    start = utcnow() + timedelta(seconds=2)
    group_id = await sharing.create_group(node.engine, "WB8", start, start + timedelta(minutes=30),
                                          min_members=3, initiator="M1")
    with pytest.raises(registry.RegistryError, match="already booked"):
        await sharing.add_booking(node.engine, "WB8", 1, "M2", start, start + timedelta(minutes=5))
    assert await sharing.join_group(node.engine, group_id, "M2") == "forming"
    assert await sharing.join_group(node.engine, group_id, "M3") == "formed"
    shown = await sharing.show_group(node.engine, group_id)
    assert shown["members"] == ["M1", "M2", "M3"] and len(shown["bookings"]) == 3
    box = await open_box(node, "WB8", "1.6", speed=60, meter_interval_s=0.1)
    try:
        await until(lambda: box.hw[1].reservation is not None, 15)
        session = await box.charge(1, "M1", energy_wh=200)
        assert session.authorized, session.refused
        await asyncio.wait_for(session.done.wait(), 20)
        [row] = await session_rows(node, "WB8")
        assert row.group_id == group_id and row.booking_id is not None
    finally:
        await close_wallbox(box)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_minimum_credit_score_is_enforced_at_the_charger(node, protocol):
    await register(node, "WB9", tags=("LOW",), max_power_kw=11)
    await sharing.set_rules(node.engine, "WB9", 0, {"min_credit": 105})
    # The controller picks up changed rules on its next pass.
    await until(lambda: ("WB9", 0) in node.gateway.service.control.rules)
    box = await open_box(node, "WB9", protocol, speed=60, meter_interval_s=0.1)
    try:
        refused = await box.charge(1, "LOW", energy_wh=200)
        await refused.done.wait()
        assert not refused.authorized  # the initial score, 100, is below 105
        # A featured post earns 10 credit: 110 is enough, from the next attempt on.
        await loyalty.apply_event(node.engine, "LOW", "post_featured", "post-1")
        allowed = await box.charge(1, "LOW", energy_wh=200)
        assert allowed.authorized, allowed.refused
        await asyncio.wait_for(allowed.done.wait(), 20)
    finally:
        await close_wallbox(box)


async def test_a_missed_booking_is_a_no_show_and_costs_credit(node):
    await register(node, "WB10", tags=("NOSHOW",), max_power_kw=11)
    start = utcnow() + timedelta(seconds=1)
    booking = await sharing.add_booking(node.engine, "WB10", 1, "NOSHOW", start,
                                        start + timedelta(seconds=1))

    async def scored() -> int | None:
        async with node.engine.connect() as conn:
            status = await conn.scalar(select(bookings.c.status).where(bookings.c.id == booking))
            return await loyalty.credit_score(conn, "NOSHOW") if status == "no_show" else None

    assert await until(scored, 10) == 100 - 10
    await asyncio.sleep(0.5)  # later passes of the controller do not penalise it again
    assert await scored() == 90


async def test_the_rules_of_many_stations_are_read_each_tick_as_they_now_are(sqlite_url):
    """`sharing.load_rules` (the controller's every tick) parses a stored rule set once for
    each text: stations with the same rules share them, and a change is read at once."""
    from cocharge.store.db import open_store

    engine = await open_store(sqlite_url)
    try:
        for sid in ("R1", "R2", "R3"):
            await registry.add_station(engine, registry.NewStation(sid))
            await sharing.set_rules(engine, sid, 0, {"windows": ["mon-fri 19:00-23:00"],
                                                     "min_credit": 60})
        async with engine.connect() as conn:
            first = await sharing.load_rules(conn)
        assert first[("R1", 0)] == first[("R3", 0)] and first[("R1", 0)].min_credit == 60
        await sharing.set_rules(engine, "R2", 0, {"windows": [], "min_credit": 0})
        async with engine.connect() as conn:
            now = await sharing.load_rules(conn)
            only = await sharing.load_rules(conn, ["R2"])
        assert now[("R2", 0)].windows == () and now[("R2", 0)].min_credit == 0
        assert now[("R1", 0)] == first[("R1", 0)] and list(only) == [("R2", 0)]
    finally:
        await engine.dispose()
