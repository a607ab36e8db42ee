"""Settlement of real sessions: automatic after the session, healed by `cocharge settle`,
discounts before the split, sealed tariffs, every amount on the verified ledger."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert, select, text, update

from cocharge import views
from cocharge.node import running_node
from cocharge.settlement import funds, ledger, loyalty, settle
from cocharge.settlement.ledger import Transfer
from cocharge.settlement.money import split_by_ratios
from cocharge.settlement.tariff import simple_tariff
from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.stations import registry, sharing
from cocharge.store.db import open_store, utcnow
from cocharge.store.schema import (
    ENERGY_REGISTER,
    charge_groups,
    group_members,
    meter_samples,
    sessions,
    settlements,
    tariffs,
)
from tests import forked_cli
from tests.conftest import settings, until, ws_url


async def topup(engine, tag: str, fen: int) -> None:
    await ledger.post_batch(engine, [Transfer(f"topup:{tag}:{fen}", "external:topup",
                                              f"wallet:{tag}", fen, kind="topup")], f"topup:{tag}")


async def settled(engine, session_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(select(settlements).where(
            settlements.c.session_id == session_id))).first()


async def test_a_finished_session_is_settled_on_the_ledger(db_url):
    async with running_node(db_url, settings()) as node:
        engine = node.engine
        await registry.add_station(engine, registry.NewStation("WB1", owner="alice", max_power_kw=11))
        await registry.add_member(engine, "Ann", "ANN", None)
        await settle.set_tariff(engine, "WB1", 0, simple_tariff(Decimal("1.50")))
        await topup(engine, "ANN", 10000)
        box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1",
                                                   speed=300, meter_interval_s=0.05))
        try:
            first = await box.charge(1, "ANN", energy_wh=2000)
            await asyncio.wait_for(first.done.wait(), 20)
            # The host's first 30 days: no commission.
            [row] = await registry.list_sessions(engine, "WB1")
            await node.gateway.settler.drain()
            done = await settled(engine, row["id"])
            assert done is not None
            energy = row["energy_wh"]
            assert done.cost_fen == int((Decimal(energy) * Decimal("0.15")).to_integral_value(
                rounding="ROUND_HALF_UP"))
            assert json.loads(done.split) == [["host:alice", done.cost_fen], ["platform", 0]]
            # After the first month: 90 / 10.
            await settle.set_terms(engine, "WB1", {"onboarded_at": utcnow() - timedelta(days=40)})
            second = await box.charge(1, "ANN", energy_wh=1000)
            await asyncio.wait_for(second.done.wait(), 20)
            await asyncio.sleep(0.3)
            await node.gateway.settler.drain()
            rows = await registry.list_sessions(engine, "WB1")
            done2 = await settled(engine, rows[-1]["id"])
            host, platform = json.loads(done2.split)
            assert [host[1], platform[1]] == split_by_ratios(done2.payable_fen, [90, 10])
            async with engine.connect() as conn:
                wallet = await ledger.balance(conn, "wallet:ANN")
                host_total = await ledger.balance(conn, "host:alice")
            assert wallet == 10000 - done.payable_fen - done2.payable_fen
            assert host_total == done.payable_fen + host[1]
            verdict = await ledger.verify(engine)
            assert verdict.ok and verdict.sums == {"CNY": 0}
        finally:
            await close_wallbox(box, reader)


async def test_a_crash_before_settlement_is_healed_by_cocharge_settle(sqlite_url):
    async with running_node(sqlite_url, settings()) as node:
        await node.gateway.settler.close()  # the process "dies" before it settles
        node.gateway.service.settler = None
        await registry.add_station(node.engine, registry.NewStation("WB2", owner="bo", max_power_kw=11))
        await registry.add_member(node.engine, "Cai", "CAI", None)
        box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB2",
                                                   speed=300, meter_interval_s=0.05))
        try:
            session = await box.charge(1, "CAI", energy_wh=1500)
            await asyncio.wait_for(session.done.wait(), 20)
        finally:
            await close_wallbox(box, reader)
        await asyncio.sleep(0.3)
        assert await settle.unsettled(node.engine) != []

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return forked_cli.run([*args, "--db", sqlite_url])

    first = cli("settle")
    assert first.returncode == 0 and "1 sessions settled" in first.stdout, first.stderr
    again = cli("settle")
    assert again.returncode == 0 and "0 sessions settled" in again.stdout
    verified = cli("ledger", "verify")
    assert verified.returncode == 0 and "ledger OK" in verified.stdout
    # No money in the wallet: the whole amount is owed (a receivable); the host's share waits
    # for it in owed:host:bo, where no payout can take it.
    balances = {(b["account"], b["asset"]): b["balance"]
                for b in json.loads(cli("ledger", "balances", "--json").stdout)}
    owed = -balances[("receivable:CAI", "CNY")]
    assert owed > 0 and ("host:bo", "CNY") not in balances
    assert balances[("owed:host:bo", "CNY")] == owed  # the first month: no commission
    # The driver tops up: the debt is paid first, and the host's share becomes the host's.
    topped = cli("wallet", "topup", "CAI", "50", "--ref", "pay-cai-1")
    assert topped.returncode == 0 and "paid what CAI owed" in topped.stdout, topped.stdout
    balances = {(b["account"], b["asset"]): b["balance"]
                for b in json.loads(cli("ledger", "balances", "--json").stdout)}
    assert balances[("receivable:CAI", "CNY")] == 0 and balances[("owed:host:bo", "CNY")] == 0
    assert balances[("host:bo", "CNY")] == owed and balances[("wallet:CAI", "CNY")] == 5000 - owed


async def insert_session(engine, station: str, tag: str, energy_wh: int, start: datetime,
                         minutes: int = 60, **extra) -> int:
    async with engine.begin() as conn:
        return int((await conn.execute(insert(sessions).values(
            station_id=station, connector_id=1, tx_ref=f"{station}-{tag}-{start.isoformat()}",
            protocol="1.6", id_tag=tag, started_at=start, ended_at=start + timedelta(minutes=minutes),
            meter_start_wh=0, meter_stop_wh=energy_wh, energy_wh=energy_wh, status="completed",
            created_at=start, **extra).returning(sessions.c.id))).scalar_one())


@pytest.fixture
async def engine(sqlite_url):
    engine = await open_store(sqlite_url)
    await registry.add_station(engine, registry.NewStation("P1", owner="host1", max_power_kw=7))
    await settle.set_terms(engine, "P1", {"onboarded_at": datetime(2025, 1, 1)})
    for tag in ("A", "B", "C"):
        await registry.add_member(engine, tag, tag, None)
    yield engine
    await engine.dispose()


async def test_a_session_settled_while_it_is_read_is_not_shown_active_with_its_bill(pg_url):
    """`sessions show` and the API read a session and its bill in two queries. Here the
    session ends and is settled between them (the reader is held at its second query by a
    lock until then): it is shown ended with its bill, never still active with it."""
    engine = await open_store(pg_url)
    try:
        await registry.add_station(engine, registry.NewStation("P1", owner="host1"))
        await registry.add_member(engine, "A", "A", None)
        start = utcnow() - timedelta(minutes=30)
        async with engine.begin() as conn:
            session_id = int((await conn.execute(insert(sessions).values(
                station_id="P1", connector_id=1, tx_ref="T1", protocol="1.6", id_tag="A",
                started_at=start, meter_start_wh=0, status="active", created_at=start)
                .returning(sessions.c.id))).scalar_one())
        async with engine.connect() as other:  # another process ends and settles it
            await other.execute(text("LOCK TABLE settlements IN ACCESS EXCLUSIVE MODE"))
            reading = asyncio.create_task(views.session_detail(engine, session_id))

            async def reader_waits() -> bool:
                async with engine.connect() as conn:
                    return bool(await conn.scalar(text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        "WHERE c.relname = 'settlements' AND NOT l.granted")))

            await until(reader_waits)
            await other.execute(update(sessions).where(sessions.c.id == session_id).values(
                status="completed", ended_at=utcnow(), meter_stop_wh=1000, energy_wh=1000))
            await other.execute(insert(settlements).values(
                session_id=session_id, payer="wallet:A", cdr="{}", cost_fen=150,
                discounts="[]", payable_fen=150, paid_fen=150, owed_fen=0, split="[]",
                settled_at=utcnow()))
            await other.commit()
            shown = await asyncio.wait_for(reading, 10)
        assert (shown["status"], shown["bill"]["payable_fen"]) == ("completed", 150)
    finally:
        await engine.dispose()


async def test_quota_pays_for_energy_and_never_goes_below_zero(engine):
    await sharing.update_member(engine, "A", quota_wh=5000)  # 5 kWh a month
    start = utcnow() - timedelta(hours=3)
    first = await settle.settle_session(engine, await insert_session(engine, "P1", "A", 4000, start))
    assert first is not None and first.priced.quota_used_wh == 4000 and first.priced.payable_fen == 0
    second = await settle.settle_session(engine, await insert_session(
        engine, "P1", "A", 4000, start + timedelta(minutes=70)))
    # 1 kWh left of the quota: 3 kWh at 1.50 are paid.
    assert second.priced.quota_used_wh == 1000 and second.priced.payable_fen == 450
    async with engine.connect() as conn:
        assert await ledger.balance(conn, "quota:A", settle.QUOTA) == 0
        assert await settle.quota_left(conn, "A", utcnow()) == 0


async def test_the_running_costs_of_many_sessions_each_at_its_own_tariff(engine):
    """A fleet page prices every running session at once (`views.priced`, a query for all of
    them): each at the tariff it sealed, else the one in force when it started (the
    connector's before the station's, not one made since), else the default."""
    await registry.add_station(engine, registry.NewStation("P2", owner="host2", connectors=2))
    await registry.add_station(engine, registry.NewStation("P3", owner="host3"))
    start = utcnow() - timedelta(minutes=20)
    sealed = await settle.set_tariff(engine, "P1", 0, simple_tariff(Decimal("2.00")))
    await settle.set_tariff(engine, "P2", 0, simple_tariff(Decimal("1.00")))
    await settle.set_tariff(engine, "P2", 2, simple_tariff(Decimal("3.00")))
    async with engine.begin() as conn:
        await conn.execute(update(tariffs).values(created_at=start - timedelta(minutes=1)))
    await settle.set_tariff(engine, "P2", 1, simple_tariff(Decimal("9.00")))  # made since
    running = {}
    for station, connector, tariff_id, kwh in (("P1", 1, sealed, 3), ("P2", 1, None, 2),
                                               ("P2", 2, None, 2), ("P3", 1, None, 4)):
        async with engine.begin() as conn:
            sid = int((await conn.execute(insert(sessions).values(
                station_id=station, connector_id=connector, tx_ref=f"{station}-{connector}",
                protocol="1.6", id_tag="A", started_at=start, meter_start_wh=5000,
                status="active", created_at=start, tariff_id=tariff_id)
                .returning(sessions.c.id))).scalar_one())
            await conn.execute(insert(meter_samples), [
                {"session_id": sid, "station_id": station, "connector_id": connector,
                 "ts": start + timedelta(minutes=minutes), "measurand": ENERGY_REGISTER,
                 "value": 5000.0 + wh} for minutes, wh in ((10, kwh * 500), (20, kwh * 1000))])
        running[(station, connector)] = sid
    rows = {(r["station"], r["connector"]): r for r in await views.priced(
        engine, await registry.list_sessions(engine, active=True))}
    assert {key: r["cost_so_far_fen"] for key, r in rows.items()} == {
        ("P1", 1): 600, ("P2", 1): 200, ("P2", 2): 600, ("P3", 1): 600}  # P3: 1.50 default
    assert await settle.running_cost_fen(engine, running[("P2", 2)]) == 600
    assert {key: r["energy_wh"] for key, r in rows.items()} == {
        ("P1", 1): 3000, ("P2", 1): 2000, ("P2", 2): 2000, ("P3", 1): 4000}


async def test_group_and_green_discounts_and_the_free_session(engine):
    await settle.set_terms(engine, "P1", {"green": True})
    await sharing.update_member(engine, "B", prefers_green=True)
    now = utcnow()
    async with engine.begin() as conn:
        group_id = int((await conn.execute(insert(charge_groups).values(
            station_id="P1", slot_start=now - timedelta(hours=2), slot_end=now, min_members=2,
            status="formed", created_at=now - timedelta(days=1), free_tag="C",
        ).returning(charge_groups.c.id))).scalar_one())
        for i, tag in enumerate(("B", "C")):
            await conn.execute(insert(group_members).values(
                group_id=group_id, tag=tag, joined_at=now - timedelta(days=1, minutes=-i)))
    # The group chose C when it formed (tests/settlement/test_money_flows.py tests the choice);
    # C's first group session is free, once, whatever the scores do after.
    for post in range(5):
        await loyalty.apply_event(engine, "C", "post_featured", f"post-{post}")
    start = now - timedelta(hours=2)
    b = await settle.settle_session(engine, await insert_session(engine, "P1", "B", 10000, start,
                                                                 group_id=group_id))
    # 10 kWh x 1.50 = 15.00; -15 % = 12.75; green -10 % of that = 11.475 -> 11.48 (half up)
    assert [amount for _, amount in b.priced.lines] == [225, 128] and b.priced.payable_fen == 1147
    c1 = await settle.settle_session(engine, await insert_session(
        engine, "P1", "C", 10000, start, group_id=group_id))
    assert c1.priced.payable_fen == 0 and "free once" in c1.priced.lines[0][0]
    c2 = await settle.settle_session(engine, await insert_session(
        engine, "P1", "C", 10000, start + timedelta(minutes=61), group_id=group_id))
    assert c2.priced.payable_fen == 1275  # only the group discount now (C did not choose green)
    # The promotions are the platform's: a green host's shares are of the list price, 15.00
    # (platform 5 %), for B's discounted session, C's free one and C's group session alike.
    for done in (b, c1, c2):
        assert dict(done.split) == {"platform": 75, "host:host1": 1425}
    async with engine.connect() as conn:
        # The platform paid what the discounts took off: 3.53 + 15.00 + 2.25.
        assert await ledger.balance(conn, funds.SPONSOR) == -(353 + 1500 + 225)
    assert (await ledger.verify(engine)).ok


async def test_a_tariff_change_does_not_change_a_started_session(engine):
    old_id = await settle.set_tariff(engine, "P1", 0, simple_tariff(Decimal("1.00")))
    start = utcnow() - timedelta(hours=2)
    sealed = await insert_session(engine, "P1", "A", 10000, start, tariff_id=old_id)
    await settle.set_tariff(engine, "P1", 0, simple_tariff(Decimal("3.00")))
    done = await settle.settle_session(engine, sealed)
    assert done.cdr.total_fen == 1000
    later = await settle.settle_session(engine, await insert_session(
        engine, "P1", "B", 10000, utcnow(), minutes=5))
    assert later.cdr.total_fen == 3000  # started under the new tariff
    before_any = await settle.settle_session(engine, await insert_session(
        engine, "P1", "C", 10000, start - timedelta(days=1)))
    assert before_any.cdr.total_fen == 1500  # no tariff yet: the default 1.50 CNY/kWh
    assert await settle.settle_session(engine, sealed) is None  # settled once


async def test_the_tariffs_in_force_of_many_stations_are_read_together(engine):
    """The "near me" list reads every station's price in one query: the same choice as
    tariff_in_force (the connector's own tariff before the station's, the newest first)."""
    await settle.set_tariff(engine, "P1", 0, simple_tariff(Decimal("1.00")))
    await settle.set_tariff(engine, "P1", 1, simple_tariff(Decimal("3.00")))
    await settle.set_tariff(engine, "P1", 0, simple_tariff(Decimal("2.00")))
    async with engine.connect() as conn:
        together = await settle.tariffs_in_force(conn, ["P1", "NOPE"], 1)
        one = await settle.tariff_in_force(conn, "P1", 1)
        station_wide = await settle.tariffs_in_force(conn, ["P1"], 2)
        assert await settle.tariffs_in_force(conn, [], 1) == {}
    assert one is not None and together == {"P1": one[1]}
    assert together["P1"] == simple_tariff(Decimal("3.00"))
    assert station_wide == {"P1": simple_tariff(Decimal("2.00"))}


async def test_a_prepaid_budget_is_never_exceeded(engine):
    start = utcnow() - timedelta(hours=2)
    # The charger stopped a few Wh after 2 kWh (3.00 CNY at 1.50): the member pays 3.00.
    over = await settle.settle_session(engine, await insert_session(engine, "P1", "A", 2013, start,
                                                                    budget_fen=300))
    assert over.cdr.total_fen == 302 and over.priced.payable_fen == 300
    assert over.priced.lines == (("prepaid budget cap", 2),)
    under = await settle.settle_session(engine, await insert_session(
        engine, "P1", "B", 1990, start, budget_fen=300))
    assert under.priced.payable_fen == 299 and under.priced.lines == ()


async def test_a_dividend_pool_pays_points_holders_within_their_caps(engine):
    with pytest.raises(loyalty.RewardsError, match="dividend.enabled true"):
        await loyalty.dividend(engine, utcnow().date(), now=utcnow() + timedelta(days=2))
    await loyalty.set_rule(engine, "dividend.enabled", "true")
    await loyalty.set_rule(engine, "dividend.revenue_share_pct", "50")
    await settle.set_terms(engine, "P1", {"onboarded_at": datetime(2025, 1, 1)})
    # A pays 15.00 and B 0.15 for charging; C pays nothing. The platform takes 10 %.
    start = utcnow() - timedelta(hours=2)
    for tag, wh in (("A", 10000), ("B", 100)):
        await topup(engine, tag, 5000)
        await settle.settle_session(engine, await insert_session(engine, "P1", tag, wh, start))
    # Green points held: A and B 7,500 each (3,000 CNY orders), C 27,000 (9,000 x 3).
    day = loyalty.local_day(utcnow())
    for tag, cny in (("A", 3000), ("B", 3000), ("C", 9000)):
        await loyalty.purchase(engine, tag, cny * 100, day, f"o-{tag}")
    tomorrow = utcnow() + timedelta(days=1)
    run = await loyalty.dividend(engine, day, now=tomorrow)
    # Platform revenue: 1.50 of A's 15.00 and 0.01 of B's 0.15 (0.135 / 0.015: the half fen
    # is a tie, which goes to the first part, the host); the pool is half of 1.51: 0.75.
    assert run.revenue_fen == 151 and run.pool_fen == 75
    # Caps: 2 x paid: A 30.00, B 0.30, C 0 (paid nothing). A:B weigh 1:1 -> 38 / 37, but B
    # may take 30 only; A takes the other 45.
    assert run.caps["B"] == 30 and run.caps["C"] == 0
    assert run.payouts == {"A": 45, "B": 30} and run.returned_fen == 0
    again = await loyalty.dividend(engine, day, now=tomorrow)
    assert not again.new and again.payouts == run.payouts
    async with engine.connect() as conn:
        assert await ledger.balance(conn, "dividend:pool") == 0
    assert (await ledger.verify(engine)).ok
    with pytest.raises(loyalty.RewardsError, match="once the day is over"):
        await loyalty.dividend(engine, day)


async def test_sessions_that_cannot_be_settled_are_quarantined_not_retried_forever(db_url):
    """An older version stored sessions on chargers' broken clocks (0001 to 9999): the settler
    sets them apart with their reason at start, settles the others, and every read path still
    answers; an operator voids one and bills the other after fixing nothing: it stays apart."""
    engine = await open_store(db_url)
    try:
        await registry.add_station(engine, registry.NewStation("Q1", owner="qo", max_power_kw=11))
        await registry.add_member(engine, "Qi", "QI", None)
        await topup(engine, "QI", 5000)
        bad = [await insert_session(engine, "Q1", "QI", 500, datetime(1, 1, 1), minutes=10),
               await insert_session(engine, "Q1", "QI", 500, datetime(1970, 1, 1),
                                    minutes=60 * 24 * 365 * 8000)]
        good = await insert_session(engine, "Q1", "QI", 1000, utcnow() - timedelta(hours=2))
    finally:
        await engine.dispose()
    async with running_node(db_url, settings()) as node:
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            rows = {r["id"]: r for r in await registry.list_sessions(node.engine, "Q1")}
            if all(rows[i]["status"] == "quarantined" for i in bad) and await settled(
                    node.engine, good) is not None:
                break
            assert asyncio.get_running_loop().time() < deadline, rows
            await asyncio.sleep(0.05)
        for i in bad:
            assert "cannot be priced" in rows[i]["flag_reason"], rows[i]
            assert await settled(node.engine, i) is None
        events = await registry.list_station_events(node.engine, "Q1", "quarantine")
        assert sorted(e["details"]["session"] for e in events) == sorted(bad)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return forked_cli.run([*args, "--db", db_url])

    for args in (["sessions", "list"], ["sessions", "show", str(bad[1])], ["settle"]):
        done = cli(*args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    report = cli("ledger", "liabilities")
    assert "Sessions ended but not settled: 2" in report.stdout, report.stdout
    assert f"session {bad[0]} quarantined: not settled: SessionTimesError" in report.stdout
    voided = cli("sessions", "review", str(bad[0]), "--void", "--note", "clock of 0001")
    assert voided.returncode == 0, voided.stderr
    billed = cli("sessions", "review", str(bad[1]), "--bill", "--note", "try it")
    assert billed.returncode == 2 and "stays quarantined" in billed.stderr, billed.stderr
    assert "Traceback" not in billed.stderr
    report = json.loads(cli("ledger", "liabilities", "--json").stdout)
    assert [s["session"] for s in report["unsettled_sessions"]] == [bad[1]]
    assert cli("ledger", "verify").returncode == 0


async def test_cocharge_settle_quarantines_what_fails_and_settles_the_rest(sqlite_url):
    engine = await open_store(sqlite_url)
    try:
        await registry.add_station(engine, registry.NewStation("Q2", owner="qo", max_power_kw=11))
        await registry.add_member(engine, "Qi", "QI", None)
        bad = await insert_session(engine, "Q2", "QI", 500, datetime(9999, 12, 31), minutes=0)
        good = await insert_session(engine, "Q2", "QI", 1000, utcnow() - timedelta(hours=2))
    finally:
        await engine.dispose()
    done = forked_cli.run(["settle", "--db", sqlite_url])
    assert done.returncode == 1 and "1 sessions settled" in done.stdout, done.stdout
    assert f"session {bad} not settled, quarantined: SessionTimesError" in done.stderr
    assert "Traceback" not in done.stderr
    shown = forked_cli.run(["sessions", "list", "--json", "--db", sqlite_url])
    status = {r["id"]: r["status"] for r in json.loads(shown.stdout)}
    assert status == {bad: "quarantined", good: "completed"}


def test_a_tariff_in_parts_and_in_one_line():
    """What a page says in its reader's language (price_parts) and the charger's one line
    (describe) come from the same reading of the tariff."""
    from cocharge.settlement.overstay import IdleFeeRule
    from cocharge.settlement.tariff21 import describe, price_parts

    tariff = simple_tariff(Decimal("1.20"), tod=[("19:00", "23:00", Decimal("1.80"))],
                           idle=IdleFeeRule(fen_per_minute=10, grace_s=1800))
    shown = price_parts(tariff)
    assert [(p["type"], p["cny"], p["from"], p["to"]) for p in shown["parts"]] == [
        ("ENERGY", "1.80", "19:00", "23:00"), ("ENERGY", "1.20", None, None)]
    assert shown["overstay"] == {"cny_per_min": "0.10", "after_min": 30}
    assert describe(tariff) == "CNY 1.80/kWh 19:00-23:00, 1.20/kWh, overstay 0.10/min after 30 min"
