"""V2X at a 2.1 charger (issue 31 item 5, block Q): a car gives energy back through the
charger before it charges; the export register's rise is the discharged energy, and the
driver is credited for it at the tariff's feed-in price, on the ledger, before the
session's own bill is paid (the simulated bidirectional charger, real sockets)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

from sqlalchemy import select

from cocharge.gateway.operator_client import send_request
from cocharge.node import running_node
from cocharge.settlement import funds, ledger, settle
from cocharge.settlement.tariff import simple_tariff
from cocharge.stations import registry
from cocharge.store.schema import sessions, settlements
from tests.conftest import settings, simulated, until


async def test_q_a_v2x_session_credits_the_driver_for_the_energy_given_back(sqlite_url):
    async with running_node(sqlite_url, settings()) as node:
        await registry.add_station(node.engine, registry.NewStation("V2G", owner="hana",
                                                                    max_power_kw=11))
        await registry.add_member(node.engine, "Ann", "ANN", None)
        await funds.top_up(node.engine, "ANN", 2000, "pay-ann")
        await settle.set_tariff(node.engine, "V2G", 0, simple_tariff(
            Decimal("1.50"), feed_in_per_kwh=Decimal("0.80")))
        async with simulated(node, "V2G", "2.1", meter_interval_s=0.05) as box:
            register_before = round(box.hw[1].register_wh)
            session = await box.v2x(1, "ANN", discharge_wh=2000, energy_wh=3000)
            # The driver agreed to give energy back: bidirectional transfer is allowed.
            [running] = await until(lambda: registry.list_sessions(node.engine, "V2G"))
            allowed = await send_request(node.engine, {
                "command": "allowed-energy-transfer", "station": "V2G",
                "args": {"session_id": running["id"], "modes": ["AC_BPT"]}})
            assert allowed["accepted"], allowed
            assert box.allowed_transfer[str(session.tx_id)] == ["AC_BPT"]
            await asyncio.wait_for(session.done.wait(), 60)
            given_back = box.hw[1].export_wh
            charged = round(box.hw[1].register_wh) - register_before
        assert 1999 <= given_back <= 2001
        await node.gateway.settler.drain()

        async def bill():
            async with node.engine.connect() as conn:
                return (await conn.execute(select(sessions.c.id, settlements.c.cdr,
                                                  settlements.c.payable_fen).join(
                    settlements, settlements.c.session_id == sessions.c.id))).first()

        row = await until(bill)
        cdr = json.loads(row.cdr)
        credit = round(Decimal(round(given_back)) / 1000 * Decimal("0.80") * 100)
        assert cdr["discharged_wh"] == round(given_back) and cdr["feed_in_fen"] == credit == 160
        # What it charged (its import register's rise: at least the 3 kWh asked, more when a
        # busy machine lets the fast clock run past it) is billed as usual.
        assert charged >= 3000 and cdr["energy_wh"] == charged
        statement = await ledger.statement(node.engine, "wallet:ANN")
        assert [(x["kind"], x["change"]) for x in statement if x["kind"] == "v2x-credit"] == [
            ("v2x-credit", credit)]
        money = await funds.member_money(node.engine, "ANN")
        assert money["wallet_fen"] == 2000 + credit - row.payable_fen
        async with node.engine.connect() as conn:
            assert await ledger.balance(conn, settle.FEED_IN_SOURCE) == -credit
        assert (await ledger.verify(node.engine)).ok


async def test_q_without_a_feed_in_price_nothing_is_credited(sqlite_url):
    async with running_node(sqlite_url, settings()) as node:
        await registry.add_station(node.engine, registry.NewStation("V2H", max_power_kw=11))
        await registry.add_member(node.engine, "Bo", "BO", None)
        async with simulated(node, "V2H", "2.1", meter_interval_s=0.05) as box:
            session = await box.v2x(1, "BO", discharge_wh=500, energy_wh=1000)
            await asyncio.wait_for(session.done.wait(), 60)
        await node.gateway.settler.drain()
        async with node.engine.connect() as conn:
            cdr = json.loads(await until(lambda: conn.scalar(select(settlements.c.cdr))))
            assert await ledger.balance(conn, settle.FEED_IN_SOURCE) == 0
        assert 499 <= cdr["discharged_wh"] <= 501 and cdr["feed_in_fen"] == 0


async def test_q_the_operator_schedules_the_discharge_with_an_operation_mode(sqlite_url):
    """V2X by a charging profile (Q, K 2.1): a TxProfile whose period is in operation mode
    CentralSetpoint with a setpoint of -6 kW has the car give 6 kW back for its 600 s (at
    most 1 kWh), then it charges; the driver is credited for what the export register
    counted. A 2.0.1 station is told such a profile is 2.1's."""
    async with running_node(sqlite_url, settings()) as node:
        await registry.add_station(node.engine, registry.NewStation("V2S", max_power_kw=11))
        await registry.add_station(node.engine, registry.NewStation("OLD", max_power_kw=11))
        await registry.add_member(node.engine, "Cai", "CAI", None)
        await funds.top_up(node.engine, "CAI", 2000, "pay-cai")
        await settle.set_tariff(node.engine, "V2S", 0, simple_tariff(
            Decimal("1.50"), feed_in_per_kwh=Decimal("0.80")))
        profile = {"connector_id": 1, "purpose": "TxProfile", "periods": [[0, 0]],
                   "unit": "W", "id": 7, "stack_level": 3, "kind": "Relative",
                   "duration": 600, "operation_mode": "CentralSetpoint", "setpoint": -6000}
        async with simulated(node, "V2S", "2.1", meter_interval_s=0.05) as box, \
                simulated(node, "OLD", "2.0.1") as old:
            session = await box.charge(1, "CAI", energy_wh=1000)
            [running] = await until(lambda: registry.list_sessions(node.engine, "V2S"))
            answer = await send_request(node.engine, {
                "command": "set-charging-profile", "station": "V2S",
                "args": {**profile, "session_id": running["id"]}})
            assert answer["accepted"], answer
            [held] = [p for p in box.charging_profiles if p.id == 7]
            assert held.setpoints == (-6000.0,)
            await until(lambda: asyncio.sleep(0, box.hw[1].export_wh > 0))
            await asyncio.wait_for(session.done.wait(), 60)
            given_back = box.hw[1].export_wh
            refused = await send_request(node.engine, {
                "command": "set-charging-profile", "station": "OLD",
                "args": {**profile, "purpose": "TxDefaultProfile", "connector_id": 0}})
            assert not refused["ok"] and "OCPP 2.0.1 has no Dynamic profiles, operation " \
                "modes" in refused["message"], refused
            assert not old.charging_profiles
        assert 100 < given_back <= 1001  # 6 kW for what was left of the 600 s
        await node.gateway.settler.drain()
        async with node.engine.connect() as conn:
            cdr = json.loads(await until(lambda: conn.scalar(select(settlements.c.cdr))))
        assert abs(cdr["discharged_wh"] - given_back) <= 1
        assert cdr["feed_in_fen"] == round(Decimal(cdr["discharged_wh"]) / 1000 * 80) > 0
        assert (await ledger.verify(node.engine)).ok
