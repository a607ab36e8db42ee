"""PV surplus charging for a green host's charger. Pure: the caller passes the time.

Modes (per attached station, `cocharge station attach --mode`):

- `fast`: the allocation alone decides (the site's limits);
- `pv`: only surplus: the charger starts once the surplus has covered the minimum current
  for `enable_delay_s`, follows it, and pauses once the surplus has stayed under the
  minimum for `disable_delay_s` (until then it keeps the minimum: no stop-start on a cloud);
- `min+pv`: always at least the minimum, plus whatever surplus there is.

The surplus is the PV production less the building's own load (the chargers not counted),
shared equally by the site's sessions in a PV mode.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PvState:
    enabled: bool = False
    since: float | None = None  # when the surplus crossed the threshold the other way


def surplus_amps(surplus_w: float, phases: int, voltage_v: float) -> float:
    return max(0.0, surplus_w) / (voltage_v * phases)


def pv_limits(mode: str, surplus_a: float, min_a: float, max_a: float, state: PvState,
              now: float, enable_delay_s: float, disable_delay_s: float
              ) -> tuple[float, float] | None:
    """(min, max) current for the session now, or None: it waits for the sun."""
    if mode == "fast":
        return min_a, max_a
    if mode == "min+pv":
        return min_a, max(min_a, min(max_a, surplus_a))
    enough = surplus_a >= min_a
    if enough != state.enabled:
        if state.since is None:
            state.since = now
        if now - state.since >= (enable_delay_s if enough else disable_delay_s):
            state.enabled, state.since = enough, None
    else:
        state.since = None
    if not state.enabled:
        return None
    return min_a, max(min_a, min(max_a, surplus_a))


def green_share(surplus_w: float, chargers_w: float) -> float:
    """The part of what the site's chargers draw now that the surplus covers (0..1)."""
    if chargers_w <= 0:
        return 0.0
    return min(1.0, max(0.0, surplus_w) / chargers_w)
