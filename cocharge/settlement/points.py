"""Points (SPEC §4): green points with release schedules, and pool-backed points. Pure.

Green points (GREEN_PT, counted in hundredths of a point): a purchase of A CNY grants
A x m(tier) points, locked in its own order. Each day every order releases
`daily_release_pct` of A (1.2 %: 3,000 CNY -> 36 points a day) until its grant is
exhausted (the last day releases what is left). When a referred member's order releases
R, the referrer releases an extra 50 % x R and the referrer's referrer 30 % x R, from
their own locked orders, oldest first, never more than they have locked. Only the
orders' own daily releases accelerate others: an extra release does not cascade, and
the chain stops after two generations (`rewards.MAX_REFERRAL_GENERATIONS`).

Pool-backed points (POOL_PT, counted in millionths of a point): per sale, a share of
the margin enters the pool (CNY) and the buyer gets a fixed value in points at the
price before the sale, price = pool / points in circulation (the initial price while
none circulate). Selling N points pays N x price x (1 - fee) from the pool and burns
them; the fee stays in the pool. Both operations never lower the price.

Dividend pools (optional, off by default): a share of a day's platform revenue is paid out
to members by weight (green points held), each capped at a multiple of what they spent on
charging less the dividends they already had; what no one may take goes back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from cocharge.settlement.money import split_by_ratios
from cocharge.settlement.rewards import MAX_REFERRAL_GENERATIONS, RulesError

GREEN_SCALE = 100        # GREEN_PT ledger units per point
POOL_SCALE = 1_000_000   # POOL_PT ledger units per point


def multiplier(amount_fen: int, tiers: Sequence[tuple[Decimal, Decimal]]) -> Decimal:
    """The multiplier of the highest tier the single purchase reaches (x1 below the first)."""
    found = Decimal(1)
    for minimum, mult in tiers:
        if Decimal(amount_fen) >= minimum * 100:
            found = mult
    return found


def grant_units(amount_fen: int, mult: Decimal) -> int:
    """Points granted (GREEN_PT units): A CNY x m; in units that is A fen x m (floor)."""
    return int((Decimal(amount_fen) * mult).to_integral_value(rounding=ROUND_DOWN))


def daily_units(amount_fen: int, pct: Decimal) -> int:
    """An order's daily release: pct % of A CNY in points (3,000 CNY at 1.2 % = 36 points)."""
    return int((Decimal(amount_fen) * pct / 100).to_integral_value(rounding=ROUND_DOWN))


@dataclass(frozen=True)
class Order:
    id: int
    tag: str
    amount_fen: int
    daily: int       # units released per day
    locked: int      # units still locked before the day's run
    purchased_on: date


@dataclass(frozen=True)
class Release:
    order_id: int
    tag: str
    units: int
    generation: int = 0          # 0: the order's own schedule; 1, 2: referral acceleration
    source_order: int | None = None


def release_day(day: date, orders: Iterable[Order], referrer: Mapping[str, str | None],
                referral_pct: Sequence[Decimal]) -> list[Release]:
    """What every order releases on `day`: first each order's own schedule, then the
    referral acceleration (source orders in id order, each generation in turn)."""
    if len(referral_pct) > MAX_REFERRAL_GENERATIONS:
        raise RulesError(f"at most {MAX_REFERRAL_GENERATIONS} referral generations")
    live = sorted((o for o in orders if o.purchased_on <= day and o.locked > 0), key=lambda o: o.id)
    left = {o.id: o.locked for o in live}
    by_tag: dict[str, list[Order]] = {}
    for o in live:
        by_tag.setdefault(o.tag, []).append(o)  # oldest first: ids increase with time
    releases = []
    for o in live:
        units = min(o.daily, left[o.id])
        if units > 0:
            left[o.id] -= units
            releases.append(Release(o.id, o.tag, units))
    for base in [r for r in releases if r.generation == 0]:
        up = base.tag
        for generation, pct in enumerate(referral_pct, start=1):
            up = referrer.get(up) or ""
            if not up:
                break
            wanted = int((Decimal(base.units) * pct / 100).to_integral_value(rounding=ROUND_DOWN))
            for target in by_tag.get(up, []):
                if wanted <= 0:
                    break
                take = min(wanted, left[target.id])
                if take > 0:
                    left[target.id] -= take
                    wanted -= take
                    releases.append(Release(target.id, up, take, generation, base.order_id))
    return releases


# --- pool-backed points ---------------------------------------------------------------------

@dataclass(frozen=True)
class Pool:
    reserve_fen: int   # CNY in the pool
    circulating: int   # POOL_PT units held by members

    def price(self, initial: Decimal) -> Decimal:
        """CNY per point (exact quotient; shown rounded to 4 decimals)."""
        if self.circulating <= 0:
            return initial
        return Decimal(self.reserve_fen) * POOL_SCALE / 100 / Decimal(self.circulating)


def price_text(price: Decimal) -> str:
    return str(price.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Sale:
    pool_fen: int      # what enters the pool
    value_fen: int     # the value the buyer receives in points
    units: int         # POOL_PT units minted for the buyer


def sale(pool: Pool, amount_fen: int, margin_share_pct: Decimal, buyer_share_pct: Decimal,
         initial_price: Decimal) -> Sale:
    """A sale of `amount_fen`: 30 % of it to the pool, 70 % of that to the buyer in points at
    the price before the sale (floor: the pool keeps the fraction)."""
    to_pool = int((Decimal(amount_fen) * margin_share_pct / 100).to_integral_value(rounding=ROUND_DOWN))
    value = int((Decimal(to_pool) * buyer_share_pct / 100).to_integral_value(rounding=ROUND_DOWN))
    if pool.circulating <= 0:
        units = int((Decimal(value) * POOL_SCALE / 100 / initial_price).to_integral_value(
            rounding=ROUND_DOWN))
    else:
        units = value * pool.circulating // pool.reserve_fen if pool.reserve_fen > 0 else 0
    return Sale(to_pool, value, units)


def sell_payout(pool: Pool, units: int, fee_pct: Decimal) -> int:
    """Fen paid for selling `units`: units x price x (1 - fee), floor; the fee stays."""
    if units <= 0 or pool.circulating <= 0:
        return 0
    gross = Decimal(units) * Decimal(pool.reserve_fen) / Decimal(pool.circulating)
    return int((gross * (100 - fee_pct) / 100).to_integral_value(rounding=ROUND_DOWN))


def points_text(units: int, scale: int) -> str:
    """Ledger units as points: 3600 GREEN_PT units -> '36.00'."""
    digits = len(str(scale)) - 1
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), scale)
    return f"{sign}{whole}.{frac:0{digits}d}" if digits else f"{sign}{whole}"


# --- dividend pools -------------------------------------------------------------------------

def dividend_pool(revenue_fen: int, share_pct: Decimal) -> int:
    """What a day's revenue puts into the dividend pool (floor: the fraction stays)."""
    return int((Decimal(revenue_fen) * share_pct / 100).to_integral_value(rounding=ROUND_DOWN))


def distribute(pool_fen: int, weights: Mapping[str, int],
               caps: Mapping[str, int]) -> tuple[dict[str, int], int]:
    """Share `pool_fen` by weight (points held) with a cap per member; returns the payouts
    and the remainder (back to the platform). Water-filling: a member whose share would pass
    their cap gets the cap, and what is left is shared again among the others by weight.
    Exact: payouts + remainder == pool; the largest-remainder method keeps each uncapped
    share within 1 fen of its exact value."""
    payouts = {tag: 0 for tag in weights}
    active = sorted(t for t, w in weights.items() if w > 0 and caps.get(t, 0) > 0)
    left = pool_fen
    while left > 0 and active:
        parts = split_by_ratios(left, [weights[t] for t in active])
        capped = [t for t, p in zip(active, parts, strict=True) if payouts[t] + p >= caps[t]]
        if not capped:
            for t, p in zip(active, parts, strict=True):
                payouts[t] += p
            left = 0
            break
        for t in capped:
            give = caps[t] - payouts[t]
            payouts[t] += give
            left -= give
        active = [t for t in active if t not in capped]
    return {t: p for t, p in payouts.items() if p}, left
