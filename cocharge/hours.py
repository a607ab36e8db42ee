"""Opening hours: weekly windows such as 'mon-fri 19:00-23:00' or 'fri 22:00-02:00', as
pure values. The sharing policy (stations/policy.py) opens and closes chargers with them,
the revenue calculator (settlement/revenue.py) estimates what they sell; this module
imports nothing of cocharge, so both layers can use it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_SPEC = re.compile(r"^[a-z]{3}(-[a-z]{3})?(,[a-z]{3}(-[a-z]{3})?)*$")
_TIME = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


class RuleError(ValueError):
    """Rules, a booking or a group that cannot be accepted; the message says why."""


# --- opening windows ------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """Open on `days` (0 = Monday) from `start` to `end` minutes after local midnight.

    `end <= start` crosses midnight: the part after midnight belongs to the next day
    (`fri 22:00-02:00` is open until 02:00 on Saturday). `00:00-24:00` is the whole day.
    """

    days: frozenset[int]
    start: int
    end: int

    def __str__(self) -> str:
        return f"{_days_text(self.days)} {_hhmm(self.start)}-{_hhmm(self.end)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _days_text(days: frozenset[int]) -> str:
    runs: list[str] = []
    ordered = sorted(days)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(DAYS[ordered[i]] if i == j else f"{DAYS[ordered[i]]}-{DAYS[ordered[j]]}")
        i = j + 1
    return ",".join(runs)


def _minutes(text: str, what: str) -> int:
    match = _TIME.match(text)
    if not match or (match.group(1) == "24" and match.group(2) != "00"):
        raise RuleError(f"{what} {text!r} is not a time of day HH:MM (00:00 to 24:00)")
    return int(match.group(1)) * 60 + int(match.group(2))


def parse_window(text: str) -> Window:
    """`mon-fri 19:00-23:00`, `sat,sun 00:00-24:00`, `fri 22:00-02:00` (crosses midnight)."""
    parts = text.strip().lower().split()
    if len(parts) != 2 or "-" not in parts[1]:
        raise RuleError(f"window {text!r}: write it as DAYS HH:MM-HH:MM, e.g. 'mon-fri 19:00-23:00'")
    day_spec, hours = parts
    if day_spec in ("daily", "all", "everyday"):
        day_spec = "mon-sun"
    if not _DAY_SPEC.match(day_spec):
        raise RuleError(f"window {text!r}: days are mon..sun, as a list or range ('mon-fri', 'sat,sun')")
    days: set[int] = set()
    for item in day_spec.split(","):
        first, _, last = item.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise RuleError(f"window {text!r}: unknown day in {item!r} (use mon tue wed thu fri sat sun)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
    start_text, _, end_text = hours.partition("-")
    start, end = _minutes(start_text, "start"), _minutes(end_text, "end")
    if start == 24 * 60:
        raise RuleError(f"window {text!r}: a window cannot start at 24:00")
    if start == end:
        raise RuleError(f"window {text!r}: start and end are equal; for a whole day write 00:00-24:00")
    return Window(frozenset(days), start, end)


def day_intervals(window: Window, day: date) -> list[tuple[datetime, datetime]]:
    """The local (naive) intervals `window` opens that begin on `day`."""
    if day.weekday() not in window.days:
        return []
    midnight = datetime.combine(day, time())
    start = midnight + timedelta(minutes=window.start)
    end = midnight + timedelta(minutes=window.end if window.end > window.start else window.end + 1440)
    return [(start, end)]
