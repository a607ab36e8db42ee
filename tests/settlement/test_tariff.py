"""Costing sessions the OCPI 2.2.1 way."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from cocharge.settlement.overstay import IdleFeeRule
from cocharge.settlement.tariff import (
    PriceComponent,
    Restrictions,
    Tariff,
    TariffElement,
    Usage,
    compute_cdr,
    simple_tariff,
    tariff_from_json,
    tariff_to_json,
)

D = Decimal
# 2026-11-23 is a Monday; Shanghai = UTC+8, so local 20:00 is 12:00 UTC.
T0 = datetime(2026, 11, 23, 12, 0)


def linear(start: datetime, minutes: float, wh: float) -> list[tuple[datetime, float]]:
    return [(start, 0.0), (start + timedelta(minutes=minutes), wh)]


def test_per_kwh_price() -> None:
    cdr = compute_cdr(simple_tariff(D("1.5")), Usage(T0, T0 + timedelta(hours=1),
                                                     linear(T0, 60, 7000)))
    assert cdr.costs == {"ENERGY": 1050} and cdr.total_fen == 1050


def test_ocpi_energy_step_size_applies_once_to_the_total() -> None:
    # OCPI 2.2.1: 4.3 kWh then 1.1 kWh with a 500 Wh step are billed as 5.5 kWh.
    tariff = Tariff((
        TariffElement((PriceComponent("ENERGY", D("1.00"), 500),), Restrictions(end_time="20:30")),
        TariffElement((PriceComponent("ENERGY", D("2.00"), 500),)),
    ))
    energy = [(T0, 0.0), (T0 + timedelta(minutes=30), 4300.0), (T0 + timedelta(minutes=60), 5400.0)]
    cdr = compute_cdr(tariff, Usage(T0, T0 + timedelta(hours=1), energy))
    assert cdr.billed["ENERGY"] == 5500
    # 4.3 kWh at 1.00 + (1.1 + 0.1 step) kWh at 2.00, the last period's price
    assert cdr.costs["ENERGY"] == 430 + 240
    assert [p.element["ENERGY"] for p in cdr.periods] == [0, 1]


def test_ocpi_parking_step_size() -> None:
    # 7 minutes of parking with a 5-minute step are billed as 10 minutes.
    tariff = simple_tariff(D("1"), parking_per_hour=D("6"), time_step_s=300)
    end = T0 + timedelta(minutes=20)
    usage = Usage(T0, end, linear(T0, 20, 2000), parking_start=end,
                  parking_end=end + timedelta(minutes=7))
    cdr = compute_cdr(tariff, usage)
    assert cdr.billed["PARKING_TIME"] == 600 and cdr.costs["PARKING_TIME"] == 100
    assert "TIME" not in cdr.billed and cdr.total_fen == 200 + 100  # no TIME price here


def test_time_of_day_prices_wrap_midnight() -> None:
    tariff = simple_tariff(D("1.5"), tod=[("22:00", "06:00", D("0.9"))])
    start = datetime(2026, 11, 23, 13, 0)  # 21:00 local
    usage = Usage(start, start + timedelta(hours=2), linear(start, 120, 14000))
    cdr = compute_cdr(tariff, usage)
    # 7 kWh before 22:00 at 1.5, 7 kWh after at 0.9
    assert cdr.costs["ENERGY"] == 1050 + 630
    assert [p.element["ENERGY"] for p in cdr.periods] == [1, 0]


def test_time_price_and_energy_thresholds_and_min_max_price() -> None:
    tariff = Tariff((
        TariffElement((PriceComponent("ENERGY", D("1.0")),), Restrictions(max_kwh=D("10"))),
        TariffElement((PriceComponent("ENERGY", D("2.0")), PriceComponent("TIME", D("30")))),
    ), min_price_fen=500, max_price_fen=5000)
    usage = Usage(T0, T0 + timedelta(hours=1), linear(T0, 60, 20000))
    cdr = compute_cdr(tariff, usage)
    # first 10 kWh at 1.0, next 10 kWh at 2.0, one hour of time at 30 (TIME only in element 1)
    assert cdr.costs == {"ENERGY": 1000 + 2000, "TIME": 3000}
    assert cdr.tariff_total_fen == 5000  # capped by max_price
    tiny = compute_cdr(tariff, Usage(T0, T0 + timedelta(minutes=1), linear(T0, 1, 100)))
    assert tiny.tariff_total_fen == 500  # min_price


def test_idle_fee_is_its_own_line() -> None:
    tariff = simple_tariff(D("1.5"), idle=IdleFeeRule())
    end = T0 + timedelta(hours=1)
    usage = Usage(T0, end, linear(T0, 60, 7000), parking_start=end,
                  parking_end=end + timedelta(minutes=40))
    cdr = compute_cdr(tariff, usage)
    assert (cdr.idle_minutes, cdr.idle_fee_fen) == (25, 1250)
    assert cdr.total_fen == cdr.tariff_total_fen + 1250


def test_tariff_survives_storage() -> None:
    tariff = simple_tariff(D("1.5"), D("30"), [("22:00", "06:00", D("0.9"))], IdleFeeRule(),
                           100, 10000)
    assert tariff_from_json(tariff_to_json(tariff)) == tariff


@given(st.integers(0, 200_000), st.integers(0, 200_000), st.integers(1, 600),
       st.sampled_from([1, 100, 500, 1000]))
def test_cost_is_monotone_in_energy(wh_a: int, wh_b: int, minutes: int, step: int) -> None:
    tariff = simple_tariff(D("1.5"), D("3"), [("22:00", "06:00", D("0.9"))], energy_step_wh=step)
    end = T0 + timedelta(minutes=minutes)
    low, high = sorted((wh_a, wh_b))
    cost_low = compute_cdr(tariff, Usage(T0, end, linear(T0, minutes, low))).total_fen
    cost_high = compute_cdr(tariff, Usage(T0, end, linear(T0, minutes, high))).total_fen
    assert cost_low <= cost_high
