"""Security profile 3 with the operator's own CA: CSRs signed and delivered, stations moved
between profiles by the operator, client certificates checked, renewal before expiry, root
certificates managed on the station, OCSP for our certificates (real TLS, real simulators)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from cocharge.gateway.operator_client import send_request
from cocharge.gateway.server import client_cas, tls_context
from cocharge.node import Node, running_node
from cocharge.stations import ca, registry
from cocharge.stations.certificates import revoke
from tests.conftest import RawStation, settings, until, ws_url

ORG = "Neighbours Ltd"
PASSWORD = "station-password-01"


@contextlib.asynccontextmanager
async def pki_node(tmp_path: Path, rsa: bool = False,
                   **overrides: Any) -> AsyncIterator[tuple[Node, ca.Authority]]:
    """A gateway with our CA: plain ws:// on one port, wss:// (client certificates of the
    CA accepted) on another, its server certificate signed by the CA (`rsa`: an RSA one
    beside the ECDSA one)."""
    authority = ca.init(tmp_path / "ca", ORG, "test CA")
    chain, key = authority.server_certificate(["127.0.0.1"], 30)
    (tmp_path / "server.pem").write_text(chain)
    (tmp_path / "server.key").write_text(key)
    second = None
    if rsa:
        chain, key = authority.server_certificate(["127.0.0.1"], 30, rsa_key=True)
        (tmp_path / "server-rsa.pem").write_text(chain)
        (tmp_path / "server-rsa.key").write_text(key)
        second = (str(tmp_path / "server-rsa.pem"), str(tmp_path / "server-rsa.key"))
    config = settings(ca_dir=str(tmp_path / "ca"), tls_port=0, **overrides)
    tls = tls_context(str(tmp_path / "server.pem"), str(tmp_path / "server.key"),
                      client_cas(config), second)
    async with running_node(str(tmp_path / "db.sqlite"), config, tls) as node:
        yield node, authority


def ca_pem(authority: ca.Authority) -> str:
    return authority.cert.public_bytes(serialization.Encoding.PEM).decode()


def wss_url(node: Node) -> str:
    return f"wss://127.0.0.1:{node.gateway.tls_port}/ocpp"


async def command(node: Node, station_id: str, name: str, **args: Any) -> dict[str, Any]:
    return await send_request(node.engine, {"command": name, "station": station_id,
                                            "args": args})


def client_certificate(authority: ca.Authority, station_id: str, org: str = ORG,
                       valid_s: int = 3600) -> tuple[str, bytes]:
    """A key and a certificate for it signed by `authority` (a CSR through its checks)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, station_id),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])).sign(key, hashes.SHA256())
    cert = authority.sign_csr(csr.public_bytes(serialization.Encoding.PEM).decode(), station_id,
                              valid_s)
    return authority.chain_pem(cert), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def client_context(tmp_path: Path, authority: ca.Authority, chain: str | None = None,
                   key: bytes | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem(authority))
    if chain is not None and key is not None:
        (tmp_path / "client.pem").write_text(chain)
        (tmp_path / "client.key").write_bytes(key)
        context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    return context


async def open_box(url: str, station_id: str, protocol: str, **config: Any) -> Any:
    from cocharge.simulators.wallbox import SimConfig, open_wallbox

    config.setdefault("speed", 300)
    box, _reader = await open_wallbox(SimConfig(url=url, station_id=station_id,
                                                protocol=protocol, **config))
    return box


async def close_box(box: Any) -> None:
    from cocharge.simulators.wallbox import close_wallbox

    await close_wallbox(box)


async def connected_by_certificate(node: Node, station_id: str) -> bool:
    record = node.gateway.service.directory.get(station_id)
    connection = node.gateway.connections.get(station_id)
    return (record is not None and record.security_profile == 3 and connection is not None
            and connection.on_tls())


@pytest.mark.parametrize("protocol", ["2.0.1", "1.6"])
async def test_a_station_moves_from_profile_1_to_3_and_keeps_charging(tmp_path, protocol):
    async with pki_node(tmp_path) as (node, authority):
        await registry.add_station(node.engine, registry.NewStation("PKI1", password=PASSWORD,
                                                                    max_power_kw=22))
        await registry.add_member(node.engine, "neighbour", "TAG1", None)
        box = await open_box(ws_url(node), "PKI1", protocol, password=PASSWORD,
                             organisation=ORG, secure_url=wss_url(node))
        try:
            assert box.security_profile == 1
            # The station must trust our CA before it can reach the wss:// listener.
            root = ca_pem(authority)
            installed = await command(node, "PKI1", "install-certificate",
                                      certificate_type="CSMSRootCertificate", certificate=root)
            assert installed["accepted"], installed
            moved = await command(node, "PKI1", "security-profile", profile=3)
            assert moved["ok"] and moved["accepted"], moved
            await until(lambda: connected_by_certificate(node, "PKI1"))
            assert box.security_profile == 3 and box.certificates_received == 1
            rows = await registry.list_station_events(node.engine, "PKI1", "certificate")
            assert any(r["details"].get("status") == "installed" for r in rows)
            # It keeps charging: a whole session over the mTLS connection.
            await box.charge(1, "TAG1", energy_wh=500)
            await until(lambda: _finished(box))
            sessions = await registry.list_sessions(node.engine, station_id="PKI1")
            assert sessions and sessions[0]["energy_wh"] >= 500
            # Without its certificate (the password alone) it is refused from now on.
            plain = client_context(tmp_path, authority)
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{wss_url(node)}/PKI1", subprotocols=["ocpp2.0.1"], ssl=plain,
                              additional_headers=_basic("PKI1", PASSWORD))
            assert refused.value.response.status_code == 401
        finally:
            await close_box(box)


async def _finished(box: Any) -> bool:
    return bool(box.finished)


def _basic(station_id: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_certificates_of_another_ca_or_another_station_are_refused(tmp_path):
    async with pki_node(tmp_path) as (node, authority):
        await registry.add_station(node.engine, registry.NewStation("PKI2", password=PASSWORD))
        # Our CA, another identity: TLS passes, the gateway refuses.
        chain, key = client_certificate(authority, "OTHER")
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{wss_url(node)}/PKI2", subprotocols=["ocpp2.0.1"],
                          ssl=client_context(tmp_path, authority, chain, key))
        assert refused.value.response.status_code == 401
        events = await registry.list_station_events(node.engine, "PKI2", "certificate_refused")
        assert events and events[0]["details"]["common_name"] == "OTHER"
        # Another CA, the right identity: the TLS handshake itself fails.
        stranger = ca.init(tmp_path / "stranger", ORG, "someone else's CA")
        chain, key = client_certificate(stranger, "PKI2")
        with pytest.raises((ssl.SSLError, OSError, InvalidHandshake)):
            async with connect(f"{wss_url(node)}/PKI2", subprotocols=["ocpp2.0.1"],
                               ssl=client_context(tmp_path, authority, chain, key)) as ws:
                await ws.recv()
        assert "PKI2" not in node.gateway.connections
        # Ours, the right identity: admitted without a password ...
        chain, key = client_certificate(authority, "PKI2")
        async with connect(f"{wss_url(node)}/PKI2", subprotocols=["ocpp2.0.1"],
                           ssl=client_context(tmp_path, authority, chain, key)) as ws:
            station = RawStation(ws)
            booted = await station.call("BootNotification", {
                "chargingStation": {"vendorName": "raw", "model": "raw"}, "reason": "PowerUp"})
            assert booted[2]["status"] == "Accepted"
            # ... until it is revoked: the gateway told (as `station revoke-certificate`
            # does, on every node) closes the live connection ...
            serial = f"{x509.load_pem_x509_certificates(chain.encode())[0].serial_number:x}"
            await _record_issued(node, authority, "PKI2", chain)
            assert await revoke(node.engine, serial) == "PKI2"
            answer = await node.operator.answer({"command": "certificate-revoked",
                                                 "station": "PKI2"})
            assert answer == {"ok": True, "closed": True}
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1008
        # ... and refuses it from then on.
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{wss_url(node)}/PKI2", subprotocols=["ocpp2.0.1"],
                          ssl=client_context(tmp_path, authority, chain, key))
        assert refused.value.response.status_code == 401


async def _record_issued(node: Node, authority: ca.Authority, station_id: str,
                         chain: str) -> None:
    """As the keeper stores what it signs (the test signed this one itself)."""
    from cocharge.store.db import utcnow
    from cocharge.store.schema import station_certificates

    cert = x509.load_pem_x509_certificates(chain.encode())[0]
    async with node.engine.begin() as conn:
        await conn.execute(station_certificates.insert().values(
            serial=ca.serial_hex(cert), station_id=station_id,
            certificate_type="ChargingStationCertificate", ca_fingerprint=authority.fingerprint,
            not_before=cert.not_valid_before_utc.replace(tzinfo=None),
            not_after=cert.not_valid_after_utc.replace(tzinfo=None), pem=chain,
            status="installed", created_at=utcnow(), updated_at=utcnow()))


@pytest.mark.parametrize("protocol", ["2.0.1", "1.6"])
async def test_a_short_lived_certificate_is_renewed_before_it_ends(tmp_path, protocol):
    # Certificates of 10 minutes, renewed when less than an hour is left: at once, and
    # (asked at most every 2 s) not again until the new one is 2 s old.
    async with pki_node(tmp_path, cert_valid_s=600, cert_renew_before_s=3600,
                        cert_check_s=0.2, cert_renew_retry_s=2) as (node, _authority):
        await registry.add_station(node.engine, registry.NewStation("PKI3", password=PASSWORD))
        box = await open_box(ws_url(node), "PKI3", protocol, password=PASSWORD,
                             organisation=ORG)
        try:
            first = await command(node, "PKI3", "extended-trigger-message",
                                  message="SignChargingStationCertificate")
            assert first["accepted"], first

            async def renewed() -> bool:
                return bool(box.certificates_received >= 2)
            await until(renewed)
            await asyncio.sleep(0.6)  # three more checks: the new certificate is not renewed
            assert box.certificates_received == 2
            listed = await node.gateway.certificates.current("PKI3")
            assert listed is not None and listed["status"] == "installed"
            rows = await registry.list_station_events(node.engine, "PKI3", "certificate")
            assert any(r["details"].get("step") == "renewal asked" for r in rows)
            leaf = x509.load_pem_x509_certificates(box.client_chain.encode())[0]
            assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "PKI3"
            assert ca.serial_hex(leaf) == listed["serial"]
        finally:
            await close_box(box)


async def test_a_csr_of_another_organisation_or_identity_is_rejected(tmp_path):
    async with pki_node(tmp_path) as (node, _authority):
        await registry.add_station(node.engine, registry.NewStation("PKI4", password=PASSWORD))
        box = await open_box(ws_url(node), "PKI4", "2.0.1", password=PASSWORD,
                             organisation="Someone Else")
        try:
            from ocpp.v201 import call as call201

            answer = await box.call(call201.SignCertificate(csr=box.csr()))
            assert answer.status == "Rejected"
            assert "organisation" in answer.status_info["additional_info"]
            box.config.organisation = ORG
            box.config.station_id = "PKI5"  # a CSR for another station's identity
            answer = await box.call(call201.SignCertificate(csr=box.csr()))
            box.config.station_id = "PKI4"
            assert answer.status == "Rejected" and "identity" in \
                answer.status_info["additional_info"]
            # A V2G certificate: no V2G CA here.
            answer = await box.call(call201.SignCertificate(csr=box.csr(),
                                                            certificate_type="V2GCertificate"))
            assert answer.status == "Rejected"
            assert box.certificates_received == 0
        finally:
            await close_box(box)


@pytest.mark.parametrize("protocol", ["2.0.1", "1.6"])
async def test_root_certificates_on_the_station(tmp_path, protocol):
    async with pki_node(tmp_path) as (node, authority):
        await registry.add_station(node.engine, registry.NewStation("PKI6", password=PASSWORD))
        box = await open_box(ws_url(node), "PKI6", protocol, password=PASSWORD, organisation=ORG)
        try:
            kind = "CSMSRootCertificate"
            answer = await command(node, "PKI6", "install-certificate", certificate_type=kind,
                                   certificate=ca_pem(authority))
            assert answer["accepted"], answer
            listed = await command(node, "PKI6", "get-installed-certificate-ids",
                                   certificate_types=[kind])
            assert listed["accepted"], listed
            hashes_seen = (listed["response"].get("certificateHashDataChain")
                           or listed["response"].get("certificateHashData"))
            entry = hashes_seen[0].get("certificateHashData", hashes_seen[0])
            assert entry == {**ca.hash_data(authority.cert), "serialNumber":
                             ca.serial_hex(authority.cert)}
            deleted = await command(node, "PKI6", "delete-certificate",
                                    issuer_name_hash=entry["issuerNameHash"],
                                    issuer_key_hash=entry["issuerKeyHash"],
                                    serial_number=entry["serialNumber"])
            assert deleted["accepted"], deleted
            assert box.roots["CSMSRootCertificate"] == []
            again = await command(node, "PKI6", "delete-certificate",
                                  issuer_name_hash=entry["issuerNameHash"],
                                  issuer_key_hash=entry["issuerKeyHash"],
                                  serial_number=entry["serialNumber"])
            assert not again["accepted"] and again["status"] == "NotFound"
        finally:
            await close_box(box)


async def test_moving_down_needs_force_and_profile_3_needs_the_station_to_trust_us(tmp_path):
    async with pki_node(tmp_path) as (node, authority):
        await registry.add_station(node.engine, registry.NewStation("PKI7", password=PASSWORD))
        box = await open_box(wss_url(node), "PKI7", "2.0.1", password=PASSWORD,
                             organisation=ORG, ca_pem=ca_pem(authority))
        try:
            assert box.security_profile == 2
            down = await command(node, "PKI7", "security-profile", profile=1)
            assert not down["ok"] and "--force" in down["message"]
            same = await command(node, "PKI7", "security-profile", profile=2)
            assert not same["ok"] and "already" in same["message"]
            up = await command(node, "PKI7", "security-profile", profile=3)
            assert up["accepted"], up
            await until(lambda: connected_by_certificate(node, "PKI7"))
            # Forced back down to 2: the password is enough again once the station accepts.
            down = await command(node, "PKI7", "security-profile", profile=2, force=True)
            assert down["accepted"], down
            record = node.gateway.service.directory.get("PKI7")
            assert record is not None and record.security_profile == 2
        finally:
            await close_box(box)


async def test_ocsp_for_our_certificates_and_iso15118_without_a_provider(tmp_path):
    async with pki_node(tmp_path) as (node, authority):
        await registry.add_station(node.engine, registry.NewStation("PKI8"))
        chain, _key = client_certificate(authority, "PKI8")
        await _record_issued(node, authority, "PKI8", chain)
        leaf = x509.load_pem_x509_certificates(chain.encode())[0]
        request = {k: v for k, v in ca.hash_data(leaf, authority.cert).items()}
        request["responderURL"] = "http://ocsp.example.org"
        async with connect(f"{ws_url(node)}/PKI8", subprotocols=["ocpp2.0.1"]) as ws:
            station = RawStation(ws)
            await station.call("BootNotification", {
                "chargingStation": {"vendorName": "raw", "model": "raw"}, "reason": "PowerUp"})
            answer = await station.call("GetCertificateStatus", {"ocspRequestData": request})
            assert answer[2]["status"] == "Accepted"
            response = ocsp.load_der_ocsp_response(base64.b64decode(answer[2]["ocspResult"]))
            assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
            assert response.serial_number == leaf.serial_number
            await revoke(node.engine, ca.serial_hex(leaf))
            answer = await station.call("GetCertificateStatus", {"ocspRequestData": request})
            response = ocsp.load_der_ocsp_response(base64.b64decode(answer[2]["ocspResult"]))
            assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
            stranger = ca.init(tmp_path / "stranger", ORG, "another CA")
            foreign = {**ca.hash_data(stranger.cert), "responderURL": "http://x"}
            answer = await station.call("GetCertificateStatus", {"ocspRequestData": foreign})
            assert answer[2]["status"] == "Failed"
            answer = await station.call("Get15118EVCertificate", {
                "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef", "action": "Install",
                "exiRequest": base64.b64encode(b"exi").decode()})
            assert answer[0] == 3 and answer[2]["status"] == "Failed"
            assert answer[2]["statusInfo"]["reasonCode"] == "NoProvider"
        assert json.dumps(request)


@pytest.mark.parametrize("protocol", ["2.0.1", "1.6"])
async def test_tls_cannot_be_stripped_once_a_station_used_profile_2(tmp_path, protocol):
    """Profile 1 -> 2 over the operator channel; from then on a plain ws:// connection with
    the right password is refused (as profile 3 refuses one without its certificate), also
    after the station left."""
    subprotocol = "ocpp1.6" if protocol == "1.6" else "ocpp2.0.1"
    async with pki_node(tmp_path) as (node, authority):
        await registry.add_station(node.engine, registry.NewStation("TLS2", password=PASSWORD))
        box = await open_box(ws_url(node), "TLS2", protocol, password=PASSWORD, organisation=ORG,
                             secure_url=wss_url(node), ca_pem=ca_pem(authority))
        try:
            assert box.security_profile == 1
            moved = await command(node, "TLS2", "security-profile", profile=2)
            assert moved["accepted"], moved

            async def over_tls() -> bool:
                record = node.gateway.service.directory.get("TLS2")
                connection = node.gateway.connections.get("TLS2")
                return (record is not None and record.security_profile == 2
                        and connection is not None and connection.on_tls())

            await until(over_tls)
            assert (await registry.get_station(node.engine, "TLS2"))["security_profile"] == 2
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{ws_url(node)}/TLS2", subprotocols=[subprotocol],
                              additional_headers=_basic("TLS2", PASSWORD))
            assert refused.value.response.status_code == 401
            assert b"over TLS" in refused.value.response.body
            assert node.gateway.connections.get("TLS2") is not None  # the real one stays
            # A well-made station refuses to be moved down (A05): the record stays at 2.
            down = await command(node, "TLS2", "security-profile", profile=1, force=True)
            assert not down["accepted"], down
            record = node.gateway.service.directory.get("TLS2")
            assert record is not None and record.security_profile == 2
        finally:
            await close_box(box)
        with pytest.raises(InvalidStatus):
            await connect(f"{ws_url(node)}/TLS2", subprotocols=[subprotocol],
                          additional_headers=_basic("TLS2", PASSWORD))


OCPP_SUITES = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
               "AES128-GCM-SHA256", "AES256-GCM-SHA384"]


async def _tls_handshake(port: int, authority: ca.Authority, *, ciphers: str | None = None,
                         version: ssl.TLSVersion | None = None) -> tuple[str, str, str]:
    """An OCTT-style TLS client: (version, suite, the server certificate's key type)."""
    context = ssl.create_default_context(cadata=ca_pem(authority))
    context.check_hostname = False
    if ciphers is not None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(ciphers)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        tls = writer.get_extra_info("ssl_object")
        cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        return tls.version(), tls.cipher()[0], type(cert.public_key()).__name__
    finally:
        writer.close()


async def test_the_wss_listener_offers_what_ocpp_requires(tmp_path):
    """TLS 1.2 with each of the four suites OCPP requires (the ECDSA ones on the ECDSA
    certificate, the RSA ones on the RSA certificate beside it), TLS 1.3; no TLS 1.1, no
    suite outside the list."""
    async with pki_node(tmp_path, rsa=True) as (node, authority):
        port = node.gateway.tls_port
        for suite in OCPP_SUITES:
            version, chosen, key = await _tls_handshake(port, authority, ciphers=suite)
            assert (version, chosen) == ("TLSv1.2", suite)
            assert key == ("ECPublicKey" if "ECDSA" in suite else "RSAPublicKey"), (suite, key)
        version, _, _ = await _tls_handshake(port, authority, version=ssl.TLSVersion.TLSv1_3)
        assert version == "TLSv1.3"
        for outside in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
                        "ECDHE-ECDSA-AES128-SHA256"):
            with pytest.raises((ssl.SSLError, ConnectionResetError)):  # a handshake alert
                await _tls_handshake(port, authority, ciphers=outside)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await _tls_handshake(port, authority, version=ssl.TLSVersion.TLSv1_1)
