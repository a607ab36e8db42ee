"""Passkeys: members sign in with the phone's screen lock instead of a password (WebAuthn,
issue 33 item 3). The `webauthn` library checks what the browser signed; this module keeps
the credentials and the challenges.

- A member adds a passkey when accepting an invitation (instead of a phone and password) or
  later from its own page; a passkey is a resident key ("discoverable"): signing in needs no
  phone number, the phone offers the member's passkey for this site.
- Each ceremony starts with a challenge (32 random bytes) the console hands out and keeps for
  two minutes; the browser's answer names it in its client data, so the answer is matched to
  its challenge, which is then used up (a replayed answer finds none).
- The relying party is the console's own site: its host name (the `console_url` setting, or
  the host the browser asked for) and its origin. Browsers refuse passkeys on a bare IP
  address: the console is reached by name (localhost on a workstation).
- Signing in gives the browser a member API key of its own, as the phone login does.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import webauthn
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from cocharge.api.keys import create_key
from cocharge.api.logins import LoginError, _digest, invitation_for
from cocharge.store.db import utcnow
from cocharge.store.schema import invitations, members, passkey_challenges, passkeys

CHALLENGE_TTL = timedelta(minutes=2)
RP_NAME = "cocharge"


@dataclass(frozen=True)
class Site:
    """The relying party: the console's host name and origin as the browser sees them."""

    rp_id: str
    origin: str

    @classmethod
    def of(cls, console_url: str | None, scheme: str, host: str) -> Site:
        """From the configured console URL, else from the request's scheme and Host."""
        origin = (console_url.rstrip("/") if console_url else f"{scheme}://{host}")
        parts = urlsplit(origin)
        name = parts.hostname or ""
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(name)
            raise LoginError(f"passkeys need the console reached by name (localhost, or the "
                             f"site's domain), not by the address {name}")
        return cls(rp_id=name, origin=f"{parts.scheme}://{parts.netloc}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def _keep_challenge(engine: AsyncEngine, challenge: bytes, purpose: str,
                          tag: str | None = None, invitation: str | None = None) -> None:
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(delete(passkey_challenges).where(
            passkey_challenges.c.expires_at < now))
        await conn.execute(insert(passkey_challenges).values(
            challenge=_b64(challenge), purpose=purpose, tag=tag, invitation=invitation,
            expires_at=now + CHALLENGE_TTL))


async def _take_challenge(engine: AsyncEngine, credential: dict[str, Any],
                          purpose: str) -> tuple[bytes, Any]:
    """The challenge the browser's answer was made for, used up (LoginError if none)."""
    try:
        client = json.loads(_unb64(credential["response"]["clientDataJSON"]))
        challenge = str(client["challenge"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LoginError("the browser's passkey answer is not readable: try again") from exc
    async with engine.begin() as conn:
        row = (await conn.execute(select(passkey_challenges).where(
            passkey_challenges.c.challenge == challenge,
            passkey_challenges.c.purpose == purpose))).first()
        if row is None or row.expires_at <= utcnow():
            raise LoginError("this passkey request has expired: try again")
        await conn.execute(delete(passkey_challenges).where(
            passkey_challenges.c.challenge == challenge))
    return _unb64(challenge), row


async def registration_options(engine: AsyncEngine, site: Site, tag: str | None = None,
                               token: str | None = None) -> dict[str, Any]:
    """What the browser needs to make a passkey for the member `tag` (signed in), or for the
    member an invitation `token` is for."""
    invitation = None
    if token is not None:
        tag = await invitation_for(engine, token)
        invitation = _digest(token)
    if tag is None:
        raise LoginError("sign in first, or open your invitation link")
    async with engine.connect() as conn:
        name = await conn.scalar(select(members.c.name).where(members.c.tag == tag))
        known = (await conn.execute(select(passkeys.c.credential_id)
                                    .where(passkeys.c.tag == tag))).scalars().all()
    if name is None:
        raise LoginError(f"no member with tag {tag!r}")
    challenge = secrets.token_bytes(32)
    options = webauthn.generate_registration_options(
        rp_id=site.rp_id, rp_name=RP_NAME, user_id=tag.encode(), user_name=tag,
        user_display_name=str(name), challenge=challenge,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.PREFERRED),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=_unb64(c)) for c in known])
    await _keep_challenge(engine, challenge, "register", tag, invitation)
    result: dict[str, Any] = json.loads(webauthn.options_to_json(options))
    return result


async def register(engine: AsyncEngine, site: Site, credential: dict[str, Any]) -> str:
    """Keep the passkey the browser made; an invitation it was made for is accepted. Returns
    a member API key for the browser (LoginError: nothing is kept)."""
    challenge, row = await _take_challenge(engine, credential, "register")
    try:
        verified = webauthn.verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=site.rp_id,
            expected_origin=site.origin)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise LoginError(f"the passkey could not be checked: {exc}") from exc
    tag = str(row.tag)
    async with engine.begin() as conn:
        if row.invitation is not None:
            done = await conn.execute(update(invitations).where(
                invitations.c.token_hash == row.invitation, invitations.c.used_at.is_(None))
                .values(used_at=utcnow()))
            if done.rowcount != 1:
                raise LoginError("this invitation was used already: sign in instead")
        credential_id = _b64(verified.credential_id)
        if await conn.scalar(select(passkeys.c.tag).where(
                passkeys.c.credential_id == credential_id)) is not None:
            raise LoginError("this passkey is kept already: sign in with it")
        await conn.execute(insert(passkeys).values(
            credential_id=credential_id, tag=tag, public_key=verified.credential_public_key,
            sign_count=verified.sign_count, created_at=utcnow(), last_used_at=utcnow()))
    return await create_key(engine, f"passkey {credential_id[:12]}", "member", tag)


async def login_options(engine: AsyncEngine, site: Site) -> dict[str, Any]:
    """What the browser needs to sign in with any passkey of this site (no name asked)."""
    challenge = secrets.token_bytes(32)
    options = webauthn.generate_authentication_options(
        rp_id=site.rp_id, challenge=challenge,
        user_verification=UserVerificationRequirement.PREFERRED)
    await _keep_challenge(engine, challenge, "login")
    result: dict[str, Any] = json.loads(webauthn.options_to_json(options))
    return result


async def sign_in(engine: AsyncEngine, site: Site, credential: dict[str, Any]) -> str:
    """A member API key for a passkey's valid answer (LoginError otherwise)."""
    challenge, _ = await _take_challenge(engine, credential, "login")
    credential_id = str(credential.get("rawId") or credential.get("id") or "")
    async with engine.connect() as conn:
        row = (await conn.execute(select(passkeys).where(
            passkeys.c.credential_id == credential_id))).first()
    if row is None:
        raise LoginError("this passkey is not known here (removed, or made for another site)")
    try:
        verified = webauthn.verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=site.rp_id,
            expected_origin=site.origin, credential_public_key=bytes(row.public_key),
            credential_current_sign_count=int(row.sign_count))
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise LoginError(f"the passkey's answer is not valid: {exc}") from exc
    async with engine.begin() as conn:
        await conn.execute(update(passkeys).where(passkeys.c.credential_id == credential_id)
                           .values(sign_count=verified.new_sign_count, last_used_at=utcnow()))
    return await create_key(engine, f"passkey {credential_id[:12]}", "member", str(row.tag))


async def count(engine: AsyncEngine, tag: str) -> int:
    async with engine.connect() as conn:
        return len((await conn.execute(select(passkeys.c.credential_id)
                                       .where(passkeys.c.tag == tag))).all())
