"""OCPP 2.1 local cost calculation and payment at the charger (issue 31, items 3 and 4), over
real sockets with the simulated 2.1 charger (its own cost calculation: simulators/tariffs.py)
or hand-written frames. Use case ids of the 2.1 specification: I07 (SetDefaultTariff),
I08 (cost at the charger, costDetails), I11 (GetTariffs), I12 (ClearTariffs), E17 / I10
(transactionLimit), C18 (a DirectPayment at the card terminal), C24 (NotifySettlement)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from cocharge import views
from cocharge.gateway.operator_client import send_request
from cocharge.node import running_node
from cocharge.settlement import funds, ledger, settle
from cocharge.settlement.tariff import simple_tariff
from cocharge.settlement.tariff21 import Untranslatable, tariff_type
from cocharge.stations import registry
from cocharge.store.db import utcnow
from cocharge.store.schema import sessions, settlements
from tests.conftest import raw_station, register, settings, simulated, until


def now() -> str:
    return utcnow().isoformat(timespec="seconds") + "Z"


async def settled(node, station_id: str):
    async with node.engine.connect() as conn:
        return (await conn.execute(select(sessions, settlements.c.cost_fen).join(
            settlements, settlements.c.session_id == sessions.c.id)
            .where(sessions.c.station_id == station_id))).first()


def test_our_tariffs_as_21_tariffs_exactly_or_not_at_all():
    shipped = tariff_type(simple_tariff(Decimal("1.50"), idle=settle.SettlementDefaults().idle))
    assert shipped["currency"] == "CNY" and shipped["energy"] == {"prices": [{"priceKwh": 1.5}]}
    # The overstay fee: 0.50 a minute after 15 minutes' grace, until its 60 CNY cap.
    assert shipped["idleTime"] == {"prices": [{"priceMinute": 0.5, "conditions": {
        "minIdleTime": 900, "maxIdleTime": 900 + 120 * 60}}]}
    night = tariff_type(simple_tariff(Decimal("2.00"), per_hour=Decimal("6"),
                                      tod=[("23:00", "07:00", Decimal("0.80"))],
                                      min_price_fen=100, max_price_fen=5000))
    assert night["energy"]["prices"] == [
        {"priceKwh": 0.8, "conditions": {"startTimeOfDay": "23:00", "endTimeOfDay": "07:00"}},
        {"priceKwh": 2}]
    assert night["chargingTime"] == {"prices": [{"priceMinute": 0.1}]}
    assert night["minCost"] == {"exclTax": 1, "inclTax": 1}
    assert night["maxCost"] == {"exclTax": 50, "inclTax": 50}
    assert night["tariffId"] != shipped["tariffId"]  # made from the content
    assert tariff_type(simple_tariff(Decimal("1.50"), idle=settle.SettlementDefaults().idle)) \
        == shipped
    try:
        tariff_type(simple_tariff(Decimal("1.50"), energy_step_wh=500))
    except Untranslatable as exc:
        assert "step" in str(exc)
    else:
        raise AssertionError("a stepped tariff has no exact 2.1 form")


async def test_i07_i08_the_charger_is_given_the_hosts_tariff_and_its_cost_is_our_settlement(
        sqlite_url):
    async with running_node(sqlite_url, settings(tariff_sync_s=0.3)) as node:
        await registry.add_station(node.engine, registry.NewStation("C21", owner="hana",
                                                                    max_power_kw=11))
        await registry.add_member(node.engine, "Ann", "ANN", None)
        await settle.set_tariff(node.engine, "C21", 0, simple_tariff(Decimal("2.30")))
        async with simulated(node, "C21", "2.1", meter_interval_s=0.05) as box:
            # After its boot, the charger holds the host's tariff on its EVSE.
            await until(lambda: asyncio.sleep(0, box.tariffs.get(1)))
            assert box.tariffs[1]["energy"]["prices"][0]["price_kwh"] == 2.3
            session = await box.charge(1, "ANN", energy_wh=3000)
            await asyncio.wait_for(session.done.wait(), 30)
            tx = str(session.tx_id)
            await node.gateway.settler.drain()
            [listed] = await registry.list_sessions(node.engine, "C21")
            assert listed["status"] == "completed", listed  # not flagged: the costs agree
            row = await until(lambda: settled(node, "C21"), 30)
            charger = box.local_costs[tx]["total"]["incl_tax"]
            # The charger's own cost, ours, and what was billed agree to the fen.
            assert round(charger * 100) == row.charger_cost_fen == row.cost_fen > 600
            assert row.status == "completed"
            assert box.total_costs[tx] == f"{row.cost_fen / 100:.2f}"
            shown = await views.session_detail(node.engine, row.id)  # sessions show, the API
            assert shown["charger_cost_fen"] == shown["bill"]["cost_fen"] == row.cost_fen

            # I11: what it holds; the host changes the price: the charger gets the new one.
            held = await send_request(node.engine, {"command": "get-tariffs", "station": "C21",
                                                    "args": {"evse_id": 0}})
            assert held["accepted"], held
            [assignment] = held["response"]["tariffAssignments"]
            assert assignment["tariffId"] == box.tariffs[1]["tariff_id"]
            assert assignment["evseIds"] == [1]
            await settle.set_tariff(node.engine, "C21", 0, simple_tariff(Decimal("1.80")))
            await until(lambda: asyncio.sleep(0, box.tariffs.get(1, {}).get("energy", {})
                                              .get("prices", [{}])[0].get("price_kwh") == 1.8))

            # I12: cleared on the operator's word (then given again at the next check).
            cleared = await send_request(node.engine, {
                "command": "clear-tariffs", "station": "C21", "args": {}})
            assert cleared["accepted"], cleared
            await until(lambda: asyncio.sleep(0, bool(box.tariffs.get(1))))


async def test_a_charger_cost_that_differs_from_ours_is_flagged_never_billed(node):
    await register(node, "D21", tags=("TAG1",))
    st = await raw_station(node, "D21", "ocpp2.1")

    def event(kind: str, seq: int, wh: int, at: str, **extra):
        return {"eventType": kind, "timestamp": at, "triggerReason": "Authorized",
                "seqNo": seq, "transactionInfo": {"transactionId": "d-1"},
                "evse": {"id": 1, "connectorId": 1},
                "idToken": {"idToken": "TAG1", "type": "ISO14443"},
                "meterValue": [{"timestamp": at, "sampledValue": [
                    {"value": wh, "measurand": "Energy.Active.Import.Register"}]}], **extra}

    hour_ago = (utcnow() - timedelta(hours=1)).isoformat(timespec="seconds") + "Z"
    assert (await st.call("TransactionEvent", event("Started", 0, 1000, hour_ago)))[0] == 3
    wrong = {"totalCost": {"currency": "CNY", "typeOfCost": "NormalCost",
                           "total": {"exclTax": 99.99, "inclTax": 99.99}},
             "totalUsage": {"energy": 2000, "chargingTime": 60, "idleTime": 0}}
    ended = await st.call("TransactionEvent", event("Ended", 1, 3000, now(), costDetails=wrong))
    assert ended[0] == 3, ended
    [row] = await registry.list_sessions(node.engine, "D21")
    assert row["status"] == "flagged"
    assert await settle.payable_fen(node.engine, row["id"]) is None  # nothing billed
    async with node.engine.connect() as conn:
        flag = (await conn.execute(select(sessions.c.flag_reason, sessions.c.charger_cost_fen)
                                   .where(sessions.c.id == row["id"]))).one()
    assert flag.charger_cost_fen == 9999
    assert "charger calculated 99.99 CNY, our tariff 3.00 CNY" in flag.flag_reason
    # The operator decides: billed at our price (the charger's figure is never billed).
    await settle.review_session(node.engine, row["id"], True, "meter checked", "ops")
    assert await settle.payable_fen(node.engine, row["id"]) == 300


async def test_e17_the_members_money_is_the_transaction_limit(sqlite_url):
    async with running_node(sqlite_url, settings(start_minimum_fen=100)) as node:
        await registry.add_station(node.engine, registry.NewStation("L21", max_power_kw=11))
        await registry.add_member(node.engine, "Bo", "BO", None)
        await funds.top_up(node.engine, "BO", 300, "pay-bo")
        st = await raw_station(node, "L21", "ocpp2.1")
        started = await st.call("TransactionEvent", {
            "eventType": "Started", "timestamp": now(), "triggerReason": "Authorized",
            "seqNo": 0, "transactionInfo": {"transactionId": "l-1"},
            "evse": {"id": 1, "connectorId": 1}, "idToken": {"idToken": "BO", "type": "ISO14443"},
            "meterValue": [{"timestamp": now(), "sampledValue": [
                {"value": 0, "measurand": "Energy.Active.Import.Register"}]}]})
        assert started[0] == 3, started
        assert started[2]["idTokenInfo"]["status"] == "Accepted"
        assert started[2]["transactionLimit"] == {"maxCost": 3.0}


async def test_e17_a_21_charger_stops_itself_at_the_members_money(sqlite_url):
    async with running_node(sqlite_url, settings(start_minimum_fen=100, tariff_sync_s=0.3)) as node:
        await registry.add_station(node.engine, registry.NewStation("S21", max_power_kw=11))
        await registry.add_member(node.engine, "Bo", "BO", None)
        await funds.top_up(node.engine, "BO", 300, "pay-bo")
        async with simulated(node, "S21", "2.1", meter_interval_s=0.05) as box:
            await until(lambda: asyncio.sleep(0, box.tariffs.get(1)))
            session = await box.charge(1, "BO", energy_wh=10_000)  # 15 CNY of energy wanted
            await asyncio.wait_for(session.done.wait(), 60)
            assert box.limits_given[str(session.tx_id)] == Decimal("3")
            # Stopped at the money: by the charger's own cost (LocalOutOfCredit) or by the
            # gateway's budget cutoff, whichever sees it first.
            assert session.stop_reason in ("LocalOutOfCredit", "Remote")
        await node.gateway.settler.drain()
        row = await settled(node, "S21")
        assert row.energy_wh < 2_100 and row.cost_fen <= 300 + 2


async def test_c18_c24_a_card_paid_session_pays_its_host(sqlite_url):
    async with running_node(sqlite_url, settings(start_minimum_fen=100, tariff_sync_s=0.3)) as node:
        await registry.add_station(node.engine, registry.NewStation("P21", owner="kai",
                                                                    max_power_kw=11))
        async with simulated(node, "P21", "2.1", meter_interval_s=0.05) as box:
            await until(lambda: asyncio.sleep(0, box.tariffs.get(1)))
            # No account: the card terminal authorised the payment (DirectPayment).
            session = await box.charge(1, "card:4111111111111111", energy_wh=2000)
            await asyncio.wait_for(session.done.wait(), 30)
            assert session.authorized
            [paid] = box.settlements
        booked = await until(lambda: _settlement_events(node, "P21"))
        row = await settled(node, "P21")
        assert row.id_tag == "#DirectPayment:4111111111111111"
        assert round(paid["settlement_amount"] * 100) == row.cost_fen > 0
        assert booked[0]["booked"] == {"session": row.id, "paid_fen": row.cost_fen, "left_fen": 0}
        async with node.engine.connect() as conn:
            host = await ledger.balance(conn, "host:kai")
            platform = await ledger.balance(conn, "platform")
            assert await ledger.balance(conn, funds.CARD_SOURCE) == -row.cost_fen
            assert await ledger.balance(conn, "receivable:" + row.id_tag) == 0
            assert await ledger.balance(conn, "owed:host:kai") == 0
        # Settled and split like a member's session: the host is paid what the card paid.
        assert host > 0 and host + platform == row.cost_fen
        assert (await ledger.verify(node.engine)).ok


async def _settlement_events(node, station_id: str) -> list[dict]:
    events = await registry.list_station_events(node.engine, station_id, "settlement")
    return [e["details"] for e in events if "booked" in e["details"]]


async def test_c24_a_settlement_for_a_members_session_is_kept_not_booked(node):
    await register(node, "N21", tags=("TAG1",))
    st = await raw_station(node, "N21", "ocpp2.1")
    answer = await st.call("NotifySettlement", {
        "pspRef": "psp-x", "status": "Settled", "settlementAmount": 5.0,
        "settlementTime": now(), "transactionId": "nope"})
    assert answer[0] == 3 and answer[2] == {}
    [kept] = await registry.list_station_events(node.engine, "N21", "settlement")
    assert "no transaction" in kept["details"]["not_booked"]
    async with node.engine.connect() as conn:
        assert await ledger.balance(conn, funds.CARD_SOURCE) == 0
    assert json.dumps(kept["details"])  # kept as the operator sees it


async def test_c21_a_vat_number_is_checked_by_its_format(node):
    await register(node, "VAT1")
    st = await raw_station(node, "VAT1", "ocpp2.1")
    good = await st.call("VatNumberValidation", {"vatNumber": "91350100M000100Y43", "evseId": 1})
    assert good[2] == {"status": "Accepted", "vatNumber": "91350100M000100Y43", "evseId": 1}
    eu = await st.call("VatNumberValidation", {"vatNumber": "DE123456789"})
    assert eu[2]["status"] == "Accepted"
    bad = await st.call("VatNumberValidation", {"vatNumber": "91350100M000100Y44"})
    assert bad[2]["status"] == "Rejected" and bad[2]["statusInfo"]["reasonCode"] == "InvalidValue"
    assert "check character" in bad[2]["statusInfo"]["additionalInfo"]
    kept = await registry.list_station_events(node.engine, "VAT1", "vat_number")
    assert sorted(e["details"]["valid_format"] for e in kept) == [False, True, True]


async def test_c24_each_evse_shows_the_payment_pages_qr_code(sqlite_url):
    async with running_node(sqlite_url, settings(
            tariff_sync_s=0.3, payment_page_url="https://pay.example/{station}/{evse}")) as node:
        await registry.add_station(node.engine, registry.NewStation("Q21", connectors=2,
                                                                    max_power_kw=22))
        async with simulated(node, "Q21", "2.1", connectors=2) as box:
            await until(lambda: asyncio.sleep(0, len(box.display) == 2))
            shown = {m["message"]["content"]: (m["message"]["format"], m["state"])
                     for m in box.display.values()}
            assert shown == {"https://pay.example/Q21/1": ("QRCODE", "Idle"),
                             "https://pay.example/Q21/2": ("QRCODE", "Idle")}
            # The payment page's backend: a driver of EVSE 2 is paying.
            answer = await send_request(node.engine, {
                "command": "web-payment-started", "station": "Q21",
                "args": {"evse_id": 2, "timeout": 90}})
            assert answer["accepted"], answer
            assert box.web_payments == [(2, 90)]


@pytest.mark.parametrize("why", ["green", "free-day"])
async def test_c01_i_a_members_own_price_at_authorize_is_what_settlement_gives(sqlite_url, why):
    """A member who chose green energy at a green charger, or in free charging days a reward
    granted: Authorize carries their own price (the host's less the green discount; nothing
    on a free day); the charger prices the session with it, and that is what our settlement
    makes them pay (not flagged)."""
    from cocharge.settlement import memberships
    from cocharge.stations import sharing

    async with running_node(sqlite_url, settings(tariff_sync_s=0.3)) as node:
        await registry.add_station(node.engine, registry.NewStation("G21", owner="gao",
                                                                    max_power_kw=11))
        await settle.set_terms(node.engine, "G21", {"green": True})
        await settle.set_tariff(node.engine, "G21", 0, simple_tariff(Decimal("2.00")))
        await registry.add_member(node.engine, "Lin", "LIN", None)
        if why == "green":
            await sharing.update_member(node.engine, "LIN", prefers_green=True)
        else:
            async with node.engine.begin() as conn:
                await memberships.reward_days(conn, "LIN", 3, "streak-1", utcnow())
        async with simulated(node, "G21", "2.1", meter_interval_s=0.05) as box:
            await until(lambda: asyncio.sleep(0, box.tariffs.get(1)))
            session = await box.charge(1, "LIN", energy_wh=3000)
            await asyncio.wait_for(session.done.wait(), 30)
            own = box.member_tariffs["LIN"]
            assert own["tariff_id"].startswith("cc-m-")
            charged = box.local_costs[str(session.tx_id)]["total"]["incl_tax"]
        await node.gateway.settler.drain()
        [listed] = await registry.list_sessions(node.engine, "G21")
        assert listed["status"] == "completed", listed
        bill = await settle.payable_fen(node.engine, listed["id"])
        assert abs(bill - round(charged * 100)) <= 1
        if why == "green":
            assert own["energy"]["prices"][0]["price_kwh"] == 1.8  # 2.00 less 10 %
            assert bill > 500
        else:
            assert own["energy"]["prices"][0]["price_kwh"] == 0 and bill == 0 == charged


async def test_c24_a_payment_on_the_qr_codes_page_starts_a_session_and_pays_its_host(tmp_path):
    """The payment page's backend: the driver is paying (NotifyWebPaymentStarted), the payment
    authorised 5 CNY: a remote start with a DirectPayment token and that budget; the charger
    stops at it; what the page captured is booked (`cocharge sessions paid`), and the host
    is paid."""
    from tests import forked_cli

    db = str(tmp_path / "web.db")
    async with running_node(db, settings(tariff_sync_s=0.3, start_minimum_fen=100, api_port=0,
                                         payment_page_url="https://pay.example/{station}/{evse}"
                                         )) as node:
        await registry.add_station(node.engine, registry.NewStation("W21", owner="wu",
                                                                    max_power_kw=11))
        async with simulated(node, "W21", "2.1", meter_interval_s=0.05) as box:
            await until(lambda: asyncio.sleep(0, box.tariffs.get(1)))
            started = await send_request(node.engine, {
                "command": "start", "station": "W21",
                "args": {"tag": "#DirectPayment:PAY-77", "connector_id": 1, "budget_fen": 500}})
            assert started["accepted"], started
            session = await until(lambda: asyncio.sleep(0, box.sessions.get(1)))
            await asyncio.wait_for(session.done.wait(), 60)
        await node.gateway.settler.drain()
        [listed] = await registry.list_sessions(node.engine, "W21")
        assert listed["tag"] == "#DirectPayment:PAY-77" and listed["status"] == "completed"
        row = await settled(node, "W21")
        assert 0 < row.cost_fen <= 500 + 2  # stopped at what the payment authorised
        amount = f"{row.cost_fen // 100}.{row.cost_fen % 100:02d}"
        paid = await asyncio.to_thread(forked_cli.run, [
            "sessions", "paid", str(row.id), "--amount", amount, "--psp-ref", "PSP-77",
            "--db", db])
        assert paid.returncode == 0, paid.stderr
        assert f"paid of what it owed {amount} CNY" in paid.stdout
        again = await asyncio.to_thread(forked_cli.run, [
            "sessions", "paid", str(row.id), "--amount", amount, "--psp-ref", "PSP-77",
            "--db", db])
        assert again.returncode == 0 and "booked before" in again.stdout
        member = await asyncio.to_thread(forked_cli.run, [
            "sessions", "paid", "999", "--amount", "1", "--psp-ref", "X", "--db", db])
        assert member.returncode == 2 and len(member.stderr.strip().splitlines()) == 1
        async with node.engine.connect() as conn:
            assert await ledger.balance(conn, "receivable:" + row.id_tag) == 0
            host = await ledger.balance(conn, "host:wu")
            platform = await ledger.balance(conn, "platform")
        assert host > 0 and host + platform == row.cost_fen
        # The same through the API (a page that captured more than was owed: kept for a
        # refund); who booked each is written with its transfers, a repeat says it booked
        # nothing.
        from cocharge.api.keys import create_key
        from tests.api.test_api import Client

        assert node.api is not None
        ops = Client(node.api.url, await create_key(node.engine, "ops", "operator", None))
        for _ in range(2):
            status, body = await ops.post(f"/api/v1/sessions/{row.id}/payment",
                                          {"amount_fen": 100, "psp_ref": "PSP-78"})
            assert status == 200 and body["left_fen"] == 100, body
        trail = [e for e in reversed((await ops.get("/api/v1/audit"))[1])
                 if e["action"] == "card-payment"]
        assert [(e["actor"].split()[0], e["details"]["psp_ref"], bool(e["details"].get(
            "transfers")), e["details"].get("posted")) for e in trail] == [
            ("cli", "PSP-77", True, None), ("cli", "PSP-77", False, False),
            ("operator", "PSP-78", True, None), ("operator", "PSP-78", False, False)]


async def test_i10_a_running_sessions_tariff_is_sent_again(sqlite_url):
    async with running_node(sqlite_url, settings(tariff_sync_s=0.3)) as node:
        await registry.add_station(node.engine, registry.NewStation("X21", max_power_kw=11))
        await registry.add_member(node.engine, "Ann", "ANN", None)
        await settle.set_tariff(node.engine, "X21", 0, simple_tariff(Decimal("1.70")))
        async with simulated(node, "X21", "2.1", meter_interval_s=0.05, speed=30) as box:
            await until(lambda: asyncio.sleep(0, box.tariffs.get(1)))
            session = await box.charge(1, "ANN", energy_wh=20_000)
            [running] = await until(lambda: registry.list_sessions(node.engine, "X21"))
            box.tx_tariffs.pop(str(session.tx_id))  # the charger lost it
            answer = await send_request(node.engine, {
                "command": "change-transaction-tariff", "station": "X21",
                "args": {"session_id": running["id"]}})
            assert answer["accepted"], answer
            held = box.tx_tariffs[str(session.tx_id)]
            assert held["energy"]["prices"][0]["price_kwh"] == 1.7
            box.request_stop(session.tx_id)
            await asyncio.wait_for(session.done.wait(), 30)
            late = await send_request(node.engine, {
                "command": "change-transaction-tariff", "station": "X21",
                "args": {"session_id": running["id"]}})
            assert not late["accepted"] and late["status"] == "TxNotFound"
