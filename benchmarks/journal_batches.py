"""Journal batches on PostgreSQL: what one batch of meter rows costs the gateway and the
database as an INSERT of unnested arrays and as a binary COPY, by the number of rows.

The journal (cocharge/store/journal.py, `_pg_insert`) writes a batch below `_COPY_FROM`
rows as the INSERT (one round trip) and from there on as the COPY (a round trip more, less
CPU a row); this prints where the two cross on this machine. Each size and way runs
alternately for about a second, twice, on a fresh database through the journal's own code
(meter rows as `StationService` builds them); the figures are CPU µs a batch (the gateway:
this process; the database: its backend for the connection) and wall µs a batch (a commit
each: the WAL flush included).

    python benchmarks/journal_batches.py [--rows 1,4,8,12,20,40,150] [--seconds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import psutil
import uvloop

from cocharge.stations.service import _BULK_SAMPLES
from cocharge.store import journal
from cocharge.store.db import open_store

PG = os.environ.get("COCHARGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def meter_rows(count: int) -> list[dict[str, Any]]:
    at = datetime(2026, 12, 5, 12, 0, 0, 123456)
    return [{"session_id": 1000 + n, "station_id": f"CP-{n:05d}", "connector_id": 1, "ts": at,
             "measurand": "Energy.Active.Import.Register", "phase": None, "value": 1234.5 + n,
             "unit": "Wh", "context": "Sample.Periodic"} for n in range(count)]


async def measure(sizes: list[int], seconds: float) -> None:
    name = f"cocharge_batches_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    engine = await open_store(f"{base}/{name}")
    try:
        async with engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            backend = psutil.Process(await driver.fetchval("SELECT pg_backend_pid()"))
            print(f"{'rows':>5} {'way':<7}{'gateway µs':>11}{'DB µs':>8}{'wall µs':>9}"
                  f"{'gateway/row':>12}{'DB/row':>8}")
            for size in sizes:
                rows = meter_rows(size)
                for way, copy_from in (("insert", size + 1), ("copy", size)) * 2:
                    journal._COPY_FROM = copy_from  # this size, this way
                    for _ in range(20):  # the statement prepared, the buffers warm
                        await journal._pg_insert(driver, _BULK_SAMPLES, rows)
                    cpu, db, start, batches = time.process_time(), backend.cpu_times(), \
                        time.monotonic(), 0
                    while time.monotonic() - start < seconds:
                        for _ in range(50):
                            await journal._pg_insert(driver, _BULK_SAMPLES, rows)
                        batches += 50
                    wall = time.monotonic() - start
                    cpu = time.process_time() - cpu
                    after = backend.cpu_times()
                    db_s = after.user + after.system - db.user - db.system
                    print(f"{size:>5} {way:<7}{cpu / batches * 1e6:>11.0f}"
                          f"{db_s / batches * 1e6:>8.0f}{wall / batches * 1e6:>9.0f}"
                          f"{cpu / batches / size * 1e6:>12.2f}"
                          f"{db_s / batches / size * 1e6:>8.2f}", flush=True)
                await driver.execute("TRUNCATE meter_samples")
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


def batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(n) for n in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers of rows from 1, "
                                         "comma-separated (1,8,40)")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=batch_sizes, default="1,4,8,12,20,40,150",
                        help="batch sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=1.0, help="per size, way and round")
    args = parser.parse_args()
    sizes = args.rows
    print(f"Journal batches into meter_samples (PostgreSQL {PG.rsplit('@', 1)[-1]}), "
          f"the journal switches to COPY at {journal._COPY_FROM} rows")
    uvloop.install()
    asyncio.run(measure(sizes, args.seconds))


if __name__ == "__main__":
    main()
