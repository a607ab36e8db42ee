"""`cocharge demo`: a gateway on a temporary SQLite, simulated wallboxes and a report.

The story: a neighbourhood of shared wallboxes (OCPP 1.6J and 2.0.1). One is shared
in the evening only and is locked now; one is booked; one runs on a prepaid budget
and stops itself; a car overstays; the rest charge, one of them started and stopped
from the operator channel; a blocked tag is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import click
from sqlalchemy import select

from cocharge.config import GatewaySettings
from cocharge.gateway.operator_client import send_request
from cocharge.hours import parse_window
from cocharge.node import running_node
from cocharge.settlement import funds, ledger, loyalty, memberships, payouts, settle, statements
from cocharge.settlement.liabilities import liability_report
from cocharge.settlement.money import fmt
from cocharge.settlement.overstay import IdleFeeRule
from cocharge.settlement.points import GREEN_SCALE, POOL_SCALE, points_text
from cocharge.settlement.tariff import simple_tariff
from cocharge.simulators.hardware import EV
from cocharge.simulators.wallbox import SimConfig, SimSession, close_wallbox, open_wallbox
from cocharge.stations import registry, sharing
from cocharge.store.db import utcnow
from cocharge.store.schema import sessions, station_events
from cocharge.web.statement import to_html


def _payer(tag: str | None) -> str:
    """A tag for the report's columns: a card paid at the charger as its last four digits."""
    if tag and funds.is_card(tag):
        return f"card-{tag[-4:]}"
    return tag or ""

def _say(text: str) -> None:
    click.echo(text)


async def _wait_for(check: Any, seconds: float = 15.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)


async def _refusal(engine: Any, station_id: str) -> str:
    """The reason the gateway recorded for its last refusal at `station_id`."""
    for _ in range(40):
        async with engine.connect() as conn:
            payload = (await conn.execute(select(station_events.c.payload).where(
                station_events.c.station_id == station_id, station_events.c.kind == "refused")
                .order_by(station_events.c.id.desc()).limit(1))).scalar()
        if payload:
            return str(json.loads(payload)["reason"])
        await asyncio.sleep(0.05)
    return "refused by the charger"


async def run_demo(stations: int) -> None:
    started = time.monotonic()
    folder = tempfile.mkdtemp(prefix="cocharge-demo-")
    db = os.path.join(folder, "demo.db")
    # The demo's wallboxes run clocks 600 times faster than the wall clock: their
    # timestamps run hours ahead, which a gateway believes only when told to.
    settings = GatewaySettings(host="127.0.0.1", port=0, operator_port=0, upload_port=0, api_port=None,
                               control_interval_s=0.2, clock_future_s=7 * 86400)
    async with running_node(db, settings) as node:
        engine = node.engine
        url = f"ws://127.0.0.1:{node.gateway.port}/ocpp"
        _say(f"gateway on {url} (database {db})")
        tags = [f"MEMBER{n}" for n in range(1, stations + 1)]
        for n in range(1, stations + 1):
            await registry.add_station(engine, registry.NewStation(
                f"WB{n:02d}", owner=f"host{n}", connectors=1, max_power_kw=11))
            # A referral chain for the green points: MEMBER1 <- MEMBER2 <- MEMBER3.
            await registry.add_member(engine, f"Member {n}", tags[n - 1], None,
                                      referred_by=tags[n - 2] if n in (2, 3) else None)
        await registry.add_member(engine, "Host of WB01", "OWNER1", None)
        await registry.add_member(engine, "Blocked Bob", "BLOCKED1", None)
        await registry.block_member(engine, "BLOCKED1")
        # Money: tariffs, terms, wallets, a quota, a green choice.
        for n in range(1, stations + 1):
            # (a time-of-day price would make the report depend on when the demo runs)
            await settle.set_tariff(engine, f"WB{n:02d}", 0, simple_tariff(
                Decimal("1.50"), idle=IdleFeeRule()))
        await settle.set_terms(engine, "WB01", {"onboarded_at": utcnow() - timedelta(days=90)})
        await settle.set_terms(engine, "WB02", {"model": "property", "property": "sunrise-garden",
                                                "operator": "install-co"})
        await settle.set_terms(engine, "WB05", {"green": True,
                                                "onboarded_at": utcnow() - timedelta(days=90)})
        await sharing.update_member(engine, tags[4], prefers_green=True)
        await sharing.update_member(engine, tags[2], quota_wh=2000)  # OEM member: 2 kWh free left
        for n, tag in enumerate(tags, start=1):
            if n != 4:  # MEMBER4 has an empty wallet: what they owe is recorded
                await ledger.post_batch(engine, [ledger.Transfer(
                    f"demo-topup:{tag}", "external:topup", f"wallet:{tag}", 20000, kind="topup")],
                    f"demo-topup:{tag}")
        await ledger.post_batch(engine, [ledger.Transfer(
            "demo-topup:OWNER1", "external:topup", "wallet:OWNER1", 5000, kind="topup")],
            "demo-topup:OWNER1")

        # The rule table is the operator's: for the demo, Earth Guardian at 5 green kWh (not 100).
        await loyalty.set_rule(engine, "badges.earth_guardian.green_kwh", "5")
        _say("reward rules version 1: Earth Guardian badge at 5 green kWh (default 100)")
        # Rewards from outside the chargers: a post featured in the app.
        await loyalty.apply_event(engine, tags[0], "post_featured", "demo-post-1")
        # Green points: three referred purchases two days ago, released day by day.
        today = loyalty.local_day(utcnow())
        for tag, cny in ((tags[0], 3000), (tags[1], 9000), (tags[2], 3000)):
            await loyalty.purchase(engine, tag, cny * 100, today - timedelta(days=2), f"demo-{tag}")
        for back in (1, 0):
            await loyalty.release(engine, today - timedelta(days=back))
        # Pool-backed points: two 100 CNY sales, then a member sells half of their points.
        for n, tag in enumerate((tags[5 % stations], tags[6 % stations]), start=1):
            await loyalty.pool_sale(engine, tag, 10000, f"demo-sale-{n}")
        held = (await loyalty.member_rewards(engine, tags[5 % stations]))["pool_points"]
        await loyalty.pool_sell(engine, tags[5 % stations], held // 2, "demo-sell-1")

        # WB01 is shared in the evening only (a window that starts in two hours, Beijing time).
        hour = (utcnow() + timedelta(hours=8)).hour
        window = f"mon-sun {(hour + 2) % 24:02d}:00-{(hour + 4) % 24:02d}:00"
        await sharing.set_rules(engine, "WB01", 0, {"windows": (parse_window(window),),
                                                    "owner_tags": frozenset({"OWNER1"})})
        _say(f"WB01 shared {window} only; its owner's tag is OWNER1")
        # WB02 is booked by MEMBER2 for the next half hour.
        now = utcnow()
        booking_id = await sharing.add_booking(engine, "WB02", 1, tags[1], now,
                                               now + timedelta(minutes=30))
        _say(f"WB02 booked by {tags[1]} for the next 30 minutes (booking {booking_id})")

        boxes = []
        for n in range(1, stations + 1):
            # Odd ones 1.6J, even ones 2.0.1, the last one OCPP 2.1.
            protocol = "2.1" if n == stations else "1.6" if n % 2 else "2.0.1"
            boxes.append(await open_wallbox(SimConfig(
                url=url, station_id=f"WB{n:02d}", protocol=protocol, speed=600,
                meter_interval_s=0.1, bay_wait_s=3.0)))
        box = {b.id: b for b, _ in boxes}
        _say(f"{stations} wallboxes connected (OCPP 1.6J, 2.0.1 and, WB{stations:02d}, 2.1), "
             "all Accepted")

        # Share lock: the gateway locks WB01 (out of hours) and reserves WB02.
        await _wait_for(lambda: box["WB01"].hw[1].bay_locked and box["WB02"].hw[1].reservation)
        wb01_locked = box["WB01"].hw[1].bay_locked
        _say(f"\nshare lock: WB01 {'inoperative, bay locked' if wb01_locked else '?'};"
             f" WB02 {'reserved, bay locked' if box['WB02'].hw[1].reservation else '?'}")
        refused = await box["WB01"].charge(1, tags[0], energy_wh=2000)
        await refused.done.wait()
        _say(f"  {tags[0]} at WB01: refused ({await _refusal(engine, 'WB01')})")
        owner = await box["WB01"].charge(1, "OWNER1", energy_wh=2000)
        owner_text = "charging: the owner may always charge" if owner.authorized else "refused"
        _say(f"  OWNER1 at WB01: {owner_text}")
        intruder = await box["WB02"].charge(1, tags[2], energy_wh=2000)
        await intruder.done.wait()
        _say(f"  {tags[2]} at WB02: refused ({await _refusal(engine, 'WB02')})")
        booked = await box["WB02"].charge(1, tags[1], energy_wh=4000)
        _say(f"  {tags[1]} at WB02: {'booking honoured, bay opened' if booked.authorized else 'refused'}")

        # Auto-cutoff: a 5.00 CNY prepaid budget at 1.50 CNY/kWh buys 3.333 kWh.
        answer = await send_request(engine, {"command": "start", "station": "WB03", "args": {
            "tag": tags[2], "connector_id": 1, "budget_fen": 500}})
        _say(f"\nremote start on WB03 with a 5.00 CNY budget: {answer.get('status')}")

        runs: list[SimSession] = [owner, booked]
        # Money at the charger: an empty wallet may not start; a top-up is held at the start.
        broke = await box["WB04"].charge(1, tags[3], energy_wh=3000)
        await broke.done.wait()
        _say(f"\n{tags[3]} at WB04 with an empty wallet: refused ({await _refusal(engine, 'WB04')})")
        await funds.top_up(engine, tags[3], 1000, "demo-topup-member4-1")
        _say(f"{tags[3]} tops up 10.00 CNY: held at the start of the session, which may spend "
             "it (its budget cutoff)")
        # Overstay: the car on WB04 stays plugged in 40 minutes after charging.
        runs.append(await box["WB04"].charge(1, tags[3], energy_wh=3000, ev=EV(soc=0.5),
                                             stay_s=40 * 60))
        _say(f"{tags[3]} on WB04 charges 3 kWh and leaves the car plugged in for 40 min")
        for n in range(5, stations):
            runs.append(await box[f"WB{n:02d}"].charge(1, tags[n - 1], energy_wh=3000 + 500 * n,
                                                       ev=EV(soc=0.5)))
        if stations >= 5:
            last = box[f"WB{stations:02d}"]
            answer = await send_request(engine, {"command": "start", "station": last.id,
                                                 "args": {"tag": tags[-1], "connector_id": 1}})
            _say(f"remote start on {last.id}: {answer.get('status')}")
            await _wait_for(lambda: 1 in last.sessions and last.sessions[1].tx_id)
            listed = []
            for _ in range(600):  # the charger has its transaction; then the gateway stores it
                listed = await registry.list_sessions(engine, last.id, active=True)
                if listed:
                    break
                await asyncio.sleep(0.05)
            if not listed:
                raise RuntimeError(f"the remote start on {last.id} stored no session in 30 s")
            answer = await send_request(engine, {"command": "stop", "station": last.id,
                                                 "args": {"session_id": listed[-1]["id"]}})
            _say(f"remote stop of session {listed[-1]['id']}: {answer.get('status')}")
        for run in runs:
            await run.done.wait()
        await _wait_for(lambda: not any(b.sessions for b, _ in boxes), 30)
        card = None
        if stations >= 5:
            # OCPP 2.1 at WB06: a driver without an account pays at the card terminal.
            card = await box[f"WB{stations:02d}"].charge(1, "card:6222020000001234",
                                                         energy_wh=2000)
            await card.done.wait()
        blocked = await box["WB03"].charge(1, "BLOCKED1")
        await blocked.done.wait()
        _say(f"blocked tag on WB03: {'refused' if not blocked.authorized else 'charged'}")
        await asyncio.sleep(0.5)
        for b, reader in boxes:
            await close_wallbox(b, reader)
        await asyncio.sleep(0.2)
        await node.gateway.settler.drain()
        settled = await settle.settlement_report(engine)
        held = await ledger.statement(engine, f"held:{tags[3]}")
        # The overstay fee took more than the wallet had left: MEMBER4 owes the rest, and the
        # host's share of it waits until MEMBER4 pays. A second top-up pays the debt first.
        waiting_before = {b["account"]: b["balance"] for b in await ledger.balances(engine, "CNY")
                          }.get("owed:host:host4", 0)
        paid_debt = await funds.top_up(engine, tags[3], 2000, "demo-topup-member4-2")
        balances = await ledger.balances(engine, "CNY")
        verdict = await ledger.verify(engine)
        local = {}  # the 2.1 wallbox's own cost of each of its sessions
        if stations >= 5:
            last_box = box[f"WB{stations:02d}"]
            local = {tx: cost["total"]["incl_tax"] for tx, cost in last_box.local_costs.items()}
        async with engine.connect() as conn:
            report = (await conn.execute(select(sessions).order_by(sessions.c.id))).all()
        station_rows = await registry.list_stations(engine)
        booking_rows = await sharing.list_bookings(engine)
        rewarded = [await loyalty.member_rewards(engine, tag) for tag in tags]
        pool = (await loyalty.pool_summary(engine))["price"]
        # Pay the hosts and the property (balances of at least 1 CNY), confirm the bank paid,
        # and write the first host's statement for the month.
        earners = sorted(b["account"] for b in balances
                         if b["account"].startswith(("host:", "property:", "operator:"))
                         and b["balance"] >= 100)
        for n, account in enumerate(earners):
            await payouts.set_payee(engine, account, f"{account.split(':')[1].title()} Ltd",
                                    "bank", f"622202020011{n:04d}", "ICBC")
        payout_run = await payouts.run(engine, loyalty.local_day(utcnow()), minimum_fen=100)
        pay_file = os.path.join(folder, f"payouts-{payout_run.day.isoformat()}.csv")
        statements.write(pay_file, payouts.payment_file(payout_run.lines))
        await payouts.confirm_all(engine, [(x["ref"], x["amount_fen"]) for x in payout_run.lines],
                                  "demo bank batch")
        month = memberships.month_of(utcnow())
        statement = await statements.statement(engine, "host:host1", month)
        statement_html = os.path.join(folder, f"statement-host1-{month}.html")
        statements.write(statement_html, to_html(statement, "en"))
        price = settle.SettlementDefaults().price_per_kwh
        liabilities = await liability_report(engine, price)
        # The points granted with purchases are promises on top of the money paid in: the
        # operator backs them with money of its own (`cocharge ledger fund`), in whole
        # hundreds of yuan, before it promises more.
        short = liabilities.owed("cash") - liabilities.funds("cash")
        capital = -(-short // 10_000) * 10_000 if short > 0 else 0
        if capital:
            await funds.add_capital(engine, capital, "demo-capital")
            liabilities = await liability_report(engine, price)

    _say("\nSessions")
    _say(f"{'id':>3} {'station':8} {'tag':9} {'kWh':>7} {'status':10} {'stop':14} {'cutoff':8} "
         f"{'booking':8} idle fee")
    total = 0
    for s in report:
        total += s.energy_wh or 0
        fee = f"{s.idle_fee_fen / 100:.2f} CNY ({s.idle_minutes} min)" if s.idle_fee_fen else ""
        _say(f"{s.id:>3} {s.station_id:8} {_payer(s.id_tag):9} {(s.energy_wh or 0) / 1000:7.3f} "
             f"{s.status:10} {s.stop_reason or '':14} {s.cutoff_reason or '':8} "
             f"{s.booking_id or '':8} {fee}")
    _say(f"total {len(report)} sessions, {total / 1000:.3f} kWh")
    _say("\nBookings")
    for booking in booking_rows:
        _say(f"  {booking['id']}  {booking['station']} connector {booking['connector']}  "
             f"{booking['tag']}  {booking['status']}  session {booking['session'] or '-'}")
    _say("\nStations")
    for st in station_rows:
        statuses = ", ".join(f"connector {k} {v['status']}" for k, v in st["connector_status"].items())
        _say(f"  {st['id']}  OCPP {st['protocol']:5}  {st['admission']:8}  {statuses}")
    _say("\nSettlement (CNY; tariff 1.50/kWh, idle fee 0.50/min after 15 min, capped at 60)")
    _say(f"{'id':>3} {'payer':9} {'cost':>7} {'discounts':>9} {'payable':>8} {'paid':>7} "
         f"{'owed':>6} {'idle fee':>8}  split")
    for done in settled:
        off = sum(amount for _, amount in done["discounts"])
        why = "; ".join(name for name, _ in done["discounts"])
        parts = ", ".join(f"{party} {fmt(amount)}" for party, amount in done["split"] if amount)
        _say(f"{done['session']:>3} {_payer(done['payer']):9} {fmt(done['cost_fen']):>7} {fmt(off):>9} "
             f"{fmt(done['payable_fen']):>8} {fmt(done['paid_fen']):>7} {fmt(done['owed_fen']):>6} "
             f"{fmt(done['idle_fee_fen'] or 0):>8}  {parts}"
             + (f"  ({why})" if why else ""))
    by_session = {d["session"]: d for d in settled}
    for s in report:
        if s.tx_ref in local and s.id in by_session:
            who = "a card at the terminal" if (s.id_tag or "").startswith("#DirectPayment:") \
                else s.id_tag
            _say(f"OCPP 2.1 at {s.station_id}: session {s.id} ({who}) calculated by the charger "
                 f"from the host's tariff: {local[s.tx_ref]:.2f} CNY; our settlement: "
                 f"{fmt(by_session[s.id]['cost_fen'])} CNY"
                 + ("; owed when settled, until the terminal's payment (NotifySettlement) came "
                    "from external:card and paid the host" if who.startswith("a card") else ""))
    _say(f"\nHold of {tags[3]}'s session (held:{tags[3]}): "
         + "; ".join(f"{line['kind']} {fmt(abs(line['change']))}" for line in held))
    _say(f"{tags[3]} owed {fmt(paid_debt.debt_paid_fen)} CNY after the overstay fee "
         f"(host4's share of it, {fmt(waiting_before)} CNY, waited in owed:host:host4); the next "
         f"top-up of 20.00 CNY paid it first: host4 is paid collected money only")
    _say("\nBalances (CNY)")
    for balance in balances:
        if not balance["account"].startswith(("clearing:", "pool:")):
            _say(f"  {balance['account']:28} {fmt(balance['balance']):>10}")
    state = "OK" if verdict.ok else "BROKEN: " + verdict.problems[0]
    _say(f"ledger verify: {state} ({verdict.transfers} transfers, hash chain intact, "
         f"CNY sums to {verdict.sums.get('CNY', 0)})")
    _say(f"\nPayout run {payout_run.day} (`cocharge payout run`): {len(payout_run.lines)} payouts, "
         f"{fmt(payout_run.total_fen)} CNY; payment file {pay_file}")
    for line in payout_run.lines:
        _say(f"  {line['ref']}  {line['account']:26} {fmt(line['amount_fen']):>8}  "
             f"{line['payee_name']}, {line['method']} …{line['number'][-4:]}  paid (confirmed)")
    t = statement["totals"]
    _say(f"\nStatement host:host1 {month} (`cocharge statement`): {t['sessions']} "
         f"session{'' if t['sessions'] == 1 else 's'}, "
         f"{t['kwh']:.3f} kWh, gross {fmt(t['gross_fen'])}, discounts {fmt(t['discounts_fen'])}, "
         f"commission {fmt(t['commission_fen'])}, net {fmt(t['net_fen'])}, payouts "
         f"{fmt(sum(p['fen'] for p in statement['payouts']))}, balance {fmt(statement['closing_fen'])}, "
         f"tax estimate {fmt(statement['tax']['estimate_fen'])}")
    _say(f"  as a page with a chart: {statement_html}")
    _say("\nRewards (credit starts at 100; coins, badges, green certificates, points)")
    _say(f"{'tag':9} {'credit':>6} {'coins':>5} {'green kWh':>9} {'CO2 kg':>7} {'green pts':>9} "
         f"{'locked':>9} {'pool pts':>9}  badges, certificates, events")
    for r in rewarded:
        notes = [b["name"] for b in r["badges"]] + [c["id"] for c in r["green_certificates"]]
        notes += sorted({e["event"] for e in r["events"]})
        _say(f"{r['tag']:9} {r['credit']:>6} {r['coins']:>5} {r['green_kwh']:>9.3f} "
             f"{r['co2_kg']:>7.3f} {points_text(r['green_points']['available'], GREEN_SCALE):>9} "
             f"{points_text(r['green_points']['locked'], GREEN_SCALE):>9} "
             f"{points_text(r['pool_points'], POOL_SCALE)[:-4]:>9}  {', '.join(notes)}")
    _say(f"green points: {tags[0]} <- {tags[1]} <- {tags[2]} referral chain, 1.2 % of each order "
         f"released a day for 2 days; pool price {pool} CNY per point")
    _say("\nWhat the platform owes against what backs it (`cocharge ledger liabilities`): the points"
         "\ngranted with purchases are promises on top of the money paid in"
         + (f"; the operator backed them with {fmt(capital)} CNY of its own"
            f"\n(`cocharge ledger fund {fmt(capital)} --ref demo-capital`)." if capital else "."))
    for text in liabilities.text_lines():
        _say(text)
    _say(f"\ndemo finished in {time.monotonic() - started:.1f} s")
