"""The CLI cannot hurt its operator: bounded money, retry-safe payments, clear filters, the
fleet's online state and live sessions as the running gateway sees them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from tests.cli.test_cli import SERVED_CLOCK, cocharge, served  # noqa: F401 - the fixture
from tests.cli.test_db_cli import one_line_error


@pytest.mark.parametrize("args, words", [
    (["wallet", "topup", "T1", "1e17", "--ref", "a"], ["plain digits"]),
    (["wallet", "topup", "T1", "1e12", "--ref", "a"], ["plain digits"]),
    (["wallet", "topup", "T1", "1000000", "--ref", "a"], ["100000 CNY", "max_amount_cny"]),
    (["wallet", "topup", "T1", "NaN", "--ref", "a"], ["plain digits"]),
    (["wallet", "topup", "T1", "12.5", "--ref", ""], ["--ref"]),
    (["points", "purchase", "T1", "1e15", "--ref", "a"], ["plain digits"]),
    (["points", "purchase", "T1", "200000.00", "--ref", "a"], ["max_amount_cny"]),
    (["tariff", "set", "S1", "--per-kwh", "1E2"], ["plain digits"]),
    (["sessions", "list", "--since", "soon"], ["--since", "duration"]),
    (["sessions", "show", "99"], ["no session 99"]),
    (["member", "unblock", "NOPE"], ["no member"]),
    # Issue 30: out-of-range numbers are the operator's mistake, never a traceback.
    (["station", "add", "S2", "--max-power-kw", "nan"], ["not a finite number"]),
    (["sessions", "show", "9223372036854775808"], ["not in the range"]),
    (["remote", "reset", "S1", "--expires", "99999999h"], ["up to 30 days"]),
])
def test_bad_money_and_filters_are_one_line_and_write_nothing(tmp_path, args, words):
    db = str(tmp_path / "c.db")
    assert cocharge("member", "add", "Ann", "--tag", "T1", db=db).returncode == 0
    assert cocharge("station", "add", "S1", db=db).returncode == 0
    one_line_error(cocharge(*args, db=db), *words)
    balances = json.loads(cocharge("ledger", "balances", "--json", db=db).stdout)
    assert balances == [] or all(b["balance"] == 0 for b in balances), balances


def test_a_payment_without_ref_gets_one_to_retry_with(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("member", "add", "Ann", "--tag", "T1", db=db).returncode == 0
    first = cocharge("wallet", "topup", "T1", "10", db=db)
    assert first.returncode == 0 and "topped up 10.00" in first.stdout
    ref = first.stderr.split("give --ref ")[1].split(":")[0]
    assert ref.startswith("topup-")
    again = cocharge("wallet", "topup", "T1", "10", "--ref", ref, db=db)  # the retry
    assert again.returncode == 0 and "already applied; balance 10.00 CNY" in again.stdout
    bought = cocharge("points", "purchase", "T1", "30", "--date", "2026-11-01", db=db)
    assert bought.returncode == 0 and "give --ref purchase-" in bought.stderr


def test_member_unblock(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("member", "add", "Ann", "--tag", "T1", db=db).returncode == 0
    assert cocharge("member", "block", "T1", db=db).returncode == 0
    assert json.loads(cocharge("member", "list", "--json", db=db).stdout)[0]["status"] == "blocked"
    done = cocharge("member", "unblock", "T1", db=db)
    assert done.returncode == 0 and "accepted again" in done.stdout
    assert json.loads(cocharge("member", "list", "--json", db=db).stdout)[0]["status"] == "accepted"


async def test_fleet_and_live_sessions_as_the_gateway_sees_them(served):  # noqa: F811
    db, url, _ = served
    run = lambda *a: asyncio.to_thread(cocharge, *a, db=db)
    box, reader = await open_wallbox(SimConfig(url=url, station_id="CP1", protocol="2.0.1",
                                               meter_interval_s=0.2, **SERVED_CLOCK))
    try:
        fleet = {s["id"]: s for s in json.loads((await run("station", "list", "--json")).stdout)}
        assert fleet["CP1"]["online"] is True and fleet["CP1"]["node"]
        assert fleet["CP2"]["online"] is False and fleet["CP2"]["node"] is None
        text = (await run("station", "list")).stdout
        assert "ONLINE" in text and "(last:" in text  # CP2's states are only its last known
        assert (await run("remote", "start", "CP1", "--tag", "TAG1")).returncode == 0
        live: list[dict] = []
        for _ in range(100):
            live = json.loads((await run("sessions", "list", "--active", "--json")).stdout)
            if live and (live[0]["energy_wh"] or 0) > 0 and live[0]["cost_so_far_fen"]:
                break
            await asyncio.sleep(0.2)
        assert len(live) == 1 and live[0]["energy_wh"] > 0 and live[0]["cost_so_far_fen"] > 0
        assert "so far" in (await run("sessions", "list", "--active")).stdout
        assert json.loads((await run("sessions", "list", "--tag", "NOBODY", "--json")).stdout) == []
        mine = json.loads((await run("sessions", "list", "--tag", "TAG1", "--since", "1h",
                                     "--limit", "1", "--json")).stdout)
        assert [s["id"] for s in mine] == [live[0]["id"]]
        assert (await run("remote", "stop", "CP1", "--session", str(live[0]["id"]))).returncode == 0
        shown: dict = {}
        for _ in range(100):
            shown = json.loads((await run("sessions", "show", str(live[0]["id"]), "--json")).stdout)
            if shown.get("bill"):
                break
            await asyncio.sleep(0.2)
        assert shown["status"] == "completed" and shown["bill"]["payable_fen"] > 0
        assert shown["payable_fen"] == shown["bill"]["payable_fen"]
        assert shown["split"]
        assert json.loads((await run("sessions", "list", "--active", "--json")).stdout) == []
        text = (await run("sessions", "show", str(live[0]["id"]))).stdout
        assert "payable" in text and "split" in text
    finally:
        await close_wallbox(box, reader)


def test_station_update_connectors(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("station", "add", "S1", db=db).returncode == 0
    assert cocharge("station", "update", "S1", "--connectors", "2", db=db).returncode == 0
    assert json.loads(cocharge("station", "show", "S1", "--json", db=db).stdout)["connectors"] == 2
    bad = cocharge("station", "update", "S1", "--connectors", "0", db=db)  # click's usage error
    assert bad.returncode == 2 and "--connectors" in bad.stderr and "Traceback" not in bad.stderr
    one_line_error(cocharge("station", "update", "S1", db=db), "nothing to change")


@pytest.mark.parametrize("args, words", [
    (["station", "add"], ("Missing argument 'STATION_ID'",)),
    (["station", "update", "CP1", "--connectors", "0"], ("'--connectors': 0 is not in the range",)),
    (["sessions", "show", "abc"], ("'abc' is not a valid integer",)),
    (["station", "list", "--colour"], ("No such option", "--colour")),
    (["nosuch"], ("No such command 'nosuch'",)),
])
def test_usage_errors_are_one_line(tmp_path, args, words):
    db = str(tmp_path / "c.db")
    result = subprocess.run([sys.executable, "-m", "cocharge.cli", *args], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path, check=False)
    one_line_error(result, *words, "--help")
    assert not os.path.exists(db)


def test_tables_fit_the_terminal(tmp_path):
    """On a terminal, `station list` fits its width (long cells cut with '…'); piped, every
    cell is printed in full."""
    import pty

    from cocharge.cli.common import fit

    assert fit([10, 40, 30], 60) == [10, 23, 23] and sum(fit([10, 40, 30], 60)) + 4 <= 60
    assert fit([3, 4], 80) == [3, 4]
    db = str(tmp_path / "c.db")
    owner = "an-owner-with-a-very-long-name-" * 3
    assert cocharge("station", "add", "CP1", "--owner", owner, db=db).returncode == 0
    piped = cocharge("station", "list", db=db)
    assert owner in piped.stdout
    out = b""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on a terminal 120 columns wide
        os.environ["COLUMNS"] = "120"
        os.execv(sys.executable, [sys.executable, "-m", "cocharge.cli", "station", "list",
                                  "--db", db])
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    lines = [line for line in out.decode().splitlines() if line.startswith(("ID", "CP1"))]
    assert len(lines) == 2 and all(len(line) <= 120 for line in lines), lines
    assert "…" in lines[1] and owner not in lines[1]


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1:1/ocpp", "WebSocket URL"),
    ("ws://127.0.0.1:1/ocpp", "cannot reach the gateway"),
])
def test_the_simulator_says_in_one_line_that_it_cannot_reach_the_gateway(url, words):
    from tests import forked_cli

    one_line_error(forked_cli.run(["sim", "run", "--url", url]), words)


@pytest.mark.parametrize("args, words", [
    (["member", "add", "", "--tag", "X1"], ["a member's name"]),
    (["member", "add", "N" * 5000, "--tag", "X1"], ["a member's name"]),
    (["station", "add", "S" * 200], ["1 to 48 printable"]),
    (["sessions", "list", "--station", "NOPE"], ["no station 'NOPE'"]),
    (["ledger", "statement", "wallet:NOBODY"], ["no account 'wallet:NOBODY'"]),
    (["statement", "host:nobody", "--month", "2026-12"], ["no account 'host:nobody'"]),
    (["remote", "start", "S1", "--payment", "PAY-1"], ["--payment needs --budget"]),
    (["remote", "start", "S1", "--tag", "T", "--payment", "P"], ["--tag (a member) or"]),
    (["sessions", "paid", "7", "--amount", "3", "--psp-ref", "P"], ["no session 7"]),
])
def test_what_does_not_exist_or_cannot_be_stored_is_refused(tmp_path, args, words):
    """Issue 30: accepted though wrong, or exit 0 for things that do not exist: now one line
    and exit 2, nothing written."""
    db = str(tmp_path / "c.db")
    one_line_error(cocharge(*args, db=db), *words)
    assert json.loads(cocharge("member", "list", "--json", db=db).stdout) == []
    assert json.loads(cocharge("station", "list", "--json", db=db).stdout) == []
