"""Discounts applied to a session's charge before the split (SPEC §3): pure, exact in fen.

Order: the member a formed group chose (highest credit when it formed) charges free once,
and a session in free charging days a reward granted is free (nothing else applies then);
otherwise the member's free-energy quota pays for the energy it covers,
then the group discount (default -15 %) and the green discount (-10 %; both in the rule
table) apply to what is left,
each rounded half up to the fen; a session started with a prepaid budget never costs
more than it. The overstay idle fee is a penalty: never discounted.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from cocharge.settlement.tariff import Cdr


@dataclass(frozen=True)
class DiscountContext:
    quota_left_wh: int = 0
    group: bool = False        # the session is on a formed group's booking
    free_once: bool = False    # highest-credit member of that group, first time
    green: bool = False        # green charger, and the member chose green energy
    group_pct: Decimal = Decimal(15)
    green_pct: Decimal = Decimal(10)
    budget_fen: int | None = None  # a prepaid budget: the charge never exceeds it
    free_day: bool = False     # within free charging days a reward granted


@dataclass(frozen=True)
class Priced:
    charge_fen: int                    # the tariff total before discounts
    lines: tuple[tuple[str, int], ...]  # (discount, fen taken off), in the order applied
    quota_used_wh: int
    idle_fee_fen: int
    payable_fen: int                   # what the member pays: charge - discounts + idle fee


def pct_of(amount: int, pct: Decimal) -> int:
    """`pct` percent of `amount` fen, to the fen (half up): what a percentage discount takes."""
    return int((Decimal(amount) * pct / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def apply_discounts(cdr: Cdr, ctx: DiscountContext) -> Priced:
    charge = cdr.tariff_total_fen
    left = charge
    lines: list[tuple[str, int]] = []
    quota_used = 0
    if ctx.free_once and left > 0:
        lines.append(("group: highest credit charges free once", left))
        left = 0
    elif ctx.free_day and left > 0:
        lines.append(("free charging day", left))
        left = 0
    else:
        energy = cdr.total_energy_wh
        if ctx.quota_left_wh > 0 and energy > 0 and left > 0:
            quota_used = min(ctx.quota_left_wh, round(energy))
            energy_cost = cdr.costs.get("ENERGY", 0)
            covered = int((Decimal(energy_cost) * quota_used / Decimal(str(energy)))
                          .quantize(Decimal(1), rounding=ROUND_HALF_UP))
            covered = min(covered, left)
            if covered:
                lines.append((f"free quota {quota_used / 1000:.3f} kWh", covered))
                left -= covered
        if ctx.group and left > 0:
            off = pct_of(left, ctx.group_pct)
            lines.append((f"group charge -{ctx.group_pct}%", off))
            left -= off
        if ctx.green and left > 0:
            off = pct_of(left, ctx.green_pct)
            lines.append((f"green energy -{ctx.green_pct}%", off))
            left -= off
    if ctx.budget_fen is not None and left > ctx.budget_fen:
        # The cutoff stops within a meter reading of the budget; the member never pays more.
        lines.append(("prepaid budget cap", left - ctx.budget_fen))
        left = ctx.budget_fen
    return Priced(charge, tuple(lines), quota_used, cdr.idle_fee_fen, left + cdr.idle_fee_fen)
