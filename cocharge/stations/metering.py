"""Pure rules for a session's energy: computed from meter registers, misreads flagged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class EnergyAssessment:
    energy_wh: int | None
    billable: bool
    reason: str | None  # why it is not billable


def assess_energy(
    meter_start_wh: int | None,
    meter_stop_wh: int | None,
    started_at: datetime | None,
    ended_at: datetime | None,
    max_power_w: int,
    power_factor: float,
    slack_wh: int,
) -> EnergyAssessment:
    """Energy = stop register − start register; flag what no charger could have delivered.

    A register that goes backwards, or an energy larger than the station's maximum
    power over the session's duration allows (the classic case: meterStart 0 and a
    lifetime register as meterStop), is recorded but not billable.
    """
    if meter_start_wh is None or meter_stop_wh is None:
        return EnergyAssessment(None, False, "no energy register reading")
    energy = meter_stop_wh - meter_start_wh
    if energy < 0:
        return EnergyAssessment(
            energy, False, f"meter went backwards (start {meter_start_wh} Wh, stop {meter_stop_wh} Wh)"
        )
    seconds = 0.0
    if started_at is not None and ended_at is not None:
        seconds = max(0.0, (ended_at - started_at).total_seconds())
    plausible = max_power_w * power_factor * seconds / 3600 + slack_wh
    if energy > plausible:
        hint = " (meterStart 0: lifetime register misread?)" if meter_start_wh == 0 else ""
        return EnergyAssessment(
            energy,
            False,
            f"{energy} Wh in {seconds:.0f} s exceeds what {max_power_w / 1000:g} kW can deliver{hint}",
        )
    return EnergyAssessment(energy, True, None)
