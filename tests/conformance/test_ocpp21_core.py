"""OCPP 2.1 on the same port (issue 31, first part): the subprotocol is chosen by preference,
a 2.1 station boots and charges as a 2.0.1 one does on 2.1's schemas, and the RPC framework
of 2.1: SEND (type 6, never answered, not even when wrong) and CALLRESULTERROR (type 5,
logged and kept). Use case ids of the 2.1 specification (B01, E01-E07, framework 4.2)."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect

from cocharge.gateway.operator_client import send_request
from cocharge.stations import registry
from cocharge.store.db import utcnow
from tests.conftest import raw_station, register, ws_url


def now() -> str:
    return utcnow().isoformat(timespec="seconds") + "Z"


async def test_the_newest_offered_version_is_chosen(node):
    await register(node, "PREF")
    for offered, chosen in ((["ocpp1.6", "ocpp2.0.1", "ocpp2.1"], "ocpp2.1"),
                            (["ocpp2.0.1", "ocpp1.6"], "ocpp2.0.1"), (["ocpp1.6"], "ocpp1.6")):
        ws = await connect(f"{ws_url(node)}/PREF", subprotocols=offered)
        assert ws.subprotocol == chosen
        await ws.close()


async def test_b01_e01_a_21_station_boots_and_charges_a_settled_session(node):
    await register(node, "V21")
    st = await raw_station(node, "V21", "ocpp2.1")
    status = await st.call("StatusNotification", {"timestamp": now(), "connectorStatus": "Occupied",
                                                  "evseId": 1, "connectorId": 1})
    assert status[0] == 3
    auth = await st.call("Authorize", {"idToken": {"idToken": "TAG1", "type": "ISO14443"}})
    assert auth[2]["idTokenInfo"]["status"] == "Accepted"

    def event(kind, seq, wh, **info):
        return {"eventType": kind, "timestamp": now(), "triggerReason": "Authorized",
                "seqNo": seq, "transactionInfo": {"transactionId": "t21-1", **info},
                "evse": {"id": 1, "connectorId": 1},
                "idToken": {"idToken": "TAG1", "type": "ISO14443"},
                "meterValue": [{"timestamp": now(), "sampledValue": [
                    {"value": wh, "measurand": "Energy.Active.Import.Register"}]}]}

    assert (await st.call("TransactionEvent", event("Started", 0, 1000)))[0] == 3
    assert (await st.call("TransactionEvent", event("Updated", 1, 1020)))[0] == 3
    again = await st.call("TransactionEvent", event("Updated", 1, 1020))  # a repeat: once
    assert again[0] == 3
    ended = await st.call("TransactionEvent", event("Ended", 2, 1040, stoppedReason="Local"))
    assert ended[0] == 3 and ended[2]["totalCost"] >= 0, ended
    [row] = await registry.list_sessions(node.engine, "V21")
    assert row["energy_wh"] == 40 and row["status"] == "completed"
    # A command through the version-neutral operator channel, checked on 2.1's schemas.
    answer = asyncio.create_task(send_request(node.engine, {
        "command": "reset", "station": "V21", "args": {"hard": False}}))
    call = await st.answer()
    assert call[0] == 2 and call[2] == "Reset" and call[3] == {"type": "OnIdle"}
    await st.ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
    assert (await answer)["accepted"]


async def test_send_frames_are_never_answered_and_kept_when_valid(node):
    await register(node, "SND")
    st = await raw_station(node, "SND", "ocpp2.1")
    stream = {"id": 1, "pending": 0, "basetime": now(),
              "data": [{"t": 0.0, "v": "230.1"}, {"t": 1.0, "v": "230.4"}]}
    await st.ws.send(json.dumps([6, "s1", "NotifyPeriodicEventStream", stream]))
    await st.ws.send(json.dumps([6, "s2", "NotifyPeriodicEventStream", {"id": "not a number"}]))
    await st.ws.send(json.dumps([6, "s3"]))  # not even a SEND: still never answered
    heartbeat = await st.call("Heartbeat", {})
    assert heartbeat[0] == 3 and heartbeat[1] == "m2"  # the first answer is the Heartbeat's
    events = await registry.list_station_events(node.engine, "SND", "periodic_event")
    assert [e["details"]["data"] for e in events] == [stream["data"]]


async def test_a_callresulterror_is_logged_and_kept(node):
    await register(node, "CRE")
    st = await raw_station(node, "CRE", "ocpp2.1")
    await st.ws.send(json.dumps([5, "m1", "FormatViolation", "your BootNotificationResponse "
                                 "was not valid", {"field": "interval"}]))
    assert (await st.call("Heartbeat", {}))[0] == 3
    [kept] = await registry.list_station_events(node.engine, "CRE", "callresulterror")
    assert kept["details"]["code"] == "FormatViolation"
    assert kept["details"]["details"] == {"field": "interval"}


async def test_21_frames_are_checked_on_the_21_schemas(node):
    """The bounds and codes of issue 13 hold for 2.1: 2.1's own message names too."""
    await register(node, "CHK")
    st = await raw_station(node, "CHK", "ocpp2.1")
    bad = await st.call("NotifySettlement", {"pspRef": "p1", "status": "Settled"})
    assert bad[0] == 4 and bad[2] == "OccurrenceConstraintViolation", bad  # no settlementTime
    ok = await st.call("NotifySettlement", {"pspRef": "p1", "status": "Settled",
                                            "settlementAmount": 12.5, "settlementTime": now()})
    assert ok[0] == 3, ok
    assert (await st.call("MakeCoffee", {}))[2] == "NotImplemented"
    # 1.6 and 2.0.1 stations do not have types 5 and 6.
    await register(node, "OLD", tags=())
    old = await raw_station(node, "OLD", "ocpp2.0.1")
    answer = await old.send_raw(json.dumps([6, "x", "NotifyPeriodicEventStream", {}]))
    assert answer[0] == 4 and answer[2] == "MessageTypeNotSupported"
