"""The journal: one group commit for many callers; a bad entry fails alone; work in its turn."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, insert, select

from cocharge.store.db import open_store, utcnow
from cocharge.store.journal import _COPY_FROM, Journal
from cocharge.store.schema import connector_status, mqtt_requests, stations
from cocharge.store.sql import BulkInsert


async def _registered(engine, *ids):
    async with engine.begin() as conn:
        await conn.execute(insert(stations), [
            {"id": sid, "connectors": 1, "admission": "accepted", "created_at": utcnow()}
            for sid in ids])


async def _one_batch(engine, statement, row, prefix, bad, column, good=10):
    """`good` + 1 entries written at once by a new journal (one batch), the sixth of them
    `bad`: the keys of those that failed, and every `column` value stored after."""
    journal = Journal(engine, linger_s=0.05)
    journal.start()
    keys = ([f"{prefix}{n}" for n in range(5)] + [bad]
            + [f"{prefix}{n}" for n in range(5, good)])
    results = await asyncio.gather(*(journal.write([(statement, [row(key)])]) for key in keys),
                                   return_exceptions=True)
    assert journal.entries_failed == 1
    await journal.close()
    async with engine.connect() as conn:
        stored = list((await conn.execute(select(column))).scalars())
    return [key for key, result in zip(keys, results, strict=True) if result is not None], stored


def _status(station_id):
    return {"station_id": station_id, "connector_id": 1, "status": "Available",
            "error_code": None, "updated_at": utcnow()}


async def test_concurrent_writes_share_one_commit(db_url):
    engine = await open_store(db_url)
    await _registered(engine, *(f"S{n}" for n in range(50)))
    journal = Journal(engine, linger_s=0.05)
    journal.start()
    stmt = insert(connector_status)
    await asyncio.gather(*(journal.write([(stmt, [_status(f"S{n}")])]) for n in range(50)))
    assert journal.commits == 1 and journal.rows_written == 50
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(connector_status)) == 50
    await journal.close()
    await engine.dispose()


async def test_a_bad_entry_fails_alone_and_the_rest_of_its_batch_is_committed(db_url):
    engine = await open_store(db_url)
    await _registered(engine, *(f"S{n}" for n in range(10)))
    # "GONE" is not a registered station: its row breaks the foreign key, in the same batch.
    failed, stored = await _one_batch(engine, insert(connector_status), _status, "S", "GONE",
                                      connector_status.c.station_id)
    assert failed == ["GONE"]
    assert sorted(stored) == sorted(f"S{n}" for n in range(10))
    await engine.dispose()


async def test_a_bad_row_of_a_bulk_batch_fails_its_entry_alone_and_nothing_twice(db_url):
    """The hot path's bulk inserts (one executemany, on PostgreSQL without BEGIN and COMMIT
    around it): a row the database refuses takes back the whole batch, and written again
    one by one the others are stored once each (a second copy would break the table's
    unique key, and fail its entry)."""
    engine = await open_store(db_url)

    def request(ref: str) -> dict[str, object]:
        return {"property": "P", "request_id": ref, "verb": "v", "digest": "d",
                "state": "done", "answer": None, "node": None, "created_at": utcnow()}

    async with engine.begin() as conn:
        await conn.execute(insert(mqtt_requests), [request("TAKEN")])
    failed, stored = await _one_batch(engine, BulkInsert(mqtt_requests), request, "R", "TAKEN",
                                      mqtt_requests.c.request_id)
    assert failed == ["TAKEN"]
    assert sorted(stored) == sorted(["TAKEN", *(f"R{n}" for n in range(10))])
    # A batch large enough to go as a COPY on PostgreSQL (store/journal.py: _COPY_FROM).
    failed, stored = await _one_batch(engine, BulkInsert(mqtt_requests), request, "Q", "TAKEN",
                                      mqtt_requests.c.request_id, good=_COPY_FROM + 10)
    assert failed == ["TAKEN"]
    assert sorted(stored) == sorted(["TAKEN", *(f"R{n}" for n in range(10)),
                                     *(f"Q{n}" for n in range(_COPY_FROM + 10))])
    await engine.dispose()


async def test_work_and_blocks_run_in_their_turn_and_roll_back_on_error(db_url):
    engine = await open_store(db_url)
    await _registered(engine, "S1", "S2")
    journal = Journal(engine)
    journal.start()

    async def two_rows(conn):
        await conn.execute(insert(connector_status), [_status("S1")])
        return "done"

    assert await journal.run(two_rows) == "done"
    try:
        async with journal.transaction() as conn:
            await conn.execute(insert(connector_status), [_status("S2")])
            raise ValueError("changed my mind")
    except ValueError:
        pass
    async with engine.connect() as conn:
        stored = set((await conn.execute(select(connector_status.c.station_id))).scalars())
    assert stored == {"S1"}  # the block's row was rolled back with it
    await journal.close()
    await engine.dispose()


async def test_close_finishes_the_commit_in_flight_and_what_is_queued_behind_it(db_url):
    """close() while a transaction is in flight: it is committed, not cut off (its caller got
    its result instead of waiting for ever), and so are the rows queued behind it."""
    engine = await open_store(db_url)
    await _registered(engine, "S1", "S2")
    journal = Journal(engine)
    journal.start()
    began, release = asyncio.Event(), asyncio.Event()

    async def work(conn):
        began.set()
        await release.wait()
        await conn.execute(insert(connector_status).values(**_status("S1")))
        return "committed"

    ran = asyncio.create_task(journal.run(work))
    await began.wait()
    queued = asyncio.create_task(journal.write([(insert(connector_status), [_status("S2")])]))
    closing = asyncio.create_task(journal.close())
    await asyncio.sleep(0.05)  # close() has begun and waits for the writer
    assert not closing.done() and not ran.done()
    release.set()
    await asyncio.wait_for(closing, 10)
    assert ran.result() == "committed" and queued.result() is None
    async with engine.connect() as conn:
        assert sorted((await conn.execute(select(connector_status.c.station_id))).scalars()) \
            == ["S1", "S2"]
    await engine.dispose()


async def test_close_gives_up_a_commit_that_never_ends_and_says_so_to_its_caller(
        db_url, monkeypatch):
    """A commit still in flight after the close's wait (a database that stopped answering) is
    cancelled, and its caller gets an error instead of waiting for ever."""
    from cocharge.store import journal as journal_module

    monkeypatch.setattr(journal_module, "_CLOSE_WAIT_S", 0.2)
    engine = await open_store(db_url)
    journal = Journal(engine)
    journal.start()
    began = asyncio.Event()

    async def stuck(conn):
        began.set()
        await asyncio.Event().wait()

    ran = asyncio.create_task(journal.run(stuck))
    await began.wait()
    await asyncio.wait_for(journal.close(), 10)
    with pytest.raises(RuntimeError, match="closed before"):
        await asyncio.wait_for(ran, 1)
    await engine.dispose()


async def test_express_rows_are_committed_before_queued_work(db_url):
    """A well-behaved charger's meter values do not wait behind a queue of other stations'
    transactions: express rows go in the commit before the next queued work item."""
    engine = await open_store(db_url)
    await _registered(engine, "S1", "S2")
    journal = Journal(engine)
    journal.start()
    order: list[str] = []
    release = asyncio.Event()

    async def slow(conn):
        await release.wait()
        order.append("slow work")

    def work(name):
        async def run(conn):  # what this work item sees committed before it
            seen = await conn.scalar(select(func.count()).select_from(connector_status))
            order.append(f"{name} after {seen} express row")
        return run

    first = asyncio.create_task(journal.run(slow))
    await asyncio.sleep(0.05)  # the slow work is under way; these queue behind it
    queued = [asyncio.create_task(journal.run(work(f"work {n}"))) for n in range(3)]
    await asyncio.sleep(0)

    fast = asyncio.create_task(journal.write([(insert(connector_status), [_status("S1")])],
                                             express=True))
    await asyncio.sleep(0.05)
    assert not fast.done()  # behind the work under way
    release.set()
    await asyncio.gather(first, fast, *queued)
    assert order == ["slow work"] + [f"work {n} after 1 express row" for n in range(3)]
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(connector_status)) == 1
    await journal.close()
    await engine.dispose()


async def test_a_long_queue_gives_up_its_express_rows_in_one_batch_and_keeps_its_order(db_url):
    """Thousands of entries queued behind work under way (a reconnect storm onto a node):
    the express rows are taken out in one commit, and the work and the ordinary rows left
    keep their order (they were once taken out one at a time, each a scan of the queue)."""
    engine = await open_store(db_url)
    ids = [f"S{n}" for n in range(300)]
    await _registered(engine, *ids)
    journal = Journal(engine)
    journal.start()
    release = asyncio.Event()
    order: list[str] = []

    async def slow(conn):
        await release.wait()

    def work(name):
        async def run(conn):
            seen = await conn.scalar(select(func.count()).select_from(connector_status))
            order.append(f"{name} after {seen}")
        return run

    first = asyncio.create_task(journal.run(slow))
    await asyncio.sleep(0.05)
    tasks = []
    for n, sid in enumerate(ids):  # work, an ordinary row, an express row; 300 times
        tasks.append(asyncio.create_task(journal.run(work(f"work {n}"))))
        tasks.append(asyncio.create_task(journal.write(
            [(insert(connector_status), [{**_status(sid), "connector_id": 2}])])))
        tasks.append(asyncio.create_task(journal.write(
            [(insert(connector_status), [_status(sid)])], express=True)))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *tasks), 120)
    # Every express row before the first queued work item; then each work item sees the
    # ordinary rows queued before it, one more each time.
    assert order == [f"work {n} after {300 + n}" for n in range(300)]
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(connector_status)) == 600
    await journal.close()
    await engine.dispose()


async def test_bulk_rows_are_stored_as_given_in_their_order(db_url):
    """The hot path's bulk inserts (an executemany on SQLite; on PostgreSQL one INSERT of the
    rows' columns as arrays for a few rows, a binary COPY for more, in slices within one
    transaction past 500): every value back as it went in, NULLs, floats, text beyond ASCII
    and microseconds included, ids in the rows' order, whatever the batch's size; and a
    value longer than its column is refused, not cut to fit, in a small batch and a large."""
    from datetime import datetime

    from cocharge.store.journal import _SLICE
    from cocharge.store.schema import meter_samples

    engine = await open_store(db_url)
    journal = Journal(engine)
    journal.start()
    at = datetime(2026, 12, 5, 10, 0, 0, 123456)

    def rows(count: int, first: int) -> list[dict]:
        return [{"session_id": n if n % 3 else None, "station_id": f"充电桩-{n}",
                 "connector_id": n, "ts": at, "measurand": "Energy.Active.Import.Register",
                 "phase": "L1" if n % 2 else None, "value": n * 0.1 + 1e-9, "unit": "Wh",
                 "context": None if n % 5 else "Sample.Periodic"}
                for n in range(first, first + count)]

    copy_from, one_slice = _COPY_FROM, _SLICE
    written: list[dict] = []
    bulk = BulkInsert(meter_samples)
    for count in (1, copy_from - 1, copy_from, 40, one_slice + 100):
        batch = rows(count, len(written))
        await journal.write([(bulk, batch)])
        written += batch
    async with engine.connect() as conn:
        stored = (await conn.execute(select(meter_samples).order_by(meter_samples.c.id))).all()
    assert [dict(r._mapping, id=None) for r in stored] == [dict(r, id=None) for r in written]
    if engine.dialect.name == "postgresql":  # SQLite keeps any length; check_rows stops it
        for count in (1, copy_from, 40):
            batch = rows(count, 0)
            batch[-1]["unit"] = "W" * 17  # unit is VARCHAR(16)
            with pytest.raises(Exception, match="too long"):
                await journal.write([(bulk, batch)])
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(meter_samples)) == len(
                written)  # none of a refused batch kept
    await journal.close()
    await engine.dispose()
