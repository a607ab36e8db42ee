"""Money is exact: parsing, formatting and the one split helper."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocharge.settlement.money import MoneyError, fmt, parse_cny, split_by_ratios, to_fen


def test_parse_and_format() -> None:
    assert parse_cny("12.50") == 1250 and parse_cny("3") == 300 and fmt(1250) == "12.50"
    assert fmt(-5) == "-0.05" and to_fen(Decimal("1.005")) == 101
    for bad, words in [("1.234", "2 decimals"), ("-1", "positive"), ("abc", "plain digits"),
                       ("0", "positive"), ("NaN", "plain digits"), ("1e3", "plain digits"),
                       ("Infinity", "plain digits"), ("100000.01", "max_amount_cny")]:
        with pytest.raises(MoneyError, match=words):
            parse_cny(bad)


def test_seed_split_of_the_revenue_estimate() -> None:
    # 1,900 kWh at 1.50: 2,850 revenue, host 90 % = 2,565, platform 10 % = 285.
    assert split_by_ratios(285000, [90, 10]) == [256500, 28500]


def test_ties_go_to_the_earlier_part() -> None:
    assert split_by_ratios(1, [1, 1]) == [1, 0]
    assert split_by_ratios(100, [1, 1, 1]) == [34, 33, 33]


@given(st.integers(0, 10**9), st.lists(st.integers(0, 1000), min_size=1, max_size=6))
def test_parts_sum_to_the_total_and_stay_within_a_fen(total: int, ratios: list[int]) -> None:
    if sum(ratios) == 0:
        with pytest.raises(MoneyError):
            split_by_ratios(total, ratios)
        return
    parts = split_by_ratios(total, ratios)
    assert sum(parts) == total
    for part, ratio in zip(parts, ratios, strict=True):
        exact = Decimal(total) * ratio / sum(ratios)
        assert abs(part - exact) < 1
