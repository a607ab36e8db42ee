"""The reward rule table and what each event earns (pure; SPEC §4)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocharge.settlement.rewards import (
    DEFAULT_RULES,
    DEFAULTS,
    Reward,
    RulesError,
    SessionFacts,
    co2_grams,
    credit_change,
    parse_rules,
    session_rewards,
    with_change,
)


def earned(facts: SessionFacts, rules=DEFAULTS) -> dict[str, Reward | str]:
    return {e.badge.key if e.badge else e.event: e.badge.name if e.badge else e.reward
            for e in session_rewards(rules, facts)}


@pytest.mark.parametrize(("event", "coins", "credit"), [
    ("first_green_session", 0, 8),
    ("group_initiator", 20, 20),
    ("group_member", 10, 0),
    ("overstay", 0, -5),
    ("booking_no_show", 0, -10),
    ("oem_activated", 200, 10),
    ("post_approved", 15, 5),
    ("post_liked_50", 20, 0),
    ("post_featured", 50, 10),
    ("like_given", 0, 1),
    ("answer_accepted", 0, 5),
])
def test_each_row_of_the_default_table(event, coins, credit):
    assert DEFAULTS.reward(event) == Reward(coins, credit)


def test_defaults_credit_factor_and_points():
    assert DEFAULTS.initial_credit == 100
    assert DEFAULTS.factor == Decimal("0.5366") and DEFAULTS.factor_year == 2022
    assert "MEE/NBS" in DEFAULTS.factor_source
    assert DEFAULTS.referral_pct == (Decimal(50), Decimal(30))
    assert [(m, x) for m, x in DEFAULTS.tiers] == [
        (Decimal(3000), Decimal("2.5")), (Decimal(9000), Decimal(3)),
        (Decimal(27000), Decimal("3.5")), (Decimal(51000), Decimal(4))]
    assert [b.key for b in DEFAULTS.badges] == ["earth_guardian", "group_charger", "navigator",
                                                "explorer"]
    # Every number of the money flows is in the table (issue 18).
    assert (DEFAULTS.group_pct, DEFAULTS.green_pct) == (Decimal(15), Decimal(10))
    assert (DEFAULTS.group_min_members, DEFAULTS.group_min_credit) == (5, 0)
    assert DEFAULTS.levels["gold"].quota_wh == 50_000
    assert DEFAULTS.brand("any make").months == 6 and DEFAULTS.brand("x").level == "gold"
    assert DEFAULTS.payout_minimum_fen == 10_000


def test_a_first_green_session_in_a_group():
    facts = SessionFacts("A", "WB1", 12_000, green=True, group_role="initiator")
    # The initiator also earns the completion coins every member earns (SPEC §4).
    assert earned(facts) == {"first_green_session": Reward(0, 8),
                             "group_initiator": Reward(20, 20), "group_member": Reward(10, 0)}
    # The second green session earns nothing green; a plain member earns the member's coins.
    again = SessionFacts("A", "WB1", 12_000, green=True, group_role="member", green_sessions_before=1)
    assert earned(again) == {"group_member": Reward(10, 0)}
    # Not green, no group: nothing.
    assert earned(SessionFacts("A", "WB1", 12_000, green=False)) == {}
    # A green charger but no energy delivered is not a green session.
    assert earned(SessionFacts("A", "WB1", 0, green=True)) == {}


def test_badges_at_their_thresholds_and_only_once():
    # Earth Guardian: 100 green kWh, this session crossing the line.
    crossing = SessionFacts("A", "WB1", 10_000, green=True, green_sessions_before=9,
                            green_wh_before=90_000)
    assert earned(crossing) == {"earth_guardian": "Earth Guardian"}
    short = SessionFacts("A", "WB1", 9_999, green=True, green_sessions_before=9, green_wh_before=90_000)
    assert earned(short) == {}
    held = SessionFacts("A", "WB1", 10_000, green=True, green_sessions_before=9,
                        green_wh_before=90_000, badges_held=frozenset({"earth_guardian"}))
    assert earned(held) == {}
    # Non-green energy does not count towards it.
    assert earned(SessionFacts("A", "WB1", 50_000, green=False, green_wh_before=90_000)) == {}
    # Group Charger: three group sessions in a row.
    third = SessionFacts("A", "WB1", 1000, green=False, group_role="member", group_streak_before=2)
    assert earned(third) == {"group_member": Reward(10, 0), "group_charger": "Group Charger"}
    second = SessionFacts("A", "WB1", 1000, green=False, group_role="member", group_streak_before=1)
    assert "group_charger" not in earned(second)
    # Explorer: charged at 5 different stations.
    fifth = SessionFacts("A", "WB5", 1000, green=False,
                         stations_before=frozenset({"WB1", "WB2", "WB3", "WB4"}))
    assert earned(fifth) == {"explorer": "Explorer"}
    # Navigator (领航员): led a group as its initiator with the highest credit.
    assert earned(SessionFacts("A", "WB1", 1000, green=False, group_leads=1)) == {
        "navigator": "Navigator"}
    same = SessionFacts("A", "WB4", 1000, green=False,
                        stations_before=frozenset({"WB1", "WB2", "WB3", "WB4"}))
    assert earned(same) == {}


def test_green_share_badge_needs_consecutive_months():
    table = with_change(DEFAULT_RULES, "badges.green_streak",
                        "name=Green Quarter,green_share_pct=80,months=3,free_days=2")
    rules = parse_rules(table)
    [rule] = [b for b in rules.badges if b.key == "green_streak"]
    assert (rule.measure, rule.threshold, rule.months, rule.free_days) == ("green_share_pct", 80, 3, 2)

    def facts(*shares: str) -> SessionFacts:
        return SessionFacts("A", "WB1", 1000, green=False,
                            green_months=tuple(Decimal(x) for x in shares))

    assert "green_streak" in earned(facts("85", "80", "99.5"), rules)
    assert "green_streak" not in earned(facts("85", "79.9", "99"), rules)  # one month short
    assert "green_streak" not in earned(facts("90", "90"), rules)          # two months only


def test_open_events_and_badge_rules():
    table = with_change(DEFAULT_RULES, "events.share_green_bill", "coins=20,limit=3,period=week")
    table = with_change(table, "badges.good_writer", "name=Good Writer,event=post_featured,count=10,"
                        "within_days=30,coins=100")
    rules = parse_rules(table)
    assert rules.reward("share_green_bill") == Reward(20, 0, 3, "week")
    assert "share_green_bill" in rules.external_events()
    [writer] = [b for b in rules.badges if b.key == "good_writer"]
    assert (writer.event, writer.threshold, writer.within_days, writer.coins) == (
        "post_featured", 10, 30, 100)
    with pytest.raises(RulesError, match="no event"):
        with_change(DEFAULT_RULES, "badges.x", "event=nothing_such,count=2")
    with pytest.raises(RulesError, match="period"):
        with_change(DEFAULT_RULES, "events.y_event", "coins=1,period=year")
    with pytest.raises(RulesError, match="event name"):
        with_change(DEFAULT_RULES, "events.Bad-Name", "coins=1")
    with pytest.raises(RulesError, match="settlement raises"):
        with_change(DEFAULT_RULES, "events.overstay", "none")
    assert "share_green_bill" not in parse_rules(with_change(table, "events.share_green_bill",
                                                             "none")).events
    with pytest.raises(RulesError, match="at least 2"):
        with_change(DEFAULT_RULES, "group.min_members", "1")


def test_tax_estimate_by_the_table():
    tax = DEFAULTS.tax
    assert tax is not None
    assert tax.estimate(0) == 0
    assert tax.estimate(80_000) == 0                       # 800 CNY: all deducted
    assert tax.estimate(300_000) == 44_000                 # (3,000 - 800) x 20 % = 440
    assert tax.estimate(500_000) == 80_000                 # 5,000 x 80 % x 20 % = 800
    assert tax.estimate(400_000) == 64_000                 # 4,000 - 800 = 3,200 x 20 %


def test_credit_never_goes_below_zero():
    assert credit_change(100, -5) == -5
    assert credit_change(3, -10) == -3
    assert credit_change(0, -10) == 0
    assert credit_change(0, 8) == 8


@given(st.integers(0, 10_000), st.lists(st.integers(-50, 50), max_size=30))
def test_credit_stays_non_negative_through_any_events(start, deltas):
    score = start
    for delta in deltas:
        score += credit_change(score, delta)
        assert score >= 0


def test_co2_estimate_from_the_stored_factor():
    assert co2_grams(50_000, DEFAULTS.factor) == 26_830
    assert co2_grams(1, DEFAULTS.factor) == 1  # 0.5366 g rounds half up
    assert co2_grams(12_345, Decimal("0.5366")) == 6_624  # 6,624.327


def test_operator_changes_and_refusals():
    table = with_change(DEFAULT_RULES, "events.like_given", "coins=2,credit=1")
    assert parse_rules(table).reward("like_given") == Reward(2, 1)
    assert parse_rules(with_change(DEFAULT_RULES, "initial_credit", "60")).initial_credit == 60
    tiers = parse_rules(with_change(DEFAULT_RULES, "points.tiers", "1000=2,5000=3"))
    assert tiers.tiers == ((Decimal(1000), Decimal(2)), (Decimal(5000), Decimal(3)))
    assert DEFAULT_RULES["events"]["like_given"] == {"credit": 1}  # the defaults are untouched
    for key, text, words in [
        ("points.referral_pct", "50,30,20", "pyramid selling"),
        ("points.referral_pct", "150", "between 0 and 100"),
        ("events.Dancing!", "coins=1", "event name"),
        ("events.like_given", "coins=-1", "at least 0"),
        ("events.like_given", "stars=3", "coins, credit"),
        ("points.tiers", "9000=3,3000=2.5", "must increase"),
        ("initial_credit", "-1", "at least 0"),
        ("badges.navigator.green_kwh", "5", "exactly one threshold"),
        ("lottery.odds", "1", "unknown rule section"),
    ]:
        with pytest.raises(RulesError, match=words):
            with_change(DEFAULT_RULES, key, text)


def test_three_generations_are_refused_with_the_reason():
    body = {**DEFAULT_RULES, "points": {**DEFAULT_RULES["points"], "referral_pct": ["50", "30", "10"]}}
    with pytest.raises(RulesError) as refused:
        parse_rules(body)
    assert "at most 2" in str(refused.value) and "pyramid selling" in str(refused.value)


async def test_green_months_are_local_calendar_months_summed_by_the_database(db_url):
    """A member's green share per month, in Shanghai's months (a session that ends at 01:00
    local on the 1st belongs to that month), the last complete month first."""
    from datetime import datetime

    from sqlalchemy import insert

    from cocharge.settlement.loyalty import green_months
    from cocharge.store.db import open_store
    from cocharge.store.schema import green_certificates, sessions

    engine = await open_store(db_url)
    rows = [  # (ended, Wh, green Wh)
        (datetime(2026, 10, 31, 15, 0), 4000, 0),      # Oct 31 23:00 local: October
        (datetime(2026, 10, 31, 17, 0), 2000, 2000),   # Nov 1 01:00 local: November
        (datetime(2026, 11, 20, 8, 0), 6000, 1000),    # November
        (datetime(2026, 12, 2, 8, 0), 9000, 9000),     # this month: not complete, not counted
        (datetime(2025, 11, 15, 8, 0), 1000, 1000),    # 13 months back: outside
    ]
    async with engine.begin() as conn:
        for n, (ended, wh, green) in enumerate(rows):
            sid = int((await conn.execute(insert(sessions).values(
                station_id="S", connector_id=1, tx_ref=f"g{n}", protocol="1.6", id_tag="G",
                started_at=ended, ended_at=ended, energy_wh=wh, status="completed",
                created_at=ended).returning(sessions.c.id))).scalar_one())
            if green:
                await conn.execute(insert(green_certificates).values(
                    id=f"GC-{sid}", session_id=sid, tag="G", station_id="S", energy_wh=green,
                    started_at=ended, ended_at=ended, co2_g=0, factor="0.5", factor_year=2026,
                    factor_source="test", digest="0" * 64, issued_at=ended))
        shares = await green_months(conn, "G", datetime(2026, 12, 4, 8, 0))
    await engine.dispose()
    assert shares[0] == Decimal(3000 * 100) / Decimal(8000)  # November: 3 of 8 kWh green
    assert shares[1] == 0                                     # October: 4 kWh, none green
    assert shares[2:] == (Decimal(0),) * 10                   # no charging
