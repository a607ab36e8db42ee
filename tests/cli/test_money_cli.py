"""Money flows from the `cocharge` command (issue 18): a month of a neighbourhood settled,
paid out with a payment file and confirmed, a statement per host and property, the ledger
verified and the liability report checked against sums made independently; memberships;
one phone, one account; refusals that write nothing."""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import timedelta
from decimal import Decimal

from cocharge.settlement import grants, ledger, loyalty, memberships, settle
from cocharge.settlement.ledger import Transfer
from cocharge.stations import registry, sharing
from cocharge.store.db import open_existing, utcnow
from tests.cli.test_cli import cocharge
from tests.cli.test_db_cli import one_line_error
from tests.settlement.test_settle import insert_session

HOSTS = {"WB-ANNA": "anna", "WB-BEN": "ben"}
PROPERTY_STATIONS = ("GF-1", "GF-2")
MEMBERS = [f"M{i}" for i in range(1, 9)]


async def neighbourhood(db: str) -> dict[str, int]:
    """Two hosts' wallboxes and a property's two chargers; eight members (two with an OEM
    level, two paying with coins, one group of five); a month of sessions, settled. Returns
    what was put in, counted here, not read back from the ledger."""
    engine = await open_existing(db)
    facts = {"topups": 0, "quota_used": 0, "allowance": 0}
    try:
        for sid, owner in HOSTS.items():
            await registry.add_station(engine, registry.NewStation(sid, owner=owner, max_power_kw=7))
        for sid in PROPERTY_STATIONS:
            await registry.add_station(engine, registry.NewStation(sid, owner="greenfield",
                                                                   max_power_kw=11))
            await settle.set_terms(engine, sid, {"model": "property", "property": "greenfield",
                                                 "operator": "volt"})
        await settle.set_terms(engine, "WB-BEN", {"green": True,
                                                  "onboarded_at": utcnow() - timedelta(days=90)})
        for i, tag in enumerate(MEMBERS):
            await registry.add_member(engine, f"Member {i}", tag, f"1380013800{i}")
            fen = 30_000 + 5_000 * i
            await ledger.post_batch(engine, [Transfer(f"topup:{tag}", "external:topup",
                                                      f"wallet:{tag}", fen, kind="topup")], "t")
            facts["topups"] += fen
        await grants.grant(engine, "M1", brand="BYD", vin="LSVX1234567890123")
        await grants.grant(engine, "M2", brand="NIO", vin="LGXC7654321098765")
        facts["allowance"] = 2 * 50_000
        for tag in ("M3", "M4"):
            for n in range(3):
                await loyalty.apply_event(engine, tag, "post_featured", f"{tag}-{n}")
            await sharing.update_member(engine, tag, pay_with="coins")
        await sharing.update_member(engine, "M5", prefers_green=True)
        slot = utcnow() + timedelta(hours=1)
        group = await sharing.create_group(engine, "GF-1", slot, slot + timedelta(hours=3), None, "M6")
        for tag in ("M7", "M8", "M1", "M2"):
            await sharing.join_group(engine, group, tag)
        stations = [*HOSTS, *PROPERTY_STATIONS]
        start = utcnow() - timedelta(hours=40)
        results = []
        for n in range(40):  # a month's sessions in this month's last hours (one month)
            tag = MEMBERS[n % len(MEMBERS)] if n < 35 else ("M6", "M7", "M8", "M1", "M2")[n - 35]
            extra = {"group_id": group} if n >= 35 else {}
            station = "GF-1" if extra else stations[n % len(stations)]
            sid = await insert_session(engine, station, tag, 4_000 + (n * 733) % 9_000,
                                       start + timedelta(minutes=55 * n), minutes=50, **extra)
            results.append(await settle.settle_session(engine, sid))
        facts["quota_used"] = sum(r.priced.quota_used_wh for r in results)
        facts["payable"] = sum(r.priced.payable_fen for r in results)
        facts["sponsored"] = sum(sum(fen for _, fen in r.priced.lines) for r in results)
        facts["paid"] = sum(r.paid_fen for r in results)
        facts["owed"] = sum(r.owed_fen for r in results)
        facts["free"] = sum(1 for r in results if r.priced.lines and "free once" in r.priced.lines[0][0])
        shares: dict[str, int] = {}
        for r in results:
            for account, fen in r.split:
                shares[account] = shares.get(account, 0) + fen
        facts.update({f"share:{a}": v for a, v in shares.items()})
    finally:
        await engine.dispose()
    return facts


def test_a_month_paid_out_stated_and_reconciled(tmp_path):
    db = str(tmp_path / "n.db")
    assert cocharge("db", "init", db=db, init=False).returncode == 0
    facts = asyncio.run(neighbourhood(db))
    assert facts["free"] == 1  # the group's one free session
    accounts = ["host:anna", "host:ben", "property:greenfield", "operator:volt"]
    for n, account in enumerate(accounts):
        made = cocharge("payout", "payee", account, "--name", f"Payee {n}", "--method", "bank",
                        "--number", f"62220202001122{n:02d}", "--bank", "ICBC", db=db)
        assert made.returncode == 0, made.stderr
    before = {b["account"]: b["balance"] for b in json.loads(
        cocharge("ledger", "balances", "--json", db=db).stdout) if b["asset"] == "CNY"}
    file = tmp_path / "pay.csv"
    run = cocharge("payout", "run", "--minimum", "1", "--file", str(file), "--json", db=db)
    assert run.returncode == 0, run.stderr
    ran = json.loads(run.stdout)
    paid_out = {x["account"]: x["amount_fen"] for x in ran["lines"]}
    assert paid_out == {a: before[a] for a in accounts if before.get(a, 0) >= 100}
    assert set(paid_out) == set(accounts)
    with file.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["ledger_account"] for r in rows] == sorted(accounts)
    assert all(r["currency"] == "CNY" and r["account_number"].startswith("6222") for r in rows)
    assert sum(Decimal(r["amount"]) for r in rows) * 100 == sum(paid_out.values())
    # Liabilities before the bank paid: booked, not paid.
    mid = json.loads(cocharge("ledger", "liabilities", "--json", db=db).stdout)
    owed = {li["name"]: li["fen"] for li in mid["liabilities"]}
    assert owed["payouts booked, not paid"] == sum(paid_out.values()) and owed["unpaid payouts"] == 0
    confirmed = cocharge("payout", "confirm", str(file), "--note", "ICBC batch 77", db=db)
    assert confirmed.returncode == 0 and f"{len(rows)} payouts confirmed" in confirmed.stdout
    again = cocharge("payout", "confirm", str(file), db=db)
    assert again.returncode == 0 and "0 payouts confirmed" in again.stdout
    # A statement for each host and the property; each adds up to its share of the sessions.
    month = memberships.month_of(utcnow())
    for account in accounts[:3]:
        html, csv_file = tmp_path / f"{account}.html", tmp_path / f"{account}.csv"
        shown = cocharge("statement", account, "--month", month, "--html", str(html),
                         "--csv", str(csv_file), "--json", db=db)
        assert shown.returncode == 0, shown.stderr
        st = json.loads(shown.stdout)
        assert st["totals"]["net_fen"] == facts[f"share:{account}"]
        assert st["opening_fen"] == 0 and st["closing_fen"] == 0  # all of it paid out
        assert [p["fen"] for p in st["payouts"]] == [paid_out[account]]
        assert "<svg" in html.read_text() and "closing balance" in csv_file.read_text()
    text = cocharge("statement", "host:ben", "--month", month, db=db).stdout
    assert "net income" in text and "tax estimate" in text
    # The ledger verifies; the liability report matches sums made without it.
    assert cocharge("ledger", "verify", db=db).returncode == 0
    report = json.loads(cocharge("ledger", "liabilities", "--json", db=db).stdout)
    owed = {li["name"]: li["fen"] for li in report["liabilities"]}
    paid_from_wallets = facts["paid"] - 0  # coins paid part: counted below
    coins_paid = sum(s[2] for s in asyncio.run(_redeemed(db)))
    assert owed["member wallets"] == facts["topups"] - (paid_from_wallets - coins_paid)
    assert owed["payouts booked, not paid"] == 0 and owed["unpaid payouts"] == 0
    quota_kwh = Decimal(facts["allowance"] - facts["quota_used"]) / 1000
    assert owed["free-energy quotas"] == int(quota_kwh * Decimal("1.50") * 100)
    coins = asyncio.run(_coins(db))
    assert owed["coins"] == coins  # at 0.01 CNY each: 1 fen
    assert report["receivable_fen"] == facts["owed"]
    # Cash: top-ups in, payouts out.
    assert report["cash_fen"] == facts["topups"] - sum(paid_out.values())
    # Platform's commission + every share = the list price: what drivers paid and what the
    # platform paid for the promotions (quotas, the group's discount and free session, green).
    assert facts["sponsored"] > 0
    assert sum(v for k, v in facts.items() if k.startswith("share:")) == (
        facts["payable"] + facts["sponsored"])


async def _redeemed(db: str) -> list[list[int]]:
    from sqlalchemy import select

    from cocharge.store.schema import settlements

    engine = await open_existing(db)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(settlements.c.redeemed))).scalars().all()
    finally:
        await engine.dispose()
    return [line for r in rows if r for line in json.loads(r)]


async def _coins(db: str) -> int:
    """Coins given by events minus coins spent, from the events and settlements tables."""
    from sqlalchemy import func, select

    from cocharge.store.schema import reward_events

    engine = await open_existing(db)
    try:
        async with engine.connect() as conn:
            given = int(await conn.scalar(select(func.sum(reward_events.c.coins))) or 0)
    finally:
        await engine.dispose()
    return given - sum(units for asset, units, _ in await _redeemed(db) if asset == "COIN")


def test_memberships_from_the_command_line(tmp_path):
    db = str(tmp_path / "m.db")
    assert cocharge("member", "add", "Gina", "--tag", "G", db=db).returncode == 0
    assert cocharge("rewards", "rules", "set", "membership.brands.BYD", "level=gold,months=8",
                    db=db).returncode == 0
    made = cocharge("membership", "grant", "G", "--brand", "BYD", "--vin", "LSVX1234567890123", db=db)
    assert made.returncode == 0 and "gold until" in made.stdout and "+200 coins" in made.stdout
    twice = cocharge("membership", "grant", "G", "--brand", "BYD", "--vin", "LSVX1234567890123", db=db)
    assert twice.returncode == 0 and "nothing changed" in twice.stdout
    [level] = json.loads(cocharge("membership", "show", "G", "--json", db=db).stdout)
    assert (level["brand"], level["status"], level["quota_kwh_per_month"]) == ("BYD", "active", 50)
    listed = json.loads(cocharge("membership", "list", "--active", "--json", db=db).stdout)
    assert [m["tag"] for m in listed] == ["G"]
    daily = cocharge("membership", "expire", db=db)
    assert daily.returncode == 0 and "0 memberships ended" in daily.stdout
    shown = cocharge("rewards", "rules", "show", db=db).stdout
    for key in ("discounts.group_pct: 15", "group.min_members: 5", "redeem.coin_value_cny: 0.01",
                "membership.brands.BYD: level=gold,months=8", "payout.minimum_cny: 100",
                "tax.rate_pct: 20", "group_lead=1,name=Navigator"):
        assert key in shown, key
    # An event type the operator added, with a limit, and a badge counting it.
    assert cocharge("rewards", "rules", "set", "events.share_green_bill",
                    "coins=20,limit=1,period=month", db=db).returncode == 0
    assert cocharge("rewards", "rules", "set", "badges.sharer",
                    "name=Sharer,event=share_green_bill,count=2", db=db).returncode == 0
    first = cocharge("rewards", "event", "G", "share_green_bill", "--ref", "b1", db=db)
    assert first.returncode == 0 and "+20 coins" in first.stdout, first.stderr
    second = cocharge("rewards", "event", "G", "share_green_bill", "--ref", "b2", db=db)
    assert "no reward (over the event's limit" in second.stdout and "badge: Sharer" in second.stdout
    for args, words in [
        (["membership", "grant", "G", "--brand", "BYD", "--vin", "XX"], "17 letters"),
        (["membership", "grant", "G", "--vin", "LSVX1234567890124"], "--brand and --vin"),
        (["membership", "grant", "G", "--level", "gold", "--months", "1"], "--ref"),
        (["membership", "grant", "NOBODY", "--level", "gold", "--months", "1", "--ref", "p"],
         "no member"),
        (["payout", "payee", "anna", "--name", "A", "--method", "bank", "--number", "1234"],
         "host:NAME"),
        (["payout", "confirm", "nothing.csv"], "neither a payment file"),
        (["payout", "fail", "PO-20260101-001"], "no payout"),
        (["statement", "host:anna", "--month", "2026-13"], "YYYY-MM"),
        (["member", "update", "G", "--pay-with", "gold"], "pay with 'gold'"),
    ]:
        one_line_error(cocharge(*args, db=db), *words)
    assert len(json.loads(cocharge("membership", "list", "--json", db=db).stdout)) == 1


def test_one_phone_one_account(tmp_path):
    db = str(tmp_path / "p.db")
    assert cocharge("member", "add", "Li", "--tag", "L1", "--phone", "138 0013 8000", db=db).returncode == 0
    one_line_error(cocharge("member", "add", "Li again", "--tag", "L2", "--phone", "+86 13800138000",
                            db=db), "13800138000", "L1", "one phone number, one account")
    one_line_error(cocharge("member", "add", "X", "--tag", "L3", "--phone", "call me", db=db),
                   "a phone number")
    members_csv = tmp_path / "m.csv"
    members_csv.write_text("name,tag,phone\nA,A1,13900000001\nB,B1,139-0000-0001\n")
    one_line_error(cocharge("member", "import", str(members_csv), db=db), "one phone number")
    members_csv.write_text("name,tag,phone\nA,A1,13900000001\nB,B1,13800138000\n")
    one_line_error(cocharge("member", "import", str(members_csv), db=db), "13800138000 (L1)")
    assert [m["tag"] for m in json.loads(cocharge("member", "list", "--json", db=db).stdout)] == ["L1"]


def test_the_operator_backs_its_promises_with_capital(tmp_path):
    """`ledger fund`: the operator's own money into the platform, which the liability report
    counts as cash: points granted with a top-up are covered once it is in. Booked once per
    reference; a bad amount or a reused reference is one line, exit 2, nothing booked."""
    db = str(tmp_path / "c.db")
    assert cocharge("member", "add", "Hua", "--tag", "HUA", db=db).returncode == 0
    bought = cocharge("points", "purchase", "HUA", "3000", "--ref", "order-1", db=db)
    assert bought.returncode == 0, bought.stderr  # paid in, and points promised on top

    def report() -> dict:
        shown = cocharge("ledger", "liabilities", "--json", db=db)
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)

    before = report()
    short = before["owed_fen"] - before["cash_fen"] - before["pool_reserve_fen"]
    assert short > 0 and before["coverage"]["cash"] < "1"  # the points are promised on top
    assert cocharge("ledger", "liabilities", "--fail-under", "1", db=db).returncode == 1
    for amount, says in (("-5", "-5"), ("abc", "AMOUNT"), ("0", "AMOUNT")):
        one_line_error(cocharge("ledger", "fund", amount, "--ref", "cap-x", db=db), says)
    assert report()["cash_fen"] == before["cash_fen"]  # nothing booked
    put = cocharge("ledger", "fund", "100", "--ref", "cap-1", db=db)
    assert put.returncode == 0 and "100.00 CNY of capital put in" in put.stdout
    again = cocharge("ledger", "fund", "100", "--ref", "cap-1", db=db)
    assert again.returncode == 0 and "already booked" in again.stdout
    one_line_error(cocharge("ledger", "fund", "200", "--ref", "cap-1", db=db), "cap-1")
    after = report()
    assert after["cash_fen"] == before["cash_fen"] + 10_000
    assert after["coverage"]["cash"] >= "1.00"
    assert cocharge("ledger", "liabilities", "--fail-under", "1", db=db).returncode == 0
    assert cocharge("ledger", "verify", db=db).returncode == 0
    # Who put it in is written by the ledger with the transfer it posted (one transaction);
    # the repeat that booked nothing is recorded as such, after it.
    trail = json.loads(cocharge("audit", "--account", "platform", "--json", db=db).stdout)
    assert [(e["action"], e["details"].get("transfers"), e["details"].get("posted"))
            for e in reversed(trail)] == [("capital", ["capital:cap-1"], None),
                                          ("capital", None, False)]
    assert all(e["actor"].startswith("cli ") and e["details"]["fen"] == 10_000 for e in trail)
