"""Smart charging as the simulated wallbox does it: charging profiles installed and cleared,
the limit in force at a moment, the composite schedule (the arithmetic is profiles.py's)."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import ocpp.messages

from cocharge.simulators.profiles import (
    MAX,
    Profile,
    composite,
    from_ocpp,
    next_change,
    purpose_of,
    setpoint_at,
    updated,
)

ocpp.messages.ASYNC_VALIDATION = False
log = logging.getLogger(__name__)

from cocharge.simulators.hardware import Connector
from cocharge.simulators.state import SimClock, SimConfig, SimSession


class SmartChargingMixin:
    """Charging profiles of a simulated wallbox (its state is set up by
    `WallboxMixin._init_wallbox`)."""

    config: SimConfig
    clock: SimClock
    hw: dict[int, Connector]
    sessions: dict[int, SimSession]
    charging_profiles: list[Profile]
    dynamic_updates: list[tuple[int, dict[str, Any]]]  # UpdateDynamicSchedule taken (2.1)
    profile_listeners: list[Any]  # called with the wallbox whenever its profiles changed

    # charging profiles (cocharge/simulators/profiles.py) -------------------------------------

    def _to_w(self, connector_id: int) -> float:
        hw = self.hw[connector_id]
        return hw.voltage_v * hw.phases

    def install_profile(self, connector_id: int, raw: dict[str, Any]) -> str:
        """SetChargingProfile: Accepted, or Rejected (a refused purpose, no such connector,
        a TxProfile without its transaction)."""
        name = raw["charging_profile_purpose"]
        if name in self.config.refuse_purposes or (
                purpose_of(name) == MAX and any(purpose_of(r) == MAX
                                                for r in self.config.refuse_purposes)):
            return "Rejected"
        if connector_id and connector_id not in self.hw:
            return "Rejected"
        profile = from_ocpp(connector_id, raw)
        if profile.purpose == MAX and connector_id:
            return "Rejected"
        session = self.sessions.get(connector_id) if connector_id else None
        if profile.purpose == "TxProfile":
            if session is None or session.tx_start is None or (
                    profile.tx_id is not None and session.tx_id is not None
                    and str(session.tx_id) != profile.tx_id):
                return "Rejected"
            profile = replace(profile, tx_id=str(session.tx_id) if session.tx_id is not None
                              else profile.tx_id)
        self.charging_profiles = [
            p for p in self.charging_profiles
            if p.id != profile.id and not (p.connector == profile.connector
                                           and p.purpose == profile.purpose
                                           and p.stack_level == profile.stack_level)]
        self.charging_profiles.append(profile)
        if session is not None and profile.purpose == "TxProfile":
            start = 0.0
            if profile.kind == "Absolute" and profile.start is not None and session.tx_start:
                start = (profile.start - session.tx_start).total_seconds()
            to_w = self._to_w(connector_id) if profile.unit == "A" else 1.0
            session.profile = [(start + begin, limit * to_w) for begin, limit in profile.periods]
        self._profiles_changed()
        return "Accepted"

    def _profiles_changed(self) -> None:
        for listener in self.profile_listeners:
            listener(self)

    def clear_profiles(self, profile_id: int | None, connector_id: int | None,
                       purpose: str | None, stack_level: int | None) -> bool:
        def matches(p: Profile) -> bool:
            if profile_id is not None:
                return p.id == profile_id
            return ((connector_id is None or p.connector == connector_id)
                    and (purpose is None or p.purpose == purpose_of(purpose))
                    and (stack_level is None or p.stack_level == stack_level))
        kept = [p for p in self.charging_profiles if not matches(p)]
        cleared = len(kept) != len(self.charging_profiles)
        self.charging_profiles = kept
        if cleared:
            self._profiles_changed()
        return cleared

    def _tx_profiles_end(self, session: SimSession) -> None:
        self.charging_profiles = [p for p in self.charging_profiles
                                  if not (p.purpose == "TxProfile"
                                          and p.connector == session.connector_id)]

    def limit_a(self, connector_id: int, at: datetime) -> float | None:
        """The composite limit (A) on a connector at a moment."""
        session = self.sessions.get(connector_id)
        tx_start = session.tx_start if session else None
        return composite(self.charging_profiles, connector_id,
                         str(session.tx_id) if session and session.tx_id is not None else None,
                         tx_start, at, max(1, len(self.sessions)), {"W": self._to_w(connector_id)})

    def limit_w(self, session: SimSession) -> float | None:
        if session.tx_start is None:
            return None
        amps = self.limit_a(session.connector_id,
                            session.tx_start + timedelta(seconds=session.device_s))
        return None if amps is None else amps * self._to_w(session.connector_id)

    def setpoint_w(self, session: SimSession) -> float | None:
        """2.1: the setpoint (W) of the period in force, if it has one (negative: V2X)."""
        if session.tx_start is None:
            return None
        return setpoint_at(self.charging_profiles, session.connector_id,
                           str(session.tx_id) if session.tx_id is not None else None,
                           session.tx_start, session.tx_start
                           + timedelta(seconds=session.device_s),
                           self._to_w(session.connector_id))

    def update_dynamic(self, profile_id: int, update: dict[str, Any]) -> str:
        """2.1 UpdateDynamicSchedule: Accepted, or Rejected for no Dynamic profile of that id."""
        for index, p in enumerate(self.charging_profiles):
            if p.id == profile_id and p.kind == "Dynamic":
                self.charging_profiles[index] = updated(p, update)
                self.dynamic_updates.append((profile_id, dict(update)))
                self._profiles_changed()
                return "Accepted"
        return "Rejected"

    def next_change_s(self, session: SimSession) -> float | None:
        """Seconds after the transaction's start of the next change of its limit."""
        if session.tx_start is None:
            return None
        t = session.tx_start + timedelta(seconds=session.device_s)
        change = next_change(self.charging_profiles, t, session.tx_start)
        return None if change is None else (change - session.tx_start).total_seconds()

    def composite_schedule(self, connector_id: int, duration: int, unit: str | None
                           ) -> dict[str, Any]:
        """GetCompositeSchedule: the limits from now for `duration` seconds (the hardware's
        maximum where no profile limits), in A or W."""
        start = self.clock.now().replace(microsecond=0)
        hw = self.hw[max(1, connector_id)]
        session = self.sessions.get(connector_id)
        tx_start = session.tx_start if session else None
        to_w = self._to_w(max(1, connector_id))
        periods: list[dict[str, Any]] = []
        t = start
        end = start + timedelta(seconds=duration)
        while t < end:
            if connector_id:
                amps = self.limit_a(connector_id, t)
            else:
                amps = sum((self.limit_a(c, t) or h.max_current_a) for c, h in self.hw.items())
            amps = hw.max_current_a if amps is None else amps
            limit = round(amps * to_w, 1) if unit == "W" else round(amps, 1)
            offset = int((t - start).total_seconds())
            if not periods or periods[-1]["limit"] != limit:
                periods.append({"start_period": offset, "limit": limit})
            change = next_change(self.charging_profiles, t, tx_start)
            if change is None or change <= t:
                break
            t = change
        return {"start": start.isoformat().replace("+00:00", "Z"), "duration": duration,
                "unit": unit or "A", "periods": periods}

    def start_profile(self, connector_id: int, profile: dict[str, Any] | None
                      ) -> dict[str, Any] | None:
        """The TxProfile a remote start carried, installed once the transaction starts."""
        if not profile or profile.get("charging_profile_purpose") != "TxProfile":
            return None
        return profile

