"""OCPP 1.6 CSMS test cases of the OCA's compliancy testing tool that issue 14 covers, driven
over a raw socket that plays the charge point (the tool's role) and checks the Central
System's frames as the test case does. Named after the case ids."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cocharge.node import Node, running_node
from cocharge.stations import firmware, registry, sharing
from tests.conftest import RawStation, raw_station, register, settings, until

ANSWERS = {"ChangeAvailability": {"status": "Accepted"}, "DataTransfer": {"status": "Accepted"},
           "SendLocalList": {"status": "Accepted"}, "UpdateFirmware": {},
           "TriggerMessage": {"status": "Accepted"}}


@pytest.fixture
async def node(sqlite_url: str) -> AsyncIterator[Node]:
    async with running_node(sqlite_url, settings(control_interval_s=0.2,
                                                 local_list_sync_s=0.3)) as running:
        yield running


async def next_call(station: RawStation, action: str) -> list[Any]:
    """Answer the Central System's calls as a charge point that accepts them, until one of
    `action` arrives (returned unanswered)."""
    async with asyncio.timeout(10):
        while True:
            frame = json.loads(await station.ws.recv())
            if frame[0] != 2:
                continue
            if frame[2] == action:
                return list(frame)
            await station.ws.send(json.dumps([3, frame[1], ANSWERS.get(frame[2], {})]))


async def shared(node: Node) -> RawStation:
    await register(node, "CP1", tags=("OWNER", "NEIGHBOUR", "LATER"))
    await sharing.set_rules(node.engine, "CP1", 0, {"owner_tags": frozenset({"OWNER"}),
                                                    "allowed_tags": frozenset({"NEIGHBOUR"})})
    return await raw_station(node, "CP1")


async def test_tc_043_4_csms_send_local_authorization_list_full(node):
    station = await shared(node)
    frame = await next_call(station, "SendLocalList")
    payload = frame[3]
    assert payload["updateType"] == "Full"
    assert {e["idTag"] for e in payload["localAuthorizationList"]} == {"OWNER", "NEIGHBOUR"}
    assert all(e["idTagInfo"]["status"] == "Accepted" for e in payload["localAuthorizationList"])
    await station.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))


async def test_tc_043_5_csms_send_local_authorization_list_differential(node):
    station = await shared(node)
    full = await next_call(station, "SendLocalList")
    await station.ws.send(json.dumps([3, full[1], {"status": "Accepted"}]))
    await sharing.set_rules(node.engine, "CP1", 0, {
        "allowed_tags": frozenset({"NEIGHBOUR", "LATER"})})
    frame = await next_call(station, "SendLocalList")
    payload = frame[3]
    assert payload["updateType"] == "Differential"
    assert payload["listVersion"] > full[3]["listVersion"]
    assert payload["localAuthorizationList"] == [
        {"idTag": "LATER", "idTagInfo": {"status": "Accepted"}}]
    await station.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))


async def firmware_started(node: Node) -> tuple[RawStation, int]:
    await register(node, "CP1")
    station = await raw_station(node, "CP1")
    campaign_id, _ = await firmware.create_campaign(
        node.engine, "2.0", None, "http://files.example.com/fw-2.0.bin",
        firmware.Selection(stations=("CP1",)), at_once=1, retries=0)
    frame = await next_call(station, "UpdateFirmware")
    assert frame[3]["location"] == "http://files.example.com/fw-2.0.bin"
    assert "retrieveDate" in frame[3]
    await station.ws.send(json.dumps([3, frame[1], {}]))
    return station, campaign_id


async def notify(station: RawStation, *statuses: str) -> None:
    for status in statuses:
        answer = await station.call("FirmwareStatusNotification", {"status": status})
        assert answer[0] == 3 and answer[2] == {}


async def test_tc_044_2_csms_firmware_update_download_failed(node):
    station, campaign_id = await firmware_started(node)
    await notify(station, "Downloading", "DownloadFailed")
    shown = await firmware.campaign_status(node.engine, campaign_id)
    assert [(t["status"], t["detail"]) for t in shown["targets"]] == [
        ("failed", "DownloadFailed")]
    events = await registry.list_station_events(node.engine, "CP1", "firmware")
    assert [e["details"]["status"] for e in reversed(events)] == ["Downloading", "DownloadFailed"]


async def test_tc_044_3_csms_firmware_update_installation_failed(node):
    station, campaign_id = await firmware_started(node)
    await notify(station, "Downloading", "Downloaded")
    status = await station.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                                       "status": "Unavailable"})
    assert status[0] == 3
    await notify(station, "Installing", "InstallationFailed")
    shown = await firmware.campaign_status(node.engine, campaign_id)
    assert [(t["status"], t["detail"]) for t in shown["targets"]] == [
        ("failed", "InstallationFailed")]


async def test_tc_044_1_csms_firmware_update(node):
    station, campaign_id = await firmware_started(node)
    await notify(station, "Downloading", "Downloaded", "Installing")
    boot = await station.call("BootNotification", {"chargePointVendor": "raw",
                                                   "chargePointModel": "raw",
                                                   "firmwareVersion": "2.0"})
    assert boot[0] == 3 and boot[2]["status"] == "Accepted"
    await notify(station, "Installed")
    shown = await firmware.campaign_status(node.engine, campaign_id)
    assert [t["status"] for t in shown["targets"]] == ["done"]


async def test_tc_080_csms_secure_firmware_update(node):
    """Security extension: a signed image goes out as SignedUpdateFirmware, and every
    SignedFirmwareStatusNotification is answered and kept with the campaign's request id."""
    from tests.gateway.test_device_management import sign, signing_pair

    key, certificate = signing_pair()
    file_id = await firmware.add_file(node.engine, "fw.bin", "2.0", b"2.0", sign(key, b"2.0"),
                                      certificate)
    await register(node, "CP1")
    station = await raw_station(node, "CP1")
    campaign_id, _ = await firmware.create_campaign(
        node.engine, "2.0", file_id, None, firmware.Selection(stations=("CP1",)), at_once=1,
        retries=0)
    frame = await next_call(station, "SignedUpdateFirmware")
    payload = frame[3]
    assert payload["requestId"] == campaign_id
    assert payload["firmware"]["location"].endswith(f"/firmware/{file_id}")
    assert payload["firmware"]["signingCertificate"] == certificate
    # The signature that arrives is one the certificate verifies over the image.
    firmware.check_signature(b"2.0", payload["firmware"]["signature"],
                             payload["firmware"]["signingCertificate"])
    assert "retrieveDateTime" in payload["firmware"]
    await station.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    for status in ("Downloading", "Downloaded", "SignatureVerified", "Installing", "Installed"):
        answer = await station.call("SignedFirmwareStatusNotification",
                                    {"status": status, "requestId": campaign_id})
        assert answer[0] == 3 and answer[2] == {}
    shown = await firmware.campaign_status(node.engine, campaign_id)
    assert [t["status"] for t in shown["targets"]] == ["done"]
    events = await registry.list_station_events(node.engine, "CP1", "firmware")
    assert [e["details"]["status"] for e in reversed(events)] == [
        "Downloading", "Downloaded", "SignatureVerified", "Installing", "Installed"]


async def test_tc_075_1_csms_install_a_manufacturer_root_certificate(node):
    """Security whitepaper: InstallCertificate, then GetInstalledCertificateIds of that type."""
    from cocharge.gateway.operator_client import send_request
    from cocharge.stations import ca

    await register(node, "CP1")
    cp = await raw_station(node, "CP1")
    root = ca.init(f"{node.engine.url.database}.maker", "Maker", "maker root")  # any root CA
    pem = root.trust_pem()

    def ask(command: str, **args: Any) -> asyncio.Task[Any]:
        return asyncio.create_task(send_request(node.engine, {
            "command": command, "station": "CP1", "args": args}))

    asked = ask("install-certificate", certificate_type="ManufacturerRootCertificate",
                certificate=pem)
    frame = await next_call(cp, "InstallCertificate")
    assert frame[3] == {"certificateType": "ManufacturerRootCertificate", "certificate": pem}
    await cp.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    assert (await asked)["accepted"]
    asked = ask("get-installed-certificate-ids",
                certificate_types=["ManufacturerRootCertificate"])
    frame = await next_call(cp, "GetInstalledCertificateIds")
    assert frame[3] == {"certificateType": "ManufacturerRootCertificate"}
    held = ca.hash_data(root.cert)
    await cp.ws.send(json.dumps([3, frame[1], {"status": "Accepted",
                                               "certificateHashData": [held]}]))
    answer = await asked
    assert answer["accepted"] and answer["response"]["certificateHashData"] == [held]


async def test_16_security_csms_renews_the_charge_point_certificate(tmp_path):
    """Whitepaper use case A02 for 1.6: ExtendedTriggerMessage SignChargePointCertificate,
    SignCertificate accepted, CertificateSigned with the chain (no certificateType in 1.6)."""
    from cocharge.gateway.operator_client import send_request
    from cocharge.stations import ca
    from tests.conformance.test_oca_201_security import ORG, csr

    ca.init(tmp_path / "ca", ORG, "test CA")
    async with running_node(str(tmp_path / "db.sqlite"),
                            settings(ca_dir=str(tmp_path / "ca"))) as node:
        await register(node, "CP1")
        cp = await raw_station(node, "CP1")
        asked = asyncio.create_task(send_request(node.engine, {
            "command": "extended-trigger-message", "station": "CP1",
            "args": {"message": "SignChargingStationCertificate"}}))
        frame = await next_call(cp, "ExtendedTriggerMessage")
        assert frame[3] == {"requestedMessage": "SignChargePointCertificate"}
        await cp.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        assert (await asked)["accepted"]
        signed = await cp.call("SignCertificate", {"csr": csr("CP1")})
        assert signed[2] == {"status": "Accepted"}
        frame = await next_call(cp, "CertificateSigned")
        assert set(frame[3]) == {"certificateChain"}
        await cp.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        assert await until(lambda: node.gateway.certificates.current("CP1"), 10) is not None
