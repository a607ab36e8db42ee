"""The simulator behaves like a well-made charger: it honours Retry-After when the gateway is
busy, connects again after the gateway restarts, and charges within its hardware's maximum."""

from __future__ import annotations

import asyncio

from cocharge.node import running_node
from cocharge.simulators.fleet import run_fleet
from cocharge.stations import registry
from tests.conftest import settings, until, ws_url


async def test_a_busy_gateways_503_is_retried_after_its_retry_after(sqlite_url):
    """One handshake and one password check at a time: six wallboxes starting together are
    told 503 Retry-After: 1 and all come in, each charging its session."""
    async with running_node(sqlite_url, settings(max_handshakes=1, password_checks_at_once=1,
                                                 retry_after_s=1)) as node:
        for n in range(1, 7):
            await registry.add_station(node.engine, registry.NewStation(
                f"RA{n:04d}", password="a-long-secret-16", max_power_kw=11))
        await registry.add_member(node.engine, "Ann", "ANN", None)
        done = await asyncio.wait_for(run_fleet(ws_url(node), 6, "1.6", "RA", "ANN", 1, 300, 300,
                                                "a-long-secret-16"), 60)
        assert done == 6
        assert node.gateway.refused_busy > 0  # the retries were needed
        rows = await registry.list_sessions(node.engine)
        assert len(rows) == 6 and {r["status"] for r in rows} == {"completed"}


async def test_staying_wallboxes_connect_again_after_the_gateway_restarts(sqlite_url):
    first = settings()
    async with running_node(sqlite_url, first) as node:
        for n in range(1, 3):
            await registry.add_station(node.engine, registry.NewStation(f"ST{n:04d}"))
        await registry.add_member(node.engine, "Ann", "ANN", None)
        port = node.gateway.port
        leave = asyncio.Event()
        fleet = asyncio.create_task(run_fleet(ws_url(node), 2, "2.0.1", "ST", "ANN", 1, 200, 300,
                                              stay=leave))

        async def both_online(gateway=node.gateway) -> bool:
            return {"ST0001", "ST0002"} <= set(gateway.connections)

        await until(both_online, 30)
        await until(lambda: _sessions_done(node, 2), 30)
    # The gateway is gone; the wallboxes try again, with growing delays, until it is back.
    async with running_node(sqlite_url, settings(port=port)) as again:
        await until(lambda: _online(again, "ST0001", "ST0002"), 30)
        leave.set()
        assert await asyncio.wait_for(fleet, 10) == 2


async def _sessions_done(node, count: int) -> bool:
    rows = await registry.list_sessions(node.engine)
    return len([r for r in rows if r["status"] == "completed"]) >= count


async def _online(node, *ids: str) -> bool:
    return set(ids) <= set(node.gateway.connections)


async def test_a_wallbox_charges_within_its_maximum_so_a_7_kw_station_bills(sqlite_url):
    async with running_node(sqlite_url, settings()) as node:
        await registry.add_station(node.engine, registry.NewStation("MX0001", max_power_kw=7))
        await registry.add_member(node.engine, "Ann", "ANN", None)
        done = await asyncio.wait_for(run_fleet(ws_url(node), 1, "1.6", "MX", "ANN", 1, 3000, 300,
                                                max_power_w=7000), 60)
        assert done == 1
        [row] = await registry.list_sessions(node.engine, "MX0001")
        assert row["status"] == "completed", row["flag_reason"]
        await node.gateway.settler.drain()
