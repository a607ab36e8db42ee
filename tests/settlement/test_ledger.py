"""The ledger: idempotent, double-entry, no overdraft on wallets, tamper-evident."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocharge.settlement import ledger
from cocharge.settlement.ledger import LedgerConflict, Overdraft, Transfer
from cocharge.store.db import open_store


@pytest.fixture
async def engine(db_url):
    engine = await open_store(db_url)
    yield engine
    await engine.dispose()


async def test_posting_is_idempotent_and_conflicts_are_refused(engine):
    topup = Transfer("topup:1", "external:topup", "wallet:ANN", 5000, kind="topup")
    assert await ledger.post_batch(engine, [topup], "b1") == ledger.Posted(1, 0)
    assert await ledger.post_batch(engine, [topup], "b1") == ledger.Posted(0, 1)
    with pytest.raises(LedgerConflict, match="topup:1"):
        await ledger.post_batch(engine, [Transfer("topup:1", "external:topup", "wallet:ANN", 6000,
                                                  kind="topup")], "b2")
    shown = {(b["account"], b["asset"]): b["balance"] for b in await ledger.balances(engine)}
    assert shown == {("external:topup", "CNY"): -5000, ("wallet:ANN", "CNY"): 5000}
    assert (await ledger.verify(engine)).ok


async def test_a_wallet_cannot_be_overdrawn_and_the_batch_is_all_or_nothing(engine):
    await ledger.post_batch(engine, [Transfer("t1", "external:topup", "wallet:BOB", 1000)], "b1")
    with pytest.raises(Overdraft, match="wallet:BOB"):
        await ledger.post_batch(engine, [
            Transfer("t2", "wallet:BOB", "platform", 600),
            Transfer("t3", "wallet:BOB", "host:alice", 600)], "b2")
    assert await ledger.post_batch(engine, [Transfer("t2", "wallet:BOB", "platform", 600)], "b3")
    async with engine.connect() as conn:
        assert await ledger.balance(conn, "wallet:BOB") == 400
        assert await ledger.balance(conn, "host:alice") == 0
    # A receivable may go negative: the member owes it.
    await ledger.post_batch(engine, [Transfer("t4", "receivable:BOB", "platform", 900)], "b4")
    assert (await ledger.verify(engine)).ok


accounts = st.sampled_from(["external:topup", "wallet:A", "wallet:B", "host:h", "platform",
                            "receivable:A"])
transfer_lists = st.lists(st.lists(st.tuples(accounts, accounts, st.integers(1, 10_000),
                                             st.sampled_from(["CNY", "COIN"])),
                                   min_size=1, max_size=8), min_size=1, max_size=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transfer_lists)
def test_every_asset_sums_to_zero_after_random_batches(batches) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as folder:
            engine = await open_store(str(Path(folder) / "l.db"))
            n = 0
            for b, batch in enumerate(batches):
                items = []
                for debit, credit, amount, asset in batch:
                    n += 1
                    if debit != credit:
                        items.append(Transfer(f"x{n}", debit, credit, amount, asset))
                try:
                    await ledger.post_batch(engine, items, f"b{b}")
                except Overdraft:
                    pass
            verdict = await ledger.verify(engine)
            wallets = [x for x in await ledger.balances(engine) if x["account"].startswith("wallet:")]
            await engine.dispose()
        assert verdict.ok, verdict.problems
        assert all(v == 0 for v in verdict.sums.values())
        assert all(w["balance"] >= 0 for w in wallets)

    asyncio.run(run())


async def test_editing_a_row_in_the_database_is_detected(sqlite_url):
    engine = await open_store(sqlite_url)
    for i in range(5):
        await ledger.post_batch(engine, [Transfer(f"t{i}", "external:topup", "wallet:ANN", 100 + i)],
                                f"b{i}")
    assert (await ledger.verify(engine)).ok
    await engine.dispose()
    db = sqlite3.connect(sqlite_url)
    db.execute("UPDATE ledger_transfers SET amount = 999 WHERE id = 't2'")
    db.commit()
    db.close()
    engine = await open_store(sqlite_url)
    verdict = await ledger.verify(engine)
    assert not verdict.ok and "transfer 3 (t2)" in verdict.problems[0] and "edited" in verdict.problems[0]
    await engine.dispose()
    db = sqlite3.connect(sqlite_url)  # put it back, then remove a row instead
    db.execute("UPDATE ledger_transfers SET amount = 102 WHERE id = 't2'")
    db.execute("DELETE FROM ledger_transfers WHERE id = 't3'")
    db.commit()
    db.close()
    engine = await open_store(sqlite_url)
    verdict = await ledger.verify(engine)
    assert not verdict.ok and "seq 4 is missing" in verdict.problems[0]
    await engine.dispose()
