"""Firmware campaigns: a version rolled out to chosen stations, a few at a time.

The operator stores an image (`cocharge firmware add FILE --version V`, served by the
gateway's upload endpoint at `/firmware/<id>`) or names a URL, and starts a campaign for
stations chosen by vendor, model, current firmware or id (`cocharge firmware campaign`).
The running gateway (`Rollout.step`, from the sharing controller's tick) sends
UpdateFirmware to at most `at_once` connected stations at a time, follows their
FirmwareStatusNotifications, and counts a target done when it reports `Installed` or boots
with the campaign's version. A failure (the station refused, a Download/Installation
failure, or no progress within `firmware_timeout_s`) is retried up to `retries` times, then
the target is failed. Progress: `cocharge firmware status`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.stations.commands import UpdateFirmware
from cocharge.stations.registry import RegistryError, _iso
from cocharge.store.db import utcnow
from cocharge.store.schema import firmware_campaigns, firmware_files, firmware_targets, stations

log = logging.getLogger(__name__)

FAILED = {"DownloadFailed", "InstallationFailed", "InstallVerificationFailed",
          "InvalidSignature", "InstallRebootFailed", "Rejected", "InvalidCertificate",
          "RevokedCertificate"}
FINAL = {"pending", "done", "failed"}


def check_signature(content: bytes, signature: str, certificate_pem: str) -> None:
    """Does `signature` (base64) sign `content` (SHA-256) with the certificate's key? Checked
    when the operator stores the image, so that a wrong pair fails here and not at every
    station (they answer InvalidSignature). RegistryError says what is wrong."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        raise RegistryError("the signature must be base64 (as OCPP sends it)") from None
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError:
        raise RegistryError("the signing certificate must be a PEM X.509 certificate") from None
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, content, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, content, ec.ECDSA(hashes.SHA256()))
        else:
            raise RegistryError("the signing certificate's key must be RSA or ECDSA")
    except InvalidSignature:
        raise RegistryError("the signature does not match the image and the signing "
                            "certificate (SHA-256, RSA PKCS#1 v1.5 or ECDSA)") from None


async def add_file(engine: AsyncEngine, name: str, version: str, content: bytes,
                   signature: str | None = None, signing_certificate: str | None = None) -> int:
    if not content:
        raise RegistryError(f"{name} is empty")
    if (signature is None) != (signing_certificate is None):
        raise RegistryError("a signed image needs both --signature and --signing-certificate")
    if signature is not None and signing_certificate is not None:
        check_signature(content, signature, signing_certificate)
    async with engine.begin() as conn:
        return int((await conn.execute(insert(firmware_files).values(
            name=name, version=version, sha256=hashlib.sha256(content).hexdigest(),
            size=len(content), content=content, created_at=utcnow(), signature=signature,
            signing_certificate=signing_certificate,
        ).returning(firmware_files.c.id))).scalar_one())


@dataclass(frozen=True)
class Selection:
    vendor: str | None = None     # globs, case-insensitive
    model: str | None = None
    firmware: str | None = None   # the firmware they run now
    stations: tuple[str, ...] = ()

    def picks(self, row: Any) -> bool:
        def matches(value: str | None, glob: str | None) -> bool:
            return glob is None or fnmatch.fnmatch((value or "").casefold(), glob.casefold())
        return ((not self.stations or row.id in self.stations)
                and matches(row.vendor, self.vendor) and matches(row.model, self.model)
                and matches(row.firmware, self.firmware))


async def create_campaign(engine: AsyncEngine, version: str, file_id: int | None,
                          url: str | None, selection: Selection, at_once: int,
                          retries: int, signature: str | None = None,
                          signing_certificate: str | None = None) -> tuple[int, int]:
    """(campaign id, number of stations) — stations already on `version` are left out. A
    stored file brings its own signature; an image by URL may be given one."""
    if (file_id is None) == (url is None):
        raise RegistryError("give a firmware file id (`cocharge firmware add`) or --url, one")
    if (signature is None) != (signing_certificate is None):
        raise RegistryError("a signed image needs both --signature and --signing-certificate")
    if signature is not None and file_id is not None:
        raise RegistryError("a stored firmware file carries its signature: give it to "
                            "`cocharge firmware add`")
    now = utcnow()
    async with engine.begin() as conn:
        if file_id is not None:
            stored = (await conn.execute(select(
                firmware_files.c.signature, firmware_files.c.signing_certificate).where(
                firmware_files.c.id == file_id))).first()
            if stored is None:
                raise RegistryError(f"no firmware file {file_id}: store one with "
                                    f"`cocharge firmware add`")
            signature, signing_certificate = stored.signature, stored.signing_certificate
        rows = (await conn.execute(select(stations.c.id, stations.c.vendor, stations.c.model,
                                          stations.c.firmware))).all()
        known = {r.id for r in rows}
        unknown = [s for s in selection.stations if s not in known]
        if unknown:
            raise RegistryError(f"no station {unknown[0]!r}: see `cocharge station list`")
        chosen = sorted(r.id for r in rows if selection.picks(r) and r.firmware != version)
        if not chosen:
            raise RegistryError("no station matches (or all run that version already)")
        campaign_id = int((await conn.execute(insert(firmware_campaigns).values(
            version=version, file_id=file_id, url=url, at_once=at_once, retries=retries,
            signature=signature, signing_certificate=signing_certificate, status="running", created_at=now, updated_at=now,
        ).returning(firmware_campaigns.c.id))).scalar_one())
        await conn.execute(insert(firmware_targets), [
            {"campaign_id": campaign_id, "station_id": s, "status": "pending", "attempts": 0,
             "updated_at": now} for s in chosen])
    return campaign_id, len(chosen)


async def campaign_status(engine: AsyncEngine, campaign_id: int | None) -> dict[str, Any]:
    async with engine.connect() as conn:
        query = select(firmware_campaigns).order_by(firmware_campaigns.c.id.desc())
        if campaign_id is not None:
            query = query.where(firmware_campaigns.c.id == campaign_id)
        campaign = (await conn.execute(query.limit(1))).first()
        if campaign is None:
            raise RegistryError("no such firmware campaign: see `cocharge firmware campaign`")
        targets = (await conn.execute(select(firmware_targets).where(
            firmware_targets.c.campaign_id == campaign.id)
            .order_by(firmware_targets.c.station_id))).all()
    counts: dict[str, int] = {}
    for t in targets:
        counts[t.status] = counts.get(t.status, 0) + 1
    return {"id": campaign.id, "version": campaign.version, "status": campaign.status,
            "at_once": campaign.at_once, "retries": campaign.retries, "counts": counts,
            "targets": [{"station": t.station_id, "status": t.status, "attempts": t.attempts,
                         "detail": t.detail, "updated_at": _iso(t.updated_at)}
                        for t in targets]}


Send = Callable[[str, int, str | None, int | None], Awaitable[tuple[bool, str]]]


class Rollout:
    """The gateway's side of the campaigns (one per node; several nodes each start the
    stations they hold)."""

    def __init__(self, engine: AsyncEngine, timeout_s: float) -> None:
        self.engine = engine
        self.timeout = timedelta(seconds=timeout_s)

    async def step(self, connected: Callable[[str], bool],
                   now: datetime) -> list[tuple[str, UpdateFirmware]]:
        """Time-outs, finished campaigns, and the next stations to send UpdateFirmware to
        (its request id is the campaign's)."""
        to_send = []
        async with self.engine.begin() as conn:
            campaigns = (await conn.execute(select(firmware_campaigns).where(
                firmware_campaigns.c.status == "running"))).all()
            for c in campaigns:
                targets = (await conn.execute(select(firmware_targets).where(
                    firmware_targets.c.campaign_id == c.id)
                    .order_by(firmware_targets.c.station_id))).all()
                busy = [t for t in targets if t.status not in FINAL]
                for t in busy:
                    if now - t.updated_at > self.timeout:
                        await self._failed(conn, c, t.station_id, t.attempts,
                                           f"no progress within {self.timeout.total_seconds():g} s")
                busy = [t for t in busy if now - t.updated_at <= self.timeout]
                pending = [t for t in targets if t.status == "pending"]
                if not busy and not pending:
                    await conn.execute(update(firmware_campaigns).where(
                        firmware_campaigns.c.id == c.id).values(status="done", updated_at=now))
                    log.info("firmware campaign %s done", c.id)
                    continue
                free = c.at_once - len(busy)
                for t in pending:
                    if free <= 0:
                        break
                    if not connected(t.station_id):
                        continue
                    await conn.execute(update(firmware_targets).where(and_(
                        firmware_targets.c.campaign_id == c.id,
                        firmware_targets.c.station_id == t.station_id)).values(
                        status="sent", attempts=t.attempts + 1, sent_at=now, updated_at=now))
                    to_send.append((t.station_id, UpdateFirmware(
                        int(c.id), c.url, c.file_id, signature=c.signature,
                        signing_certificate=c.signing_certificate)))
                    free -= 1
        return to_send

    async def answered(self, campaign_id: int, station_id: str, accepted: bool,
                       status: str) -> None:
        """The station's answer to UpdateFirmware (or that it gave none)."""
        if accepted:
            return
        async with self.engine.begin() as conn:
            c = (await conn.execute(select(firmware_campaigns).where(
                firmware_campaigns.c.id == campaign_id))).one()
            attempts = await conn.scalar(select(firmware_targets.c.attempts).where(and_(
                firmware_targets.c.campaign_id == campaign_id,
                firmware_targets.c.station_id == station_id)))
            await self._failed(conn, c, station_id, int(attempts or 0), status)

    async def progress(self, station_id: str, status: str, request_id: int | None) -> None:
        """A FirmwareStatusNotification (2.0.1 names the campaign by requestId)."""
        now = utcnow()
        async with self.engine.begin() as conn:
            query = select(firmware_targets, firmware_campaigns.c.retries).select_from(
                firmware_targets.join(firmware_campaigns,
                                      firmware_campaigns.c.id == firmware_targets.c.campaign_id)
            ).where(and_(firmware_targets.c.station_id == station_id,
                         firmware_campaigns.c.status == "running",
                         firmware_targets.c.status.not_in(FINAL)))
            if request_id is not None:
                query = query.where(firmware_targets.c.campaign_id == request_id)
            for t in (await conn.execute(query)).all():
                if status in FAILED:
                    c = (await conn.execute(select(firmware_campaigns).where(
                        firmware_campaigns.c.id == t.campaign_id))).one()
                    await self._failed(conn, c, station_id, t.attempts, status)
                    continue
                await conn.execute(update(firmware_targets).where(and_(
                    firmware_targets.c.campaign_id == t.campaign_id,
                    firmware_targets.c.station_id == station_id)).values(
                    status="done" if status == "Installed" else status, updated_at=now))

    async def booted(self, station_id: str, firmware: str | None) -> None:
        """A BootNotification: a station that now runs the campaign's version is done."""
        if not firmware:
            return
        async with self.engine.begin() as conn:
            running = select(firmware_campaigns.c.id).where(and_(
                firmware_campaigns.c.status == "running", firmware_campaigns.c.version == firmware))
            await conn.execute(update(firmware_targets).where(and_(
                firmware_targets.c.station_id == station_id,
                firmware_targets.c.campaign_id.in_(running),
                firmware_targets.c.status.not_in(FINAL))).values(
                status="done", updated_at=utcnow()))

    async def _failed(self, conn: AsyncConnection, campaign: Any, station_id: str,
                      attempts: int, why: str) -> None:
        retry = attempts <= campaign.retries
        await conn.execute(update(firmware_targets).where(and_(
            firmware_targets.c.campaign_id == campaign.id,
            firmware_targets.c.station_id == station_id)).values(
            status="pending" if retry else "failed", detail=why[:255], updated_at=utcnow()))
        log.warning("firmware campaign %s: %s failed (%s)%s", campaign.id, station_id, why,
                    ", retried" if retry else ", given up")
