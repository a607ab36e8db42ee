"""The console's fleet page, polled every 3 s: GET /api/v1/stations, the stations with
their running sessions priced so far (`cocharge.views.priced`, also `cocharge sessions list
--active`), the whole list and the console's page of it.

Makes a SQLite database (or a fresh PostgreSQL one with --db) with `--stations` stations of
two connectors, the first `--sessions` of them with a running session of `--readings`
energy-register readings 20 s apart, half of those with a tariff of their own (sealed by
their session). Then, on this process's event loop:
- prices the running sessions a few times: wall and CPU time of one round, and the longest
  the event loop was held by it (a charger served by the same node waits that long);
- starts a node with its HTTP API on that database and asks GET /api/v1/stations as the
  operator a few times (from a thread), the whole list and then the console's page of it
  (`?limit=100`), then the operator's dashboard over `--ended` sessions of the last 30 days
  (settled, their drivers owing them), then a host's fleet page (every station has split
  terms, a third of them on the property model): wall and CPU time of the node for one
  answer, its size, and the longest the event loop was held meanwhile;
- and the sharing controller's tick (every 2 s), every station having opening hours.

    python benchmarks/fleet_page.py [--stations 10000] [--sessions 2000] [--readings 180]
        [--ended 40000] [--rounds 3] [--db postgresql+asyncpg://postgres@127.0.0.1/bench]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert

from cocharge import views
from cocharge.api.keys import create_key
from cocharge.config import GatewaySettings
from cocharge.gateway.heap import HeapKeeper
from cocharge.node import run_event_loop, running_node
from cocharge.settlement import settle
from cocharge.settlement.settle import terms_to_json
from cocharge.settlement.split import SplitTerms
from cocharge.settlement.tariff import simple_tariff
from cocharge.stations import registry
from cocharge.store.db import open_store, utcnow
from cocharge.store.schema import (
    ENERGY_REGISTER,
    connector_status,
    meter_samples,
    sessions,
    settlements,
    station_rules,
    station_terms,
    stations,
)
from cocharge.web.console import PAGE


async def fill(db: str, args: argparse.Namespace) -> None:
    engine = await open_store(db)
    try:
        now = utcnow()
        start = now - timedelta(seconds=20 * args.readings)
        names = [f"S{n:05d}" for n in range(args.stations)]
        async with engine.begin() as conn:
            await conn.execute(insert(stations), [
                {"id": name, "admission": "accepted", "connectors": 2, "created_at": now,
                 "owner": f"host{n % 300}"} for n, name in enumerate(names)])
            # Every station with its split terms, as `split set` writes them: a third on the
            # property model (50 properties), the rest their owner's (300 hosts).
            await conn.execute(insert(station_terms), [
                {"station_id": name, "updated_at": now, "body": json.dumps(terms_to_json(
                    SplitTerms(model="property", property=f"prop{n % 50}", operator="op",
                               property_since=now, onboarded_at=now) if n % 3 == 0 else
                    SplitTerms(onboarded_at=now)), sort_keys=True)}
                for n, name in enumerate(names)])
            # ... and its opening hours (a host's sharing rules), a few patterns among them
            await conn.execute(insert(station_rules), [
                {"station_id": name, "connector_id": 0, "updated_at": now,
                 "rules": json.dumps({"windows": [f"mon-fri {17 + n % 4}:00-23:00",
                                                  "sat-sun 08:00-22:00"],
                                      "min_credit": 10 * (n % 7), "bookings": True})}
                for n, name in enumerate(names)])
            await conn.execute(insert(connector_status), [
                {"station_id": name, "connector_id": c, "status": "Available",
                 "updated_at": now} for name in names for c in (1, 2)])
        sealed = {n: await settle.set_tariff(engine, names[n], 0, simple_tariff(Decimal("1.20")))
                  for n in range(0, args.sessions, 2)}
        async with engine.begin() as conn:
            for n in range(args.sessions):
                sid = int((await conn.execute(insert(sessions).values(
                    station_id=names[n], connector_id=1, tx_ref=f"T{n}", protocol="1.6",
                    id_tag="A", started_at=start, meter_start_wh=0, status="active",
                    created_at=start, tariff_id=sealed.get(n)).returning(sessions.c.id))
                    ).scalar_one())
                await conn.execute(insert(meter_samples), [
                    {"session_id": sid, "station_id": names[n], "connector_id": 1,
                     "ts": start + timedelta(seconds=20 * k), "measurand": ENERGY_REGISTER,
                     "value": float(k * 40)} for k in range(args.readings)])
        # A month of ended sessions, each settled and still owed by its driver (the
        # operator's dashboard reads them all, and what was collected of each).
        async with engine.begin() as conn:
            for first in range(0, args.ended, 10_000):
                count = min(10_000, args.ended - first)
                ids = (await conn.execute(insert(sessions).returning(sessions.c.id), [
                    {"station_id": names[k % len(names)], "connector_id": 2, "tx_ref": f"E{k}",
                     "protocol": "1.6", "id_tag": "A", "status": "completed",
                     "energy_wh": 9000, "meter_start_wh": 0, "meter_stop_wh": 9000,
                     "started_at": now - timedelta(seconds=60 * k + 5400),
                     "ended_at": now - timedelta(seconds=60 * k), "created_at": now}
                    for k in range(first, first + count)])).scalars().all()
                await conn.execute(insert(settlements), [
                    {"session_id": sid, "cdr": "{}", "cost_fen": 1080, "discounts": "[]",
                     "payable_fen": 1080, "paid_fen": 0, "owed_fen": 1080,
                     "split": '[["host:host1", 800], ["platform", 280]]', "settled_at": now}
                    for sid in ids])
    finally:
        await engine.dispose()


def timed(walls: list[float], cpus: list[float]) -> str:
    return (f"{statistics.median(walls):.3f} s wall, {statistics.median(cpus):.3f} s CPU "
            f"(median of {len(walls)})")


async def run(args: argparse.Namespace) -> None:
    folder = None if args.db else tempfile.mkdtemp(prefix="cocharge-fleet-page-")
    try:
        await measure(args.db or os.path.join(str(folder), "bench.db"), args)
    finally:
        if folder is not None:  # 48 MB of database at the default sizes
            shutil.rmtree(folder, ignore_errors=True)


async def measure(db: str, args: argparse.Namespace) -> None:
    await fill(db, args)
    shape = (f"{args.stations} stations, {args.sessions} running sessions x {args.readings} "
             f"readings")
    settings = GatewaySettings(host="127.0.0.1", port=0, operator_port=0, upload_port=0,
                               api_port=0)
    async with running_node(db, settings) as node:
        # As `cocharge serve` keeps its heap: no automatic full collection of the millions of
        # objects of a large fleet (a pass of them stopped the loop ~100 ms, which is not the
        # page's doing).
        heap = HeapKeeper(settings.gc_full_collection_s)
        heap.start()
        engine = node.engine
        running = await registry.list_sessions(engine, active=True)
        operator = await create_key(engine, "bench", "operator", None)
        host = await create_key(engine, "bench host", "host", "host1")

        async def measured(work: Callable[[], Awaitable[Any]]) -> tuple[Any, str, float, str]:
            """`work` run --rounds times: what its last round gave, the wall and CPU time of
            one round, its CPU time, and the longest the event loop was held meanwhile (a
            charger served by the same loop waits that long)."""
            walls: list[float] = []
            cpus: list[float] = []
            stalls = [0.0]

            async def tick() -> None:
                while True:
                    before = time.perf_counter()
                    await asyncio.sleep(0.001)
                    stalls.append(time.perf_counter() - before - 0.001)

            ticking = asyncio.create_task(tick())
            result = None
            for _ in range(args.rounds):
                wall, cpu = time.perf_counter(), time.process_time()
                result = await work()
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            ticking.cancel()
            return (result, timed(walls, cpus), statistics.median(cpus),
                    f"the event loop's longest stall {max(stalls) * 1e3:.0f} ms")

        shown, took, cpu, stall = await measured(lambda: views.priced(engine, running))
        assert all(r["cost_so_far_fen"] is not None for r in shown)
        print(f"running sessions priced ({shape}, {engine.dialect.name}): {took}; "
              f"{cpu / max(1, args.sessions) * 1e3:.2f} ms CPU a session; {stall}")

        assert node.api is not None
        base = node.api.url
        for path, what, key in (
                ("/api/v1/stations", "the whole list", operator),
                (f"/api/v1/stations?limit={PAGE}", "a page of the console's fleet, which it "
                 "polls every 3 s (the first: every station on it charging)", operator),
                ("/api/v1/dashboard?days=30", f"the operator's dashboard, over {args.ended} "
                 "sessions of the last 30 days", operator),
                (f"/api/v1/stations?limit={PAGE}", f"a host's fleet page (its "
                 f"{args.stations // 300} stations of the {args.stations})", host)):
            def get(path: str = path, key: str = key) -> int:
                request = urllib.request.Request(base + path,
                                                 headers={"Authorization": f"Bearer {key}"})
                with urllib.request.urlopen(request, timeout=300) as answer:
                    return len(answer.read())

            size, took, _, stall = await measured(lambda: asyncio.to_thread(get))
            print(f"GET {path}, {what} ({shape}): {took} of the node, {size / 1e6:.2f} MB; "
                  f"{stall}")

        # The sharing controller's tick (every 2 s): every station's rules and live bookings.
        _, took, _, stall = await measured(lambda: node.gateway.control.tick(utcnow()))
        print(f"the sharing controller's tick, every 2 s ({args.stations} stations with "
              f"opening hours): {took}; {stall}")
        await heap.close()


def parse() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < 1:
            raise argparse.ArgumentTypeError("give 1 or more")
        return value

    parser.add_argument("--stations", type=count, default=10000)
    parser.add_argument("--sessions", type=count, default=2000)
    parser.add_argument("--readings", type=count, default=180)
    parser.add_argument("--ended", type=count, default=40_000,
                        help="ended sessions of the last 30 days, settled and owed")
    parser.add_argument("--rounds", type=count, default=3)
    parser.add_argument("--db", help="a database URL (default: a new SQLite file)")
    args = parser.parse_args()
    if args.sessions > args.stations:
        parser.error("--sessions: at most as many as --stations (one running session each)")
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the node's start-up notes are not the figures
    run_event_loop(run(parse()))  # uvloop, as `cocharge serve`
