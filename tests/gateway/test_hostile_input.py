"""Input you cannot trust: every rule of docs/ocpp-errors.md, sent as the raw frame.

Each case asserts the three promises: the CallError code of that OCPP version, the sender's
connection still served, another station (mid-session) still served, and not one row
written for the sender.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from cocharge.stations import registry
from cocharge.store.schema import (
    connector_status,
    meter_samples,
    sessions,
    station_events,
    tx_events,
)
from tests.conftest import RawStation, raw_station, register

TS = "2026-11-01T10:00:00Z"
BIG = 2**31          # one past OCPP's 32-bit integer
DEEP = "[" * 3000 + "]" * 3000


def call(action: str, payload: dict[str, Any], uid: str = "h1") -> str:
    return json.dumps([2, uid, action, payload])


def start16(**over: Any) -> str:
    return call("StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 0,
                                     "timestamp": TS, **over})


def meter16(value: Any, **over: Any) -> str:
    return call("MeterValues", {"connectorId": 1, "meterValue": [
        {"timestamp": TS, "sampledValue": [{"value": value}]}], **over})


def tx201(**over: Any) -> str:
    payload = {"eventType": "Started", "timestamp": TS, "triggerReason": "Authorized",
               "seqNo": 0, "transactionInfo": {"transactionId": "tx-h"},
               "evse": {"id": 1, "connectorId": 1}, "idToken": {"idToken": "TAG1",
                                                                 "type": "ISO14443"}}
    payload.update(over)
    return call("TransactionEvent", payload)


def meter201(value: Any) -> str:
    return call("MeterValues", {"evseId": 1, "meterValue": [
        {"timestamp": TS, "sampledValue": [{"value": value}]}]})


# (name, OCPP version, raw frame, expected error code): one row of docs/ocpp-errors.md each.
RULES: list[tuple[str, str, str | bytes, str]] = [
    # --- the frame itself ---
    ("binary frame", "1.6", b'[2,"b","Heartbeat",{}]', "FormationViolation"),
    ("binary frame", "2.0.1", b'[2,"b","Heartbeat",{}]', "RpcFrameworkError"),
    ("not JSON", "1.6", '[2,"x","Heartbeat",{', "FormationViolation"),
    ("not JSON", "2.0.1", '[2,"x","Heartbeat",{', "FormatViolation"),
    ("NaN literal", "1.6", '[2,"x","MeterValues",{"connectorId":NaN,"meterValue":[]}]',
     "FormationViolation"),
    ("NaN literal", "2.0.1", '[2,"x","MeterValues",{"evseId":NaN,"meterValue":[]}]',
     "FormatViolation"),
    ("Infinity literal", "1.6", ('[2,"x","StartTransaction",{"connectorId":1,"idTag":"T",'
                                 '"meterStart":Infinity,"timestamp":"2026-11-01T10:00:00Z"}]'),
     "FormationViolation"),
    ("nested 3000 deep", "1.6", DEEP, "FormationViolation"),
    ("nested 3000 deep", "2.0.1", DEEP, "FormatViolation"),
    ("nested 40 deep in a payload", "2.0.1",
     '[2,"x","DataTransfer",{"vendorId":"v","data":' + "[" * 40 + "]" * 40 + "}]",
     "FormatViolation"),
    ("lone UTF-16 surrogate", "1.6", '[2,"x","Authorize",{"idTag":"\\ud800"}]',
     "FormationViolation"),
    ("lone UTF-16 surrogate", "2.0.1", '[2,"x","DataTransfer",{"vendorId":"\\udfff"}]',
     "FormatViolation"),
    ("message id of 37 characters", "1.6", call("Heartbeat", {}, "i" * 37), "FormationViolation"),
    ("message id of 37 characters", "2.0.1", call("Heartbeat", {}, "i" * 37),
     "RpcFrameworkError"),
    ("not an array", "2.0.1", '{"call": "Heartbeat"}', "RpcFrameworkError"),
    ("unknown message type", "1.6", '[7,"x","Heartbeat",{}]', "FormationViolation"),
    ("unknown message type", "2.0.1", '[7,"x","Heartbeat",{}]', "MessageTypeNotSupported"),
    ("unknown action", "1.6", call("MakeCoffee", {}), "NotImplemented"),
    ("unknown action", "2.0.1", call("MakeCoffee", {}), "NotImplemented"),
    # --- the payload against its (strict) schema ---
    ("connectorId -5 starts no session", "1.6", start16(connectorId=-5),
     "PropertyConstraintViolation"),
    ("connectorId 0 starts no session", "1.6", start16(connectorId=0),
     "PropertyConstraintViolation"),
    ("integer of 2^31", "1.6", start16(meterStart=BIG), "TypeConstraintViolation"),
    ("integer of -2^31-1", "1.6", start16(meterStart=-BIG - 1), "TypeConstraintViolation"),
    ("negative meter start", "1.6", start16(meterStart=-1), "PropertyConstraintViolation"),
    ("transactionId of 2^63-1", "1.6", meter16("10", transactionId=2**63 - 1),
     "TypeConstraintViolation"),
    ('sampled value "NaN"', "1.6", meter16("NaN"), "PropertyConstraintViolation"),
    ('sampled value "1e400"', "1.6", meter16("1e400"), "PropertyConstraintViolation"),
    ("sampled value not a number", "1.6", meter16("ten"), "TypeConstraintViolation"),
    ("required property missing", "1.6",
     call("StartTransaction", {"connectorId": 1, "meterStart": 0, "timestamp": TS}),
     "ProtocolError"),
    ("required property missing", "2.0.1",
     call("StatusNotification", {"timestamp": TS, "connectorStatus": "Available", "evseId": 1}),
     "OccurrenceConstraintViolation"),
    ("wrong type", "1.6", start16(connectorId="one"), "TypeConstraintViolation"),
    ("wrong type", "2.0.1", tx201(seqNo="0"), "TypeConstraintViolation"),
    ("string too long", "1.6",
     call("BootNotification", {"chargePointVendor": "v" * 21, "chargePointModel": "m"}),
     "TypeConstraintViolation"),
    ("value outside its enumeration", "1.6",
     call("StatusNotification", {"connectorId": 1, "errorCode": "Bogus", "status": "Available"}),
     "PropertyConstraintViolation"),
    ("bad timestamp", "1.6", start16(timestamp="yesterday"), "TypeConstraintViolation"),
    ("property the schema does not have", "1.6",
     call("Authorize", {"idTag": "TAG1", "extra": 1}), "FormationViolation"),
    ("property the schema does not have", "2.0.1", call("Heartbeat", {"extra": 1}),
     "FormatViolation"),
    ("empty array where one element is required", "2.0.1",
     call("MeterValues", {"evseId": 1, "meterValue": []}), "OccurrenceConstraintViolation"),
    ("empty array where one element is required", "1.6",
     call("MeterValues", {"connectorId": 1, "meterValue": []}), "OccurenceConstraintViolation"),
    ("evse.id 0 starts no transaction", "2.0.1", tx201(evse={"id": 0}),
     "PropertyConstraintViolation"),
    ("evse.id -1 starts no transaction", "2.0.1", tx201(evse={"id": -1}),
     "PropertyConstraintViolation"),
    ("seqNo of 2^31", "2.0.1", tx201(seqNo=BIG), "TypeConstraintViolation"),
    ("evseId -1 in StatusNotification", "2.0.1",
     call("StatusNotification", {"timestamp": TS, "connectorStatus": "Available", "evseId": -1,
                                 "connectorId": 1}), "PropertyConstraintViolation"),
    ("number of 1e400", "2.0.1", ('[2,"x","MeterValues",{"evseId":1,"meterValue":[{"timestamp":'
                                  '"2026-11-01T10:00:00Z","sampledValue":[{"value":1e400}]}]}]'),
     "TypeConstraintViolation"),
    ("number beyond 10^15", "2.0.1", meter201(2e15), "TypeConstraintViolation"),
    ("multiplier of 300", "2.0.1", (
        '[2,"x","MeterValues",{"evseId":1,"meterValue":[{"timestamp":"2026-11-01T10:00:00Z",'
        '"sampledValue":[{"value":1,"unitOfMeasure":{"multiplier":300}}]}]}]'),
     "PropertyConstraintViolation"),
    ("transactionId longer than the column", "2.0.1",
     tx201(transactionInfo={"transactionId": "t" * 37}), "TypeConstraintViolation"),
]

ROW_TABLES = (sessions, meter_samples, tx_events, station_events, connector_status)


async def rows_of(node: Any, station_id: str) -> dict[str, int]:
    async with node.engine.connect() as conn:
        return {t.name: int(await conn.scalar(select(func.count()).select_from(t).where(
            t.c.station_id == station_id)) or 0) for t in ROW_TABLES}


async def good_station(node: Any) -> tuple[RawStation, int]:
    """A 1.6 charger in the middle of a session beside the hostile one."""
    good = await raw_station(node, "GOOD")
    start = await good.call("StartTransaction", {"connectorId": 1, "idTag": "TAG1",
                                                 "meterStart": 1000, "timestamp": TS})
    assert start[0] == 3
    return good, start[2]["transactionId"]


async def still_served(node: Any, bad: RawStation, good: RawStation, tx: int,
                       meter: int) -> None:
    assert (await bad.call("Heartbeat", {}))[0] == 3
    answer = await good.call("MeterValues", {"connectorId": 1, "transactionId": tx, "meterValue": [
        {"timestamp": "2026-11-01T10:05:00Z", "sampledValue": [{"value": str(meter)}]}]})
    assert answer[0] == 3


@pytest.mark.parametrize("name,version,frame,code", RULES,
                         ids=[f"{r[1]}: {r[0]}" for r in RULES])
async def test_each_rule_answers_its_code_and_stores_nothing(node, name, version, frame, code):
    await register(node, "BAD", "GOOD")
    good, tx = await good_station(node)
    bad = await raw_station(node, "BAD", "ocpp1.6" if version == "1.6" else "ocpp2.0.1")
    before = await rows_of(node, "BAD")
    answer = await bad.send_raw(frame)
    assert answer[0] == 4 and answer[2] == code, (name, answer)
    await still_served(node, bad, good, tx, 1500)
    assert await rows_of(node, "BAD") == before, name
    stop = await good.call("StopTransaction", {"transactionId": tx, "meterStop": 2000,
                                               "timestamp": "2026-11-01T10:10:00Z"})
    assert stop[0] == 3
    [session] = await registry.list_sessions(node.engine, "GOOD")
    assert session["energy_wh"] == 1000


async def test_the_rules_table_in_the_docs_lists_every_code_we_test():
    from pathlib import Path

    table = (Path(__file__).parents[2] / "docs" / "ocpp-errors.md").read_text()
    for _, _, _, code in RULES:
        assert code in table, code


async def test_station_ids_are_bounded_at_the_handshake(node):
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from tests.conftest import ws_url

    for bad_id in ("x" * 65, "CP%0A1"):
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{ws_url(node)}/{bad_id}", subprotocols=["ocpp1.6"])
        assert refused.value.response.status_code == 404
