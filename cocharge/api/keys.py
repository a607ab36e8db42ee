"""API keys: who may call the HTTP API (and log in to the console), and what they may see.

A key is ``cck_<id>_<secret>``: the id finds the row, the secret is compared with the
SHA-256 kept in `api_keys` (the secret is 32 random bytes, so a fast hash is enough; the
key is shown once, when it is made, and never stored).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.store.db import utcnow
from cocharge.store.schema import api_keys, members
from cocharge.views import stations_of

ROLES = ("operator", "property", "host", "member")
PREFIX = "cck_"


class ApiKeyError(Exception):
    """A key that cannot be made, found or revoked (the message says why)."""


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a role, and for every role but operator what it owns."""
    key_id: str
    name: str
    role: str
    owner: str | None
    via: str = "api"  # the way it came: "api", or "console" (its pages; the audit trail says)

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key_id, "name": self.name, "role": self.role, "owner": self.owner}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(engine: AsyncEngine, name: str, role: str, owner: str | None) -> str:
    """Make a key; returns it in full (the only time it is known)."""
    if role not in ROLES:
        raise ApiKeyError(f"role {role!r}: one of {', '.join(ROLES)}")
    if role == "operator" and owner:
        raise ApiKeyError("an operator key sees everything: give no --owner")
    if role != "operator" and not owner:
        what = {"property": "the property's account name (as in `split set --property`)",
                "host": "the host's name (a station's owner or `split set --host`)",
                "member": "the member's tag"}[role]
        raise ApiKeyError(f"a {role} key needs --owner: {what}")
    if not name.strip() or len(name) > 100:
        raise ApiKeyError("--name: 1 to 100 characters")
    if role == "member":
        async with engine.connect() as conn:
            if await conn.scalar(select(members.c.tag).where(members.c.tag == owner)) is None:
                raise ApiKeyError(f"no member with tag {owner!r}: see `cocharge member list`")
    elif role in ("host", "property"):
        if not await stations_of(engine, role, owner or ""):
            how = ("own a station (`station add --owner`, `station update`) or be named by "
                   "`split set --host`" if role == "host" else
                   "be named by `split set ID --model property --property NAME`")
            raise ApiKeyError(f"no {role} {owner!r}: a {role} key's owner must {how}")
    key_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        await conn.execute(insert(api_keys).values(
            id=key_id, name=name.strip(), role=role, owner=owner, secret_hash=_digest(secret),
            created_at=utcnow()))
    return f"{PREFIX}{key_id}_{secret}"


async def revoked(engine: AsyncEngine, key: str) -> bool:
    """Is this a real key that was revoked (its secret matches: telling so leaks nothing)?"""
    key_id, _, secret = key[len(PREFIX):].partition("_")
    if not key.startswith(PREFIX) or not key_id or not secret or len(key) > 200:
        return False
    async with engine.connect() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
    return (row is not None and row.revoked_at is not None
            and secrets.compare_digest(row.secret_hash, _digest(secret)))


async def authenticate(engine: AsyncEngine, key: str) -> Principal | None:
    """The key's principal, or None for a malformed, unknown, wrong or revoked key."""
    if not key.startswith(PREFIX):
        return None
    key_id, _, secret = key[len(PREFIX):].partition("_")
    if not key_id or not secret or len(key) > 200:
        return None
    async with engine.connect() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
    if row is None or row.revoked_at is not None:
        return None
    if not secrets.compare_digest(row.secret_hash, _digest(secret)):
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        async with engine.begin() as conn:  # a rough "last used", not a write per request
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                               .values(last_used_at=now))
    return Principal(row.id, row.name, row.role, row.owner)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


async def list_keys(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
    return [{"id": r.id, "name": r.name, "role": r.role, "owner": r.owner,
             "created": _iso(r.created_at), "last_used": _iso(r.last_used_at),
             "revoked": _iso(r.revoked_at)} for r in rows]


async def revoke_key(engine: AsyncEngine, key_id: str) -> None:
    async with engine.begin() as conn:
        done = await conn.execute(update(api_keys).where(
            api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=utcnow()))
    if done.rowcount == 0:
        raise ApiKeyError(f"no active key {key_id!r}: see `cocharge apikey list`")
