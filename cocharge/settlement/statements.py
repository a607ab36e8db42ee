"""Monthly statements for hosts and properties (`cocharge statement ACCOUNT --month M`).

Everything on a statement is read off the ledger and the settlements: each session whose
share reached the account in the month (its gross at the tariff, the discounts, what the
driver paid, the platform's commission, the account's net), the payouts booked and
returned, the balance at the start and at the end of the month, and a tax estimate by the
rule table's `tax` section (an estimate, not advice: docs/payouts.md says what it assumes).
The month is the platform's local month (Asia/Shanghai). Written as CSV here; as a
self-contained page with a chart of the net income per day, in Chinese or English, by
web/statement.py.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, and_, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.settlement import checkpoints, funds, ledger, loyalty
from cocharge.settlement.money import fmt
from cocharge.settlement.payouts import PayoutError, check_account
from cocharge.store.schema import ledger_transfers, sessions, settlements
from cocharge.store.sql import among

TZ = "Asia/Shanghai"
INCOME_KINDS = ("session-split", "idle-split", "share-collected")


def month_bounds(month: str, tz: str = TZ) -> tuple[datetime, datetime]:
    """The month's first moment and the next month's, as naive UTC."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise PayoutError(f"--month {month!r}: write it as YYYY-MM, e.g. 2026-11")
    year, mon = int(month[:4]), int(month[5:])
    nxt = (year + 1, 1) if mon == 12 else (year, mon + 1)

    def utc(y: int, m: int) -> datetime:
        return datetime(y, m, 1, tzinfo=ZoneInfo(tz)).astimezone(UTC).replace(tzinfo=None)

    return utc(year, mon), utc(*nxt)


def _local_day(at: datetime) -> str:
    return at.replace(tzinfo=UTC).astimezone(ZoneInfo(TZ)).strftime("%Y-%m-%d")


async def statement(engine: AsyncEngine, account: str, month: str) -> dict[str, Any]:
    check_account(account)
    start, end = month_bounds(month)
    if not await ledger.known(engine, account) and not await ledger.known(
            engine, funds.owed_account(account)):
        raise PayoutError(f"no account {account!r} in the ledger: see `cocharge ledger balances`")
    async with engine.connect() as conn:
        rules = await loyalty.current_rules(conn)
        rows = (await conn.execute(select(ledger_transfers).where(and_(
            or_(ledger_transfers.c.debit == account, ledger_transfers.c.credit == account),
            ledger_transfers.c.asset == "CNY", ledger_transfers.c.created_at < end))
            .order_by(ledger_transfers.c.seq))).all()
        opening = 0
        income: dict[int, int] = defaultdict(int)
        income_day: dict[int, str] = {}
        payouts_booked, payouts_returned, other = [], [], 0
        for r in rows:
            change = int(r.amount) if r.credit == account else -int(r.amount)
            if r.created_at < start:
                opening += change
                continue
            if r.kind in INCOME_KINDS and r.credit == account and r.ref:
                income[int(r.ref)] += change
                income_day.setdefault(int(r.ref), _local_day(r.created_at))
            elif r.kind == "payout-booked":
                payouts_booked.append({"ref": r.ref, "day": _local_day(r.created_at),
                                       "fen": -change})
            elif r.kind == "payout-returned":
                payouts_returned.append({"ref": r.ref, "day": _local_day(r.created_at),
                                         "fen": change})
            else:
                other += change
        found = (await conn.execute(select(
            settlements.c.session_id, settlements.c.cost_fen, settlements.c.payable_fen,
            settlements.c.discounts, settlements.c.split, settlements.c.idle_fee_fen,
            sessions.c.station_id, sessions.c.started_at, sessions.c.energy_wh)
            .join(sessions, sessions.c.id == settlements.c.session_id)
            .where(among(conn, settlements.c.session_id, list(income) or [-1])))).all()
    lines = []
    for s in sorted(found, key=lambda s: s.session_id):
        split = {a: int(v) for a, v in json.loads(s.split)}
        discounts = sum(int(v) for _, v in json.loads(s.discounts))
        lines.append({
            "session": int(s.session_id), "day": income_day[int(s.session_id)],
            "station": s.station_id, "kwh": round(int(s.energy_wh or 0) / 1000, 3),
            "gross_fen": int(s.cost_fen), "discounts_fen": discounts,
            "paid_fen": int(s.payable_fen), "commission_fen": split.get("platform", 0),
            "net_fen": income[int(s.session_id)]})
    waiting = await _waiting(engine, account)
    checkpoint = await checkpoints.latest(engine)
    net = sum(line["net_fen"] for line in lines)
    booked = sum(p["fen"] for p in payouts_booked)
    returned = sum(p["fen"] for p in payouts_returned)
    closing = opening + net - booked + returned + other
    tax = rules.tax
    year, mon = int(month[:4]), int(month[5:])
    days = [f"{month}-{d:02d}" for d in range(1, calendar.monthrange(year, mon)[1] + 1)]
    per_day = {d: 0 for d in days}
    for line in lines:
        per_day[line["day"]] = per_day.get(line["day"], 0) + line["net_fen"]
    return {
        "account": account, "month": month, "sessions": lines,
        "totals": {"sessions": len(lines), "kwh": round(sum(x["kwh"] for x in lines), 3),
                   "gross_fen": sum(x["gross_fen"] for x in lines),
                   "discounts_fen": sum(x["discounts_fen"] for x in lines),
                   "paid_fen": sum(x["paid_fen"] for x in lines),
                   "commission_fen": sum(x["commission_fen"] for x in lines), "net_fen": net},
        "payouts": payouts_booked, "payouts_returned": payouts_returned,
        "opening_fen": opening, "other_fen": other, "closing_fen": closing,
        "tax": {"estimate_fen": tax.estimate(net) if tax else 0,
                "name": tax.name if tax else "", "source": tax.source if tax else "",
                "note": "an estimate by the operator's tax table, not tax advice"},
        "per_day": per_day,
        # The account's shares of sessions whose drivers have not paid yet: not income until
        # they do (settlement/funds.py); and the newest signed ledger checkpoint to verify by.
        "waiting_for_drivers_fen": waiting,
        "checkpoint": checkpoint,
    }


async def brand_statement(engine: AsyncEngine, brand: str, month: str) -> dict[str, Any]:
    """What a carmaker's members used of the free quota its OEM membership gives, in a month,
    at the list price the platform paid the hosts for it: the invoice to the brand."""
    brand = brand.upper()
    start, end = month_bounds(month)
    account = funds.brand_sponsor(brand)
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(ledger_transfers.c.ref, ledger_transfers.c.amount, ledger_transfers.c.created_at,
                   sessions.c.id_tag, sessions.c.station_id, settlements.c.discounts)
            .join(sessions, sessions.c.id == cast(ledger_transfers.c.ref, BigInteger))
            .join(settlements, settlements.c.session_id == sessions.c.id)
            .where(and_(ledger_transfers.c.debit == account, ledger_transfers.c.created_at >= start,
                        ledger_transfers.c.created_at < end))
            .order_by(ledger_transfers.c.seq))).all()
    lines = []
    for r in rows:
        kwh = sum(float(m.group(1)) for name, _ in json.loads(r.discounts)
                  if (m := re.match(r"free quota ([\d.]+) kWh", name)))
        lines.append({"session": int(r.ref), "day": _local_day(r.created_at), "member": r.id_tag,
                      "station": r.station_id, "quota_kwh": round(kwh, 3), "fen": int(r.amount)})
    return {"brand": brand, "month": month, "account": account, "sessions": lines,
            "quota_kwh": round(sum(x["quota_kwh"] for x in lines), 3),
            "total_fen": sum(x["fen"] for x in lines)}


async def _waiting(engine: AsyncEngine, account: str) -> int:
    async with engine.connect() as conn:
        return max(0, await ledger.balance(conn, f"owed:{account}"))


def to_csv(st: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["statement", st["account"], st["month"]])
    w.writerow(["opening balance", fmt(st["opening_fen"])])
    w.writerow(["session", "day", "station", "kwh", "gross", "discounts", "paid by driver",
                "commission", "net"])
    for x in st["sessions"]:
        w.writerow([x["session"], x["day"], x["station"], f"{x['kwh']:.3f}", fmt(x["gross_fen"]),
                    fmt(x["discounts_fen"]), fmt(x["paid_fen"]), fmt(x["commission_fen"]),
                    fmt(x["net_fen"])])
    t = st["totals"]
    w.writerow(["total", "", f"{t['sessions']} sessions", f"{t['kwh']:.3f}", fmt(t["gross_fen"]),
                fmt(t["discounts_fen"]), fmt(t["paid_fen"]), fmt(t["commission_fen"]),
                fmt(t["net_fen"])])
    for p in st["payouts"]:
        w.writerow(["payout", p["day"], p["ref"], "", "", "", "", "", fmt(-p["fen"])])
    for p in st["payouts_returned"]:
        w.writerow(["payout returned", p["day"], p["ref"], "", "", "", "", "", fmt(p["fen"])])
    if st["other_fen"]:
        w.writerow(["other", "", "", "", "", "", "", "", fmt(st["other_fen"])])
    w.writerow(["closing balance", fmt(st["closing_fen"])])
    w.writerow(["tax estimate", fmt(st["tax"]["estimate_fen"]), st["tax"]["name"],
                st["tax"]["source"], st["tax"]["note"]])
    w.writerow(["owed by drivers, not yet yours", fmt(st["waiting_for_drivers_fen"])])
    if st["checkpoint"]:
        w.writerow(["ledger checkpoint", checkpoints.line(st["checkpoint"])])
    return out.getvalue()


def write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")
