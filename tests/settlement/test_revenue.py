"""The revenue calculator reproduces the seed's figures and reasons like a host would."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal

from cocharge.settlement.revenue import (
    MIN_HISTORY,
    PRIOR,
    demand_from_sessions,
    estimate,
    open_fraction,
    prior_demand,
)
from cocharge.stations.policy import parse_window

D = Decimal


def test_seed_three_cars_of_20_kwh_at_1_60_earn_96_a_day() -> None:
    result = estimate(D(7), [parse_window("mon-sun 18:00-22:00")], D("1.6"), prior_demand(),
                      sessions_per_day=D(3), kwh_per_session=D(20))
    assert result.per_day_fen() == 9600
    # ... and says that 60 kWh a day is more than 7 kW deliver in 4 hours.
    assert any("28.0 kWh a day" in s for s in result.suggestions)


def test_seed_1900_kwh_at_1_50() -> None:
    result = estimate(D(7), [], D("1.5"), prior_demand(), kwh_per_month=D(1900))
    assert (result.revenue_fen, result.host_fen, result.platform_fen) == (285000, 256500, 28500)


def test_prior_demand_is_capped_by_the_power_and_points_at_closed_evening_hours() -> None:
    daytime = [parse_window("mon-fri 08:00-17:00")]
    result = estimate(D(7), daytime, D("1.5"), prior_demand())
    opened = open_fraction(daytime)
    wanted = sum(PRIOR[h] * opened[h] * 20 for h in range(168))
    # 7 kW is not the limit here: all the demand in the open hours is served
    assert result.kwh_per_month == (Decimal(str(wanted)) * 30 / 7).quantize(Decimal("0.001"))
    assert result.suggestions == ["demand 17:00-22:00 is high while you are closed: extend your hours"]
    slow = estimate(D("0.5"), [], D("1.5"), prior_demand())
    assert slow.utilisation == 1 and "faster charger" in slow.suggestions[0]


def test_area_prices_are_compared() -> None:
    result = estimate(D(11), [], D("1.5"), prior_demand(), area_prices=[D("1.6"), D("1.6"), D("1.2")])
    assert "nearby chargers charge 1.60 CNY/kWh (median of 3); you ask 1.5 CNY/kWh" in result.suggestions


def test_history_replaces_the_prior_once_there_is_enough() -> None:
    monday_8pm = datetime(2026, 11, 23, 20, 0)
    few = [monday_8pm + timedelta(weeks=k % 4) for k in range(MIN_HISTORY - 1)]
    assert demand_from_sessions(few, [10000.0] * len(few), 1, "A") is None
    many = few + [monday_8pm]
    demand = demand_from_sessions(many, [10000.0] * len(many), 2, "A")
    assert demand is not None and demand.kwh_per_request == 10.0
    # 50 Monday-20:00 sessions over 3 weeks at 2 chargers
    assert demand.requests[20] == MIN_HISTORY / (2 * 3) and sum(demand.requests) == demand.requests[20]


def test_cli_estimate_with_chart(tmp_path):
    png = tmp_path / "week.png"
    run = subprocess.run([sys.executable, "-m", "cocharge.cli", "calc", "revenue", "--power-kw", "7",
                          "--open", "mon-fri 19:00-23:00", "--open", "sat,sun 00:00-24:00",
                          "--price", "1.5", "--kwh-per-month", "1900", "--chart", str(png), "--json",
                          "--db", str(tmp_path / "c.db")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    assert (shown["revenue_per_month"], shown["host_income_per_month"],
            shown["platform_fee_per_month"]) == ("2850.00", "2565.00", "285.00")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "cocharge.cli", "calc", "revenue", "--power-kw", "7",
                          "--price", "cheap", "--db", str(tmp_path / "c.db")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--price" in bad.stderr


def test_time_package_pricing_advice_and_tax_pure() -> None:
    from cocharge.settlement.revenue import pricing_advice, ranking, time_package_fen
    from cocharge.settlement.rewards import DEFAULTS

    e = estimate(D(7), [parse_window("mon-fri 18:00-22:00")], D("1.6"), prior_demand(),
                 sessions_per_day=D(3), kwh_per_session=D(20))
    assert e.per_day_fen() == 9600  # the seed still reproduces
    # 60 kWh a day at 7 kW: 8.57 h of charging; at 30 CNY an hour, 30 days.
    assert time_package_fen(e, D(30)) == int((D(60) / 7 * 30 * 30 * 100).quantize(D(1), "ROUND_HALF_UP"))
    assert ranking(250_000, [100_000, 300_000, 400_000]) == (3, 4)
    assert ranking(500_000, []) == (1, 1)
    # Evenings are the prior's busiest hours, nights its quietest: advice for both.
    advice = pricing_advice(prior_demand(), [], D("1.50"))
    assert any("busiest" in a and "1.80 CNY/kWh" in a for a in advice)
    assert any("quiet" in a and "1.20 CNY/kWh" in a for a in advice)
    # 2,592 CNY host income a month: (2,592 - 800) x 20 % = 358.40 CNY.
    assert DEFAULTS.tax is not None and DEFAULTS.tax.estimate(e.host_fen) == 35_840


def test_cli_ranks_against_the_area_and_prices_a_time_package(tmp_path):
    import asyncio

    from cocharge.settlement import settle
    from cocharge.store.db import open_existing, utcnow
    from tests.cli.test_cli import cocharge
    from tests.settlement.test_settle import insert_session

    db = str(tmp_path / "c.db")
    for n in range(3):
        assert cocharge("station", "add", f"NB{n}", "--area", "jade-garden", db=db).returncode == 0
    assert cocharge("member", "add", "Ann", "--tag", "ANN", db=db).returncode == 0

    async def history() -> None:
        engine = await open_existing(db)
        for n, kwh in enumerate((100, 400, 900)):
            await settle.settle_session(engine, await insert_session(
                engine, f"NB{n}", "ANN", kwh * 1000, utcnow() - timedelta(days=2), minutes=600))
        await engine.dispose()

    asyncio.run(history())
    svg = tmp_path / "rank.svg"
    run = cocharge("calc", "revenue", "--power-kw", "7", "--price", "1.5", "--per-hour", "30",
                   "--area", "jade-garden", "--kwh-per-month", "500", "--ranking-chart", str(svg),
                   "--json", db=db)
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    # 500 kWh at 1.50 = 750 CNY: below NB2's 1,350, above NB1's 600 and NB0's 150.
    assert shown["area_ranking"]["rank"] == 2 and shown["area_ranking"]["of"] == 4
    assert shown["area_ranking"]["hosts"] == {"NB0": "150.00", "NB1": "600.00", "NB2": "1350.00"}
    assert shown["time_package"]["per_hour"] == "30"
    assert shown["tax_estimate_per_month"] == "0.00"  # 675 CNY host income: all deducted
    assert svg.read_text().startswith("<?xml") and "<rect" in svg.read_text()
    text = cocharge("calc", "revenue", "--power-kw", "7", "--price", "1.5", "--area", "jade-garden",
                    db=db).stdout
    assert "rank" in text and "tax estimate" in text
    bad = cocharge("calc", "revenue", "--power-kw", "7", "--price", "1.5", "--ranking-chart", "x.svg",
                   db=db)
    assert bad.returncode == 2 and "--area" in bad.stderr
