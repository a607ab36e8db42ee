"""`column IN values` for any number of values (store/sql.py `among`): PostgreSQL's driver
takes at most 32,767 parameters in a statement, so a plain IN of more values failed (an
operator's dashboard over a month of a large fleet with drivers owing their bills did)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select

from cocharge.api.keys import create_key
from cocharge.node import running_node
from cocharge.store.db import open_store, utcnow
from cocharge.store.schema import sessions, settlements, stations
from cocharge.store.sql import among
from tests.api.test_api import Client, base
from tests.conftest import settings


async def test_any_number_of_texts_and_numbers(db_url):
    engine = await open_store(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(stations), [
                {"id": f"S{n}", "admission": "accepted", "connectors": n + 1,
                 "created_at": utcnow()} for n in range(10)])
        async with engine.connect() as conn:
            for count in (0, 3, 300, 40_000):  # none, a plain IN, one parameter, past 32,767
                ids = [f"S{k}" for k in range(0, 3 * count, 3)]
                found = (await conn.execute(select(stations.c.id).where(
                    among(conn, stations.c.id, ids)))).scalars().all()
                assert sorted(found) == sorted(f"S{k}" for k in range(0, min(10, 3 * count), 3))
                numbers = list(range(2, 2 * count + 2, 2))
                found = (await conn.execute(select(stations.c.id).where(
                    among(engine, stations.c.connectors, set(numbers))))).scalars().all()
                assert sorted(found) == sorted(f"S{n - 1}" for n in numbers if n <= 10)
    finally:
        await engine.dispose()


async def test_the_operators_dashboard_over_more_sessions_than_parameters(pg_url):
    """40,000 sessions settled this month, every driver still owing its bill: the dashboard
    asks what was collected of each (it was a 500 on PostgreSQL)."""
    async with running_node(pg_url, settings(api_port=0)) as node:
        now = utcnow()
        async with node.engine.begin() as conn:
            await conn.execute(insert(stations), [{"id": "BUSY", "admission": "accepted",
                                                   "connectors": 40, "created_at": now}])
            ids = (await conn.execute(insert(sessions).returning(sessions.c.id), [
                {"station_id": "BUSY", "connector_id": 1 + n % 40, "tx_ref": f"T{n}",
                 "protocol": "1.6", "id_tag": "T1", "status": "completed", "energy_wh": 1000,
                 "started_at": now - timedelta(minutes=n), "ended_at": now - timedelta(minutes=n),
                 "created_at": now} for n in range(40_000)])).scalars().all()
            await conn.execute(insert(settlements), [
                {"session_id": sid, "cdr": "{}", "cost_fen": 120, "discounts": "[]",
                 "payable_fen": 120, "paid_fen": 0, "owed_fen": 120, "split": "[]",
                 "settled_at": now} for sid in ids])
        ops = Client(base(node), await create_key(node.engine, "ops", "operator", None))
        status, board = await ops.get("/api/v1/dashboard?days=30")
        assert status == 200, board
        assert board["sessions"] == 40_000 and board["billed_fen"] == 40_000 * 120
        assert board["owed_by_drivers_fen"] == 40_000 * 120 and board["paid_fen"] == 0
