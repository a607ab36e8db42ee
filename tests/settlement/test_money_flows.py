"""Money flows (issue 18): the group's free member chosen when it forms, memberships with
expiry, coins and points paying part of a session, payouts, statements, open reward rules
and the liability report counting every promise. Real settlement on a real SQLite
database; each defect the issue found has its test here."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from cocharge.settlement import (
    grants,
    ledger,
    liabilities,
    loyalty,
    memberships,
    payouts,
    settle,
    statements,
)
from cocharge.stations import registry, sharing
from cocharge.store.db import utcnow
from cocharge.store.schema import settlements
from tests.settlement.test_settle import engine, insert_session, topup  # noqa: F401

VIN1, VIN2, VIN3 = "LSVX1234567890123", "LGXC7654321098765", "WVWZZZ1JZXW000001"


async def balance(engine, account: str, asset: str = "CNY") -> int:  # noqa: F811
    async with engine.connect() as conn:
        return await ledger.balance(conn, account, asset)


async def posts(engine, tag: str, n: int) -> None:  # noqa: F811
    for i in range(n):
        await loyalty.apply_event(engine, tag, "post_featured", f"{tag}-post-{i}")


async def test_five_member_group_frees_the_member_chosen_when_it_formed(engine):  # noqa: F811
    for tag in ("D", "E"):
        await registry.add_member(engine, tag, tag, None)
    await posts(engine, "C", 2)  # C: 120 credit when the group forms, the highest
    start = utcnow() + timedelta(hours=1)
    group = await sharing.create_group(engine, "P1", start, start + timedelta(hours=2), None, "A")
    for tag in ("B", "C", "D"):
        assert await sharing.join_group(engine, group, tag) == "forming"
    assert await sharing.join_group(engine, group, "E") == "formed"  # the default minimum, 5
    assert (await sharing.show_group(engine, group))["free_session"] == "C"
    # After forming, D overtakes C: the choice stands (before, it was decided at settlement).
    await posts(engine, "D", 5)
    done = {}
    for tag in ("E", "D", "C", "B", "A"):  # settled in any order: one free session, C's
        sid = await insert_session(engine, "P1", tag, 10_000, utcnow() - timedelta(hours=3),
                                   group_id=group)
        done[tag] = await settle.settle_session(engine, sid)
    free = [t for t, s in done.items() if s.priced.payable_fen == 0]
    assert free == ["C"]
    # 15.00 less the group's 15 %: 12.75 for every other member.
    assert {t: s.priced.payable_fen for t, s in done.items() if t != "C"} == {
        "E": 1275, "D": 1275, "B": 1275, "A": 1275}
    # Every member has the completion coins, the initiator too (+20 more as initiator).
    coins = {t: await balance(engine, f"coins:{t}", "COIN") for t in done}
    assert coins == {"A": 30, "B": 10, "C": 10 + 100, "D": 10 + 250, "E": 10}
    assert (await ledger.verify(engine)).ok


async def test_group_minimum_discount_and_credit_to_join_are_settings(engine):  # noqa: F811
    start = utcnow() + timedelta(hours=1)
    with pytest.raises(registry.RegistryError, match="at least 5 members"):
        await sharing.create_group(engine, "P1", start, start + timedelta(hours=1), 2, "A")
    await loyalty.set_rule(engine, "group.min_members", "2")
    await loyalty.set_rule(engine, "group.min_credit", "110")
    await loyalty.set_rule(engine, "discounts.group_pct", "20")
    await posts(engine, "A", 1)  # 110
    group = await sharing.create_group(engine, "P1", start, start + timedelta(hours=1), 2, "A")
    with pytest.raises(registry.RegistryError, match="credit score is 100; joining a group needs 110"):
        await sharing.join_group(engine, group, "B")
    await posts(engine, "B", 1)
    assert await sharing.join_group(engine, group, "B") == "formed"
    sid = await insert_session(engine, "P1", "B", 10_000, utcnow() - timedelta(hours=2),
                               group_id=group)
    done = await settle.settle_session(engine, sid)
    assert done.priced.lines == (("group charge -20%", 300),)
    # Green -10 % is a setting too.
    await loyalty.set_rule(engine, "discounts.green_pct", "25")
    await settle.set_terms(engine, "P1", {"green": True})
    await sharing.update_member(engine, "C", prefers_green=True)
    green = await settle.settle_session(engine, await insert_session(
        engine, "P1", "C", 10_000, utcnow() - timedelta(hours=2)))
    assert green.priced.lines == (("green energy -25%", 375),)


async def test_oem_membership_once_per_vin_quota_only_while_it_lasts(engine):  # noqa: F811
    await loyalty.set_rule(engine, "membership.brands.BYD", "level=gold,months=8")
    await loyalty.set_rule(engine, "membership.brands.NIO", "level=gold,months=12")
    now = utcnow()
    byd = await grants.grant(engine, "A", brand="byd", vin=VIN1, now=now)
    assert (byd.level, byd.coins, byd.credit, byd.quota_wh) == ("gold", 200, 10, 50_000)
    assert byd.ends_at == memberships.add_months(now, 8)
    again = await grants.grant(engine, "A", brand="BYD", vin=VIN1, now=now)
    assert not again.new and await balance(engine, "coins:A", "COIN") == 200
    with pytest.raises(memberships.MembershipError, match="a VIN activates once"):
        await grants.grant(engine, "B", brand="BYD", vin=VIN1)
    with pytest.raises(memberships.MembershipError, match="one per member and brand"):
        await grants.grant(engine, "A", brand="BYD", vin=VIN2)
    nio = await grants.grant(engine, "A", brand="NIO", vin=VIN2, now=now)
    # A second car: its own level and months, no second starter reward.
    assert nio.ends_at == memberships.add_months(now, 12) and (nio.coins, nio.credit) == (0, 0)
    assert await balance(engine, "coins:A", "COIN") == 200
    with pytest.raises(memberships.MembershipError, match="17 letters"):
        await grants.grant(engine, "B", brand="BYD", vin="VIN-123")
    # A level that has ended: no quota any more; the daily job ends it and takes back the rest.
    old = utcnow() - timedelta(days=200)
    await grants.grant(engine, "B", brand="OTHER", vin=VIN3, now=old)  # default: 6 months
    async with engine.connect() as conn:
        assert await memberships.quota_left(conn, "B", utcnow()) == 0
        assert await memberships.quota_left(conn, "A", utcnow()) == 100_000  # two levels
    first = await memberships.daily(engine)
    assert len(first.expired) == 1 and first.returned_wh == 50_000
    assert (await memberships.daily(engine)).expired == []  # idempotent
    [ended] = await memberships.of_member(engine, "B")
    assert ended["status"] == "expired"
    sid = await insert_session(engine, "P1", "B", 5_000, utcnow() - timedelta(hours=2))
    assert (await settle.settle_session(engine, sid)).priced.quota_used_wh == 0
    assert (await ledger.verify(engine)).ok


async def test_a_purchased_level_and_free_charging_days(engine):  # noqa: F811
    with pytest.raises(memberships.MembershipError, match="--ref"):
        await grants.grant(engine, "C", level="gold", months=1)
    with pytest.raises(memberships.MembershipError, match="no level"):
        await grants.grant(engine, "C", level="platinum", months=1, ref="pay-1")
    bought = await grants.grant(engine, "C", level="gold", months=1, ref="pay-1")
    assert bought.quota_wh == 50_000 and bought.coins == 0  # a purchase has no starter reward
    # A badge rule granting two free charging days after 3 shared green bills.
    await loyalty.set_rule(engine, "events.share_green_bill", "coins=20,limit=2,period=month")
    await loyalty.set_rule(engine, "badges.green_sharer",
                           "name=Green Sharer,event=share_green_bill,count=3,free_days=2,coins=5")
    done = [await loyalty.apply_event(engine, "B", "share_green_bill", f"bill-{i}")
            for i in range(3)]
    assert [d.coins for d in done] == [20, 20, 0] and done[2].limited  # the month's limit: 2
    assert done[2].badges == ("Green Sharer",)
    assert await balance(engine, "coins:B", "COIN") == 45
    before = await settle.settle_session(engine, await insert_session(
        engine, "P1", "B", 10_000, utcnow() - timedelta(hours=2)))
    assert before.priced.payable_fen == 1500  # started before the free days began
    sid = await insert_session(engine, "P1", "B", 10_000, utcnow(), minutes=1)
    free = await settle.settle_session(engine, sid)
    assert free.priced.payable_fen == 0 and free.priced.lines[0][0] == "free charging day"


async def test_coins_and_points_pay_part_of_a_session_the_host_gets_the_same(engine):  # noqa: F811
    await posts(engine, "A", 4)  # 200 coins
    await topup(engine, "A", 10_000)
    await topup(engine, "B", 10_000)
    await sharing.update_member(engine, "A", pay_with="coins")
    start = utcnow() - timedelta(hours=2)
    a = await settle.settle_session(engine, await insert_session(engine, "P1", "A", 10_000, start))
    b = await settle.settle_session(engine, await insert_session(engine, "P1", "B", 10_000, start))
    # 15.00; 200 coins at 0.01 CNY pay 2.00 (at most 50 %), the wallet 13.00.
    assert a.priced.payable_fen == b.priced.payable_fen == 1500 and a.paid_fen == 1500
    assert await balance(engine, "wallet:A") == 10_000 - 1300
    assert await balance(engine, "coins:A", "COIN") == 0
    assert a.split == b.split  # the platform funds the coins: the host's share is the same
    async with engine.connect() as conn:
        row = (await conn.execute(select(settlements.c.redeemed).where(
            settlements.c.session_id == a.session_id))).scalar_one()
    assert json.loads(row) == [["COIN", 200, 200]]
    # The cap: with 5,000 coins, at most half of the session.
    await posts(engine, "C", 100)
    await sharing.update_member(engine, "C", pay_with="coins,points")
    c = await settle.settle_session(engine, await insert_session(engine, "P1", "C", 10_000, start))
    assert await balance(engine, "coins:C", "COIN") == 5000 - 750 and c.owed_fen == 750
    with pytest.raises(registry.RegistryError, match="pay with"):
        await sharing.update_member(engine, "C", pay_with="gold")
    assert (await ledger.verify(engine)).ok


async def test_payouts_statement_and_liabilities(engine):  # noqa: F811
    await topup(engine, "A", 50_000)
    start = utcnow() - timedelta(hours=3)
    for i in range(3):
        await settle.settle_session(engine, await insert_session(
            engine, "P1", "A", 20_000 + i * 1000, start + timedelta(minutes=70 * i), minutes=60))
    earned = await balance(engine, "host:host1")
    assert earned == 3 * 3000 * 9 // 10 + (150 + 300) * 9 // 10  # 30+31.5+33 CNY less 10 %
    day = date.today()
    with pytest.raises(payouts.PayoutError, match="host:NAME"):
        await payouts.set_payee(engine, "alice", "Alice", "bank", "6222020200112233", "ICBC")
    # No payment details: booked nothing, said why.
    first = await payouts.run(engine, day - timedelta(days=1), minimum_fen=1000)
    assert first.lines == [] and first.no_payee == [("host:host1", earned)]
    await payouts.set_payee(engine, "host:host1", "Host One", "bank", "6222 0202 0011 2233", "ICBC")
    run = await payouts.run(engine, day, minimum_fen=1000)
    [line] = run.lines
    assert (line["account"], line["amount_fen"], line["number"]) == ("host:host1", earned,
                                                                      "6222020200112233")
    assert (await payouts.run(engine, day)).new is False  # once per date
    assert await balance(engine, "host:host1") == 0
    assert await balance(engine, "payable:host:host1") == earned
    report = await liabilities.liability_report(engine, Decimal("1.50"))
    owed = {li.name: li.fen for li in report.liabilities}
    assert owed["payouts booked, not paid"] == earned and owed["unpaid payouts"] == 0
    text = payouts.payment_file(run.lines)
    assert payouts.refs_in_file(text) == [(line["ref"], earned)]
    assert text.splitlines()[0].startswith("reference,date,payee_name,method,bank,account_number")
    paid = await payouts.confirm(engine, line["ref"], earned)
    assert paid.new and not (await payouts.confirm(engine, line["ref"])).new
    with pytest.raises(payouts.PayoutError, match="cannot fail"):
        await payouts.fail(engine, line["ref"])
    assert await balance(engine, "payable:host:host1") == 0
    assert await balance(engine, "external:payouts") == earned
    report = await liabilities.liability_report(engine, Decimal("1.50"))
    owed = {li.name: li.fen for li in report.liabilities}
    assert owed["payouts booked, not paid"] == 0
    # The month's statement adds up to the ledger.
    month = memberships.month_of(utcnow())
    st = await statements.statement(engine, "host:host1", month)
    assert st["totals"]["sessions"] == 3 and st["totals"]["net_fen"] == earned
    assert st["totals"]["gross_fen"] == 3000 + 3150 + 3300
    assert st["totals"]["commission_fen"] + st["totals"]["net_fen"] == st["totals"]["paid_fen"]
    assert [p["fen"] for p in st["payouts"]] == [earned] and st["closing_fen"] == 0
    assert st["tax"]["estimate_fen"] == 0  # under 800 CNY: all deducted
    csv_text = statements.to_csv(st)
    assert "total,,3 sessions,63.000,94.50" in csv_text and "tax estimate" in csv_text
    from cocharge.web.statement import to_html

    html = to_html(st, "en")
    assert "<svg" in html and "Tax estimate" in html and "Host One" not in html
    assert 'lang="en"' in html and "Net income from 3 sessions (63.000 kWh)" in html
    chinese = to_html(st, "zh")  # a host here reads it in Chinese: the same numbers
    assert 'lang="zh-CN"' in chinese and "税款估算" in chinese and "Tax estimate" not in chinese
    assert "3 次充电的净收入（63.000 千瓦时）" in chinese and "94.50" in chinese


async def test_a_failed_payout_returns_the_money(engine):  # noqa: F811
    await topup(engine, "A", 50_000)
    await settle.settle_session(engine, await insert_session(
        engine, "P1", "A", 30_000, utcnow() - timedelta(hours=2)))
    await payouts.set_payee(engine, "host:host1", "Host One", "alipay", "host1@example.com")
    run = await payouts.run(engine, date.today(), minimum_fen=100)
    ref = run.lines[0]["ref"]
    failed = await payouts.fail(engine, ref, "account closed")
    assert failed.new and await balance(engine, "host:host1") == run.total_fen
    assert not (await payouts.fail(engine, ref)).new
    with pytest.raises(payouts.PayoutError, match="failed already"):
        await payouts.confirm(engine, ref)
    st = await statements.statement(engine, "host:host1", memberships.month_of(utcnow()))
    assert st["closing_fen"] == run.total_fen and st["payouts_returned"][0]["fen"] == run.total_fen


async def test_liabilities_count_this_months_quota_and_coins_at_their_value(engine):  # noqa: F811
    await sharing.update_member(engine, "A", quota_wh=50_000)
    await posts(engine, "B", 2)  # 100 coins
    report = await liabilities.liability_report(engine, Decimal("1.50"))
    owed = {li.name: li.fen for li in report.liabilities}
    # 50 kWh owed from the first of the month (no session yet), at 1.50: 75 CNY.
    assert owed["free-energy quotas"] == 7500
    assert owed["coins"] == 100  # 100 coins at 0.01 CNY
    # The daily job grants it on the ledger: the same amount is owed, not twice.
    assert (await memberships.daily(engine)).granted == ["A"]
    report = await liabilities.liability_report(engine, Decimal("1.50"))
    assert {li.name: li.fen for li in report.liabilities}["free-energy quotas"] == 7500
