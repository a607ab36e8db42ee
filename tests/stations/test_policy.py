"""The sharing policy as the spec states it: windows, bookings, cutoff, idle fee, groups."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocharge.settlement.overstay import IdleFeeRule, idle_fee
from cocharge.stations.policy import (
    Booking,
    LockState,
    Member,
    RuleError,
    SessionLimits,
    SharingRules,
    Verdict,
    check_booking,
    check_rules,
    closed_reason,
    energy_for_budget,
    group_bookings,
    lock_state,
    may_charge,
    open_until,
    parse_window,
    plan_cutoff,
    safety_fault_201,
)

# Shanghai is UTC+8 all year: local 19:00 is 11:00 UTC.
UTC_OF_LOCAL = timedelta(hours=-8)


def at_local(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi) + UTC_OF_LOCAL


def rules(*windows: str, **kw: object) -> SharingRules:
    return SharingRules(windows=tuple(parse_window(w) for w in windows), **kw)  # type: ignore[arg-type]


MEMBER = Member("ALICE")
# 2026-11-23 is a Monday.
MON, FRI, SAT, SUN = (2026, 11, 23), (2026, 11, 27), (2026, 11, 28), (2026, 11, 29)


def test_weekday_evening_window() -> None:
    r = rules("mon-fri 19:00-23:00")
    assert may_charge(r, [], MEMBER, 1, at_local(*MON, 19, 30)).allowed
    assert may_charge(r, [], MEMBER, 1, at_local(*MON, 23, 0)).allowed is False
    refused = may_charge(r, [], MEMBER, 1, at_local(*MON, 12, 0))
    assert not refused.allowed and refused.reason == "outside opening hours mon-fri 19:00-23:00"
    assert refused.verdict is Verdict.NOT_AT_THIS_TIME
    assert not may_charge(r, [], MEMBER, 1, at_local(*SAT, 20, 0)).allowed


def test_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    r = rules("fri 22:00-02:00")
    assert may_charge(r, [], MEMBER, 1, at_local(*FRI, 23, 0)).allowed
    assert may_charge(r, [], MEMBER, 1, at_local(*SAT, 1, 59)).allowed
    assert not may_charge(r, [], MEMBER, 1, at_local(*SAT, 2, 0)).allowed
    # Friday 01:00 belongs to Thursday's (absent) window.
    assert not may_charge(r, [], MEMBER, 1, at_local(*FRI, 1, 0)).allowed
    assert open_until(r, at_local(*FRI, 23, 0)) == at_local(*SAT, 2, 0)


def test_whole_weekend_days_merge_into_one_open_period() -> None:
    r = rules("sat,sun 00:00-24:00")
    assert open_until(r, at_local(*SAT, 10, 0)) == at_local(2026, 11, 30, 0, 0)


def test_closed_date_overrides_windows() -> None:
    r = rules("mon-sun 00:00-24:00", closed_dates=frozenset({date(2026, 11, 25)}))
    refused = may_charge(r, [], MEMBER, 1, at_local(2026, 11, 25, 12))
    assert not refused.allowed and refused.reason == "closed on 2026-11-25"
    assert may_charge(r, [], MEMBER, 1, at_local(2026, 11, 26, 0, 1)).allowed


def test_no_windows_means_always_open() -> None:
    assert closed_reason(SharingRules(), datetime(2026, 1, 1)) is None


def test_booking_holds_the_connector_for_its_member_only() -> None:
    r = rules("mon-sun 00:00-24:00")
    slot = Booking(7, 1, "BOB", at_local(*MON, 19), at_local(*MON, 20))
    during = at_local(*MON, 19, 30)
    refused = may_charge(r, [slot], MEMBER, 1, during)
    assert not refused.allowed and refused.reason == "booked by another member until 20:00"
    assert may_charge(r, [slot], MEMBER, 2, during).allowed  # the other connector is free
    granted = may_charge(r, [slot], Member("BOB"), 1, during)
    assert granted.allowed and granted.booking == slot
    assert lock_state(r, [slot], 1, during) == (LockState.BOOKED, slot)


def test_booked_member_may_charge_even_outside_hours_owner_always() -> None:
    r = rules("mon-fri 19:00-23:00", owner_tags=frozenset({"OWNER"}))
    assert may_charge(r, [], Member("OWNER"), 1, at_local(*MON, 3)).allowed
    assert lock_state(r, [], 1, at_local(*MON, 3))[0] is LockState.CLOSED
    assert lock_state(r, [], 1, at_local(*MON, 20))[0] is LockState.OPEN


def test_allowed_members_groups_and_models() -> None:
    r = rules(allowed_tags=frozenset({"ALICE"}), allowed_groups=frozenset({"block-7"}),
              allowed_models=frozenset({"BYD Dolphin"}))
    now = at_local(*MON, 12)
    stranger = may_charge(r, [], Member("EVE", vehicle_model="BYD Dolphin"), 1, now)
    assert not stranger.allowed and stranger.verdict is Verdict.NOT_AT_THIS_LOCATION
    assert may_charge(r, [], Member("NEIGHBOUR", frozenset({"block-7"}), "BYD Dolphin"), 1, now).allowed
    wrong_car = may_charge(r, [], Member("ALICE", vehicle_model="Tesla Model Y"), 1, now)
    assert not wrong_car.allowed and "Tesla Model Y" in wrong_car.reason


def test_owner_priority_closes_to_the_public() -> None:
    r = rules(owner_tags=frozenset({"OWNER"}))
    now = at_local(*MON, 12)
    assert not may_charge(r, [], MEMBER, 1, now, reclaimed=True).allowed
    assert may_charge(r, [], Member("OWNER"), 1, now, reclaimed=True).allowed
    assert lock_state(r, [], 1, now, reclaimed=True)[0] is LockState.CLOSED


def test_bad_windows_are_refused_with_the_fix() -> None:
    for text, words in [("mon-fri 7pm-11pm", "HH:MM"), ("someday 10:00-11:00", "days"),
                        ("mon 10:00-10:00", "00:00-24:00"), ("mon 25:00-26:00", "HH:MM")]:
        with pytest.raises(RuleError, match=words):
            parse_window(text)


def test_booking_checks() -> None:
    r = rules("mon-fri 19:00-23:00")
    now = at_local(*MON, 12)
    existing = [Booking(1, 1, "BOB", at_local(*MON, 19), at_local(*MON, 20))]
    with pytest.raises(RuleError, match="already booked 19:00-20:00"):
        check_booking(r, existing, Booking(0, 1, "ALICE", at_local(*MON, 19, 30), at_local(*MON, 21)), now, 2)
    check_booking(r, existing, Booking(0, 2, "ALICE", at_local(*MON, 19, 30), at_local(*MON, 21)), now, 2)
    check_booking(r, existing, Booking(0, 1, "ALICE", at_local(*MON, 20), at_local(*MON, 21)), now, 2)
    with pytest.raises(RuleError, match="opening hours"):
        check_booking(r, existing, Booking(0, 1, "ALICE", at_local(*MON, 22), at_local(*MON, 23, 30)), now, 2)
    with pytest.raises(RuleError, match="does not accept bookings"):
        check_booking(rules(bookings=False), [], Booking(0, 1, "A", now, now + timedelta(hours=1)), now, 1)


slots = st.tuples(st.integers(1, 2), st.integers(0, 48 * 4), st.integers(1, 16))


@given(st.lists(slots, max_size=25), st.integers(0, 48 * 4 * 15))
def test_no_instant_where_two_bookings_hold_one_connector(requests: list[tuple[int, int, int]],
                                                          probe_min: int) -> None:
    """Whatever is requested, what check_booking lets through never overlaps."""
    r = SharingRules()
    base = datetime(2026, 11, 23)
    accepted: list[Booking] = []
    for i, (connector, start_q, length_q) in enumerate(requests):
        start = base + timedelta(minutes=15 * start_q)
        candidate = Booking(i + 1, connector, f"T{i}", start, start + timedelta(minutes=15 * length_q))
        try:
            check_booking(r, accepted, candidate, base - timedelta(days=1), 2)
        except RuleError:
            continue
        accepted.append(candidate)
    probe = base + timedelta(minutes=probe_min)
    for connector in (1, 2):
        assert sum(b.holds(connector, probe) for b in accepted) <= 1


@given(st.sampled_from(["mon", "fri", "sun", "mon-sun"]), st.integers(0, 23), st.integers(1, 23),
       st.integers(0, 7 * 24 * 60 - 1))
def test_open_until_is_open_and_ends_at_a_closed_instant(days: str, start_h: int, length_h: int,
                                                         probe_min: int) -> None:
    end_h = (start_h + length_h) % 24
    r = rules(f"{days} {start_h:02d}:00-{end_h:02d}:00")
    now = at_local(*MON, 0) + timedelta(minutes=probe_min)
    end = open_until(r, now)
    if end is None:
        assert closed_reason(r, now) is not None
    else:
        assert end > now and closed_reason(r, now) is None
        assert closed_reason(r, end - timedelta(seconds=1)) is None
        assert closed_reason(r, end) is not None  # windows shorter than a day leave a gap


def test_budget_becomes_energy_then_a_time_at_full_power() -> None:
    start = datetime(2026, 11, 23, 12)
    # 3 CNY at 1.50 CNY/kWh buys 2 kWh: 11 kW takes 654.5 s.
    assert energy_for_budget(300, Decimal('1.50')) == 2000
    cutoff = plan_cutoff(SessionLimits(budget_fen=300), start, 11_000, Decimal('1.5'))
    assert cutoff is not None
    assert (cutoff.energy_wh, cutoff.reason, cutoff.offset_s) == (2000, "budget", 655)
    # The tightest limit wins: a slot ending in 5 minutes comes before the budget.
    slot = plan_cutoff(SessionLimits(budget_fen=300, slot_end=start + timedelta(minutes=5)),
                       start, 11_000, Decimal('1.5'))
    assert slot is not None and (slot.reason, slot.offset_s, slot.energy_wh) == ("slot", 300, 2000)
    quota = plan_cutoff(SessionLimits(energy_wh=5000, quota_wh=1200), start, 7_000, Decimal('1.5'))
    assert quota is not None and (quota.energy_wh, quota.reason) == (1200, "quota")
    assert plan_cutoff(SessionLimits(), start, 7_000, Decimal('1.5')) is None


@given(st.integers(1, 10**7), st.integers(1, 100_000))
def test_budget_never_buys_more_than_it_pays_for(budget_fen: int, price_ten_thousandths: int) -> None:
    price = Decimal(price_ten_thousandths) / 10_000  # CNY per kWh, 4 decimals
    energy = energy_for_budget(budget_fen, price)
    cost_fen = Decimal(energy) * price / 10  # Wh x CNY/kWh -> fen
    assert cost_fen <= budget_fen < (Decimal(energy) + 1) * price / 10


def test_idle_fee_after_grace_capped() -> None:
    rule = IdleFeeRule()  # 15 min grace, 0.50 CNY/min, cap 60 CNY
    t0 = datetime(2026, 11, 23, 20)
    assert idle_fee(rule, t0, t0 + timedelta(minutes=15)) == (0, 0)
    assert idle_fee(rule, t0, t0 + timedelta(minutes=25, seconds=59)) == (10, 500)
    assert idle_fee(rule, t0, t0 + timedelta(hours=10)) == (585, 6000)


@given(st.integers(1, 40), st.integers(1, 4), st.integers(10, 600))
def test_group_slots_never_overlap_and_stay_in_the_slot(n: int, connectors: int, minutes: int) -> None:
    start = datetime(2026, 11, 23, 11)
    end = start + timedelta(minutes=minutes)
    made = group_bookings([f"M{i}" for i in range(n)], connectors, start, end, 9)
    assert len(made) == n and {b.tag for b in made} == {f"M{i}" for i in range(n)}
    for i, a in enumerate(made):
        assert start <= a.start < a.end <= end and a.group_id == 9
        assert all(not a.overlaps(b) for b in made[i + 1:])


def test_safety_events_of_201() -> None:
    assert safety_fault_201("RCD", "Tripped", "true", False) == "ground fault"
    assert safety_fault_201("RCD", "Tripped", "true", True) is None
    assert safety_fault_201("OverCurrentProtection", "Operated", "false", False) is None
    assert safety_fault_201("Connector", "AvailabilityState", "Faulted", False) is None


def test_a_session_ends_before_another_members_booking_starts() -> None:
    from cocharge.stations.policy import next_booking_start

    start = datetime(2026, 11, 23, 12)
    later = Booking(3, 1, "BOB", start + timedelta(minutes=40), start + timedelta(minutes=90))
    own = Booking(4, 1, "ALICE", start + timedelta(minutes=20), start + timedelta(minutes=30))
    other_connector = Booking(5, 2, "BOB", start + timedelta(minutes=10), start + timedelta(minutes=20))
    assert next_booking_start([later, own, other_connector], 1, "ALICE", start) == later.start
    cutoff = plan_cutoff(SessionLimits(energy_wh=50_000, next_booking=later.start), start, 11_000,
                         Decimal('1.5'))
    assert cutoff is not None and (cutoff.reason, cutoff.offset_s) == ("booking", 40 * 60)


def test_a_slow_car_gets_a_later_zero_point_but_never_past_the_time_limit() -> None:
    from cocharge.stations.policy import Cutoff, extended_offset

    cutoff = Cutoff(2000, None, 655, "energy")
    # After 655 s a 7 kW car has 1274 Wh: 726 Wh more take 237.6 s at 11 kW.
    assert extended_offset(cutoff, 655, 1274, 11_000, None) == 655 + 238 + 1
    assert extended_offset(cutoff, 655, 1274, 11_000, 800) == 800
    assert extended_offset(cutoff, 900, 1274, 11_000, 800) is None


def test_a_host_may_require_a_minimum_credit_score() -> None:
    r = rules(min_credit=90, owner_tags=frozenset({"OWNER"}))
    now = at_local(*MON, 12)
    low = may_charge(r, [], Member("EVE", credit=85), 1, now)
    assert not low.allowed and low.verdict is Verdict.NOT_AT_THIS_LOCATION and "85" in low.reason
    assert may_charge(r, [], Member("ANN", credit=90), 1, now).allowed
    assert may_charge(r, [], Member("OWNER", credit=0), 1, now).allowed  # the owner's own charger
    with pytest.raises(RuleError, match="never below 0"):
        check_rules(rules(min_credit=-1))
