"""The fleet page's poll: every running session priced so far (`cocharge.views.priced`, as
the console's fleet page asks for it every 3 s through GET /api/v1/stations, and `cocharge
sessions list --active`).

Makes a SQLite database (or a fresh PostgreSQL one with --db) with N stations, each with a
running session of R energy-register readings 20 s apart, half of the stations with a
tariff of their own (sealed by their session), then prices them all a few times and prints
the wall and CPU time of one poll (this process's CPU: the node that serves the API) and
the longest the event loop was held by it (the node's chargers wait that long).

    python benchmarks/running_costs.py [--sessions 500] [--readings 360] [--rounds 3]
                                       [--db postgresql+asyncpg://postgres@127.0.0.1/bench]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import insert

from cocharge import views
from cocharge.settlement import settle
from cocharge.settlement.tariff import simple_tariff
from cocharge.stations import registry
from cocharge.store.db import open_store, utcnow
from cocharge.store.schema import ENERGY_REGISTER, meter_samples, sessions


async def run(args: argparse.Namespace) -> None:
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="cocharge-costs-"), "bench.db")
    engine = await open_store(db)
    try:
        start = utcnow() - timedelta(seconds=20 * args.readings)
        for n in range(args.sessions):
            await registry.add_station(engine, registry.NewStation(f"S{n:05d}"))
        sealed = {n: await settle.set_tariff(engine, f"S{n:05d}", 0,
                                             simple_tariff(Decimal("1.20")))
                  for n in range(0, args.sessions, 2)}
        async with engine.begin() as conn:
            for n in range(args.sessions):
                sid = int((await conn.execute(insert(sessions).values(
                    station_id=f"S{n:05d}", connector_id=1, tx_ref=f"T{n}", protocol="1.6",
                    id_tag="A", started_at=start, meter_start_wh=0, status="active",
                    created_at=start, tariff_id=sealed.get(n)).returning(sessions.c.id))
                    ).scalar_one())
                await conn.execute(insert(meter_samples), [
                    {"session_id": sid, "station_id": f"S{n:05d}", "connector_id": 1,
                     "ts": start + timedelta(seconds=20 * k), "measurand": ENERGY_REGISTER,
                     "value": float(k * 40)} for k in range(args.readings)])
        running = await registry.list_sessions(engine, active=True)
        walls, cpus, stalls = [], [], [0.0]

        async def tick() -> None:  # what a charger served by the same event loop waits
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                stalls.append(time.perf_counter() - before - 0.001)

        ticking = asyncio.create_task(tick())
        for _ in range(args.rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            shown = await views.priced(engine, running)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        ticking.cancel()
        assert all(r["cost_so_far_fen"] is not None for r in shown)
        print(f"running sessions priced (the fleet page's poll, every 3 s): {args.sessions} "
              f"sessions x {args.readings} readings on {engine.dialect.name}: "
              f"{statistics.median(walls):.3f} s wall, {statistics.median(cpus):.3f} s CPU "
              f"(median of {args.rounds}); "
              f"{statistics.median(cpus) / args.sessions * 1e3:.2f} ms CPU a session; "
              f"the event loop's longest stall {max(stalls) * 1e3:.0f} ms")
    finally:
        await engine.dispose()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def positive(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < 1:
            raise argparse.ArgumentTypeError("give 1 or more")
        return value

    parser.add_argument("--sessions", type=positive, default=500)
    parser.add_argument("--readings", type=positive, default=360)
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--db", help="a database URL (default: a new SQLite file)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(run(parse()))
