"""Money at the charger and money that comes in later (settlement/funds.py): an empty wallet
cannot start, a session's money is held and it stops at what the member may spend, hosts are
paid only what drivers paid, promotions are the platform's, and prepaid limits hold."""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select

from cocharge.node import running_node
from cocharge.settlement import funds, ledger, loyalty, payouts, settle
from cocharge.settlement.tariff import simple_tariff
from cocharge.stations import registry
from cocharge.store.db import open_store, utcnow
from cocharge.store.schema import sessions, station_events
from tests import forked_cli
from tests.conftest import settings, simulated, until
from tests.settlement.test_settle import insert_session

PROTOCOLS = ["1.6", "2.0.1", "2.1"]


async def refusals(node, station_id: str) -> list[dict]:
    async with node.engine.connect() as conn:
        rows = (await conn.execute(select(station_events.c.payload).where(
            station_events.c.station_id == station_id, station_events.c.kind == "refused"))).all()
    return [json.loads(r.payload) for r in rows]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_empty_wallet_cannot_start_and_a_topped_up_one_is_held(db_url, protocol):
    async with running_node(db_url, settings(start_minimum_fen=100)) as node:
        await registry.add_station(node.engine, registry.NewStation("F1", max_power_kw=11))
        await registry.add_member(node.engine, "Ann", "ANN", None)
        async with simulated(node, "F1", protocol, meter_interval_s=0.1) as box:
            refused = await box.charge(1, "ANN", energy_wh=1000)
            await asyncio.wait_for(refused.done.wait(), 15)
            assert not refused.authorized  # 1.6 Blocked, 2.0.1 NoCredit
            why = await until(lambda: refusals(node, "F1"))
            assert why[0]["status"] == "NoCredit" and "not enough money" in why[0]["reason"]

            done = await funds.top_up(node.engine, "ANN", 2000, "pay-1")
            assert done.applied and done.balance_fen == 2000
            session = await box.charge(1, "ANN", energy_wh=2000)
            await asyncio.wait_for(session.done.wait(), 30)
            assert session.authorized
        await node.gateway.settler.drain()
        async with node.engine.connect() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.id_tag == "ANN"))).one()
            assert row.budget_fen == 2000  # what ANN may spend: the charger stops there
            held = await ledger.statement(node.engine, "held:ANN")
            payable = await settle.payable_fen(node.engine, row.id)
        # Held at the start, taken for the real amount at settlement, the rest released.
        assert [(x["kind"], x["change"]) for x in held] == [
            ("hold", 2000), ("session-payment", -payable), ("hold-release", payable - 2000)]
        money = await funds.member_money(node.engine, "ANN")
        assert money["wallet_fen"] == 2000 - payable and money["held_fen"] == 0
        assert money["owed_fen"] == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_credit_line_charges_up_to_the_line_and_the_charger_stops_there(
        db_url, protocol):
    async with running_node(db_url, settings(start_minimum_fen=100)) as node:
        await registry.add_station(node.engine, registry.NewStation("F2", owner="hana",
                                                                    max_power_kw=11))
        await registry.add_member(node.engine, "Bo", "BO", None)
        await settle.set_tariff(node.engine, "F2", 0, simple_tariff(Decimal("1.50")))
        await loyalty.set_rule(node.engine, "funds.credit_lines", "100=3")  # 3 CNY at score 100
        async with simulated(node, "F2", protocol, meter_interval_s=0.05) as box:
            session = await box.charge(1, "BO", energy_wh=10_000)  # wants 15 CNY of energy
            await asyncio.wait_for(session.done.wait(), 60)
            assert session.authorized
        await node.gateway.settler.drain()
        async with node.engine.connect() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.id_tag == "BO"))).one()
        assert row.budget_fen == 300 and row.cutoff_reason == "budget"
        assert row.energy_wh < 2_100  # 3 CNY buys 2 kWh: stopped by the charger there
        money = await funds.member_money(node.engine, "BO")
        owed = await settle.payable_fen(node.engine, row.id)
        assert 0 < owed <= 300 and money["owed_fen"] == owed and money["credit_line_fen"] == 300
        # The line is used: BO cannot start again until it pays.
        async with node.engine.connect() as conn:
            assert (await funds.funds_of(conn, "BO")).may_start(100)[0] is False
        # The host's share waits for BO's money.
        async with node.engine.connect() as conn:
            assert await ledger.balance(conn, "owed:host:hana") == owed
            assert await ledger.balance(conn, "host:hana") == 0


async def test_payees_share_the_list_price_whatever_the_promotion(db_url):
    """Quota, group discount, a free session, a free day, green: the host's share is its
    share of the list price; the platform pays the promotion."""
    engine = await open_store(db_url)
    try:
        await registry.add_station(engine, registry.NewStation("G1", owner="gina", max_power_kw=7))
        await settle.set_terms(engine, "G1", {"green": True,
                                              "onboarded_at": utcnow() - timedelta(days=90)})
        for tag in ("PLAIN", "GREEN", "QUOTA"):
            await registry.add_member(engine, tag, tag, None)
            await funds.top_up(engine, tag, 5000, f"t-{tag}")
        from cocharge.stations import sharing

        await sharing.update_member(engine, "GREEN", prefers_green=True)
        await sharing.update_member(engine, "QUOTA", quota_wh=5000)
        start = utcnow() - timedelta(hours=3)
        done = {tag: await settle.settle_session(engine, await insert_session(
            engine, "G1", tag, 10_000, start + timedelta(minutes=61 * n)))
            for n, tag in enumerate(("PLAIN", "GREEN", "QUOTA"))}
        plain = dict(done["PLAIN"].split)
        assert not done["PLAIN"].priced.lines and done["GREEN"].priced.lines
        assert done["QUOTA"].priced.quota_used_wh == 5000
        for tag in ("GREEN", "QUOTA"):
            assert dict(done[tag].split) == plain, tag  # the green host earns the same
        async with engine.connect() as conn:
            sponsored = -await ledger.balance(conn, funds.SPONSOR)
        assert sponsored == sum(a for d in done.values() for _, a in d.priced.lines) > 0
        assert (await ledger.verify(engine)).ok
    finally:
        await engine.dispose()


async def test_prepaid_limits_and_a_top_up_once_per_reference(db_url):
    engine = await open_store(db_url)
    try:
        await registry.add_member(engine, "Dee", "DEE", None)
        with pytest.raises(funds.FundsError, match="at most 5000.00 CNY"):
            await funds.top_up(engine, "DEE", 500_001, "big")
        assert (await funds.top_up(engine, "DEE", 400_000, "a")).balance_fen == 400_000
        with pytest.raises(funds.FundsError, match="funds.max_balance_cny"):
            await funds.top_up(engine, "DEE", 200_000, "b")
        again = await funds.top_up(engine, "DEE", 400_000, "a")
        assert not again.applied and again.balance_fen == 400_000
        with pytest.raises(funds.FundsError, match="no member"):
            await funds.top_up(engine, "NOBODY", 100, "c")
    finally:
        await engine.dispose()


OPS = st.lists(st.one_of(
    st.tuples(st.just("session"), st.sampled_from(["A", "B"]), st.integers(500, 12_000)),
    st.tuples(st.just("topup"), st.sampled_from(["A", "B"]), st.integers(1, 4_000)),
    st.tuples(st.just("payout"), st.just(""), st.just(0)),
), min_size=1, max_size=14)


@hypothesis_settings(max_examples=12, deadline=None)
@given(ops=OPS)
def test_no_payee_is_ever_paid_more_than_was_collected(ops):
    """After every step of random sessions, top-ups and payout runs: what drivers still owe
    equals what waits for them in owed:<payee>; every payee's collected share plus what
    waits is its share of the list prices; nothing paid out exceeds what was collected."""
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_steps(str(Path(folder) / "f.db"), ops))


async def _steps(db: str, ops: list) -> None:
    engine = await open_store(db)
    try:
        await registry.add_station(engine, registry.NewStation("H1", owner="hal", max_power_kw=22))
        await settle.set_terms(engine, "H1", {"onboarded_at": utcnow() - timedelta(days=90)})
        await payouts.set_payee(engine, "host:hal", "Hal", "bank", "6222020200112233", "ICBC")
        for tag in ("A", "B"):
            await registry.add_member(engine, tag, tag, None)
        start = utcnow() - timedelta(days=2)
        shares = 0
        for n, (op, tag, amount) in enumerate(ops):
            if op == "session":
                done = await settle.settle_session(engine, await insert_session(
                    engine, "H1", tag, amount, start + timedelta(minutes=70 * n)))
                shares += dict(done.split)["host:hal"]
            elif op == "topup":
                await funds.top_up(engine, tag, amount, f"r{n}")
            else:
                await payouts.run(engine, (start + timedelta(days=n)).date(), minimum_fen=1)
            async with engine.connect() as conn:
                debts = -(await ledger.balance(conn, "receivable:A")
                          + await ledger.balance(conn, "receivable:B"))
                waiting = (await ledger.balance(conn, "owed:host:hal")
                           + await ledger.balance(conn, "owed:platform"))
                host = await ledger.balance(conn, "host:hal")
                booked = await ledger.balance(conn, "payable:host:hal")
                paid_out = -await ledger.balance(conn, "external:payouts")
                hal_waiting = await ledger.balance(conn, "owed:host:hal")
            assert debts == waiting >= 0
            assert host + booked + paid_out + hal_waiting == shares
            assert host >= 0 and hal_waiting >= 0
        assert (await ledger.verify(engine)).ok
    finally:
        await engine.dispose()


def test_negative_cash_fails_the_liability_check_even_with_nothing_owed():
    """The audit's case: hosts paid money nobody collected left cash at -65.88 while the report
    said 'nothing owed' and --fail-under passed."""
    from cocharge.settlement import liabilities
    from cocharge.settlement.rewards import DEFAULTS

    report = liabilities.assess({("external:payouts", "CNY"): 6588,
                                 ("promotions:platform", "CNY"): -6588}, DEFAULTS, Decimal("1.5"))
    assert report.cash_fen == -6588 and report.coverage("cash") is None
    assert report.short(Decimal(1)) == {"cash": "negative (-65.88 CNY)"}
    assert any("more went out than came in" in w for w in report.warnings)
    assert "nothing owed, but funds negative" in "\n".join(report.text_lines())


def test_a_flagged_session_is_reviewed_billed_or_voided(tmp_path):
    """A 7 kW station's session that delivered more than 7 kW can is flagged and never billed
    by itself: its hold goes back; the operator bills or voids it, with a note, on record."""
    import subprocess

    db = str(tmp_path / "r.db")

    async def setup() -> tuple[int, int]:
        engine = await open_store(db)
        try:
            await registry.add_station(engine, registry.NewStation("R1", owner="rae",
                                                                   max_power_kw=7))
            await registry.add_member(engine, "Eve", "EVE", None)
            await funds.top_up(engine, "EVE", 10_000, "pay-1")
            start = utcnow() - timedelta(hours=2)
            ids = []
            for n in range(2):
                sid = await insert_session(engine, "R1", "EVE", 20_600,
                                           start + timedelta(minutes=61 * n),
                                           flag_reason="20.6 kWh in 60 min: more than 7 kW")
                async with engine.begin() as conn:
                    await conn.execute(sessions.update().where(sessions.c.id == sid)
                                       .values(status="flagged"))
                async with engine.begin() as conn:
                    await funds.place_hold(conn, sid, "EVE", 3_000)
                assert await settle.settle_session(engine, sid) is None  # never by itself
                ids.append(sid)
            async with engine.connect() as conn:
                assert await ledger.balance(conn, "wallet:EVE") == 10_000  # holds released
            return ids[0], ids[1]
        finally:
            await engine.dispose()

    billed, voided = asyncio.run(setup())

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return forked_cli.run([*args, "--db", db])

    missing = cli("sessions", "review", str(billed), "--note", "checked")
    assert missing.returncode == 2 and "--bill or --void" in missing.stderr
    done = cli("sessions", "review", str(billed), "--bill", "--note", "the meter was right",
               "--by", "ops-li")
    assert done.returncode == 0 and "billed (30.90 CNY), reviewed by ops-li" in done.stdout
    assert cli("sessions", "review", str(voided), "--void", "--note", "a bad meter").returncode == 0
    again = cli("sessions", "review", str(voided), "--bill", "--note", "x")
    assert again.returncode == 2 and "only a flagged or quarantined" in again.stderr

    async def check() -> None:
        engine = await open_store(db)
        try:
            async with engine.connect() as conn:
                assert await ledger.balance(conn, "wallet:EVE") == 10_000 - 3090
                rows = {r.id: r for r in (await conn.execute(select(sessions))).all()}
                events = [json.loads(r.payload) for r in (await conn.execute(
                    select(station_events.c.payload).where(station_events.c.kind == "review")))]
            assert rows[billed].status == "completed" and "billed by ops-li" in rows[billed].flag_reason
            assert rows[voided].status == "void" and "a bad meter" in rows[voided].flag_reason
            assert [(e["session"], e["decision"]) for e in events] == [(billed, "billed"),
                                                                     (voided, "voided")]
        finally:
            await engine.dispose()

    asyncio.run(check())


def test_corrections_and_withdrawals_never_edit_the_ledger(tmp_path):
    """A wrong top-up is corrected by new transfers (reason and who on each); a member takes
    its money back through the payout file; nothing is edited, the chain stays intact."""
    import csv
    import subprocess

    db = str(tmp_path / "c.db")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return forked_cli.run([*args, "--db", db], cwd=str(tmp_path))

    assert cli("db", "init").returncode == 0
    assert cli("member", "add", "Fay", "--tag", "FAY").returncode == 0
    assert cli("wallet", "topup", "FAY", "200", "--ref", "pay-1").returncode == 0
    fixed = cli("ledger", "correct", "topup:pay-1", "--amount", "150", "--reason",
                "the bank paid 150", "--ref", "fix-1", "--by", "ops-li")
    assert fixed.returncode == 0 and "2 transfer(s) posted" in fixed.stdout
    assert "already applied" in cli("ledger", "correct", "topup:pay-1", "--amount", "150",
                                    "--reason", "again", "--ref", "fix-1").stdout
    statement = json.loads(cli("ledger", "statement", "wallet:FAY", "--json").stdout)
    assert [line["change"] for line in statement] == [20000, -20000, 15000]
    shown = cli("wallet", "show", "FAY", "--json")
    assert json.loads(shown.stdout)["wallet_fen"] == 15000
    too_much = cli("wallet", "withdraw", "FAY", "151", "--ref", "w-0")
    assert too_much.returncode == 2 and "at most that" in too_much.stderr
    out = cli("wallet", "withdraw", "FAY", "--all", "--ref", "w-1")
    assert out.returncode == 0 and "150.00 CNY to be paid back" in out.stdout
    assert cli("payout", "payee", "refund:FAY", "--name", "Fay Wu", "--method", "alipay",
               "--number", "13800000001").returncode == 0
    ran = cli("payout", "run", "--file", "pay.csv", "--date", "2026-12-01")
    assert ran.returncode == 0, ran.stderr
    with open(tmp_path / "pay.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["ledger_account"], r["amount"]) for r in rows] == [("refund:FAY", "150.00")]
    undo = cli("ledger", "correct", "topup:pay-1", "--reason", "all of it", "--ref", "fix-2")
    assert undo.returncode == 2 and "wallet:FAY would go to -200.00 CNY" in undo.stderr
    assert cli("ledger", "verify").returncode == 0


async def test_a_platform_that_guarantees_its_hosts_pays_them_at_once(db_url):
    engine = await open_store(db_url)
    try:
        await registry.add_station(engine, registry.NewStation("K1", owner="kai", max_power_kw=7))
        await registry.add_member(engine, "Gus", "GUS", None)
        await loyalty.set_rule(engine, "funds.guarantee_payees", "true")
        done = await settle.settle_session(engine, await insert_session(
            engine, "K1", "GUS", 4000, utcnow() - timedelta(hours=2)))
        assert done.owed_fen == done.priced.payable_fen > 0
        async with engine.connect() as conn:
            assert await ledger.balance(conn, "host:kai") == dict(done.split)["host:kai"]
            assert await ledger.balance(conn, "owed:host:kai") == 0
            assert await ledger.balance(conn, "receivable:GUS") == -done.owed_fen
        memo = [line["memo"] for line in await ledger.statement(engine, "receivable:GUS")]
        assert memo == ["guaranteed by the platform: its risk"]
    finally:
        await engine.dispose()


async def test_a_brand_pays_its_members_quota_and_gets_a_monthly_statement(db_url):
    from cocharge.settlement import grants, memberships, statements

    engine = await open_store(db_url)
    try:
        await registry.add_station(engine, registry.NewStation("B1", owner="bea", max_power_kw=11))
        await settle.set_terms(engine, "B1", {"onboarded_at": utcnow() - timedelta(days=90)})
        for tag in ("OEM", "PAYS"):
            await registry.add_member(engine, tag, tag, None)
        await funds.top_up(engine, "PAYS", 5000, "t-pays")
        await grants.grant(engine, "OEM", brand="BYD", vin="LSVX1234567890123",
                           now=utcnow() - timedelta(hours=4))
        start = utcnow() - timedelta(hours=3)
        free = await settle.settle_session(engine, await insert_session(
            engine, "B1", "OEM", 10_000, start))
        paid = await settle.settle_session(engine, await insert_session(
            engine, "B1", "PAYS", 10_000, start + timedelta(minutes=70)))
        assert free.priced.quota_used_wh == 10_000 and free.priced.payable_fen == 0
        assert dict(free.split) == dict(paid.split)  # the host earns the same either way
        async with engine.connect() as conn:
            assert await ledger.balance(conn, "promotions:brand:BYD") == -1500
            assert await ledger.balance(conn, funds.SPONSOR) == 0  # not the platform's cost
        bill = await statements.brand_statement(engine, "byd", memberships.month_of(utcnow()))
        assert bill["quota_kwh"] == 10.0 and bill["total_fen"] == 1500
        assert [(x["member"], x["session"]) for x in bill["sessions"]] == [("OEM", free.session_id)]
    finally:
        await engine.dispose()


def test_a_dispute_is_resolved_with_a_correction_or_rejected(tmp_path):
    import subprocess

    db = str(tmp_path / "d.db")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return forked_cli.run([*args, "--db", db])

    assert cli("db", "init").returncode == 0
    assert cli("member", "add", "Hu", "--tag", "HU").returncode == 0
    assert cli("wallet", "topup", "HU", "100", "--ref", "pay-9").returncode == 0
    nothing = cli("dispute", "open", "--by", "HU", "--transfer", "topup:nope", "--text", "x")
    assert nothing.returncode == 2 and "no transfer" in nothing.stderr
    opened = cli("dispute", "open", "--by", "HU", "--transfer", "topup:pay-9",
                 "--text", "I paid 120, not 100")
    assert opened.returncode == 0 and "dispute 1 opened" in opened.stdout
    assert cli("dispute", "open", "--by", "HU", "--transfer", "topup:pay-9",
               "--text", "twice").returncode == 0
    fixed = cli("dispute", "resolve", "1", "--correct", "topup:pay-9", "--amount", "120",
                "--note", "the bank statement shows 120", "--by", "ops-li")
    assert fixed.returncode == 0 and "resolved by ops-li, correction dispute-1" in fixed.stdout
    rejected = cli("dispute", "resolve", "2", "--reject", "--note", "a duplicate")
    assert rejected.returncode == 0 and "rejected" in rejected.stdout
    again = cli("dispute", "resolve", "1", "--reject", "--note", "x")
    assert again.returncode == 2 and "resolved already" in again.stderr
    shown = json.loads(cli("dispute", "list", "--json").stdout)
    assert [(d["id"], d["status"], d["correction"]) for d in shown] == [
        (1, "resolved", "dispute-1"), (2, "rejected", None)]
    assert json.loads(cli("wallet", "show", "HU", "--json").stdout)["wallet_fen"] == 12000
    assert cli("dispute", "list", "--open", "--json").stdout.strip() == "[]"
