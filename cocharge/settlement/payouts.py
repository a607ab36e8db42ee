"""Payouts: hosts, properties and operators get their money (`cocharge payout ...`).

A payout run (`payout run --date D`) takes every host:*, property:* and operator:* balance
of at least the minimum (`payout.minimum_cny` in the rule table) whose owner has payment
details (`payout payee`), books it on the ledger to `payable:<account>` and writes the
payment file for the bank or payment provider. The bank pays; `payout confirm FILE|REF`
then books the money as gone (`payable:<account>` -> `external:payouts`); a payment the
bank refused is returned with `payout fail REF` (`payable:<account>` -> the account). A
run, a confirmation and a failure are each idempotent: once per date, once per reference.

Ledger ids: `payout:<ref>:book`, `payout:<ref>:paid`, `payout:<ref>:return`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.settlement import ledger, loyalty
from cocharge.settlement.ledger import Transfer
from cocharge.settlement.money import fmt
from cocharge.store.db import utcnow
from cocharge.store.schema import ledger_balances, payees, payouts
from cocharge.store.sql import upsert

# Who is paid out: earners, and members withdrawing their wallet (refund:<tag>, funds.py).
PAYEE_KINDS = ("host", "property", "operator", "refund")
METHODS = ("bank", "alipay", "wechat")
# The payment file's columns: what a bank's or a payment provider's batch transfer needs.
FILE_COLUMNS = ["reference", "date", "payee_name", "method", "bank", "account_number",
                "amount", "currency", "ledger_account", "memo"]
_REF = re.compile(r"^PO-\d{8}-\d{3,}$")


class PayoutError(ValueError):
    """A payout request that cannot apply; nothing was written."""


def check_account(account: str) -> str:
    kind, sep, name = account.partition(":")
    if not sep or kind not in PAYEE_KINDS or not name:
        raise PayoutError(f"account {account!r}: write it as host:NAME, property:NAME, "
                          "operator:NAME or refund:TAG (see `cocharge ledger balances`)")
    return account


async def set_payee(engine: AsyncEngine, account: str, name: str, method: str, number: str,
                    bank: str | None = None) -> None:
    check_account(account)
    if method not in METHODS:
        raise PayoutError(f"--method {method!r}: one of {', '.join(METHODS)}")
    if not name.strip() or len(name) > 200:
        raise PayoutError("--name: the account holder's name as the bank knows it (1 to 200 characters)")
    if not re.fullmatch(r"[A-Za-z0-9@._+\- ]{4,64}", number):
        raise PayoutError(f"--number {number!r}: the bank account or wallet id (4 to 64 letters, "
                          "digits, @ . _ + -)")
    if method == "bank" and not bank:
        raise PayoutError("a bank transfer needs --bank (the bank's name or code)")
    async with engine.begin() as conn:
        stmt = upsert(conn, payees, ["account"], ["name", "method", "number", "bank", "updated_at"])
        await conn.execute(stmt.values(account=account, name=name.strip(), method=method,
                                       number=number.replace(" ", ""), bank=bank,
                                       updated_at=utcnow()))


async def list_payees(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(payees).order_by(payees.c.account))).all()
    return [{"account": r.account, "name": r.name, "method": r.method, "bank": r.bank or "",
             # Shown masked: the full number is only in the payment file.
             "number": "…" + r.number[-4:]} for r in rows]


@dataclass
class PayoutRun:
    day: date
    new: bool
    lines: list[dict[str, Any]]
    below_minimum: list[tuple[str, int]] = field(default_factory=list)
    no_payee: list[tuple[str, int]] = field(default_factory=list)
    minimum_fen: int = 0

    @property
    def total_fen(self) -> int:
        return sum(int(line["amount_fen"]) for line in self.lines)


def _line(r: Any) -> dict[str, Any]:
    """A payouts row (a Row or the dict it was inserted from) as shown and written."""
    def get(key: str) -> Any:
        return r.get(key) if isinstance(r, dict) else getattr(r, key)

    settled = get("settled_at")
    return {"ref": get("ref"), "date": get("run_date").isoformat(), "account": get("account"),
            "amount_fen": int(get("amount_fen")), "payee_name": get("payee_name"),
            "method": get("method"), "bank": get("bank") or "", "number": get("number"),
            "status": get("status"),
            "settled_at": settled.isoformat(timespec="seconds") + "Z" if settled else None,
            "note": get("note")}


async def run(engine: AsyncEngine, day: date, minimum_fen: int | None = None) -> PayoutRun:
    """Book every balance due (once per `day`): see the module doc."""
    async with engine.begin() as conn:
        await ledger.lock(conn)
        done = (await conn.execute(select(payouts).where(payouts.c.run_date == day)
                                   .order_by(payouts.c.ref))).all()
        if done:
            return PayoutRun(day, False, [_line(r) for r in done])
        rules = await loyalty.current_rules(conn)
        least = rules.payout_minimum_fen if minimum_fen is None else minimum_fen
        rows = (await conn.execute(select(ledger_balances.c.account, ledger_balances.c.balance).where(
            and_(ledger_balances.c.asset == "CNY", or_(*(ledger_balances.c.account.like(f"{k}:%")
                                                          for k in PAYEE_KINDS))))
            .order_by(ledger_balances.c.account))).all()
        details = {r.account: r for r in (await conn.execute(select(payees))).all()}
        result = PayoutRun(day, True, [], minimum_fen=least)
        legs: list[Transfer] = []
        now = utcnow()
        for account, value in rows:
            amount = int(value)
            if amount <= 0:
                continue
            if amount < least and not account.startswith("refund:"):  # a refund is never held
                result.below_minimum.append((account, amount))
                continue
            payee = details.get(account)
            if payee is None:
                result.no_payee.append((account, amount))
                continue
            ref = f"PO-{day.strftime('%Y%m%d')}-{len(result.lines) + 1:03d}"
            legs.append(Transfer(f"payout:{ref}:book", account, f"payable:{account}", amount,
                                 "CNY", "payout-booked", ref, f"payout run {day.isoformat()}"))
            row = {"ref": ref, "run_date": day, "account": account, "amount_fen": amount,
                   "payee_name": payee.name, "method": payee.method, "number": payee.number,
                   "bank": payee.bank, "status": "booked", "created_at": now}
            await conn.execute(payouts.insert().values(**row))
            result.lines.append(_line(row))
        if legs:
            await ledger.post(conn, legs, f"payout-run:{day.isoformat()}")
    return result


def payment_file(lines: list[dict[str, Any]], checkpoint: str | None = None) -> str:
    """The CSV a bank or payment provider takes as a batch (docs/payouts.md); `checkpoint`,
    the id of the newest signed ledger checkpoint, goes into each line's memo."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FILE_COLUMNS)
    for line in lines:
        writer.writerow([line["ref"], line["date"], line["payee_name"], line["method"],
                         line["bank"], line["number"], fmt(int(line["amount_fen"])), "CNY",
                         line["account"], f"cocharge payout {line['ref']}"
                         + (f"; ledger checkpoint {checkpoint}" if checkpoint else "")])
    return out.getvalue()


def refs_in_file(text: str) -> list[tuple[str, int]]:
    """(reference, amount in fen) of each line of a payment file; PayoutError if it is not one."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0][:len(FILE_COLUMNS)] != FILE_COLUMNS:
        raise PayoutError("not a cocharge payment file: its first line must be "
                          + ",".join(FILE_COLUMNS))
    found = []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < len(FILE_COLUMNS) or not _REF.match(row[0]):
            raise PayoutError(f"line {n} of the payment file is not a payout line")
        whole, _, cents = row[6].partition(".")
        if not whole.isdigit() or not (cents.isdigit() and len(cents) == 2):
            raise PayoutError(f"line {n}: amount {row[6]!r} is not in CNY with two decimals")
        found.append((row[0], int(whole) * 100 + int(cents)))
    return found


@dataclass(frozen=True)
class Settled:
    ref: str
    new: bool
    status: str
    account: str
    amount_fen: int


async def _settle(engine: AsyncEngine, items: Sequence[tuple[str, int | None]], paid: bool,
                  note: str | None) -> list[Settled]:
    """Book each payout (ref, amount the bank's file says or None) as paid or failed, all in
    one transaction: a line that cannot apply raises and so writes none of them."""
    wanted = "paid" if paid else "failed"
    done = []
    async with engine.begin() as conn:
        await ledger.lock(conn)
        for ref, amount_fen in items:
            row = (await conn.execute(select(payouts).where(payouts.c.ref == ref))).first()
            if row is None:
                raise PayoutError(f"no payout {ref!r}: see `cocharge payout list`")
            if amount_fen is not None and amount_fen != int(row.amount_fen):
                raise PayoutError(f"{ref}: the file says {fmt(amount_fen)} CNY but the payout was "
                                  f"{fmt(int(row.amount_fen))} CNY: was the file edited?")
            if row.status == wanted:
                done.append(Settled(ref, False, row.status, row.account, int(row.amount_fen)))
                continue
            if row.status != "booked":
                raise PayoutError(f"{ref} is {row.status} already; "
                                  + ("a paid payout cannot fail: book a correction"
                                     if row.status == "paid" else "pay it in a new run"))
            if paid:
                leg = Transfer(f"payout:{ref}:paid", f"payable:{row.account}", "external:payouts",
                               int(row.amount_fen), "CNY", "payout-paid", ref, note or "paid")
            else:
                leg = Transfer(f"payout:{ref}:return", f"payable:{row.account}", row.account,
                               int(row.amount_fen), "CNY", "payout-returned", ref, note or "failed")
            await ledger.post(conn, [leg], f"payout:{ref}:{wanted}")
            await conn.execute(update(payouts).where(payouts.c.ref == ref).values(
                status=wanted, settled_at=utcnow(), note=(note or None) and note[:200]))
            done.append(Settled(ref, True, wanted, row.account, int(row.amount_fen)))
    return done


async def confirm(engine: AsyncEngine, ref: str, amount_fen: int | None = None,
                  note: str | None = None) -> Settled:
    return (await confirm_all(engine, [(ref, amount_fen)], note))[0]


async def confirm_all(engine: AsyncEngine, items: Sequence[tuple[str, int | None]],
                      note: str | None = None) -> list[Settled]:
    """The bank paid these (a payment file's lines): all of them, or none if one is wrong."""
    return await _settle(engine, items, True, note)


async def fail(engine: AsyncEngine, ref: str, reason: str | None = None) -> Settled:
    return (await _settle(engine, [(ref, None)], False, reason))[0]


async def list_payouts(engine: AsyncEngine, status: str | None = None,
                       account: str | None = None) -> list[dict[str, Any]]:
    query = select(payouts).order_by(payouts.c.run_date, payouts.c.ref)
    if status:
        query = query.where(payouts.c.status == status)
    if account:
        query = query.where(payouts.c.account == account)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [_line(r) for r in rows]
