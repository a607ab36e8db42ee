"""Our tariffs as OCPP 2.1 `TariffType` (I07-I12: local cost calculation at the charger),
and a charger's `costDetails` read back: pure functions of values.

What a 2.1 charger is given is the host's tariff as we price it (cocharge/settlement/
tariff.py); our settlement stays the source of truth, and the charger's figure is checked
against it (settle.py). The translation is exact or refused (`Untranslatable`, the charger
then keeps showing our running cost as a 2.0.1 charger does):
- ENERGY per kWh -> energy.prices[].priceKwh; TIME per hour -> chargingTime priceMinute;
  PARKING_TIME per hour -> idleTime priceMinute; FLAT -> fixedFee priceFixed;
- restrictions -> conditions: time of day (local time at the charger), days of the week,
  energy so far (Wh), time since the start (s); the first price whose conditions hold
  applies, as with our elements;
- min/max price -> minCost/maxCost;
- the overstay idle fee (grace, CNY per minute, cap) -> an idleTime price from the grace
  until the cap is reached. We bill it in full minutes after the car left (SPEC §2): the
  charger's idle figure is shown to the driver, and the comparison leaves it out;
- step sizes have no 2.1 form: such a tariff is not sent.
Prices are final in CNY (no tax is added): exclTax and inclTax are the same.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from cocharge.settlement.money import to_fen
from cocharge.settlement.tariff import Restrictions, Tariff

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class Untranslatable(ValueError):
    """A tariff a 2.1 charger cannot be given exactly (the message says why)."""


def _number(value: Decimal) -> float | int:
    """A price as a JSON number: exact for the prices we keep (fen, or a per-minute price
    with at most six decimals); anything finer is refused rather than rounded."""
    if value != value.quantize(Decimal("0.000001")):
        raise Untranslatable(f"the price {value} has no exact form in six decimals")
    return int(value) if value == value.to_integral_value() else float(value)


def _per_minute(per_hour: Decimal) -> float | int:
    return _number(per_hour / 60)


def _conditions(r: Restrictions, fixed: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if r.start_time is not None:
        found["startTimeOfDay"] = r.start_time
    if r.end_time is not None:
        found["endTimeOfDay"] = r.end_time
    if r.day_of_week:
        found["dayOfWeek"] = [DAYS[d] for d in sorted(r.day_of_week)]
    timed = {"minEnergy": r.min_kwh and r.min_kwh * 1000, "maxEnergy": r.max_kwh and r.max_kwh * 1000,
             "minTime": r.min_duration, "maxTime": r.max_duration}
    if fixed and any(v is not None for v in timed.values()):
        raise Untranslatable("a flat fee limited by energy or duration has no 2.1 form")
    for key, value in timed.items():
        if value is not None:
            found[key] = int(value) if key.endswith("Time") else _number(Decimal(value))
    return found


def _price(fen: int) -> dict[str, Any]:
    amount = _number(Decimal(fen) / 100)
    return {"exclTax": amount, "inclTax": amount}


def tariff_type(tariff: Tariff, currency: str = "CNY") -> dict[str, Any]:
    """The 2.1 TariffType (camelCase, as sent) of `tariff`; its id is made from its content,
    so the same tariff always has the same id (a changed one, a new id)."""
    energy: list[dict[str, Any]] = []
    charging: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    fixed: list[dict[str, Any]] = []
    for element in tariff.elements:
        for component in element.components:
            if component.step_size != 1:
                raise Untranslatable(f"{component.type} is billed in steps of "
                                     f"{component.step_size}: 2.1 tariffs have no step sizes")
            if component.type == "FLAT":
                fixed.append({"priceFixed": _number(component.price),
                              **_with(_conditions(element.restrictions, fixed=True))})
                continue
            entry = ({"priceKwh": _number(component.price)} if component.type == "ENERGY"
                     else {"priceMinute": _per_minute(component.price)})
            entry.update(_with(_conditions(element.restrictions)))
            {"ENERGY": energy, "TIME": charging, "PARKING_TIME": idle}[component.type].append(entry)
    if tariff.idle is not None:
        if idle:
            raise Untranslatable("a parking-time price and an overstay fee together have no "
                                 "2.1 form")
        rule = tariff.idle
        if rule.fen_per_minute <= 0:
            pass
        elif rule.cap_fen % rule.fen_per_minute:
            raise Untranslatable("the overstay cap is not a whole number of minutes' fees")
        else:
            minutes = rule.cap_fen // rule.fen_per_minute
            idle.append({"priceMinute": _number(Decimal(rule.fen_per_minute) / 100),
                         "conditions": {"minIdleTime": rule.grace_s,
                                        "maxIdleTime": rule.grace_s + minutes * 60}})
    if not energy and not charging and not fixed:
        raise Untranslatable("the tariff prices neither energy, time nor the session")
    body: dict[str, Any] = {"currency": currency}
    if energy:
        body["energy"] = {"prices": energy}
    if charging:
        body["chargingTime"] = {"prices": charging}
    if idle:
        body["idleTime"] = {"prices": idle}
    if fixed:
        body["fixedFee"] = {"prices": fixed}
    if tariff.min_price_fen is not None:
        body["minCost"] = _price(tariff.min_price_fen)
    if tariff.max_price_fen is not None:
        body["maxCost"] = _price(tariff.max_price_fen)
    body["description"] = [{"format": "UTF8", "language": "zh", "content": describe(tariff)}]
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {"tariffId": f"cc-{digest}", **body}


MEMBER_PREFIX = "cc-m-"  # the id of a member's own price (a discounted copy of the host's)


def member_price(tariff: dict[str, Any], pct: Decimal, why: str) -> dict[str, Any]:
    """The host's tariff (a TariffType) with `pct` percent off every price but the overstay
    fee (a promotion lowers what the driver pays for charging, as settlement does), for
    AuthorizeResponse.tariff; its own id (raises Untranslatable for an inexact price)."""
    factor = (100 - pct) / 100
    body = {k: v for k, v in tariff.items() if k != "tariffId"}

    def scaled(value: Any) -> Any:
        return _number(Decimal(str(value)) * factor)

    for key, field in (("energy", "priceKwh"), ("chargingTime", "priceMinute"),
                       ("fixedFee", "priceFixed")):
        if key in body:
            body[key] = {**body[key], "prices": [{**p, field: scaled(p[field])}
                                                 for p in body[key]["prices"]]}
    for key in ("minCost", "maxCost"):
        if key in body:
            body[key] = {k: scaled(v) for k, v in body[key].items()}
    body["description"] = [{"format": "UTF8", "language": "zh",
                            "content": f"{why} -{pct}%: " + body["description"][0]["content"]}]
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {"tariffId": f"{MEMBER_PREFIX}{digest}", **body}


def _with(conditions: dict[str, Any]) -> dict[str, Any]:
    return {"conditions": conditions} if conditions else {}


def price_parts(tariff: Tariff) -> dict[str, Any]:
    """The tariff's prices as data, for a page to say in its reader's language: each
    component (type ENERGY | TIME | PARKING_TIME | FLAT, CNY with 2 decimals, the local
    hours it applies in) and the overstay fee (CNY a minute, after so many minutes)."""
    parts = []
    for element in tariff.elements:
        for c in element.components:
            when = element.restrictions
            parts.append({"type": c.type, "cny": f"{c.price:.2f}",
                          "from": when.start_time, "to": when.end_time})
    overstay = None
    if tariff.idle is not None and tariff.idle.fen_per_minute:
        overstay = {"cny_per_min": f"{tariff.idle.fen_per_minute / 100:.2f}",
                    "after_min": tariff.idle.grace_s // 60}
    return {"parts": parts, "overstay": overstay}


def describe(tariff: Tariff) -> str:
    """The tariff in one line for the charger's display."""
    shown = price_parts(tariff)
    parts = []
    for part in shown["parts"]:
        unit = {"ENERGY": "/kWh", "TIME": "/h", "PARKING_TIME": "/h parked", "FLAT": ""}[
            part["type"]]
        window = f" {part['from']}-{part['to']}" if part["from"] else ""
        parts.append(f"{part['cny']}{unit}{window}")
    if shown["overstay"] is not None:
        parts.append(f"overstay {shown['overstay']['cny_per_min']}/min after "
                     f"{shown['overstay']['after_min']} min")
    return ("CNY " + ", ".join(parts))[:512]


def _get(data: dict[str, Any], camel: str) -> Any:
    """A field by its camelCase name, or snake_case as the gateway reads payloads."""
    if camel in data:
        return data[camel]
    return data.get("".join(f"_{c.lower()}" if c.isupper() else c for c in camel))


def charger_cost_fen(cost_details: dict[str, Any]) -> tuple[int, int] | None:
    """A charger's costDetails as (total, idle part) in fen; None when the charger could not
    calculate (failureToCalculate) or gave no total."""
    if _get(cost_details, "failureToCalculate"):
        return None
    total_cost = _get(cost_details, "totalCost") or {}
    total = _get(total_cost, "total") or {}
    amount = _get(total, "inclTax")
    amount = _get(total, "exclTax") if amount is None else amount
    if amount is None:
        return None
    idle = _get(total_cost, "idleTime") or {}
    idle_amount = _get(idle, "inclTax")
    idle_amount = _get(idle, "exclTax") if idle_amount is None else idle_amount
    return to_fen(Decimal(str(amount))), to_fen(Decimal(str(idle_amount or 0)))
