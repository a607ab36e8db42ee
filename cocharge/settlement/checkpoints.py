"""Signed checkpoints of the ledger: a rewrite that recomputes every hash is still caught.

The ledger's hash chain (ledger.py) proves that rows were not changed only to someone who
does not control the database: whoever can edit a transfer can recompute every hash after
it and the head. A checkpoint closes that gap the way Certificate Transparency's signed tree
heads do (RFC 9162): the platform signs (transfer count, head hash, totals per account kind)
with an Ed25519 key kept outside the database (a file, like the CA's key), and hands the
signed checkpoint to witnesses: it is appended to a checkpoints file, printed on payout files
and statements, and may be published to property backends. Anyone holding an old checkpoint
runs `cocharge ledger verify --checkpoints FILE`: the chain recomputed from the database must
reach the signed head at the signed count, and an edited transfer makes it miss.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.settlement import ledger
from cocharge.store.db import GENESIS_HASH, utcnow
from cocharge.store.schema import ledger_checkpoints, ledger_head

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A key or a checkpoint that cannot be used; the message says why."""


def load_or_create_key(path: str) -> Ed25519PrivateKey:
    """The platform's checkpoint key (PEM, PKCS#8), made on first use with mode 0600."""
    file = Path(path)
    if file.exists():
        try:
            key = serialization.load_pem_private_key(file.read_bytes(), password=None)
        except ValueError as exc:
            raise CheckpointError(f"{path}: not a PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise CheckpointError(f"{path}: not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return key


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _signed_bytes(body: dict[str, Any]) -> bytes:
    fields = {k: body[k] for k in ("count", "head", "totals", "at")}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ChainState:
    count: int
    head: str
    totals: dict[str, int]   # "kind/asset" -> sum of balances of that account kind


async def state_at(engine: AsyncEngine, count: int | None = None) -> ChainState:
    """The chain recomputed from the rows (never from the stored hashes) up to `count`
    transfers (all when None), with the per-kind totals of those transfers."""
    prev, seq = GENESIS_HASH, 0
    totals: dict[str, int] = defaultdict(int)
    async for row in ledger.transfers(engine):
        if count is not None and seq >= count:
            break
        seq += 1
        prev = ledger.transfer_hash(prev, int(row.seq), ledger.hashed_fields(row))
        totals[f"{ledger.kind_of(row.debit)}/{row.asset}"] -= int(row.amount)
        totals[f"{ledger.kind_of(row.credit)}/{row.asset}"] += int(row.amount)
    return ChainState(seq, prev, {k: v for k, v in sorted(totals.items()) if v})


async def make(engine: AsyncEngine, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A signed checkpoint of the ledger as it is now, kept in the database too."""
    state = await state_at(engine)
    now = utcnow()
    body: dict[str, Any] = {"count": state.count, "head": state.head, "totals": state.totals,
                            "at": now.isoformat(timespec="seconds") + "Z"}
    body["key"] = public_key_text(key)
    body["signature"] = base64.b64encode(key.sign(_signed_bytes(body))).decode()
    body["id"] = hashlib.sha256(body["signature"].encode()).hexdigest()[:16]
    async with engine.begin() as conn:
        await conn.execute(insert(ledger_checkpoints).values(
            id=body["id"], count=state.count, head=state.head, at=now,
            body=json.dumps(body, sort_keys=True)))
    return body


async def latest(engine: AsyncEngine) -> dict[str, Any] | None:
    """The newest checkpoint the platform made (printed on statements)."""
    async with engine.connect() as conn:
        body = await conn.scalar(select(ledger_checkpoints.c.body)
                                 .order_by(ledger_checkpoints.c.at.desc(),
                                           ledger_checkpoints.c.count.desc()).limit(1))
    return dict(json.loads(body)) if body else None


def line(checkpoint: dict[str, Any]) -> str:
    """One line for a statement: enough to check the ledger against it later."""
    return (f"ledger checkpoint {checkpoint['id']}: {checkpoint['count']} transfers, head "
            f"{checkpoint['head']}, {checkpoint['at']}, signed by {checkpoint['key']}")


class Checkpointer:
    """A node's checkpoints: every `every` transfers and at least every `interval_s` while the
    ledger grows; each is kept in the database, appended to `file` and told to `publish`
    (the MQTT bridge's retained topic for property backends)."""

    def __init__(self, engine: AsyncEngine, key_file: str, file: str, interval_s: float,
                 every: int, publish: Any = None) -> None:
        self.engine, self.file, self.interval_s, self.every = engine, file, interval_s, every
        self.key = load_or_create_key(key_file)
        self.publish = publish
        self._task: asyncio.Task[None] | None = None
        self._last: tuple[int, float] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger checkpoints")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def tick(self) -> dict[str, Any] | None:
        """Make a checkpoint when one is due; it (None: not due)."""
        async with self.engine.connect() as conn:
            count = int(await conn.scalar(select(ledger_head.c.seq).where(ledger_head.c.id == 1))
                        or 0)
        now = time.monotonic()
        if count == 0 or (self._last is not None and (
                count == self._last[0]
                or (count - self._last[0] < self.every and now - self._last[1] < self.interval_s))):
            return None
        made = await make(self.engine, self.key)
        append(self.file, made)
        self._last = (int(made["count"]), now)
        if self.publish is not None:
            self.publish(made)
        log.info("ledger checkpoint %s: %s transfers", made["id"], made["count"])
        return made

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be briefly away: the next tick tries again
                log.exception("ledger checkpoint failed")
            await asyncio.sleep(min(60.0, self.interval_s))


def append(path: str, checkpoint: dict[str, Any]) -> None:
    """Keep a checkpoint in a witness file (one JSON object a line)."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(checkpoint, sort_keys=True) + "\n")


def read(path: str) -> list[dict[str, Any]]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CheckpointError(f"{path}: {exc.strerror or exc}") from None
    found = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            _ = (int(item["count"]), str(item["head"]), dict(item["totals"]), str(item["at"]),
                 str(item["key"]), str(item["signature"]))
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(f"{path} line {n}: not a checkpoint (count, head, totals, at, "
                                  "key, signature)") from None
        found.append(item)
    return found


def signature_ok(checkpoint: dict[str, Any], trusted_key: str | None = None) -> bool:
    """The checkpoint is signed by its key (and that key is `trusted_key`, when given)."""
    if trusted_key is not None and checkpoint["key"] != trusted_key:
        return False
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(checkpoint["key"]))
        public.verify(base64.b64decode(checkpoint["signature"]), _signed_bytes(checkpoint))
    except (InvalidSignature, ValueError):
        return False
    return True


async def verify(engine: AsyncEngine, checkpoints: list[dict[str, Any]],
                 trusted_key: str | None = None) -> list[str]:
    """Problems found against the witnessed checkpoints (none: the ledger is the one they saw)."""
    problems = []
    for item in sorted(checkpoints, key=lambda c: int(c["count"])):
        name = f"checkpoint {item.get('id', '?')} ({item['count']} transfers, {item['at']})"
        if not signature_ok(item, trusted_key):
            problems.append(f"{name}: its signature is not the platform's")
            continue
        state = await state_at(engine, int(item["count"]))
        if state.count < int(item["count"]):
            problems.append(f"{name}: the ledger has only {state.count} transfers: some were "
                            "removed")
        elif state.head != item["head"]:
            problems.append(f"{name}: the ledger's first {item['count']} transfers do not hash "
                            "to the signed head: a transfer was changed or removed since")
        elif state.totals != item["totals"]:
            problems.append(f"{name}: the totals per account kind differ from the signed ones")
    return problems
