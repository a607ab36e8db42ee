"""A charger's clock is evidence, not truth (cocharge/gateway/clock.py): sessions stamped in
0001, 1899, 1970, 2999 or 9999 are stored on the receive time with a note of what the charger
said, priced, settled and listed like any other; numbers at the bounds are answered, never
with InternalError. The rule runs as shipped here (tests' other gateways believe old dates)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from cocharge.config import GatewaySettings
from cocharge.node import running_node
from cocharge.stations import registry
from cocharge.store.db import utcnow
from cocharge.store.schema import meter_samples, settlements
from tests import forked_cli
from tests.conftest import raw_station, register, settings

BROKEN = ["0001-01-01T00:00:00Z", "1899-12-31T23:59:59Z", "1970-01-01T00:00:00Z",
          "2999-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]
SHIPPED = {"clock_past_s": GatewaySettings().clock_past_s,
           "clock_future_s": GatewaySettings().clock_future_s}


def stamped(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def settled(node, station_id, count):
    """The station's sessions once `count` of them have a settlement row."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        rows = await registry.list_sessions(node.engine, station_id)
        async with node.engine.connect() as conn:
            done = (await conn.execute(select(settlements.c.session_id))).scalars().all()
        if len([r for r in rows if r["id"] in done]) >= count:
            return rows
        assert asyncio.get_running_loop().time() < deadline, rows
        await asyncio.sleep(0.05)


def cli(*args: str, db: str):
    return forked_cli.run([*args, "--db", db], timeout=60)


async def test_16_broken_clocks_are_stored_on_receive_time_and_settled(db_url):
    db = db_url
    async with running_node(db, settings(**SHIPPED)) as node:
        await register(node, "CLK16", max_power_kw=22)
        st = await raw_station(node, "CLK16")
        before = utcnow().replace(microsecond=0)
        ids = []
        for n, (start_at, stop_at) in enumerate(zip(BROKEN, reversed(BROKEN), strict=True)):
            start = {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000 * n,
                     "timestamp": start_at}
            first = await st.call("StartTransaction", start)
            again = await st.call("StartTransaction", start)  # a repeat: the same transaction
            assert first[0] == 3 and first[2]["transactionId"] == again[2]["transactionId"]
            ids.append(first[2]["transactionId"])
            stop = await st.call("StopTransaction", {
                "transactionId": first[2]["transactionId"], "meterStop": 1000 * n + 40,
                "timestamp": stop_at, "reason": "Local", "transactionData": [
                    {"timestamp": stop_at, "sampledValue": [{"value": str(1000 * n + 40)}]}]})
            assert stop[0] == 3, stop
        after = utcnow() + timedelta(seconds=1)
        rows = await settled(node, "CLK16", len(BROKEN))
        assert [r["id"] for r in rows] == ids
        for row, (start_at, stop_at) in zip(rows, zip(BROKEN, reversed(BROKEN), strict=True),
                                            strict=True):
            assert row["status"] == "completed" and row["energy_wh"] == 40, row
            for at in (row["started"], row["ended"]):
                assert before <= stamped(at.rstrip("Z")) <= after, (row, before, after)
            assert f"StartTransaction: charger said {start_at}" in row["clock"]
            assert f"StopTransaction: charger said {stop_at} (and 1 more)" in row["clock"]
        async with node.engine.connect() as conn:
            times = (await conn.execute(select(meter_samples.c.ts).where(
                meter_samples.c.station_id == "CLK16"))).scalars().all()
        assert times and all(before <= t <= after for t in times)
    # Every read path computes with what was stored.
    for args in (["sessions", "list"], ["sessions", "show", str(ids[0])],
                 ["ledger", "liabilities"], ["settle"]):
        done = await asyncio.to_thread(cli, *args, db=db)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    shown = await asyncio.to_thread(cli, "sessions", "show", str(ids[2]), db=db)
    assert "charger said 1970-01-01T00:00:00Z" in shown.stdout


async def test_201_broken_clocks_keep_order_and_settle(any_node_shipped_clock):
    node = any_node_shipped_clock
    await register(node, "CLK201")
    st = await raw_station(node, "CLK201", "ocpp2.0.1")

    def event(kind, seq, ts, wh, sample_ts=None):
        return {"eventType": kind, "timestamp": ts, "triggerReason": "MeterValuePeriodic",
                "seqNo": seq, "transactionInfo": {"transactionId": "tx-clock"},
                "evse": {"id": 1, "connectorId": 1},
                "idToken": {"idToken": "TAG1", "type": "ISO14443"},
                "meterValue": [{"timestamp": t, "sampledValue": [
                    {"value": v, "measurand": "Energy.Active.Import.Register"}]}
                    for t, v in zip(sample_ts or [ts], [wh] if sample_ts is None else wh,
                                    strict=True)]}

    before = utcnow().replace(microsecond=0)
    assert (await st.call("TransactionEvent", event("Started", 0, "0001-01-01T00:00:00Z", 100)))[0] == 3
    # Two samples of one message on a clock stuck in 1970: the receive time, in order.
    updated = event("Updated", 1, "1970-01-01T00:10:00Z", [110, 130],
                    ["1970-01-01T00:05:00Z", "1970-01-01T00:10:00Z"])
    assert (await st.call("TransactionEvent", updated))[0] == 3
    ended = await st.call("TransactionEvent", event("Ended", 2, "9999-12-31T23:59:59Z", 150))
    assert ended[0] == 3 and ended[2].get("totalCost") is not None, ended
    after = utcnow() + timedelta(seconds=1)
    [row] = await settled(node, "CLK201", 1)
    assert row["status"] == "completed" and row["energy_wh"] == 50
    assert before <= stamped(row["started"].rstrip("Z")) <= stamped(row["ended"].rstrip("Z")) <= after
    assert "TransactionEvent Started: charger said 0001-01-01T00:00:00Z" in row["clock"]
    assert "TransactionEvent Ended: charger said 9999-12-31T23:59:59Z" in row["clock"]
    async with node.engine.connect() as conn:
        samples = (await conn.execute(select(meter_samples.c.ts, meter_samples.c.value)
                                      .where(meter_samples.c.station_id == "CLK201")
                                      .order_by(meter_samples.c.id))).all()
    assert [s.value for s in samples] == [100, 110, 130, 150]
    assert all(before <= s.ts <= after for s in samples)
    assert [s.ts for s in samples] == sorted(s.ts for s in samples)


async def test_plausible_offline_times_are_kept(any_node_shipped_clock):
    """A charger back from a day offline replays its transaction with its own times."""
    node = any_node_shipped_clock
    await register(node, "OFF")
    st = await raw_station(node, "OFF")
    day_ago = (utcnow() - timedelta(days=1)).replace(microsecond=0)
    start = await st.call("StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 0,
                                               "timestamp": day_ago.isoformat() + "Z"})
    await st.call("StopTransaction", {"transactionId": start[2]["transactionId"], "meterStop": 3000,
                                      "timestamp": (day_ago + timedelta(hours=1)).isoformat() + "Z"})
    [row] = await settled(node, "OFF", 1)
    assert row["started"] == day_ago.isoformat() + "Z" and row["clock"] is None
    assert row["energy_wh"] == 3000 and row["status"] == "completed"


async def test_numbers_at_the_bounds_are_answered_not_internal_errors(any_node_shipped_clock):
    node = any_node_shipped_clock
    await register(node, "BIGNUM")
    st = await raw_station(node, "BIGNUM", "ocpp2.0.1")
    now = utcnow().isoformat(timespec="seconds") + "Z"
    values = [1e15, 9.99e14, -1e15, 1e-300, 5e-324, 0, 1.7976931348623157e308]
    for n, value in enumerate(values):
        tx = f"big-{n}"
        for seq, kind in enumerate(("Started", "Ended")):
            answer = await st.call("TransactionEvent", {
                "eventType": kind, "timestamp": now, "triggerReason": "MeterValuePeriodic",
                "seqNo": seq, "transactionInfo": {"transactionId": tx},
                "evse": {"id": 1, "connectorId": 1},
                "idToken": {"idToken": "TAG1", "type": "ISO14443"},
                "meterValue": [{"timestamp": now, "sampledValue": [
                    {"value": value if seq else 0, "measurand": "Energy.Active.Import.Register",
                     "unitOfMeasure": {"unit": "kWh"}}]}]})
            assert answer[0] == 3 or answer[2] not in ("InternalError", "GenericError"), (value, answer)
    assert (await st.call("Heartbeat", {}))[0] == 3
    rows = await registry.list_sessions(node.engine, "BIGNUM")
    assert rows and all(r["status"] in ("completed", "flagged", "active") for r in rows)


@pytest.fixture
async def any_node_shipped_clock(db_url):
    async with running_node(db_url, settings(**SHIPPED)) as running:
        yield running
