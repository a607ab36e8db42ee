"""Local authorization lists follow the sharing rules: a wallbox cut off from the network
admits the neighbours its owner shares with, and nobody else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from cocharge.gateway.operator_client import send_request
from cocharge.node import Node, running_node
from cocharge.stations import registry, sharing
from cocharge.store.db import utcnow
from cocharge.store.schema import local_lists, sessions
from tests.conftest import register, settings, simulated
from tests.stations.test_sharing_control import until

PROTOCOLS = ["1.6", "2.0.1", "2.1"]


@pytest.fixture
async def node(sqlite_url: str) -> AsyncIterator[Node]:
    async with running_node(sqlite_url, settings(control_interval_s=0.2,
                                                 local_list_sync_s=0.3)) as running:
        yield running


async def shared_wallbox(node: Node, protocol: str) -> None:
    await register(node, "HOME", tags=("OWNER", "NEIGHBOUR", "STRANGER", "GONE"),
                   max_power_kw=11)
    later = utcnow().replace(microsecond=0) + timedelta(days=30)
    await registry.add_member(node.engine, "Lease ends", "LEASE", None, expires_at=later)
    await sharing.set_rules(node.engine, "HOME", 0, {
        "owner_tags": frozenset({"OWNER"}),
        "allowed_tags": frozenset({"NEIGHBOUR", "GONE", "LEASE"})})
    await registry.block_member(node.engine, "GONE")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_list_holds_who_the_rules_admit_and_follows_changes(node, protocol):
    await shared_wallbox(node, protocol)
    async with simulated(node, "HOME", protocol, bay_wait_s=2.0, meter_interval_s=0.1) as box:
        await until(lambda: box.local_list_version == 1)
        assert set(box.local_list) == {"OWNER", "NEIGHBOUR", "LEASE"}  # GONE is blocked
        assert box.local_list["OWNER"] is None and box.local_list["LEASE"] is not None
        assert box.local_list_allows("NEIGHBOUR") and not box.local_list_allows("STRANGER")
        # The owner shares with one more neighbour: a differential update, version 2.
        await sharing.set_rules(node.engine, "HOME", 0, {
            "allowed_tags": frozenset({"NEIGHBOUR", "GONE", "LEASE", "STRANGER"})})
        await until(lambda: box.local_list_version == 2)
        assert set(box.local_list) == {"OWNER", "NEIGHBOUR", "LEASE", "STRANGER"}
        # A member is blocked: gone from the list, version 3.
        await registry.block_member(node.engine, "NEIGHBOUR")
        await until(lambda: box.local_list_version == 3)
        assert set(box.local_list) == {"OWNER", "LEASE", "STRANGER"}

        async def recorded() -> tuple[str, int, str] | None:  # written after the answer
            async with node.engine.connect() as conn:
                row = (await conn.execute(select(local_lists))).one()
            return (row.station_id, row.version, row.status) if row.version == 3 else None
        assert await until(recorded) == ("HOME", 3, "Accepted")
        answer = await send_request(node.engine, {"command": "get-local-list-version",
                                                  "station": "HOME", "args": {}})
        assert answer["ok"] and 3 in answer["response"].values()


async def test_a_station_that_lost_its_list_gets_a_full_one(node):
    await shared_wallbox(node, "2.0.1")
    async with simulated(node, "HOME", "2.0.1", bay_wait_s=2.0, meter_interval_s=0.1) as box:
        await until(lambda: box.local_list_version == 1)
        # The charger was replaced (or reset to factory settings): version 0, empty list. Its
        # next differential update is refused as a version mismatch; a full list follows.
        box.local_list, box.local_list_version = {}, 5
        await sharing.set_rules(node.engine, "HOME", 0, {
            "allowed_tags": frozenset({"NEIGHBOUR", "STRANGER"})})
        await until(lambda: "STRANGER" in box.local_list, 15)
        assert set(box.local_list) == {"OWNER", "NEIGHBOUR", "STRANGER"}

        async def recorded() -> tuple[int, str] | None:  # the answer is recorded after it arrives
            async with node.engine.connect() as conn:
                row = (await conn.execute(select(local_lists))).one()
            return (row.version, row.status) if row.status == "Accepted" else None
        assert await until(recorded) == (box.local_list_version, "Accepted")
        assert box.local_list_version == 3  # 2 was refused (VersionMismatch), 3 went in full


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_cut_off_from_the_network_the_wallbox_admits_the_neighbour_only(node, protocol):
    await shared_wallbox(node, protocol)
    async with simulated(node, "HOME", protocol, bay_wait_s=2.0, meter_interval_s=0.1) as box:
        await until(lambda: box.local_list_version == 1)
        await box.drop_connection()
        stranger = await box.charge(1, "STRANGER", energy_wh=500)
        assert stranger.refused == "authorization refused"
        neighbour = await box.charge(1, "NEIGHBOUR", energy_wh=500)
        assert neighbour.refused is None and neighbour.authorized
        await asyncio.wait_for(neighbour.done.wait(), 30)
        # 1.6: the central system gives the transaction id, so it has none yet.
        assert (neighbour.tx_id is None) == (protocol == "1.6")
        # Back online, the offline session reaches the central system, with its energy.
        await box.reconnect()

        async def recorded() -> bool:
            async with node.engine.connect() as conn:
                rows = (await conn.execute(select(sessions).where(
                    sessions.c.station_id == "HOME"))).all()
            return len(rows) == 1 and rows[0].energy_wh is not None

        await until(recorded, 15)
        async with node.engine.connect() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.station_id == "HOME"))).one()
        assert row.id_tag == "NEIGHBOUR" and row.energy_wh >= 500


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_offline_the_list_admits_only_members_who_can_pay(sqlite_url, protocol):
    """The list carries the members whose money lets them start; a member who tops up joins
    it; cut off from the network, the wallbox refuses the one who cannot pay."""
    from cocharge.settlement import funds

    async with running_node(sqlite_url, settings(control_interval_s=0.2, local_list_sync_s=0.3,
                                                 start_minimum_fen=100)) as node:
        await register(node, "HOME", tags=("RICH", "POOR"), max_power_kw=11)
        await sharing.set_rules(node.engine, "HOME", 0, {
            "allowed_tags": frozenset({"RICH", "POOR"})})
        await funds.top_up(node.engine, "RICH", 5000, "pay-rich")
        async with simulated(node, "HOME", protocol, bay_wait_s=2.0, meter_interval_s=0.1) as box:
            await until(lambda: box.local_list_version == 1)
            assert set(box.local_list) == {"RICH"}
            await funds.top_up(node.engine, "POOR", 200, "pay-poor")
            await until(lambda: "POOR" in box.local_list)
            await box.drop_connection()
            assert box.local_list_allows("POOR") and not box.local_list_allows("NOBODY")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_list_that_admits_nobody_is_sent_empty(sqlite_url, protocol):
    """Rules (and money) that admit nobody: a Full list without entries empties the station's
    list, as OCPP says; it is not refused by our own schema check."""
    async with running_node(sqlite_url, settings(control_interval_s=0.2, local_list_sync_s=0.3,
                                                 start_minimum_fen=100)) as node:
        await register(node, "HOME", tags=("POOR",), max_power_kw=11)
        await sharing.set_rules(node.engine, "HOME", 0, {"allowed_tags": frozenset({"POOR"})})
        async with simulated(node, "HOME", protocol, bay_wait_s=2.0, meter_interval_s=0.1) as box:
            box.local_list = {"STALE": None}
            await until(lambda: box.local_list_version == 1)
            assert box.local_list == {}
            answer = await send_request(node.engine, {"command": "send-local-list",
                                                      "station": "HOME", "args": {}})
            assert answer["ok"] and answer["accepted"], answer
