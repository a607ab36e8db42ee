"""OCPP 2.0.1 CSMS test cases of blocks A (security), M (certificates), C (authorization),
I (tariff and cost) and O (display messages) that issue 15 covers, played over a raw socket
as the compliancy testing tool plays the Charging Station. Named after the case ids where
confirmed (TC_A_11/14, TC_M_01/02/05/18), else after the use case, with its requirements'
checks. Each runs for a 2.0.1 and a 2.1 station (unchanged in 2.1)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from cocharge.node import Node, running_node
from cocharge.stations import ca, registry, sharing
from cocharge.store.schema import settlements, station_certificates
from tests.conformance.test_oca_201 import csms_sends, operator
from tests.conftest import RawStation, raw_station, register, settings, until

ORG = "Neighbours Ltd"
NOW = "2026-11-24T10:00:00Z"


VERSION: dict[int, str] = {}  # each running node's subprotocol (the fixture's param)


@pytest.fixture(params=["ocpp2.0.1", "ocpp2.1"])
async def node(tmp_path: Any, request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    ca.init(tmp_path / "ca", ORG, "test CA")
    async with running_node(str(tmp_path / "db.sqlite"), settings(
            ca_dir=str(tmp_path / "ca"), control_interval_s=0.2)) as running:
        VERSION[id(running)] = request.param
        yield running
        VERSION.pop(id(running), None)


async def station(node: Node, station_id: str = "CS1") -> RawStation:
    await register(node, station_id)
    return await raw_station(node, station_id, VERSION[id(node)])


def csr(station_id: str = "CS1", org: str = ORG) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, station_id),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


def root_pem(node: Node) -> str:
    authority = node.gateway.certificates.authority
    assert authority is not None
    return authority.cert.public_bytes(serialization.Encoding.PEM).decode()


async def reply(cs: RawStation, frame: list[Any], payload: dict[str, Any]) -> None:
    await cs.ws.send(json.dumps([3, frame[1], payload]))


async def certificate_rows(node: Node) -> list[Any]:
    async with node.engine.connect() as conn:
        return list((await conn.execute(select(station_certificates))).all())


@pytest.mark.parametrize("case, answer", [("TC_A_11", "Accepted"), ("TC_A_14", "Rejected")])
async def test_tc_a_11_and_14_csms_update_charging_station_certificate(node, case, answer):
    cs = await station(node)
    asked = operator(node, "CS1", "extended-trigger-message",
                     message="SignChargingStationCertificate")
    frame = await csms_sends(cs, "TriggerMessage")
    assert frame[3] == {"requestedMessage": "SignChargingStationCertificate"}
    await reply(cs, frame, {"status": "Accepted"})
    assert (await asked)["accepted"]
    signed = await cs.call("SignCertificate", {"csr": csr(),
                                               "certificateType": "ChargingStationCertificate"})
    assert signed[2] == {"status": "Accepted"}
    frame = await csms_sends(cs, "CertificateSigned")
    assert frame[3]["certificateType"] == "ChargingStationCertificate"
    chain = x509.load_pem_x509_certificates(frame[3]["certificateChain"].encode())
    assert chain[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CS1"
    assert chain[1].subject == chain[0].issuer  # leaf first, then the CA
    await reply(cs, frame, {"status": answer})
    expected = "installed" if answer == "Accepted" else "refused"

    async def recorded() -> bool:  # the station's answer is stored after it is read
        rows = await certificate_rows(node)
        return len(rows) == 1 and rows[0].status == expected

    await until(recorded, 10)


async def test_a02_csms_rejects_a_csr_for_another_identity(node):
    cs = await station(node)
    signed = await cs.call("SignCertificate", {"csr": csr("CS9")})
    assert signed[2]["status"] == "Rejected"
    assert signed[2]["statusInfo"]["reasonCode"] == "InvalidCSR"
    assert await certificate_rows(node) == []


@pytest.mark.parametrize("case, kind", [("TC_M_01", "CSMSRootCertificate"),
                                        ("TC_M_02", "ManufacturerRootCertificate")])
async def test_tc_m_01_and_02_csms_install_ca_certificate(node, case, kind):
    cs = await station(node)
    asked = operator(node, "CS1", "install-certificate", certificate_type=kind,
                     certificate=root_pem(node))
    frame = await csms_sends(cs, "InstallCertificate")
    assert frame[3] == {"certificateType": kind, "certificate": root_pem(node)}
    await reply(cs, frame, {"status": "Accepted"})
    assert (await asked)["accepted"]


async def test_tc_m_05_csms_install_ca_certificate_failed(node):
    cs = await station(node)
    asked = operator(node, "CS1", "install-certificate", certificate_type="CSMSRootCertificate",
                     certificate=root_pem(node))
    frame = await csms_sends(cs, "InstallCertificate")
    await reply(cs, frame, {"status": "Failed"})
    answer = await asked
    assert answer["ok"] and not answer["accepted"] and answer["status"] == "Failed"


async def test_tc_m_18_csms_retrieve_certificates_all_types(node):
    cs = await station(node)
    asked = operator(node, "CS1", "get-installed-certificate-ids")
    frame = await csms_sends(cs, "GetInstalledCertificateIds")
    assert frame[3] == {}  # certificateType omitted: all of them
    held = {"certificateType": "CSMSRootCertificate", "certificateHashData": {
        **ca.hash_data(node.gateway.certificates.authority.cert)}}
    await reply(cs, frame, {"status": "Accepted", "certificateHashDataChain": [held]})
    answer = await asked
    assert answer["accepted"] and answer["response"]["certificateHashDataChain"] == [held]


async def test_m04_csms_delete_a_certificate(node):
    cs = await station(node)
    data = ca.hash_data(node.gateway.certificates.authority.cert)
    asked = operator(node, "CS1", "delete-certificate", issuer_name_hash=data["issuerNameHash"],
                     issuer_key_hash=data["issuerKeyHash"], serial_number=data["serialNumber"])
    frame = await csms_sends(cs, "DeleteCertificate")
    assert frame[3] == {"certificateHashData": data}
    await reply(cs, frame, {"status": "NotFound"})
    answer = await asked
    assert not answer["accepted"] and answer["status"] == "NotFound"


async def test_m06_csms_answers_ocsp_for_its_certificates(node):
    cs = await station(node)
    signed = await cs.call("SignCertificate", {"csr": csr()})
    assert signed[2]["status"] == "Accepted"
    frame = await csms_sends(cs, "CertificateSigned")
    await reply(cs, frame, {"status": "Accepted"})
    leaf, issuer = x509.load_pem_x509_certificates(frame[3]["certificateChain"].encode())
    request = {**ca.hash_data(leaf, issuer), "responderURL": "http://ocsp.example.org"}
    answer = await cs.call("GetCertificateStatus", {"ocspRequestData": request})
    assert answer[2]["status"] == "Accepted"
    response = ocsp.load_der_ocsp_response(base64.b64decode(answer[2]["ocspResult"]))
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD


async def test_m01_csms_get_15118_ev_certificate_without_a_provider(node):
    cs = await station(node)
    answer = await cs.call("Get15118EVCertificate", {
        "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef", "action": "Install",
        "exiRequest": base64.b64encode(b"exi").decode()})
    assert answer[0] == 3 and answer[2]["status"] == "Failed" and "exiResponse" in answer[2]


async def test_c09_csms_sends_the_group_id_token(node):
    cs = await station(node)
    await registry.add_member(node.engine, "Ann", "ANN", None, household="flat-7")
    answer = await cs.call("Authorize", {"idToken": {"idToken": "ANN", "type": "ISO14443"}})
    assert answer[2]["idTokenInfo"]["groupIdToken"] == {"idToken": "flat-7", "type": "Central"}
    started = await cs.call("TransactionEvent", {
        "eventType": "Started", "timestamp": NOW, "triggerReason": "Authorized", "seqNo": 0,
        "transactionInfo": {"transactionId": "T1"}, "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "ANN", "type": "ISO14443"}})
    assert started[2]["idTokenInfo"]["groupIdToken"]["idToken"] == "flat-7"


async def test_i03_csms_final_total_cost_in_the_ended_answer(node):
    cs = await station(node)
    await registry.add_member(node.engine, "Ann", "ANN", None)
    meter = [{"timestamp": NOW, "sampledValue": [{"value": 0, "context": "Transaction.Begin"}]}]
    await cs.call("TransactionEvent", {
        "eventType": "Started", "timestamp": NOW, "triggerReason": "Authorized", "seqNo": 0,
        "transactionInfo": {"transactionId": "T2"}, "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "ANN", "type": "ISO14443"}, "meterValue": meter})
    ended = await cs.call("TransactionEvent", {
        "eventType": "Ended", "timestamp": "2026-11-24T11:00:00Z", "triggerReason": "EVDeparted",
        "seqNo": 1, "transactionInfo": {"transactionId": "T2", "stoppedReason": "EVDisconnected"},
        "meterValue": [{"timestamp": "2026-11-24T11:00:00Z", "sampledValue": [
            {"value": 10000, "context": "Transaction.End"}]}]})
    async with node.engine.connect() as conn:
        payable = await conn.scalar(select(settlements.c.payable_fen))
    assert payable == 1500  # 10 kWh at the default 1.50 CNY/kWh
    assert ended[2]["totalCost"] == 15.0


async def test_o01_csms_sets_a_display_message(node):
    cs = await station(node)
    asked = operator(node, "CS1", "set-display-message", id=5, content="Closed Sunday",
                     priority="InFront", state="Idle")
    frame = await csms_sends(cs, "SetDisplayMessage")
    assert frame[3] == {"message": {"id": 5, "priority": "InFront", "state": "Idle", "message": {
        "format": "UTF8", "content": "Closed Sunday"}}}
    await reply(cs, frame, {"status": "Accepted"})
    assert (await asked)["accepted"]


async def test_o01_csms_shows_the_hosts_price_on_a_shared_station(node):
    cs = await station(node)
    await sharing.set_rules(node.engine, "CS1", 0, {"allowed_tags": frozenset({"ANN"})})
    frame = await csms_sends(cs, "SetDisplayMessage")
    # In the platform's language (display_language, Chinese by default), said so.
    assert frame[3]["message"]["message"] == {"format": "UTF8", "language": "zh",
                                              "content": "共享充电：1.50 元/千瓦时"}
    await reply(cs, frame, {"status": "Accepted"})
