"""The revenue calculator for a would-be host (SPEC §3): what would my charger earn?

Demand is modelled per hour of the week (168 hours, station time): expected charging
requests per hour at one charger, and kWh per request. It comes from the platform's own
finished sessions in the area when there are at least `MIN_HISTORY` of them, otherwise
from `PRIOR` below. The charger serves the demand that falls in its opening windows, up
to what its power can deliver in those hours. What-if figures (sessions per day, kWh per
month) are taken as given, with a warning when the charger could not deliver them.

The prior (residential neighbourhood, per charger; documented so it can be argued with):
weekdays 0.05 requests/h from 00:00 to 07:00, 0.10/h from 07:00 to 17:00, 0.35/h from
17:00 to 22:00 (people home from work), 0.20/h from 22:00 to 24:00; weekends 0.15/h from
09:00 to 21:00, 0.05/h otherwise; 20 kWh per request.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from cocharge.hours import Window
from cocharge.settlement.money import fmt, split_by_ratios

HOURS = 168
MIN_HISTORY = 50
DAYS_PER_MONTH = Decimal(30)


def _prior() -> tuple[float, ...]:
    rates = []
    for hour in range(HOURS):
        day, h = divmod(hour, 24)
        if day < 5:
            rate = 0.05 if h < 7 else 0.10 if h < 17 else 0.35 if h < 22 else 0.20
        else:
            rate = 0.15 if 9 <= h < 21 else 0.05
        rates.append(rate)
    return tuple(rates)


PRIOR = _prior()
PRIOR_KWH = 20.0


@dataclass(frozen=True)
class Demand:
    requests: tuple[float, ...]   # expected charging requests per hour of the week (Mon 00:00 = 0)
    kwh_per_request: float
    source: str


def prior_demand() -> Demand:
    return Demand(PRIOR, PRIOR_KWH, "prior (no local history yet): see docs/settlement.md")


def demand_from_sessions(starts: Sequence[datetime], energies_wh: Sequence[float], chargers: int,
                         area: str) -> Demand | None:
    """Requests per hour of the week from finished sessions (local start times); None when
    there are fewer than MIN_HISTORY of them."""
    if len(starts) < MIN_HISTORY or chargers < 1:
        return None
    weeks = max(1.0, (max(starts) - min(starts)).total_seconds() / (7 * 86400))
    counts = [0] * HOURS
    for start in starts:
        counts[start.weekday() * 24 + start.hour] += 1
    kwh = statistics.fmean(energies_wh) / 1000 if energies_wh else PRIOR_KWH
    return Demand(tuple(c / (chargers * weeks) for c in counts), kwh,
                  f"history: {len(starts)} sessions at {chargers} chargers in {area}")


def open_fraction(windows: Sequence[Window]) -> tuple[float, ...]:
    """The share of each hour of the week the windows keep open (no windows: always)."""
    if not windows:
        return (1.0,) * HOURS
    minutes = [0] * (HOURS * 60)
    for window in windows:
        for day in window.days:
            start = day * 1440 + window.start
            end = day * 1440 + (window.end if window.end > window.start else window.end + 1440)
            for minute in range(start, end):
                minutes[minute % (HOURS * 60)] = 1
    return tuple(sum(minutes[h * 60:(h + 1) * 60]) / 60 for h in range(HOURS))


@dataclass(frozen=True)
class Estimate:
    kwh_per_month: Decimal
    sessions_per_month: Decimal
    revenue_fen: int
    host_fen: int
    platform_fen: int
    utilisation: Decimal           # energy served / what the charger could deliver while open
    charging_hours_per_day: Decimal
    open_hours_per_week: Decimal
    served_by_hour: tuple[float, ...]  # kWh per hour of the week, for the chart
    open_by_hour: tuple[float, ...]
    power_kw: Decimal
    demand_source: str
    suggestions: list[str] = field(default_factory=list)

    def per_day_fen(self) -> int:
        return int((Decimal(self.revenue_fen) / DAYS_PER_MONTH).quantize(Decimal(1), ROUND_HALF_UP))

    def as_json(self) -> dict[str, object]:
        return {"kwh_per_month": str(self.kwh_per_month.quantize(Decimal("0.1"))),
                "sessions_per_month": str(self.sessions_per_month.quantize(Decimal("0.1"))),
                "revenue_per_month": fmt(self.revenue_fen), "revenue_per_day": fmt(self.per_day_fen()),
                "host_income_per_month": fmt(self.host_fen),
                "platform_fee_per_month": fmt(self.platform_fen),
                "utilisation_of_open_hours": str(self.utilisation.quantize(Decimal("0.001"))),
                "charging_hours_per_day": str(self.charging_hours_per_day.quantize(Decimal("0.01"))),
                "open_hours_per_week": str(self.open_hours_per_week.quantize(Decimal("0.01"))),
                "demand": self.demand_source, "suggestions": self.suggestions}


def _money_split(revenue_fen: int, platform_pct: Decimal) -> tuple[int, int]:
    if revenue_fen == 0:
        return 0, 0
    host, platform = split_by_ratios(revenue_fen, [Decimal(100) - platform_pct, platform_pct])
    return host, platform


def estimate(power_kw: Decimal, windows: Sequence[Window], price: Decimal, demand: Demand,
             platform_pct: Decimal = Decimal(10), area_prices: Sequence[Decimal] = (),
             sessions_per_day: Decimal | None = None, kwh_per_session: Decimal | None = None,
             kwh_per_month: Decimal | None = None) -> Estimate:
    """Monthly estimate for a charger of `power_kw` open in `windows` at `price` per kWh."""
    opened = open_fraction(windows)
    open_hours = Decimal(str(sum(opened)))
    capacity_week = float(power_kw) * sum(opened)  # kWh the charger can deliver per week
    suggestions: list[str] = []
    per_request = float(kwh_per_session) if kwh_per_session is not None else demand.kwh_per_request
    wanted = [demand.requests[h] * opened[h] * per_request for h in range(HOURS)]
    if kwh_per_month is not None or sessions_per_day is not None:
        # What-if figures: as given, spread over the open hours for the chart.
        if kwh_per_month is not None:
            month_kwh = kwh_per_month
            sessions = month_kwh / Decimal(str(per_request))
        else:
            assert sessions_per_day is not None
            sessions = sessions_per_day * DAYS_PER_MONTH
            month_kwh = sessions * Decimal(str(per_request))
        week_kwh = float(month_kwh) * 7 / float(DAYS_PER_MONTH)
        share = [o / sum(opened) if sum(opened) else 0.0 for o in opened]
        served = [week_kwh * s for s in share]
        if capacity_week and week_kwh > capacity_week * 1.0001:
            day_cap = Decimal(str(capacity_week / 7)).quantize(Decimal("0.1"))
            suggestions.append(
                f"{(month_kwh / DAYS_PER_MONTH).quantize(Decimal('0.1'))} kWh a day is more than a "
                f"{power_kw} kW charger can deliver in these hours ({day_cap} kWh a day): the "
                "figures assume it anyway; open longer or choose a faster charger")
        source = "what-if figures given by you"
    else:
        total_wanted = sum(wanted)
        factor = min(1.0, capacity_week / total_wanted) if total_wanted else 0.0
        served = [w * factor for w in wanted]
        week_kwh = sum(served)
        # An estimate: kWh to the Wh; money is then exact from there.
        month_kwh = (Decimal(str(week_kwh)) * DAYS_PER_MONTH / 7).quantize(Decimal("0.001"))
        sessions = month_kwh / Decimal(str(per_request))
        source = demand.source
        if factor < 1.0:
            suggestions.append(f"demand in your hours exceeds what {power_kw} kW can deliver: "
                               "a faster charger would sell more")
    month_kwh = Decimal(month_kwh)
    revenue = int((month_kwh * price * 100).quantize(Decimal(1), ROUND_HALF_UP))
    host, platform = _money_split(revenue, platform_pct)
    utilisation = ((Decimal(str(week_kwh)) / Decimal(str(capacity_week))).quantize(Decimal("0.0001"))
                   if capacity_week else Decimal(0))
    hours_per_day = Decimal(str(week_kwh / float(power_kw) / 7)) if power_kw else Decimal(0)
    suggestions += _closed_demand(demand, opened)
    if area_prices:
        median = Decimal(str(statistics.median(area_prices))).quantize(Decimal("0.01"))
        if median != price.quantize(Decimal("0.01")):
            suggestions.append(f"nearby chargers charge {median} CNY/kWh (median of "
                               f"{len(area_prices)}); you ask {price} CNY/kWh")
    return Estimate(month_kwh, Decimal(sessions), revenue, host, platform, utilisation,
                    hours_per_day, open_hours, tuple(served), opened, power_kw, source, suggestions)


def _closed_demand(demand: Demand, opened: Sequence[float]) -> list[str]:
    """Point at the closed hours of the day with the most demand (summed over the week)."""
    by_hour = [0.0] * 24
    open_by_hour = [0.0] * 24
    for h in range(HOURS):
        by_hour[h % 24] += demand.requests[h] * (1 - opened[h])
        open_by_hour[h % 24] += demand.requests[h] * opened[h]
    served_hours = [h for h in range(24) if open_by_hour[h] > 0]
    typical = statistics.median([open_by_hour[h] for h in served_hours]) if served_hours else 0.0
    best = max(range(24), key=lambda h: by_hour[h])
    if by_hour[best] <= 0 or by_hour[best] < 0.5 * typical:
        return []
    start = best
    while by_hour[(start - 1) % 24] >= 0.8 * by_hour[best] and (start - 1) % 24 != best:
        start = (start - 1) % 24
    end = (best + 1) % 24
    while by_hour[end] >= 0.8 * by_hour[best] and end != start:
        end = (end + 1) % 24
    return [f"demand {start:02d}:00-{end:02d}:00 is high while you are closed: extend your hours"]


def time_package_fen(e: Estimate, per_hour: Decimal) -> int:
    """A month's revenue at a time package (CNY per hour of charging) instead of per kWh."""
    hours = e.charging_hours_per_day * DAYS_PER_MONTH
    return int((hours * per_hour * 100).quantize(Decimal(1), ROUND_HALF_UP))


_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _blocks(hours: Sequence[int]) -> list[tuple[int, int]]:
    """Runs of consecutive hours of the week, as (first, last + 1)."""
    runs: list[tuple[int, int]] = []
    for h in sorted(hours):
        if runs and runs[-1][1] == h:
            runs[-1] = (runs[-1][0], h + 1)
        else:
            runs.append((h, h + 1))
    return runs


def _when(block: tuple[int, int]) -> str:
    first, end = block
    day, last_day = _DAY_NAMES[first // 24], _DAY_NAMES[(end - 1) // 24]
    if day == last_day:
        return f"{day} {first % 24:02d}:00-{(end - 1) % 24 + 1:02d}:00"
    return f"{day} {first % 24:02d}:00 to {last_day} {(end - 1) % 24 + 1:02d}:00"


def pricing_advice(demand: Demand, windows: Sequence[Window], price: Decimal) -> list[str]:
    """Advice by hour of the week from the demand the history shows: a higher price where
    the open hours are busiest, a lower one where they are quiet (as --tod prices)."""
    opened = open_fraction(windows)
    open_hours = [h for h in range(HOURS) if opened[h] > 0]
    if not open_hours:
        return []
    typical = statistics.median(demand.requests[h] for h in open_hours)
    if typical <= 0:
        return []
    busy = [h for h in open_hours if demand.requests[h] >= 1.5 * typical]
    quiet = [h for h in open_hours if demand.requests[h] <= 0.5 * typical]
    advice = []
    up = (price * Decimal("1.2")).quantize(Decimal("0.01"))
    down = (price * Decimal("0.8")).quantize(Decimal("0.01"))
    for block in sorted(_blocks(busy), key=lambda b: b[0] - b[1])[:2]:
        advice.append(f"{_when(block)} is your busiest time ({demand.requests[block[0]]:.2f} "
                      f"requests an hour): {up} CNY/kWh there would still sell")
    for block in sorted(_blocks(quiet), key=lambda b: b[0] - b[1])[:1]:
        advice.append(f"{_when(block)} is quiet: {down} CNY/kWh there may bring drivers")
    return advice


def ranking(estimate_fen: int, others: Sequence[int]) -> tuple[int, int]:
    """(rank, of how many) the estimate would take among the area's hosts' monthly revenue."""
    better = sum(1 for fen in others if fen > estimate_fen)
    return better + 1, len(others) + 1


def hourly_utilisation(e: Estimate) -> list[float]:
    """Share of each hour of the week the charger delivers energy (0 when closed)."""
    return [min(1.0, served / (float(e.power_kw) * opened)) if opened and e.power_kw else 0.0
            for served, opened in zip(e.served_by_hour, e.open_by_hour, strict=True)]


def chart(e: Estimate, path: str, title: str) -> None:
    """Utilisation by hour of the week as a PNG (matplotlib: pip install 'cocharge[chart]')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = list(range(HOURS))
    figure, axis = plt.subplots(figsize=(12, 3.5))
    axis.bar(hours, list(e.open_by_hour), color="#dde8f0", width=1.0, label="open")
    axis.bar(hours, hourly_utilisation(e), color="#2a7ab0", width=1.0, label="utilisation")
    axis.set_xticks([d * 24 for d in range(7)], ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
    axis.set_xlim(-0.5, HOURS - 0.5)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("share of the hour")
    axis.set_title(title)
    axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
