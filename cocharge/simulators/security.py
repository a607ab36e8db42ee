"""A charger's security, as the simulated wallbox has it: a new Basic-auth password, its key
and CSR, the certificates it is sent and the roots it trusts, TLS for profiles 2 and 3, a
move to another security profile, and signed firmware checked against its certificate."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ocpp.messages
from websockets.exceptions import InvalidHandshake

ocpp.messages.ASYNC_VALIDATION = False
from cocharge.simulators.state import SimConfig

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)


def signature_valid(image: bytes, signature: str, certificate_pem: str) -> bool:
    """What a charger checks before it installs a signed image (SHA-256; RSA or ECDSA)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    try:
        key = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
        raw = base64.b64decode(signature, validate=True)
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, image, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, image, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (ValueError, InvalidSignature):
        return False
    return True


def certificate_hash_data(cert: Any, algorithm: str = "SHA256") -> dict[str, str]:
    """A root certificate's CertificateHashDataType (RFC 6960 hashes), snake_case."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp

    digest: dict[str, hashes.HashAlgorithm] = {"SHA256": hashes.SHA256(),
                                               "SHA384": hashes.SHA384(),
                                               "SHA512": hashes.SHA512()}
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, cert, digest[algorithm]).build()
    return {"hash_algorithm": algorithm, "issuer_name_hash": request.issuer_name_hash.hex(),
            "issuer_key_hash": request.issuer_key_hash.hex(),
            "serial_number": f"{cert.serial_number:x}"}


def tls_client_context(roots: list[str], chain: str | None, key_pem: bytes | None) -> ssl.SSLContext:
    """What the charger trusts (its installed central-system roots) and, for profile 3,
    its client certificate."""
    context = ssl.create_default_context(cadata="".join(roots) or None) if roots else \
        ssl.create_default_context()
    if chain and key_pem:
        with tempfile.TemporaryDirectory() as folder:
            cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
            cert_file.write_text(chain)
            key_file.write_bytes(key_pem)
            key_file.chmod(0o600)
            context.load_cert_chain(cert_file, key_file)
    return context


class SecurityMixin:
    """Certificates, roots, passwords and security profiles of a simulated wallbox (its state
    is set up by `WallboxMixin._init_wallbox`)."""

    config: SimConfig
    roots: dict[str, list[str]]
    client_key: bytes | None
    client_chain: str | None
    _pending_key: Any
    certificates_received: int
    password_changes: int
    security_profile: int
    if TYPE_CHECKING:  # the charger's (charger.py)
        def _spawn(self, coro: Any) -> asyncio.Task[Any]: ...
        async def drop_connection(self) -> None: ...
        async def reconnect(self) -> None: ...

    def new_password(self, password: str) -> str:
        """A new Basic-auth password (1.6 AuthorizationKey, 2.0.1 BasicAuthPassword): kept,
        then the charger reconnects with it, as the specifications ask. A charger set to
        refuse (`refuse_password`) keeps the old one."""
        if self.config.refuse_password or not 16 <= len(password) <= 40:
            return "Rejected"
        self.config.password = password
        self.password_changes += 1
        if self.config.reconnect_on_password:
            self._spawn(self._reconnect_with_new_password())
        return "Accepted"

    async def _reconnect_with_new_password(self) -> None:
        await asyncio.sleep(0.05)  # our answer goes first
        await self.drop_connection()
        await self.reconnect()

    # certificates and security profiles ----------------------------------------------------

    def csr(self) -> str:
        """A new key and its CSR (common name: the station's identity; organisation: the
        operator's), as A02/A03 and the 1.6 security whitepaper ask."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._pending_key = ec.generate_private_key(ec.SECP256R1())
        request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, self.config.station_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.config.organisation)]))
        return request.sign(self._pending_key, hashes.SHA256()).public_bytes(
            serialization.Encoding.PEM).decode()

    def accept_certificate(self, chain: str) -> bool:
        """A CertificateSigned chain: kept if its leaf is for the key of our last CSR."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            leaf = x509.load_pem_x509_certificates(chain.encode())[0]
        except ValueError:
            return False
        if self._pending_key is None:
            return False
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(serialization.Encoding.DER, spki) != \
                self._pending_key.public_key().public_bytes(serialization.Encoding.DER, spki):
            return False
        self.client_key = self._pending_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        self.client_chain = chain
        self._pending_key = None
        self.certificates_received += 1
        return True

    def install_root(self, kind: str, pem: str) -> str:
        from cryptography import x509

        kind = {"CentralSystemRootCertificate": "CSMSRootCertificate"}.get(kind, kind)
        try:
            x509.load_pem_x509_certificate(pem.encode())
        except ValueError:
            return "Rejected"
        self.roots.setdefault(kind, []).append(pem)
        return "Accepted"

    def installed_roots(self, kinds: list[str]) -> list[dict[str, Any]]:
        from cryptography import x509

        found = []
        for kind in kinds or list(self.roots):
            ours = {"CentralSystemRootCertificate": "CSMSRootCertificate"}.get(kind, kind)
            for pem in self.roots.get(ours, []):
                found.append({"certificate_type": kind, "certificate_hash_data": certificate_hash_data(
                    x509.load_pem_x509_certificate(pem.encode()))})
        return found

    def delete_root(self, hash_data: dict[str, Any]) -> str:
        from cryptography import x509

        for pems in self.roots.values():
            for pem in pems:
                cert = x509.load_pem_x509_certificate(pem.encode())
                if certificate_hash_data(cert, hash_data["hash_algorithm"]) == {
                        k: str(v).lower() if k != "hash_algorithm" else v
                        for k, v in hash_data.items() if k in (
                            "hash_algorithm", "issuer_name_hash", "issuer_key_hash",
                            "serial_number")}:
                    pems.remove(pem)
                    return "Accepted"
        return "NotFound"

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.config.url.startswith("wss"):
            return None
        if self.security_profile == 3:
            return tls_client_context(self.roots["CSMSRootCertificate"], self.client_chain,
                                self.client_key)
        return tls_client_context(self.roots["CSMSRootCertificate"], None, None)

    async def move_to(self, url: str, profile: int) -> bool:
        """Connect the new way (a new security profile); back to the old way if that fails,
        as a charger falls back to its previous connection profile."""
        old = (self.config.url, self.security_profile)
        await self.drop_connection()
        self.config.url, self.security_profile = url, profile
        try:
            await self.reconnect()
        except (OSError, ssl.SSLError, InvalidHandshake, TimeoutError) as exc:
            log.warning("%s: cannot connect with profile %d (%s): back to the old one",
                        self.config.station_id, profile, exc)
            self.config.url, self.security_profile = old
            await self.reconnect()
            return False
        return True

