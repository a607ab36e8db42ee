"""A charger's clock is evidence, not truth (docs/ocpp-errors.md, "Charger clocks").

Chargers without a battery-backed clock come back from a power cut in 1970 or 2000; others
send 0001-01-01 or 9999-12-31. A timestamp is used as the charger sent it when it lies within
[received - clock_past_s, received + clock_future_s] of the moment we received it (the past
window covers a charger's offline queue); otherwise the receive time is used, and what the
charger said is kept beside it (the session's `clock` note). Samples that then share a time
keep the order they arrived in (the store orders meter values by time, then arrival), so a
session's first and last register readings stay its first and last. Every stored time is
thus one that pricing, statements, the API and the CLI can compute with, and no price
depends on a broken clock.

A station's boot is not a bound: a transaction queued before a reboot is sent after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from cocharge.gateway.rpc import RpcError
from cocharge.store.db import utcnow


def parse_time(value: str) -> datetime:
    """An OCPP timestamp as naive UTC; a charger's bad timestamp is its error, not ours."""
    try:
        if value[-1:] == "Z" and value[-2:-1].isdigit():  # the usual form: no zone to convert
            parsed = datetime.fromisoformat(value[:-1])
            if parsed.tzinfo is None:
                return parsed
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError):
        raise RpcError("type", "bad timestamp", f"not an ISO 8601 timestamp: {value!r}") from None
    return parsed


def iso(value: datetime) -> str:
    """A naive UTC datetime as an OCPP timestamp."""
    return value.replace(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Stamp(NamedTuple):
    """A time to use, and the charger's own text when that was not it (a named tuple: one
    for every timestamp of every message)."""

    at: datetime
    charger: str | None = None


def clock_note(what: str, stamps: list[Stamp]) -> str | None:
    """What a session keeps of the charger's wrong times in one message (None: all right)."""
    wrong = [s for s in stamps if s.charger is not None]
    if not wrong:
        return None
    more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
    return f"{what}: charger said {wrong[0].charger}{more}, used {iso(wrong[0].at)}"


@dataclass(frozen=True)
class ChargerClock:
    past_s: float = 31 * 86400
    future_s: float = 900
    _past: timedelta = field(init=False, repr=False, compare=False)
    _future: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_past", timedelta(seconds=self.past_s))
        object.__setattr__(self, "_future", timedelta(seconds=self.future_s))

    def ahead(self, text: str, horizon_s: float) -> datetime | None:
        """A time a charger gives for the future (an EV's departure): None when it is not
        between now (less the clock tolerance) and `horizon_s` ahead."""
        at, received = parse_time(text), utcnow()
        if received - timedelta(seconds=self.future_s) <= at <= received + timedelta(seconds=horizon_s):
            return at
        return None

    def read(self, text: str, received: datetime | None = None) -> Stamp:
        """One timestamp of a message received at `received` (now)."""
        return self.read_all([text], received)[0]

    def read_all(self, texts: list[str], received: datetime | None = None) -> list[Stamp]:
        """The timestamps of one message received at `received` (now)."""
        received = received or utcnow()
        # Believed within [received - past_s, received + future_s] (the module docstring).
        earliest, latest = received - self._past, received + self._future
        stamps = []
        for text in texts:
            at = parse_time(text)
            stamps.append(Stamp(at) if earliest <= at <= latest else Stamp(received, text[:40]))
        return stamps
