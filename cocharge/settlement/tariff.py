"""Tariffs and CDRs the way OCPI 2.2.1 computes them: pure functions of values.

A tariff is a list of elements; each element has price components (ENERGY per kWh,
TIME per charging hour, PARKING_TIME per parking hour, FLAT per session) and optional
restrictions (time of day, possibly wrapping midnight; day of week; min/max kWh and
min/max duration of the session so far). A session is cut into charging periods at
every instant where the answer could change; for each period and each dimension the
price is that of the first element whose restrictions hold at the start of the period
and that has a component of that dimension. Step sizes are applied once, to the
session's total of that dimension, at the price of its last period. Amounts are
Decimal until each dimension's cost is rounded to the fen; min/max price bound the
total. The overstay idle fee (SPEC §2) is a separate line after the OCPI total.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from cocharge.settlement.money import MoneyError, to_fen
from cocharge.settlement.overstay import IdleFeeRule, idle_fee

DIMENSIONS = ("ENERGY", "TIME", "PARKING_TIME", "FLAT")
# Units the prices are per: kWh, hour, hour, session; step sizes are in Wh, s, s.
_UNIT = {"ENERGY": Decimal(1000), "TIME": Decimal(3600), "PARKING_TIME": Decimal(3600)}
# Times a session is priced within, and its longest priced span: anything else comes from a
# charger's wrong clock (the gateway no longer stores such times: cocharge/gateway/clock.py,
# but an older database may hold them) and is not priced: settlement quarantines it.
PRICED_FROM, PRICED_UNTIL = datetime(2000, 1, 1), datetime(2200, 1, 1)
MAX_PRICED_S = 62 * 86400


class SessionTimesError(ValueError):
    """A session whose times no tariff can price."""


@dataclass(frozen=True)
class PriceComponent:
    type: str            # ENERGY | TIME | PARKING_TIME | FLAT
    price: Decimal       # CNY per kWh / per hour / per hour / per session (excl. nothing: CNY is final)
    step_size: int = 1   # Wh for ENERGY, seconds for TIME and PARKING_TIME

    def __post_init__(self) -> None:
        if self.type not in DIMENSIONS:
            raise MoneyError(f"price component type {self.type!r}: one of {', '.join(DIMENSIONS)}")
        if self.step_size < 1:
            raise MoneyError("a step size is at least 1")


@dataclass(frozen=True)
class Restrictions:
    start_time: str | None = None     # "HH:MM" local; with end_time < start_time it wraps midnight
    end_time: str | None = None
    day_of_week: frozenset[int] = frozenset()  # 0 = Monday; empty = every day
    min_kwh: Decimal | None = None    # valid from this energy so far (inclusive)
    max_kwh: Decimal | None = None    # ... until this energy so far (exclusive)
    min_duration: int | None = None   # seconds since the session started (inclusive)
    max_duration: int | None = None   # (exclusive)


@dataclass(frozen=True)
class TariffElement:
    components: tuple[PriceComponent, ...]
    restrictions: Restrictions = Restrictions()

    def component(self, dimension: str) -> PriceComponent | None:
        return next((c for c in self.components if c.type == dimension), None)


@dataclass(frozen=True)
class Tariff:
    elements: tuple[TariffElement, ...]
    min_price_fen: int | None = None
    max_price_fen: int | None = None
    idle: IdleFeeRule | None = None
    tz: str = "Asia/Shanghai"
    # V2X: what the driver is credited per kWh their car gave back (discharged through the
    # charger); None: discharging is not paid for here.
    feed_in_per_kwh: Decimal | None = None


@dataclass(frozen=True)
class Usage:
    """What a session used: energy over time, and when the car stood without charging."""

    start: datetime                                 # naive UTC
    end: datetime                                   # end of the transaction
    energy: Sequence[tuple[datetime, float]]        # (time, Wh since start), ascending
    parking_start: datetime | None = None           # charging over, car still plugged in
    parking_end: datetime | None = None             # the connector is free again

    @property
    def session_end(self) -> datetime:
        return max(self.end, self.parking_end or self.end)

    def energy_at(self, at: datetime) -> float:
        points = list(self.energy) or [(self.start, 0.0)]
        if at <= points[0][0]:
            return points[0][1] if at == points[0][0] else 0.0
        for (t0, e0), (t1, e1) in zip(points, points[1:], strict=False):
            if t0 <= at <= t1:
                span = (t1 - t0).total_seconds()
                return e1 if span == 0 else e0 + (e1 - e0) * (at - t0).total_seconds() / span
        return points[-1][1]

    def time_of_energy(self, wh: float) -> datetime | None:
        points = list(self.energy)
        for (t0, e0), (t1, e1) in zip(points, points[1:], strict=False):
            if e0 < wh <= e1:
                return t0 + (t1 - t0) * ((wh - e0) / (e1 - e0))
        return None


@dataclass(frozen=True)
class CdrPeriod:
    start: datetime
    end: datetime
    energy_wh: float
    charging_s: float
    parking_s: float
    element: dict[str, int]  # dimension -> index of the tariff element that priced it


@dataclass(frozen=True)
class Cdr:
    """A charge detail record: the periods, totals and each dimension's cost (fen)."""

    periods: tuple[CdrPeriod, ...]
    total_energy_wh: float
    total_time_s: float
    total_parking_s: float
    billed: dict[str, Decimal]  # dimension -> billed volume after step size (Wh, s, s, sessions)
    costs: dict[str, int] = field(default_factory=dict)  # dimension -> fen
    idle_minutes: int = 0
    idle_fee_fen: int = 0
    tariff_total_fen: int = 0  # OCPI total (after min/max price)
    total_fen: int = 0         # with the idle fee

    def summary(self) -> dict[str, object]:
        return {"energy_wh": round(self.total_energy_wh), "time_s": round(self.total_time_s),
                "parking_s": round(self.total_parking_s),
                "billed": {k: str(v) for k, v in self.billed.items()}, "costs_fen": self.costs,
                "idle_minutes": self.idle_minutes, "idle_fee_fen": self.idle_fee_fen,
                "tariff_total_fen": self.tariff_total_fen, "total_fen": self.total_fen,
                "periods": len(self.periods)}


def _hm(text: str) -> int:
    hours, _, minutes = text.partition(":")
    value = int(hours) * 60 + int(minutes)
    if not 0 <= value <= 1440:
        raise MoneyError(f"time {text!r} is not HH:MM")
    return value


def _local(tz: ZoneInfo, utc: datetime) -> datetime:
    return utc.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)


def _utc(tz: ZoneInfo, local: datetime) -> datetime:
    return local.replace(tzinfo=tz).astimezone(UTC).replace(tzinfo=None)


def _matches(r: Restrictions, local: datetime, energy_wh: float, elapsed_s: float) -> bool:
    if r.start_time is not None or r.end_time is not None:
        minute = local.hour * 60 + local.minute + local.second / 60
        start = _hm(r.start_time) if r.start_time is not None else 0
        end = _hm(r.end_time) if r.end_time is not None else 1440
        inside = start <= minute < end if start <= end else (minute >= start or minute < end)
        if not inside:
            return False
    if r.day_of_week and local.weekday() not in r.day_of_week:
        return False
    kwh = Decimal(str(energy_wh)) / 1000
    if r.min_kwh is not None and kwh < r.min_kwh:
        return False
    if r.max_kwh is not None and kwh >= r.max_kwh:
        return False
    if r.min_duration is not None and elapsed_s < r.min_duration:
        return False
    return not (r.max_duration is not None and elapsed_s >= r.max_duration)


def _cuts(tariff: Tariff, usage: Usage, tz: ZoneInfo) -> list[datetime]:
    """Every instant in the session where the priced element of some dimension may change."""
    start, end = usage.start, usage.session_end
    cuts = {start, end}
    if usage.parking_start is not None and start < usage.parking_start < end:
        cuts.add(usage.parking_start)
    first_day = _local(tz, start).date() - timedelta(days=1)
    days = (_local(tz, end).date() - first_day).days + 2
    for element in tariff.elements:
        r = element.restrictions
        for n in range(days):
            day: date = first_day + timedelta(days=n)
            marks = [0] if r.day_of_week else []
            marks += [_hm(t) for t in (r.start_time, r.end_time) if t is not None]
            for minute in marks:
                cuts.add(_utc(tz, datetime.combine(day, time()) + timedelta(minutes=minute)))
        for seconds in (r.min_duration, r.max_duration):
            if seconds is not None:
                cuts.add(start + timedelta(seconds=seconds))
        for kwh in (r.min_kwh, r.max_kwh):
            if kwh is not None:
                reached = usage.time_of_energy(float(kwh) * 1000)
                if reached is not None:
                    cuts.add(reached)
    return sorted(c for c in cuts if start <= c <= end)


def compute_cdr(tariff: Tariff, usage: Usage) -> Cdr:
    """Cost a session with a tariff (OCPI 2.2.1 CDR rules); see the module docstring."""
    start, end = usage.start, usage.session_end
    if not (PRICED_FROM <= start <= PRICED_UNTIL and PRICED_FROM <= end <= PRICED_UNTIL
            and (end - start).total_seconds() <= MAX_PRICED_S):
        raise SessionTimesError(f"times {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} cannot "
                                "be priced (a charger's wrong clock?)")
    tz = ZoneInfo(tariff.tz)
    cuts = _cuts(tariff, usage, tz)
    periods: list[CdrPeriod] = []
    volume: dict[str, Decimal] = {d: Decimal(0) for d in _UNIT}
    cost: dict[str, Decimal] = {d: Decimal(0) for d in _UNIT}
    last: dict[str, PriceComponent] = {}
    for a, b in zip(cuts, cuts[1:], strict=False):
        if b <= a:
            continue
        seconds = (b - a).total_seconds()
        parking = usage.parking_start is not None and a >= usage.parking_start
        energy = max(0.0, usage.energy_at(b) - usage.energy_at(a))
        amounts = {"ENERGY": energy, "TIME": 0.0 if parking else seconds,
                   "PARKING_TIME": seconds if parking else 0.0}
        local = _local(tz, a)
        so_far = usage.energy_at(a)
        elapsed = (a - usage.start).total_seconds()
        chosen: dict[str, int] = {}
        for dimension, amount in amounts.items():
            if amount <= 0:
                continue
            for index, element in enumerate(tariff.elements):
                component = element.component(dimension)
                if component is not None and _matches(element.restrictions, local, so_far, elapsed):
                    chosen[dimension] = index
                    # Float noise of the meter's differences (2149.9999999 Wh for a register
                    # read in tenths) must not decide a half fen: to the thousandth.
                    exact = Decimal(str(round(amount, 3)))
                    volume[dimension] += exact
                    cost[dimension] += exact / _UNIT[dimension] * component.price
                    last[dimension] = component
                    break
        periods.append(CdrPeriod(a, b, energy, amounts["TIME"], amounts["PARKING_TIME"], chosen))
    billed: dict[str, Decimal] = {}
    for dimension, component in last.items():
        # Step size once, on the session total, at the price of the last period.
        step = Decimal(component.step_size)
        total = volume[dimension]
        rounded = Decimal(math.ceil(total / step)) * step if step > 1 else total
        cost[dimension] += (rounded - total) / _UNIT[dimension] * component.price
        billed[dimension] = rounded
    costs = {d: to_fen(c) for d, c in cost.items() if d in billed}
    flat = _flat(tariff, usage, tz)
    if flat is not None:
        costs["FLAT"] = to_fen(flat)
        billed["FLAT"] = Decimal(1)
    tariff_total = sum(costs.values())
    if tariff.min_price_fen is not None:
        tariff_total = max(tariff_total, tariff.min_price_fen)
    if tariff.max_price_fen is not None:
        tariff_total = min(tariff_total, tariff.max_price_fen)
    idle_minutes, fee = 0, 0
    if tariff.idle is not None and usage.parking_start is not None and usage.parking_end is not None:
        idle_minutes, fee = idle_fee(tariff.idle, usage.parking_start, usage.parking_end)
    return Cdr(tuple(periods), usage.energy_at(usage.session_end),
               sum(p.charging_s for p in periods), sum(p.parking_s for p in periods), billed,
               costs, idle_minutes, fee, tariff_total, tariff_total + fee)


def _flat(tariff: Tariff, usage: Usage, tz: ZoneInfo) -> Decimal | None:
    """A FLAT component is charged once: that of the first element holding at the start."""
    local = _local(tz, usage.start)
    for element in tariff.elements:
        component = element.component("FLAT")
        if component is not None and _matches(element.restrictions, local, 0.0, 0.0):
            return component.price
    return None


# --- the operator's shorthand (`cocharge tariff set`) ------------------------------------------

def simple_tariff(per_kwh: Decimal, per_hour: Decimal | None = None,
                  tod: Sequence[tuple[str, str, Decimal]] = (), idle: IdleFeeRule | None = None,
                  min_price_fen: int | None = None, max_price_fen: int | None = None,
                  parking_per_hour: Decimal | None = None, flat: Decimal | None = None,
                  energy_step_wh: int = 1, time_step_s: int = 1,
                  tz: str = "Asia/Shanghai", feed_in_per_kwh: Decimal | None = None) -> Tariff:
    """Per-kWh price with optional per-hour charging time, time-of-day energy prices
    (start, end, price per kWh; checked first), parking and flat fees, an idle fee."""
    elements = [TariffElement((PriceComponent("ENERGY", price, energy_step_wh),),
                              Restrictions(start_time=a, end_time=b)) for a, b, price in tod]
    base = [PriceComponent("ENERGY", per_kwh, energy_step_wh)]
    if per_hour is not None:
        base.append(PriceComponent("TIME", per_hour, time_step_s))
    if parking_per_hour is not None:
        base.append(PriceComponent("PARKING_TIME", parking_per_hour, time_step_s))
    if flat is not None:
        base.append(PriceComponent("FLAT", flat))
    elements.append(TariffElement(tuple(base)))
    if min_price_fen is not None and max_price_fen is not None and min_price_fen > max_price_fen:
        raise MoneyError("the minimum price is above the maximum price")
    return Tariff(tuple(elements), min_price_fen, max_price_fen, idle, tz, feed_in_per_kwh)


def tariff_to_json(tariff: Tariff) -> dict[str, object]:
    return {
        "elements": [{
            "price_components": [{"type": c.type, "price": str(c.price), "step_size": c.step_size}
                                 for c in e.components],
            "restrictions": {k: v for k, v in {
                "start_time": e.restrictions.start_time, "end_time": e.restrictions.end_time,
                "day_of_week": sorted(e.restrictions.day_of_week) or None,
                "min_kwh": str(e.restrictions.min_kwh) if e.restrictions.min_kwh is not None else None,
                "max_kwh": str(e.restrictions.max_kwh) if e.restrictions.max_kwh is not None else None,
                "min_duration": e.restrictions.min_duration,
                "max_duration": e.restrictions.max_duration}.items() if v is not None},
        } for e in tariff.elements],
        "min_price_fen": tariff.min_price_fen,
        "max_price_fen": tariff.max_price_fen,
        "idle": None if tariff.idle is None else {
            "grace_s": tariff.idle.grace_s, "fen_per_minute": tariff.idle.fen_per_minute,
            "cap_fen": tariff.idle.cap_fen},
        "tz": tariff.tz,
        **({"feed_in_per_kwh": str(tariff.feed_in_per_kwh)}
           if tariff.feed_in_per_kwh is not None else {}),
    }


def tariff_from_json(data: dict[str, object]) -> Tariff:
    elements = []
    for raw in data["elements"]:  # type: ignore[attr-defined]
        r = raw.get("restrictions") or {}
        elements.append(TariffElement(
            tuple(PriceComponent(c["type"], Decimal(c["price"]), int(c.get("step_size", 1)))
                  for c in raw["price_components"]),
            Restrictions(r.get("start_time"), r.get("end_time"), frozenset(r.get("day_of_week") or ()),
                         Decimal(r["min_kwh"]) if "min_kwh" in r else None,
                         Decimal(r["max_kwh"]) if "max_kwh" in r else None,
                         r.get("min_duration"), r.get("max_duration"))))
    idle = data.get("idle")
    return Tariff(tuple(elements), data.get("min_price_fen"),  # type: ignore[arg-type]
                  data.get("max_price_fen"),  # type: ignore[arg-type]
                  IdleFeeRule(**idle) if isinstance(idle, dict) else None,
                  str(data.get("tz") or "Asia/Shanghai"),
                  Decimal(str(data["feed_in_per_kwh"])) if data.get("feed_in_per_kwh") else None)


def per_kwh(tariff: Tariff) -> Decimal | None:
    """The unrestricted energy price (what a budget buys with; what the calculator compares)."""
    for element in tariff.elements:
        if element.restrictions == Restrictions():
            component = element.component("ENERGY")
            if component is not None:
                return component.price
    return None
