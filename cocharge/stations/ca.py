"""The operator's own certificate authority: charger certificates for security profile 3.

Kept on disk, in one directory (`cocharge ca init`, `serve --ca-dir`):

    ca.crt           the CA certificate that signs now (PEM)
    ca.key           its private key: mode 0600 in a 0700 directory, encrypted with
                     COCHARGE_CA_PASSPHRASE when that is set (docs/security.md says why)
    trusted/*.crt    earlier CA certificates (after `ca rotate`): still trusted for client
                     certificates until their stations have new ones
    trust.pem        every trusted CA certificate in one bundle (what TLS verifies against)

An external CA is used the same way: `ca init --import-cert --import-key` adopts its
(intermediate) certificate and key; a CA that keeps its key elsewhere is only trusted
(`serve --client-ca FILE`).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PASSPHRASE_ENV = "COCHARGE_CA_PASSPHRASE"
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
# Hash algorithms of OCPP's CertificateHashDataType.
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256, "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}


class CAError(ValueError):
    """The CA cannot be created, read or used as asked (the message says how to fix it)."""


class CsrRejected(ValueError):
    """A charger's certificate signing request we do not sign (the message says why)."""


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _now() -> datetime:
    return datetime.now(UTC)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def common_name(name: x509.Name) -> str | None:
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(found[0].value) if found else None


def organisation(name: x509.Name) -> str | None:
    found = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(found[0].value) if found else None


def hash_data(cert: x509.Certificate, issuer: x509.Certificate | None = None,
              algorithm: str = "SHA256") -> dict[str, str]:
    """OCPP's CertificateHashDataType of `cert` (RFC 6960's hashes of its issuer's name and
    key), camelCase; `issuer` defaults to `cert` itself (a root)."""
    request = ocsp.OCSPRequestBuilder().add_certificate(
        cert, issuer or cert, HASHES[algorithm]()).build()
    return {"hashAlgorithm": algorithm, "issuerNameHash": request.issuer_name_hash.hex(),
            "issuerKeyHash": request.issuer_key_hash.hex(),
            "serialNumber": f"{cert.serial_number:x}"}


def load_pem_certificates(text: str | bytes) -> list[x509.Certificate]:
    data = text.encode() if isinstance(text, str) else text
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CAError(f"not PEM certificates: {exc}") from None


def _key_strength(key: Any) -> str | None:
    """Why a public key is too weak for a charger certificate, or None."""
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= MIN_RSA_BITS else (
            f"an RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})")
    if isinstance(key, ec.EllipticCurvePublicKey):
        return None if key.curve.key_size >= MIN_EC_BITS else (
            f"an EC key of {key.curve.key_size} bits (at least {MIN_EC_BITS})")
    return f"a {type(key).__name__} (RSA or EC keys only)"


@dataclass
class Authority:
    """A loaded CA: signs charger CSRs and answers OCSP for what it signed."""

    directory: Path
    cert: x509.Certificate
    key: PrivateKey
    trusted: list[x509.Certificate]  # every CA certificate client certificates may chain to

    @property
    def organisation(self) -> str:
        return organisation(self.cert.subject) or ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    def trust_pem(self) -> str:
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in self.trusted)

    def sign_csr(self, csr_pem: str, station_id: str, valid_s: int) -> x509.Certificate:
        """A client certificate for `station_id` from its CSR, after the checks OCPP asks
        for: a valid self-signature, the station's identity as common name, the operator's
        organisation, a strong enough key."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except (ValueError, UnsupportedAlgorithm):
            raise CsrRejected("the CSR is not a PEM certificate signing request") from None
        if not csr.is_signature_valid:
            raise CsrRejected("the CSR's signature does not match its key")
        name = common_name(csr.subject)
        if name != station_id:
            raise CsrRejected(f"the CSR names {name!r}, not the station's identity {station_id!r}")
        if organisation(csr.subject) != self.organisation:
            raise CsrRejected(f"the CSR's organisation is {organisation(csr.subject)!r}, not "
                              f"the operator's {self.organisation!r}")
        weak = _key_strength(csr.public_key())
        if weak is not None:
            raise CsrRejected(f"the CSR has {weak}")
        now = _now()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, station_id),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organisation)])
        public_key = csr.public_key()
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(self.cert.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(min(now + timedelta(seconds=valid_s),
                                        self.cert.not_valid_after_utc))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(
                       digital_signature=True, key_encipherment=isinstance(
                           public_key, rsa.RSAPublicKey), key_agreement=isinstance(
                           public_key, ec.EllipticCurvePublicKey), content_commitment=False,
                       data_encipherment=False, key_cert_sign=False, crl_sign=False,
                       encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                  critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                       public_key), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), critical=False))
        return builder.sign(self.key, hashes.SHA256())

    def server_certificate(self, hosts: list[str], days: int,
                           rsa_key: bool = False) -> tuple[str, str]:
        """A TLS server certificate for the gateway (PEM certificate chain, PEM key): the
        stations that trust this CA (InstallCertificate CSMSRootCertificate) trust it. Its
        key is ECDSA P-256, or RSA 2048 (`rsa_key`): OCPP's TLS_RSA_* suites need the
        second beside the first (docs/security.md)."""
        import ipaddress

        from cryptography.hazmat.primitives.asymmetric import rsa

        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
            rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1()))
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
                                         x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                            self.organisation)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(min(now + timedelta(days=days), self.cert.not_valid_after_utc))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return self.chain_pem(cert), key_pem

    def chain_pem(self, cert: x509.Certificate) -> str:
        """The leaf, then the CA: what CertificateSigned delivers."""
        return (cert.public_bytes(serialization.Encoding.PEM)
                + self.cert.public_bytes(serialization.Encoding.PEM)).decode()

    def issued_by_us(self, request: dict[str, Any]) -> bool:
        """Does an OCSPRequestDataType / CertificateHashDataType name one of our CAs?"""
        algorithm = str(request.get("hashAlgorithm", ""))
        if algorithm not in HASHES:
            return False
        for ca in self.trusted:
            ours = hash_data(ca, ca, algorithm)  # a root: its subject is its issuer
            if (str(request.get("issuerKeyHash", "")).lower() == ours["issuerKeyHash"]
                    and str(request.get("issuerNameHash", "")).lower() == _subject_hash(
                        ca, algorithm)):
                return True
        return False

    def ocsp_response(self, request: dict[str, Any], status: str,
                      revoked_at: datetime | None) -> str:
        """A signed OCSP response (RFC 6960, DER, base64) for a certificate of ours:
        `status` good | revoked | unknown."""
        algorithm = str(request["hashAlgorithm"])
        try:
            serial = int(str(request["serialNumber"]), 16)
            name_hash = binascii.unhexlify(str(request["issuerNameHash"]))
            key_hash = binascii.unhexlify(str(request["issuerKeyHash"]))
        except (ValueError, binascii.Error):
            raise CAError("the OCSP request's hashes or serial number are not hex") from None
        now = _now()
        cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                       "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            name_hash, key_hash, serial, HASHES[algorithm](), cert_status, now,
            now + timedelta(days=1), revoked_at.replace(tzinfo=UTC)
            if status == "revoked" and revoked_at else None, None)
        response = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.cert).sign(
            self.key, hashes.SHA256())
        return base64.b64encode(response.public_bytes(serialization.Encoding.DER)).decode()


def _subject_hash(cert: x509.Certificate, algorithm: str) -> str:
    digest = hashes.Hash(HASHES[algorithm]())
    digest.update(cert.subject.public_bytes())
    return digest.finalize().hex()


# --- on disk --------------------------------------------------------------------------------

def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def _write_private(path: Path, data: bytes) -> None:
    """Written with mode 0600 from the start (never readable by others, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: PrivateKey) -> bytes:
    passphrase = _passphrase()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def _new_ca(org: str, name: str, days: int) -> tuple[x509.Certificate, PrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA384()))
    return cert, key


def _store(directory: Path, cert: x509.Certificate, key: PrivateKey) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    _write_private(directory / "ca.key", _key_pem(key))
    (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_trust(directory)


def _write_trust(directory: Path) -> None:
    parts = [(directory / "ca.crt").read_bytes()]
    trusted = directory / "trusted"
    if trusted.is_dir():
        parts += [p.read_bytes() for p in sorted(trusted.glob("*.crt"))]
    (directory / "trust.pem").write_bytes(b"".join(parts))


def init(directory: str | Path, org: str, name: str, days: int = 3650) -> Authority:
    """A new CA in `directory` (which must not hold one)."""
    path = Path(directory)
    if (path / "ca.crt").exists():
        raise CAError(f"{path} holds a CA already: `cocharge ca show`, or `cocharge ca rotate` "
                      "for a new key")
    cert, key = _new_ca(org, name, days)
    _store(path, cert, key)
    return load(path)


def adopt(directory: str | Path, cert_file: str, key_file: str) -> Authority:
    """An external (intermediate) CA's certificate and key, kept as ours from now on."""
    path = Path(directory)
    if (path / "ca.crt").exists():
        raise CAError(f"{path} holds a CA already")
    certs = load_pem_certificates(Path(cert_file).read_bytes())
    key = _load_key(Path(key_file).read_bytes(), key_file)
    cert = certs[0]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value \
        if _has(cert, x509.BasicConstraints) else None
    if constraints is None or not constraints.ca:
        raise CAError(f"{cert_file} is not a CA certificate (basicConstraints CA:TRUE)")
    if cert.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CAError(f"{key_file} is not the key of {cert_file}")
    _store(path, cert, key)
    return load(path)


def _has(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> bool:
    try:
        cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return False
    return True


def _load_key(data: bytes, where: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, _passphrase())
    except TypeError:
        raise CAError(f"{where} is encrypted: set {PASSPHRASE_ENV}") from None
    except ValueError:
        raise CAError(f"cannot read the key {where}: not a PEM key, or {PASSPHRASE_ENV} is "
                      "not its passphrase") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CAError(f"{where}: an RSA or EC key is needed")
    return key


def load(directory: str | Path) -> Authority:
    path = Path(directory)
    if not (path / "ca.crt").exists():
        raise CAError(f"no CA in {path}: create one with `cocharge ca init --dir {path} "
                      "--org NAME`")
    mode = (path / "ca.key").stat().st_mode & 0o777
    if mode & 0o077:
        raise CAError(f"{path / 'ca.key'} is readable by others (mode {mode:o}): "
                      f"chmod 600 it")
    cert = load_pem_certificates((path / "ca.crt").read_bytes())[0]
    key = _load_key((path / "ca.key").read_bytes(), str(path / "ca.key"))
    trusted = [cert]
    extra = path / "trusted"
    if extra.is_dir():
        for file in sorted(extra.glob("*.crt")):
            trusted += load_pem_certificates(file.read_bytes())
    return Authority(path, cert, key, trusted)


def rotate(directory: str | Path, days: int = 3650) -> Authority:
    """A new CA key and certificate; the old certificate stays trusted (its stations keep
    connecting until their renewal, which the gateway asks for)."""
    old = load(directory)
    trusted = old.directory / "trusted"
    trusted.mkdir(mode=0o700, exist_ok=True)
    (trusted / f"{old.fingerprint[:16]}.crt").write_bytes(
        old.cert.public_bytes(serialization.Encoding.PEM))
    cert, key = _new_ca(old.organisation, common_name(old.cert.subject) or "cocharge CA", days)
    _store(old.directory, cert, key)
    return load(directory)


def forget(directory: str | Path, fp: str) -> bool:
    """Stop trusting an earlier CA certificate (its stations have all renewed)."""
    path = Path(directory) / "trusted"
    for file in path.glob("*.crt") if path.is_dir() else []:
        if any(fingerprint(c).startswith(fp.lower()) for c in
               load_pem_certificates(file.read_bytes())):
            file.unlink()
            _write_trust(Path(directory))
            return True
    return False


def serial_hex(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"
