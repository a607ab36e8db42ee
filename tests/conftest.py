"""Fixtures: a real gateway on a free port over real SQLite or a throwaway PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg

# Imported here, at a shallow stack: loaded lazily at session end (its pytest plugin does
# that when no test imported it), CPython 3.11 can fail to compile it with "AST
# constructor recursion depth mismatch" and the run exits non-zero after passing.
import hypothesis  # noqa: F401
import pytest
from websockets.asyncio.client import connect

from cocharge.config import GatewaySettings
from cocharge.node import Node, running_node
from cocharge.stations import registry

PG_DSN = os.environ.get("COCHARGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """One test worker at a time, across processes (pytest-xdist), e.g. for `apt-get install`
    or starting a server that every worker shares."""
    with open(os.path.join(tempfile.gettempdir(), f"cocharge-tests-{name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def apt_install(*packages: str) -> None:
    """Install Debian packages on a fresh machine (the tests never skip a missing server)."""
    with machine_lock("apt"):
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _pg_reachable() -> bool:
    where = urlsplit(PG_DSN)
    try:
        socket.create_connection((where.hostname or "127.0.0.1", where.port or 5432), 2).close()
    except OSError:
        return False
    return True


def _ensure_postgres() -> None:
    """Start (or, on a fresh machine, install) PostgreSQL once for every worker; the tests
    never skip it."""
    if _pg_reachable():
        return
    with machine_lock("postgresql"):
        if not _pg_reachable():
            _start_postgres()
    if not _pg_reachable():
        raise RuntimeError(f"PostgreSQL is not reachable at {PG_DSN} and could not be started")


def _start_postgres() -> None:
    if not shutil.which("pg_ctlcluster"):
        apt_install("postgresql")
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    for version in versions:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                       check=False)
    deadline = time.monotonic() + 30
    while not _pg_reachable() and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    _ensure_postgres()
    return PG_DSN


def _mosquitto_binary() -> str:
    """The mosquitto broker; on a fresh machine, install the Debian package (never skip)."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)
    if found is None:
        apt_install("mosquitto")
        found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A throwaway Mosquitto on its own port (anonymous, no persistence)."""

    def __init__(self, port: int | None = None, users: dict[str, str] | None = None,
                 acl: str | None = None) -> None:
        self.port = port or free_port()
        # Mosquitto started as root reads its files as the `mosquitto` user: a folder it may
        # enter (pytest's tmp_path is private), removed when the broker stops.
        folder = self.folder = tempfile.mkdtemp(prefix="cocharge-mosquitto-")
        os.chmod(folder, 0o755)
        self.config = os.path.join(str(folder), f"mosquitto-{self.port}.conf")
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr"]
        if users:
            passwd = os.path.join(str(folder), f"passwd-{self.port}")
            for n, (user, password) in enumerate(users.items()):
                subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b",
                                *(["-c"] if n == 0 else []), passwd, user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            acl_path = os.path.join(str(folder), f"acl-{self.port}")
            with open(acl_path, "w") as f:
                f.write(acl)
            lines.append(f"acl_file {acl_path}")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = os.path.join(self.folder, f"mosquitto-{self.port}.log")
        with open(log, "w") as out:
            self.process = subprocess.Popen([_mosquitto_binary(), "-c", self.config],
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20  # a loaded machine (the suite runs in parallel)
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if self.process.poll() is not None:
                    break  # it stopped: its log says why (e.g. the port was taken)
                await asyncio.sleep(0.05)
        with open(log) as said:
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {said.read()[-500:]}")

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 10)
            self.process = None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    started = Broker()
    await started.start()
    yield started
    await started.stop()
    started.remove()


@contextlib.asynccontextmanager
async def throwaway_pg(dsn: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test (its SQLAlchemy URL), dropped afterwards."""
    name = f"cocharge_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base = dsn.rsplit("/", 1)[0]
    try:
        yield f"postgresql+asyncpg://{base.split('://', 1)[1]}/{name}"
    finally:
        admin = await asyncpg.connect(dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pg_url(postgres_server: str) -> AsyncIterator[str]:
    async with throwaway_pg(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "cocharge.db")
        return
    async with throwaway_pg(request.getfixturevalue("postgres_server")) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return str(tmp_path / "cocharge.db")


def settings(**overrides: Any) -> GatewaySettings:
    """A gateway on free ports. Its money check at the charger is off (start_minimum_fen=0),
    as an operator may choose: the tests of other features start sessions with members who
    have no wallet; tests/settlement/test_funds.py runs it as shipped. Chargers' clocks are
    believed 20 years back and a week ahead: tests replay sessions on fixed dates of 2026, and
    simulated wallboxes run fast clocks (speed=300); tests/gateway/test_clock.py runs the
    rule as shipped. 2.1 stations are not sent tariffs unasked (tariff_sync_s=0: the
    hand-written 2.1 stations of most tests answer only what they expect);
    tests/conformance/test_ocpp21_cost.py runs it as shipped."""
    base = dict(host="127.0.0.1", port=0, operator_port=0, upload_port=0, api_port=None,
                call_timeout_s=5.0, start_minimum_fen=0, clock_past_s=20 * 365 * 86400,
                clock_future_s=7 * 86400, tariff_sync_s=0)
    base.update(overrides)
    return GatewaySettings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def node(sqlite_url: str) -> AsyncIterator[Node]:
    async with running_node(sqlite_url, settings()) as running:
        yield running


@pytest.fixture
async def any_node(db_url: str) -> AsyncIterator[Node]:
    async with running_node(db_url, settings()) as running:
        yield running


def ws_url(node: Node) -> str:
    return f"ws://127.0.0.1:{node.gateway.port}/ocpp"


async def register(node: Node, *station_ids: str, tags: tuple[str, ...] = ("TAG1",),
                   max_power_kw: float | None = 22) -> None:
    for sid in station_ids:
        await registry.add_station(node.engine, registry.NewStation(sid, max_power_kw=max_power_kw))
    for tag in tags:
        await registry.add_member(node.engine, f"member {tag}", tag, None)


class RawStation:
    """A charger speaking hand-written OCPP-J frames: for exact replays and broken input."""

    def __init__(self, websocket: Any) -> None:
        self.ws = websocket
        self._n = 0

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        self._n += 1
        uid = f"m{self._n}"
        await self.ws.send(json.dumps([2, uid, action, payload]))
        return await self.answer()

    async def answer(self) -> list[Any]:
        async with asyncio.timeout(5):
            return list(json.loads(await self.ws.recv()))

    async def send_raw(self, text: str) -> list[Any]:
        await self.ws.send(text)
        return await self.answer()


async def raw_station(node: Node, station_id: str, protocol: str = "ocpp1.6",
                      boot: bool = True, **kwargs: Any) -> RawStation:
    websocket = await connect(f"{ws_url(node)}/{station_id}", subprotocols=[protocol],
                              compression=None, **kwargs)
    station = RawStation(websocket)
    if boot:
        if protocol == "ocpp1.6":
            await station.call("BootNotification", {"chargePointVendor": "raw",
                                                    "chargePointModel": "raw"})
        else:
            await station.call("BootNotification", {
                "chargingStation": {"vendorName": "raw", "model": "raw"}, "reason": "PowerUp"})
    return station


@contextlib.asynccontextmanager
async def simulated(node: Node, station_id: str, protocol: str = "1.6",
                    **config: Any) -> AsyncIterator[Any]:
    """A simulated wallbox connected to `node` for the block (fast clock), closed after."""
    from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox

    config.setdefault("speed", 300)
    box, reader = await open_wallbox(SimConfig(url=ws_url(node), station_id=station_id,
                                               protocol=protocol, **config))
    try:
        yield box
    finally:
        await close_wallbox(box, reader)


async def until(check: Any, timeout: float = 15.0) -> Any:
    """Poll `check()` (async) until it returns something true; that value (TimeoutError
    after `timeout` seconds)."""
    async with asyncio.timeout(timeout):
        while not (value := await check()):
            await asyncio.sleep(0.05)
        return value
