"""Members sign in without an operator pasting keys (issue 33, item 3): an invitation link
from the operator, a host or a property makes a member's login (a phone number and a
password, kept as scrypt); the console then signs the member in with them.

- An invitation is a one-time token (32 random bytes, kept as its SHA-256) for one member,
  valid for a while (7 days unless said); used once, or refused.
- A login is a phone number (digits, an optional leading +, 5 to 20) and a password of 8
  characters or more, checked with scrypt off the event loop; the console throttles wrong
  ones per address, as for keys.
- Signing in gives the browser a member API key of its own (the cookie holds it, as when a
  key is pasted): what the member may do is what a member key may do.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.api.keys import create_key
from cocharge.stations.passwords import hash_password, verify_password
from cocharge.store.db import utcnow
from cocharge.store.schema import invitations, logins, members

_DUMMY: str | None = None  # a hash to check an unknown phone against (no timing tell)


class LoginError(Exception):
    """What was wrong, said to the person (one line)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_phone(phone: str) -> str:
    cleaned = phone.strip().replace(" ", "").replace("-", "")
    digits = cleaned[1:] if cleaned.startswith("+") else cleaned
    if not digits.isdigit() or not 5 <= len(digits) <= 20:
        raise LoginError("a phone number is 5 to 20 digits (a + in front allowed)")
    return cleaned


async def invite(engine: AsyncEngine, tag: str, created_by: str,
                 valid: timedelta = timedelta(days=7)) -> tuple[str, str]:
    """A one-time invitation for the member `tag`: (its token, when it expires, ISO)."""
    async with engine.begin() as conn:
        if await conn.scalar(select(members.c.tag).where(members.c.tag == tag)) is None:
            raise LoginError(f"no member with tag {tag!r}: add the member first")
        token = secrets.token_urlsafe(32)
        expires = utcnow() + valid
        await conn.execute(insert(invitations).values(
            token_hash=_digest(token), tag=tag, created_by=created_by[:200],
            created_at=utcnow(), expires_at=expires))
    return token, expires.isoformat(timespec="seconds") + "Z"


async def invitation_for(engine: AsyncEngine, token: str) -> str:
    """The member an unused, unexpired invitation is for (LoginError otherwise)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(invitations).where(
            invitations.c.token_hash == _digest(token)))).first()
    if row is None:
        raise LoginError("this invitation link is not valid: ask for a new one")
    if row.used_at is not None:
        raise LoginError("this invitation was used already: sign in with your phone number")
    if row.expires_at <= utcnow():
        raise LoginError("this invitation has expired: ask for a new one")
    return str(row.tag)


async def join(engine: AsyncEngine, token: str, phone: str, password: str) -> str:
    """Accept an invitation: the member's login is made; returns a member API key for the
    browser (LoginError: nothing is written)."""
    tag = await invitation_for(engine, token)
    phone = check_phone(phone)
    if len(password) < 8:
        raise LoginError("a password is 8 characters or more")
    hashed = await asyncio.to_thread(hash_password, password)
    async with engine.begin() as conn:
        if await conn.scalar(select(logins.c.phone).where(logins.c.phone == phone)) is not None:
            raise LoginError("this phone number has a login already: sign in with it")
        done = await conn.execute(update(invitations).where(
            invitations.c.token_hash == _digest(token), invitations.c.used_at.is_(None))
            .values(used_at=utcnow()))
        if done.rowcount != 1:
            raise LoginError("this invitation was used already: sign in with your phone number")
        await conn.execute(insert(logins).values(phone=phone, tag=tag, password_hash=hashed,
                                                 created_at=utcnow(), last_login_at=utcnow()))
    return await create_key(engine, f"phone {phone}", "member", tag)


async def sign_in(engine: AsyncEngine, phone: str, password: str) -> str | None:
    """A member API key for a right phone and password; None for a wrong one."""
    try:
        phone = check_phone(phone)
    except LoginError:
        return None
    async with engine.connect() as conn:
        row = (await conn.execute(select(logins).where(logins.c.phone == phone))).first()
    global _DUMMY
    if row is None and _DUMMY is None:
        _DUMMY = await asyncio.to_thread(hash_password, secrets.token_hex(16))
    stored = row.password_hash if row is not None else _DUMMY
    assert stored is not None
    ok = await asyncio.to_thread(verify_password, password, stored)  # the same time either way
    if row is None or not ok:
        return None
    async with engine.begin() as conn:
        await conn.execute(update(logins).where(logins.c.phone == phone)
                           .values(last_login_at=utcnow()))
    return await create_key(engine, f"phone {phone}", "member", str(row.tag))
