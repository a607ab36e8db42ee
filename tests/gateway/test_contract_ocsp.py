"""ISO 15118 contract certificates at Authorize (C07, 2.0.1 and 2.1): the gateway asks the
issuer's OCSP responder named in the hash data (a real HTTP responder here) and believes
only answers signed by a root it trusts (`contract_roots`): good is Accepted, revoked is
CertificateRevoked and the token Invalid; a responder that is down, or one no trusted root
vouches for, leaves the status unknown (absent), never good."""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from cocharge.node import running_node
from cocharge.stations import ca
from tests.conftest import free_port, raw_station, register, settings


def contract_certificate(issuer: ca.Authority, serial: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CNABCC00012345")]))
            .issuer_name(issuer.cert.subject).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .sign(issuer.key, hashes.SHA256()))  # type: ignore[arg-type]


class Responder:
    """An OCSP responder over HTTP for `authority`: serial -> good | revoked."""

    def __init__(self, authority: ca.Authority, statuses: dict[int, str]) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ocsp.load_der_ocsp_request(body)
                answer = base64.b64decode(authority.ocsp_response({
                    "hashAlgorithm": "SHA256", "issuerNameHash": request.issuer_name_hash.hex(),
                    "issuerKeyHash": request.issuer_key_hash.hex(),
                    "serialNumber": f"{request.serial_number:x}"},
                    owner.statuses.get(request.serial_number, "unknown"),
                    datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1)))
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.statuses = statuses
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ocsp"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("protocol", ["ocpp2.0.1", "ocpp2.1"])
async def test_c07_contract_certificates_are_checked_with_a_trusted_responder(
        tmp_path: Path, protocol: str) -> None:
    mo = ca.init(tmp_path / "mo", "Mobility Operator", "MO root")
    rogue = ca.init(tmp_path / "rogue", "Rogue", "rogue root")
    roots = tmp_path / "contract-roots.pem"
    roots.write_bytes(mo.cert.public_bytes(serialization.Encoding.PEM))
    good, revoked = contract_certificate(mo, 0x1001), contract_certificate(mo, 0x1002)
    honest = Responder(mo, {0x1001: "good", 0x1002: "revoked"})
    liar = Responder(rogue, {0x1001: "good", 0x1002: "good"})  # says good, signed by nobody we trust
    try:
        async with running_node(str(tmp_path / "db.sqlite"), settings(
                contract_roots=str(roots), ocsp_timeout_s=2.0)) as node:
            await register(node, "PNC1", tags=("EMAID1",))
            st = await raw_station(node, "PNC1", protocol)

            async def authorize(cert: x509.Certificate, url: str) -> dict[str, Any]:
                data = {**ca.hash_data(cert, mo.cert, "SHA256"), "responderURL": url}
                answer = await st.call("Authorize", {
                    "idToken": {"idToken": "EMAID1", "type": "eMAID"},
                    "iso15118CertificateHashData": [data]})
                assert answer[0] == 3, answer
                return dict(answer[2])

            accepted = await authorize(good, honest.url)
            assert accepted["certificateStatus"] == "Accepted"
            refused = await authorize(revoked, honest.url)
            assert refused["certificateStatus"] == "CertificateRevoked"
            assert refused["idTokenInfo"]["status"] == "Invalid"
            unverified = await authorize(good, liar.url)
            assert "certificateStatus" not in unverified  # a rogue's "good" is not believed
            down = await authorize(good, f"http://127.0.0.1:{free_port()}/ocsp")
            assert "certificateStatus" not in down
    finally:
        honest.close()
        liar.close()
