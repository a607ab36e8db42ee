"""`cocharge site`, `circuit`, `station attach` and the smart-charging remotes, as an
operator runs them: real processes, a real database, a real gateway with a simulated charger."""

from __future__ import annotations

import asyncio
import json

from cocharge.node import running_node
from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from tests.cli.test_cli import cocharge
from tests.conftest import settings, ws_url


def test_a_site_tree_is_built_checked_and_removed(tmp_path) -> None:
    db = str(tmp_path / "s.db")
    assert cocharge("station", "add", "W1", "--max-power-kw", "11", db=db).returncode == 0
    assert cocharge("site", "add", "GARAGE", db=db).returncode == 0
    assert cocharge("circuit", "add", "MAIN", "--site", "GARAGE", "--limit-kw", "43.5",
                    db=db).returncode == 0
    assert cocharge("circuit", "add", "ROW1", "--site", "GARAGE", "--parent", "MAIN",
                    "--limit-a", "32", "--reserve-a", "4", db=db).returncode == 0
    attached = cocharge("station", "attach", "W1", "--circuit", "ROW1", "--phases", "L2L3L1",
                        db=db)
    assert attached.returncode == 0, attached.stderr
    shown = json.loads(cocharge("site", "show", "GARAGE", "--json", db=db).stdout)
    main = shown["circuits"][0]
    assert main["circuit"] == "MAIN" and main["limit_a"] == 63.0  # 43.5 kW / (3 x 230 V)
    row = main["circuits"][0]
    assert row["limit_a"] == 32 and row["reserve_a"] == 4
    assert row["stations"][0]["station"] == "W1" and row["stations"][0]["wiring"] == "L2L3L1"
    assert shown["live"] is None  # no gateway running
    text = cocharge("site", "show", "GARAGE", db=db).stdout
    assert "circuit ROW1: 32 A per phase" in text and "live allocation: none" in text
    # Mistakes: one line, exit 2, nothing written.
    for args, words in [
        (("circuit", "add", "X", "--site", "GARAGE", "--limit-a", "10"), "main circuit already"),
        (("circuit", "add", "X", "--site", "NOPE", "--parent", "MAIN", "--limit-a", "10"), "no site"),
        (("circuit", "add", "X", "--site", "GARAGE", "--parent", "MAIN"), "--limit-a"),
        (("circuit", "add", "X", "--site", "GARAGE", "--parent", "MAIN", "--limit-a", "10",
          "--reserve-a", "12"), "reserve"),
        (("circuit", "add", "X", "--site", "GARAGE", "--parent", "MAIN", "--limit-a", "10",
          "--meter", "modbus"), "--meter"),
        (("circuit", "update", "MAIN", "--parent", "ROW1"), "cycle"),
        (("circuit", "remove", "MAIN"), "circuits under it"),
        (("circuit", "remove", "ROW1"), "feeds W1"),
        (("station", "attach", "W1", "--circuit", "ROW1", "--phases", "L4"), "--phases"),
        (("station", "attach", "NOPE", "--circuit", "ROW1"), "unknown station"),
        (("site", "add", "GARAGE"), "exists already"),
        (("site", "show", "ELSEWHERE"), "no site"),
    ]:
        bad = cocharge(*args, db=db)
        assert bad.returncode == 2, (args, bad.stderr)
        assert words in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert json.loads(cocharge("site", "show", "GARAGE", "--json", db=db).stdout) == shown
    assert cocharge("station", "detach", "W1", db=db).returncode == 0
    assert cocharge("site", "remove", "GARAGE", db=db).returncode == 0
    assert json.loads(cocharge("site", "list", "--json", db=db).stdout) == []


def test_bad_profiles_are_refused_before_anything_is_sent(tmp_path) -> None:
    db = str(tmp_path / "p.db")
    for args, words in [
        (("--purpose", "TxProfile", "--limits", "0:16"), "names its session"),
        (("--purpose", "TxDefaultProfile", "--limits", "60:16"), "start at 0"),
        (("--purpose", "TxDefaultProfile", "--limits", "0:sixteen"), "START_S:LIMIT"),
        (("--purpose", "ChargePointMaxProfile", "--connector", "1", "--limits", "0:16"),
         "connector 0"),
        (("--purpose", "TxDefaultProfile", "--limits", "0:16", "--kind", "Recurring"),
         "recurrency"),
    ]:
        bad = cocharge("remote", "set-charging-profile", "W1", *args, db=db)
        assert bad.returncode == 2 and words in bad.stderr, (args, bad.stderr)


async def test_site_show_prints_the_live_allocation_and_profiles_reach_the_charger(tmp_path) -> None:
    db = str(tmp_path / "l.db")
    for args in (("station", "add", "W1", "--max-power-kw", "22"), ("site", "add", "HOME"),
                 ("circuit", "add", "HOUSE", "--site", "HOME", "--limit-a", "20"),
                 ("station", "attach", "W1", "--circuit", "HOUSE"),
                 ("member", "add", "Bob", "--tag", "T1")):
        assert (await asyncio.to_thread(cocharge, *args, db=db)).returncode == 0
    async with running_node(db, settings(load_period_s=0.5, load_settle_s=0.0)) as node:
        box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id="W1",
                                                   protocol="2.0.1", speed=1,
                                                   meter_interval_s=0.25, max_current_a=32))
        try:
            await box.charge(1, "T1")
            await asyncio.sleep(2.0)
            shown = await asyncio.to_thread(cocharge, "site", "show", "HOME", "--json", db=db)
            live = json.loads(shown.stdout)["live"]
            charger = live["chargers"][0]
            assert charger["allocated_a"] == 20.0 and charger["class"] == "guest"
            assert charger["written_a"] == 20.0 and charger["purpose"] == "TxDefaultProfile"
            text = (await asyncio.to_thread(cocharge, "site", "show", "HOME", db=db)).stdout
            assert "W1/1: 20 A (guest session" in text
            # An operator's profile at stack level 2 caps it below the allocation.
            set_ = await asyncio.to_thread(
                cocharge, "remote", "set-charging-profile", "W1", "--purpose",
                "TxDefaultProfile", "--limits", "0:10", "--id", "42", db=db)
            assert set_.returncode == 0, set_.stderr
            composite = await asyncio.to_thread(
                cocharge, "remote", "get-composite-schedule", "W1", "--connector", "1",
                "--duration", "60", "--json", db=db)
            periods = json.loads(composite.stdout)["response"]["schedule"]["chargingSchedulePeriod"]
            assert periods[0]["limit"] == 10.0
            cleared = await asyncio.to_thread(cocharge, "remote", "clear-charging-profile", "W1",
                                              "--id", "42", db=db)
            assert cleared.returncode == 0 and "Accepted" in cleared.stdout
        finally:
            await close_wallbox(box, reader)
