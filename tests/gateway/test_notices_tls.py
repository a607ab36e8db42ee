"""Station notices are kept; TLS (security profile 2) serves the same protocol."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess

from sqlalchemy import select

from cocharge.node import running_node
from cocharge.store.schema import station_events
from tests.conftest import raw_station, register, settings

NOW = "2026-11-01T10:00:00Z"


async def kinds(node):
    async with node.engine.connect() as conn:
        rows = (await conn.execute(select(station_events.c.kind, station_events.c.payload))).all()
    return {r.kind: json.loads(r.payload) for r in rows}


async def test_16_notices_are_recorded(node):
    await register(node, "CP1")
    st = await raw_station(node, "CP1")
    for action, payload in [
        ("DataTransfer", {"vendorId": "acme", "messageId": "m", "data": "d"}),
        ("FirmwareStatusNotification", {"status": "Installed"}),
        ("DiagnosticsStatusNotification", {"status": "Uploaded"}),
        ("SecurityEventNotification", {"type": "TamperDetected", "timestamp": NOW}),
        ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
    ]:
        assert (await st.call(action, payload))[0] == 3, action
    seen = await kinds(node)
    assert seen["firmware"]["status"] == "Installed"
    assert seen["security"]["type"] == "TamperDetected"
    assert seen["diagnostics"]["status"] == "Uploaded"
    assert seen["data_transfer"]["vendor_id"] == "acme"


async def test_201_notices_are_recorded(node):
    await register(node, "CP2")
    st = await raw_station(node, "CP2", "ocpp2.0.1")
    for action, payload in [
        ("NotifyEvent", {"generatedAt": NOW, "seqNo": 0, "eventData": [{
            "eventId": 1, "timestamp": NOW, "trigger": "Alerting", "actualValue": "true",
            "eventNotificationType": "HardWiredNotification",
            "component": {"name": "ChargingStation"}, "variable": {"name": "Problem"}}]}),
        ("NotifyReport", {"requestId": 1, "generatedAt": NOW, "seqNo": 0}),
        ("SecurityEventNotification", {"type": "FirmwareUpdated", "timestamp": NOW}),
        ("FirmwareStatusNotification", {"status": "Downloaded"}),
        ("MeterValues", {"evseId": 1, "meterValue": [{"timestamp": NOW, "sampledValue": [{"value": 5}]}]}),
    ]:
        assert (await st.call(action, payload))[0] == 3, action
    seen = await kinds(node)
    assert seen["event"]["event_data"][0]["trigger"] == "Alerting"
    assert seen["report"]["request_id"] == 1
    assert seen["firmware"]["status"] == "Downloaded"


async def test_tls_profile_2(tmp_path, sqlite_url):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    from websockets.asyncio.client import connect

    from cocharge.gateway.server import tls_context

    async with running_node(sqlite_url, settings(), tls_context(str(cert), str(key))) as node:
        await register(node, "TLS1")
        client = ssl.create_default_context(cafile=str(cert))
        async with connect(f"wss://127.0.0.1:{node.gateway.port}/ocpp/TLS1",
                           subprotocols=["ocpp1.6"], ssl=client) as ws:
            await ws.send(json.dumps([2, "1", "BootNotification",
                                      {"chargePointVendor": "v", "chargePointModel": "m"}]))
            answer = json.loads(await ws.recv())
            assert answer[2]["status"] == "Accepted"
            # The upload endpoint speaks TLS too: the station is given an https URL, and a
            # stored firmware image is served over it.
            from cocharge.gateway.operator_client import send_request
            from cocharge.stations import firmware

            asked = asyncio.create_task(send_request(node.engine, {
                "command": "get-diagnostics", "station": "TLS1", "args": {}}))
            call = json.loads(await ws.recv())
            assert call[2] == "GetDiagnostics"
            assert call[3]["location"].startswith(f"https://127.0.0.1:{node.gateway.uploads.port}/")
            await ws.send(json.dumps([3, call[1], {"fileName": "d.log"}]))
            assert (await asked)["accepted"]
        file_id = await firmware.add_file(node.engine, "fw.bin", "9.9", b"9.9")
        reader, writer = await asyncio.open_connection("127.0.0.1", node.gateway.uploads.port,
                                                       ssl=client)
        writer.write(f"GET /firmware/{file_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        reply = await reader.read()
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\n9.9")
