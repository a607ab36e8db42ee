"""A 2.1 charger's own cost calculation (I07-I12), as a charger would do it: from the
TariffType it was given (snake_case, as the `ocpp` library hands it over), its own meter
and its own clock. Nothing of the central system's pricing is used: what this computes is
what the central system checks its settlement against.

- energy: between two meter readings, the price of the first energy price whose
  conditions hold at the first reading (local time of day and day of the week, energy and
  time since the start);
- charging time and idle time: per minute, each price's conditions on the time since the
  start (idle: minIdleTime/maxIdleTime on the time idle so far);
- a fixed fee: the first one that holds at the start;
- each dimension rounded half up to the cent, the total bounded by minCost/maxCost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
CENT = Decimal("0.01")


@dataclass
class Metered:
    """What the charger measured of one transaction."""

    start: datetime
    readings: list[tuple[datetime, float]] = field(default_factory=list)  # (time, Wh register)
    idle_s: float = 0.0  # in the transaction, not charging (the EV full, suspended)
    idle_since: datetime | None = None
    end: datetime | None = None

    def energy_wh(self) -> float:
        if len(self.readings) < 2:
            return 0.0
        return self.readings[-1][1] - self.readings[0][1]


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def _minutes_of_day(text: str) -> int:
    hours, minutes = text.split(":")[:2]
    return int(hours) * 60 + int(minutes)


def _holds(conditions: dict[str, Any] | None, local: datetime, energy_wh: float,
           elapsed_s: float) -> bool:
    if not conditions:
        return True
    start, end = conditions.get("start_time_of_day"), conditions.get("end_time_of_day")
    if start is not None or end is not None:
        now = local.hour * 60 + local.minute
        a = _minutes_of_day(start) if start is not None else 0
        b = _minutes_of_day(end) if end is not None else 24 * 60
        inside = a <= now < b if a <= b else (now >= a or now < b)
        if not inside:
            return False
    days = conditions.get("day_of_week")
    if days and DAYS[local.weekday()] not in days:
        return False
    for low, high, value in (("min_energy", "max_energy", energy_wh),
                             ("min_time", "max_time", elapsed_s)):
        if conditions.get(low) is not None and value < float(conditions[low]):
            return False
        if conditions.get(high) is not None and value >= float(conditions[high]):
            return False
    return True


def _first(prices: list[dict[str, Any]], local: datetime, energy_wh: float,
           elapsed_s: float) -> dict[str, Any] | None:
    return next((p for p in prices if _holds(p.get("conditions"), local, energy_wh, elapsed_s)),
                None)


def local_cost(tariff: dict[str, Any], metered: Metered, tz: str) -> dict[str, Any]:
    """The transaction's costDetails.totalCost (snake_case): each dimension and the total, in
    the tariff's currency (no tax is added: the prices are final)."""
    zone = ZoneInfo(tz)
    end = metered.end or (metered.readings[-1][0] if metered.readings else metered.start)
    origin = metered.readings[0][1] if metered.readings else 0.0
    energy = Decimal(0)
    energy_prices = (tariff.get("energy") or {}).get("prices") or []
    for (t0, e0), (_, e1) in zip(metered.readings, metered.readings[1:], strict=False):
        price = _first(energy_prices, t0.astimezone(zone), e0 - origin,
                       (t0 - metered.start).total_seconds())
        if price is not None and e1 > e0:  # the register as read (whole Wh): exact
            energy += (_dec(e1) - _dec(e0)) / 1000 * _dec(price["price_kwh"])
    local_start = metered.start.astimezone(zone)
    total_s = max(0.0, (end - metered.start).total_seconds())
    charging_s = max(0.0, total_s - metered.idle_s)
    charging = Decimal(0)
    price = _first((tariff.get("charging_time") or {}).get("prices") or [], local_start, 0.0, 0.0)
    if price is not None:
        charging = _dec(charging_s) / 60 * _dec(price["price_minute"])
    idle = Decimal(0)
    for price in (tariff.get("idle_time") or {}).get("prices") or []:
        conditions = price.get("conditions") or {}
        low = float(conditions.get("min_idle_time") or 0)
        high = float(conditions["max_idle_time"]) if conditions.get("max_idle_time") else None
        billed = max(0.0, min(metered.idle_s, high if high is not None else metered.idle_s) - low)
        if billed > 0:
            idle = _dec(billed) / 60 * _dec(price["price_minute"])
            break
    fixed = Decimal(0)
    price = _first((tariff.get("fixed_fee") or {}).get("prices") or [], local_start, 0.0, 0.0)
    if price is not None:
        fixed = _dec(price["price_fixed"])
    parts = {name: value.quantize(CENT, ROUND_HALF_UP) for name, value in (
        ("energy", energy), ("charging_time", charging), ("idle_time", idle), ("fixed", fixed))}
    total = sum(parts.values(), Decimal(0))
    kind = "NormalCost"
    floor = (tariff.get("min_cost") or {}).get("excl_tax")
    high = (tariff.get("max_cost") or {}).get("excl_tax")
    if floor is not None and total < _dec(floor):
        total, kind = _dec(floor).quantize(CENT, ROUND_HALF_UP), "MinCost"
    if high is not None and total > _dec(high):
        total, kind = _dec(high).quantize(CENT, ROUND_HALF_UP), "MaxCost"
    cost: dict[str, Any] = {"currency": tariff.get("currency", "CNY"), "type_of_cost": kind,
                            "total": {"excl_tax": float(total), "incl_tax": float(total)}}
    for name, value in parts.items():
        if value:
            cost[name] = {"excl_tax": float(value), "incl_tax": float(value)}
    return cost


def running_total(tariff: dict[str, Any], metered: Metered, tz: str) -> Decimal:
    """The cost so far (what a transactionLimit's maxCost is checked against)."""
    return _dec(local_cost(tariff, metered, tz)["total"]["excl_tax"])
