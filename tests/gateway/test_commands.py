"""Operator commands through the operator channel to simulated stations, both versions."""

from __future__ import annotations

import asyncio

import pytest

from cocharge.gateway.operator_client import send_request
from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.stations import registry
from tests.conftest import register, simulated, until, ws_url


async def ask(node, station, command, **args):
    return await send_request(node.engine, {"command": command, "station": station, "args": args})


@pytest.fixture(params=["1.6", "2.0.1"])
async def wallbox(request, node):
    await register(node, "WB1")
    box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1",
                                               protocol=request.param, speed=300,
                                               meter_interval_s=0.1))
    yield box
    await close_wallbox(box, reader)


async def test_remote_start_then_stop(node, wallbox):
    answer = await ask(node, "WB1", "start", tag="TAG1", connector_id=1)
    assert answer["ok"] and answer["accepted"] and answer["status"] == "Accepted"
    for _ in range(100):
        if 1 in wallbox.sessions and wallbox.sessions[1].started.is_set():
            break
        await asyncio.sleep(0.05)
    session = wallbox.sessions[1]
    # Stopped once the car has drawn some energy (on a busy machine the stop could otherwise
    # reach the charger before the simulated car began to charge: a session of 0 Wh).
    started_wh = wallbox.hw[1].register_wh
    await until(lambda: asyncio.sleep(0, wallbox.hw[1].register_wh > started_wh), 10)
    [row] = await registry.list_sessions(node.engine, "WB1")
    answer = await ask(node, "WB1", "stop", session_id=row["id"])
    assert answer["accepted"]
    await asyncio.wait_for(session.done.wait(), 10)
    [row] = await registry.list_sessions(node.engine, "WB1")
    assert row["status"] == "completed" and row["stop_reason"] == "Remote"
    assert row["energy_wh"] > 0


async def test_availability_unlock_reset_clear_cache_data_transfer(node, wallbox):
    assert (await ask(node, "WB1", "availability", connector_id=1, operative=False))["accepted"]
    assert wallbox.hw[1].operative is False
    refused = await ask(node, "WB1", "start", tag="TAG1", connector_id=1)
    assert refused["ok"] and not refused["accepted"] and refused["status"] == "Rejected"
    assert (await ask(node, "WB1", "availability", connector_id=1, operative=True))["accepted"]
    unlock = await ask(node, "WB1", "unlock", connector_id=1)
    assert unlock["status"] == "Unlocked"
    assert (await ask(node, "WB1", "reset", hard=False))["accepted"]
    assert (await ask(node, "WB1", "clear-cache"))["accepted"]
    echoed = await ask(node, "WB1", "data-transfer", vendor_id="acme", message_id="x", data="hi")
    assert echoed["accepted"] and echoed["response"]["data"] == "hi"
    trig = await ask(node, "WB1", "trigger", message="Heartbeat")
    assert trig["accepted"]


async def test_configuration_get_and_set(node, wallbox):
    key = "HeartbeatInterval" if wallbox.config.protocol == "1.6" else "OCPPCommCtrlr.HeartbeatInterval"
    assert (await ask(node, "WB1", "config-set", key=key, value="120"))["accepted"]
    assert wallbox.settings[key] == "120"
    answer = await ask(node, "WB1", "config-get", keys=[key])
    assert answer["accepted"] and "120" in str(answer["response"])


@pytest.mark.parametrize("protocol", ["1.6", "2.0.1", "2.1"])
async def test_command_to_offline_station_is_delivered_when_it_boots(node, protocol):
    from cocharge.stations.sharing import list_commands

    await register(node, "LATE")
    key = "HeartbeatInterval" if protocol == "1.6" else "OCPPCommCtrlr.HeartbeatInterval"
    queued = await send_request(node.engine, {"command": "config-set", "station": "LATE",
                                              "args": {"key": key, "value": "77"}})
    assert queued["ok"] and queued["queued"] and queued["status"] == "Queued"
    short = await send_request(node.engine, {"command": "clear-cache", "station": "LATE",
                                             "args": {}, "expires_s": 0.2})
    assert short["queued"]
    await asyncio.sleep(0.5)
    assert [c["status"] for c in await list_commands(node.engine, "LATE")] == ["pending", "expired"]
    box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="LATE", protocol=protocol))
    try:
        for _ in range(100):
            if box.settings[key] == "77":
                break
            await asyncio.sleep(0.05)
        assert box.settings[key] == "77"
        for _ in range(40):
            listed = await list_commands(node.engine, "LATE")
            if listed[0]["status"] != "pending":
                break
            await asyncio.sleep(0.05)
        assert [(c["command"], c["status"]) for c in listed] == [
            ("config-set", "delivered"), ("clear-cache", "expired")]
        assert listed[0]["result"] == "Accepted"
    finally:
        await close_wallbox(box, reader)


async def test_bad_requests(node):
    await register(node, "GONE")
    bad = await ask(node, "GONE", "launch-rocket")
    assert bad["error"] == "bad_request"
    unknown = await ask(node, "NO-SUCH-STATION", "clear-cache")
    assert unknown["error"] == "bad_request" and "no station" in unknown["message"]


async def test_station_that_never_answers_times_out(node):
    from tests.conftest import raw_station

    await register(node, "MUTE")
    station = await raw_station(node, "MUTE")  # boots, then does not answer a call
    answer = await ask(node, "MUTE", "clear-cache")
    assert not answer["ok"] and answer["error"] == "timeout"
    # The timed-out call is released (OCPP-J allows the next call once one has timed out):
    # the next command goes out, and an answer to it is taken.
    await station.answer()  # the unanswered ClearCache, read and ignored
    asked = asyncio.create_task(ask(node, "MUTE", "trigger", message="Heartbeat"))
    call = await station.answer()
    assert call[0] == 2 and call[2] == "TriggerMessage"
    await station.ws.send(f'[3, "{call[1]}", {{"status": "Accepted"}}]')
    answer = await asked
    assert answer["ok"] and answer["status"] == "Accepted", answer


async def test_remote_call_sends_any_call_of_the_version_checked_first(node, wallbox):
    """`cocharge remote call`: the escape hatch for what no command covers."""
    answer = await ask(node, "WB1", "call", action="TriggerMessage",
                       payload={"requestedMessage": "Heartbeat"})
    assert answer["ok"] and answer["status"] == "Accepted", answer
    bad = await ask(node, "WB1", "call", action="Reset", payload={"type": "Sideways"})
    assert bad["ok"] is False and bad["error"] == "bad_request" and "schema" in bad["message"]
    wrong_way = await ask(node, "WB1", "call", action="Heartbeat", payload={})
    assert wrong_way["ok"] is False and "has no call 'Heartbeat'" in wrong_way["message"]


async def test_device_model_report_is_stored_as_the_station_inventory(node):
    """2.0.1 GetBaseReport: the NotifyReport parts become `cocharge station variables`."""
    await register(node, "DM1")
    async with simulated(node, "DM1", "2.0.1", connectors=2) as box:
        answer = await ask(node, "DM1", "get-base-report", report_base="FullInventory")
        assert answer["ok"] and answer["status"] == "Accepted", answer
        for _ in range(100):
            rows = await registry.list_station_variables(node.engine, "DM1")
            if len(rows) == 5:
                break
            await asyncio.sleep(0.05)
        by_key = {(r["component"], r["evse"], r["variable"]): r for r in rows}
        assert by_key[("OCPPCommCtrlr", None, "HeartbeatInterval")]["value"] == "300"
        assert by_key[("ChargingStation", None, "Model")]["mutability"] == "ReadOnly"
        assert by_key[("EVSE", 2, "Power")]["value"] == str(16 * 230 * 3)
        assert by_key[("EVSE", 2, "Power")]["unit"] == "W"
        evse_only = await registry.list_station_variables(node.engine, "DM1", "EVSE")
        assert [r["evse"] for r in evse_only] == [1, 2]
        # A new value replaces the old one, not a second row.
        box.settings["OCPPCommCtrlr.HeartbeatInterval"] = "120"
        assert (await ask(node, "DM1", "get-base-report",
                          report_base="ConfigurationInventory"))["ok"]
        for _ in range(100):
            rows = await registry.list_station_variables(node.engine, "DM1", "OCPPCommCtrlr")
            if rows[0]["value"] == "120":
                break
            await asyncio.sleep(0.05)
        assert [r["value"] for r in rows if r["variable"] == "HeartbeatInterval"] == ["120"]


async def test_base_report_is_refused_for_16(node):
    await register(node, "OLD16")
    async with simulated(node, "OLD16", "1.6"):
        answer = await ask(node, "OLD16", "get-base-report")
        assert answer["ok"] is False and "config-get" in answer["message"]


async def test_set_variables_answers_each_and_updates_the_inventory(node):
    await register(node, "SV1")
    async with simulated(node, "SV1", "2.0.1") as box:
        answer = await ask(node, "SV1", "set-variables", values={
            "OCPPCommCtrlr.HeartbeatInterval": "120", "Nope.Missing": "1"})
        assert answer["ok"] and answer["accepted"] is False  # one of the two was refused
        results = {r["component"]["name"]: r["attributeStatus"]
                   for r in answer["response"]["setVariableResult"]}
        assert results == {"OCPPCommCtrlr": "Accepted", "Nope": "UnknownVariable"}
        assert box.settings["OCPPCommCtrlr.HeartbeatInterval"] == "120"
        rows = await registry.list_station_variables(node.engine, "SV1")
        assert [(r["component"], r["variable"], r["value"]) for r in rows] == [
            ("OCPPCommCtrlr", "HeartbeatInterval", "120")]


async def test_reset_of_one_evse(node, wallbox):
    answer = await ask(node, "WB1", "reset", evse_id=1)
    if wallbox.config.protocol == "1.6":
        assert answer["ok"] is False and "--evse" in answer["message"]
    else:
        assert answer["ok"] and answer["status"] == "Accepted"
        assert wallbox.last_reset == ("OnIdle", 1)


async def test_transaction_status_of_a_running_session(node, wallbox):
    answer = await ask(node, "WB1", "start", tag="TAG1", connector_id=1)
    assert answer["accepted"]
    for _ in range(100):
        if 1 in wallbox.sessions and wallbox.sessions[1].started.is_set():
            break
        await asyncio.sleep(0.05)
    [row] = await registry.list_sessions(node.engine, "WB1")
    status = await ask(node, "WB1", "get-transaction-status", session_id=row["id"])
    if wallbox.config.protocol == "1.6":
        assert status["ok"] is False and "no GetTransactionStatus" in status["message"]
    else:
        assert status["ok"], status
        assert status["response"] == {"ongoingIndicator": True, "messagesInQueue": False}
    unknown = await ask(node, "WB1", "get-transaction-status", session_id=999_999)
    assert unknown["ok"] is False and "no session 999999" in unknown["message"]
    await ask(node, "WB1", "stop", session_id=row["id"])
