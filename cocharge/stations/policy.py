"""The sharing policy: who may charge where and when, and when a session must stop.

Everything that decides a sharing question lives here, as pure functions of values:
no database, no clock (`now` is a parameter), no network. The gateway and the
controller do the I/O and act on the decisions; tests drive a whole week of opening
hours in milliseconds.

Times: `now`, booking slots and cutoffs are naive UTC datetimes (as stored); opening
windows are wall-clock times in the station's time zone (`SharingRules.tz`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cocharge.hours import RuleError, Window, day_intervals, parse_window

# --- rules ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SharingRules:
    """An owner's sharing rules for a station (or one of its connectors).

    No windows means open around the clock. `allowed_tags`/`allowed_groups` empty
    means every member; `allowed_models` empty means every vehicle.
    """

    windows: tuple[Window, ...] = ()
    closed_dates: frozenset[date] = frozenset()
    allowed_tags: frozenset[str] = frozenset()
    allowed_groups: frozenset[str] = frozenset()
    allowed_models: frozenset[str] = frozenset()
    bookings: bool = True
    owner_tags: frozenset[str] = frozenset()
    # "I need my charger now": closed to everyone but the owner once the current session ends.
    owner_priority: bool = False
    tz: str = "Asia/Shanghai"
    min_credit: int = 0  # members below this credit score may not charge here


    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def hours_text(self) -> str:
        return "; ".join(str(w) for w in self.windows) if self.windows else "always open"

    def to_json(self) -> dict[str, object]:
        return {
            "windows": [str(w) for w in self.windows],
            "closed_dates": sorted(d.isoformat() for d in self.closed_dates),
            "allowed_tags": sorted(self.allowed_tags),
            "allowed_groups": sorted(self.allowed_groups),
            "allowed_models": sorted(self.allowed_models),
            "bookings": self.bookings,
            "owner_tags": sorted(self.owner_tags),
            "owner_priority": self.owner_priority,
            "tz": self.tz,
            "min_credit": self.min_credit,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> SharingRules:
        def strings(key: str) -> frozenset[str]:
            value = data.get(key) or []
            assert isinstance(value, list)
            return frozenset(str(v) for v in value)

        windows = data.get("windows") or []
        closed = data.get("closed_dates") or []
        assert isinstance(windows, list) and isinstance(closed, list)
        return check_rules(cls(
            windows=tuple(parse_window(str(w)) for w in windows),
            closed_dates=frozenset(date.fromisoformat(str(d)) for d in closed),
            allowed_tags=strings("allowed_tags"), allowed_groups=strings("allowed_groups"),
            allowed_models=strings("allowed_models"), bookings=bool(data.get("bookings", True)),
            owner_tags=strings("owner_tags"), owner_priority=bool(data.get("owner_priority", False)),
            tz=str(data.get("tz") or "Asia/Shanghai"), min_credit=int(str(data.get("min_credit") or 0))))


def check_rules(rules: SharingRules) -> SharingRules:
    if rules.min_credit < 0:
        raise RuleError(f"minimum credit {rules.min_credit}: a credit score is never below 0")
    try:
        rules.zone()
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(f"unknown time zone {rules.tz!r}: use an IANA name such as Asia/Shanghai") from None
    return rules


def _local(rules: SharingRules, utc_naive: datetime) -> datetime:
    return utc_naive.replace(tzinfo=UTC).astimezone(rules.zone()).replace(tzinfo=None)


def _utc(rules: SharingRules, local_naive: datetime) -> datetime:
    return local_naive.replace(tzinfo=rules.zone()).astimezone(UTC).replace(tzinfo=None)


def _open_intervals(rules: SharingRules, around: datetime, days: int) -> list[tuple[datetime, datetime]]:
    """Open intervals in UTC, merged, from a day before `around` to `days` after."""
    if not rules.windows:
        start = around - timedelta(days=1)
        intervals = [(start, around + timedelta(days=days))]
    else:
        local_day = _local(rules, around).date()
        intervals = []
        for offset in range(-1, days + 1):
            day = local_day + timedelta(days=offset)
            for window in rules.windows:
                for a, b in day_intervals(window, day):
                    intervals.append((_utc(rules, a), _utc(rules, b)))
    # Closed dates (local) cut their whole day out.
    for closed in rules.closed_dates:
        cut_a = _utc(rules, datetime.combine(closed, time()))
        cut_b = _utc(rules, datetime.combine(closed + timedelta(days=1), time()))
        pieces = []
        for a, b in intervals:
            if b <= cut_a or a >= cut_b:
                pieces.append((a, b))
                continue
            if a < cut_a:
                pieces.append((a, cut_a))
            if b > cut_b:
                pieces.append((cut_b, b))
        intervals = pieces
    intervals.sort()
    merged: list[tuple[datetime, datetime]] = []
    for a, b in intervals:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def open_until(rules: SharingRules, now: datetime) -> datetime | None:
    """The end of the open period containing `now` (None: closed now).

    A station open around the clock returns a time a week ahead: "no end in sight".
    """
    for a, b in _open_intervals(rules, now, 8):
        if a <= now < b:
            return b
    return None


def next_booking_start(bookings: Sequence[Booking], connector_id: int, tag: str,
                       now: datetime) -> datetime | None:
    """When another member's booking of this connector starts next (a session must end)."""
    return min((b.start for b in bookings
                if b.connector_id == connector_id and b.tag != tag and b.start > now), default=None)


def next_opening(rules: SharingRules, now: datetime) -> datetime | None:
    """When a closed station opens next (within two weeks), or None."""
    for a, _ in _open_intervals(rules, now, 15):
        if a > now:
            return a
    return None


def closed_reason(rules: SharingRules, now: datetime) -> str | None:
    """Why the station is closed to the public at `now`, or None when it is open."""
    local = _local(rules, now)
    if local.date() in rules.closed_dates and open_until(rules, now) is None:
        return f"closed on {local.date().isoformat()}"
    if open_until(rules, now) is None:
        return f"outside opening hours {rules.hours_text()}"
    return None


# --- members, bookings, decisions -----------------------------------------------------------

@dataclass(frozen=True)
class Member:
    tag: str
    groups: frozenset[str] = frozenset()
    vehicle_model: str | None = None
    credit: int | None = None  # the credit score (None: not known, not checked)


@dataclass(frozen=True)
class Booking:
    id: int
    connector_id: int
    tag: str
    start: datetime
    end: datetime
    group_id: int | None = None

    def holds(self, connector_id: int, at: datetime) -> bool:
        return self.connector_id == connector_id and self.start <= at < self.end

    def overlaps(self, other: Booking) -> bool:
        return (self.connector_id == other.connector_id
                and self.start < other.end and other.start < self.end)


class Verdict(Enum):
    """How a refusal is answered; 1.6 has only Blocked/Invalid, 2.0.1 says more."""

    ALLOWED = "Accepted"
    NOT_AT_THIS_TIME = "NotAtThisTime"
    NOT_AT_THIS_LOCATION = "NotAtThisLocation"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # "outside opening hours mon-fri 19:00-23:00", "booked by another member"
    verdict: Verdict = Verdict.ALLOWED
    booking: Booking | None = None  # the booking this start honours


def _hm(rules: SharingRules, at: datetime) -> str:
    return _local(rules, at).strftime("%H:%M")


def may_charge(rules: SharingRules, bookings: Sequence[Booking], member: Member,
               connector_id: int, now: datetime, reclaimed: bool = False) -> Decision:
    """May `member` start charging on `connector_id` at `now`?

    `reclaimed` says the owner has taken the charger back (owner-priority, current
    session over). The owner's own tags always may charge.
    """
    if member.tag in rules.owner_tags:
        return Decision(True, "the owner's own tag")
    held = next((b for b in bookings if b.holds(connector_id, now)), None)
    if held is not None:
        if held.tag == member.tag:
            return Decision(True, f"booked {_hm(rules, held.start)}-{_hm(rules, held.end)}",
                            booking=held)
        return Decision(False, f"booked by another member until {_hm(rules, held.end)}",
                        Verdict.NOT_AT_THIS_TIME)
    if reclaimed:
        return Decision(False, "the owner has taken the charger back", Verdict.NOT_AT_THIS_TIME)
    closed = closed_reason(rules, now)
    if closed is not None:
        return Decision(False, closed, Verdict.NOT_AT_THIS_TIME)
    return member_refusal(rules, member) or Decision(True, "open to members")


def member_refusal(rules: SharingRules, member: Member) -> Decision | None:
    """Whom the owner shares with (tags, groups, vehicle models, credit), whatever the hour:
    the refusal, or None. One place for the charger, bookings and local lists."""
    if member.tag in rules.owner_tags:
        return None
    if ((rules.allowed_tags or rules.allowed_groups) and member.tag not in rules.allowed_tags
            and not (member.groups & rules.allowed_groups)):
        return Decision(False, "the owner does not share this charger with this member",
                        Verdict.NOT_AT_THIS_LOCATION)
    if rules.allowed_models and (member.vehicle_model or "") not in rules.allowed_models:
        model = member.vehicle_model or "an unknown model"
        return Decision(False, f"vehicle {model} is not among the models allowed here "
                        f"({', '.join(sorted(rules.allowed_models))})", Verdict.NOT_AT_THIS_LOCATION)
    if rules.min_credit and member.credit is not None and member.credit < rules.min_credit:
        return Decision(False, f"credit score {member.credit} is below the {rules.min_credit} "
                        "the owner requires", Verdict.NOT_AT_THIS_LOCATION)
    return None


def may_charge_any(rules: SharingRules, bookings: Sequence[Booking], member: Member,
                   connectors: Iterable[int], now: datetime,
                   reclaimed: Iterable[int] = ()) -> Decision:
    """Authorize without a connector (OCPP Authorize): allowed if any connector allows it."""
    taken = set(reclaimed)
    decisions = [may_charge(rules, bookings, member, c, now, c in taken) for c in connectors]
    return next((d for d in decisions if d.allowed), decisions[0] if decisions else
                Decision(False, "the station has no connectors", Verdict.NOT_AT_THIS_LOCATION))


class LockState(Enum):
    """What the share lock must show on a connector."""

    OPEN = "open"          # operative, bay lock open
    BOOKED = "booked"      # operative, reserved for the booking's member, bay locked until they arrive
    CLOSED = "closed"      # inoperative, bay locked


def lock_state(rules: SharingRules, bookings: Sequence[Booking], connector_id: int,
               now: datetime, reclaimed: bool = False) -> tuple[LockState, Booking | None]:
    if any(b.holds(connector_id, now) for b in bookings):
        return LockState.BOOKED, next(b for b in bookings if b.holds(connector_id, now))
    if reclaimed or closed_reason(rules, now) is not None:
        return LockState.CLOSED, None
    return LockState.OPEN, None


def check_booking(rules: SharingRules, existing: Sequence[Booking], new: Booking,
                  now: datetime, connectors: int, member: Member | None = None) -> None:
    """Raise RuleError unless `new` can be booked: by a member the owner shares with, in the
    future, open, free."""
    if not rules.bookings:
        raise RuleError("the owner does not accept bookings at this station")
    refused = member_refusal(rules, member) if member is not None else None
    if refused is not None:
        raise RuleError(f"{member.tag if member else ''} cannot book here: {refused.reason}")
    if not 1 <= new.connector_id <= connectors:
        raise RuleError(f"the station has connectors 1..{connectors}, not {new.connector_id}")
    if new.end <= new.start:
        raise RuleError("a booking must end after it starts")
    if new.end <= now:
        raise RuleError("the slot is already over")
    if not any(a <= new.start and new.end <= b for a, b in _open_intervals(rules, new.start, 8)):
        raise RuleError(f"the slot is not inside the opening hours ({rules.hours_text()}"
                        + (", closed dates " + ", ".join(sorted(d.isoformat() for d in rules.closed_dates))
                           if rules.closed_dates else "") + ")")
    for other in existing:
        if other.overlaps(new):
            raise RuleError(f"connector {new.connector_id} is already booked "
                            f"{_hm(rules, other.start)}-{_hm(rules, other.end)} (booking {other.id})")


# --- cutoff ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SessionLimits:
    """What a member chose (or the rules impose) when a session starts."""

    budget_fen: int | None = None       # prepaid budget
    energy_wh: int | None = None        # an energy target
    quota_wh: int | None = None         # "quota only": the member's free energy left
    slot_end: datetime | None = None    # end of the booked slot
    window_end: datetime | None = None  # end of the owner's opening window
    next_booking: datetime | None = None  # another member's booking of this connector starts

    def deadline(self) -> datetime | None:
        """The earliest time-of-day limit (slot, window, next booking)."""
        return min((t for t in (self.slot_end, self.window_end, self.next_booking) if t), default=None)


@dataclass(frozen=True)
class Cutoff:
    energy_wh: int | None      # stop when this much energy is delivered (None: no energy limit)
    at: datetime | None        # stop at this time at the latest (UTC, None: no time limit)
    offset_s: int | None       # the same as seconds after the start, for a Relative TxProfile
    reason: str                # what ends first: budget, energy, quota, slot, window, booking


def energy_for_budget(budget_fen: int, price_per_kwh: Decimal) -> int:
    """Wh a budget buys at an energy price (CNY/kWh), rounded down: the bill never exceeds it.
    A free energy price makes the budget no limit (None is not returned: a huge value)."""
    if price_per_kwh <= 0:
        return 10**12
    return int((Decimal(budget_fen) * 10 / price_per_kwh).to_integral_value(ROUND_FLOOR))


def plan_cutoff(limits: SessionLimits, started: datetime, max_power_w: int,
                price_per_kwh: Decimal) -> Cutoff | None:
    """When must a session started at `started` stop? None: nothing limits it.

    An energy limit becomes a time at the connector's full power (the earliest the
    energy can be reached); the meter values re-check it as the session runs.
    """
    energies: list[tuple[int, str]] = []
    if limits.budget_fen is not None:
        energies.append((energy_for_budget(limits.budget_fen, price_per_kwh), "budget"))
    if limits.energy_wh is not None:
        energies.append((limits.energy_wh, "energy"))
    if limits.quota_wh is not None:
        energies.append((limits.quota_wh, "quota"))
    times: list[tuple[datetime, str]] = []
    if limits.slot_end is not None:
        times.append((limits.slot_end, "slot"))
    if limits.window_end is not None:
        times.append((limits.window_end, "window"))
    if limits.next_booking is not None:
        times.append((limits.next_booking, "booking"))
    if not energies and not times:
        return None
    energy_wh, energy_reason = min(energies) if energies else (None, "")
    candidates: list[tuple[float, str]] = [((t - started).total_seconds(), r) for t, r in times]
    if energy_wh is not None:
        candidates.append((seconds_for_energy(energy_wh, max_power_w), energy_reason))
    offset, reason = min(candidates)
    offset_s = max(0, math.ceil(offset))
    at = started + timedelta(seconds=offset_s)
    return Cutoff(energy_wh, at, offset_s, reason)


def seconds_for_energy(energy_wh: float, power_w: float) -> float:
    return max(0.0, energy_wh) * 3600 / power_w if power_w > 0 else 0.0


def energy_reached(cutoff: Cutoff, delivered_wh: float, tolerance: float) -> bool:
    """Has the session delivered its energy limit (within `tolerance`, a fraction of it)?"""
    if cutoff.energy_wh is None:
        return False
    return delivered_wh >= cutoff.energy_wh * (1 - tolerance)


def extended_offset(cutoff: Cutoff, elapsed_s: float, delivered_wh: float, max_power_w: int,
                    deadline_s: float | None) -> int | None:
    """The car drew less than full power: a later TxProfile end for the energy still due,
    never past the time limit (`deadline_s` after the start). None: nothing to extend."""
    assert cutoff.energy_wh is not None
    offset = math.ceil(elapsed_s + seconds_for_energy(cutoff.energy_wh - delivered_wh, max_power_w)) + 1
    if deadline_s is not None:
        if elapsed_s >= deadline_s:
            return None
        offset = min(offset, math.ceil(deadline_s))
    return offset


# --- group charging -------------------------------------------------------------------------

def group_bookings(tags: Sequence[str], connectors: int, start: datetime, end: datetime,
                   group_id: int) -> list[Booking]:
    """The slot shared out: members in join order over the connectors, in equal sub-slots.

    With C connectors and N members there are ceil(N / C) consecutive sub-slots; member
    i charges on connector i mod C in sub-slot i // C.
    """
    if not tags:
        return []
    rounds = math.ceil(len(tags) / connectors)
    step = (end - start) / rounds
    bookings = []
    for i, tag in enumerate(tags):
        k = i // connectors
        sub_start = start + step * k
        sub_end = end if k == rounds - 1 else start + step * (k + 1)
        bookings.append(Booking(0, i % connectors + 1, tag, sub_start.replace(microsecond=0),
                                sub_end.replace(microsecond=0), group_id))
    return bookings


def with_id(booking: Booking, booking_id: int) -> Booking:
    return replace(booking, id=booking_id)


# --- safety faults --------------------------------------------------------------------------

# OCPP 1.6 StatusNotification error codes that are safety faults.
SAFETY_ERROR_CODES_16 = {
    "OverCurrentFailure": "overcurrent",
    "GroundFailure": "ground fault",
    "HighTemperature": "over-temperature",
}
# OCPP 2.0.1 NotifyEvent (component, variable) pairs of the standard device model.
SAFETY_EVENTS_201 = {
    ("OverCurrentProtection", "Operated"): "overcurrent",
    ("RCD", "Tripped"): "ground fault",
    ("EVSE", "OverTemperature"): "over-temperature",
    ("ChargingStation", "OverTemperature"): "over-temperature",
}


def safety_fault_201(component: str, variable: str, actual_value: str, cleared: bool) -> str | None:
    """The safety fault a 2.0.1 event reports, if it is one (and not its clearing)."""
    kind = SAFETY_EVENTS_201.get((component, variable))
    if kind is None or cleared or actual_value.strip().lower() in ("false", "0", ""):
        return None
    return kind

