"""A simulated site for the load-management tests and benchmarks/allocation.py: a gateway,
a circuit, simulated chargers attached to it, and a check of the circuit's load at every
meter value any charger sends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cocharge.load import sites as store
from cocharge.node import running_node
from cocharge.simulators.hardware import EV
from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.stations import registry
from tests.conftest import settings, ws_url

LOAD = {"load_period_s": 1.0, "load_reload_s": 1.0, "load_min_interval_s": 0.5, "load_settle_s": 0.8,
            "load_profile_valid_s": 120, "control_interval_s": 0.5}


@dataclass
class Watch:
    """The circuit's load per phase, summed over the chargers' present currents, at every
    meter value any of them sends; the largest seen."""

    boxes: dict[str, tuple[Any, str]] = field(default_factory=dict)  # id -> (box, wiring)
    peak: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    checks: int = 0

    def load(self) -> list[float]:
        total = [0.0, 0.0, 0.0]
        for box, wiring in self.boxes.values():
            phases = store.phases_of(wiring)
            for hw in box.hw.values():
                for i in range(hw.phases):
                    total[phases[i]] += hw.current_a
        return total

    def __call__(self, _box: Any) -> None:
        now = self.load()
        self.checks += 1
        self.peak = [max(a, b) for a, b in zip(self.peak, now, strict=True)]


@contextlib.asynccontextmanager
async def garage(db: str | Path, chargers: list[tuple[str, str, str]], limit_a: float = 63,
                 tags: tuple[str, ...] = ("BENCH",), **overrides: Any) -> AsyncIterator[tuple[Any, dict[str, Any], Watch]]:
    """A node with site GARAGE, circuit MAIN (limit_a per phase) and `chargers` as
    (id, protocol, wiring) attached to it, each connected as a simulated wallbox (32 A)."""
    async with running_node(str(db), settings(**{**LOAD, **overrides})) as node:
        await store.add_site(node.engine, "GARAGE")
        await store.add_circuit(node.engine, "MAIN", "GARAGE", None, limit_a, 3, 0.0, "mqtt")
        for sid, _, wiring in chargers:
            await registry.add_station(node.engine, registry.NewStation(sid, max_power_kw=22))
            await store.attach(node.engine, sid, "MAIN", wiring, "fast", 32)
        for tag in tags:
            await registry.add_member(node.engine, f"member {tag}", tag, None)
        await node.gateway.load.reload()
        watch = Watch()
        boxes: dict[str, Any] = {}
        readers = []
        try:
            for sid, protocol, wiring in chargers:
                box, reader = await open_wallbox(SimConfig(
                    url=ws_url(node), station_id=sid, protocol=protocol, speed=1,
                    meter_interval_s=0.25, max_current_a=32, phases=len(wiring) // 2))
                box.meter_listeners.append(watch)
                watch.boxes[sid] = (box, wiring)
                boxes[sid] = box
                readers.append((box, reader))
            yield node, boxes, watch
        finally:
            for box, reader in readers:
                with contextlib.suppress(Exception):
                    await close_wallbox(box, reader)


def big_ev() -> EV:
    """An EV that takes whatever it is given all evening (no taper)."""
    return EV(battery_wh=200_000, soc=0.1, max_power_w=22_000)


async def settled(node: Any, site: str = "GARAGE", timeout: float = 20.0,
                  sessions: int | None = None) -> dict[str, Any]:
    """The live allocation once it is of the site as it is (no change waiting to be
    allocated, no write of it in flight), every charger holds what it was allocated, and the
    site counts `sessions` sessions (when given: a session whose start is still on its way
    to the allocator is not counted yet)."""
    deadline = time.monotonic() + timeout
    live: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        live = node.gateway.load.live(site)
        if live and not live["settling"] and all(
                c["written_a"] == c["allocated_a"] for c in live["chargers"] if c["online"]) and (
                sessions is None or sum(1 for c in live["chargers"] if c["session"]) == sessions):
            return live
        await asyncio.sleep(0.01)
    raise AssertionError(f"allocation not written within {timeout} s: {live}")


async def e2e_profile_latency(db: Path, n: int) -> dict[str, float]:
    """benchmarks/allocation.py part 2: n chargers on one circuit sized for n-1 sessions at
    10 A; all but one charging; one more session starts (everyone goes down to 9.9 A). Milliseconds from its start being
    answered until the last affected charger accepted its new profile."""
    chargers = [(f"B{i:03d}", "1.6" if i % 2 else "2.0.1", "L1L2L3") for i in range(n)]
    async with garage(db, chargers, limit_a=10.0 * (n - 1), load_period_s=30.0, load_settle_s=0.0,
                      load_min_interval_s=0.0) as (node, boxes, _):
        for sid in list(boxes)[:-1]:
            await boxes[sid].charge(1, "BENCH", ev=big_ev())
        await settled(node, timeout=120, sessions=n - 1)
        load = node.gateway.load
        before = {k: w.limit_a for k, w in load.written.items()}
        last = list(boxes)[-1]
        t0 = time.perf_counter()
        await boxes[last].charge(1, "BENCH", ev=big_ev())
        await settled(node, timeout=120, sessions=n)
        t_last = time.perf_counter()
        changed = sum(1 for k, w in load.written.items() if before.get(k) != w.limit_a)
        return {"changed": changed, "last_ms": (t_last - t0) * 1000}
