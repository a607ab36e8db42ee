"""Ledger throughput: transfers per second for batched settlement.

Posts settlement-shaped batches (per session: wallet -> clearing, clearing -> host,
clearing -> platform) through `cocharge.settlement.ledger.post`, the same code the
settlement uses: idempotency lookups, no-overdraft checks, hash chain, balances.
Then runs `verify` over the whole ledger. Budget (issue 4): >= 20,000 transfers/s on
SQLite on the reference 2-core machine.

    python benchmarks/ledger_throughput.py [--sessions-per-batch 1000] [--batches 30]
                                           [--db postgresql+asyncpg://postgres@127.0.0.1/bench]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

from cocharge.settlement import ledger
from cocharge.settlement.ledger import Transfer
from cocharge.store.db import open_store


def settlement_batch(batch: int, sessions: int, members: int) -> list[Transfer]:
    transfers = []
    for k in range(sessions):
        sid = batch * sessions + k
        member = f"wallet:M{sid % members:05d}"
        transfers += [
            Transfer(f"s{sid}:pay", member, "clearing:sessions", 1000, kind="session", ref=str(sid)),
            Transfer(f"s{sid}:host", "clearing:sessions", f"host:H{sid % 200:03d}", 900,
                     kind="split", ref=str(sid)),
            Transfer(f"s{sid}:platform", "clearing:sessions", "platform", 100, kind="split",
                     ref=str(sid)),
        ]
    return transfers


async def main(db: str, sessions: int, batches: int, members: int) -> None:
    engine = await open_store(db)
    # Fund the wallets (not timed).
    async with engine.begin() as conn:
        await ledger.post(conn, [Transfer(f"fund:{m}", "external:topup", f"wallet:M{m:05d}", 10**9,
                                          kind="topup") for m in range(members)], "fund")
    work = [settlement_batch(b, sessions, members) for b in range(batches)]
    started = time.perf_counter()
    for b, transfers in enumerate(work):
        async with engine.begin() as conn:
            await ledger.post(conn, transfers, f"settle-{b}")
    elapsed = time.perf_counter() - started
    total = sum(len(t) for t in work)
    print(f"database: {db}")
    print(f"{total:,} transfers in {batches} batches of {len(work[0]):,}: {elapsed:.2f} s "
          f"-> {total / elapsed:,.0f} transfers/s")
    started = time.perf_counter()
    again = await ledger.post_batch(engine, work[0], "settle-0")
    print(f"re-posting one batch (all idempotent repeats): {time.perf_counter() - started:.3f} s, "
          f"{again.skipped:,} skipped")
    started = time.perf_counter()
    verdict = await ledger.verify(engine)
    elapsed = time.perf_counter() - started
    print(f"verify: {'OK' if verdict.ok else verdict.problems[0]}, {verdict.transfers:,} transfers "
          f"in {elapsed:.2f} s -> {verdict.transfers / elapsed:,.0f}/s")
    await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--sessions-per-batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--members", type=int, default=2000)
    args = parser.parse_args()
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="cocharge-ledger-"), "ledger.db")
    asyncio.run(main(db, args.sessions_per_batch, args.batches, args.members))
