"""Charger certificates: signing CSRs with the operator's CA, delivery, renewal, OCSP.

A station asks for a certificate with SignCertificate (its CSR). When the CSR passes the
CA's checks (ca.py) the station is answered Accepted, and the signed chain follows in a
CertificateSigned call; what the station answers to that is kept (`station_certificates`).
Certificates that near their end, or were signed by a CA since rotated, are renewed: the
station is asked (TriggerMessage / 1.6 ExtendedTriggerMessage SignChargingStationCertificate)
for a new CSR, and the cycle repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.config import GatewaySettings
from cocharge.stations import ca, ocsp
from cocharge.stations.commands import (
    CertificateSigned,
    Command,
    CommandFailed,
    CommandRejected,
    CommandResult,
    ExtendedTriggerMessage,
)
from cocharge.stations.events import StationNotice
from cocharge.store.db import utcnow
from cocharge.store.schema import station_certificates, station_events

log = logging.getLogger(__name__)

Send = Callable[[str, Command], Awaitable[CommandResult]]


@dataclass(frozen=True)
class SignAnswer:
    accepted: bool
    reason: str = ""


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


class ContractProvider:
    """Where ISO 15118 contract certificates come from (Get15118EVCertificate): a mobility
    operator's or a contract-certificate pool's service. This one is the only kind there is
    today: none configured, so every request is answered Failed with that reason."""

    async def get(self, station_id: str, schema_version: str, action: str,
                  exi_request: str) -> dict[str, Any]:
        """The Get15118EVCertificate answer (camelCase)."""
        return {"status": "Failed", "exiResponse": "",
                "statusInfo": {"reasonCode": "NoProvider", "additionalInfo":
                               "no contract certificate provider is configured"}}


class CertificateKeeper:
    def __init__(self, engine: AsyncEngine, settings: GatewaySettings,
                 authority: ca.Authority | None, notice: Callable[[StationNotice],
                                                                  Awaitable[None]]) -> None:
        self.engine = engine
        self.settings = settings
        self.authority = authority
        self.notice = notice
        self.send: Send | None = None  # set by the gateway: a command to a connected station
        self.online: Callable[[str], bool] = lambda _station: False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._installed: dict[str, asyncio.Event] = {}  # station -> set when one is installed
        self._renew_task: asyncio.Task[None] | None = None
        self.contracts = ContractProvider()
        self._roots: list[Any] | None = None  # contract_roots(), read once

    def start(self) -> None:
        if self.authority is not None:
            self._renew_task = asyncio.create_task(self._renew_forever(), name="cert-renewal")

    async def close(self) -> None:
        for task in [self._renew_task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- SignCertificate --------------------------------------------------------------------

    async def sign_request(self, station_id: str, csr: str,
                           certificate_type: str | None) -> SignAnswer:
        """A station's CSR: Accepted (the certificate follows in CertificateSigned) or
        Rejected with the reason (kept as a security event of the station)."""
        kind = certificate_type or "ChargingStationCertificate"
        if self.authority is None:
            reason = "this gateway has no CA to sign with (serve --ca-dir)"
        elif kind != "ChargingStationCertificate":
            reason = f"no {kind} CA is configured (only charging station certificates)"
        else:
            try:
                cert = self.authority.sign_csr(csr, station_id, self.settings.cert_valid_s)
            except ca.CsrRejected as exc:
                reason = str(exc)
            else:
                await self._store(station_id, kind, cert)
                self._spawn(self._deliver(station_id, kind, cert))
                return SignAnswer(True)
        log.warning("station %s: certificate signing request rejected: %s", station_id, reason)
        await self.notice(StationNotice(station_id, "certificate", utcnow(),
                                        {"step": "csr rejected", "reason": reason}))
        return SignAnswer(False, reason)

    async def _store(self, station_id: str, kind: str, cert: x509.Certificate) -> None:
        assert self.authority is not None
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(insert(station_certificates).values(
                serial=ca.serial_hex(cert), station_id=station_id, certificate_type=kind,
                ca_fingerprint=self.authority.fingerprint,
                not_before=_naive(cert.not_valid_before_utc),
                not_after=_naive(cert.not_valid_after_utc),
                pem=self.authority.chain_pem(cert), status="signed", created_at=now,
                updated_at=now))

    async def _deliver(self, station_id: str, kind: str, cert: x509.Certificate) -> None:
        assert self.authority is not None and self.send is not None
        serial = ca.serial_hex(cert)
        try:
            result = await self.send(station_id, CertificateSigned(
                self.authority.chain_pem(cert), kind))
        except (CommandFailed, CommandRejected) as exc:
            log.warning("station %s: certificate %s not delivered: %s", station_id, serial, exc)
            await self._mark(station_id, serial, "refused", f"not delivered: {exc}")
            return
        if result.accepted:
            await self.installed(station_id, serial)
        else:
            await self._mark(station_id, serial, "refused", f"station answered {result.status}")

    async def installed(self, station_id: str, serial: str) -> None:
        """The station accepted the certificate: it is the station's now (any earlier one of
        ours stays valid until it expires: the station may still use it until it reconnects)."""
        await self._mark(station_id, serial, "installed", "accepted by the station")
        self._installed.setdefault(station_id, asyncio.Event()).set()
        log.info("station %s: certificate %s installed", station_id, serial)

    async def _mark(self, station_id: str, serial: str, status: str, step: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(station_certificates)
                               .where(station_certificates.c.serial == serial)
                               .values(status=status, updated_at=utcnow()))
        await self.notice(StationNotice(station_id, "certificate", utcnow(),
                                        {"step": step, "serial": serial, "status": status}))

    async def wait_installed(self, station_id: str, timeout_s: float) -> bool:
        event = self._installed.setdefault(station_id, asyncio.Event())
        event.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            return False
        return True

    async def current(self, station_id: str) -> dict[str, Any] | None:
        """The station's newest installed certificate of a CA we trust, still valid."""
        trusted = {ca.fingerprint(c) for c in self.authority.trusted} if self.authority else set()
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(station_certificates).where(and_(
                    station_certificates.c.station_id == station_id,
                    station_certificates.c.status == "installed",
                    station_certificates.c.not_after > utcnow()))
                .order_by(station_certificates.c.not_after.desc()))).first()
        if row is None or row.ca_fingerprint not in trusted:
            return None
        return dict(row._mapping)

    # --- renewal ----------------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cert_check_s)
            try:
                await self.renew_due()
            except Exception:
                log.exception("certificate renewal check failed")

    async def renew_due(self) -> list[str]:
        """Ask connected stations whose certificate ends within `cert_renew_before_s` (or
        comes from a CA since rotated) for a new CSR; returns the stations asked."""
        assert self.authority is not None
        now = utcnow()
        horizon = now + timedelta(seconds=self.settings.cert_renew_before_s)
        again = now - timedelta(seconds=self.settings.cert_renew_retry_s)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(station_certificates).where(and_(
                station_certificates.c.status == "installed",
                station_certificates.c.not_after > now)))).all()
        newest: dict[str, Any] = {}
        recent: set[str] = set()  # asked, or given a certificate, within cert_renew_retry_s
        for row in rows:
            if row.station_id not in newest or row.not_after > newest[row.station_id].not_after:
                newest[row.station_id] = row
            if row.created_at > again or (row.renewal_asked_at or row.created_at) > again:
                recent.add(row.station_id)
        asked = []
        for station_id, row in newest.items():
            due = row.not_after <= horizon or row.ca_fingerprint != self.authority.fingerprint
            if not due or station_id in recent or not self.online(station_id):
                continue
            await self.ask_renewal(station_id, row.serial)
            asked.append(station_id)
        return asked

    async def ask_renewal(self, station_id: str, serial: str | None = None) -> CommandResult:
        """Trigger the station's SignCertificate (a new key and CSR)."""
        assert self.send is not None
        if serial is not None:
            async with self.engine.begin() as conn:
                await conn.execute(update(station_certificates)
                                   .where(station_certificates.c.serial == serial)
                                   .values(renewal_asked_at=utcnow()))
        try:
            result = await self.send(station_id, ExtendedTriggerMessage(
                "SignChargingStationCertificate"))
        except (CommandFailed, CommandRejected) as exc:
            log.warning("station %s: renewal not asked: %s", station_id, exc)
            return CommandResult(False, "NotSent", {"reason": str(exc)})
        log.info("station %s: certificate renewal asked (%s)", station_id, result.status)
        await self.notice(StationNotice(station_id, "certificate", utcnow(),
                                        {"step": "renewal asked", "serial": serial,
                                         "status": result.status}))
        return result

    # --- OCSP -------------------------------------------------------------------------------

    async def certificate_status(self, request: dict[str, Any]) -> dict[str, Any]:
        """GetCertificateStatus: an OCSP response for a certificate of our CA; Failed for one
        of another CA (its own OCSP responder answers for it)."""
        if self.authority is None or not self.authority.issued_by_us(request):
            return {"status": "Failed", "statusInfo": {
                "reasonCode": "UnknownIssuer",
                "additionalInfo": "not a certificate of this operator's CA"}}
        serial = str(request.get("serialNumber", "")).lower().lstrip("0") or "0"
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(station_certificates.c.status,
                                             station_certificates.c.updated_at)
                                      .where(station_certificates.c.serial == serial))).first()
        status = "unknown" if row is None else "revoked" if row.status == "revoked" else "good"
        try:
            result = self.authority.ocsp_response(request, status,
                                                  row.updated_at if row is not None else None)
        except ca.CAError as exc:
            return {"status": "Failed", "statusInfo": {"reasonCode": "InvalidRequest",
                                                       "additionalInfo": str(exc)[:512]}}
        return {"status": "Accepted", "ocspResult": result}


    def contract_roots(self) -> list[Any]:
        """The roots an OCSP answer about a contract certificate must come from."""
        if self._roots is None:
            own = list(self.authority.trusted) if self.authority is not None else []
            self._roots = own + ocsp.load_roots(self.settings.contract_roots)
        return self._roots

    async def contract_status(self, items: list[dict[str, Any]]) -> str | None:
        """An Authorize's ISO 15118 certificate hash data (OCSPRequestDataType, camelCase,
        the contract certificate and its chain): CertificateRevoked when any is revoked,
        Accepted when every one is known good, None when that cannot be told (no responder,
        no answer in time, none we can verify)."""
        statuses: list[str | None] = []
        for item in items[:4]:
            if self.authority is not None and self.authority.issued_by_us(item):
                serial = str(item.get("serialNumber", "")).lower().lstrip("0") or "0"
                async with self.engine.connect() as conn:
                    row = await conn.scalar(select(station_certificates.c.status)
                                            .where(station_certificates.c.serial == serial))
                statuses.append(None if row is None else "revoked" if row == "revoked"
                                else "good")
                continue
            url = str(item.get("responderURL") or "")
            statuses.append(await asyncio.to_thread(
                ocsp.ask, url, item, self.contract_roots(), self.settings.ocsp_timeout_s)
                if url else None)
        if "revoked" in statuses:
            return "CertificateRevoked"
        if statuses and all(s == "good" for s in statuses):
            return "Accepted"
        return None


async def revoke(engine: AsyncEngine, serial: str) -> str:
    """Revoke a certificate of ours (`cocharge station revoke-certificate`): the gateway
    refuses it at the next connection and OCSP reports it revoked. Returns its station."""
    serial = serial.lower().lstrip("0") or "0"
    now = utcnow()
    async with engine.begin() as conn:  # one transaction: the mark and its event
        row = (await conn.execute(select(station_certificates.c.station_id)
                                  .where(station_certificates.c.serial == serial))).first()
        if row is None:
            raise ca.CAError(f"no certificate with serial {serial} (`cocharge station "
                             "certificates ID` lists them)")
        await conn.execute(update(station_certificates)
                           .where(station_certificates.c.serial == serial)
                           .values(status="revoked", updated_at=now))
        await conn.execute(insert(station_events).values(
            station_id=row.station_id, ts=now, kind="certificate",
            payload=json.dumps({"serial": serial, "status": "revoked",
                                "step": "revoked by the operator"}, sort_keys=True)))
    return str(row.station_id)


async def revoked_serials(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(station_certificates.c.serial)
                                   .where(station_certificates.c.status == "revoked"))).all()
    return {row.serial for row in rows}
