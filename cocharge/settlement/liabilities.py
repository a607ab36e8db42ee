"""The liability report (`cocharge ledger liabilities`): what the platform owes against the
funds that back it, read off the ledger balances (SPEC §4).

Owed (valued in fen):
- member wallets: prepaid money not spent yet;
- unpaid payouts: what hosts, properties and operators have earned, not in a payout run yet;
- payouts booked, not paid: in a payout run, not confirmed paid by the bank yet;
- green points, locked and released-but-unspent, at the rule table's point value (what
  they pay of a session);
- coins at their redemption value (`redeem.coin_value_cny`: what they pay of a session);
- free-energy quotas of this month: left on the ledger, plus the allowance of every member
  entitled this month whose grant is not posted yet (a quota is owed from the first of the
  month, not from the first session), at the default price per kWh;
- pool points in circulation, at what selling them all would pay (price x (1 - fee)).

Backing:
- cash: money received from outside (top-ups, purchases: the external:* accounts) less
  what was paid out of the platform, without the pool reserve;
- the pool reserve, which backs the pool points only.

Coverage = backing / owed per group and overall; below 1 the report says so plainly.
The core (`assess`) is pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.settlement import loyalty, memberships, points
from cocharge.settlement.money import fmt
from cocharge.settlement.rewards import Rules
from cocharge.store.db import utcnow
from cocharge.store.schema import ledger_balances, sessions


@dataclass(frozen=True)
class Liability:
    name: str
    fen: int
    detail: str
    backed_by: str  # "cash" | "pool reserve"


@dataclass(frozen=True)
class Report:
    liabilities: list[Liability]
    cash_fen: int
    pool_reserve_fen: int
    receivable_fen: int
    coins: int
    warnings: list[str] = field(default_factory=list)
    # Payees' shares of sessions drivers have not paid: theirs once collected (funds.py);
    # backed by the receivables alone, never by cash.
    waiting_fen: int = 0
    # Sessions that ended but are not settled, for an operator to decide on: (session, status,
    # reason); quarantined ones could not be priced or posted (settle.py), flagged ones are
    # for review. Their drivers' holds stay held meanwhile.
    unsettled: list[tuple[int, str, str]] = field(default_factory=list)

    def owed(self, backed_by: str | None = None) -> int:
        return sum(li.fen for li in self.liabilities if backed_by in (None, li.backed_by))

    def funds(self, backed_by: str | None = None) -> int:
        return {"cash": self.cash_fen, "pool reserve": self.pool_reserve_fen,
                None: self.cash_fen + self.pool_reserve_fen}[backed_by]

    def short(self, ratio: Decimal) -> dict[str, str]:
        """The funds below `ratio`, each with why: a coverage under it, or funds below zero
        with nothing owed (no ratio to compute: a deficit all the same)."""
        found = {}
        for group in ("cash", "pool reserve"):
            value = self.coverage(group)
            if value is not None and value < ratio:
                found[group] = str(value)
            elif value is None and self.funds(group) < 0:
                found[group] = f"negative ({fmt(self.funds(group))} CNY)"
        return found

    def coverage(self, backed_by: str | None = None) -> Decimal | None:
        owed = self.owed(backed_by)
        funds = self.funds(backed_by)
        if owed <= 0:
            return None
        # Rounded down: a shortfall never shows as 1.00.
        return (Decimal(funds) / Decimal(owed)).quantize(Decimal("0.01"), rounding=ROUND_DOWN)

    def text_lines(self) -> list[str]:
        """The report as an operator reads it."""
        lines = ["Liabilities (CNY)"]
        lines += [f"  {li.name:26} {fmt(li.fen):>12}  {li.detail}; backed by {li.backed_by}"
                  for li in self.liabilities]
        lines += [f"  {'total owed':26} {fmt(self.owed()):>12}",
                  "Backing funds (CNY)",
                  f"  {'cash':26} {fmt(self.cash_fen):>12}  received from outside, less the pool reserve",
                  f"  {'pool reserve':26} {fmt(self.pool_reserve_fen):>12}",
                  f"  (members owe a further {fmt(self.receivable_fen)} CNY; not counted as funds;"
                  f" of it {fmt(self.waiting_fen)} CNY is payees' shares, theirs once collected)"]
        for group in ("cash", "pool reserve", None):
            ratio = self.coverage(group)
            shown = ratio if ratio is not None else (
                "nothing owed" if self.funds(group) >= 0 else "nothing owed, but funds negative")
            lines.append(f"coverage {group or 'overall':13} {shown}")
        if self.unsettled:
            lines.append(f"Sessions ended but not settled: {len(self.unsettled)} (`cocharge "
                         "sessions review ID --bill|--void --note ...`)")
            lines += [f"  session {sid} {status}: {why}" for sid, status, why in self.unsettled[:20]]
            if len(self.unsettled) > 20:
                lines.append(f"  ... and {len(self.unsettled) - 20} more (`cocharge sessions list`)")
        lines += [f"WARNING: {w}" for w in self.warnings]
        if not self.warnings:
            lines.append("every liability is covered by the funds that back it")
        return lines

    def to_json(self) -> dict[str, Any]:
        def ratio(value: Decimal | None) -> str | None:
            return None if value is None else str(value)
        return {
            "liabilities": [{"name": li.name, "fen": li.fen, "cny": fmt(li.fen), "detail": li.detail,
                             "backed_by": li.backed_by} for li in self.liabilities],
            "owed_fen": self.owed(), "cash_fen": self.cash_fen,
            "pool_reserve_fen": self.pool_reserve_fen, "receivable_fen": self.receivable_fen,
            "waiting_for_drivers_fen": self.waiting_fen,
            "coins_outstanding": self.coins,
            "coverage": {"cash": ratio(self.coverage("cash")),
                         "pool reserve": ratio(self.coverage("pool reserve")),
                         "overall": ratio(self.coverage())},
            "warnings": self.warnings,
            "unsettled_sessions": [{"session": sid, "status": status, "reason": why}
                                   for sid, status, why in self.unsettled],
        }


def _sum(balances: Mapping[tuple[str, str], int], prefix: str, asset: str) -> int:
    return sum(v for (a, s), v in balances.items() if s == asset and a.startswith(prefix))


def _value(units: int, scale: int, unit_price: Decimal) -> int:
    return int((Decimal(units) * unit_price * 100 / scale).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def assess(balances: Mapping[tuple[str, str], int], rules: Rules, price_per_kwh: Decimal,
           ungranted_quota_wh: int = 0) -> Report:
    """The report from every (account, asset) balance, and the quota owed this month but not
    granted on the ledger yet."""
    wallets = _sum(balances, "wallet:", "CNY")
    payouts = sum(_sum(balances, p, "CNY") for p in ("host:", "property:", "operator:"))
    booked = _sum(balances, "payable:", "CNY")
    coins = _sum(balances, "coins:", "COIN")
    locked = _sum(balances, "greenpt-locked:", "GREEN_PT")
    released = _sum(balances, "greenpt:", "GREEN_PT")
    quota_wh = _sum(balances, "quota:", "QUOTA_WH") + ungranted_quota_wh
    pool = points.Pool(balances.get(("pool:reserve", "CNY"), 0),
                       -balances.get(("pool:issuer", "POOL_PT"), 0))
    pool_owed = points.sell_payout(pool, pool.circulating, rules.sell_fee_pct)
    received = -_sum(balances, "external:", "CNY")
    lines = [
        Liability("member wallets", wallets, "prepaid, not spent yet", "cash"),
        Liability("unpaid payouts", payouts, "earned by hosts, properties and operators, not in "
                  "a payout run yet", "cash"),
        Liability("payouts booked, not paid", booked, "in a payout run, the bank has not paid "
                  "them yet", "cash"),
        Liability("green points, locked", _value(locked, points.GREEN_SCALE, rules.point_value),
                  f"{points.points_text(locked, points.GREEN_SCALE)} points at {rules.point_value} CNY",
                  "cash"),
        Liability("green points, released", _value(released, points.GREEN_SCALE, rules.point_value),
                  f"{points.points_text(released, points.GREEN_SCALE)} points at {rules.point_value} CNY",
                  "cash"),
        Liability("coins", _value(coins, 1, rules.coin_value),
                  f"{coins} coins at {rules.coin_value} CNY", "cash"),
        Liability("free-energy quotas", _value(quota_wh, 1000, price_per_kwh),
                  f"{quota_wh / 1000:.3f} kWh owed this month ({ungranted_quota_wh / 1000:.3f} of "
                  f"them not drawn on yet) at {price_per_kwh} CNY/kWh", "cash"),
        Liability("pool points", pool_owed,
                  f"{points.points_text(pool.circulating, points.POOL_SCALE)} points, sold back at "
                  f"{points.price_text(pool.price(rules.initial_price))} less {rules.sell_fee_pct}%",
                  "pool reserve"),
    ]
    report = Report(lines, received - pool.reserve_fen, pool.reserve_fen,
                    _sum(balances, "receivable:", "CNY") * -1,
                    _sum(balances, "coins:", "COIN"))
    report = replace(report, waiting_fen=_sum(balances, "owed:", "CNY"))
    for group, funds in (("cash", report.cash_fen), ("pool reserve", report.pool_reserve_fen)):
        owed = report.owed(group)
        if funds < 0 and owed <= 0:
            report.warnings.append(
                f"NOT COVERED: {group} is {fmt(funds)} CNY: more went out than came in.")
        elif owed > funds:
            names = "; ".join(li.name for li in lines if li.backed_by == group and li.fen)
            report.warnings.append(
                f"NOT COVERED: {fmt(owed)} CNY is owed (for {names}) but only {fmt(funds)} CNY of "
                f"{group} backs it; coverage {report.coverage(group)}. If everyone claimed what they "
                f"are owed today, {fmt(owed - funds)} CNY would be missing.")
    return report


async def liability_report(engine: AsyncEngine, price_per_kwh: Decimal) -> Report:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(ledger_balances))).all()
        rules = await loyalty.current_rules(conn)
        ungranted = await memberships.ungranted_wh(conn, utcnow())
        unsettled = [(int(r.id), r.status, r.flag_reason or "") for r in await conn.execute(
            select(sessions.c.id, sessions.c.status, sessions.c.flag_reason)
            .where(sessions.c.status.in_(["quarantined", "flagged"])).order_by(sessions.c.id))]
    balances: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        balances[(r.account, r.asset)] += int(r.balance)
    return replace(assess(balances, rules, price_per_kwh, ungranted), unsettled=unsettled)
