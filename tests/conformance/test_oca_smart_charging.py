"""Smart charging, both versions, as the OCA's test tool plays the charger: OCPP 1.6
"Smart Charging" (TxDefaultProfile, TxProfile, ClearChargingProfile, GetCompositeSchedule,
ChargePointMaxProfile) and 2.0.1 functional block K (SetChargingProfile, Get/Clear,
GetCompositeSchedule, external limits, ISO 15118 charging needs and schedules; block K runs
for 2.1 stations too). Each test
checks the CSMS's frames against the case's expectations; every frame is also validated
against the version's schema by the gateway on the way out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from cocharge.load import sites as store
from cocharge.node import Node, running_node
from cocharge.stations import registry
from cocharge.store.schema import station_events
from tests.conformance.test_oca_201 import answered, csms_sends, operator
from tests.conftest import RawStation, raw_station, register, settings, until

NOW = "2026-11-24T10:00:00Z"


@pytest.fixture
async def node(sqlite_url: str) -> AsyncIterator[Node]:
    async with running_node(sqlite_url, settings(load_period_s=0.5, load_reload_s=0.5,
                                                 load_settle_s=0.0)) as running:
        yield running


async def charger(node: Node, version: str, station_id: str = "SC1") -> RawStation:
    await register(node, station_id, tags=("TAG1",))
    return await raw_station(node, station_id, f"ocpp{version}")


async def reply(cs: RawStation, frame: list[Any], payload: dict[str, Any]) -> None:
    await cs.ws.send(json.dumps([3, frame[1], payload]))


async def events(node: Node, kind: str) -> list[dict[str, Any]]:
    async with node.engine.connect() as conn:
        rows = (await conn.execute(select(station_events.c.payload).where(
            station_events.c.kind == kind))).scalars().all()
    return [json.loads(r) for r in rows]


# --- 1.6 ------------------------------------------------------------------------------------

async def test_16_tx_default_profile_set_by_the_operator(node) -> None:
    """1.6 Smart Charging, TxDefaultProfile (TC_056_CS): a Recurring daily profile on
    connector 0, answered Accepted."""
    cs = await charger(node, "1.6")
    asked = operator(node, "SC1", "set-charging-profile", connector_id=0,
                     purpose="TxDefaultProfile", periods=[[0, 16], [3600, 10]], id=7,
                     stack_level=2, kind="Recurring", recurrency="Daily", start_schedule=NOW)
    frame = await csms_sends(cs, "SetChargingProfile")
    profile = frame[3]["csChargingProfiles"]
    assert frame[3]["connectorId"] == 0
    assert profile["chargingProfileId"] == 7 and profile["stackLevel"] == 2
    assert profile["chargingProfilePurpose"] == "TxDefaultProfile"
    assert profile["chargingProfileKind"] == "Recurring" and profile["recurrencyKind"] == "Daily"
    assert profile["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 16.0}, {"startPeriod": 3600, "limit": 10.0}]
    await reply(cs, frame, {"status": "Accepted"})
    assert (await asked)["status"] == "Accepted"


async def test_16_tx_profile_for_a_running_transaction(node) -> None:
    """1.6 Smart Charging, TxProfile (TC_057_CS): names the transaction it limits."""
    cs = await charger(node, "1.6")
    await cs.call("Authorize", {"idTag": "TAG1"})
    started = await cs.call("StartTransaction", {"connectorId": 1, "idTag": "TAG1",
                                                 "meterStart": 0, "timestamp": NOW})
    tx = started[2]["transactionId"]
    asked = operator(node, "SC1", "set-charging-profile", connector_id=1, purpose="TxProfile",
                     periods=[[0, 10]], id=9, stack_level=2, kind="Relative", session_id=tx)
    frame = await csms_sends(cs, "SetChargingProfile")
    assert frame[3]["connectorId"] == 1
    assert frame[3]["csChargingProfiles"]["transactionId"] == tx
    await reply(cs, frame, {"status": "Accepted"})
    assert (await asked)["accepted"]


async def test_16_clear_charging_profile_and_get_composite_schedule(node) -> None:
    """1.6 Smart Charging, ClearChargingProfile (TC_067_CS) by id, and GetCompositeSchedule
    (TC_066_CS) whose schedule the operator receives."""
    cs = await charger(node, "1.6")
    asked = operator(node, "SC1", "clear-charging-profile", id=7)
    frame = await csms_sends(cs, "ClearChargingProfile")
    assert frame[3] == {"id": 7}
    await reply(cs, frame, {"status": "Accepted"})
    assert (await asked)["status"] == "Accepted"
    asked = operator(node, "SC1", "get-composite-schedule", connector_id=1, duration=600,
                     unit="A")
    frame = await csms_sends(cs, "GetCompositeSchedule")
    assert frame[3] == {"connectorId": 1, "duration": 600, "chargingRateUnit": "A"}
    schedule = {"chargingRateUnit": "A", "duration": 600,
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}
    await reply(cs, frame, {"status": "Accepted", "connectorId": 1, "scheduleStart": NOW,
                            "chargingSchedule": schedule})
    answer = await asked
    assert answer["accepted"] and answer["response"]["chargingSchedule"] == schedule


async def test_16_charge_point_max_profile_only_on_connector_0(node) -> None:
    """ChargePointMaxProfile: on connector 0; on another connector the operator is told why
    and nothing is sent."""
    cs = await charger(node, "1.6")
    answer = await send_request(node, "SC1", "set-charging-profile", connector_id=1,
                                purpose="ChargePointMaxProfile", periods=[[0, 32]])
    assert answer["ok"] is False and "connector 0" in answer["message"]
    asked = operator(node, "SC1", "set-charging-profile", connector_id=0,
                     purpose="ChargingStationMaxProfile", periods=[[0, 32]])
    frame = await csms_sends(cs, "SetChargingProfile")
    assert frame[3]["csChargingProfiles"]["chargingProfilePurpose"] == "ChargePointMaxProfile"
    await reply(cs, frame, {"status": "Accepted"})
    assert (await asked)["accepted"]


async def send_request(node: Node, station_id: str, command: str, **args: Any) -> dict[str, Any]:
    return await operator(node, station_id, command, **args)


# --- 2.0.1 (K) ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
async def test_k01_set_charging_profile_and_k10_clear(node, version) -> None:
    """K01 SetChargingProfile (a ChargingStationMaxProfile on EVSE 0) and K10
    ClearChargingProfile by criteria."""
    cs = await charger(node, version)
    asked = operator(node, "SC1", "set-charging-profile", connector_id=0,
                     purpose="ChargingStationMaxProfile", periods=[[0, 11000]], unit="W", id=3)
    frame = await csms_sends(cs, "SetChargingProfile")
    profile = frame[3]["chargingProfile"]
    assert frame[3]["evseId"] == 0 and profile["id"] == 3
    assert profile["chargingSchedule"][0]["chargingRateUnit"] == "W"
    assert profile["chargingSchedule"][0]["startSchedule"]  # Absolute: from now
    await reply(cs, frame, {"status": "Accepted"})
    assert (await asked)["accepted"]
    asked = operator(node, "SC1", "clear-charging-profile", connector_id=0,
                     purpose="ChargingStationMaxProfile", stack_level=0)
    frame = await csms_sends(cs, "ClearChargingProfile")
    assert frame[3] == {"chargingProfileCriteria": {
        "evseId": 0, "chargingProfilePurpose": "ChargingStationMaxProfile", "stackLevel": 0}}
    await reply(cs, frame, {"status": "Unknown"})
    assert (await asked)["status"] == "Unknown"


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
async def test_k08_get_composite_schedule_and_k09_get_charging_profiles(node, version) -> None:
    cs = await charger(node, version)
    asked = operator(node, "SC1", "get-composite-schedule", connector_id=1, duration=300)
    frame = await csms_sends(cs, "GetCompositeSchedule")
    assert frame[3] == {"duration": 300, "evseId": 1}
    await reply(cs, frame, {"status": "Accepted", "schedule": {
        "evseId": 1, "duration": 300, "scheduleStart": NOW, "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}})
    assert (await asked)["response"]["schedule"]["evseId"] == 1
    asked = operator(node, "SC1", "get-charging-profiles", purpose="TxDefaultProfile")
    frame = await csms_sends(cs, "GetChargingProfiles")
    request_id = frame[3]["requestId"]
    assert frame[3]["chargingProfile"] == {"chargingProfilePurpose": "TxDefaultProfile"}
    await reply(cs, frame, {"status": "Accepted"})
    assert (await asked)["accepted"]
    await answered(cs, "ReportChargingProfiles", {
        "requestId": request_id, "chargingLimitSource": "CSO", "evseId": 1, "chargingProfile": [
            {"id": 5, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
             "chargingProfileKind": "Relative", "chargingSchedule": [
                 {"id": 5, "chargingRateUnit": "A",
                  "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}]}]})
    kept = await events(node, "charging_profiles")
    assert kept[0]["request_id"] == request_id and kept[0]["profiles"][0]["id"] == 5


async def attached(node: Node, cs: RawStation, station_id: str = "SC1") -> list[dict[str, Any]]:
    """Attach the station to a 32 A circuit; answer (Accepted) the profiles load management
    then writes (its failsafe and the idle allocation), returned."""
    await store.add_site(node.engine, "S")
    await store.add_circuit(node.engine, "C", "S", None, 32.0, 3, 0.0, "none")
    await store.attach(node.engine, station_id, "C", "L1L2L3", "fast", 32)
    await node.gateway.load.reload()
    return await profiles_written(cs)


async def profiles_written(cs: RawStation, quiet_s: float = 1.0) -> list[dict[str, Any]]:
    found = []
    while True:
        try:
            async with asyncio.timeout(quiet_s):
                frame = json.loads(await cs.ws.recv())
        except TimeoutError:
            return found
        assert frame[0] == 2 and frame[2] == "SetChargingProfile", frame
        found.append(frame[3])
        await reply(cs, frame, {"status": "Accepted"})


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
async def test_k12_k13_external_limit_is_taken_into_the_allocation(node, version) -> None:
    """K12/K13 NotifyChargingLimit from an EMS or the grid operator: stored and used (the
    allocation respects it); ClearedChargingLimit lifts it."""
    cs = await charger(node, version)
    written = await attached(node, cs)
    purposes = {(p["chargingProfile"]["chargingProfilePurpose"], p["chargingProfile"]["stackLevel"])
                for p in written}
    assert purposes == {("TxDefaultProfile", 0), ("TxDefaultProfile", 1)}  # failsafe, allocation
    await answered(cs, "NotifyChargingLimit", {
        "chargingLimit": {"chargingLimitSource": "SO", "isGridCritical": True}, "evseId": 1,
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 6900.0, "numberPhases": 3}]}]})
    assert node.gateway.load.external[("SC1", 1)] == 10.0  # 6900 W / (230 V x 3)
    assert (await events(node, "charging_limit"))[0]["source"] == "SO"
    await answered(cs, "ClearedChargingLimit", {"chargingLimitSource": "SO", "evseId": 1})
    assert ("SC1", 1) not in node.gateway.load.external


async def test_k28_load_management_moves_its_dynamic_profile_on_21(node) -> None:
    """2.1 K28: load management's allocation goes to a 2.1 station as a Dynamic profile (one
    period); a lower allocation (here: a grid operator's limit on the site) moves that
    period with UpdateDynamicSchedule instead of a new profile, and the station asking
    (PullDynamicScheduleUpdate) gets the same limit."""
    cs = await charger(node, "2.1")
    written = await attached(node, cs)
    [ours] = [p["chargingProfile"] for p in written
              if p["chargingProfile"]["id"] == 2_100_000_101]
    assert ours["chargingProfileKind"] == "Dynamic"
    assert ours["chargingSchedule"][0]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 32.0}]
    limited = operator(node, "", "grid-limit", site="S", limit_w=6900)
    frame = await csms_sends(cs, "UpdateDynamicSchedule")
    assert (await limited)["ok"]
    assert frame[3] == {"chargingProfileId": 2_100_000_101, "scheduleUpdate": {"limit": 10.0}}
    await reply(cs, frame, {"status": "Accepted"})
    await until(lambda: asyncio.sleep(0, node.gateway.load.written[("SC1", 1)].limit_a == 10.0))
    answer = await cs.call("PullDynamicScheduleUpdate", {"chargingProfileId": 2_100_000_101})
    while answer[0] != 3:  # what else the CSMS asked meanwhile, answered as a station would
        await reply(cs, answer, {"status": "Accepted"})
        answer = await cs.answer()
    assert answer[2] == {"status": "Accepted", "scheduleUpdate": {"limit": 10.0}}


async def test_k28_a_station_pulling_before_its_answer_has_arrived_gets_the_limit(node) -> None:
    """A 2.1 station may ask for its limit (PullDynamicScheduleUpdate) the moment it has
    taken load management's Dynamic profile, before its answer has reached the CSMS: it
    gets the limit on its way, not Rejected as a profile that is not ours."""
    cs = await charger(node, "2.1")
    await store.add_site(node.engine, "S")
    await store.add_circuit(node.engine, "C", "S", None, 32.0, 3, 0.0, "none")
    await store.attach(node.engine, "SC1", "C", "L1L2L3", "fast", 32)
    await node.gateway.load.reload()
    async with asyncio.timeout(10):
        while True:
            frame = await csms_sends(cs, "SetChargingProfile")
            if frame[3]["chargingProfile"]["id"] == 2_100_000_101:
                break
            await reply(cs, frame, {"status": "Accepted"})  # the failsafe below it
    assert frame[3]["chargingProfile"]["chargingProfileKind"] == "Dynamic"
    answer = await cs.call("PullDynamicScheduleUpdate", {"chargingProfileId": 2_100_000_101})
    assert answer[2] == {"status": "Accepted", "scheduleUpdate": {"limit": 32.0}}
    await reply(cs, frame, {"status": "Accepted"})
    await until(lambda: asyncio.sleep(0, ("SC1", 1) in node.gateway.load.written))
    assert node.gateway.load.written[("SC1", 1)].dynamic
    assert not node.gateway.load.in_flight
    answer = await cs.call("PullDynamicScheduleUpdate", {"chargingProfileId": 2_100_000_101})
    assert answer[2] == {"status": "Accepted", "scheduleUpdate": {"limit": 32.0}}


async def test_k28_a_21_station_that_refuses_dynamic_profiles_gets_absolute_ones(node) -> None:
    cs = await charger(node, "2.1")
    await store.add_site(node.engine, "S")
    await store.add_circuit(node.engine, "C", "S", None, 32.0, 3, 0.0, "none")
    await store.attach(node.engine, "SC1", "C", "L1L2L3", "fast", 32)
    await node.gateway.load.reload()
    kinds = []
    async with asyncio.timeout(10):
        while "Absolute" not in kinds:
            frame = json.loads(await cs.ws.recv())
            assert frame[2] == "SetChargingProfile", frame
            profile = frame[3]["chargingProfile"]
            if profile["id"] == 2_100_000_101:
                kinds.append(profile["chargingProfileKind"])
            await reply(cs, frame, {"status": "Rejected" if profile["chargingProfileKind"]
                                    == "Dynamic" else "Accepted"})
    assert kinds == ["Dynamic", "Absolute"]
    assert "SC1" in node.gateway.load.no_dynamic


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
async def test_k15_ev_charging_needs_get_a_schedule_and_k17_ev_schedule_accepted(node, version) -> None:
    """K15: NotifyEVChargingNeeds during a transaction at a load-managed station is Accepted
    and a TxProfile for that transaction follows, within the EV's maximum current. K17:
    NotifyEVChargingSchedule within our limits is Accepted and kept, beyond them Rejected."""
    cs = await charger(node, version)
    await attached(node, cs)
    await cs.call("TransactionEvent", {
        "eventType": "Started", "timestamp": NOW, "triggerReason": "Authorized", "seqNo": 0,
        "transactionInfo": {"transactionId": "TX15"}, "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "TAG1", "type": "ISO14443"}})
    answer = await cs.call("NotifyEVChargingNeeds", {"evseId": 1, "chargingNeeds": {
        "requestedEnergyTransfer": "AC_three_phase", "acChargingParameters": {
            "energyAmount": 20000, "evMinCurrent": 6, "evMaxCurrent": 13, "evMaxVoltage": 400}}})
    assert answer[2] == {"status": "Accepted"}
    async with asyncio.timeout(10):
        while True:
            frame = await csms_sends(cs, "SetChargingProfile")
            await reply(cs, frame, {"status": "Accepted"})
            profile = frame[3]["chargingProfile"]
            if profile["chargingProfilePurpose"] == "TxProfile":
                break
    assert profile["transactionId"] == "TX15" and frame[3]["evseId"] == 1
    assert profile["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 13.0
    answer = await cs.call("NotifyEVChargingSchedule", {
        "timeBase": NOW, "evseId": 1, "chargingSchedule": {
            "id": 1, "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 13.0}]}})
    assert answer[2] == {"status": "Accepted"}
    assert (await events(node, "ev_charging_schedule"))[0]["evse_id"] == 1
    # K15.FR.12: a schedule beyond the 13 A we allowed this EVSE is Rejected (and kept).
    answer = await cs.call("NotifyEVChargingSchedule", {
        "timeBase": NOW, "evseId": 1, "chargingSchedule": {
            "id": 2, "chargingRateUnit": "W", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 8970.0, "numberPhases": 3},  # 13 A
                {"startPeriod": 600, "limit": 22080.0, "numberPhases": 3}]}})  # 32 A
    assert answer[2]["status"] == "Rejected", answer
    assert answer[2]["statusInfo"]["reasonCode"] == "ExceedsLimits"
    assert "asks 32.0 A; this EVSE may draw 13.0 A" in answer[2]["statusInfo"]["additionalInfo"]


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
async def test_k15_needs_without_load_management_are_rejected(node, version) -> None:
    cs = await charger(node, version)
    answer = await cs.call("NotifyEVChargingNeeds", {"evseId": 1, "chargingNeeds": {
        "requestedEnergyTransfer": "AC_single_phase"}})
    assert answer[2] == {"status": "Rejected"}


async def test_21_pull_dynamic_schedule_update_and_priority_charging(node) -> None:
    """2.1: a station with load management's profile asks for its limit now
    (PullDynamicScheduleUpdate: the allocation; Rejected for a profile that is not ours);
    UsePriorityCharging for a session by its id."""
    cs = await charger(node, "2.1")
    written = await attached(node, cs)
    ours = [p for p in written if p["chargingProfile"]["id"] > 2_100_000_100]
    assert ours, written
    profile = ours[-1]["chargingProfile"]
    answer = await cs.call("PullDynamicScheduleUpdate", {"chargingProfileId": profile["id"]})
    assert answer[2]["status"] == "Accepted", answer
    expected = node.gateway.load.live("S")["chargers"][0]["allocated_a"]
    assert answer[2]["scheduleUpdate"] == {"limit": expected}
    unknown = await cs.call("PullDynamicScheduleUpdate", {"chargingProfileId": 77})
    assert unknown[2]["status"] == "Rejected"

    started = await cs.call("TransactionEvent", {
        "eventType": "Started", "timestamp": NOW, "triggerReason": "Authorized", "seqNo": 0,
        "transactionInfo": {"transactionId": "TXP"}, "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "TAG1", "type": "ISO14443"}})
    assert started[2]["idTokenInfo"]["status"] == "Accepted"
    [session] = [s for s in await registry.list_sessions(node.engine, "SC1")]
    asked = operator(node, "SC1", "use-priority-charging", session_id=session["id"])
    frame = await csms_sends(cs, "UsePriorityCharging")
    assert frame[3] == {"transactionId": "TXP", "activate": True}
    await reply(cs, frame, {"status": "Accepted"})
    assert (await asked)["accepted"]


async def test_21_a_booked_member_charges_with_priority(node) -> None:
    """2.1: the session of a booking gets UsePriorityCharging (activate) by itself."""
    from datetime import timedelta

    from cocharge.stations import sharing
    from cocharge.store.db import utcnow

    cs = await charger(node, "2.1", "PR1")
    await sharing.add_booking(node.engine, "PR1", 1, "TAG1", utcnow() - timedelta(minutes=1),
                              utcnow() + timedelta(hours=1))
    await node.gateway.control.tick(utcnow())  # the controller sees the booking now
    await cs.ws.send(json.dumps([2, "tx-b", "TransactionEvent", {
        "eventType": "Started", "timestamp": utcnow().isoformat(timespec="seconds") + "Z",
        "triggerReason": "Authorized", "seqNo": 0, "transactionInfo": {"transactionId": "TXB"},
        "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "TAG1", "type": "ISO14443"}}]))
    answered, priority = None, None
    async with asyncio.timeout(10):
        while answered is None or priority is None:
            frame = json.loads(await cs.ws.recv())
            if frame[0] == 3 and frame[1] == "tx-b":
                answered = frame[2]
            elif frame[0] == 2 and frame[2] == "UsePriorityCharging":
                priority = frame[3]
                await reply(cs, frame, {"status": "Accepted"})
            elif frame[0] == 2:  # its reservation, display, profiles: as a station does
                await reply(cs, frame, {"status": "Accepted"})
    assert answered["idTokenInfo"]["status"] == "Accepted", answered
    assert priority == {"transactionId": "TXB", "activate": True}
