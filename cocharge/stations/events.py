"""The version-neutral vocabulary the gateway speaks to the stations core.

OCPP 1.6 and 2.0.1 differ only in `cocharge.gateway`; everything behind it uses these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from cocharge.store.schema import ENERGY_REGISTER as _ENERGY_REGISTER


class Admission(StrEnum):
    ACCEPTED = "Accepted"
    PENDING = "Pending"
    REJECTED = "Rejected"


class AuthStatus(StrEnum):
    """Result of checking an idTag/idToken; each OCPP version maps it to its own enum."""

    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    UNKNOWN = "Unknown"
    # The sharing rules refuse (2.0.1 names; OCPP 1.6 answers Blocked).
    NOT_AT_THIS_TIME = "NotAtThisTime"
    NOT_AT_THIS_LOCATION = "NotAtThisLocation"
    # Not enough money to start (settlement/funds.py): 2.0.1 NoCredit, 1.6 Blocked.
    NO_CREDIT = "NoCredit"
    # A token that cannot be used at all (a revoked ISO 15118 contract certificate).
    INVALID = "Invalid"


@dataclass(frozen=True)
class StationBooted:
    station_id: str
    protocol: str
    vendor: str
    model: str
    serial: str | None = None
    firmware: str | None = None


@dataclass(frozen=True)
class ConnectorStatus:
    station_id: str
    connector_id: int
    status: str
    error_code: str | None
    at: datetime


class MeterSample(NamedTuple):
    """One sampled value, energy in Wh and power in W whatever unit the charger used (a
    named tuple: made for every sample of every meter value, at half a dataclass's cost)."""

    at: datetime
    measurand: str
    value: float
    unit: str | None = None
    phase: str | None = None
    context: str | None = None


ENERGY_REGISTER = _ENERGY_REGISTER  # one spelling: the store's


@dataclass(frozen=True)
class SessionStarted:
    """OCPP 1.6 StartTransaction: the central system assigns the transaction id."""

    station_id: str
    connector_id: int
    id_tag: str
    at: datetime
    meter_start_wh: int
    clock: str | None = None  # what the charger's clock said when it was not used
    charger_at: str | None = None  # the charger's own start time then (repeats match on it)


@dataclass(frozen=True)
class SessionEnded:
    """OCPP 1.6 StopTransaction."""

    station_id: str
    tx_ref: str
    at: datetime
    meter_stop_wh: int
    reason: str | None
    id_tag: str | None
    samples: list[MeterSample] = field(default_factory=list)
    clock: str | None = None


@dataclass(frozen=True)
class TransactionEvent:
    """OCPP 2.0.1 TransactionEvent: the charger owns the transaction id and numbers its events."""

    station_id: str
    tx_ref: str
    event_type: str  # Started | Updated | Ended
    seq_no: int
    at: datetime
    connector_id: int | None
    id_tag: str | None
    stop_reason: str | None
    samples: list[MeterSample] = field(default_factory=list)
    offline: bool = False
    charging_state: str | None = None  # Charging | EVConnected | SuspendedEV | SuspendedEVSE | Idle
    clock: str | None = None
    protocol: str = "2.0.1"  # or "2.1"
    # 2.1: the cost the charger calculated itself (costDetails): (total, idle part) in fen
    charger_cost: tuple[int, int] | None = None
    charger_tariff: str | None = None  # 2.1: the tariff id the charger prices it with


@dataclass(frozen=True)
class MeterReport:
    """Meter values outside a transaction event (1.6 MeterValues, 2.0.1 MeterValues)."""

    station_id: str
    connector_id: int
    tx_ref: str | None
    samples: list[MeterSample]
    clock: str | None = None


@dataclass(frozen=True)
class StationNotice:
    """Something a station reported that is kept for the operator (security, firmware, events)."""

    station_id: str
    kind: str
    at: datetime
    payload: dict[str, object]
