"""The driver sees the price: the host's price and the next booking on a shared station's
display, the running cost while charging (2.0.1 CostUpdated; 1.6 by DataTransfer), and the
settled total in the Ended answer."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from cocharge.gateway.operator_client import send_request
from cocharge.node import running_node
from cocharge.stations import registry, sharing
from cocharge.store.db import utcnow
from cocharge.store.schema import settlements
from tests.conftest import settings, simulated


async def until(check: Any, timeout: float = 15.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := check()):
            await asyncio.sleep(0.05)
        return value


async def payable(node: Any, session_id: int) -> int:
    async with node.engine.connect() as conn:
        return int(await conn.scalar(select(settlements.c.payable_fen)
                                     .where(settlements.c.session_id == session_id)))


@pytest.mark.parametrize("protocol", ["2.0.1", "1.6"])
async def test_running_cost_and_settled_total_reach_the_driver(tmp_path, protocol):
    config = settings(cost_update_s=0.05, cost_data_transfer="cocharge")
    async with running_node(str(tmp_path / "db.sqlite"), config) as node:
        await registry.add_station(node.engine, registry.NewStation("PR1", max_power_kw=22))
        await registry.add_member(node.engine, "Ann", "ANN", None)
        async with simulated(node, "PR1", protocol, meter_interval_s=0.05) as box:
            session = await box.charge(1, "ANN", energy_wh=3000)
            async with asyncio.timeout(20):
                await session.done.wait()
            tx = str(session.tx_id)
            [row] = await registry.list_sessions(node.engine, station_id="PR1")
            total = await payable(node, row["id"])
            assert total > 0
            shown = await until(lambda: box.costs_shown.get(tx))
            # The running cost grows, in whole fen, never beyond the total.
            values = [Decimal(v) for v in shown]
            assert values == sorted(values) and len(values) >= 2
            if protocol == "2.0.1":
                assert box.total_costs[tx] == f"{Decimal(total) / 100:.2f}"
                assert values[-1] <= Decimal(total) / 100
            else:  # 1.6: the final total follows the stop, by the same DataTransfer
                await until(lambda: Decimal(box.costs_shown[tx][-1]) == Decimal(total) / 100)


async def test_a_station_without_the_data_transfer_is_not_asked_again(tmp_path):
    config = settings(cost_update_s=0.05, cost_data_transfer="cocharge")
    async with running_node(str(tmp_path / "db.sqlite"), config) as node:
        await registry.add_station(node.engine, registry.NewStation("PR2", max_power_kw=22))
        await registry.add_member(node.engine, "Ann", "ANN", None)
        async with simulated(node, "PR2", "1.6", meter_interval_s=0.05, display=False) as box:
            session = await box.charge(1, "ANN", energy_wh=2000)
            async with asyncio.timeout(20):
                await session.done.wait()
            connection = node.gateway.connections["PR2"]
            assert connection._cost_refused and box.costs_shown == {}


async def test_the_host_price_and_the_booking_on_the_display(tmp_path):
    config = settings(control_interval_s=0.1)
    async with running_node(str(tmp_path / "db.sqlite"), config) as node:
        await registry.add_station(node.engine, registry.NewStation("PR3", max_power_kw=22))
        await registry.add_member(node.engine, "Bob", "BOB", None)
        await sharing.set_rules(node.engine, "PR3", 0, {"allowed_tags": frozenset({"BOB"})})
        async with simulated(node, "PR3", "2.0.1") as box:
            await until(lambda: "Shared charger: 1.50 CNY/kWh" in box.shown())
            start = (utcnow() + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
            booking = await sharing.add_booking(node.engine, "PR3", 1, "BOB", start,
                                                start + timedelta(hours=1))
            text = await until(lambda: [t for t in box.shown() if t.startswith("Booked")])
            local = start + timedelta(hours=8)  # Asia/Shanghai, the default tariff's zone
            later = local + timedelta(hours=1)
            assert text == [f"Booked {local:%H:%M}-{later:%H:%M} by a neighbour"]
            # The operator reads the display back (NotifyDisplayMessages, kept as an event).
            answer = await send_request(node.engine, {"command": "get-display-messages",
                                                      "station": "PR3", "args": {}})
            assert answer["accepted"], answer

            async def kept() -> Any:
                return await registry.list_station_events(node.engine, "PR3",
                                                          "display_messages")
            async with asyncio.timeout(10):
                while not (events := await kept()):
                    await asyncio.sleep(0.05)
            contents = {m["content"] for m in events[0]["details"]["messages"]}
            assert "Shared charger: 1.50 CNY/kWh" in contents
            # A cancelled booking leaves the display.
            await sharing.cancel_booking(node.engine, booking)
            await until(lambda: not [t for t in box.shown() if t.startswith("Booked")])
            # The operator's own message, and its removal.
            answer = await send_request(node.engine, {"command": "set-display-message",
                                                      "station": "PR3", "args": {
                                                          "id": 7, "content": "Closed Sunday"}})
            assert answer["accepted"] and "Closed Sunday" in box.shown()
            answer = await send_request(node.engine, {"command": "clear-display-message",
                                                      "station": "PR3", "args": {"id": 7}})
            assert answer["accepted"] and "Closed Sunday" not in box.shown()
