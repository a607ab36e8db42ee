"""Subprotocol choice, admission, Basic auth, connection replacement."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cocharge.node import running_node
from cocharge.stations import registry
from tests.conftest import raw_station, register, settings, ws_url


async def test_server_prefers_201_when_both_offered(node):
    await register(node, "CP1")
    async with connect(f"{ws_url(node)}/CP1", subprotocols=["ocpp1.6", "ocpp2.0.1"]) as ws:
        assert ws.subprotocol == "ocpp2.0.1"
    async with connect(f"{ws_url(node)}/CP1", subprotocols=["ocpp1.6"]) as ws:
        assert ws.subprotocol == "ocpp1.6"


async def test_unsupported_subprotocol_completes_handshake_then_closes(node):
    async with connect(f"{ws_url(node)}/CP1", subprotocols=["ocpp1.5"]) as ws:
        assert ws.subprotocol is None  # no HTTP 400: the handshake completed
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 1002


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_unknown_station_rejected_and_refused(node, protocol):
    station = await raw_station(node, "STRANGER", protocol, boot=False)
    boot = ({"chargePointVendor": "x", "chargePointModel": "y"} if protocol == "ocpp1.6"
            else {"chargingStation": {"vendorName": "x", "model": "y"}, "reason": "PowerUp"})
    answer = await station.call("BootNotification", boot)
    assert answer[2]["status"] == "Rejected"
    answer = await station.call("Heartbeat", {})
    assert answer[0] == 4 and answer[2] == "SecurityError"


async def test_registered_station_accepted_and_served(node):
    await register(node, "CP1")
    station = await raw_station(node, "CP1", boot=False)
    answer = await station.call("BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})
    # the heartbeat interval, varied by up to 10 % so that a reconnect storm spreads out
    assert answer[2]["status"] == "Accepted" and 270 <= answer[2]["interval"] <= 330
    assert (await station.call("Heartbeat", {}))[0] == 3


async def test_auto_register_pending_until_approved(sqlite_url):
    async with running_node(sqlite_url, settings(auto_register=True)) as node:
        station = await raw_station(node, "NEW1", "ocpp2.0.1", boot=False)
        boot = {"chargingStation": {"vendorName": "x", "model": "y"}, "reason": "PowerUp"}
        assert (await station.call("BootNotification", boot))[2]["status"] == "Pending"
        assert (await station.call("Heartbeat", {}))[2] == "SecurityError"
        await registry.approve_station(node.engine, "NEW1")
        assert (await station.call("BootNotification", boot))[2]["status"] == "Accepted"
        assert (await station.call("Heartbeat", {}))[0] == 3


async def test_basic_auth_required_for_station_with_password(node):
    await registry.add_station(node.engine, registry.NewStation("SEC1", password="correct-horse-1"))
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{ws_url(node)}/SEC1", subprotocols=["ocpp1.6"])
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        await connect(f"{ws_url(node)}/SEC1", subprotocols=["ocpp1.6"],
                      additional_headers={"Authorization": "Basic U0VDMTp3cm9uZw=="})
    import base64
    good = base64.b64encode(b"SEC1:correct-horse-1").decode()
    station = await raw_station(node, "SEC1", additional_headers={"Authorization": f"Basic {good}"})
    assert (await station.call("Heartbeat", {}))[0] == 3


async def test_second_connection_replaces_first(node):
    """An authenticated station reconnecting replaces its old connection (the charger lost
    it without noticing); a station without a password: see test_passwords.py."""
    import base64
    await registry.add_station(node.engine, registry.NewStation("CP1", password="correct-horse-1"))
    auth = {"Authorization": "Basic " + base64.b64encode(b"CP1:correct-horse-1").decode()}
    first = await raw_station(node, "CP1", additional_headers=auth)
    second = await raw_station(node, "CP1", additional_headers=auth)
    with pytest.raises(ConnectionClosed):
        await first.ws.recv()
    assert (await second.call("Heartbeat", {}))[0] == 3
    assert node.gateway.connection("CP1").websocket.remote_address[1] == second.ws.local_address[1]
