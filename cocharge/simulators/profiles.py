"""Charging profiles as a simulated charger holds and combines them (OCPP 1.6 §3.13,
2.0.1 K): what limit is in force on a connector at a moment, and when it changes next.

- A TxProfile (of the connector's transaction) overrides the TxDefaultProfiles; among
  profiles of one purpose the highest stack level in effect wins (a connector's own
  TxDefaultProfile before connector 0's at the same level).
- The station's maximum (ChargePointMaxProfile / ChargingStationMaxProfile) caps the sum of
  its connectors: the simulator shares it equally between the connectors charging.
- A profile is in effect from its schedule's start (Absolute: startSchedule; Relative: the
  transaction's start; Recurring: the last daily/weekly repeat) for its duration (none: for
  ever) and within validFrom / validTo; its limit is that of the last period begun.
- 2.1: a Dynamic profile counts from its start like an Absolute one; UpdateDynamicSchedule
  moves its one period (`updated`). A period in operation mode CentralSetpoint has a
  setpoint: a negative one has a bidirectional car give energy back (`setpoint_at`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

MAX = "Max"  # ChargePointMaxProfile (1.6) and ChargingStationMaxProfile (2.0.1)


def purpose_of(name: str) -> str:
    return MAX if name in ("ChargePointMaxProfile", "ChargingStationMaxProfile") else name


@dataclass(frozen=True)
class Profile:
    connector: int  # 0: the station
    id: int
    stack_level: int
    purpose: str  # TxProfile | TxDefaultProfile | Max
    kind: str  # Absolute | Relative | Recurring | Dynamic (2.1)
    unit: str  # A | W
    periods: tuple[tuple[float, float], ...]  # (start s, limit)
    start: datetime | None = None
    duration: float | None = None
    recurrency: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    tx_id: str | None = None
    phases: int | None = None  # numberPhases of the first period
    setpoints: tuple[float | None, ...] = ()  # 2.1: each period's CentralSetpoint, if any


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text)


def from_ocpp(connector: int, profile: dict[str, Any]) -> Profile:
    """A profile as the ocpp library hands it (snake_case; 2.0.1's schedule list or 1.6's
    one schedule)."""
    schedule = profile["charging_schedule"]
    if isinstance(schedule, list):
        schedule = schedule[0]
    periods = schedule["charging_schedule_period"]
    tx = profile.get("transaction_id")
    return Profile(
        connector, int(profile.get("id", profile.get("charging_profile_id", 0))),
        int(profile["stack_level"]), purpose_of(profile["charging_profile_purpose"]),
        profile["charging_profile_kind"], schedule["charging_rate_unit"],
        tuple((float(p["start_period"]), float(p["limit"])) for p in periods),
        _parse(schedule.get("start_schedule")), schedule.get("duration"),
        profile.get("recurrency_kind"), _parse(profile.get("valid_from")),
        _parse(profile.get("valid_to")), str(tx) if tx is not None else None,
        periods[0].get("number_phases"),
        tuple(p.get("setpoint") if p.get("operation_mode") == "CentralSetpoint" else None
              for p in periods))


def updated(p: Profile, update: dict[str, Any]) -> Profile:
    """A Dynamic profile's one period moved by UpdateDynamicSchedule (snake_case)."""
    limit = update.get("limit", p.periods[0][1])
    setpoint = update.get("setpoint", p.setpoints[0] if p.setpoints else None)
    return replace(p, periods=((0.0, float(limit)),), setpoints=(setpoint,))


def schedule_start(p: Profile, t: datetime, tx_start: datetime | None) -> datetime | None:
    if p.kind == "Relative":
        return tx_start
    if p.kind == "Recurring" and p.start is not None:
        step = timedelta(days=7 if p.recurrency == "Weekly" else 1)
        if t < p.start:
            return p.start
        return p.start + step * ((t - p.start) // step)
    return p.start


def period_at(p: Profile, t: datetime, tx_start: datetime | None) -> int | None:
    """Which of the profile's periods is in force at `t`; None when it is not in effect."""
    if (p.valid_from and t < p.valid_from) or (p.valid_to and t >= p.valid_to):
        return None
    start = schedule_start(p, t, tx_start)
    if start is None:
        return None
    elapsed = (t - start).total_seconds()
    if elapsed < 0 or (p.duration is not None and elapsed >= p.duration):
        return None
    found = None
    for index, (begin, _) in enumerate(p.periods):
        if begin <= elapsed + 1e-9:
            found = index
    return found


def limit_at(p: Profile, t: datetime, tx_start: datetime | None) -> float | None:
    """The profile's limit at `t` (its own unit), None when not in effect."""
    index = period_at(p, t, tx_start)
    return None if index is None else p.periods[index][1]


def changes_after(p: Profile, t: datetime, tx_start: datetime | None) -> Iterable[datetime]:
    start = schedule_start(p, t, tx_start)
    if start is not None:
        for begin, _ in p.periods:
            yield start + timedelta(seconds=begin)
        if p.duration is not None:
            yield start + timedelta(seconds=p.duration)
        if p.kind == "Recurring":
            yield start + timedelta(days=7 if p.recurrency == "Weekly" else 1)
    for edge in (p.valid_from, p.valid_to):
        if edge is not None:
            yield edge


def _best(found: list[tuple[int, int, float]]) -> float | None:
    return max(found)[2] if found else None


def composite(profiles: Iterable[Profile], connector: int, tx_id: str | None,
              tx_start: datetime | None, t: datetime, sharing: int,
              to_amps: dict[str, float]) -> float | None:
    """The current (A) allowed on `connector` at `t`; None: no limit. `sharing` is how many
    connectors share the station maximum; `to_amps` converts a W limit (by unit) to A."""
    tx: list[tuple[int, int, float]] = []
    default: list[tuple[int, int, float]] = []
    station: list[tuple[int, int, float]] = []
    for p in profiles:
        if p.connector not in (0, connector) and p.purpose != MAX:
            continue
        if p.purpose == "TxProfile" and (tx_id is None or p.connector != connector
                                         or (p.tx_id is not None and p.tx_id != tx_id)):
            continue
        if p.purpose == "TxDefaultProfile" and tx_start is None and p.kind == "Relative":
            continue  # a Relative default counts from a transaction
        limit = limit_at(p, t, tx_start)
        if limit is None:
            continue
        amps = limit / to_amps["W"] if p.unit == "W" else limit
        rank = (p.stack_level, 1 if p.connector == connector else 0, amps)
        {"TxProfile": tx, "TxDefaultProfile": default, MAX: station}[p.purpose].append(rank)
    chosen = _best(tx) if tx else _best(default)
    cap = _best(station)
    if cap is not None:
        cap /= max(1, sharing)
        chosen = cap if chosen is None else min(chosen, cap)
    return chosen


def setpoint_at(profiles: Iterable[Profile], connector: int, tx_id: str | None,
                tx_start: datetime | None, t: datetime, to_w: float) -> float | None:
    """2.1: the setpoint (W) of the transaction's profile in force at `t` (its TxProfile of
    the highest stack level, else a default's), when its period has one."""
    ranked = []
    for p in profiles:
        if p.purpose == "TxProfile" and not (tx_id is not None and p.connector == connector
                                             and p.tx_id in (None, tx_id)):
            continue
        if p.purpose == MAX or p.connector not in (0, connector):
            continue
        index = period_at(p, t, tx_start)
        if index is None:
            continue
        setpoint = p.setpoints[index] if index < len(p.setpoints) else None
        rank = (1 if p.purpose == "TxProfile" else 0, p.stack_level)
        ranked.append((rank, None if setpoint is None else
                       setpoint * (to_w if p.unit == "A" else 1.0)))
    return max(ranked, key=lambda r: r[0])[1] if ranked else None


def next_change(profiles: Iterable[Profile], t: datetime, tx_start: datetime | None
                ) -> datetime | None:
    later = [c for p in profiles for c in changes_after(p, t, tx_start) if c > t]
    return min(later, default=None)
