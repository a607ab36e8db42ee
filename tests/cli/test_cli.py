"""The `cocharge` command as an operator runs it: real processes, real database, real gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from tests import forked_cli


def cocharge(*args: str, db: str, timeout: float = 60,
             init: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI on `db`, in a process of its own (tests/forked_cli.py). A SQLite file not
    there yet is first created as an operator does, with `cocharge db init` (`init=False`:
    run on it as it is)."""
    if init and "://" not in db and not os.path.exists(db):
        made = forked_cli.run(["db", "init", "--db", db], timeout=timeout)
        assert made.returncode == 0, made.stderr
    return forked_cli.run([*args, "--db", db], timeout=timeout)


def test_station_and_member_management(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("station", "add", "CP1", "--owner", "alice", "--max-power-kw", "7",
                    db=db).returncode == 0
    again = cocharge("station", "add", "CP1", db=db)
    assert again.returncode == 2 and "already registered" in again.stderr
    assert cocharge("member", "add", "Bob", "--tag", "T1", db=db).returncode == 0
    assert cocharge("member", "block", "T1", db=db).returncode == 0
    listed = json.loads(cocharge("member", "list", "--json", db=db).stdout)
    assert listed[0]["status"] == "blocked"
    shown = json.loads(cocharge("station", "show", "CP1", "--json", db=db).stdout)
    assert shown["owner"] == "alice" and shown["max_power_kw"] == 7
    assert cocharge("station", "remove", "CP1", db=db).returncode == 0
    assert json.loads(cocharge("station", "list", "--json", db=db).stdout) == []


def test_bad_arguments_exit_2_and_write_nothing(tmp_path):
    db = str(tmp_path / "c.db")
    bad = cocharge("station", "add", "CP1", "--connectors", "0", db=db)
    assert bad.returncode == 2 and "connectors" in bad.stderr
    bad = cocharge("member", "add", "X", "--tag", "T" * 30, db=db)
    assert bad.returncode == 2 and "idTag" in bad.stderr
    bad = cocharge("member", "block", "NOPE", db=db)
    assert bad.returncode == 2 and "no member" in bad.stderr
    assert json.loads(cocharge("station", "list", "--json", db=db).stdout) == []
    assert json.loads(cocharge("member", "list", "--json", db=db).stdout) == []
    bad = cocharge("sessions", "list", db="mysql://x@y/z")
    assert bad.returncode == 2 and "unsupported database" in bad.stderr


def test_remote_without_a_gateway_exits_3(tmp_path):
    db = str(tmp_path / "c.db")
    result = cocharge("remote", "clear-cache", "CP1", db=db)
    assert result.returncode == 3 and "cocharge serve" in result.stderr


# A simulated wallbox's fast clock, for a gateway run as shipped: `cocharge serve` believes a
# charger's time up to 15 minutes ahead of its own, and a clock 60 times the wall clock's that
# started now would pass that after 15 s (a slow machine's test does); this one replays the
# 50 minutes before now, and is believed for the first minute of a test.
SERVED_CLOCK = {"speed": 60.0, "clock_lead_s": 3000.0}


@pytest.fixture
def served(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("station", "add", "CP1", db=db).returncode == 0
    assert cocharge("station", "add", "CP2", db=db).returncode == 0
    assert cocharge("member", "add", "Ann", "--tag", "TAG1", db=db).returncode == 0
    # Money to charge with: the gateway starts a session only for a member who can pay.
    assert cocharge("wallet", "topup", "TAG1", "200", "--ref", "served-1", db=db).returncode == 0
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "cocharge.cli", "serve", "--host", "127.0.0.1",
                               "--port", str(port), "--operator-port", "0", "--upload-port", "0",
                               "--api-port", "0", "--db", db],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    startup = [server.stdout.readline()]
    while "cocharge gateway" not in startup[-1]:
        assert len(startup) < 50 and startup[-1], startup
        startup.append(server.stdout.readline())
    yield db, f"ws://127.0.0.1:{port}/ocpp", "".join(startup)
    server.terminate()
    server.wait(10)


def test_serve_warns_about_stations_without_a_password(served):
    _, _, startup = served
    assert "2 registered station(s) have no password" in startup
    assert "CP1, CP2" in startup


async def test_remote_commands_reach_a_station_through_the_server(served):
    import asyncio

    db, url, _ = served
    box, reader = await open_wallbox(SimConfig(url=url, station_id="CP1", protocol="2.0.1",
                                               meter_interval_s=0.1, **SERVED_CLOCK))
    try:
        run = lambda *a: asyncio.to_thread(cocharge, *a, db=db)
        result = await run("remote", "start", "CP1", "--tag", "TAG1", "--connector", "1")
        assert result.returncode == 0 and "Accepted" in result.stdout
        for _ in range(100):
            if box.sessions.get(1) and box.sessions[1].started.is_set():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        sessions = json.loads((await run("sessions", "list", "--json")).stdout)
        result = await run("remote", "stop", "CP1", "--session", str(sessions[0]["id"]))
        assert result.returncode == 0
        result = await run("remote", "unlock", "CP1", "--connector", "9")
        assert result.returncode == 4  # the station refused: no such connector
        result = await run("remote", "clear-cache", "CP2", "--expires", "10m")
        assert result.returncode == 0 and "queued" in result.stdout  # CP2 is offline
        queued = json.loads((await run("commands", "list", "--json")).stdout)
        assert [(c["station"], c["command"], c["status"]) for c in queued] == [
            ("CP2", "clear-cache", "pending")]
        result = await run("remote", "clear-cache", "NOPE")
        assert result.returncode == 2 and "no station" in result.stderr
        result = await run("remote", "config-get", "CP1", "NoDotHere")
        assert result.returncode == 2 and "Component.Variable" in result.stderr
        for _ in range(100):
            done = json.loads((await run("sessions", "list", "--json")).stdout)
            if done[0]["ended"]:
                break
            await asyncio.sleep(0.1)
        assert done[0]["status"] == "completed" and done[0]["stop_reason"] == "Remote"
    finally:
        await close_wallbox(box, reader)


def test_remote_call_payload_must_be_a_json_object(tmp_path):
    db = tmp_path / "never.db"
    for payload in ("{nope", "[1]"):
        result = cocharge("remote", "call", "CP1", "Reset", payload, db=str(db), init=False)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "PAYLOAD" in result.stderr
    assert not db.exists()


def test_logs_commands_explain_what_is_missing(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("station", "add", "CP1", db=db).returncode == 0
    listed = cocharge("logs", "list", db=db)
    assert listed.returncode == 0
    missing = cocharge("logs", "save", "99", str(tmp_path / "out.log"), db=db)
    assert missing.returncode == 2 and "no request 99" in missing.stderr
    assert missing.stderr.count("\n") == 1 and not (tmp_path / "out.log").exists()


def test_firmware_campaign_from_the_cli(tmp_path):
    db = str(tmp_path / "c.db")
    for sid in ("CP1", "CP2"):
        assert cocharge("station", "add", sid, db=db).returncode == 0
    image = tmp_path / "box-2.0.0.bin"
    image.write_bytes(b"2.0.0")
    added = cocharge("firmware", "add", str(image), "--version", "2.0.0", db=db)
    assert added.returncode == 0 and "firmware file 1" in added.stdout
    started = cocharge("firmware", "campaign", "--file", "1", "--version", "2.0.0",
                       "--station", "CP1", "--at-once", "1", db=db)
    assert started.returncode == 0 and "1 station(s)" in started.stdout
    shown = cocharge("firmware", "status", db=db)
    assert shown.returncode == 0 and "CP1" in shown.stdout and "pending" in shown.stdout
    refused = cocharge("firmware", "campaign", "--version", "2.0.0", db=db)
    assert refused.returncode == 2 and "one" in refused.stderr


async def test_device_management_commands_from_the_cli(served):
    """Monitoring, reports, customer information and network profiles as an operator types
    them, and what they leave to read back."""
    import asyncio

    db, url, _ = served
    box, reader = await open_wallbox(SimConfig(url=url, station_id="CP1", protocol="2.0.1",
                                               speed=300, meter_interval_s=0.1))
    try:
        run = lambda *a: asyncio.to_thread(cocharge, *a, db=db)
        result = await run("remote", "set-variable-monitoring", "CP1", "EVSE.Power", "--type",
                            "UpperThreshold", "--value", "7400", "--evse", "1", "--severity", "3")
        assert result.returncode == 0 and "Accepted" in result.stdout, result.stderr
        [monitor] = json.loads((await run("station", "monitors", "CP1", "--json")).stdout)
        assert (monitor["variable"], monitor["value"], monitor["severity"]) == ("Power", "7400", 3)
        shown = await run("station", "monitors", "CP1")
        assert "UpperThreshold" in shown.stdout and "7400" in shown.stdout
        result = await run("remote", "clear-variable-monitoring", "CP1", str(monitor["id"]))
        assert result.returncode == 0 and box.monitors == {}
        assert json.loads((await run("station", "monitors", "CP1", "--json")).stdout) == []
        result = await run("remote", "get-report", "CP1", "--component-variable", "EVSE")
        assert result.returncode == 0 and "requestId" in result.stdout
        for _ in range(100):
            found = json.loads((await run("station", "variables", "CP1", "--json")).stdout)
            if found:
                break
            await asyncio.sleep(0.1)
        assert {v["component"] for v in found} == {"EVSE"}
        result = await run("remote", "set-network-profile", "CP1", "--configuration-slot", "1",
                           "--ocpp-csms-url", "wss://csms.example.org/ocpp/",
                           "--security-profile", "2")
        assert result.returncode == 0 and box.network_profiles[1]["security_profile"] == 2
        result = await run("remote", "customer-information", "CP1", "--member", "TAG1")
        assert result.returncode == 0, result.stderr
        for _ in range(100):
            told = json.loads((await run("station", "events", "CP1", "--kind",
                                         "customer_information", "--json")).stdout)
            if told:
                break
            await asyncio.sleep(0.1)
        assert "no data held for TAG1" in told[0]["details"]["data"]
        kept = json.loads((await run("station", "events", "CP1", "--kind", "command",
                                     "--json")).stdout)
        assert [k["details"]["command"] for k in reversed(kept)] == [
            "set-variable-monitoring", "clear-variable-monitoring", "get-report",
            "set-network-profile", "customer-information"]
    finally:
        await close_wallbox(box, reader)


def test_a_signed_image_is_checked_when_it_is_stored(tmp_path):
    from tests.gateway.test_device_management import sign, signing_pair

    db = str(tmp_path / "c.db")
    assert cocharge("station", "add", "CP1", db=db).returncode == 0
    key, certificate = signing_pair()
    (tmp_path / "signer.pem").write_text(certificate)
    image = tmp_path / "fw.bin"
    image.write_bytes(b"5.0.0")
    (tmp_path / "fw.sig").write_text(sign(key, b"5.0.0"))
    added = cocharge("firmware", "add", str(image), "--version", "5.0.0", "--signature",
                     str(tmp_path / "fw.sig"), "--signing-certificate",
                     str(tmp_path / "signer.pem"), db=db)
    assert added.returncode == 0 and "signed" in added.stdout, added.stderr
    image.write_bytes(b"5.0.1")  # not what was signed
    refused = cocharge("firmware", "add", str(image), "--version", "5.0.1", "--signature",
                       str(tmp_path / "fw.sig"), "--signing-certificate",
                       str(tmp_path / "signer.pem"), db=db)
    assert refused.returncode == 2 and "does not match" in refused.stderr
    assert refused.stderr.count("\n") == 1


@pytest.mark.parametrize("args,message", [
    (["remote", "set-variables", "CP1", "HeartbeatInterval"], "Component.Variable=value"),
    (["remote", "set-network-profile", "CP1", "--configuration-slot", "1", "--ocpp-csms-url",
      "ws://gw/ocpp", "--security-profile", "2"], "must be wss://"),
    (["remote", "customer-information", "CP1"], "--member TAG, --customer-identifier"),
    (["remote", "update-firmware", "CP1"], "--location URL or --file ID"),
    (["remote", "update-firmware", "CP1", "--location", "http://x/fw", "--signature", "AAAA"],
     "needs both --signature and --signing-certificate"),
    (["remote", "set-variable-monitoring", "CP1", "Power", "--type", "Delta", "--value", "1"],
     "Component.Variable"),
    (["station", "rotate-password", "CP1", "--password", "short"], "16 to 40 printable"),
    (["serve", "--upload-url", "ftp://gw:21"], "http:// or https://"),
    (["serve", "--require-password", "--auto-register"], "cannot go with --require-password"),
    (["serve", "--tls-port", "9443"], "give --tls-cert and --tls-key"),
    (["serve", "--ca-dir", "ca"], "need TLS"),
    (["station", "security-profile", "CP1", "3", "--url", "ws://gw/ocpp"], "wss://"),
    (["station", "revoke-certificate", "xyz"], "not a serial number"),
    (["remote", "cost-updated", "CP1", "--session", "1", "--total-cost", "1.234"], "CNY"),
    (["remote", "set-display-message", "CP1", "--id", "1", "--text", "x" * 513], "512"),
    (["remote", "set-display-message", "CP1", "--id", "1", "--text", "x", "--from", "soon"],
     "ISO 8601"),
    (["remote", "delete-certificate", "CP1", "--serial-number", "1"], "name the certificate"),
    (["member", "add", "Ann", "--tag", "#KEY"], "cannot begin with '#'"),
    (["member", "add", "Ann", "--tag", "A1", "--household", "h" * 21], "up to 20"),
])
def test_bad_options_of_the_new_commands_write_nothing(tmp_path, args, message):
    db = tmp_path / "never.db"
    result = cocharge(*args, db=str(db), init=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr and not db.exists()


def test_the_operators_ca_from_the_cli(tmp_path):
    """`cocharge ca`: created once, its key private, shown, rotated (the old one still
    trusted until forgotten), a server certificate for `serve`; mistakes exit 2."""
    import os
    import stat

    run = [sys.executable, "-m", "cocharge.cli", "ca"]
    where = ["--dir", str(tmp_path / "ca")]

    def ca(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*run, *args], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)

    missing = ca("show", *where)
    assert missing.returncode == 2 and "cocharge ca init" in missing.stderr
    assert not (tmp_path / "ca").exists()
    nameless = ca("init", *where)
    assert nameless.returncode == 2 and "--org" in nameless.stderr
    made = ca("init", *where, "--org", "Neighbours Ltd", "--json")
    assert made.returncode == 0, made.stderr
    first = json.loads(made.stdout)
    assert first["organisation"] == "Neighbours Ltd" and not first["key_encrypted"]
    assert stat.S_IMODE(os.stat(tmp_path / "ca" / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ca").st_mode) == 0o700
    again = ca("init", *where, "--org", "X")
    assert again.returncode == 2 and "holds a CA already" in again.stderr
    rotated = json.loads(ca("rotate", *where, "--json").stdout)
    assert rotated["fingerprint"] != first["fingerprint"]
    assert first["fingerprint"][:16] in rotated["trusted"] and len(rotated["trusted"]) == 2
    forgot = ca("forget", *where, first["fingerprint"][:16])
    assert forgot.returncode == 0, forgot.stderr
    assert json.loads(ca("show", *where, "--json").stdout)["trusted"] == [
        rotated["fingerprint"][:16]]
    served = ca("server-cert", *where, "--host", "gw.example.org", "--cert-out",
                str(tmp_path / "s.pem"), "--key-out", str(tmp_path / "s.key"))
    assert served.returncode == 0, served.stderr
    assert "--tls-rsa-cert" in served.stdout
    for key in ("s.key", "s-rsa.key"):
        assert stat.S_IMODE(os.stat(tmp_path / key).st_mode) == 0o600
    assert b"BEGIN CERTIFICATE" in (tmp_path / "s-rsa.pem").read_bytes()
    twice = ca("server-cert", *where, "--host", "gw", "--cert-out", str(tmp_path / "s.pem"),
               "--key-out", str(tmp_path / "t.key"))
    assert twice.returncode == 2 and "exists" in twice.stderr
    os.chmod(tmp_path / "ca" / "ca.key", 0o644)
    loose = ca("show", *where)
    assert loose.returncode == 2 and "chmod 600" in loose.stderr
    os.chmod(tmp_path / "ca" / "ca.key", 0o600)
    # With a passphrase, the key is stored encrypted and unreadable without it.
    env = {**os.environ, "COCHARGE_CA_PASSPHRASE": "a long passphrase"}
    sealed = subprocess.run([*run, "init", "--dir", str(tmp_path / "ca2"), "--org", "N",
                             "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(sealed.stdout)["key_encrypted"] is True
    locked = ca("show", "--dir", str(tmp_path / "ca2"))
    assert locked.returncode == 2 and "COCHARGE_CA_PASSPHRASE" in locked.stderr
