"""The OCPP-J RPC core without a socket: frames in, events out, our calls correlated."""

from __future__ import annotations

import json

import pytest

from cocharge.gateway.rpc import ERROR_CODES, Answer, Call, Reply, RpcCore, RpcError, validate


def code_of(reply: object) -> str:
    assert isinstance(reply, Reply), reply
    frame = json.loads(reply.frame)
    assert frame[0] == 4
    return str(frame[2])


def test_a_call_becomes_a_call_event():
    event = RpcCore("1.6").receive('[2, "a1", "Heartbeat", {}]')
    assert event == Call("a1", "Heartbeat", {})


@pytest.mark.parametrize("version,frame,code", [
    ("1.6", "{nope", "FormationViolation"),
    ("2.0.1", "{nope", "FormatViolation"),
    ("1.6", '{"a": 1}', "FormationViolation"),
    ("2.0.1", '{"a": 1}', "RpcFrameworkError"),
    ("1.6", '[9, "x", "Heartbeat", {}]', "FormationViolation"),
    ("2.0.1", '[9, "x", "Heartbeat", {}]', "MessageTypeNotSupported"),
    ("2.0.1", '[2, "x", "Heartbeat", []]', "RpcFrameworkError"),
    ("2.0.1", '[2, "x", "MeterValues", {"evseId": NaN}]', "FormatViolation"),
    ("1.6", '[2, "x", "Heartbeat", {"a": Infinity}]', "FormationViolation"),
    ("2.0.1", "[" * 100_000 + "]" * 100_000, "FormatViolation"),
])
def test_frames_that_are_not_calls_get_the_code_of_their_version(version, frame, code):
    assert code_of(RpcCore(version).receive(frame)) == code


def test_message_ids_longer_than_36_characters_are_refused():
    reply = RpcCore("2.0.1").receive(json.dumps([2, "x" * 37, "Heartbeat", {}]))
    assert code_of(reply) == "RpcFrameworkError"
    assert json.loads(reply.frame)[1] == "-1"  # the id is not echoed back


def test_binary_frames_are_not_ocpp():
    assert code_of(RpcCore("1.6").receive(b'[2, "a", "Heartbeat", {}]')) == "FormationViolation"


def test_our_call_is_answered_by_its_id_only():
    rpc = RpcCore("1.6")
    unique_id, frame = rpc.call("Reset", {"type": "Soft"})
    assert json.loads(frame) == [2, unique_id, "Reset", {"type": "Soft"}]
    with pytest.raises(RuntimeError):
        rpc.call("Reset", {"type": "Hard"})  # OCPP-J: one call at a time
    assert rpc.receive(json.dumps([3, "not-ours", {"status": "Accepted"}])) is None
    answer = rpc.receive(json.dumps([3, unique_id, {"status": "Accepted"}]))
    assert answer == Answer(unique_id, "Reset", payload={"status": "Accepted"})
    assert rpc.receive(json.dumps([3, unique_id, {"status": "Accepted"}])) is None  # late repeat


def test_a_call_error_answers_our_call():
    rpc = RpcCore("2.0.1")
    unique_id, _ = rpc.call("Reset", {"type": "Immediate"})
    answer = rpc.receive(json.dumps([4, unique_id, "NotSupported", "no", {"a": 1}]))
    assert isinstance(answer, Answer) and answer.error_code == "NotSupported"
    assert answer.error_details == {"a": 1} and rpc.pending is None


def test_an_abandoned_call_drops_its_late_answer():
    rpc = RpcCore("1.6")
    unique_id, _ = rpc.call("ClearCache", {})
    rpc.abandon()
    assert rpc.receive(json.dumps([3, unique_id, {"status": "Accepted"}])) is None


def test_our_calls_are_checked_against_the_schema_before_they_leave():
    with pytest.raises(RpcError):
        RpcCore("1.6").call("Reset", {"type": "Sideways"})


def test_our_results_are_checked_against_the_response_schema():
    rpc = RpcCore("1.6")
    call = Call("a", "Heartbeat", {})
    assert json.loads(rpc.result(call, {"currentTime": "2026-11-01T00:00:00Z"})) == [
        3, "a", {"currentTime": "2026-11-01T00:00:00Z"}]
    with pytest.raises(RpcError):
        rpc.result(call, {})


@pytest.mark.parametrize("payload,kind", [
    ({"chargePointVendor": "v"}, "missing"),                         # required missing
    ({"chargePointVendor": 5, "chargePointModel": "m"}, "type"),     # wrong type
    ({"chargePointVendor": "v" * 21, "chargePointModel": "m"}, "type"),  # too long
    ({"chargePointVendor": "v", "chargePointModel": "m", "x": 1}, "format"),  # unknown field
])
def test_schema_violations_map_to_their_kind(payload, kind):
    with pytest.raises(RpcError) as raised:
        validate("1.6", "BootNotification", payload)
    assert raised.value.kind == kind


def test_both_versions_spell_their_codes():
    assert ERROR_CODES["1.6"].occurrence == "OccurenceConstraintViolation"
    assert ERROR_CODES["2.0.1"].occurrence == "OccurrenceConstraintViolation"
    assert ERROR_CODES["1.6"].format == "FormationViolation"
    assert ERROR_CODES["2.0.1"].format == "FormatViolation"


def test_handler_arguments_are_snake_case_but_under_the_raw_keys():
    """What a handler is called with: every key in snake_case all the way down, but the
    values of the version's raw keys (the meter values its parser reads) as sent."""
    from cocharge.gateway.connection import handler_arguments
    from cocharge.gateway.v16 import V16Connection
    from cocharge.gateway.v21 import V21Connection
    from cocharge.gateway.v201 import V201Connection

    meter = [{"timestamp": "2026-12-05T10:00:00Z", "sampledValue": [
        {"value": 5, "unitOfMeasure": {"unit": "Wh", "multiplier": 3}}]}]
    payload = {"evseId": 1, "meterValue": meter,
               "transactionInfo": {"transactionId": "t1", "chargingState": "Charging"},
               "idToken": {"idToken": "TAG", "additionalInfo": [{"additionalIdToken": "x"}]}}
    arguments = handler_arguments(payload, V201Connection.RAW_ARGUMENTS)
    assert arguments == {
        "evse_id": 1, "meter_value": meter,
        "transaction_info": {"transaction_id": "t1", "charging_state": "Charging"},
        "id_token": {"id_token": "TAG", "additional_info": [{"additional_id_token": "x"}]}}
    assert arguments["meter_value"] is meter  # as sent
    assert handler_arguments(payload, frozenset())["meter_value"] == [
        {"timestamp": "2026-12-05T10:00:00Z", "sampled_value": [
            {"value": 5, "unit_of_measure": {"unit": "Wh", "multiplier": 3}}]}]
    assert V21Connection.RAW_ARGUMENTS == V201Connection.RAW_ARGUMENTS == {"meterValue"}
    assert V16Connection.RAW_ARGUMENTS == {"meterValue", "transactionData"}
