"""The configuration file: every gateway setting and the CLI's defaults, checked before use,
with the command line and the environment winning over it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest
from websockets.asyncio.client import connect

from cocharge.config import GatewaySettings
from tests.cli.test_cli import cocharge
from tests.cli.test_db_cli import one_line_error


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cocharge.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def test_config_check_prints_every_setting_and_where_it_came_from(tmp_path):
    conf = tmp_path / "cocharge.toml"
    conf.write_text('db = "%s"\n[gateway]\nheartbeat_interval_s = 120\n'
                    "[gateway.idle_fee]\nfen_per_minute = 80\n[cli]\nmax_amount_cny = 500\n"
                    % (tmp_path / "conf.db"))
    shown = json.loads(run("--config", str(conf), "config", "check", "--json").stdout)
    assert shown["gateway.heartbeat_interval_s"] == 120
    assert shown["gateway.idle_fee"]["fen_per_minute"] == 80
    assert shown["gateway.idle_fee"]["grace_s"] == GatewaySettings().idle_fee.grace_s
    assert shown["gateway.port"] == GatewaySettings().port  # a default
    fields = set(GatewaySettings.__dataclass_fields__)
    assert {k.split(".", 1)[1] for k in shown if k.startswith("gateway.")} == fields
    assert shown["db"] == str(tmp_path / "conf.db") and shown["cli.max_amount_cny"] == 500
    text = run("config", "check", env={"COCHARGE_CONFIG": str(conf)}).stdout
    assert "gateway.heartbeat_interval_s" in text and "120  (file)" in text
    # The file's database is used by every command; --db and COCHARGE_DB win over it.
    assert run("--config", str(conf), "db", "init").returncode == 0
    assert (tmp_path / "conf.db").exists()
    assert run("--config", str(conf), "member", "add", "Ann", "--tag", "T1").returncode == 0
    one_line_error(run("--config", str(conf), "wallet", "topup", "T1", "600", "--ref", "r"),
                   "500 CNY", "max_amount_cny")
    assert run("--config", str(conf), "wallet", "topup", "T1", "400", "--ref", "r").returncode == 0
    other = str(tmp_path / "other.db")
    one_line_error(run("--config", str(conf), "station", "list", "--db", other), other)
    one_line_error(run("--config", str(conf), "station", "list",
                       env={"COCHARGE_DB": other}), other)


@pytest.mark.parametrize("content, words", [
    ("[gateway]\nheartbeat_interval = 3\n", ["unknown setting gateway.heartbeat_interval",
                                             "did you mean gateway.heartbeat_interval_s"]),
    ("[gateway]\nport = \"9000\"\n", ["gateway.port must be an integer"]),
    ("[gateway]\nrequire_password = 1\n", ["true or false"]),
    ("[gateway\n", ["not valid TOML"]),
    ("dbb = \"x\"\n", ["unknown setting dbb", "did you mean db"]),
    ("[gateway.idle_fee]\ncap = 1\n", ["unknown setting gateway.idle_fee.cap"]),
    ("[cli]\nmax_amount_cny = -1\n", ["must be positive"]),
    ("[serve]\ntls_crt = \"x\"\n", ["unknown setting serve.tls_crt"]),
])
def test_a_bad_file_is_one_line_and_nothing_runs(tmp_path, content, words):
    conf = tmp_path / "bad.toml"
    conf.write_text(content)
    db = tmp_path / "c.db"
    one_line_error(run("--config", str(conf), "db", "init", "--db", str(db)), str(conf), *words)
    assert not db.exists()


def test_a_missing_file_is_one_line(tmp_path):
    one_line_error(run("--config", str(tmp_path / "nope.toml"), "config", "check"),
                   "no configuration file")


async def test_serve_runs_by_the_file_and_options_win(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("station", "add", "CP1", db=db).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "cocharge.toml"
    conf.write_text(f'db = "{db}"\n[gateway]\nhost = "127.0.0.1"\nport = {port}\n'
                    "operator_port = 0\nupload_port = 0\napi_port = 0\nheartbeat_interval_s = 100\n"
                    "interval_jitter = 0.0\n")

    async def interval(*options: str) -> int:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cocharge.cli", "--config", str(conf), "serve", *options,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            assert server.stdout is not None
            async with asyncio.timeout(30):
                while b"OCPP on" not in await server.stdout.readline():
                    pass
            async with connect(f"ws://127.0.0.1:{port}/ocpp/CP1",
                               subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
                await ws.send(json.dumps([2, "1", "BootNotification", {
                    "chargePointVendor": "v", "chargePointModel": "m"}]))
                return int(json.loads(await ws.recv())[2]["interval"])
        finally:
            server.terminate()
            await server.wait()

    assert await interval() == 100
    assert await interval("--heartbeat-interval", "250") == 250
