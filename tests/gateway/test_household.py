"""Household tokens: the cards of one household (or fleet) stop each other's sessions, as
the station learns from groupIdToken (2.0.1, C09) / parentIdTag (1.6); a 2.0.1 idToken is
known by value and type."""

from __future__ import annotations

import asyncio

import pytest

from cocharge.stations import registry, sharing
from tests.conftest import raw_station, simulated


async def members(node) -> None:
    await registry.add_station(node.engine, registry.NewStation("HH1", max_power_kw=22))
    await registry.add_member(node.engine, "Ann", "ANN", None, household="flat-7")
    await registry.add_member(node.engine, "Bo", "BO", None)
    await sharing.update_member(node.engine, "BO", household="flat-7")
    await registry.add_member(node.engine, "Cy", "CY", None)  # a neighbour of another flat


@pytest.mark.parametrize("protocol", ["2.0.1", "1.6"])
async def test_a_card_of_the_same_household_stops_the_session(node, protocol):
    await members(node)
    async with simulated(node, "HH1", protocol) as box:
        session = await box.charge(1, "ANN", energy_wh=50_000)
        assert session.refused is None and box.groups["ANN"] == "flat-7"
        assert not await box.present_card(1, "CY")  # another household: the charge goes on
        assert 1 in box.sessions and box.groups["CY"] is None
        assert await box.present_card(1, "BO")
        async with asyncio.timeout(10):
            await session.done.wait()
        assert session.stop_reason == "Local"
        rows = await registry.list_sessions(node.engine, station_id="HH1")
        assert rows[0]["tag"] == "ANN" and rows[0]["ended"] is not None


async def test_the_group_is_in_every_answer_and_the_token_type_counts(node):
    await members(node)
    station = await raw_station(node, "HH1", "ocpp2.0.1")
    answer = await station.call("Authorize", {"idToken": {"idToken": "ANN", "type": "ISO14443"}})
    assert answer[2]["idTokenInfo"] == {
        "status": "Accepted", "groupIdToken": {"idToken": "flat-7", "type": "Central"},
        "personalMessage": {"format": "UTF8", "language": "zh",  # the platform's language
                            "content": "欢迎，Ann。可用余额 ¥0.00"}}
    # A key code that happens to equal Ann's card number is not Ann's card.
    answer = await station.call("Authorize", {"idToken": {"idToken": "ANN", "type": "KeyCode"}})
    assert answer[2]["idTokenInfo"] == {"status": "Unknown"}
    answer = await station.call("TransactionEvent", {
        "eventType": "Started", "timestamp": "2026-11-01T10:00:00Z", "triggerReason": "Authorized",
        "seqNo": 0, "transactionInfo": {"transactionId": "T-KEY"}, "evse": {"id": 1},
        "idToken": {"idToken": "ANN", "type": "KeyCode"}})
    assert answer[2]["idTokenInfo"] == {"status": "Unknown"}
    rows = await registry.list_sessions(node.engine, station_id="HH1")
    assert rows[0]["tag"] == "#KeyCode:ANN"  # never billed to Ann
    # 1.6: parentIdTag in Authorize, StartTransaction and StopTransaction answers.
    await registry.add_station(node.engine, registry.NewStation("HH2", max_power_kw=22))
    old = await raw_station(node, "HH2")
    answer = await old.call("Authorize", {"idTag": "BO"})
    assert answer[2]["idTagInfo"] == {"status": "Accepted", "parentIdTag": "flat-7"}
    started = await old.call("StartTransaction", {"connectorId": 1, "idTag": "BO", "meterStart": 0,
                                                  "timestamp": "2026-11-01T10:00:00Z"})
    assert started[2]["idTagInfo"] == {"status": "Accepted", "parentIdTag": "flat-7"}
    stopped = await old.call("StopTransaction", {
        "transactionId": started[2]["transactionId"], "meterStop": 100, "idTag": "ANN",
        "timestamp": "2026-11-01T10:30:00Z", "reason": "Local"})
    assert stopped[2]["idTagInfo"] == {"status": "Accepted", "parentIdTag": "flat-7"}
    answer = await old.call("Authorize", {"idTag": "CY"})
    assert answer[2]["idTagInfo"] == {"status": "Accepted"}
