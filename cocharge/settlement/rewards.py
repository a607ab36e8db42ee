"""The reward rules (SPEC §4): the operator's rule table and what an event earns. Pure.

The table is a JSON document stored with a version number (`cocharge rewards rules
show|set`); every change makes a new version. It holds:

- `events`: event -> reward (`coins`, `credit`; a negative credit is a penalty).
- `badges`: badge -> the threshold that earns it, once (`green_kwh`, `group_streak`,
  `stations`).
- `initial_credit`: every member's credit score before any event (never below 0).
- `green`: the grid emission factor for certificates (value kg/kWh, year, source).
- `points`: green-point tiers, the daily release, the referral acceleration (at most
  two generations: deeper payouts are pyramid selling, SPEC §4) and the value of a
  point in the liability report.
- `pool`: the pool-backed points model.
- `dividend`: the optional dividend pool (off by default): a share of the day's platform
  revenue, paid by green points held, capped at a multiple of each member's spend.

Units on the ledger: COIN and CREDIT are whole units; GREEN_PT is counted in
hundredths of a point, POOL_PT in millionths; CNY in fen.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

# The referral acceleration reaches the referrer and the referrer's referrer, no further.
MAX_REFERRAL_GENERATIONS = 2

SESSION_EVENTS = ("first_green_session", "group_initiator", "group_member", "overstay",
                  "booking_no_show")
EXTERNAL_EVENTS = ("oem_activated", "post_approved", "post_liked_50", "post_featured",
                   "like_given", "answer_accepted")
EVENTS = SESSION_EVENTS + EXTERNAL_EVENTS
BADGE_MEASURES = ("green_kwh", "group_streak", "stations")

DEFAULT_RULES: dict[str, Any] = {
    "initial_credit": 100,
    "events": {
        "first_green_session": {"credit": 8},
        "group_initiator": {"credit": 20, "coins": 20},
        "group_member": {"coins": 10},
        "overstay": {"credit": -5},
        "booking_no_show": {"credit": -10},
        "oem_activated": {"coins": 200, "credit": 10},
        "post_approved": {"coins": 15, "credit": 5},
        "post_liked_50": {"coins": 20},
        "post_featured": {"coins": 50, "credit": 10},
        "like_given": {"credit": 1},
        "answer_accepted": {"credit": 5},
    },
    "badges": {
        "earth_guardian": {"name": "Earth Guardian", "green_kwh": 100},
        "group_charger": {"name": "Group Charger", "group_streak": 3},
        "navigator": {"name": "Navigator", "stations": 5},
    },
    "green": {"factor_kg_per_kwh": "0.5366", "factor_year": 2022,
              "factor_source": "MEE/NBS, China national grid average, published Dec 2024"},
    "points": {
        "tiers": [["3000", "2.5"], ["9000", "3"], ["27000", "3.5"], ["51000", "4"]],
        "daily_release_pct": "1.2",
        "referral_pct": ["50", "30"],
        "point_value_cny": "0.01",
    },
    "pool": {"margin_share_pct": "30", "buyer_share_pct": "70", "sell_fee_pct": "10",
             "initial_price": "1.00"},
    "dividend": {"enabled": False, "revenue_share_pct": "10", "cap_multiple": "2"},
}


class RulesError(ValueError):
    """A rule table (or a change to it) that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class Reward:
    coins: int = 0
    credit: int = 0


@dataclass(frozen=True)
class BadgeRule:
    key: str
    name: str
    measure: str
    threshold: int


@dataclass(frozen=True)
class Rules:
    version: int
    initial_credit: int
    events: Mapping[str, Reward]
    badges: tuple[BadgeRule, ...]
    factor: Decimal
    factor_year: int
    factor_source: str
    tiers: tuple[tuple[Decimal, Decimal], ...]  # (minimum single purchase in CNY, multiplier)
    daily_release_pct: Decimal
    referral_pct: tuple[Decimal, ...]
    point_value: Decimal
    margin_share_pct: Decimal
    buyer_share_pct: Decimal
    sell_fee_pct: Decimal
    initial_price: Decimal
    dividend_enabled: bool = False
    dividend_share_pct: Decimal = Decimal(10)
    dividend_cap_multiple: Decimal = Decimal(2)
    body: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def reward(self, event: str) -> Reward:
        return self.events.get(event, Reward())


def _dec(value: Any, what: str, low: Decimal | None = Decimal(0), high: Decimal | None = None) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise RulesError(f"{what}: {value!r} is not a number") from None
    if not number.is_finite() or (low is not None and number < low) or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise RulesError(f"{what}: {value!r} must be {bounds}")
    return number


def _int(value: Any, what: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError:
            raise RulesError(f"{what}: {value!r} is not a whole number") from None
    if low is not None and value < low:
        raise RulesError(f"{what}: {value} must be at least {low}")
    return int(value)


def check_referral(pcts: list[Any]) -> tuple[Decimal, ...]:
    """The referral percentages by generation; more than two generations is refused."""
    if len(pcts) > MAX_REFERRAL_GENERATIONS:
        raise RulesError(
            f"points.referral_pct has {len(pcts)} generations; at most {MAX_REFERRAL_GENERATIONS} "
            "are allowed: rewards that depend on a downline deeper than two levels are pyramid "
            "selling under Chinese law (SPEC §4), so cocharge does not pay them")
    return tuple(_dec(p, f"points.referral_pct[{i}]", Decimal(0), Decimal(100))
                 for i, p in enumerate(pcts))


def parse_rules(body: Mapping[str, Any], version: int = 0) -> Rules:
    """Check a rule table and turn it into values; RulesError names the first problem."""
    unknown = set(body) - set(DEFAULT_RULES)
    if unknown:
        raise RulesError(f"unknown rule section {sorted(unknown)[0]!r}; the sections are "
                         + ", ".join(DEFAULT_RULES))
    events: dict[str, Reward] = {}
    for event, reward in dict(body.get("events", {})).items():
        if event not in EVENTS:
            raise RulesError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
        extra = set(reward) - {"coins", "credit"}
        if extra:
            raise RulesError(f"events.{event}: a reward has coins and credit, not {sorted(extra)[0]!r}")
        coins = _int(reward.get("coins", 0), f"events.{event}.coins", 0)
        events[event] = Reward(coins, _int(reward.get("credit", 0), f"events.{event}.credit"))
    badges = []
    for key, rule in dict(body.get("badges", {})).items():
        measures = [m for m in BADGE_MEASURES if m in rule]
        if len(measures) != 1:
            raise RulesError(f"badges.{key}: give exactly one threshold, one of "
                             + ", ".join(BADGE_MEASURES))
        badges.append(BadgeRule(key, str(rule.get("name") or key), measures[0],
                                _int(rule[measures[0]], f"badges.{key}.{measures[0]}", 1)))
    green = dict(body.get("green", {}))
    points = dict(body.get("points", {}))
    tiers = []
    for i, tier in enumerate(points.get("tiers", [])):
        if not isinstance(tier, list | tuple) or len(tier) != 2:
            raise RulesError(f"points.tiers[{i}]: write a tier as [minimum CNY, multiplier]")
        tiers.append((_dec(tier[0], f"points.tiers[{i}] minimum", Decimal("0.01")),
                      _dec(tier[1], f"points.tiers[{i}] multiplier", Decimal(1), Decimal(100))))
    if [t[0] for t in tiers] != sorted({t[0] for t in tiers}):
        raise RulesError("points.tiers: minimums must increase")
    pool = dict(body.get("pool", {}))
    dividend = dict(body.get("dividend", {}))
    enabled = dividend.get("enabled", False)
    if not isinstance(enabled, bool):
        raise RulesError(f"dividend.enabled: {enabled!r} must be true or false")
    return Rules(
        version=version,
        initial_credit=_int(body.get("initial_credit", 100), "initial_credit", 0),
        events=events, badges=tuple(badges),
        factor=_dec(green.get("factor_kg_per_kwh", "0.5366"), "green.factor_kg_per_kwh",
                    Decimal(0), Decimal(5)),
        factor_year=_int(green.get("factor_year", 2022), "green.factor_year", 1990),
        factor_source=str(green.get("factor_source", "")),
        tiers=tuple(tiers),
        daily_release_pct=_dec(points.get("daily_release_pct", "1.2"), "points.daily_release_pct",
                               Decimal("0.01"), Decimal(100)),
        referral_pct=check_referral(list(points.get("referral_pct", []))),
        point_value=_dec(points.get("point_value_cny", "0.01"), "points.point_value_cny"),
        margin_share_pct=_dec(pool.get("margin_share_pct", 30), "pool.margin_share_pct",
                              Decimal(0), Decimal(100)),
        buyer_share_pct=_dec(pool.get("buyer_share_pct", 70), "pool.buyer_share_pct",
                             Decimal(0), Decimal(100)),
        sell_fee_pct=_dec(pool.get("sell_fee_pct", 10), "pool.sell_fee_pct", Decimal(0), Decimal(100)),
        initial_price=_dec(pool.get("initial_price", "1.00"), "pool.initial_price", Decimal("0.0001")),
        dividend_enabled=enabled,
        dividend_share_pct=_dec(dividend.get("revenue_share_pct", 10), "dividend.revenue_share_pct",
                                Decimal(0), Decimal(100)),
        dividend_cap_multiple=_dec(dividend.get("cap_multiple", 2), "dividend.cap_multiple",
                                   Decimal(0), Decimal(100)),
        body=copy.deepcopy(dict(body)),
    )


DEFAULTS = parse_rules(DEFAULT_RULES)


def _parse_value(key: str, text: str) -> Any:
    """A value for `rules set`: `coins=20,credit=5` for an event, `3000=2.5,9000=3` for
    tiers, `50,30` for referral percentages, JSON otherwise (a bare word is a string)."""
    if key.startswith("events."):
        reward: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise RulesError(f"{key}: write the reward as coins=N,credit=N")
            value = value.strip()
            reward[name.strip()] = int(value) if value.lstrip("-").isdigit() else value
        return reward
    if key == "points.tiers":
        tiers = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            minimum, sep, mult = part.partition("=")
            if not sep:
                raise RulesError("points.tiers: write tiers as MIN=MULTIPLIER,... e.g. 3000=2.5,9000=3")
            tiers.append([minimum.strip(), mult.strip()])
        return tiers
    if key == "points.referral_pct":
        return [p.strip() for p in text.split(",") if p.strip()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def with_change(body: Mapping[str, Any], key: str, text: str) -> dict[str, Any]:
    """The rule table with one dotted key set (`events.post_featured`, `initial_credit`,
    `badges.navigator.stations`, `points.referral_pct`); checked whole."""
    new = copy.deepcopy(dict(body))
    path = key.split(".")
    if not all(path):
        raise RulesError(f"rule key {key!r}: write it as SECTION.NAME, e.g. events.like_given")
    node: dict[str, Any] = new
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RulesError(f"rule key {key!r}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = _parse_value(key, text)
    parse_rules(new)
    return new


# --- what an event earns --------------------------------------------------------------------

@dataclass(frozen=True)
class SessionFacts:
    """What settlement knows about a finished session and the member's history before it."""

    tag: str
    station_id: str
    energy_wh: int
    green: bool                       # at a green charger
    group_role: str | None = None     # "initiator" | "member" of a formed group, else None
    green_sessions_before: int = 0
    green_wh_before: int = 0
    group_streak_before: int = 0      # consecutive group sessions just before this one
    stations_before: frozenset[str] = frozenset()
    badges_held: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Earned:
    event: str              # an event name, or "badge"
    reward: Reward = Reward()
    badge: BadgeRule | None = None


def session_rewards(rules: Rules, facts: SessionFacts) -> list[Earned]:
    """The rewards of one finished session (badges included), in a fixed order."""
    earned: list[Earned] = []
    green = facts.green and facts.energy_wh > 0
    if green and facts.green_sessions_before == 0:
        earned.append(Earned("first_green_session", rules.reward("first_green_session")))
    if facts.group_role == "initiator":
        earned.append(Earned("group_initiator", rules.reward("group_initiator")))
    elif facts.group_role == "member":
        earned.append(Earned("group_member", rules.reward("group_member")))
    measure = {
        "green_kwh": (facts.green_wh_before + (facts.energy_wh if green else 0)) // 1000,
        "group_streak": facts.group_streak_before + 1 if facts.group_role else 0,
        "stations": len(facts.stations_before | {facts.station_id}),
    }
    for badge in rules.badges:
        if badge.key not in facts.badges_held and measure[badge.measure] >= badge.threshold:
            earned.append(Earned("badge", badge=badge))
    return [e for e in earned if e.badge or e.reward != Reward()]


def credit_change(current: int, delta: int) -> int:
    """The change a reward makes to a credit score: a penalty never takes it below 0."""
    return max(delta, -current)


# --- green certificates ---------------------------------------------------------------------

def co2_grams(energy_wh: int, factor_kg_per_kwh: Decimal) -> int:
    """CO2 estimate in grams (kg/kWh is g/Wh), rounded half up: 50 kWh x 0.5366 = 26,830 g."""
    return int((Decimal(energy_wh) * factor_kg_per_kwh + Decimal("0.5")).to_integral_value(
        rounding="ROUND_FLOOR"))
