"""OCPP 2.1 DER control (block R) and periodic event streams, over real sockets with the
simulated 2.1 charger: R04 SetDERControl with its NotifyDERStartStop kept, R05
GetDERControl with ReportDERControl kept, R06 ClearDERControl; a stream the station opens,
listed (GetPeriodicEventStream) and adjusted (AdjustPeriodicEventStream), its data as SEND
frames kept; the same commands refused for a 2.0.1 station with the reason."""

from __future__ import annotations

from typing import Any

from cocharge.gateway.operator_client import send_request
from cocharge.stations import registry
from tests.conftest import register, simulated, until


async def ask(node: Any, station_id: str, command: str, **args: Any) -> dict[str, Any]:
    return await send_request(node.engine, {"command": command, "station": station_id,
                                            "args": args})


async def events(node: Any, station_id: str, kind: str) -> list[dict[str, Any]]:
    return [e["details"] for e in await registry.list_station_events(node.engine, station_id,
                                                                     kind)]


async def test_r04_r05_r06_der_controls_at_a_21_charger(node):
    await register(node, "DER1")
    async with simulated(node, "DER1", "2.1") as box:
        limit = {"priority": 0, "pctMaxDischargePower": 50}
        answer = await ask(node, "DER1", "set-der-control", control_id="dso-1",
                           control_type="LimitMaxDischarge", settings=limit)
        assert answer["accepted"], answer
        assert box.der_controls["dso-1"]["limit_max_discharge"] == {
            "priority": 0, "pct_max_discharge_power": 50}
        started = await until(lambda: events(node, "DER1", "der_start_stop"))
        assert started[0]["control_id"] == "dso-1" and started[0]["started"] is True

        answer = await ask(node, "DER1", "get-der-control", control_type="LimitMaxDischarge")
        assert answer["accepted"], answer
        [report] = await until(lambda: events(node, "DER1", "der_control"))
        assert report["limit_max_discharge"][0]["id"] == "dso-1"
        assert report["limit_max_discharge"][0]["limit_max_discharge"][
            "pct_max_discharge_power"] == 50

        await box.der_alarm("LimitMaxDischarge", "OverVoltage")
        [alarm] = await until(lambda: events(node, "DER1", "der_alarm"))
        assert alarm["grid_event_fault"] == "OverVoltage" and alarm["alarm_ended"] is False

        answer = await ask(node, "DER1", "clear-der-control", control_id="dso-1")
        assert answer["accepted"] and box.der_controls == {}
        gone = await ask(node, "DER1", "get-der-control", control_id="dso-1")
        assert not gone["accepted"] and gone["status"] == "NotFound"
        bad = await ask(node, "DER1", "set-der-control", control_id="x",
                        control_type="LimitMaxDischarge", settings={"pct": "lots"})
        assert not bad["ok"] and "schema" in bad["message"]  # checked before it is sent


async def test_periodic_event_streams_are_listed_adjusted_and_kept(node):
    await register(node, "STR1")
    async with simulated(node, "STR1", "2.1") as box:
        stream_id = await box.open_stream(monitor_id=7, interval=10, values=5)
        opened = await until(lambda: events(node, "STR1", "periodic_event_stream"))
        assert opened[0]["opened"]["constant_stream_data"]["id"] == stream_id
        listed = await ask(node, "STR1", "get-periodic-event-stream")
        assert listed["ok"], listed
        assert listed["response"]["constantStreamData"] == [
            {"id": stream_id, "variableMonitoringId": 7, "params": {"interval": 10, "values": 5}}]
        adjusted = await ask(node, "STR1", "adjust-periodic-event-stream", id=stream_id,
                             interval=60)
        assert adjusted["accepted"] and box.streams[stream_id]["params"] == {"interval": 60}
        # The stream's data: a SEND frame, never answered, kept.
        await box.stream_values(stream_id, [(0.0, "7.4")])
        data = await until(lambda: events(node, "STR1", "periodic_event"))
        assert data[0]["data"] == [{"t": 0.0, "v": "7.4"}]


async def test_21_operations_are_refused_for_a_201_station_with_the_reason(node):
    await register(node, "OLD1")
    async with simulated(node, "OLD1", "2.0.1"):
        for command, args in (("set-der-control", {"control_id": "a", "settings": {},
                                                   "control_type": "LimitMaxDischarge"}),
                              ("get-periodic-event-stream", {}), ("get-tariffs", {})):
            answer = await ask(node, "OLD1", command, **args)
            assert not answer["ok"] and "2.1" in answer["message"], answer
