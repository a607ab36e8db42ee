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


DISPLAY = {"en": ("Shared charger: 1.50 CNY/kWh", "Booked", "Booked {start}-{end} by a neighbour"),
           "zh": ("共享充电：1.50 元/千瓦时", "邻居已预约", "邻居已预约 {start}-{end}")}


@pytest.mark.parametrize("language", ["zh", "en"])
async def test_the_host_price_and_the_booking_on_the_display(tmp_path, language):
    """The display shows the host's price and the next booking in the platform's language
    (display_language: Chinese unless set)."""
    price, booked, booking_line = DISPLAY[language]
    config = settings(control_interval_s=0.1, display_language=language)
    async with running_node(str(tmp_path / "db.sqlite"), config) as node:
        await registry.add_station(node.engine, registry.NewStation("PR3", max_power_kw=22))
        await registry.add_member(node.engine, "Bob", "BOB", None)
        await sharing.set_rules(node.engine, "PR3", 0, {"allowed_tags": frozenset({"BOB"})})
        async with simulated(node, "PR3", "2.0.1") as box:
            await until(lambda: price in box.shown())
            start = (utcnow() + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
            booking = await sharing.add_booking(node.engine, "PR3", 1, "BOB", start,
                                                start + timedelta(hours=1))
            text = await until(lambda: [t for t in box.shown() if t.startswith(booked)])
            local = start + timedelta(hours=8)  # Asia/Shanghai, the default tariff's zone
            later = local + timedelta(hours=1)
            assert text == [booking_line.format(start=f"{local:%H:%M}", end=f"{later:%H:%M}")]
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
            assert price in contents
            # A cancelled booking leaves the display.
            await sharing.cancel_booking(node.engine, booking)
            await until(lambda: not [t for t in box.shown() if t.startswith(booked)])
            # The operator's own message, and its removal.
            answer = await send_request(node.engine, {"command": "set-display-message",
                                                      "station": "PR3", "args": {
                                                          "id": 7, "content": "Closed Sunday"}})
            assert answer["accepted"] and "Closed Sunday" in box.shown()
            answer = await send_request(node.engine, {"command": "clear-display-message",
                                                      "station": "PR3", "args": {"id": 7}})
            assert answer["accepted"] and "Closed Sunday" not in box.shown()


async def test_a_members_card_gets_its_message_in_the_members_language(tmp_path):
    """Issue 33, item 1: a 2.0.1 charger shows the member a personal message when its card
    is presented (idTokenInfo.personalMessage): a welcome with what it may spend, or why it
    is refused, in the member's language (`member update --lang`), else the platform's
    (Chinese); said with messageContent.language. A tag that is nobody's gets none."""
    from cocharge.settlement import funds
    from tests import forked_cli
    from tests.conftest import raw_station

    db = str(tmp_path / "db.sqlite")
    async with running_node(db, settings(start_minimum_fen=500)) as node:
        await registry.add_station(node.engine, registry.NewStation("PM1", max_power_kw=22))
        await registry.add_member(node.engine, "Ann", "ANN", None)
        await registry.add_member(node.engine, "Bo", "BO", None)
        await funds.top_up(node.engine, "ANN", 1230, "test-topup-ann")
        chose = await asyncio.to_thread(forked_cli.run, ["member", "update", "ANN", "--lang",
                                                         "en", "--db", db])
        assert chose.returncode == 0, chose.stderr
        bad = await asyncio.to_thread(forked_cli.run, ["member", "update", "BO", "--lang",
                                                       "klingon", "--db", db])
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "zh, en" in bad.stderr
        station = await raw_station(node, "PM1", "ocpp2.0.1")

        async def authorize(tag: str) -> dict[str, Any]:
            answer = await station.call("Authorize", {"idToken": {"idToken": tag,
                                                                  "type": "Central"}})
            assert answer[0] == 3, answer
            return dict(answer[2]["idTokenInfo"])

        ann = await authorize("ANN")
        assert ann["status"] == "Accepted"
        assert ann["personalMessage"] == {"format": "UTF8", "language": "en",
                                          "content": "Welcome, Ann. You may spend CNY 12.30"}
        bo = await authorize("BO")  # an empty wallet, no language of its own
        assert bo["status"] == "NoCredit"
        assert bo["personalMessage"] == {"format": "UTF8", "language": "zh",
                                         "content": "余额不足：请先充值"}
        nobody = await authorize("NOBODY")
        assert nobody["status"] == "Unknown" and "personalMessage" not in nobody
