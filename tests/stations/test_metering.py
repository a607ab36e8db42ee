"""Pure rules: energy from registers, misread flags, tag status."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from cocharge.stations.auth import Tag, check_tag
from cocharge.stations.events import AuthStatus
from cocharge.stations.metering import assess_energy

T0 = datetime(2026, 11, 1, 10, 0)


def test_energy_is_stop_minus_start():
    verdict = assess_energy(1_000, 8_000, T0, T0 + timedelta(hours=1), 11_000, 1.1, 100)
    assert verdict.billable and verdict.energy_wh == 7_000


def test_lifetime_register_as_meter_stop_is_flagged():
    verdict = assess_energy(0, 48_000_000, T0, T0 + timedelta(hours=1), 11_000, 1.1, 100)
    assert not verdict.billable and "lifetime register" in verdict.reason


def test_backwards_meter_and_missing_reading_are_flagged():
    assert not assess_energy(5_000, 4_000, T0, T0, 11_000, 1.1, 100).billable
    assert assess_energy(None, 4_000, T0, T0, 11_000, 1.1, 100).energy_wh is None


@given(start=st.integers(0, 10**9), minutes=st.integers(1, 24 * 60),
       power_w=st.integers(1_000, 350_000), fraction=st.floats(0, 1))
def test_any_physically_possible_session_is_billable(start, minutes, power_w, fraction):
    energy = int(power_w * minutes / 60 * fraction)
    verdict = assess_energy(start, start + energy, T0, T0 + timedelta(minutes=minutes), power_w, 1.1, 100)
    assert verdict.billable and verdict.energy_wh == energy


def test_tag_status():
    assert check_tag(None, T0) is AuthStatus.UNKNOWN
    assert check_tag(Tag("A", "blocked", None), T0) is AuthStatus.BLOCKED
    assert check_tag(Tag("A", "active", T0), T0) is AuthStatus.EXPIRED
    assert check_tag(Tag("A", "active", T0 + timedelta(days=1)), T0) is AuthStatus.ACCEPTED
