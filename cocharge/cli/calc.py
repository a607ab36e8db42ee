"""Calculators for would-be hosts: `calc revenue`."""

from __future__ import annotations

import functools
import json
import os
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from cocharge.charts import bars, standalone
from cocharge.cli.common import (
    FiniteRange,
    db_option,
    fail,
    json_option,
    money_error,
    rule_error,
)
from cocharge.cli.database import with_store
from cocharge.hours import parse_window
from cocharge.settlement import calculator, loyalty, revenue
from cocharge.settlement.money import fmt, parse_price
from cocharge.settlement.rewards import DEFAULTS
from cocharge.store.db import sqlite_file


@click.group()
def calc() -> None:
    """Calculators for would-be hosts."""


@calc.command("revenue")
@click.option("--power-kw", required=True, type=FiniteRange(1, 400),
              help="Charger power: 7, 11, 22 (AC) or more (DC).")
@click.option("--open", "windows", multiple=True,
              help="Opening window, repeatable: 'mon-fri 19:00-23:00' (default: always open).")
@click.option("--price", required=True, help="CNY per kWh.")
@click.option("--per-hour", help="Also price it as a time package: CNY per hour of charging "
              "(e.g. 30).")
@click.option("--area", help="Use this area's own session history and prices, and rank the "
              "estimate against the area's hosts.")
@click.option("--ranking-chart", type=click.Path(dir_okay=False, writable=True),
              help="Draw the area's hosts' monthly revenue and this estimate to this SVG.")
@click.option("--platform-pct", default="10", show_default=True, help="Platform commission, percent.")
@click.option("--sessions-per-day", help="What-if: sessions a day (instead of the demand model).")
@click.option("--kwh-per-session", help="kWh per session (default: from the demand model, 20).")
@click.option("--kwh-per-month", help="What-if: kWh sold a month.")
@click.option("--chart", "chart_path", type=click.Path(dir_okay=False, writable=True),
              help="Draw utilisation by hour of the week to this PNG (needs matplotlib).")
@db_option
@json_option
def calc_revenue(power_kw: float, windows: tuple[str, ...], price: str, per_hour: str | None,
                 area: str | None, ranking_chart: str | None,
                 platform_pct: str, sessions_per_day: str | None, kwh_per_session: str | None,
                 kwh_per_month: str | None, chart_path: str | None, db: str | None,
                 as_json: bool) -> None:
    """Estimate a charger's monthly revenue, utilisation and the host's income."""

    parsed = tuple(rule_error(functools.partial(parse_window, w)) for w in windows)
    unit_price = money_error(lambda: parse_price(price, "--price"))

    def number(text: str | None, option: str) -> Decimal | None:
        if text is None:
            return None
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = Decimal(-1)
        if not value.is_finite() or value <= 0:
            fail(f"{option} {text!r}: give a positive number")
        return value

    commission = number(platform_pct, "--platform-pct") if platform_pct != "0" else Decimal(0)
    if commission is not None and commission > 100:
        fail("--platform-pct must be between 0 and 100")
    if sessions_per_day and kwh_per_month:
        fail("--sessions-per-day and --kwh-per-month are two what-ifs: give one")
    if chart_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--chart needs matplotlib: pip install 'cocharge[chart]'")

    hourly = money_error(lambda: parse_price(per_hour, "--per-hour")) if per_hour else None
    if ranking_chart and not area:
        fail("--ranking-chart needs --area (the hosts it ranks against)")

    async def work(engine: Any) -> tuple[Any, list[Decimal], dict[str, int], Any]:

        return (await calculator.area_demand(engine, area),
                await calculator.area_prices(engine, area),
                await calculator.area_host_revenue(engine, area),
                await loyalty.load_rules(engine))


    path = sqlite_file(db)
    if path is not None and not os.path.exists(path):
        # A would-be host trying the calculator before any gateway runs: no history, the
        # default demand model (and no database made for it).
        click.echo(f"(no database at {path}: estimating from the default demand model)",
                   err=True)

        no_prices: list[Decimal] = []
        no_hosts: dict[str, int] = {}
        demand, prices, hosts, rules = revenue.prior_demand(), no_prices, no_hosts, DEFAULTS
    else:
        demand, prices, hosts, rules = with_store(db, work)
    result = revenue.estimate(Decimal(str(power_kw)), parsed, unit_price, demand,
                              commission or Decimal(0), prices,
                              number(sessions_per_day, "--sessions-per-day"),
                              number(kwh_per_session, "--kwh-per-session"),
                              number(kwh_per_month, "--kwh-per-month"))
    if chart_path:
        revenue.chart(result, chart_path, f"{power_kw:g} kW, {'; '.join(windows) or 'always open'}, "
                                          f"{price} CNY/kWh")
    extra: dict[str, Any] = {
        "tax_estimate_per_month": fmt(rules.tax.estimate(result.host_fen)) if rules.tax else "0.00",
        "tax_table": rules.tax.name if rules.tax else "",
        "pricing_advice": revenue.pricing_advice(demand, parsed, unit_price)}
    if hourly is not None:
        extra["time_package"] = {"per_hour": str(hourly),
                                 "revenue_per_month": fmt(revenue.time_package_fen(result, hourly)),
                                 "per_kwh_equivalent": str((hourly / Decimal(str(power_kw)))
                                                           .quantize(Decimal("0.01")))}
    if area:
        rank, of = revenue.ranking(result.revenue_fen, list(hosts.values()))
        extra["area_ranking"] = {"area": area, "rank": rank, "of": of,
                                 "hosts": {k: fmt(v) for k, v in sorted(hosts.items())}}
        if ranking_chart:

            names = [*sorted(hosts), "you"]
            values = [hosts[k] / 100 for k in sorted(hosts)] + [result.revenue_fen / 100]
            chart = bars(values, names, f"Revenue a month in {area} (CNY), last 30 days", " CNY")
            with open(ranking_chart, "w", encoding="utf-8") as f:
                f.write(standalone(chart))
    if as_json:
        click.echo(json.dumps({**result.as_json(), **extra}, indent=2))
        return
    shown = result.as_json()
    click.echo(f"{power_kw:g} kW charger, open {shown['open_hours_per_week']} h a week, "
               f"{price} CNY/kWh")
    click.echo(f"  demand: {shown['demand']}")
    click.echo(f"  energy sold:        {shown['kwh_per_month']} kWh a month "
               f"({shown['sessions_per_month']} sessions)")
    click.echo(f"  revenue:            {shown['revenue_per_month']} CNY a month "
               f"({fmt(result.per_day_fen())} a day)")
    click.echo(f"  host income:        {shown['host_income_per_month']} CNY")
    click.echo(f"  platform fee:       {shown['platform_fee_per_month']} CNY "
               "(0 in the host's first 30 days)")
    click.echo(f"  utilisation:        {Decimal(str(shown['utilisation_of_open_hours'])) * 100:.1f} % of "
               f"the open hours, {shown['charging_hours_per_day']} h charging a day")
    if hourly is not None:
        package = extra["time_package"]
        click.echo(f"  as a time package:  {package['revenue_per_month']} CNY a month at {hourly} "
                   f"CNY/hour (like {package['per_kwh_equivalent']} CNY/kWh at full power)")
    click.echo(f"  tax estimate:       {extra['tax_estimate_per_month']} CNY a month on the host "
               f"income ({extra['tax_table']}; an estimate, see docs/payouts.md)")
    if area:
        ranked = extra["area_ranking"]
        click.echo(f"  in {area}:        rank {ranked['rank']} of {ranked['of']} hosts by revenue "
                   "(last 30 days)")
    for line in result.suggestions:
        click.echo(f"  suggestion: {line}")
    for line in extra["pricing_advice"]:
        click.echo(f"  pricing: {line}")
    if chart_path:
        click.echo(f"  chart: {chart_path}")
    if ranking_chart:
        click.echo(f"  ranking chart: {ranking_chart}")
