"""Hardware of a virtual wallbox and its EV: relay, meter, lock, power ramp, battery taper."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EV:
    battery_wh: float = 60_000
    soc: float = 0.3
    max_power_w: float = 11_000
    taper_from_soc: float = 0.8

    @property
    def full(self) -> bool:
        return self.soc >= 0.999

    def accepts_w(self) -> float:
        """Power the car draws: full power, tapering linearly to 10% near a full battery."""
        if self.full:
            return 0.0
        if self.soc <= self.taper_from_soc:
            return self.max_power_w
        left = (1 - self.soc) / (1 - self.taper_from_soc)
        return self.max_power_w * max(0.1, left)

    def charge(self, energy_wh: float) -> None:
        """Energy in (negative: given back, V2X)."""
        self.soc = max(0.0, min(1.0, self.soc + energy_wh / self.battery_wh))


@dataclass
class Connector:
    connector_id: int
    max_current_a: float = 16
    phases: int = 3
    voltage_v: float = 230
    ramp_w_per_s: float = 2_000
    register_wh: float = 0.0  # the energy meter: only ever goes up
    relay_closed: bool = False
    cable_locked: bool = False
    operative: bool = True
    # The bay's share lock (barrier or lock plate): a car cannot reach a locked connector.
    bay_locked: bool = False
    # (reservation id, tag, expiry as a simulated-clock timestamp) of a ReserveNow
    reservation: tuple[int, str, float] | None = None
    faulted: bool = False
    power_w: float = 0.0  # negative while the car gives energy back (V2X)
    ev: EV | None = None
    # V2X (a bidirectional charger): the energy the car is to give back first, and the
    # export register (what went out through the meter: only ever goes up).
    discharge_left_wh: float = 0.0
    export_wh: float = 0.0

    @property
    def current_a(self) -> float:
        """What it draws now on each of its phases."""
        return self.power_w / (self.voltage_v * self.phases)

    @property
    def max_power_w(self) -> float:
        return self.max_current_a * self.phases * self.voltage_v

    def step(self, seconds: float, limit_w: float | None = None,
             setpoint_w: float | None = None) -> float:
        """Advance the hardware by `seconds` under a charging-profile limit (and a 2.1
        setpoint: negative, the car gives that much back); returns Wh delivered."""
        if not self.relay_closed or self.ev is None or self.faulted:
            self.power_w = 0.0
            return 0.0
        asked = (min(-setpoint_w, self.max_power_w) * seconds / 3600
                 if setpoint_w is not None and setpoint_w < 0 else 0.0)
        if (self.discharge_left_wh > 0 or asked > 0) and self.ev.soc > 0.1:
            out = min(max(self.discharge_left_wh, asked), self.max_power_w * seconds / 3600,
                      (self.ev.soc - 0.1) * self.ev.battery_wh)
            self.discharge_left_wh = max(0.0, self.discharge_left_wh - out)
            self.export_wh += out
            self.ev.charge(-out)
            self.power_w = -out * 3600 / seconds if seconds > 0 else 0.0
            return 0.0
        target = min(self.max_power_w, self.ev.accepts_w())
        if limit_w is not None:
            target = min(target, limit_w)
        if setpoint_w is not None:
            target = min(target, max(0.0, setpoint_w))
        if self.power_w < target:
            self.power_w = min(target, self.power_w + self.ramp_w_per_s * seconds)
        else:
            self.power_w = target
        energy = self.power_w * seconds / 3600
        self.ev.charge(energy)
        self.register_wh += energy
        return energy
