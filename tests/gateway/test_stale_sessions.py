"""A charger that forgets a transaction (power loss, a lost stop, a reboot) leaves no session
active forever: the stale one is closed, flagged with why, and settled on the energy known."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cocharge.node import running_node
from cocharge.settlement.settle import payable_fen
from cocharge.stations import registry
from tests.conftest import raw_station, register, settings, simulated, until

GRACE = settings(stale_session_grace_s=0.5)


async def sessions_of(node: Any) -> list[dict[str, Any]]:
    return await registry.list_sessions(node.engine)


@pytest.mark.parametrize("protocol", ["1.6", "2.0.1", "2.1"])
async def test_power_loss_mid_session_closes_and_settles_it(sqlite_url, protocol):
    async with running_node(sqlite_url, GRACE) as node:
        await register(node, "CP1")
        async with simulated(node, "CP1", protocol, meter_interval_s=0.1) as box:
            await box.charge(1, "TAG1", energy_wh=50_000)

            async def charged() -> bool:
                found = await sessions_of(node)
                return bool(found) and await _samples(node, found[0]["id"]) >= 3

            await until(charged)
            await box.power_loss()  # no stop is ever sent; it boots and reports Available
            assert box.boots == 1

            async def closed() -> list[dict[str, Any]]:
                return [s for s in await sessions_of(node) if s["status"] != "active"]

            done = (await until(closed))[0]
            assert done["stop_reason"] == "Stale" and done["flag_reason"].startswith("stale: ")
            assert "Available" in done["flag_reason"]
            assert done["status"] == "completed" and done["energy_wh"] > 0
            assert done["ended"] is not None
            paid = await until(lambda: payable_fen(node.engine, done["id"]))
            assert paid > 0
            # The charger charges again after its reboot: one active session, the new one.
            await box.charge(1, "TAG1", energy_wh=1_000)
            found = await sessions_of(node)
            assert [s["status"] for s in found].count("active") <= 1
            assert len(found) == 2


async def test_a_queued_stop_within_the_grace_wins(sqlite_url):
    """A charger that keeps its stop through a reboot sends it after booting: the session
    ends by that stop, with its meter reading, not as stale."""
    async with running_node(sqlite_url, settings(stale_session_grace_s=1.0)) as node:
        await register(node, "CP1")
        station = await raw_station(node, "CP1")
        started = await station.call("StartTransaction", {
            "connectorId": 1, "idTag": "TAG1", "meterStart": 1000,
            "timestamp": "2026-11-24T10:00:00Z"})
        tx = started[2]["transactionId"]
        await station.call("BootNotification", {"chargePointVendor": "raw",
                                                "chargePointModel": "raw"})
        await station.call("StatusNotification", {"connectorId": 1, "status": "Available",
                                                  "errorCode": "NoError"})
        await asyncio.sleep(0.3)
        await station.call("StopTransaction", {"transactionId": tx, "meterStop": 4000,
                                               "timestamp": "2026-11-24T10:30:00Z",
                                               "reason": "Reboot"})
        await asyncio.sleep(1.2)  # past the grace
        (done,) = await sessions_of(node)
        assert done["stop_reason"] == "Reboot" and done["energy_wh"] == 3000
        assert not (done["flag_reason"] or "").startswith("stale")
        await station.ws.close()


async def test_a_new_transaction_on_the_connector_supersedes_the_old(sqlite_url):
    async with running_node(sqlite_url, GRACE) as node:
        await register(node, "CP1", "CP2")
        station = await raw_station(node, "CP1")
        first = await station.call("StartTransaction", {
            "connectorId": 1, "idTag": "TAG1", "meterStart": 1000,
            "timestamp": "2026-11-24T10:00:00Z"})
        await station.call("MeterValues", {
            "connectorId": 1, "transactionId": first[2]["transactionId"], "meterValue": [{
                "timestamp": "2026-11-24T10:20:00Z", "sampledValue": [
                    {"value": "3500", "measurand": "Energy.Active.Import.Register",
                     "unit": "Wh"}]}]})
        other = await raw_station(node, "CP2")  # another station's session is not touched
        await other.call("StartTransaction", {"connectorId": 1, "idTag": "TAG1",
                                              "meterStart": 0,
                                              "timestamp": "2026-11-24T10:05:00Z"})
        await station.call("StartTransaction", {
            "connectorId": 1, "idTag": "TAG1", "meterStart": 5000,
            "timestamp": "2026-11-24T11:00:00Z"})
        found = {(s["station"], s["started"][11:16]): s for s in await sessions_of(node)}
        old = found[("CP1", "10:00")]
        assert old["status"] == "completed" and old["stop_reason"] == "Stale"
        assert "superseded" in old["flag_reason"] and old["energy_wh"] == 2500
        assert old["ended"].startswith("2026-11-24T10:20")
        assert found[("CP1", "11:00")]["status"] == "active"
        assert found[("CP2", "10:05")]["status"] == "active"
        await station.ws.close()
        await other.ws.close()


async def _samples(node: Any, session_id: int) -> int:
    from sqlalchemy import func, select

    from cocharge.store.schema import ENERGY_REGISTER, meter_samples

    async with node.engine.connect() as conn:  # energy register readings of the session
        return int(await conn.scalar(select(func.count()).select_from(meter_samples).where(
            meter_samples.c.session_id == session_id,
            meter_samples.c.measurand == ENERGY_REGISTER)) or 0)
