"""Rewards from real sessions: a simulated green group session earns its certificate, coins,
credit and badge on the ledger, visible from the `cocharge` command; settling again changes
nothing; the certificate is checked against the ledger."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta

from cocharge.node import running_node
from cocharge.settlement import ledger, loyalty, settle
from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.stations import registry, sharing
from cocharge.store.db import utcnow
from tests.cli.test_cli import cocharge
from tests.conftest import settings, ws_url


async def until(check, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def balances(db: str) -> dict[tuple[str, str], int]:
    listed = cocharge("ledger", "balances", "--json", db=db)
    assert listed.returncode == 0, listed.stderr
    return {(b["account"], b["asset"]): b["balance"] for b in json.loads(listed.stdout)}


async def test_a_green_group_session_earns_certificate_coins_credit_and_badge(tmp_path):
    path = tmp_path / "r.db"
    db = str(path)
    async with running_node(db, settings()) as node:
        engine = node.engine
        await registry.add_station(engine, registry.NewStation("WB1", owner="alice", connectors=2,
                                                               max_power_kw=11))
        for name in ("Ann", "Bo"):
            await registry.add_member(engine, name, name.upper(), None)
        await settle.set_terms(engine, "WB1", {"green": True})
        # The operator lowers Earth Guardian to 1 green kWh so one session earns it.
        await loyalty.set_rule(engine, "badges.earth_guardian.green_kwh", "1")
        await loyalty.set_rule(engine, "group.min_members", "2")  # the default is 5
        start = utcnow() + timedelta(seconds=2)
        group = await sharing.create_group(engine, "WB1", start, start + timedelta(minutes=30),
                                           min_members=2, initiator="ANN")
        assert await sharing.join_group(engine, group, "BO") == "formed"
        booked = {b["tag"]: b["connector"] for b in await sharing.list_bookings(engine, "WB1")}
        box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB1", connectors=2,
                                                   speed=300, meter_interval_s=0.05))
        try:
            await until(lambda: box.hw[booked["ANN"]].reservation is not None, 15)
            charged = await box.charge(booked["ANN"], "ANN", energy_wh=1500)
            assert charged.authorized, charged.refused
            await asyncio.wait_for(charged.done.wait(), 20)
        finally:
            await close_wallbox(box, reader)
        await asyncio.sleep(0.3)
        await node.gateway.settler.drain()
        [row] = await registry.list_sessions(engine, "WB1")
        assert row["group"] == group
        energy = row["energy_wh"]

    shown = cocharge("member", "show", "ANN", "--json", db=str(path))
    assert shown.returncode == 0, shown.stderr
    ann = json.loads(shown.stdout)
    # Initiator of a formed group: 20 coins and 20 credit, and like every member 10 coins on
    # completion; a first green session: 8 credit.
    assert ann["coins"] == 20 + 10 and ann["credit"] == 100 + 20 + 8
    # ANN started the group and, first of equals, was its highest-credit member: Navigator.
    assert [b["badge"] for b in ann["badges"]] == ["earth_guardian", "navigator"]
    [cert] = ann["green_certificates"]
    cert_id = f"GC-{row['id']:06d}"
    assert cert["id"] == cert_id and cert["station"] == "WB1"
    assert {e["event"] for e in ann["events"]} == {"group_initiator", "group_member",
                                                   "first_green_session"}
    text = cocharge("member", "show", "ANN", db=str(path)).stdout
    assert "Earth Guardian" in text and cert_id in text
    before = balances(str(path))
    assert before[("coins:ANN", "COIN")] == 30
    assert before[("credit:ANN", "CREDIT")] == 128
    assert before[("badge:ANN", "BADGE")] == 2  # Earth Guardian, Navigator
    assert before[("green:ANN", "GREEN_WH")] == energy
    # The certificate: kWh x 0.5366 kg/kWh, backed by its ledger entry.
    printed = json.loads(cocharge("green", "certificate", cert_id, "--json", db=str(path)).stdout)
    assert printed["energy_wh"] == energy and printed["factor"] == "0.5366"
    assert printed["co2_g"] == (energy * 5366 + 5000) // 10000
    assert cocharge("green", "verify", cert_id, db=str(path)).returncode == 0
    # Settling again changes nothing.
    again = cocharge("settle", db=str(path))
    assert again.returncode == 0 and "0 sessions settled" in again.stdout
    assert balances(str(path)) == before
    assert cocharge("ledger", "verify", db=str(path)).returncode == 0
    # Someone inflates the certificate in the database: `green verify` says which check fails.
    raw = sqlite3.connect(path)
    raw.execute("UPDATE green_certificates SET energy_wh = energy_wh * 10, co2_g = co2_g * 10")
    raw.commit()
    raw.close()
    forged = cocharge("green", "verify", cert_id, db=str(path))
    assert forged.returncode == 1
    assert "FAIL" in forged.stdout and "digest" in forged.stdout


async def test_settling_twice_in_process_posts_rewards_once(tmp_path):
    db = str(tmp_path / "twice.db")
    async with running_node(db, settings()) as node:
        engine = node.engine
        await registry.add_station(engine, registry.NewStation("WB2", owner="bo", max_power_kw=11))
        await registry.add_member(engine, "Cai", "CAI", None)
        await settle.set_terms(engine, "WB2", {"green": True})
        box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="WB2",
                                                   speed=300, meter_interval_s=0.05))
        try:
            charged = await box.charge(1, "CAI", energy_wh=1000)
            await asyncio.wait_for(charged.done.wait(), 20)
        finally:
            await close_wallbox(box, reader)
        await asyncio.sleep(0.3)
        await node.gateway.settler.drain()
        [row] = await registry.list_sessions(engine, "WB2")
        assert await settle.settle_session(engine, row["id"]) is None
        async with engine.connect() as conn:
            assert await loyalty.credit_score(conn, "CAI") == 108  # first green session, once
            assert len(await loyalty.certificates_of(conn, "CAI")) == 1
        assert (await ledger.verify(engine)).ok
