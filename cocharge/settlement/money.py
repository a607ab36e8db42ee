"""Money: integer fen (0.01 CNY) everywhere; Decimal only for prices and at the edges.

One way to split an amount: `split_by_ratios` (largest remainder, fixed tie-break).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

FEN_PER_CNY = 100


class MoneyError(ValueError):
    """An amount that is not a valid sum of money; the message says how to write one."""


# The largest amount an operator may type (CNY): a top-up, a purchase, a budget, a price. A
# mistyped 1000000 is refused instead of booked (setting `max_amount_cny`, docs/config.md).
MAX_INPUT_CNY = 100_000


def set_input_limit(cny: int) -> None:
    """The configured `max_amount_cny` (at the CLI's start)."""
    global MAX_INPUT_CNY
    MAX_INPUT_CNY = cny


def _typed(text: str | int | Decimal, what: str, example: str) -> Decimal:
    """A number as an operator types it: plain digits with an optional decimal point; exponent
    notation (1e3), NaN and Infinity are refused, as is anything above MAX_INPUT_CNY."""
    raw = str(text).strip()
    if not isinstance(text, Decimal) and not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", raw):
        raise MoneyError(f"{what} {text!r}: write the amount in plain digits (e.g. {example})")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise MoneyError(f"{what} {text!r}: write the amount in plain digits (e.g. {example})"
                         ) from None
    if value.is_finite() and value > MAX_INPUT_CNY:
        raise MoneyError(f"{what} {text!r}: more than the {MAX_INPUT_CNY} CNY an amount may be "
                         "(setting max_amount_cny)")
    return value


def parse_cny(text: str | int | Decimal, what: str = "amount", allow_zero: bool = False) -> int:
    """'12.50' CNY -> 1250 fen; refuses negatives, non-numbers, exponents, amounts above
    MAX_INPUT_CNY and fractions of a fen."""
    amount = _typed(text, what, "12.50")
    fen = amount * FEN_PER_CNY
    if not amount.is_finite() or amount < 0 or (amount == 0 and not allow_zero):
        raise MoneyError(f"{what} {text!r}: give a {'non-negative' if allow_zero else 'positive'} "
                         "amount in CNY")
    if fen != fen.to_integral_value():
        raise MoneyError(f"{what} {text!r}: CNY amounts have at most 2 decimals")
    return int(fen)


def parse_price(text: str | Decimal, what: str = "price") -> Decimal:
    """A unit price in CNY (per kWh, per hour): up to 4 decimals, not negative."""
    price = _typed(text, what, "1.50")
    if not price.is_finite() or price < 0:
        raise MoneyError(f"{what} {text!r}: a price cannot be negative")
    if price != price.quantize(Decimal("0.0001")):
        raise MoneyError(f"{what} {text!r}: prices have at most 4 decimals")
    return price


def to_fen(cny: Decimal) -> int:
    """A computed CNY amount rounded half up to the fen (the one rounding step of a cost)."""
    return int((cny * FEN_PER_CNY).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def fmt(fen: int) -> str:
    """1250 -> '12.50'."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def split_by_ratios(total: int, ratios: Sequence[Decimal | int]) -> list[int]:
    """Split `total` (fen) in proportion to `ratios` so that the parts sum to `total` exactly.

    Largest-remainder method: every part first gets the floor of its exact share; the
    fen left over go one each to the largest fractional remainders, ties to the earlier
    part. Each part is within 1 fen of its exact share.
    """
    if total < 0:
        return [-p for p in split_by_ratios(-total, ratios)]
    weights = [Decimal(r) for r in ratios]
    if not weights or any(w < 0 for w in weights) or sum(weights) == 0:
        raise MoneyError("ratios must be non-negative and not all zero")
    whole = sum(weights)
    exact = [Decimal(total) * w / whole for w in weights]
    parts = [int(e) for e in exact]  # floor: exact >= 0
    left = total - sum(parts)
    order = sorted(range(len(parts)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return parts
