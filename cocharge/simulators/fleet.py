"""Many virtual wallboxes from one process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cocharge.simulators.state import SimSession
from cocharge.simulators.v21 import Wallbox21
from cocharge.simulators.wallbox import SimConfig, Wallbox, close_wallbox, open_wallbox

# The furthest back a fast clock starts (inside the 31 days a central system believes:
# cocharge/gateway/clock.py); the volts of a phase.
LEAD_MAX_S = 30 * 86400
PHASE_V = 230


async def run_fleet(url: str, stations: int, protocol: str, id_prefix: str, tag: str | None,
                    sessions: int, energy_wh: float, speed: float,
                    password: str | None = None, stay: asyncio.Event | None = None,
                    charged: Callable[[str, int], None] | None = None,
                    max_power_w: float = 16 * PHASE_V * 3,
                    said: Callable[[str], None] | None = None) -> int:
    """Connect `stations` wallboxes, charge `sessions` sessions on each; returns sessions done.
    `charged(station_id, done)` is told when a wallbox has charged its sessions; with `stay`
    the wallboxes then stay connected, answering the gateway's commands, until it is set
    (and connect again when the gateway restarts). Each charges at most `max_power_w`
    (3 phases), as its hardware would. `said` is told a line per session: its energy, the
    cost the central system sent at its end and (2.1) the cost the charger calculated."""

    # A fast clock replays the past: the sessions' simulated time, ending about now.
    lead = 0.0 if speed <= 1 else min(sessions * (energy_wh / max_power_w * 3600 + 900),
                                      LEAD_MAX_S)

    async def one(n: int) -> int:
        config = SimConfig(url=url, station_id=f"{id_prefix}{n:04d}", protocol=protocol,
                           password=password, speed=speed, meter_interval_s=0.5,
                           clock_lead_s=lead, max_current_a=max_power_w / PHASE_V / 3)
        box, reader = await open_wallbox(config)
        done = 0
        try:
            if box.registration != "Accepted":
                return 0
            if isinstance(box, Wallbox21) and box.config.local_cost:
                # The central system sends its tariff after the boot: charge with it.
                for _ in range(40):
                    if box.tariffs:
                        break
                    await asyncio.sleep(0.05)
            for _ in range(sessions):
                session = await box.charge(1, tag or f"TAG{n:04d}", energy_wh=energy_wh)
                await session.done.wait()
                done += session.authorized
                if said is not None and session.authorized:
                    said(_session_line(box, config.station_id, session))
            if charged is not None:
                charged(config.station_id, done)
            if stay is not None:
                await box.stay_connected(stay)
        finally:
            await close_wallbox(box, reader)
        return done

    return sum(await asyncio.gather(*(one(n) for n in range(1, stations + 1))))


def _session_line(box: Wallbox, station_id: str, session: SimSession) -> str:
    tx = str(session.tx_id)
    line = f"{station_id}: {session.energy_wh / 1000:.3f} kWh"
    if isinstance(box, Wallbox21) and tx in box.local_costs:
        cost = box.local_costs[tx]
        line += f", the charger's own cost {cost['total']['incl_tax']:.2f} {cost['currency']}"
    if tx in box.total_costs:
        line += f", the central system's {box.total_costs[tx]}"
    return line
