"""Password guessing throttled, per station and per address; stations without a password."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cocharge.node import running_node
from cocharge.stations import registry
from tests.conftest import raw_station, settings, until, ws_url

FAST: dict[str, Any] = {"auth_delay_s": 0.02, "auth_delay_max_s": 0.05, "auth_station_free": 2,
                        "auth_station_lockout": 6, "auth_address_free": 20,
                        "auth_address_lockout": 40, "auth_lockout_s": 60.0,
                        "auth_tarpit_s": 0.1}


def basic(station_id: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def attempt(node: Any, station_id: str, password: str) -> tuple[int, Any]:
    """HTTP status of one connection attempt (101 when admitted) and the answer's headers."""
    try:
        websocket = await connect(f"{ws_url(node)}/{station_id}", subprotocols=["ocpp1.6"],
                                  additional_headers=basic(station_id, password))
    except InvalidStatus as refused:
        return refused.response.status_code, refused.response.headers
    await websocket.close()
    return 101, {}


async def guess_until_locked(node: Any, station_id: str, guesses: int) -> list[int]:
    """Distinct wrong passwords, each sent as soon as the gateway will check it."""
    statuses = []
    for n in range(guesses):
        while True:
            status, headers = await attempt(node, station_id, f"guess-{n:04d}")
            statuses.append(status)
            if status != 429:
                break
            if float(headers["Retry-After"]) > 5:
                return statuses  # locked out
            await asyncio.sleep(0.03)
    return statuses


@pytest.fixture
async def fast_node(sqlite_url: str):
    async with running_node(sqlite_url, settings(**FAST)) as node:
        yield node


async def test_distinct_wrong_passwords_slow_down_then_lock_out(fast_node):
    node = fast_node
    await registry.add_station(node.engine, registry.NewStation("SEC", password="right-password-1"))
    await registry.add_station(node.engine, registry.NewStation("NEVER", password="right-password-2"))
    # The real charger connected before the guessing began.
    assert (await attempt(node, "SEC", "right-password-1"))[0] == 101
    statuses = await guess_until_locked(node, "SEC", 30)
    assert statuses[:2] == [401, 401]           # the free ones: answered at once
    assert 429 in statuses[2:]                  # then delayed
    assert statuses.count(401) == FAST["auth_station_lockout"]  # checked until the lockout
    status, headers = await attempt(node, "SEC", "another-guess")
    assert status == 429 and int(headers["Retry-After"]) > 50
    # Not even the right password is checked now, except the one verified before.
    assert (await attempt(node, "SEC", "right-password-1"))[0] == 101
    events = await registry.list_station_events(node.engine, "SEC", "auth_lockout")
    assert events and events[0]["details"]["scope"] == "station"
    assert events[0]["details"]["failures"] == FAST["auth_station_lockout"]
    # Another station is not affected by SEC's lockout.
    assert (await attempt(node, "NEVER", "right-password-2"))[0] == 101


async def test_one_address_guessing_many_stations_is_locked_out(fast_node):
    node = fast_node
    for n in range(12):
        await registry.add_station(node.engine, registry.NewStation(f"S{n}", password=f"pw-{n}-right"))
    assert (await attempt(node, "S11", "pw-11-right"))[0] == 101
    statuses = []
    for n in range(11):  # 4 distinct guesses at each station: below its own lockout of 6
        for g in range(4):
            while True:
                status, headers = await attempt(node, f"S{n}", f"guess-{g}")
                statuses.append(status)
                if status != 429 or float(headers["Retry-After"]) > 5:
                    break
                await asyncio.sleep(0.03)
            if status == 429:
                break
        if status == 429:
            break
    assert statuses[-1] == 429 and statuses.count(401) == FAST["auth_address_lockout"]
    # The address is locked out: even a station's right password is not checked ...
    assert (await attempt(node, "S10", "pw-10-right"))[0] == 429
    # ... unless it was verified before.
    assert (await attempt(node, "S11", "pw-11-right"))[0] == 101
    kinds = [e["details"]["scope"] for n in range(11)
             for e in await registry.list_station_events(node.engine, f"S{n}", "auth_lockout")]
    assert kinds == ["address"]


async def test_a_charger_retrying_the_same_wrong_password_is_not_locked_out(fast_node):
    node = fast_node
    await registry.add_station(node.engine, registry.NewStation("SAME", password="right-password"))
    statuses = [(await attempt(node, "SAME", "typo-password"))[0] for _ in range(25)]
    assert statuses == [401] * 25


async def test_a_changed_password_does_not_lock_out_the_charger_retrying_the_old_one(fast_node):
    node = fast_node
    await registry.add_station(node.engine, registry.NewStation("ROT", password="old-password-1"))
    assert (await attempt(node, "ROT", "old-password-1"))[0] == 101
    await registry.update_station(node.engine, "ROT", password="new-password-1")
    await node.gateway.service.directory.refresh()  # what the gateway does every 30 s
    statuses = [(await attempt(node, "ROT", "old-password-1"))[0] for _ in range(20)]
    assert statuses == [401] * 20
    assert (await attempt(node, "ROT", "new-password-1"))[0] == 101
    assert await registry.list_station_events(node.engine, "ROT", "auth_lockout") == []


async def test_require_password_refuses_stations_without_one(sqlite_url):
    async with running_node(sqlite_url, settings(require_password=True)) as node:
        await registry.add_station(node.engine, registry.NewStation("OPEN"))
        await registry.add_station(node.engine, registry.NewStation("SHUT", password="a-password"))
        with pytest.raises(InvalidStatus) as refused:
            await raw_station(node, "OPEN")
        assert refused.value.response.status_code == 401
        assert b"requires one" in refused.value.response.body
        station = await raw_station(node, "SHUT", additional_headers=basic("SHUT", "a-password"))
        assert (await station.call("Heartbeat", {}))[0] == 3


async def test_a_live_station_without_a_password_is_not_taken_over(node):
    await registry.add_station(node.engine, registry.NewStation("OPEN"))
    real = await raw_station(node, "OPEN")
    with pytest.raises(InvalidStatus) as refused:
        await raw_station(node, "OPEN")
    assert refused.value.response.status_code == 409
    assert (await real.call("Heartbeat", {}))[0] == 3   # the real charger kept its place
    assert len(await registry.list_station_events(node.engine, "OPEN", "takeover_refused")) == 1
    await real.ws.close()

    async def gone() -> bool:
        return node.gateway.connection("OPEN") is None

    await until(gone, 10)
    again = await raw_station(node, "OPEN")             # once it is gone, it may reconnect
    assert (await again.call("Heartbeat", {}))[0] == 3


async def silent_connection(node: Any, station_id: str) -> tuple[Any, Any]:
    """A WebSocket handshake, then nothing: a charger whose link died without a FIN."""
    host, port = "127.0.0.1", node.gateway.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write((f"GET /ocpp/{station_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")

    async def served() -> bool:  # the 101 is written before the connection is registered
        return node.gateway.connection(station_id) is not None

    await until(served, 10)
    return reader, writer


async def test_a_dead_connection_of_a_station_without_a_password_is_replaced(sqlite_url):
    async with running_node(sqlite_url, settings(takeover_ping_s=0.3)) as node:
        await registry.add_station(node.engine, registry.NewStation("OPEN"))
        _, writer = await silent_connection(node, "OPEN")
        writer.transport.pause_reading()  # it reads nothing more, answers no ping
        station = await raw_station(node, "OPEN")
        assert (await station.call("Heartbeat", {}))[0] == 3
        writer.close()


async def test_allow_takeover_lets_a_second_connection_replace_the_first(sqlite_url):
    async with running_node(sqlite_url, settings(allow_takeover=True)) as node:
        await registry.add_station(node.engine, registry.NewStation("OPEN"))
        first = await raw_station(node, "OPEN")
        second = await raw_station(node, "OPEN")
        with pytest.raises(ConnectionClosed):
            await first.ws.recv()
        assert (await second.call("Heartbeat", {}))[0] == 3


async def test_fifty_chargers_behind_one_address_all_get_in_after_a_power_cut(sqlite_url):
    """A garage's 50 chargers reach the gateway through one NAT address and reconnect at
    once, each with its right password: they wait in line for scrypt, none gets a 429. A
    guesser from another address meanwhile is still throttled."""
    async with running_node(sqlite_url, settings(**FAST)) as node:
        ids = [f"NAT{n:02d}" for n in range(50)]
        for sid in ids:
            await registry.add_station(node.engine, registry.NewStation(sid, password=f"pw-{sid}-ok"))
        statuses = await asyncio.gather(*(attempt(node, sid, f"pw-{sid}-ok") for sid in ids))
        assert [s for s, _ in statuses] == [101] * 50
        guesses = await guess_until_locked(node, "NAT00", FAST["auth_station_lockout"] + 1)
        assert 429 in guesses
