"""A host pairs a new charger by a code (issue 33, item 4): "three minutes, you decide".

The host makes a code for the station id it chooses (console, API): the charger is then
configured with the gateway's URL, that id, and the code as its HTTP Basic password (OCPP
1.6 `AuthorizationKey`, 2.0.1 `BasicAuthPassword`, or the charger's setup page). Its first
connection with the code registers the station to the host (its connectors and power as
given), and a password rotation is queued for its boot (stations/commands.RotatePassword):
from then on the charger has a strong password of its own and the code opens nothing.

A code: 8 characters of an alphabet without look-alikes, shown as XXXX-XXXX; kept as its
SHA-256 (it is random, and scrypt protects the station's password that replaces it); valid
24 hours unless said; used once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.stations.passwords import hash_password
from cocharge.stations.registry import NewStation, RegistryError, check_station_id
from cocharge.store.db import utcnow
from cocharge.store.schema import pairing_codes, stations

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def _normal(code: str) -> str:
    return code.strip().upper().replace("-", "").replace(" ", "")


def _digest(code: str) -> str:
    return hashlib.sha256(_normal(code).encode()).hexdigest()


async def create(engine: AsyncEngine, station_id: str, owner: str, connectors: int,
                 max_power_kw: float | None, created_by: str,
                 valid: timedelta = timedelta(hours=24)) -> dict[str, Any]:
    """A code for a new station of `owner` (RegistryError when the id is taken or bad)."""
    check_station_id(station_id)
    if not 1 <= connectors <= 64:
        raise RegistryError("connectors: 1 to 64")
    code = "".join(secrets.choice(ALPHABET) for _ in range(8))
    shown = f"{code[:4]}-{code[4:]}"
    expires = utcnow() + valid
    async with engine.begin() as conn:
        if await conn.scalar(select(stations.c.id).where(stations.c.id == station_id)):
            raise RegistryError(f"station {station_id!r} is already registered")
        old = (await conn.execute(select(pairing_codes.c.used_at).where(
            pairing_codes.c.station_id == station_id))).first()
        if old is not None and old.used_at is not None:
            raise RegistryError(f"station {station_id!r} was paired already")
        values = {"owner": owner, "connectors": connectors,
                  "max_power_w": round(max_power_kw * 1000) if max_power_kw else None,
                  "code_hash": _digest(code), "created_by": created_by[:200],
                  "created_at": utcnow(), "expires_at": expires}
        if old is None:
            await conn.execute(insert(pairing_codes).values(station_id=station_id, **values))
        else:  # a new code replaces an unused one
            await conn.execute(update(pairing_codes).where(
                pairing_codes.c.station_id == station_id).values(**values))
    return {"station": station_id, "code": shown, "owner": owner,
            "expires_at": expires.isoformat(timespec="seconds") + "Z"}


async def pending(engine: AsyncEngine, station_id: str) -> bool:
    """Is an unused, unexpired code waiting for this station id?"""
    async with engine.connect() as conn:
        row = (await conn.execute(select(pairing_codes.c.used_at, pairing_codes.c.expires_at)
                                  .where(pairing_codes.c.station_id == station_id))).first()
    return row is not None and row.used_at is None and row.expires_at > utcnow()


async def redeem(engine: AsyncEngine, station_id: str, password: str) -> NewStation | None:
    """The charger's first connection: when `password` is the station's unused, unexpired
    code, the station is registered to its host (its password the code, until rotated) and
    returned; None otherwise (nothing written)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(pairing_codes).where(
            pairing_codes.c.station_id == station_id))).first()
    if (row is None or row.used_at is not None or row.expires_at <= utcnow()
            or not hmac.compare_digest(row.code_hash, _digest(password))):
        return None
    new = NewStation(station_id, password=password, owner=row.owner,
                     connectors=int(row.connectors),
                     max_power_kw=row.max_power_w / 1000 if row.max_power_w else None)
    hashed = await asyncio.to_thread(hash_password, password)  # as the charger sends it
    async with engine.begin() as conn:
        done = await conn.execute(update(pairing_codes).where(
            pairing_codes.c.station_id == station_id, pairing_codes.c.used_at.is_(None))
            .values(used_at=utcnow()))
        if done.rowcount != 1:
            return None  # paired by a connection a moment ago
        await conn.execute(insert(stations).values(
            id=station_id, password_hash=hashed, owner=new.owner, connectors=new.connectors,
            max_power_w=row.max_power_w, admission="accepted", created_at=utcnow()))
    return new
