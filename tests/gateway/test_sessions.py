"""Sessions: energy from registers, duplicates, offline replay, misreads; both versions, both DBs."""

from __future__ import annotations

import asyncio

import pytest

from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.stations import registry
from tests.conftest import raw_station, register, ws_url


@pytest.mark.parametrize("protocol", ["1.6", "2.0.1", "2.1"])
async def test_simulated_session_is_metered_and_stored(any_node, protocol):
    node = any_node
    await register(node, "SIM1")
    box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="SIM1",
                                               protocol=protocol, speed=300, meter_interval_s=0.1))
    session = await box.charge(1, "TAG1", energy_wh=2000)
    await asyncio.wait_for(session.done.wait(), 20)
    await close_wallbox(box, reader)
    [row] = await registry.list_sessions(node.engine, "SIM1")
    assert row["status"] == "completed"
    assert row["energy_wh"] == row["meter_stop_wh"] - row["meter_start_wh"]
    assert abs(row["energy_wh"] - box.hw[1].register_wh) <= 1
    assert row["energy_wh"] >= 2000
    assert row["tag"] == "TAG1"


async def test_16_repeated_start_and_stop_counted_once(any_node):
    node = any_node
    await register(node, "CP1")
    st = await raw_station(node, "CP1")
    start = {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000, "timestamp": "2026-11-01T10:00:00Z"}
    first = await st.call("StartTransaction", start)
    again = await st.call("StartTransaction", start)
    assert first[2]["transactionId"] == again[2]["transactionId"]
    assert first[2]["idTagInfo"]["status"] == "Accepted"
    stop = {"transactionId": first[2]["transactionId"], "meterStop": 8000,
            "timestamp": "2026-11-01T11:00:00Z", "reason": "Local"}
    assert (await st.call("StopTransaction", stop))[0] == 3
    assert (await st.call("StopTransaction", {**stop, "meterStop": 9999}))[0] == 3
    [row] = await registry.list_sessions(node.engine, "CP1")
    assert row["energy_wh"] == 7000 and row["status"] == "completed"


async def test_201_repeated_seqno_changes_nothing_and_replay_is_ordered(any_node):
    node = any_node
    await register(node, "CP2")
    st = await raw_station(node, "CP2", "ocpp2.0.1")

    def event(kind, seq, ts, wh):
        return {"eventType": kind, "timestamp": ts, "triggerReason": "MeterValuePeriodic",
                "seqNo": seq, "transactionInfo": {"transactionId": "tx-1"},
                "evse": {"id": 1, "connectorId": 1}, "idToken": {"idToken": "TAG1", "type": "ISO14443"},
                "meterValue": [{"timestamp": ts, "sampledValue": [
                    {"value": wh, "measurand": "Energy.Active.Import.Register",
                     "unitOfMeasure": {"unit": "kWh"}}]}]}

    assert (await st.call("TransactionEvent", event("Started", 0, "2026-11-01T10:00:00Z", 10.0)))[0] == 3
    # Offline-queued events replayed late, with old timestamps and out of order.
    assert (await st.call("TransactionEvent", event("Updated", 2, "2026-11-01T10:40:00Z", 14.0)))[0] == 3
    assert (await st.call("TransactionEvent", event("Updated", 1, "2026-11-01T10:20:00Z", 12.0)))[0] == 3
    assert (await st.call("TransactionEvent", event("Updated", 1, "2026-11-01T10:20:00Z", 99.0)))[0] == 3
    assert (await st.call("TransactionEvent", event("Ended", 3, "2026-11-01T11:00:00Z", 16.5)))[0] == 3
    assert (await st.call("TransactionEvent", event("Ended", 3, "2026-11-01T11:00:00Z", 50.0)))[0] == 3
    [row] = await registry.list_sessions(node.engine, "CP2")
    assert row["energy_wh"] == 6500
    assert row["started"] == "2026-11-01T10:00:00Z" and row["ended"] == "2026-11-01T11:00:00Z"


async def test_lifetime_register_misread_is_flagged_not_billed(node):
    await register(node, "CP1", max_power_kw=11)
    st = await raw_station(node, "CP1")
    start = await st.call("StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 0,
                                               "timestamp": "2026-11-01T10:00:00Z"})
    await st.call("StopTransaction", {"transactionId": start[2]["transactionId"],
                                      "meterStop": 48_123_456, "timestamp": "2026-11-01T11:00:00Z"})
    [row] = await registry.list_sessions(node.engine)
    assert row["status"] == "flagged"
    assert "lifetime register" in row["flag_reason"]


@pytest.mark.parametrize("protocol,tag,expected", [
    ("ocpp1.6", "NOBODY", "Invalid"), ("ocpp1.6", "BLOCK1", "Blocked"), ("ocpp1.6", "OLD1", "Expired"),
    ("ocpp2.0.1", "NOBODY", "Unknown"), ("ocpp2.0.1", "BLOCK1", "Blocked"), ("ocpp2.0.1", "OLD1", "Expired"),
    ("ocpp1.6", "TAG1", "Accepted"), ("ocpp2.0.1", "TAG1", "Accepted"),
])
async def test_authorize_answers(node, protocol, tag, expected):
    from datetime import datetime

    await register(node, "CP1")
    await registry.add_member(node.engine, "blocked", "BLOCK1", None)
    await registry.block_member(node.engine, "BLOCK1")
    await registry.add_member(node.engine, "old", "OLD1", None, expires_at=datetime(2020, 1, 1))
    st = await raw_station(node, "CP1", protocol)
    if protocol == "ocpp1.6":
        answer = await st.call("Authorize", {"idTag": tag})
        assert answer[2]["idTagInfo"]["status"] == expected
    else:
        answer = await st.call("Authorize", {"idToken": {"idToken": tag, "type": "ISO14443"}})
        assert answer[2]["idTokenInfo"]["status"] == expected
