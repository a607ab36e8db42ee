"""Firmware campaigns over real sockets: the gateway serves the image, updates a few stations
at a time, follows their notifications, retries a failure, and reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cocharge.node import Node, running_node
from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.stations import firmware
from cocharge.stations.registry import RegistryError
from tests.conftest import register, settings, simulated, ws_url
from tests.stations.test_sharing_control import until


@pytest.fixture
async def node(sqlite_url: str) -> AsyncIterator[Node]:
    async with running_node(sqlite_url, settings(control_interval_s=0.2)) as running:
        yield running


async def test_a_campaign_over_20_stations_5_at_a_time_with_one_failing(node):
    ids = [f"FW{n:02d}" for n in range(20)]
    await register(node, *ids)
    boxes = []
    for n, sid in enumerate(ids):
        boxes.append(await open_wallbox(SimConfig(
            url=ws_url(node), station_id=sid, protocol="1.6" if n % 2 else "2.0.1",
            speed=300, firmware="1.0.0", firmware_fails=sid == "FW07")))
    try:
        file_id = await firmware.add_file(node.engine, "wallbox-2.0.0.bin", "2.0.0", b"2.0.0\n")
        campaign_id, count = await firmware.create_campaign(
            node.engine, "2.0.0", file_id, None, firmware.Selection(firmware="1.0.*"),
            at_once=5, retries=1)
        assert count == 20
        most_at_once = 0

        async def finished() -> bool:
            nonlocal most_at_once
            shown = await firmware.campaign_status(node.engine, campaign_id)
            busy = sum(1 for t in shown["targets"]
                       if t["status"] not in ("pending", "done", "failed"))
            most_at_once = max(most_at_once, busy)
            return shown["status"] == "done"

        await until(finished, 60)
        shown = await firmware.campaign_status(node.engine, campaign_id)
        assert shown["counts"] == {"done": 19, "failed": 1}
        [broken] = [t for t in shown["targets"] if t["status"] == "failed"]
        assert broken["station"] == "FW07" and broken["attempts"] == 2  # tried, retried once
        assert broken["detail"] == "InstallationFailed"
        assert most_at_once <= 5
        assert all(box.firmware == "2.0.0" for box, _ in boxes if box.config.station_id != "FW07")
        assert boxes[7][0].firmware == "1.0.0"
    finally:
        for box, reader in boxes:
            await close_wallbox(box, reader)


async def test_a_campaign_needs_an_image_and_stations(node):
    await register(node, "ONE")
    with pytest.raises(RegistryError, match="one"):
        await firmware.create_campaign(node.engine, "2.0.0", None, None, firmware.Selection(),
                                       5, 1)
    with pytest.raises(RegistryError, match="no station matches"):
        await firmware.create_campaign(node.engine, "2.0.0", None, "http://x/fw.bin",
                                       firmware.Selection(vendor="Nobody*"), 5, 1)
    with pytest.raises(RegistryError, match="no station 'TWO'"):
        await firmware.create_campaign(node.engine, "2.0.0", None, "http://x/fw.bin",
                                       firmware.Selection(stations=("TWO",)), 5, 1)


async def test_an_unreachable_image_fails_after_its_retries(node):
    await register(node, "NET")
    async with simulated(node, "NET", "2.0.1"):
        campaign_id, _ = await firmware.create_campaign(
            node.engine, "9.9.9", None, "http://127.0.0.1:9/nothing.bin",
            firmware.Selection(stations=("NET",)), at_once=1, retries=2)

        async def done() -> Any:
            shown = await firmware.campaign_status(node.engine, campaign_id)
            return shown if shown["status"] == "done" else None

        shown = await until(done, 30)
        [target] = shown["targets"]
        assert (target["status"], target["attempts"], target["detail"]) == (
            "failed", 3, "DownloadFailed")
