"""Behind a load balancer (issue 32 item 4): the charger's real address from a trusted
proxy's PROXY header (v2 and v1) or X-Forwarded-For, for password throttling and the frame
log; nobody else can claim an address. Through a real HAProxy (Debian package) in TCP mode
with `send-proxy-v2`, the chargers coming from 127.0.0.2 and 127.0.0.3 are told apart."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidStatus

from cocharge.gateway.proxy import (
    V2_SIGNATURE,
    ProxyHeaderError,
    forwarded_for,
    parse_networks,
    read_header,
)
from cocharge.node import Node, running_node
from cocharge.stations import registry
from cocharge.store.frames import read_frames
from tests.conftest import apt_install, free_port, settings, until


def v2_header(host: str, port: int, local: bool = False) -> bytes:
    address = ipaddress.ip_address(host)
    if address.version == 4:
        body = address.packed + ipaddress.IPv4Address("10.0.0.1").packed + struct.pack(
            "!HH", port, 9000)
        family = 0x11
    else:
        body = address.packed + ipaddress.IPv6Address("::1").packed + struct.pack(
            "!HH", port, 9000)
        family = 0x21
    return V2_SIGNATURE + bytes([0x20 if local else 0x21, family]) + struct.pack(
        "!H", len(body)) + body


def test_proxy_headers_are_read_exactly_or_refused():
    assert read_header(v2_header("203.0.113.7", 4711) + b"GET /") == (
        ("203.0.113.7", 4711), 28)
    assert read_header(v2_header("2001:db8::5", 80))[0] == ("2001:db8::5", 80)
    assert read_header(v2_header("203.0.113.7", 1, local=True)) == (None, 28)
    assert read_header(v2_header("203.0.113.7", 4711)[:20]) is None  # more bytes needed
    assert read_header(b"PROXY TCP4 198.51.100.2 10.0.0.1 5555 9000\r\nGET") == (
        ("198.51.100.2", 5555), 44)
    assert read_header(b"PROXY UNKNOWN\r\n") == (None, 15)
    assert read_header(b"PROXY TCP4 198.51") is None
    assert read_header(b"GET / HTTP/1.1\r\n") is None  # no header at all
    for bad in (b"PROXY TCP4 nonsense 10.0.0.1 1 2\r\n", b"PROXY TCP9 a b c d\r\n",
                V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),
                V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), b"PROXY " + b"x" * 120):
        with pytest.raises(ProxyHeaderError):
            read_header(bad)
    trusted = parse_networks("127.0.0.1, 10.1.0.0/16")
    headers = Headers([("X-Forwarded-For", "1.2.3.4, 198.51.100.9"),
                       ("X-Forwarded-For", "10.1.2.3")])
    assert forwarded_for(headers, trusted) == "198.51.100.9"  # the last hop not ours
    assert forwarded_for(Headers([("X-Forwarded-For", "junk")]), trusted) is None
    with pytest.raises(ValueError, match="'10.0.0.300' is not an address or network"):
        parse_networks("10.0.0.300")


@pytest.fixture
async def node(sqlite_url: str) -> AsyncIterator[Node]:
    async with running_node(sqlite_url, settings(trusted_proxies="127.0.0.1",
                                                 frame_log_flush_s=0.05)) as running:
        await registry.add_station(running.engine, registry.NewStation("PX1", password="right"))
        yield running


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"PX1:{password}".encode()).decode()}


async def through(port: int, header: bytes, password: str = "right",
                  source: str = "127.0.0.1", **headers: str) -> Any:
    """A station's connection that starts with `header` (what a balancer would send)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    if header:
        await asyncio.get_running_loop().sock_sendall(sock, header)
    return await connect(f"ws://127.0.0.1:{port}/ocpp/PX1", sock=sock, subprotocols=["ocpp1.6"],
                         additional_headers={**basic(password), **headers}, open_timeout=5)


async def connected_from(node: Node) -> list[str]:
    async with node.engine.connect() as conn:
        kept = await read_frames(conn, "PX1")
    return [f.frame.rsplit(" from ", 1)[1] for f in kept
            if f.direction == "note" and f.frame.startswith("connected")]


async def test_a_trusted_proxys_header_names_the_station(node):
    port = node.gateway.port
    async with await through(port, v2_header("203.0.113.7", 4711)):
        pass
    async with await through(port, b"PROXY TCP4 198.51.100.2 10.0.0.1 5555 9000\r\n"):
        pass
    async with await through(port, b"", **{"X-Forwarded-For": "192.0.2.44"}):
        pass
    async with await through(port, v2_header("203.0.113.7", 1, local=True)):
        pass  # the balancer's own check: its address
    seen = await until(lambda: connected_from_all(node, 4))
    assert seen == ["203.0.113.7", "198.51.100.2", "192.0.2.44", "127.0.0.1"]
    # Wrong passwords count against the station's address, not the balancer's.
    with pytest.raises(InvalidStatus):
        await through(port, v2_header("203.0.113.99", 1), password="wrong")
    assert "203.0.113.99" in node.gateway.guard._tallies["address"]
    assert "127.0.0.1" not in node.gateway.guard._tallies["address"]


async def connected_from_all(node: Node, n: int) -> list[str] | None:
    seen = await connected_from(node)
    return seen if len(seen) >= n else None


async def test_nobody_else_can_claim_an_address(sqlite_url):
    async with running_node(sqlite_url, settings(trusted_proxies="10.9.9.9",
                                                 frame_log_flush_s=0.05)) as node:
        await registry.add_station(node.engine, registry.NewStation("PX1", password="right"))
        with pytest.raises((InvalidHandshake, OSError, EOFError, TimeoutError)):
            await through(node.gateway.port, v2_header("203.0.113.7", 1))
        async with await through(node.gateway.port, b"", **{"X-Forwarded-For": "192.0.2.44"}):
            pass  # served, but its own address counts
        assert await until(lambda: connected_from(node)) == ["127.0.0.1"]


# --- through a real HAProxy --------------------------------------------------------------

def _haproxy() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists(
        "/usr/sbin/haproxy") else None)
    if found is None:
        apt_install("haproxy")
        found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    return found


@pytest.fixture
def haproxy_in_front(node: Node) -> Iterator[int]:
    port = free_port()
    folder = tempfile.mkdtemp(prefix="cocharge-haproxy-")
    config = os.path.join(folder, "haproxy.cfg")
    with open(config, "w") as handle:
        handle.write(f"""global
    maxconn 1000
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend ocpp
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    server node1 127.0.0.1:{node.gateway.port} send-proxy-v2
""")
    process = subprocess.Popen([_haproxy(), "-f", config, "-db"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"haproxy did not start: {process.stderr.read()!r}")
                import time
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


async def test_through_haproxy_each_charger_keeps_its_own_address(node, haproxy_in_front):
    async with await through(haproxy_in_front, b"", source="127.0.0.2"):
        pass
    # A neighbour guessing passwords behind the same balancer is throttled alone.
    for _ in range(3):
        with pytest.raises(InvalidStatus):
            await through(haproxy_in_front, b"", password="guess", source="127.0.0.3")
    assert set(node.gateway.guard._tallies["address"]) == {"127.0.0.3"}
    assert (await until(lambda: connected_from(node)))[0] == "127.0.0.2"


def shipped_balancer(port: int, live: tuple[int, int], dead: tuple[int, int]) -> str:
    """deploy/haproxy.cfg with this machine's addresses: node1 the running node, node2 a
    node that died (nothing listens), each (its port, its health port); checks every 100 ms
    with 300 ms to answer, instead of every 2 s with 4 s."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "deploy", "haproxy.cfg"), encoding="utf-8") as handle:
        config = handle.read()
    for shipped, here in ((" maxconn 50000", " maxconn 1000"),
                          ("bind :9000", f"bind 127.0.0.1:{port}"),
                          ("server node1 node1:9000", f"server node1 127.0.0.1:{live[0]} "
                                                      f"port {live[1]}"),
                          ("server node2 node2:9000", f"server node2 127.0.0.1:{dead[0]} "
                                                      f"port {dead[1]}"),
                          ("inter 2s fall 3", "inter 100ms fall 1"),
                          ("timeout check 4s", "timeout check 300ms")):
        assert shipped in config, shipped
        config = config.replace(shipped, here)
    return config


async def test_the_balancer_still_passes_chargers_when_every_check_fails(node, tmp_path):
    """The node left after a failure, busy taking over the dead one's chargers, can answer
    its health check late, and HAProxy takes every node out of rotation. The shipped
    configuration then sends chargers to the nodes that still accept a connection (the busy
    one, not the dead one): the charger reaches the live node, with its own address."""
    port = free_port()
    busy = socket.socket()  # the live node's health port: accepts, never answers
    busy.bind(("127.0.0.1", 0))
    busy.listen(100)
    config = tmp_path / "haproxy.cfg"
    config.write_text(shipped_balancer(port, (node.gateway.port, busy.getsockname()[1]),
                                       (free_port(), free_port())))
    process = subprocess.Popen([_haproxy(), "-f", str(config), "-db"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def every_node_down() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                if "backend 'gateway_nodes' has no server available" in line:
                    return
            raise AssertionError("haproxy stopped before it took the nodes out of rotation")

        await asyncio.wait_for(asyncio.to_thread(every_node_down), 20)
        for _ in range(4):  # leastconn would pick the dead node (no connections) every time
            async with await through(port, b"", source="127.0.0.2"):
                pass
        assert set(await until(lambda: connected_from(node))) == {"127.0.0.2"}
    finally:
        process.terminate()
        process.wait(10)
        busy.close()
