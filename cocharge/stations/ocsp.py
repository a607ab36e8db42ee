"""The status of an EV's contract certificate (ISO 15118 Plug & Charge, 2.0.1/2.1 C07): an
Authorize carries the certificate's OCSP hash data and its issuer's responder URL; we ask
that responder (RFC 6960 over HTTP POST, with a timeout) and believe only an answer signed
by a root we trust (`contract_roots`: the V2G and mobility-operator roots, PEM) or by a
responder certificate one of them issued. No answer, or one we cannot verify, is no
answer: the status stays unknown (never "good" on the responder's word alone).
"""

from __future__ import annotations

import binascii
import logging
import urllib.request
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from cocharge.stations.ca import HASHES

log = logging.getLogger(__name__)
MAX_RESPONSE = 64 * 1024


def _signed_by(issuer: x509.Certificate, signature: bytes, data: bytes, algorithm: Any) -> bool:
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _key_hash(cert: x509.Certificate) -> bytes:
    """RFC 6960's ResponderID byKey: the SHA-1 of the subjectPublicKey bits (as a subject
    key identifier by RFC 5280's first method)."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _responder(response: ocsp.OCSPResponse, roots: Sequence[x509.Certificate]
               ) -> x509.Certificate | None:
    """The certificate that signed the response, if we trust it: a root itself, or a
    certificate in the response that a root issued for OCSP signing."""
    wanted_key, wanted_name = response.responder_key_hash, response.responder_name
    candidates = list(response.certificates) + list(roots)
    for cert in candidates:
        if wanted_key is not None and _key_hash(cert) != wanted_key:
            continue
        if wanted_name is not None and cert.subject != wanted_name:
            continue
        if cert in roots:
            return cert
        for root in roots:
            if cert.issuer != root.subject or cert.signature_hash_algorithm is None:
                continue
            if not _signed_by(root, cert.signature, cert.tbs_certificate_bytes,
                              cert.signature_hash_algorithm):
                continue
            try:
                usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                continue
            if ExtendedKeyUsageOID.OCSP_SIGNING in usage:
                return cert
    return None


def ask(url: str, item: dict[str, Any], roots: Sequence[x509.Certificate],
        timeout_s: float) -> str | None:
    """good | revoked | unknown from the responder at `url` for the certificate named by
    `item` (OCSPRequestDataType, camelCase); None when there is no trusted answer in time.
    Blocking: run it in a thread."""
    algorithm = str(item.get("hashAlgorithm", ""))
    if algorithm not in HASHES or not url.startswith(("http://", "https://")):
        return None
    try:
        request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            binascii.unhexlify(str(item["issuerNameHash"])),
            binascii.unhexlify(str(item["issuerKeyHash"])),
            int(str(item["serialNumber"]), 16), HASHES[algorithm]()).build()
    except (KeyError, ValueError, binascii.Error):
        return None
    body = request.public_bytes(serialization.Encoding.DER)
    post = urllib.request.Request(url, data=body, method="POST",
                                  headers={"Content-Type": "application/ocsp-request"})
    try:
        with urllib.request.urlopen(post, timeout=timeout_s) as answer:  # noqa: S310 - http(s) only
            raw = answer.read(MAX_RESPONSE + 1)
    except (OSError, ValueError) as exc:
        log.info("OCSP responder %s: no answer (%s)", url, exc)
        return None
    if len(raw) > MAX_RESPONSE:
        return None
    try:
        response = ocsp.load_der_ocsp_response(raw)
    except ValueError:
        log.info("OCSP responder %s: not an OCSP response", url)
        return None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return None
    signer = _responder(response, roots)
    if signer is None or response.signature_hash_algorithm is None or not _signed_by(
            signer, response.signature, response.tbs_response_bytes,
            response.signature_hash_algorithm):
        log.warning("OCSP responder %s: an answer no trusted root vouches for", url)
        return None
    if (response.serial_number != request.serial_number
            or response.issuer_key_hash != request.issuer_key_hash):
        return None
    return {ocsp.OCSPCertStatus.GOOD: "good", ocsp.OCSPCertStatus.REVOKED: "revoked"}.get(
        response.certificate_status, "unknown")


def load_roots(path: str | None) -> list[x509.Certificate]:
    if not path:
        return []
    with open(path, "rb") as handle:
        return x509.load_pem_x509_certificates(handle.read())
