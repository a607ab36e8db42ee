"""Green points with release schedules and pool-backed points (pure; SPEC §4 seed examples)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocharge.settlement import points
from cocharge.settlement.points import Order, Pool
from cocharge.settlement.rewards import DEFAULTS, RulesError

DAY0 = date(2026, 3, 1)
PCT = DEFAULTS.daily_release_pct
REFERRAL = DEFAULTS.referral_pct


def order(id_: int, tag: str, cny: int, on: date = DAY0) -> Order:
    fen = cny * 100
    grant = points.grant_units(fen, points.multiplier(fen, DEFAULTS.tiers))
    return Order(id_, tag, fen, points.daily_units(fen, PCT), grant, on)


def run(day: date, orders: list[Order], referrer: dict[str, str | None]):
    """One day's releases and the orders as they stand after it."""
    releases = points.release_day(day, orders, referrer, REFERRAL)
    taken: dict[int, int] = defaultdict(int)
    for r in releases:
        taken[r.order_id] += r.units
    return releases, [replace(o, locked=o.locked - taken[o.id]) for o in orders]


def per_tag(releases) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in releases:
        out[r.tag] += r.units
    return dict(out)


def test_tier_multipliers():
    assert points.multiplier(2_999_99, DEFAULTS.tiers) == 1
    assert points.multiplier(3_000_00, DEFAULTS.tiers) == Decimal("2.5")
    assert points.multiplier(9_000_00, DEFAULTS.tiers) == 3
    assert points.multiplier(27_000_00, DEFAULTS.tiers) == Decimal("3.5")
    assert points.multiplier(60_000_00, DEFAULTS.tiers) == 4
    assert order(1, "A", 3000).locked == 7_500 * points.GREEN_SCALE
    assert order(1, "A", 9000).locked == 27_000 * points.GREEN_SCALE


def test_seed_examples_36_then_108_more_and_18_for_the_referrer():
    a = order(1, "A", 3000)
    releases, _ = run(DAY0, [a], {})
    assert per_tag(releases) == {"A": 36 * points.GREEN_SCALE}
    # A second order of 9,000: 108 a day more.
    b = order(2, "A", 9000)
    releases, _ = run(DAY0, [a, b], {})
    assert per_tag(releases) == {"A": (36 + 108) * points.GREEN_SCALE}
    # R referred N; N's 3,000 order releases 36 a day, R releases 18 a day extra.
    r, n = order(1, "R", 3000), order(2, "N", 3000)
    releases, _ = run(DAY0, [r, n], {"N": "R"})
    assert per_tag(releases) == {"N": 36 * points.GREEN_SCALE, "R": (36 + 18) * points.GREEN_SCALE}
    extra = [x for x in releases if x.generation == 1]
    assert extra == [points.Release(1, "R", 18 * points.GREEN_SCALE, 1, 2)]


def test_second_generation_gets_30_percent_and_no_third():
    chain = [order(1, "G", 3000), order(2, "R", 3000), order(3, "N", 3000), order(4, "X", 3000)]
    refs = {"X": "N", "N": "R", "R": "G"}
    releases, _ = run(DAY0, chain, refs)
    from_x = {(x.tag, x.generation): x.units for x in releases if x.source_order == 4}
    # X's 36: N +18 (first generation), R +10.80 (second); G, three levels up, nothing.
    assert from_x == {("N", 1): 1800, ("R", 2): 1080}
    with pytest.raises(RulesError):
        points.release_day(DAY0, chain, refs, (Decimal(50), Decimal(30), Decimal(10)))


def test_the_last_day_is_clamped_and_then_nothing():
    orders = [order(1, "A", 3000)]
    released, days = 0, 0
    day = DAY0
    while True:
        releases, orders = run(day, orders, {})
        if not releases:
            break
        released += sum(r.units for r in releases)
        days += 1
        day += timedelta(days=1)
    # 7,500 points at 36 a day: 208 full days (7,488) and 12 on the last.
    assert days == 209 and released == 750_000 and orders[0].locked == 0
    assert releases == []


def test_acceleration_draws_on_the_oldest_order_and_never_more_than_locked():
    # The referrer has 10 points left in an old order and 7,500 in a newer one.
    old = replace(order(1, "R", 3000), locked=1000, daily=0)
    new = replace(order(2, "R", 3000, DAY0 + timedelta(days=1)), daily=0)
    n = order(3, "N", 3000)
    releases, after = run(DAY0 + timedelta(days=1), [old, new, n], {"N": "R"})
    extras = [(x.order_id, x.units) for x in releases if x.generation == 1]
    assert extras == [(1, 1000), (2, 800)]
    # A referrer with nothing locked gets nothing; the referred member's release is unchanged.
    empty = replace(order(1, "R", 3000), locked=0)
    releases, _ = run(DAY0, [empty, n], {"N": "R"})
    assert per_tag(releases) == {"N": 3600}
    # Orders purchased later have not started.
    releases, _ = run(DAY0, [order(1, "A", 3000, DAY0 + timedelta(days=2))], {})
    assert releases == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ABCDE"), st.integers(1, 60_000), st.integers(0, 20)),
                min_size=1, max_size=8),
       st.dictionaries(st.sampled_from("ABCDE"), st.sampled_from("ABCDE"), max_size=5),
       st.integers(1, 60))
def test_released_never_exceeds_granted(buys, refs, days):
    refs = {k: v for k, v in refs.items() if k != v}
    orders = [order(i, tag, cny, DAY0 + timedelta(days=start))
              for i, (tag, cny, start) in enumerate(buys, start=1)]
    granted = {o.id: o.locked for o in orders}
    released: dict[int, int] = defaultdict(int)
    for d in range(days):
        releases, orders = run(DAY0 + timedelta(days=d), orders, refs)
        for r in releases:
            assert r.units > 0
            released[r.order_id] += r.units
        for o in orders:
            assert 0 <= o.locked  # never more than locked
            assert released[o.id] + o.locked == granted[o.id]  # points conserved


def seed_pool(sales: int) -> list[Decimal]:
    pool, prices = Pool(0, 0), []
    for _ in range(sales):
        made = points.sale(pool, 100_00, DEFAULTS.margin_share_pct, DEFAULTS.buyer_share_pct,
                           DEFAULTS.initial_price)
        pool = Pool(pool.reserve_fen + made.pool_fen, pool.circulating + made.units)
        prices.append(pool.price(DEFAULTS.initial_price))
    return prices


def test_the_seed_pool_table():
    prices = [points.price_text(p) for p in seed_pool(100)]
    assert prices[:4] == ["1.4286", "1.6807", "1.8674", "2.0188"]
    assert prices[99] == "5.1731"
    first = points.sale(Pool(0, 0), 100_00, Decimal(30), Decimal(70), Decimal(1))
    assert first == points.Sale(30_00, 21_00, 21 * points.POOL_SCALE)


def test_selling_pays_the_price_less_the_fee_which_stays():
    pool = Pool(30_00, 21 * points.POOL_SCALE)  # after sale 1: 1.4286
    paid = points.sell_payout(pool, 10 * points.POOL_SCALE, DEFAULTS.sell_fee_pct)
    # 10 x 30/21 = 14.2857 x 0.9 = 12.857 -> 12.85 (floor: the fraction stays in the pool)
    assert paid == 12_85
    after = Pool(pool.reserve_fen - paid, pool.circulating - 10 * points.POOL_SCALE)
    assert after.price(Decimal(1)) > pool.price(Decimal(1))
    assert points.sell_payout(pool, 0, Decimal(10)) == 0


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("sale"), st.integers(1, 1_000_000)),
                          st.tuples(st.just("sell"), st.floats(0, 1))), max_size=40))
def test_pool_price_never_decreases_and_money_is_conserved(ops):
    pool, paid_in, paid_out = Pool(0, 0), 0, 0
    price = pool.price(Decimal(1))
    for kind, arg in ops:
        if kind == "sale":
            made = points.sale(pool, arg, Decimal(30), Decimal(70), Decimal(1))
            pool = Pool(pool.reserve_fen + made.pool_fen, pool.circulating + made.units)
            paid_in += made.pool_fen
            assert made.value_fen <= made.pool_fen
        else:
            units = int(pool.circulating * arg)
            if units >= pool.circulating:  # selling the last points resets the price (docs/rewards.md)
                continue
            pay = points.sell_payout(pool, units, Decimal(10))
            assert 0 <= pay <= pool.reserve_fen
            pool = Pool(pool.reserve_fen - pay, pool.circulating - units)
            paid_out += pay
        new_price = pool.price(Decimal(1))
        assert new_price >= price
        price = new_price
        assert pool.reserve_fen == paid_in - paid_out >= 0


def test_dividend_shares_by_weight_and_caps_return_the_rest():
    assert points.dividend_pool(12_345, Decimal(10)) == 1_234
    # No cap binds: shares by weight, exact to the fen.
    paid, back = points.distribute(1_000, {"A": 1, "B": 2}, {"A": 10_000, "B": 10_000})
    assert paid == {"A": 333, "B": 667} and back == 0
    # A's cap binds: A gets the cap, B takes the rest up to B's own cap, the rest goes back.
    paid, back = points.distribute(1_000, {"A": 3, "B": 1}, {"A": 100, "B": 500})
    assert paid == {"A": 100, "B": 500} and back == 400
    # No weight or no cap (spent nothing): nothing.
    paid, back = points.distribute(1_000, {"A": 0, "B": 5}, {"A": 500, "B": 0})
    assert paid == {} and back == 1_000


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000_000),
       st.dictionaries(st.sampled_from("ABCDEFG"), st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
                       max_size=7))
def test_dividends_are_exact_and_within_caps(pool, members):
    weights = {t: w for t, (w, _) in members.items()}
    caps = {t: c for t, (_, c) in members.items()}
    paid, back = points.distribute(pool, weights, caps)
    assert sum(paid.values()) + back == pool and back >= 0
    for tag, fen in paid.items():
        assert 0 < fen <= caps[tag] and weights[tag] > 0
    eligible = [t for t in weights if weights[t] > 0 and caps[t] > 0]
    # Money goes back only when every eligible member is at their cap.
    if back:
        assert all(paid.get(t, 0) == caps[t] for t in eligible)
