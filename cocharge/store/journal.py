"""The journal: the one writer of the gateway's hot path, group-committed.

Every write a charger's message causes (boots, connector states, notices, node holds,
sessions, meter samples, transaction-event marks, last-seen times) is an entry here. A
caller waits until its entry is committed, so a charger is answered only once its data is
durable; every caller that arrives while a commit is in flight shares the next one, so a
reconnect storm of thousands of chargers costs a handful of commits, not thousands.

Two kinds of entry:
- rows (`write`): (statement, rows) pairs. Statements are built once and reused, so that
  the rows of every entry of a batch that use the same statement go out together (a
  `BulkInsert`, the hot tables' rows, straight to the driver: an executemany on SQLite, one
  INSERT of arrays or a COPY on PostgreSQL). Rows are
  checked by the caller before they get here; if a batch still fails, each of its entries
  is tried again on its own, so only the guilty one fails.
- work (`run`): an async function given the connection, for what needs reads and
  generated ids (a new session). It runs alone in its own transaction, in its turn.

Express rows (`write(..., express=True)`: meter values of a running session, whose start is
committed) do not wait behind queued work: each work item is a transaction of its own, and a
storm of them (a flood of junk transactions from misbehaving chargers) would otherwise hold
every well-behaved charger's meter values for as many commits. Whatever is express is
committed, as one batch, before the next work item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.background import finish
from cocharge.store.sql import BulkInsert

log = logging.getLogger(__name__)

T = TypeVar("T")
_SLICE = 500
_CLOSE_WAIT_S = 10.0  # close(): how long the commit in flight may take before it is given up
_COPY_FROM = 8  # rows: below, an INSERT of arrays; from here on, a COPY (_pg_insert)
Rows = Sequence[tuple[Any, Sequence[Any]]]  # dicts; tuples for a BulkInsert
Work = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass(eq=False)  # an entry is itself: compared by identity, never field by field
class _Entry:
    rows: Rows | None
    work: Work | None
    done: asyncio.Future[Any]
    size: int
    express: bool = False


def _grouped(batch: list[_Entry]) -> list[tuple[Any, list[Any]]]:
    """The rows of one statement across the batch, together (first use first)."""
    grouped: dict[int, tuple[Any, list[Any]]] = {}
    for entry in batch:
        for statement, rows in entry.rows or ():
            if rows:
                grouped.setdefault(id(statement), (statement, []))[1].extend(rows)
    return list(grouped.values())


async def _pg_insert(driver: Any, statement: BulkInsert, rows: list[Any]) -> None:
    """Rows of one BulkInsert into PostgreSQL (asyncpg): a few as one INSERT of unnested
    arrays (one round trip); from `_COPY_FROM` rows on, as a binary COPY: a round trip more,
    but less CPU a row (asyncpg checks every element of an array against the collection ABCs;
    COPY encodes each value with its column's codec alone). benchmarks/journal_batches.py:
    they cross between 4 and 8 meter rows; at 12 rows the gateway 165 -> 125 µs a batch, at 40
    295 -> 174, the database 176 -> 170 and 336 -> 288, and the wall time less from 8 rows on
    (the extra round trip costs less than the encoding). Either is one statement: atomic on
    its own."""
    if len(rows) >= _COPY_FROM:
        await driver.copy_records_to_table(statement.table.name, columns=statement.columns,
                                           records=statement.params("postgresql", rows))
    else:
        await driver.execute(statement.unnest_sql, *statement.columns_of(rows))


class Journal:
    def __init__(self, engine: AsyncEngine, max_rows: int = 5000, linger_s: float = 0.002) -> None:
        # Told (rows, seconds) after each batch commit (the node's metrics).
        self.observe: Callable[[int, float], None] | None = None
        self._engine = engine
        self._max_rows = max_rows
        self._linger_s = linger_s
        self._pending: deque[_Entry] = deque()
        self._express_queued = 0  # express entries in _pending
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the writer's, once started
        self._conn: AsyncConnection | None = None  # the rows' own (_rows_committed)
        self._checkpoints: asyncio.Task[None] | None = None
        self._closing = False
        self._in_flight: list[_Entry] = []  # the batch (or work) being committed
        self.commits = 0
        self.committed_at = float("-inf")  # time.monotonic() of the last commit
        self.rows_written = 0
        self.entries_failed = 0

    def start(self, checkpoint_every_s: float | None = None) -> None:
        """Start writing; with `checkpoint_every_s` (SQLite without auto-checkpoint), copy the
        WAL into the database that often, from a connection of its own."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="journal")
            self._loop = self._task.get_loop()
        if checkpoint_every_s and self._engine.dialect.name == "sqlite":
            self._checkpoints = asyncio.create_task(self._checkpoint_forever(checkpoint_every_s),
                                                    name="wal-checkpoint")

    async def _checkpoint_forever(self, every_s: float) -> None:
        done = self.commits
        while True:
            await asyncio.sleep(every_s)
            if self.commits == done:
                continue
            done = self.commits
            try:
                async with self._engine.connect() as conn:
                    await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:
                log.exception("journal: WAL checkpoint failed")

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        if self._task is None:
            return
        # The writer finishes the commit in flight and what is queued, then returns; it is
        # cancelled only if that takes longer than _CLOSE_WAIT_S (a database that stopped
        # answering), and the callers of what it was committing are told so, not left waiting.
        self._closing = True
        self._wakeup.set()
        task, self._task = self._task, None
        if not await finish(task, _CLOSE_WAIT_S):
            log.warning("journal: the commit in flight took over %.0f s at close; given up",
                        _CLOSE_WAIT_S)
            for entry in self._in_flight:
                if not entry.done.done():
                    entry.done.set_exception(RuntimeError(
                        "the journal closed before this entry's commit finished"))
        elif not task.cancelled() and task.exception() is not None:
            log.error("journal: the writer had stopped: %r", task.exception())
        self._closing = False
        while self._pending:
            await self._flush()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()

    def _enqueue(self, rows: Rows | None, work: Work | None, size: int,
                 express: bool = False) -> asyncio.Future[Any]:
        # The writer's loop, once started (asking for the running loop is a getpid system
        # call on Python 3.11, for every message).
        loop = self._loop if self._task is not None else asyncio.get_running_loop()
        assert loop is not None
        done: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Entry(rows, work, done, size, express))
        self._express_queued += express
        self._wakeup.set()
        return done

    async def write(self, rows: Rows, express: bool = False) -> None:
        """Queue rows and return once they are committed (raises what their commit raised);
        `express`: ahead of queued work (module docstring)."""
        size = sum(len(r) for _, r in rows)
        if size == 0:
            return
        await self._enqueue(rows, None, size, express)

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in its own transaction in the journal's order; returns what it returned."""
        result: T = await self._enqueue(None, work, 1)
        return result

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """`async with journal.transaction() as conn:` - a transaction of the caller's own, taken
        in the journal's turn (like `run`, for code written as a block)."""
        loop = asyncio.get_running_loop()
        handed: asyncio.Future[AsyncConnection] = loop.create_future()
        finished: asyncio.Future[None] = loop.create_future()

        async def work(conn: AsyncConnection) -> None:
            handed.set_result(conn)
            await finished  # the caller's block runs meanwhile; its error rolls back

        committed = self._enqueue(None, work, 1)
        await asyncio.wait({handed, committed}, return_when=asyncio.FIRST_COMPLETED)
        if not handed.done():
            await committed  # the transaction could not begin: raise why
            raise RuntimeError("journal transaction ended before it began")
        try:
            yield handed.result()
        except BaseException as exc:
            finished.set_exception(exc)
            with contextlib.suppress(BaseException):
                await committed
            raise
        finished.set_result(None)
        await committed

    async def _run(self) -> None:
        while not self._closing:
            await self._wakeup.wait()
            # Let the messages that are already in arrive first (a linger of 0 still yields
            # once); whatever comes in while a commit is in flight joins the next one.
            await asyncio.sleep(self._linger_s)
            self._wakeup.clear()
            while self._pending:
                await self._flush()
            self._in_flight = []

    async def _flush(self) -> None:
        if self._pending[0].work is not None and self._express_queued:
            # One pass: the first express entries out, the rest kept in their order (removing
            # them one by one was a scan of the queue each, comparing entries field by field:
            # minutes of CPU with thousands of chargers' meter values queued behind work).
            express: list[_Entry] = []
            rest: deque[_Entry] = deque()
            for entry in self._pending:
                if entry.express and len(express) < self._max_rows:
                    express.append(entry)
                else:
                    rest.append(entry)
            self._pending = rest
            self._express_queued -= len(express)
            self._in_flight = express
            await self._commit(express, sum(e.size for e in express))
            return
        first = self._take()
        if first.work is not None:
            self._in_flight = [first]
            await self._one(first)
            return
        batch = [first]
        size = first.size
        while self._pending and self._pending[0].work is None and size < self._max_rows:
            entry = self._take()
            batch.append(entry)
            size += entry.size
        self._in_flight = batch
        await self._commit(batch, size)

    def _take(self) -> _Entry:
        entry = self._pending.popleft()
        if entry.express:
            self._express_queued -= 1
        return entry

    async def _commit(self, batch: list[_Entry], size: int) -> None:
        started = time.monotonic()
        try:
            await self._rows_committed(batch)
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            log.warning("journal: a batch of %d entries failed (%s); committing them one by one",
                        len(batch), exc)
            for entry in batch:
                await self._one(entry)
            return
        self.commits += 1
        self.committed_at = time.monotonic()
        self.rows_written += size
        if self.observe is not None:
            self.observe(size, time.monotonic() - started)
        for entry in batch:
            if not entry.done.done():
                entry.done.set_result(None)

    async def _rows_committed(self, batch: list[_Entry]) -> None:
        """Commit rows on the journal's own connection, kept from one commit to the next (no
        pool checkout, liveness ping and reset for every batch: a fifth of a saturated
        node's database work). A connection that broke (the database restarted) is replaced
        and the batch written again once: rows, unlike work, are safe to repeat."""
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = await self._engine.connect()
            conn = self._conn
            try:
                grouped = _grouped(batch)
                if all(isinstance(statement, BulkInsert) for statement, _ in grouped):
                    await self._bulk_only(conn, grouped)
                    return
                async with conn.begin():
                    await self._execute(conn, batch)
                return
            except Exception as exc:
                self._conn = None
                with contextlib.suppress(Exception):
                    await conn.close()
                broke = (isinstance(exc, DBAPIError) and exc.connection_invalidated
                         or isinstance(exc, ConnectionError))
                if attempt == 1 and broke:
                    log.warning("journal: the database connection broke (%s); writing again "
                                "on a new one", exc)
                    continue
                raise

    @staticmethod
    async def _bulk_only(conn: AsyncConnection, grouped: list[tuple[Any, list[Any]]]) -> None:
        """A batch of BulkInserts alone (saturated meter values, the frame log): one
        transaction of the driver's own, without SQLAlchemy's begin and commit around it."""
        dialect = conn.dialect.name
        driver: Any = (await conn.get_raw_connection()).driver_connection
        if dialect == "postgresql":
            try:
                if len(grouped) == 1 and len(grouped[0][1]) <= _SLICE:
                    # One statement is atomic by itself (PostgreSQL's implicit transaction):
                    # no BEGIN and COMMIT round trips.
                    await _pg_insert(driver, *grouped[0])
                    return
                async with driver.transaction():
                    for statement, rows in grouped:
                        for start in range(0, len(rows), _SLICE):
                            await _pg_insert(driver, statement, rows[start:start + _SLICE])
            except Exception as exc:
                if driver.is_closed():  # the database dropped it: the caller takes a new one
                    raise ConnectionError(f"the database closed the connection ({exc})") from exc
                raise
            return
        # SQLite (aiosqlite): the first INSERT begins the transaction, as under SQLAlchemy.
        # (Writing and committing in one turn of aiosqlite's thread, through its private
        # attributes, measured within the noise against this: 94 against 98 µs a call.)
        try:
            for statement, rows in grouped:
                for start in range(0, len(rows), _SLICE):
                    await driver.executemany(statement.sqlite_sql, statement.params(
                        dialect, rows[start:start + _SLICE]))
            await driver.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await driver.rollback()
            raise

    @staticmethod
    async def _execute(conn: AsyncConnection, batch: list[_Entry]) -> None:
        dialect = conn.dialect.name
        for statement, rows in _grouped(batch):
            # Parameters are processed on the event loop: in slices, so that other stations
            # are read and answered between them.
            for start in range(0, len(rows), _SLICE):
                if isinstance(statement, BulkInsert) and dialect == "postgresql":
                    await conn.exec_driver_sql(statement.unnest_sql, tuple(
                        statement.columns_of(rows[start:start + _SLICE])))
                elif isinstance(statement, BulkInsert):
                    await conn.exec_driver_sql(statement.sqlite_sql, statement.params(
                        dialect, rows[start:start + _SLICE]))
                else:
                    await conn.execute(statement, rows[start:start + _SLICE])

    async def _one(self, entry: _Entry) -> None:
        try:
            async with self._engine.begin() as conn:
                if entry.work is not None:
                    result = await entry.work(conn)
                else:
                    await self._execute(conn, [entry])
                    result = None
        except Exception as exc:
            self._fail(entry, exc)
            return
        self.commits += 1
        self.committed_at = time.monotonic()
        self.rows_written += entry.size
        if not entry.done.done():
            entry.done.set_result(result)

    def _fail(self, entry: _Entry, exc: Exception) -> None:
        self.entries_failed += 1
        log.error("journal: an entry failed and was not committed: %s", exc)
        if not entry.done.done():
            entry.done.set_exception(exc)
