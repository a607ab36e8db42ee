"""OCPP 2.0.1 CSMS test cases of the OCA's compliancy testing tool that issue 14 covers,
driven over a raw socket that plays the Charging Station (the tool's role) and checks the
CSMS's frames as the test case does. Named after the case ids; where no case id could be
confirmed, after the use case (N04 ...), with the checks its requirements make. Each runs
for a 2.0.1 and a 2.1 station (the use cases are unchanged in 2.1)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cocharge.gateway.operator_client import send_request
from cocharge.node import Node, running_node
from cocharge.stations import firmware, registry, sharing
from tests.conftest import RawStation, raw_station, register, settings
from tests.gateway.test_device_management import sign, signing_pair

NOW = "2026-11-24T10:00:00Z"


# The subprotocol each running node's stations speak in this test (the node fixture's param).
VERSION: dict[int, str] = {}


@pytest.fixture(params=["ocpp2.0.1", "ocpp2.1"])
async def node(sqlite_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    async with running_node(sqlite_url, settings(control_interval_s=0.2,
                                                 local_list_sync_s=0.3)) as running:
        VERSION[id(running)] = request.param
        yield running
        VERSION.pop(id(running), None)


def version(node: Node) -> str:
    return VERSION[id(node)]


async def station(node: Node, station_id: str = "CS1", **register_args: Any) -> RawStation:
    await register(node, station_id, **register_args)
    return await raw_station(node, station_id, version(node))


async def csms_sends(cs: RawStation, action: str) -> list[Any]:
    """The next call of `action` from the CSMS (others are answered as a station would)."""
    async with asyncio.timeout(10):
        while True:
            frame = json.loads(await cs.ws.recv())
            if frame[0] == 2 and frame[2] == action:
                return list(frame)
            if frame[0] == 2:
                await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))


def operator(node: Node, station_id: str, command: str, **args: Any) -> asyncio.Task[Any]:
    """The operator's request, running while the test plays the station."""
    return asyncio.create_task(send_request(node.engine, {
        "command": command, "station": station_id, "args": args}))


async def answered(cs: RawStation, action: str, payload: dict[str, Any]) -> None:
    """The station sends `action`; the CSMS must answer it with an empty (valid) result."""
    answer = await cs.call(action, payload)
    assert answer[0] == 3, answer
    assert answer[2] == {}, answer


@pytest.mark.parametrize("case, base", [("TC_B_12", "ConfigurationInventory"),
                                        ("TC_B_13", "FullInventory")])
async def test_tc_b_12_and_13_csms_get_base_report(node, case, base):
    cs = await station(node)
    asked = operator(node, "CS1", "get-base-report", report_base=base)
    frame = await csms_sends(cs, "GetBaseReport")
    assert frame[3]["reportBase"] == base and isinstance(frame[3]["requestId"], int)
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    assert (await asked)["accepted"]
    request_id = frame[3]["requestId"]
    item = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "OfflineThreshold"},
            "variableAttribute": [{"type": "Actual", "value": "300", "mutability": "ReadWrite"}],
            "variableCharacteristics": {"dataType": "integer", "supportsMonitoring": False}}
    second = {**item, "variable": {"name": "MessageTimeout"},
              "variableAttribute": [{"type": "Actual", "value": "30"}]}
    await answered(cs, "NotifyReport", {"requestId": request_id, "generatedAt": NOW, "seqNo": 0,
                                        "tbc": True, "reportData": [item]})
    await answered(cs, "NotifyReport", {"requestId": request_id, "generatedAt": NOW, "seqNo": 1,
                                        "reportData": [second]})
    rows = await registry.list_station_variables(node.engine, "CS1", "OCPPCommCtrlr")
    assert {(r["variable"], r["value"]) for r in rows} == {("OfflineThreshold", "300"),
                                                           ("MessageTimeout", "30")}


async def test_tc_b_10_csms_set_variables_multiple_values(node):
    cs = await station(node)
    asked = operator(node, "CS1", "set-variables", values={
        "OCPPCommCtrlr.OfflineThreshold": "300", "AuthCtrlr.LocalAuthorizeOffline": "true"})
    frame = await csms_sends(cs, "SetVariables")
    data = frame[3]["setVariableData"]
    assert {(d["component"]["name"], d["variable"]["name"], d["attributeValue"])
            for d in data} == {("OCPPCommCtrlr", "OfflineThreshold", "300"),
                               ("AuthCtrlr", "LocalAuthorizeOffline", "true")}
    await cs.ws.send(json.dumps([3, frame[1], {"setVariableResult": [
        {"attributeStatus": "Accepted", "attributeType": "Actual",
         "component": d["component"], "variable": d["variable"]} for d in data]}]))
    answer = await asked
    assert answer["accepted"] and answer["status"] == "Accepted,Accepted"


async def test_tc_d_01_csms_send_local_list_full(node):
    """Its sharing rules give the station a Full list: every entry with idTokenInfo."""
    await register(node, "CS1", tags=("OWNER", "NEIGHBOUR"))
    await sharing.set_rules(node.engine, "CS1", 0, {"owner_tags": frozenset({"OWNER"}),
                                                    "allowed_tags": frozenset({"NEIGHBOUR"})})
    cs = await raw_station(node, "CS1", version(node))
    frame = await csms_sends(cs, "SendLocalList")
    payload = frame[3]
    assert payload["updateType"] == "Full" and payload["versionNumber"] >= 1
    entries = payload["localAuthorizationList"]
    assert {e["idToken"]["idToken"] for e in entries} == {"OWNER", "NEIGHBOUR"}
    assert all(e["idTokenInfo"]["status"] == "Accepted" for e in entries)
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))


@pytest.mark.parametrize("signed", [True, False], ids=["secure", "plain"])
async def test_tc_l_01_csms_secure_firmware_update(node, signed):
    """L01 (signed: signing certificate and signature in the request) and L02 (without)."""
    key, certificate = signing_pair()
    signature = sign(key, b"7.0") if signed else None
    file_id = await firmware.add_file(node.engine, "fw.bin", "7.0", b"7.0", signature,
                                      certificate if signed else None)
    cs = await station(node)
    campaign_id, _ = await firmware.create_campaign(
        node.engine, "7.0", file_id, None, firmware.Selection(stations=("CS1",)), at_once=1,
        retries=0)
    frame = await csms_sends(cs, "UpdateFirmware")
    fw = frame[3]["firmware"]
    assert frame[3]["requestId"] == campaign_id and "retrieveDateTime" in fw
    if signed:
        firmware.check_signature(b"7.0", fw["signature"], fw["signingCertificate"])
    else:
        assert "signature" not in fw and "signingCertificate" not in fw
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    steps = ["Downloading", "Downloaded", *(["SignatureVerified"] if signed else []),
             "Installing", "Installed"]
    for status in steps:
        await answered(cs, "FirmwareStatusNotification", {"status": status,
                                                          "requestId": campaign_id})
    shown = await firmware.campaign_status(node.engine, campaign_id)
    assert [t["status"] for t in shown["targets"]] == ["done"]


async def test_tc_n_62_csms_clear_customer_information_clear_and_report(node):
    cs = await station(node)
    asked = operator(node, "CS1", "customer-information",
                     customer_identifier="OpenChargeAlliance", report=True, clear=True)
    frame = await csms_sends(cs, "CustomerInformation")
    payload = frame[3]
    assert payload["report"] is True and payload["clear"] is True
    assert payload["customerIdentifier"] == "OpenChargeAlliance" and "idToken" not in payload
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    assert (await asked)["accepted"]
    await answered(cs, "NotifyCustomerInformation", {
        "data": "sessions: 3", "seqNo": 0, "generatedAt": NOW,
        "requestId": payload["requestId"], "tbc": True})
    await answered(cs, "NotifyCustomerInformation", {
        "data": "cleared", "seqNo": 1, "generatedAt": NOW, "requestId": payload["requestId"]})
    kept = await registry.list_station_events(node.engine, "CS1", "customer_information")
    assert [k["details"]["data"] for k in reversed(kept)] == ["sessions: 3", "cleared"]


async def test_n04_csms_set_variable_monitoring_and_n07_alert_event(node):
    """N04: SetVariableMonitoringRequest as asked, the monitor kept with the station's id;
    N07: the NotifyEvent it fires is answered and kept."""
    cs = await station(node)
    asked = operator(node, "CS1", "set-variable-monitoring", variable="EVSE.Power",
                     type="UpperThreshold", value=7400, severity=3, evse_id=1)
    frame = await csms_sends(cs, "SetVariableMonitoring")
    [data] = frame[3]["setMonitoringData"]
    assert (data["component"], data["variable"], data["type"], data["value"],
            data["severity"]) == ({"name": "EVSE", "evse": {"id": 1}}, {"name": "Power"},
                                  "UpperThreshold", 7400, 3)
    await cs.ws.send(json.dumps([3, frame[1], {"setMonitoringResult": [{
        "id": 42, "status": "Accepted", "type": "UpperThreshold", "severity": 3,
        "component": data["component"], "variable": data["variable"]}]}]))
    assert (await asked)["accepted"]
    [monitor] = await registry.list_station_monitors(node.engine, "CS1")
    assert (monitor["id"], monitor["value"], monitor["source"]) == (42, "7400", "set")
    await answered(cs, "NotifyEvent", {"generatedAt": NOW, "seqNo": 0, "eventData": [{
        "eventId": 1, "timestamp": NOW, "trigger": "Alerting", "actualValue": "7500",
        "eventNotificationType": "CustomMonitor", "variableMonitoringId": 42,
        "component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}}]})
    [event] = await registry.list_station_events(node.engine, "CS1", "event")
    assert event["details"]["event_data"][0]["variable_monitoring_id"] == 42


async def test_n02_csms_get_monitoring_report_and_n06_clear(node):
    cs = await station(node)
    asked = operator(node, "CS1", "get-monitoring-report",
                     monitoring_criteria=["ThresholdMonitoring"])
    frame = await csms_sends(cs, "GetMonitoringReport")
    assert frame[3]["monitoringCriteria"] == ["ThresholdMonitoring"]
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    assert (await asked)["accepted"]
    monitor = {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"},
               "variableMonitoring": [{"id": 7, "transaction": False, "value": 11000,
                                       "type": "UpperThreshold", "severity": 2}]}
    if version(node) == "ocpp2.1":  # 2.1 says how the monitor came to be
        monitor["variableMonitoring"][0]["eventNotificationType"] = "CustomMonitor"
    await answered(cs, "NotifyMonitoringReport", {"requestId": frame[3]["requestId"],
                                                  "seqNo": 0, "generatedAt": NOW,
                                                  "monitor": [monitor]})
    [row] = await registry.list_station_monitors(node.engine, "CS1")
    assert (row["id"], row["value"], row["severity"], row["source"]) == (7, "11000", 2, "report")
    asked = operator(node, "CS1", "clear-variable-monitoring", ids=[7])
    frame = await csms_sends(cs, "ClearVariableMonitoring")
    assert frame[3] == {"id": [7]}
    await cs.ws.send(json.dumps([3, frame[1], {"clearMonitoringResult": [
        {"id": 7, "status": "Accepted"}]}]))
    assert (await asked)["accepted"]
    assert await registry.list_station_monitors(node.engine, "CS1") == []


async def test_n01_csms_get_log_upload_tracked(node):
    cs = await station(node)
    asked = operator(node, "CS1", "get-log", log_type="SecurityLog")
    frame = await csms_sends(cs, "GetLog")
    payload = frame[3]
    assert payload["logType"] == "SecurityLog"
    assert payload["log"]["remoteLocation"].startswith("http://")
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted", "filename": "sec.log"}]))
    assert (await asked)["accepted"]
    for status in ("Uploading", "Uploaded"):
        await answered(cs, "LogStatusNotification", {"status": status,
                                                     "requestId": payload["requestId"]})
    [row] = await registry.list_uploads(node.engine, "CS1")
    assert (row["status"], row["filename"]) == ("Uploaded", "sec.log")


async def test_b09_csms_set_network_profile(node):
    cs = await station(node)
    asked = operator(node, "CS1", "set-network-profile", configuration_slot=1,
                     ocpp_csms_url="wss://csms.example.org/ocpp/", security_profile=3)
    frame = await csms_sends(cs, "SetNetworkProfile")
    assert frame[3]["configurationSlot"] == 1
    data = frame[3]["connectionData"]
    assert (data["ocppCsmsUrl"], data["securityProfile"], data["ocppVersion"],
            data["ocppTransport"], data["ocppInterface"]) == (
        "wss://csms.example.org/ocpp/", 3, "OCPP20", "JSON", "Wired0")
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    assert (await asked)["accepted"]


async def test_tc_a_09_csms_update_charging_station_password_for_http_basic_authentication(node):
    """SetVariablesRequest SecurityCtrlr.BasicAuthPassword; after Accepted the station
    reconnects with the new password and is admitted (the old one no longer is)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from tests.gateway.test_passwords import basic

    await registry.add_station(node.engine, registry.NewStation("CSA", password="old-password-0009"))
    cs = await raw_station(node, "CSA", version(node),
                           additional_headers=basic("CSA", "old-password-0009"))
    asked = operator(node, "CSA", "rotate-password")
    frame = await csms_sends(cs, "SetVariables")
    [data] = frame[3]["setVariableData"]
    assert data["component"] == {"name": "SecurityCtrlr"}
    assert data["variable"] == {"name": "BasicAuthPassword"}
    new = data["attributeValue"]
    assert 16 <= len(new) <= 40
    await cs.ws.send(json.dumps([3, frame[1], {"setVariableResult": [{
        "attributeStatus": "Accepted", "component": data["component"],
        "variable": data["variable"]}]}]))
    assert (await asked)["accepted"]
    await cs.ws.close()
    url = f"ws://127.0.0.1:{node.gateway.port}/ocpp/CSA"
    async with connect(url, subprotocols=[version(node)],
                       additional_headers=basic("CSA", new)) as ws:
        await ws.send(json.dumps([2, "b1", "BootNotification", {
            "chargingStation": {"vendorName": "raw", "model": "raw"}, "reason": "PowerUp"}]))
        assert json.loads(await ws.recv())[2]["status"] == "Accepted"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, subprotocols=[version(node)],
                      additional_headers=basic("CSA", "old-password-0009"))
    assert refused.value.response.status_code == 401


async def _limits(node: Node, cs: RawStation, limits: dict[tuple[str, str], int],
                  variable: str = "ItemsPerMessage") -> None:
    """The station's device model reports its per-message limits (as a base report would)."""
    await answered(cs, "NotifyReport", {"requestId": 1, "generatedAt": NOW, "seqNo": 0,
                                        "reportData": [{
        "component": {"name": component}, "variable": {"name": variable,
                                                       "instance": instance},
        "variableAttribute": [{"type": "Actual", "value": str(n), "mutability": "ReadOnly"}]}
        for (component, instance), n in limits.items()]})


async def test_b05_requests_keep_to_the_stations_bytes_per_message(node):
    await register(node, "CS1")
    cs = await raw_station(node, "CS1", version(node))
    await _limits(node, cs, {("DeviceDataCtrlr", "SetVariables"): 420}, "BytesPerMessage")
    values = {f"OCPPCommCtrlr.Variable{i}": "v" * 60 for i in range(4)}
    asked = operator(node, "CS1", "set-variables", values=values)
    sizes, names = [], []
    for _ in range(2):
        frame = await csms_sends(cs, "SetVariables")
        sizes.append(len(json.dumps(frame)))
        data = frame[3]["setVariableData"]
        names += [d["variable"]["name"] for d in data]
        await cs.ws.send(json.dumps([3, frame[1], {"setVariableResult": [
            {"attributeStatus": "Accepted", "component": d["component"],
             "variable": d["variable"]} for d in data]}]))
    assert max(sizes) <= 420 and names == [f"Variable{i}" for i in range(4)], sizes
    answer = await asked
    assert answer["accepted"] and answer["status"] == ",".join(["Accepted"] * 4)


async def test_b06_fr_05_n06_fr_04_requests_keep_to_the_stations_items_per_message(node):
    await register(node, "CS1")
    cs = await raw_station(node, "CS1", version(node))
    await _limits(node, cs, {("DeviceDataCtrlr", "GetVariables"): 4,
                             ("MonitoringCtrlr", "ClearVariableMonitoring"): 3})
    keys = [f"OCPPCommCtrlr.V{i}" for i in range(5)]
    asked = operator(node, "CS1", "config-get", keys=keys)
    seen = []
    for _ in range(2):  # 5 variables where the station takes 4: two requests, 4 then 1
        frame = await csms_sends(cs, "GetVariables")
        data = frame[3]["getVariableData"]
        seen.append(len(data))
        await cs.ws.send(json.dumps([3, frame[1], {"getVariableResult": [
            {"attributeStatus": "Accepted", "attributeValue": "1", "component": d["component"],
             "variable": d["variable"]} for d in data]}]))
    assert seen == [4, 1]
    answer = await asked
    assert answer["accepted"], answer
    assert [r["variable"]["name"] for r in answer["response"]["getVariableResult"]] == [
        f"V{i}" for i in range(5)]

    cleared = operator(node, "CS1", "clear-variable-monitoring", ids=[1, 2, 3, 4, 5])
    sizes = []
    for _ in range(2):  # 5 monitors where the station takes 3: 3 then 2
        frame = await csms_sends(cs, "ClearVariableMonitoring")
        sizes.append(len(frame[3]["id"]))
        await cs.ws.send(json.dumps([3, frame[1], {"clearMonitoringResult": [
            {"status": "Accepted", "id": i} for i in frame[3]["id"]]}]))
    assert sizes == [3, 2]
    answer = await cleared
    assert answer["accepted"] and answer["status"] == ",".join(["Accepted"] * 5)


async def test_c01_f01_a_cards_type_is_kept_and_sent_back(node):
    """A station matches token and type: a card seen as ISO15693 is named ISO15693 in a
    remote start and in customer information, on any connection; a member whose card no
    station has presented yet is Central in a remote start."""
    await register(node, "CS1", tags=("CARD15693", "APPONLY"))
    cs = await raw_station(node, "CS1", version(node))
    auth = await cs.call("Authorize", {"idToken": {"idToken": "CARD15693", "type": "ISO15693"}})
    assert auth[2]["idTokenInfo"]["status"] == "Accepted"
    await cs.ws.close()
    cs = await raw_station(node, "CS1", version(node))  # a new connection: read from the database
    for tag, kind in (("CARD15693", "ISO15693"), ("APPONLY", "Central")):
        asked = operator(node, "CS1", "start", tag=tag, connector_id=1)
        frame = await csms_sends(cs, "RequestStartTransaction")
        assert frame[3]["idToken"] == {"idToken": tag, "type": kind}
        await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        assert (await asked)["accepted"]
    asked = operator(node, "CS1", "customer-information", id_token="CARD15693", report=True)
    frame = await csms_sends(cs, "CustomerInformation")
    assert frame[3]["idToken"] == {"idToken": "CARD15693", "type": "ISO15693"}
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    assert (await asked)["accepted"]


async def test_l03_l04_csms_publish_and_unpublish_firmware_at_a_local_controller(node):
    import hashlib

    await register(node, "LC1")
    cs = await raw_station(node, "LC1", version(node))
    image = b"local controller image 3.1"
    file_id = await firmware.add_file(node.engine, "lc.bin", "3.1", image)
    md5 = hashlib.md5(image).hexdigest()
    asked = operator(node, "LC1", "publish-firmware", file_id=file_id, retries=2)
    frame = await csms_sends(cs, "PublishFirmware")
    payload = frame[3]
    assert payload["checksum"] == md5 and payload["retries"] == 2
    assert payload["location"].endswith(f"/firmware/{file_id}")
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    assert (await asked)["accepted"]
    await answered(cs, "PublishFirmwareStatusNotification", {
        "status": "Published", "location": ["http://lc1.local/fw/lc.bin"],
        "requestId": payload["requestId"]})
    [kept] = await registry.list_station_events(node.engine, "LC1", "firmware_publish")
    assert kept["details"]["status"] == "Published"
    assert kept["details"]["location"] == ["http://lc1.local/fw/lc.bin"]
    asked = operator(node, "LC1", "unpublish-firmware", file_id=file_id)
    frame = await csms_sends(cs, "UnpublishFirmware")
    assert frame[3] == {"checksum": md5}
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Unpublished"}]))
    assert (await asked)["accepted"]
    missing = await send_request(node.engine, {"command": "unpublish-firmware", "station": "LC1",
                                                "args": {"file_id": 999}})
    assert not missing["ok"] and "no firmware file 999" in missing["message"], missing


async def test_named_options_for_cases_that_needed_a_raw_call(node):
    """G03 one connector of an EVSE; B08 / N02 the components of one EVSE; L01 an install
    time: each with a named option (`remote availability --evse-connector`, `get-report
    --evse`, `get-monitoring-report --evse`, `update-firmware --install-at`)."""
    cs = await station(node)
    cases = [
        ("availability", {"connector_id": 2, "evse_connector": 1, "operative": False},
         "ChangeAvailability", lambda p: p["evse"] == {"id": 2, "connectorId": 1}),
        ("get-report", {"component_variables": ["Connector"], "evse_id": 2}, "GetReport",
         lambda p: p["componentVariable"] == [{"component": {"name": "Connector",
                                                             "evse": {"id": 2}}}]),
        ("get-monitoring-report", {"component_variables": ["EVSE.Power"], "evse_id": 1},
         "GetMonitoringReport",
         lambda p: p["componentVariable"] == [{"component": {"name": "EVSE", "evse": {"id": 1}},
                                               "variable": {"name": "Power"}}]),
        ("update-firmware", {"url": "https://fw.example/7.bin",
                             "install_at": "2026-12-24T02:00:00Z"}, "UpdateFirmware",
         lambda p: p["firmware"]["installDateTime"] == "2026-12-24T02:00:00Z"),
    ]
    for command, args, action, check in cases:
        asked = operator(node, "CS1", command, **args)
        frame = await csms_sends(cs, action)
        assert check(frame[3]), frame
        await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        assert (await asked)["accepted"], command


async def test_21_a_monitor_as_a_periodic_event_stream(node):
    cs = await station(node)
    args = {"variable": "EVSE.Power", "type": "Periodic", "value": 10, "evse_id": 1,
            "stream_interval": 5, "stream_values": 12}
    if version(node) == "ocpp2.0.1":
        refused = await send_request(node.engine, {"command": "set-variable-monitoring",
                                                   "station": "CS1", "args": args})
        assert not refused["ok"] and "periodic event streams are OCPP 2.1" in refused["message"]
        return
    asked = operator(node, "CS1", "set-variable-monitoring", **args)
    frame = await csms_sends(cs, "SetVariableMonitoring")
    [data] = frame[3]["setMonitoringData"]
    assert data["periodicEventStream"] == {"interval": 5, "values": 12}
    await cs.ws.send(json.dumps([3, frame[1], {"setMonitoringResult": [{
        "status": "Accepted", "id": 3, "type": "Periodic", "severity": 5,
        "component": data["component"], "variable": data["variable"]}]}]))
    assert (await asked)["accepted"]


async def test_n09_customer_information_by_certificate(node):
    cs = await station(node)
    hashed = {"hashAlgorithm": "SHA256", "issuerNameHash": "ab" * 32,
              "issuerKeyHash": "cd" * 32, "serialNumber": "1f00"}
    asked = operator(node, "CS1", "customer-information", customer_certificate=hashed,
                     report=True)
    frame = await csms_sends(cs, "CustomerInformation")
    assert frame[3]["customerCertificate"] == hashed and "idToken" not in frame[3]
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    assert (await asked)["accepted"]
    both = await send_request(node.engine, {"command": "customer-information", "station": "CS1",
                                            "args": {"customer_certificate": hashed,
                                                     "id_token": "T"}})
    assert not both["ok"] and "one of them" in both["message"]


async def test_n04_several_monitors_in_one_request(node):
    cs = await station(node)
    asked = operator(node, "CS1", "set-variable-monitoring", variable="EVSE.Power",
                     type="UpperThreshold", value=7400, evse_id=1,
                     also=["EVSE.Power:LowerThreshold:100:4:1", "Connector.Available:Delta:1"])
    frame = await csms_sends(cs, "SetVariableMonitoring")
    data = frame[3]["setMonitoringData"]
    assert [(d["type"], d["value"], d["severity"], d["component"].get("evse")) for d in data] == [
        ("UpperThreshold", 7400, 5, {"id": 1}), ("LowerThreshold", 100, 4, {"id": 1}),
        ("Delta", 1, 5, None)]
    await cs.ws.send(json.dumps([3, frame[1], {"setMonitoringResult": [
        {"status": "Accepted", "id": 20 + i, "type": d["type"], "severity": d["severity"],
         "component": d["component"], "variable": d["variable"]} for i, d in enumerate(data)]}]))
    assert (await asked)["accepted"]
    assert len(await registry.list_station_monitors(node.engine, "CS1")) == 3
    bad = await send_request(node.engine, {"command": "set-variable-monitoring", "station": "CS1",
                                           "args": {"variable": "EVSE.Power", "type": "Delta",
                                                    "value": 1, "also": ["EVSE.Power:Nope:1"]}})
    assert not bad["ok"] and "Component.Variable:Type:Value" in bad["message"]


async def test_h01_reservations_without_an_evse_by_connector_type_and_for_a_group(node):
    cs = await station(node)
    asked = operator(node, "CS1", "reserve", tag="TAG1", until="2030-01-01T19:00:00+08:00",
                     connector_type="cType2", group="lee-family")
    frame = await csms_sends(cs, "ReserveNow")
    payload = frame[3]
    assert "evseId" not in payload and payload["connectorType"] == "cType2"
    assert payload["groupIdToken"] == {"idToken": "lee-family", "type": "Central"}
    assert payload["idToken"]["idToken"] == "TAG1" and payload["id"] >= 1_500_000_000
    assert payload["expiryDateTime"].startswith("2030-01-01T19:00:00")
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    assert (await asked)["accepted"]
    cancel = operator(node, "CS1", "cancel-reservation", reservation_id=payload["id"])
    frame = await csms_sends(cs, "CancelReservation")
    assert frame[3] == {"reservationId": payload["id"]}
    await cs.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    assert (await cancel)["accepted"]
    naive = await send_request(node.engine, {"command": "reserve", "station": "CS1", "args": {
        "tag": "TAG1", "until": "2030-01-01T19:00:00"}})
    assert not naive["ok"] and "zone" in naive["message"]


async def test_21_a_periodic_monitor_streams_by_itself(node):
    cs = await station(node)
    asked = operator(node, "CS1", "set-variable-monitoring", variable="EVSE.Power",
                     type="Periodic", value=30, evse_id=1)
    frame = await csms_sends(cs, "SetVariableMonitoring")
    [data] = frame[3]["setMonitoringData"]
    if version(node) == "ocpp2.1":
        assert data["periodicEventStream"] == {"interval": 30, "values": 1}
    else:
        assert "periodicEventStream" not in data
    await cs.ws.send(json.dumps([3, frame[1], {"setMonitoringResult": [{
        "status": "Accepted", "id": 4, "type": "Periodic", "severity": 5,
        "component": data["component"], "variable": data["variable"]}]}]))
    assert (await asked)["accepted"]
