"""The ledger: the only writer of balances.

Append-only, double-entry: a transfer moves `amount` (> 0, integer: fen for CNY) of
one asset from the `debit` account to the `credit` account; an account's balance is
what it was credited minus what it was debited, so the balances of each asset sum to
zero. Transfers are idempotent by `id`: posting the same id again with the same fields
changes nothing; with different fields it is an error. A batch is one transaction.
Accounts marked no-overdraft (member wallets) never go below zero: such a batch is
refused whole. Corrections are new reversing transfers, never edits.

Tamper evidence: every transfer stores the SHA-256 of its canonical fields and of the
previous transfer's hash; `verify` recomputes the chain, the per-asset sums and the
balances, and names the first row that does not match.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.settlement.money import fmt
from cocharge.store import audit
from cocharge.store.db import GENESIS_HASH, utcnow
from cocharge.store.schema import ledger_accounts, ledger_balances, ledger_head, ledger_transfers
from cocharge.store.sql import among, insert_ignore

# Accounts whose balance may never go below zero, by name prefix.
NO_OVERDRAFT_PREFIXES = ("wallet:", "held:", "quota:", "credit:", "coins:", "greenpt:", "greenpt-locked:",
                         "poolpt:", "pool:reserve")
_CHUNK = 500  # ids per IN (...) lookup


class LedgerError(ValueError):
    """A batch that cannot be posted; nothing of it was written."""


class LedgerConflict(LedgerError):
    """A transfer id already used for a different transfer."""


class Overdraft(LedgerError):
    """A no-overdraft account would go below zero."""


@dataclass(frozen=True)
class Transfer:
    id: str
    debit: str
    credit: str
    amount: int
    asset: str = "CNY"
    kind: str = "transfer"
    ref: str | None = None
    memo: str = ""

    def same_as(self, row: Any) -> bool:
        return (row.debit, row.credit, row.amount, row.asset, row.kind, row.ref) == (
            self.debit, self.credit, self.amount, self.asset, self.kind, self.ref)


@dataclass(frozen=True)
class Posted:
    applied: int
    skipped: int  # already posted (idempotent repeats)


def kind_of(account: str) -> str:
    return account.split(":", 1)[0]


def hashed_fields(r: Any) -> dict[str, Any]:
    """The fields of a stored transfer row that its hash covers."""
    return {"id": r.id, "batch": r.batch, "asset": r.asset, "debit": r.debit, "credit": r.credit,
            "amount": int(r.amount), "kind": r.kind, "ref": r.ref, "memo": r.memo,
            "created_at": r.created_at}


def transfer_hash(prev_hash: str, seq: int, t: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the transfer's canonical fields."""
    canonical = "|".join([
        prev_hash, str(seq), t["id"], t["batch"], t["asset"], t["debit"], t["credit"],
        str(t["amount"]), t["kind"], t["ref"] or "", json.dumps(t["memo"]),
        t["created_at"].isoformat(timespec="microseconds"),
    ])
    return hashlib.sha256(canonical.encode()).hexdigest()


async def lock(conn: AsyncConnection, now: datetime | None = None) -> None:
    """Take the ledger writers' lock for the caller's transaction (a write to the head row):
    balances read after it cannot change under the caller until it commits."""
    await conn.execute(update(ledger_head).where(ledger_head.c.id == 1)
                       .values(updated_at=now or utcnow()))


async def post(conn: AsyncConnection, transfers: Sequence[Transfer], batch: str,
               at: datetime | None = None) -> Posted:
    """Post `transfers` as one batch inside the caller's transaction (see the module doc)."""
    for t in transfers:
        if t.amount <= 0 or not isinstance(t.amount, int):
            raise LedgerError(f"transfer {t.id}: amount must be a positive integer, not {t.amount!r}")
        if t.debit == t.credit:
            raise LedgerError(f"transfer {t.id}: debit and credit are the same account")
    if len({t.id for t in transfers}) != len(transfers):
        raise LedgerError(f"batch {batch}: a transfer id appears twice")
    now = at or utcnow()
    await lock(conn, now)
    existing: dict[str, Any] = {}
    ids = [t.id for t in transfers]
    for i in range(0, len(ids), _CHUNK):
        rows = (await conn.execute(select(ledger_transfers).where(
            among(conn, ledger_transfers.c.id, ids[i:i + _CHUNK])))).all()
        existing.update({r.id: r for r in rows})
    fresh = []
    for t in transfers:
        row = existing.get(t.id)
        if row is None:
            fresh.append(t)
        elif not t.same_as(row):
            raise LedgerConflict(f"transfer id {t.id} was already used for a different transfer "
                                 f"({row.debit} -> {row.credit} {row.amount} {row.asset})")
    if not fresh:
        return Posted(0, len(transfers))
    deltas: dict[tuple[str, str], int] = defaultdict(int)
    for t in fresh:
        deltas[(t.debit, t.asset)] -= t.amount
        deltas[(t.credit, t.asset)] += t.amount
    accounts = sorted({a for a, _ in deltas})
    await conn.execute(insert_ignore(conn, ledger_accounts), [
        {"account": a, "kind": kind_of(a), "no_overdraft": a.startswith(NO_OVERDRAFT_PREFIXES),
         "created_at": now} for a in accounts])
    current: dict[tuple[str, str], int] = {}
    guarded: set[str] = set()
    for i in range(0, len(accounts), _CHUNK):
        part = accounts[i:i + _CHUNK]
        for r in (await conn.execute(select(ledger_balances).where(
                among(conn, ledger_balances.c.account, part)))).all():
            current[(r.account, r.asset)] = int(r.balance)
        guarded.update((await conn.execute(select(ledger_accounts.c.account).where(and_(
            among(conn, ledger_accounts.c.account, part),
            ledger_accounts.c.no_overdraft.is_(True))))).scalars())
    for key, delta in deltas.items():
        after = current.get(key, 0) + delta
        if key[0] in guarded and after < 0:
            shown = f"{fmt(after)} CNY" if key[1] == "CNY" else f"{after} {key[1]}"
            raise Overdraft(f"{key[0]} would go to {shown}: it may not be overdrawn")
    head = (await conn.execute(select(ledger_head.c.seq, ledger_head.c.hash)
                               .where(ledger_head.c.id == 1))).one()
    seq, prev = int(head.seq), str(head.hash)
    new_rows: list[dict[str, Any]] = []
    for t in fresh:
        seq += 1
        row = {"seq": seq, "id": t.id, "batch": batch, "asset": t.asset, "debit": t.debit,
               "credit": t.credit, "amount": t.amount, "kind": t.kind, "ref": t.ref,
               "memo": t.memo, "created_at": now, "prev_hash": prev}
        row["hash"] = prev = transfer_hash(prev, seq, row)
        new_rows.append(row)
    await conn.execute(insert(ledger_transfers), new_rows)
    changed = [{"a": a, "s": s, "b": current[(a, s)] + d} for (a, s), d in deltas.items()
               if (a, s) in current]
    if changed:
        await conn.execute(update(ledger_balances).where(and_(
            ledger_balances.c.account == bindparam("a"), ledger_balances.c.asset == bindparam("s")))
            .values(balance=bindparam("b")), changed)
    new = [{"account": a, "asset": s, "balance": d} for (a, s), d in deltas.items()
           if (a, s) not in current]
    if new:
        await conn.execute(insert(ledger_balances), new)
    await conn.execute(update(ledger_head).where(ledger_head.c.id == 1).values(seq=seq, hash=prev))
    await audit.posted(conn, [t.id for t in fresh])  # who moved it, when someone is acting
    return Posted(len(fresh), len(transfers) - len(fresh))


async def correct(engine: AsyncEngine, transfer_id: str, amount: int | None, reason: str,
                  actor: str, ref: str) -> Posted:
    """Correct a posted transfer without editing it: a new transfer that reverses it and, when
    `amount` is given, a new one that books the right amount between the same accounts; both
    carry the reason and who did it, once per `ref`."""
    if not reason.strip():
        raise LedgerError("give --reason: a correction says why")
    if not ref.strip() or len(ref) > 40:
        raise LedgerError("give --ref: 1 to 40 characters, the correction's own reference")
    async with engine.begin() as conn:
        row = (await conn.execute(select(ledger_transfers).where(
            ledger_transfers.c.id == transfer_id))).first()
        if row is None:
            raise LedgerError(f"no transfer {transfer_id!r}: see `cocharge ledger statement`")
        if amount is not None and amount <= 0:
            raise LedgerError("--amount must be more than 0 (to undo it, give no --amount)")
        memo = f"correction of {transfer_id} by {actor}: {reason}"[:500]
        legs = [Transfer(f"correct:{ref}:reverse", row.credit, row.debit, int(row.amount),
                         row.asset, "correction", transfer_id, memo)]
        if amount is not None:
            legs.append(Transfer(f"correct:{ref}:book", row.debit, row.credit, amount, row.asset,
                                 "correction", transfer_id, memo))
        return await post(conn, legs, f"correct:{ref}")


async def post_batch(engine: AsyncEngine, transfers: Sequence[Transfer], batch: str) -> Posted:
    async with engine.begin() as conn:
        return await post(conn, transfers, batch)


async def posted(conn: AsyncConnection, transfer_id: str) -> bool:
    """Has a transfer with this idempotency id been posted?"""
    found = await conn.scalar(select(ledger_transfers.c.seq).where(ledger_transfers.c.id == transfer_id))
    return found is not None


async def balance(conn: AsyncConnection, account: str, asset: str = "CNY") -> int:
    value = await conn.scalar(select(ledger_balances.c.balance).where(and_(
        ledger_balances.c.account == account, ledger_balances.c.asset == asset)))
    return int(value or 0)


async def balances(engine: AsyncEngine, asset: str | None = None,
                   accounts: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Every balance (of `asset`; of these `accounts` only), by asset and account."""
    query = select(ledger_balances).order_by(ledger_balances.c.asset, ledger_balances.c.account)
    if asset:
        query = query.where(ledger_balances.c.asset == asset)
    if accounts is not None:  # (a member's own: not every member's read and dropped)
        query = query.where(among(engine, ledger_balances.c.account, accounts))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [{"account": r.account, "asset": r.asset, "balance": int(r.balance)} for r in rows]


async def known(engine: AsyncEngine, account: str) -> bool:
    """Whether the ledger has ever moved money to or from `account`."""
    async with engine.connect() as conn:
        return await conn.scalar(select(ledger_accounts.c.account).where(
            ledger_accounts.c.account == account)) is not None


async def statement(engine: AsyncEngine, account: str, since: datetime | None = None,
                    until: datetime | None = None, asset: str | None = None) -> list[dict[str, Any]]:
    """The account's transfers in order, with the running balance after each."""
    query = (select(ledger_transfers).where(or_(ledger_transfers.c.debit == account,
                                                ledger_transfers.c.credit == account))
             .order_by(ledger_transfers.c.seq))
    if asset:
        query = query.where(ledger_transfers.c.asset == asset)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    running: dict[str, int] = defaultdict(int)
    lines = []
    for r in rows:
        change = int(r.amount) if r.credit == account else -int(r.amount)
        running[r.asset] += change
        if (since and r.created_at < since) or (until and r.created_at >= until):
            continue
        lines.append({"seq": r.seq, "at": r.created_at.isoformat(timespec="seconds") + "Z",
                      "id": r.id, "kind": r.kind, "asset": r.asset, "change": change,
                      "balance": running[r.asset],
                      "other": r.debit if r.credit == account else r.credit, "ref": r.ref,
                      "memo": r.memo})
    return lines


async def transfers(engine: AsyncEngine, chunk: int = 5000) -> AsyncIterator[Any]:
    """Every transfer in order, read in chunks."""
    last = 0
    while True:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(ledger_transfers).where(ledger_transfers.c.seq > last)
                                       .order_by(ledger_transfers.c.seq).limit(chunk))).all()
        if not rows:
            return
        for row in rows:
            yield row
        last = int(rows[-1].seq)


@dataclass
class Verdict:
    ok: bool
    transfers: int
    problems: list[str] = field(default_factory=list)
    sums: dict[str, int] = field(default_factory=dict)


async def verify(engine: AsyncEngine) -> Verdict:
    """Recompute the hash chain, the per-asset sums and every balance."""
    prev, expected_seq, count = GENESIS_HASH, 1, 0
    totals: dict[tuple[str, str], int] = defaultdict(int)
    problems: list[str] = []
    async for r in transfers(engine):
        count += 1
        if not problems:
            if int(r.seq) != expected_seq:
                problems.append(f"transfer seq {expected_seq} is missing (next is {r.seq}, id {r.id})")
            elif r.prev_hash != prev:
                problems.append(f"transfer {r.seq} ({r.id}): its previous-hash does not match "
                                f"transfer {int(r.seq) - 1}: a row was removed or replaced")
            elif transfer_hash(prev, int(r.seq), hashed_fields(r)) != r.hash:
                problems.append(f"transfer {r.seq} ({r.id}): its fields do not match its hash: "
                                "the row was edited")
            elif int(r.amount) <= 0:
                problems.append(f"transfer {r.seq} ({r.id}): amount {r.amount} is not positive")
            prev, expected_seq = r.hash, int(r.seq) + 1
        totals[(r.debit, r.asset)] -= int(r.amount)
        totals[(r.credit, r.asset)] += int(r.amount)
    sums: dict[str, int] = defaultdict(int)
    for (_, asset), value in totals.items():
        sums[asset] += value
    for asset, value in sums.items():
        if value != 0:
            problems.append(f"asset {asset}: balances sum to {value}, not 0")
    async with engine.connect() as conn:
        head = (await conn.execute(select(ledger_head).where(ledger_head.c.id == 1))).one()
        stored = {(r.account, r.asset): int(r.balance)
                  for r in (await conn.execute(select(ledger_balances))).all()}
    if int(head.seq) != count or (count and head.hash != prev):
        problems.append(f"the ledger head says {head.seq} transfers, the table holds {count}")
    for key in sorted(set(stored) | set(totals)):
        if stored.get(key, 0) != totals.get(key, 0):
            problems.append(f"balance of {key[0]} ({key[1]}) is {stored.get(key, 0)}, "
                            f"its transfers say {totals.get(key, 0)}")
            break
    return Verdict(not problems, count, problems, dict(sums))


async def export_csv(engine: AsyncEngine) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["seq", "id", "batch", "created_at", "asset", "debit", "credit", "amount",
                     "kind", "ref", "memo", "prev_hash", "hash"])
    async for r in transfers(engine):
        writer.writerow([r.seq, r.id, r.batch, r.created_at.isoformat(timespec="microseconds"),
                         r.asset, r.debit, r.credit, r.amount, r.kind, r.ref or "", r.memo,
                         r.prev_hash, r.hash])
    return out.getvalue()
