"""What a simulated charger is configured with and keeps: its settings, a clock that runs
fast, its sessions, and how a fault shows in each OCPP version."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import ocpp.messages

ocpp.messages.ASYNC_VALIDATION = False
log = logging.getLogger(__name__)

FAULT_STOP_REASONS = {
    "1.6": {"overcurrent": "EmergencyStop", "ground fault": "EmergencyStop",
            "over-temperature": "EmergencyStop"},
    "2.0.1": {"overcurrent": "OvercurrentFault", "ground fault": "GroundFault",
              "over-temperature": "EmergencyStop"},
}
FAULT_STOP_REASONS["2.1"] = FAULT_STOP_REASONS["2.0.1"]
FAULT_CODES_16 = {"overcurrent": "OverCurrentFailure", "ground fault": "GroundFailure",
                  "over-temperature": "HighTemperature"}
FAULT_EVENTS_201 = {"overcurrent": ("OverCurrentProtection", "Operated"),
                    "ground fault": ("RCD", "Tripped"),
                    "over-temperature": ("EVSE", "OverTemperature")}


@dataclass
class SimConfig:
    url: str
    station_id: str
    protocol: str = "1.6"  # or "2.0.1", "2.1"
    connectors: int = 1
    max_current_a: float = 16
    password: str | None = None
    speed: float = 1.0  # simulated seconds per real second
    meter_interval_s: float = 1.0  # real seconds between meter reports
    vendor: str = "cocharge-sim"
    model: str = "VirtualWallbox"
    # Real seconds a driver waits at a locked bay for the central system to open it.
    bay_wait_s: float = 5.0
    firmware: str = "1.0.0"
    # A firmware update downloads, then fails to install (a broken unit in a campaign).
    firmware_fails: bool = False
    # A new password: refused, or accepted and then used to reconnect (as OCPP asks).
    refuse_password: bool = False
    reconnect_on_password: bool = True
    # Certificates: the organisation its CSRs name (the operator's, as installed), the
    # central system's root it trusts from the factory (PEM), and (1.6, whose profile change
    # keeps the address) its wss:// address for profiles 2 and 3.
    organisation: str = "cocharge"
    ca_pem: str | None = None
    secure_url: str | None = None
    # A display for the driver (messages, the cost); without one, display calls are refused.
    display: bool = True
    # 1 or 3 phases (a 1-phase charger draws on its phase L1 only); the profile purposes it
    # refuses (a "strict" charger, e.g. ("TxDefaultProfile",)).
    phases: int = 3
    refuse_purposes: tuple[str, ...] = ()
    # The simulated clock starts this many simulated seconds before now. A fast clock
    # (speed > 1) that starts now runs ahead of the wall clock, and a central system rightly
    # stops believing it (cocharge/gateway/clock.py); one that replays a stretch of the past
    # ending about now keeps timestamps it believes (`cocharge sim run` sets this).
    clock_lead_s: float = 0.0
    # Connection attempts answered 429/503 before the simulator gives up (each after the
    # central system's Retry-After).
    connect_attempts: int = 10
    # 2.1: the charger calculates the cost from the tariff it is given (TariffCostCtrlr),
    # with time-of-day prices in this zone.
    local_cost: bool = True
    tz: str = "Asia/Shanghai"
    # 2.1: an inverter that takes grid codes (DER control, block R).
    der: bool = True


class SimClock:
    """Simulated time: starts `lead_s` before now, runs `speed` times faster than the wall
    clock."""

    def __init__(self, speed: float, lead_s: float = 0.0) -> None:
        self.speed = speed
        self._origin = datetime.now(UTC) - timedelta(seconds=lead_s)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self._origin + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def iso(self, at: datetime | None = None) -> str:
        """Now (or `at`, a time of this clock) as the charger writes it."""
        return (at or self.now()).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class SimSession:
    connector_id: int
    tag: str
    tx_id: str | int | None = None
    authorized: bool = True
    energy_wh: float = 0.0
    stop_reason: str | None = None
    refused: str | None = None  # why the charger did not start ("Blocked", "bay locked", ...)
    # The transaction's TxProfile as (seconds after start, limit in W), by start (what it
    # holds is in the charger's profiles; this is the view tests read).
    profile: list[tuple[float, float]] = field(default_factory=list)
    start_profile: dict[str, Any] | None = None  # a TxProfile the remote start carried
    tx_start: datetime | None = None  # simulated clock at the transaction's start
    device_s: float = 0.0  # simulated seconds since the transaction started
    t0: float = 0.0  # monotonic time of the transaction's start
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Any] | None = None  # what runs it (power_loss cancels it)

    @property
    def sampled_at(self) -> datetime | None:
        """The charger's time of the meter's last reading (its register is of that moment,
        however long the message then waits behind others)."""
        return None if self.tx_start is None else self.tx_start + timedelta(seconds=self.device_s)
