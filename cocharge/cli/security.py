"""Security: the CA, station certificates and security profiles, passwords, API keys."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from cocharge.api.keys import ApiKeyError, create_key, list_keys, revoke_key
from cocharge.cli.channel import expires_option, remote_call, remote_command
from cocharge.cli.common import (
    db_option,
    emit,
    fail,
    json_option,
)
from cocharge.cli.database import with_store
from cocharge.stations import ca
from cocharge.stations.ca import CAError
from cocharge.stations.certificates import revoke
from cocharge.stations.passwords import valid_password
from cocharge.store.schema import station_certificates as certificates_table


@click.command("rotate-password")
@click.argument("station_id")
@click.option("--password", help="The new password (16-40 printable characters); default: a "
              "strong random one that nobody needs to see.")
@expires_option
@db_option
@json_option
def station_rotate_password(station_id: str, password: str | None, db: str | None,
                            as_json: bool, expires: float | None) -> None:
    """Give a connected station a new password: 1.6 AuthorizationKey / 2.0.1
    BasicAuthPassword. It is valid once the station accepted it, and the old one until the
    station has connected with the new one, so the station is never locked out."""

    if password is not None and not valid_password(password):
        fail("--password must be 16 to 40 printable ASCII characters without spaces")
    remote_call(db, station_id, "rotate-password", {"password": password}, as_json, expires)


ca_dir_option = click.option(
    "--dir", "directory", envvar="COCHARGE_CA_DIR", default="cocharge-ca", show_default=True,
    type=click.Path(file_okay=False), help="Where the CA is kept (env COCHARGE_CA_DIR).")


def _ca_error(work: Any) -> Any:
    try:
        return work()
    except CAError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot use the CA files: {exc}")


@click.group("ca")
def ca_group() -> None:
    """The operator's certificate authority: signs the stations' client certificates
    (security profile 3) and the gateway's server certificate."""


@ca_group.command("init")
@ca_dir_option
@click.option("--org", help="The operator's organisation: every station certificate names it "
              "(required for a new CA).")
@click.option("--name", default="cocharge station CA", show_default=True,
              help="The CA's common name.")
@click.option("--days", default=3650, show_default=True, type=click.IntRange(1, 36500))
@click.option("--import-cert", type=click.Path(exists=True, dir_okay=False),
              help="Adopt an external (intermediate) CA: its certificate (PEM) ...")
@click.option("--import-key", type=click.Path(exists=True, dir_okay=False),
              help="... and its private key (PEM).")
@json_option
def ca_init(directory: str, org: str | None, name: str, days: int, import_cert: str | None,
            import_key: str | None, as_json: bool) -> None:
    """Create the CA (key 0600 in a 0700 directory; encrypted when COCHARGE_CA_PASSPHRASE
    is set), or adopt an external one."""

    if bool(import_cert) != bool(import_key):
        fail("--import-cert and --import-key go together")
    if import_cert and import_key:
        authority = _ca_error(lambda: ca.adopt(directory, import_cert, import_key))
    else:
        organisation = (org or "").strip()
        if not organisation:
            fail("a new CA needs the operator's organisation: --org NAME")
        authority = _ca_error(lambda: ca.init(directory, organisation, name, days))
    emit(_ca_facts(authority), as_json)


def _ca_facts(authority: Any) -> dict[str, Any]:
    return {"directory": str(authority.directory),
            "subject": authority.cert.subject.rfc4514_string(),
            "organisation": authority.organisation, "fingerprint": authority.fingerprint,
            "not_after": authority.cert.not_valid_after_utc.isoformat(),
            "key_encrypted": (authority.directory / "ca.key").read_bytes().startswith(
                b"-----BEGIN ENCRYPTED"),
            "trusted": [ca.fingerprint(c)[:16] for c in authority.trusted]}


@ca_group.command("show")
@ca_dir_option
@json_option
def ca_show(directory: str, as_json: bool) -> None:
    """The CA that signs now and every CA certificate still trusted."""

    emit(_ca_facts(_ca_error(lambda: ca.load(directory))), as_json)


@ca_group.command("rotate")
@ca_dir_option
@click.option("--days", default=3650, show_default=True, type=click.IntRange(1, 36500))
@json_option
def ca_rotate(directory: str, days: int, as_json: bool) -> None:
    """A new CA key and certificate. The old certificate stays trusted; a running gateway
    (after a restart, which loads the new CA) asks each station for a new CSR. Install the
    new CA certificate on the stations (`remote install-certificate`) before its server
    certificate changes, then `ca forget` the old one."""

    emit(_ca_facts(_ca_error(lambda: ca.rotate(directory, days))), as_json)


@ca_group.command("forget")
@ca_dir_option
@click.argument("fingerprint")
def ca_forget(directory: str, fingerprint: str) -> None:
    """Stop trusting an earlier CA certificate (its SHA-256 fingerprint or its start, as
    `ca show` lists it)."""

    if len(fingerprint) < 8:
        fail("give at least 8 hex digits of the fingerprint (`cocharge ca show`)")
    if not _ca_error(lambda: ca.forget(directory, fingerprint)):
        fail(f"no earlier CA certificate {fingerprint} (`cocharge ca show`)")
    click.echo(f"CA certificate {fingerprint} is no longer trusted (restart the gateway)")


@ca_group.command("server-cert")
@ca_dir_option
@click.option("--host", "hosts", multiple=True, required=True,
              help="Name or address the stations connect to (repeatable).")
@click.option("--days", default=397, show_default=True, type=click.IntRange(1, 3650))
@click.option("--cert-out", required=True, type=click.Path(dir_okay=False))
@click.option("--key-out", required=True, type=click.Path(dir_okay=False))
@click.option("--rsa-cert-out", type=click.Path(dir_okay=False),
              help="The RSA certificate beside the ECDSA one (default: CERT_OUT with -rsa).")
@click.option("--rsa-key-out", type=click.Path(dir_okay=False),
              help="Its key (default: KEY_OUT with -rsa).")
def ca_server_cert(directory: str, hosts: tuple[str, ...], days: int, cert_out: str,
                   key_out: str, rsa_cert_out: str | None, rsa_key_out: str | None) -> None:
    """TLS server certificates for `serve`, signed by the CA: an ECDSA one and an RSA one
    (OCPP's TLS 1.2 suites need both: docs/security.md)."""

    def beside(path: str) -> str:
        found = Path(path)
        return str(found.with_name(f"{found.stem}-rsa{found.suffix}"))

    rsa_cert_out = rsa_cert_out or beside(cert_out)
    rsa_key_out = rsa_key_out or beside(key_out)
    outputs = [cert_out, key_out, rsa_cert_out, rsa_key_out]
    if len(set(outputs)) < 4:
        fail("the four output files must differ: give --rsa-cert-out and --rsa-key-out")
    for path in outputs:
        if Path(path).exists():
            fail(f"{path} exists: choose another file or remove it")
    authority = _ca_error(lambda: ca.load(directory))
    for (chain, key), (cert_path, key_path) in (
            (authority.server_certificate(list(hosts), days), (cert_out, key_out)),
            (authority.server_certificate(list(hosts), days, rsa_key=True),
             (rsa_cert_out, rsa_key_out))):
        Path(cert_path).write_text(chain)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
    click.echo(f"server certificates for {', '.join(hosts)}: {cert_out} (ECDSA, key {key_out}) "
               f"and {rsa_cert_out} (RSA, key {rsa_key_out})")
    click.echo(f"serve them: cocharge serve --tls-cert {cert_out} --tls-key {key_out} "
               f"--tls-rsa-cert {rsa_cert_out} --tls-rsa-key {rsa_key_out} ...")


# --- stations: certificates and security profile ----------------------------------------------

@click.command("certificates")
@click.argument("station_id")
@db_option
@json_option
def station_certificates(station_id: str, db: str | None, as_json: bool) -> None:
    """The certificates our CA signed for the station, newest first."""

    async def work(engine: Any) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(
                certificates_table.c.serial, certificates_table.c.status,
                certificates_table.c.not_before, certificates_table.c.not_after,
                certificates_table.c.ca_fingerprint, certificates_table.c.renewal_asked_at)
                .where(certificates_table.c.station_id == station_id)
                .order_by(certificates_table.c.created_at.desc()))).all()
        return [{**dict(r._mapping), "ca": r.ca_fingerprint[:16]} for r in rows]

    rows = with_store(db, work)
    emit(rows, as_json, ["serial", "status", "not_before", "not_after", "ca",
                         "renewal_asked_at"])


@click.command("revoke-certificate")
@click.argument("serial")
@db_option
def station_revoke_certificate(serial: str, db: str | None) -> None:
    """Revoke a certificate of ours (its serial, from `station certificates`): refused at the
    station's next connection, reported revoked by OCSP."""

    try:
        int(serial, 16)
    except ValueError:
        fail(f"{serial!r} is not a serial number (hex, from `cocharge station certificates`)")

    async def work(engine: Any) -> str:
        from cocharge.gateway.operator_client import OperatorError, send_request

        try:
            station_id = await revoke(engine, serial)
        except CAError as exc:
            fail(str(exc))
            raise
        with contextlib.suppress(OperatorError):  # the gateways close its connection now
            await send_request(engine, {"command": "certificate-revoked",
                                        "station": station_id}, timeout=5)
        return station_id

    station_id = with_store(db, work)
    click.echo(f"certificate {serial.lower()} of station {station_id} revoked")


@click.command("renew-certificate")
@click.argument("station_id")
@db_option
@json_option
def station_renew_certificate(station_id: str, db: str | None, as_json: bool) -> None:
    """Ask the station for a new key and CSR now (the gateway does so by itself before a
    certificate ends): TriggerMessage / 1.6 ExtendedTriggerMessage."""
    remote_call(db, station_id, "extended-trigger-message",
                {"message": "SignChargingStationCertificate"}, as_json)


@click.command("security-profile")
@click.argument("station_id")
@click.argument("profile", type=click.IntRange(1, 3))
@click.option("--force", is_flag=True, help="Allow a move to a lower profile.")
@click.option("--url", "csms_url", help="The wss:// address the station is to use (default: "
              "serve --tls-url, else the host it connects to and the TLS port).")
@click.option("--slot", "configuration_slot", type=click.IntRange(0, 2**31 - 1),
              help="2.0.1: the network profile slot (default: a free one).")
@db_option
@json_option
def station_security_profile(station_id: str, profile: int, force: bool, csms_url: str | None,
                             configuration_slot: int | None, db: str | None,
                             as_json: bool) -> None:
    """Move a connected station to security profile 1, 2 or 3 without a site visit. For 3
    it first gets a certificate of our CA; then 2.0.1 gets a network profile, made first in
    priority, and a reset; 1.6 gets SecurityProfile. A lower profile needs --force."""
    if csms_url is not None and not csms_url.startswith(("ws://", "wss://")):
        fail(f"--url {csms_url!r}: give a ws:// or wss:// address")
    if csms_url is not None and profile >= 2 and not csms_url.startswith("wss://"):
        fail("profiles 2 and 3 use TLS: give a wss:// --url")
    remote_call(db, station_id, "security-profile", {
        "profile": profile, "force": force, "csms_url": csms_url,
        "configuration_slot": configuration_slot}, as_json)


# --- remote: the certificate operations -------------------------------------------------------

def _pem(path: str) -> str:
    text = Path(path).read_text()
    _ca_error(lambda: ca.load_pem_certificates(text))
    return text


ROOT_TYPES = ["CSMSRootCertificate", "CentralSystemRootCertificate",
              "ManufacturerRootCertificate", "V2GRootCertificate", "MORootCertificate"]


@remote_command("install-certificate", "A root certificate for the station to trust: InstallCertificate "
         "(e.g. the operator's CA as CSMSRootCertificate before the gateway's server "
         "certificate is one of its certificates).")
@click.option("--type", "certificate_type", required=True, type=click.Choice(ROOT_TYPES),
              help="1.6 knows CentralSystemRootCertificate (= CSMSRootCertificate) and "
                   "ManufacturerRootCertificate.")
@click.option("--file", "path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The certificate (PEM).")
def remote_install_certificate(station_id: str, certificate_type: str, path: str,
                               db: str | None, as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "install-certificate", {
        "certificate_type": certificate_type, "certificate": _pem(path)}, as_json, expires)


@remote_command("get-installed-certificate-ids", "The root certificates the station holds (their hash "
         "data, as delete-certificate takes them).")
@click.option("--type", "types", multiple=True, type=click.Choice(ROOT_TYPES + [
    "V2GCertificateChain"]), help="Repeatable (1.6: exactly one); default all (2.0.1).")
def remote_get_installed_certificate_ids(station_id: str, types: tuple[str, ...],
                                         db: str | None, as_json: bool,
                                         expires: float | None) -> None:
    remote_call(db, station_id, "get-installed-certificate-ids",
                {"certificate_types": list(types)}, as_json, expires)


@remote_command("delete-certificate", "Remove a root certificate from the station, named by its hash "
         "data (get-installed-certificate-ids) or given as the certificate file.")
@click.option("--certificate", "path", type=click.Path(exists=True, dir_okay=False),
              help="The root certificate (PEM): its hash data is computed.")
@click.option("--issuer-name-hash")
@click.option("--issuer-key-hash")
@click.option("--serial-number")
@click.option("--hash-algorithm", default="SHA256", show_default=True,
              type=click.Choice(["SHA256", "SHA384", "SHA512"]))
def remote_delete_certificate(station_id: str, path: str | None, issuer_name_hash: str | None,
                              issuer_key_hash: str | None, serial_number: str | None,
                              hash_algorithm: str, db: str | None, as_json: bool,
                              expires: float | None) -> None:
    named = (issuer_name_hash, issuer_key_hash, serial_number)
    if path is not None:
        if any(named):
            fail("give --certificate, or the three hashes, not both")
        cert = _ca_error(lambda: ca.load_pem_certificates(Path(path).read_text()))[0]
        data = ca.hash_data(cert, None, hash_algorithm)
        args = {"issuer_name_hash": data["issuerNameHash"],
                "issuer_key_hash": data["issuerKeyHash"],
                "serial_number": data["serialNumber"], "hash_algorithm": hash_algorithm}
    elif issuer_name_hash and issuer_key_hash and serial_number:
        args = {"issuer_name_hash": issuer_name_hash, "issuer_key_hash": issuer_key_hash,
                "serial_number": serial_number, "hash_algorithm": hash_algorithm}
    else:
        fail("name the certificate: --certificate FILE, or --issuer-name-hash, "
             "--issuer-key-hash and --serial-number")
    remote_call(db, station_id, "delete-certificate", args, as_json, expires)


@remote_command("certificate-signed", "Deliver a certificate chain signed by an external CA for the "
         "station's own key: CertificateSigned (the gateway does this by itself for its CA).")
@click.option("--file", "path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The chain (PEM), the station's certificate first.")
@click.option("--type", "certificate_type",
              type=click.Choice(["ChargingStationCertificate", "V2GCertificate"]))
def remote_certificate_signed(station_id: str, path: str, certificate_type: str | None,
                              db: str | None, as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "certificate-signed", {
        "certificate_chain": _pem(path), "certificate_type": certificate_type}, as_json, expires)


@remote_command("extended-trigger-message", "1.6 security extension's ExtendedTriggerMessage (2.0.1: "
         "TriggerMessage), e.g. SignChargingStationCertificate for a new certificate.")
@click.argument("message")
@click.option("--connector", type=click.IntRange(1, 64))
def remote_extended_trigger(station_id: str, message: str, connector: int | None,
                            db: str | None, as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "extended-trigger-message",
                {"message": message, "connector_id": connector}, as_json, expires)



# --- API keys -------------------------------------------------------------------------------

@click.group()
def apikey() -> None:
    """Keys of the HTTP API and the web console (docs/api.md)."""


@apikey.command("create")
@click.option("--name", required=True, help="Who or what uses it, e.g. 'Greenfield backend'.")
@click.option("--role", required=True,
              type=click.Choice(["operator", "property", "host", "member"]),
              help="operator: everything; property/host: its own stations and money; "
                   "member: its own bookings, sessions, wallet, rewards.")
@click.option("--owner", help="What a non-operator key sees: the property's or host's "
              "account name, the member's tag.")
@db_option
def apikey_create(name: str, role: str, owner: str | None, db: str | None) -> None:
    """Make a key; it is printed once (only its hash is kept)."""

    async def work(engine: Any) -> str:
        try:
            return await create_key(engine, name, role, owner)
        except ApiKeyError as exc:
            fail(str(exc))
            raise

    key = with_store(db, work)
    click.echo(key)
    click.echo(f"{role} key for {name}" + (f" ({owner})" if owner else "")
               + ": shown only this once; log in to the console with it, or send it as "
               "'Authorization: Bearer <key>'", err=True)


@apikey.command("list")
@db_option
@json_option
def apikey_list(db: str | None, as_json: bool) -> None:
    """Every key (never the key itself)."""

    emit(with_store(db, list_keys), as_json,
         ["id", "name", "role", "owner", "created", "last_used", "revoked"])


@apikey.command("revoke")
@click.argument("key_id")
@db_option
def apikey_revoke(key_id: str, db: str | None) -> None:
    """Revoke a key by its id (`apikey list`); it stops working at once."""

    async def work(engine: Any) -> None:
        try:
            await revoke_key(engine, key_id.removeprefix("cck_").split("_")[0])
        except ApiKeyError as exc:
            fail(str(exc))

    with_store(db, work)
    click.echo(f"key {key_id} revoked")
