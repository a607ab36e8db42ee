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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

# The referral acceleration reaches the referrer and the referrer's referrer, no further.
MAX_REFERRAL_GENERATIONS = 2

# Events settlement raises itself; every other event in the table is reported from outside
# (CLI, MQTT, API), and an operator may add new ones (`rewards rules set events.NAME ...`).
SESSION_EVENTS = ("first_green_session", "group_initiator", "group_member", "overstay",
                  "booking_no_show")
EXTERNAL_EVENTS = ("oem_activated", "post_approved", "post_liked_50", "post_featured",
                   "like_given", "answer_accepted")
EVENTS = SESSION_EVENTS + EXTERNAL_EVENTS
# What a badge can count: a session measure, events of one type, or a monthly green share.
BADGE_MEASURES = ("green_kwh", "group_streak", "stations", "group_lead", "event",
                  "green_share_pct")
PERIODS = {"day": 1, "week": 7, "month": 30}
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")

DEFAULT_RULES: dict[str, Any] = {
    "initial_credit": 100,
    # coins, credit (negative: a penalty) and optionally a limit per period ("limit": 10,
    # "period": "month"): events beyond it are acknowledged and earn nothing.
    "events": {
        "first_green_session": {"credit": 8},
        "group_initiator": {"credit": 20, "coins": 20},
        "group_member": {"coins": 10},  # every member on completion, the initiator too
        "overstay": {"credit": -5},
        "booking_no_show": {"credit": -10},
        "oem_activated": {"coins": 200, "credit": 10},  # starter reward, once per member
        "post_approved": {"coins": 15, "credit": 5},
        "post_liked_50": {"coins": 20},
        "post_featured": {"coins": 50, "credit": 10},
        "like_given": {"credit": 1},
        "answer_accepted": {"credit": 5},
    },
    "badges": {
        "earth_guardian": {"name": "Earth Guardian", "green_kwh": 100},
        "group_charger": {"name": "Group Charger", "group_streak": 3},
        # The source's Navigator (领航员) leads a convoy: a group initiator who was its
        # highest-credit member when it formed.
        "navigator": {"name": "Navigator", "group_lead": 1},
        "explorer": {"name": "Explorer", "stations": 5},
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
    "discounts": {"group_pct": "15", "green_pct": "10"},
    "group": {"min_members": 5, "min_credit": 0},
    # Coins and released green points paying part of a session (members who chose it).
    "redeem": {"coin_value_cny": "0.01", "coins_max_share_pct": "50",
               "points_max_share_pct": "50"},
    # Membership levels and the OEM brand table ("default" for a brand not listed).
    "membership": {
        "levels": {"gold": {"quota_kwh": 50}},
        "brands": {"default": {"level": "gold", "months": 6}},
    },
    "payout": {"minimum_cny": "100"},
    # A member's money at the charger (settlement/funds.py): a credit line by credit score
    # ("charge first, pay later" above a score; none by default), and the prepaid limits of
    # a named single-purpose prepaid card (5,000 CNY: docs/settlement.md says where from).
    # guarantee_payees: the platform pays hosts (and the others) their whole share at once and
    # carries what drivers owe as its own risk; false: a share is paid as it is collected.
    "funds": {"credit_lines": [], "max_balance_cny": "5000", "max_topup_cny": "5000",
              "guarantee_payees": False},
    # A host's or property's tax estimate on a statement: an estimate, not advice.
    "tax": {"name": "individual income tax on property leasing income (财产租赁所得), monthly",
            "source": "PRC Individual Income Tax Law (2018) art. 3 and 6: 20 % of the month's "
                      "income less 800 CNY when it is at most 4,000 CNY, else less 20 %",
            "rate_pct": "20", "small_below_cny": "4000", "small_deduction_cny": "800",
            "large_deduction_pct": "20"},
}


class RulesError(ValueError):
    """A rule table (or a change to it) that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class Reward:
    coins: int = 0
    credit: int = 0
    limit: int | None = None      # at most this many rewarded events per period
    period: str = "month"


@dataclass(frozen=True)
class Level:
    name: str
    quota_wh: int = 0
    free_charging: bool = False


@dataclass(frozen=True)
class Brand:
    name: str
    level: str
    months: int


@dataclass(frozen=True)
class Tax:
    name: str
    source: str
    rate_pct: Decimal
    small_below_fen: int
    small_deduction_fen: int
    large_deduction_pct: Decimal

    def estimate(self, income_fen: int) -> int:
        """The month's tax on `income_fen` (fen, rounded half up); 0 for no income."""
        if income_fen <= 0:
            return 0
        if income_fen <= self.small_below_fen:
            taxable = Decimal(max(0, income_fen - self.small_deduction_fen))
        else:
            taxable = Decimal(income_fen) * (100 - self.large_deduction_pct) / 100
        return int((taxable * self.rate_pct / 100).quantize(Decimal(1), rounding="ROUND_HALF_UP"))


@dataclass(frozen=True)
class BadgeRule:
    key: str
    name: str
    measure: str
    threshold: int
    event: str | None = None         # measure "event": events of this type ...
    within_days: int | None = None   # ... within this many days (None: ever)
    months: int = 1                  # measure "green_share_pct": in this many months in a row
    coins: int = 0                   # granted with the badge
    free_days: int = 0               # free charging days granted with the badge


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
    group_pct: Decimal = Decimal(15)
    green_pct: Decimal = Decimal(10)
    group_min_members: int = 5
    group_min_credit: int = 0
    coin_value: Decimal = Decimal("0.01")
    coins_max_share_pct: Decimal = Decimal(50)
    points_max_share_pct: Decimal = Decimal(50)
    levels: Mapping[str, Level] = field(default_factory=dict)
    brands: Mapping[str, Brand] = field(default_factory=dict)
    payout_minimum_fen: int = 10_000
    credit_lines: tuple[tuple[int, int], ...] = ()  # (minimum credit score, line in fen)
    max_balance_fen: int = 500_000
    max_topup_fen: int = 500_000
    guarantee_payees: bool = False
    tax: Tax | None = None
    body: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def reward(self, event: str) -> Reward:
        return self.events.get(event, Reward())

    def brand(self, name: str) -> Brand:
        """The brand's row of the OEM table, else the "default" row."""
        found = self.brands.get(name.upper()) or self.brands.get(name) or self.brands.get("default")
        if found is None:
            raise RulesError(f"no brand {name!r} and no default row in membership.brands")
        return found

    def external_events(self) -> list[str]:
        return [e for e in self.events if e not in SESSION_EVENTS]


def _dec(value: Any, what: str, low: Decimal | None = Decimal(0), high: Decimal | None = None) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise RulesError(f"{what}: {value!r} is not a number") from None
    if not number.is_finite() or (low is not None and number < low) or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise RulesError(f"{what}: {value!r} must be {bounds}")
    return number


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise RulesError(f"{what}: {value!r} must be true or false")


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
        raise RulesError(f"unknown rule section {min(unknown)!r}; the sections are "
                         + ", ".join(DEFAULT_RULES))
    # A table stored before a section existed takes that section's defaults.
    body = {**{k: v for k, v in DEFAULT_RULES.items() if k not in body}, **body}
    events: dict[str, Reward] = {}
    for event, reward in dict(body.get("events", {})).items():
        if not EVENT_NAME.match(event):
            raise RulesError(f"event name {event!r}: 2 to 40 lower-case letters, digits and _, "
                             "starting with a letter")
        if not isinstance(reward, Mapping):
            raise RulesError(f"events.{event}: write the reward as coins=N,credit=N")
        extra = set(reward) - {"coins", "credit", "limit", "period"}
        if extra:
            raise RulesError(f"events.{event}: a reward has coins, credit, limit and period, "
                             f"not {min(extra)!r}")
        coins = _int(reward.get("coins", 0), f"events.{event}.coins", 0)
        limit = reward.get("limit")
        period = str(reward.get("period", "month"))
        if period not in PERIODS:
            raise RulesError(f"events.{event}.period: one of {', '.join(PERIODS)}")
        events[event] = Reward(coins, _int(reward.get("credit", 0), f"events.{event}.credit"),
                               None if limit is None else _int(limit, f"events.{event}.limit", 1),
                               period)
    for needed in SESSION_EVENTS:
        events.setdefault(needed, Reward())
    badges = []
    for key, rule in dict(body.get("badges", {})).items():
        if not isinstance(rule, Mapping):
            raise RulesError(f"badges.{key}: write a badge as name=...,stations=5 (one threshold)")
        measures = [m for m in BADGE_MEASURES if m in rule]
        if len(measures) != 1:
            raise RulesError(f"badges.{key}: give exactly one threshold, one of "
                             + ", ".join(BADGE_MEASURES))
        measure = measures[0]
        extra = set(rule) - {"name", measure, "count", "within_days", "months", "coins", "free_days"}
        if extra:
            raise RulesError(f"badges.{key}: unknown field {min(extra)!r}")
        event = None
        if measure == "event":
            event = str(rule["event"])
            if event not in events:
                raise RulesError(f"badges.{key}.event: no event {event!r} in the events table")
            threshold = _int(rule.get("count", 1), f"badges.{key}.count", 1)
        else:
            threshold = _int(rule[measure], f"badges.{key}.{measure}", 1)
        within = rule.get("within_days")
        badges.append(BadgeRule(
            key, str(rule.get("name") or key), measure, threshold, event,
            None if within is None else _int(within, f"badges.{key}.within_days", 1),
            _int(rule.get("months", 1), f"badges.{key}.months", 1),
            _int(rule.get("coins", 0), f"badges.{key}.coins", 0),
            _int(rule.get("free_days", 0), f"badges.{key}.free_days", 0)))
        if measure == "green_share_pct" and threshold > 100:
            raise RulesError(f"badges.{key}.green_share_pct: at most 100")
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
    discounts = dict(body.get("discounts", {}))
    group = dict(body.get("group", {}))
    redeem = dict(body.get("redeem", {}))
    membership = dict(body.get("membership", {}))
    levels: dict[str, Level] = {}
    for name, level in dict(membership.get("levels", {})).items():
        if not isinstance(level, Mapping) or set(level) - {"quota_kwh", "free_charging"}:
            raise RulesError(f"membership.levels.{name}: write a level as quota_kwh=N")
        kwh = _dec(level.get("quota_kwh", 0), f"membership.levels.{name}.quota_kwh",
                   Decimal(0), Decimal(100_000))
        levels[name] = Level(name, int(kwh * 1000), bool(level.get("free_charging", False)))
    levels.setdefault("free-days", Level("free-days", 0, True))
    brands: dict[str, Brand] = {}
    for name, brand in dict(membership.get("brands", {})).items():
        if not isinstance(brand, Mapping) or set(brand) - {"level", "months"}:
            raise RulesError(f"membership.brands.{name}: write a brand as level=gold,months=8")
        level_name = str(brand.get("level", "gold"))
        if level_name not in levels:
            raise RulesError(f"membership.brands.{name}.level: no level {level_name!r} in "
                             "membership.levels")
        brands[name] = Brand(name, level_name,
                             _int(brand.get("months", 6), f"membership.brands.{name}.months", 1))
    tax = dict(body.get("tax", {}))
    payout = dict(body.get("payout", {}))
    funds = dict(body.get("funds", {}))
    lines = []
    for i, line in enumerate(funds.get("credit_lines", [])):
        if not isinstance(line, (list, tuple)) or len(line) != 2:
            raise RulesError(f"funds.credit_lines[{i}]: write a line as [minimum credit score, CNY]")
        lines.append((_int(line[0], f"funds.credit_lines[{i}] score", 0),
                      int(_dec(line[1], f"funds.credit_lines[{i}] CNY", Decimal(0),
                               Decimal(100_000)) * 100)))
    if [s for s, _ in lines] != sorted({s for s, _ in lines}):
        raise RulesError("funds.credit_lines: scores must increase")
    min_members = _int(group.get("min_members", 5), "group.min_members", 2)
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
        group_pct=_dec(discounts.get("group_pct", 15), "discounts.group_pct", Decimal(0), Decimal(100)),
        green_pct=_dec(discounts.get("green_pct", 10), "discounts.green_pct", Decimal(0), Decimal(100)),
        group_min_members=min_members,
        group_min_credit=_int(group.get("min_credit", 0), "group.min_credit", 0),
        coin_value=_dec(redeem.get("coin_value_cny", "0.01"), "redeem.coin_value_cny",
                        Decimal(0), Decimal(100)),
        coins_max_share_pct=_dec(redeem.get("coins_max_share_pct", 50), "redeem.coins_max_share_pct",
                                 Decimal(0), Decimal(100)),
        points_max_share_pct=_dec(redeem.get("points_max_share_pct", 50),
                                  "redeem.points_max_share_pct", Decimal(0), Decimal(100)),
        levels=levels, brands=brands,
        payout_minimum_fen=int(_dec(payout.get("minimum_cny", 100), "payout.minimum_cny",
                                    Decimal("0.01"), Decimal(1_000_000)) * 100),
        credit_lines=tuple(lines),
        guarantee_payees=_bool(funds.get("guarantee_payees", False), "funds.guarantee_payees"),
        max_balance_fen=int(_dec(funds.get("max_balance_cny", 5000), "funds.max_balance_cny",
                                 Decimal("0.01"), Decimal(1_000_000)) * 100),
        max_topup_fen=int(_dec(funds.get("max_topup_cny", 5000), "funds.max_topup_cny",
                               Decimal("0.01"), Decimal(1_000_000)) * 100),
        tax=Tax(str(tax.get("name", "tax")), str(tax.get("source", "")),
                _dec(tax.get("rate_pct", 20), "tax.rate_pct", Decimal(0), Decimal(100)),
                int(_dec(tax.get("small_below_cny", 4000), "tax.small_below_cny") * 100),
                int(_dec(tax.get("small_deduction_cny", 800), "tax.small_deduction_cny") * 100),
                _dec(tax.get("large_deduction_pct", 20), "tax.large_deduction_pct",
                     Decimal(0), Decimal(100))),
        body=copy.deepcopy(dict(body)),
    )


DEFAULTS = parse_rules(DEFAULT_RULES)


def _parse_value(key: str, text: str) -> Any:
    """A value for `rules set`: `coins=20,credit=5` for an event, `3000=2.5,9000=3` for
    tiers, `50,30` for referral percentages, JSON otherwise (a bare word is a string). A
    row of a table (an event, a badge, a level, a brand) is written `field=value,...`."""
    path = key.split(".")
    if (len(path) == 2 and path[0] in ("events", "badges")) or (
            len(path) == 3 and path[:2] in (["membership", "levels"], ["membership", "brands"])):
        row: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise RulesError(f"{key}: write the row as field=value,... e.g. coins=20,credit=5")
            value = value.strip()
            row[name.strip()] = (int(value) if value.lstrip("-").isdigit()
                                 else {"true": True, "false": False}.get(value, value))
        return row
    if key == "funds.credit_lines":
        lines = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            score, sep, cny = part.partition("=")
            if not sep:
                raise RulesError("funds.credit_lines: write lines as SCORE=CNY,... e.g. 120=50,150=200")
            lines.append([score.strip(), cny.strip()])
        return lines
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
    if text.strip().lower() == "none" and len(path) >= 2 and path[0] in (
            "events", "badges", "membership"):
        if path[-1] not in node:
            raise RulesError(f"rule key {key!r}: there is no such row to remove")
        if key.startswith("events.") and path[-1] in SESSION_EVENTS:
            raise RulesError(f"{key}: settlement raises this event; set it to coins=0 instead")
        del node[path[-1]]
    else:
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
    group_leads: int = 0              # formed groups it initiated as their highest-credit member
    green_months: tuple[Decimal, ...] = ()  # green share (%) of past months, the last first


def green_share_reached(shares: tuple[Decimal, ...], pct: int, months: int) -> bool:
    """The last `months` months in a row each had at least `pct` % green energy."""
    return len(shares) >= months and all(share >= pct for share in shares[:months])


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
    if facts.group_role in ("initiator", "member"):
        # Completion coins: every member of the formed group, the initiator too.
        earned.append(Earned("group_member", rules.reward("group_member")))
    measure = {
        "green_kwh": (facts.green_wh_before + (facts.energy_wh if green else 0)) // 1000,
        "group_streak": facts.group_streak_before + 1 if facts.group_role else 0,
        "stations": len(facts.stations_before | {facts.station_id}),
        "group_lead": facts.group_leads,
    }
    for badge in rules.badges:
        if badge.key in facts.badges_held or badge.measure == "event":
            continue  # event counts are checked when an event arrives (loyalty.apply_event)
        if badge.measure == "green_share_pct":
            reached = green_share_reached(facts.green_months, badge.threshold, badge.months)
        else:
            reached = measure[badge.measure] >= badge.threshold
        if reached:
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
