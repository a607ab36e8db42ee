"""The fee split as SPEC §3 states it."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocharge.settlement.money import MoneyError
from cocharge.settlement.split import SplitTerms, split_amount

ONBOARDED = datetime(2026, 10, 1)
LATER = ONBOARDED + timedelta(days=45)


def test_private_host_gets_90_percent() -> None:
    assert split_amount(10000, SplitTerms(onboarded_at=ONBOARDED), LATER) == [
        ("host", 9000), ("platform", 1000)]


def test_first_month_has_no_commission() -> None:
    terms = SplitTerms(onboarded_at=ONBOARDED)
    assert split_amount(10000, terms, ONBOARDED + timedelta(days=29, hours=23)) == [
        ("host", 10000), ("platform", 0)]
    assert split_amount(10000, terms, ONBOARDED + timedelta(days=30)) == [
        ("host", 9000), ("platform", 1000)]


def test_green_host_pays_5_percent() -> None:
    assert split_amount(9999, SplitTerms(onboarded_at=ONBOARDED, green=True), LATER) == [
        ("host", 9499), ("platform", 500)]


def test_property_charger_revenue_share() -> None:
    assert split_amount(10001, SplitTerms(model="property"), LATER) == [
        ("property", 3000), ("platform", 1000), ("operator", 6001)]


def test_terms_are_checked() -> None:
    with pytest.raises(MoneyError, match="exceed"):
        SplitTerms(model="property", property_pct=Decimal(95)).check()
    with pytest.raises(MoneyError, match="host or property"):
        SplitTerms(model="coop").check()


@given(st.integers(0, 10**8), st.sampled_from(["host", "property"]), st.booleans(),
       st.integers(0, 60), st.integers(0, 30))
def test_parts_add_up_and_stay_within_a_fen(total: int, model: str, green: bool, day: int,
                                            platform: int) -> None:
    terms = SplitTerms(model=model, green=green, onboarded_at=ONBOARDED,
                       platform_pct=Decimal(platform))
    parts = split_amount(total, terms, ONBOARDED + timedelta(days=day))
    assert sum(amount for _, amount in parts) == total and all(a >= 0 for _, a in parts)
