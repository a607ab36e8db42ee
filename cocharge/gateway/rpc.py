"""The OCPP-J RPC core, sans I/O: text frames in, events out; our calls and answers out as text.

It knows framing, message ids, the correlation of our one outstanding call with its answer,
schema validation of both directions, and the CallError codes of each OCPP version. It does
no I/O and no waiting: `gateway/connection.py` moves the frames over the WebSocket.

    rpc = RpcCore("1.6")
    event = rpc.receive(text)          # Call | Answer | Reply | None
    frame = rpc.result(call, payload)  # our CallResult (validated against the response schema)
    unique_id, frame = rpc.call("Reset", {"type": "Soft"})   # our call; its Answer comes later

Everything that can be wrong with a frame is decided here, once, for both versions.
"""

from __future__ import annotations

import ast
import copy
import functools
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
import ocpp.messages
import orjson

# The message id is at most 36 characters (OCPP-J: a UUID fits).
MAX_MESSAGE_ID = 36
CALL, CALLRESULT, CALLERROR = 2, 3, 4
# OCPP-J 2.1: an error about a CALLRESULT (the station found our answer wrong), and a message
# that is never answered (periodic event streams).
CALLRESULTERROR, SEND = 5, 6
# What a 2.1 station sends as SEND (its schema is named without "Request": nothing answers it).
SEND_ACTIONS = frozenset({"NotifyPeriodicEventStream"})
# Arrays and objects nested deeper than this are refused before they are parsed. The deepest
# OCPP frame (a 2.0.1 charging profile with a sales tariff) nests 12 levels.
MAX_DEPTH = 32
# OCPP's "integer" is 32 bits (2.0.1 part 2, primitive datatypes), and so are the database
# columns that hold connector ids, sequence numbers and meter starts.
INT_MIN, INT_MAX = -2**31, 2**31 - 1
# OCPP's "decimal"/"number": finite and within what a meter or a limit can be. A float
# column keeps integers exact up to 2^53; 10^15 leaves room for sums of many of them.
NUMBER_LIMIT = 1e15


@dataclass(frozen=True)
class ErrorCodes:
    """The CallError codes of one OCPP version, by what went wrong."""

    not_json: str            # the frame is not valid JSON (or nests too deep)
    not_rpc: str             # JSON, but not [MessageTypeId, UniqueId, ...]
    message_type: str        # a MessageTypeId we do not know
    format: str              # payload syntactically wrong (a property the schema does not have)
    occurrence: str          # too few or too many elements in an array
    missing: str             # a required property missing
    property: str            # a value outside its allowed range or set
    type: str                # a value of the wrong type, or too long for its type
    protocol: str            # the payload does not fit the PDU structure
    not_implemented: str     # an action this version does not have
    not_supported: str       # an action of this version that we do not handle
    security: str
    internal: str
    generic: str


ERROR_CODES: dict[str, ErrorCodes] = {
    # OCPP-J 1.6 spells two codes its own way ("Formation", "Occurence").
    "1.6": ErrorCodes(not_json="FormationViolation", not_rpc="FormationViolation",
                      message_type="FormationViolation", format="FormationViolation",
                      occurrence="OccurenceConstraintViolation",
                      # 1.6: "ProtocolError: Payload for Action is incomplete".
                      missing="ProtocolError",
                      property="PropertyConstraintViolation", type="TypeConstraintViolation",
                      protocol="ProtocolError", not_implemented="NotImplemented",
                      not_supported="NotSupported", security="SecurityError",
                      internal="InternalError", generic="GenericError"),
    "2.0.1": ErrorCodes(not_json="FormatViolation", not_rpc="RpcFrameworkError",
                        message_type="MessageTypeNotSupported", format="FormatViolation",
                        occurrence="OccurrenceConstraintViolation",
                        # 2.0.1's ProtocolError is about the PDU structure; a missing
                        # property breaks its occurrence constraint (minOccurs 1).
                        missing="OccurrenceConstraintViolation",
                        property="PropertyConstraintViolation", type="TypeConstraintViolation",
                        protocol="ProtocolError", not_implemented="NotImplemented",
                        not_supported="NotSupported", security="SecurityError",
                        internal="InternalError", generic="GenericError"),
}
# OCPP-J 2.1 keeps 2.0.1's codes (RPC framework part 4, "RPC Framework Error Codes").
ERROR_CODES["2.1"] = ERROR_CODES["2.0.1"]

# The calls a central system sends to a station, per version (1.6 with its security
# extension): what `cocharge remote call` may send.
TO_STATION: dict[str, frozenset[str]] = {
    "1.6": frozenset({
        "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache",
        "ClearChargingProfile", "DataTransfer", "GetCompositeSchedule", "GetConfiguration",
        "GetDiagnostics", "GetLocalListVersion", "RemoteStartTransaction",
        "RemoteStopTransaction", "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile",
        "TriggerMessage", "UnlockConnector", "UpdateFirmware", "CertificateSigned",
        "DeleteCertificate", "ExtendedTriggerMessage", "GetInstalledCertificateIds", "GetLog",
        "InstallCertificate", "SignedUpdateFirmware"}),
    "2.0.1": frozenset({
        "CancelReservation", "CertificateSigned", "ChangeAvailability", "ClearCache",
        "ClearChargingProfile", "ClearDisplayMessage", "ClearVariableMonitoring", "CostUpdated",
        "CustomerInformation", "DataTransfer", "DeleteCertificate", "GetBaseReport",
        "GetChargingProfiles", "GetCompositeSchedule", "GetDisplayMessages",
        "GetInstalledCertificateIds", "GetLocalListVersion", "GetLog", "GetMonitoringReport",
        "GetReport", "GetTransactionStatus", "GetVariables", "InstallCertificate",
        "PublishFirmware", "RequestStartTransaction", "RequestStopTransaction", "ReserveNow",
        "Reset", "SendLocalList", "SetChargingProfile", "SetDisplayMessage",
        "SetMonitoringBase", "SetMonitoringLevel", "SetNetworkProfile", "SetVariableMonitoring",
        "SetVariables", "TriggerMessage", "UnlockConnector", "UnpublishFirmware",
        "UpdateFirmware"}),
}
TO_STATION["2.1"] = TO_STATION["2.0.1"] | frozenset({
    "AFRRSignal", "AdjustPeriodicEventStream", "ChangeTransactionTariff", "ClearDERControl",
    "ClearTariffs", "GetDERControl", "GetPeriodicEventStream", "GetTariffs",
    "NotifyAllowedEnergyTransfer", "NotifyWebPaymentStarted", "RequestBatterySwap",
    "SetDERControl", "SetDefaultTariff", "UpdateDynamicSchedule", "UsePriorityCharging"})

# fastjsonschema's failed rule -> the kind of violation (a field of ErrorCodes). A bound
# that is the range of the OCPP type itself (INT_MIN..INT_MAX, NUMBER_LIMIT) is a type
# violation; a bound the specification sets (ids start at 1) is a property violation.
_RULE_KIND = {"type": "type", "maxLength": "type", "minLength": "type", "minimum": "property",
              "maximum": "property", "enum": "property", "pattern": "property",
              "format": "type", "required": "missing", "minItems": "occurrence",
              "maxItems": "occurrence", "additionalProperties": "format"}
_TYPE_BOUNDS = {INT_MIN, INT_MAX, NUMBER_LIMIT, -NUMBER_LIMIT}

# Lower bounds the specification sets where its schemas do not: (version, schema) -> paths.
# A path names properties; a definition ("EVSEType.id") applies in every schema that uses it.
SPEC_MINIMUM: dict[str, dict[str, int]] = {
    "1.6": {
        # 1.6 §4.8: a transaction is on a connector (> 0); 0 is the charge point as a whole.
        "StartTransaction.connectorId": 1,
        "StatusNotification.connectorId": 0,
        "MeterValues.connectorId": 0,
        "StartTransaction.meterStart": 0,
        "StopTransaction.meterStop": 0,
    },
    "2.0.1": {
        # 2.0.1 part 2, EVSEType: "id: EVSE Identifier. This contains a number (> 0)".
        "EVSEType.id": 1,
        "EVSEType.connectorId": 1,
        # StatusNotification with evse 0 / connector 0 is the station as a whole (as 1.6's
        # connector 0): chargers send it at cold boot and the official schema allows it.
        "StatusNotificationRequest.evseId": 0,
        "StatusNotificationRequest.connectorId": 0,
        "MeterValuesRequest.evseId": 0,
        "TransactionEventRequest.seqNo": 0,
    },
}
SPEC_MINIMUM["2.1"] = SPEC_MINIMUM["2.0.1"]


class RpcError(Exception):
    """A violation to answer with a CallError: `kind` names the code in `ErrorCodes`."""

    def __init__(self, kind: str, description: str, cause: str | None = None) -> None:
        super().__init__(description)
        self.kind = kind
        self.description = description
        self.cause = cause


@dataclass(frozen=True)
class Call:
    """A request from the station (`text`: the frame it came in)."""

    unique_id: str
    action: str
    payload: dict[str, Any]
    text: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Answer:
    """The station's answer to our outstanding call: a payload, or a CallError."""

    unique_id: str
    action: str
    payload: dict[str, Any] | None = None
    error_code: str | None = None
    error_description: str = ""
    error_details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Send:
    """A 2.1 SEND from the station: a message that is never answered."""

    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class ResultError:
    """A 2.1 CALLRESULTERROR: the station says our answer to its call was wrong."""

    unique_id: str
    error_code: str
    error_description: str
    error_details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A frame to send back at once (a CallError for a frame that could not be a Call)."""

    frame: str
    reason: str


def _schema_path(version: str, name: str) -> str:
    return os.path.join(os.path.dirname(ocpp.messages.__file__), f"v{version.replace('.', '')}",
                        "schemas", f"{name}.json")


def _bound_numbers(node: Any) -> None:
    """Give every integer and number of a schema the range of its OCPP type."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "integer":
            node.setdefault("minimum", INT_MIN)
            node.setdefault("maximum", INT_MAX)
        elif kind == "number":
            node.setdefault("minimum", -NUMBER_LIMIT)
            node.setdefault("maximum", NUMBER_LIMIT)
        for value in node.values():
            _bound_numbers(value)
    elif isinstance(node, list):
        for value in node:
            _bound_numbers(value)


def _inline_refs(node: Any, definitions: dict[str, Any], within: tuple[str, ...] = ()) -> Any:
    """`node` with each `{"$ref": "#/definitions/X"}` replaced by X itself (a definition that
    refers to itself, directly or not, stays a reference). fastjsonschema compiles a reference
    to a function called with the value's path built as text: three references deep for each
    2.0.1 sampled value, about half the cost of validating it. The same checks, errors and
    defaults filled in."""
    if isinstance(node, list):
        return [_inline_refs(value, definitions, within) for value in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        name = ref[len("#/definitions/"):]
        if name in definitions and name not in within:
            inlined = _inline_refs(definitions[name], definitions, (*within, name))
            # A definition's own default was never filled in through a reference (the
            # compiled check fills in the defaults of properties written in place): nor now.
            return ({key: value for key, value in inlined.items() if key != "default"}
                    if isinstance(inlined, dict) else inlined)
        return node
    return {key: (value if key == "definitions" else _inline_refs(value, definitions, within))
            for key, value in node.items()}


def _drop_inert(node: Any) -> None:
    """Remove `additionalProperties` where it can never apply: on a string, number or array
    (the 1.6 schemas put it on every enum). A value that is an object fails such a schema's
    type first, so nothing passes or fails differently; the compiled check loses a test."""
    if isinstance(node, dict):
        kind = node.get("type")
        if isinstance(kind, str) and kind != "object" and isinstance(
                node.get("additionalProperties"), bool):
            del node["additionalProperties"]
        for value in node.values():
            _drop_inert(value)
    elif isinstance(node, list):
        for value in node:
            _drop_inert(value)


def _bound_ids(schema: dict[str, Any], version: str, name: str) -> None:
    """The lower bounds of SPEC_MINIMUM that concern schema `name`."""
    definitions = schema.get("definitions", {})
    for path, minimum in SPEC_MINIMUM[version].items():
        owner, prop = path.split(".")
        if owner == name:
            target = schema
        elif owner in definitions:
            target = definitions[owner]
        else:
            continue
        node = target.get("properties", {}).get(prop)
        if node is not None:
            node["minimum"] = max(minimum, node.get("minimum", minimum))


def schema_name(version: str, action: str, response: bool) -> str:
    if version == "1.6" or (action in SEND_ACTIONS and not response):
        return f"{action}Response" if response else action
    return f"{action}{'Response' if response else 'Request'}"


@functools.cache
def strict_schema(version: str, action: str, response: bool) -> dict[str, Any]:
    """The OCPP JSON schema of `action`, with the bounds OCPP states in words added."""
    name = schema_name(version, action, response)
    with open(_schema_path(version, name), encoding="utf-8-sig") as schema_file:
        schema: dict[str, Any] = json.load(schema_file)
    _bound_numbers(schema)
    _bound_ids(schema, version, name)
    return schema


@functools.cache
def _validator(version: str, action: str, response: bool) -> Any:
    """An OCPP JSON schema compiled to Python once (10-20x faster than interpreting it), with
    its references written in place and its enums checked by one set lookup each."""
    schema = copy.deepcopy(strict_schema(version, action, response))
    schema = _inline_refs(schema, schema.get("definitions", {}))
    _drop_inert(schema)
    source = _ENUM_TEST.sub(_enum_as_set, fastjsonschema.compile_to_code(schema))
    source = _required_as_constants(source)
    scope: dict[str, Any] = {}
    exec(compile(source, f"<schema of {version} {schema_name(version, action, response)}>",
                 "exec"), scope)
    entry = _FIRST_FUNCTION.search(source)
    assert entry is not None, "fastjsonschema generated no function"
    return scope[entry.group(1)]  # the first function generated is the whole schema's


_FIRST_FUNCTION = re.compile(r"^def (\w+)\(", re.MULTILINE)
_ENUM_TEST = re.compile(r"^( *)if not \((isinstance\(\w+, str\) and .*)\):$", re.MULTILINE)


_MISSING_KEYS = re.compile(r"^( *\w+__missing_keys = )set\((\[[^\]\n]*\])\) - (\w+)\.keys\(\)$",
                           re.MULTILINE)


def _required_as_constants(source: str) -> str:
    """`missing = set(["a", "b"]) - value.keys()` (an object's required properties: a list and
    a set built for every object checked) as a difference with a constant set, made once:
    the same keys found missing, a quarter of the time."""
    constants: list[str] = []

    def hoisted(line: re.Match[str]) -> str:
        constants.append(f"_REQUIRED_{len(constants)} = frozenset({line.group(2)})")
        return f"{line.group(1)}_REQUIRED_{len(constants) - 1}.difference({line.group(3)})"

    source = _MISSING_KEYS.sub(hoisted, source)
    return source + "\n" + "\n".join(constants) + "\n"


def _enum_as_set(line: re.Match[str]) -> str:
    """fastjsonschema checks a string enum value by value (`isinstance(v, str) and v == "A" or
    isinstance(v, str) and v == "B" or ...`: 22 comparisons for a 1.6 measurand, half of a
    nine-value MeterValues' validation). The same test as one lookup in a constant set; what
    passes, what fails and the error raised are unchanged. A line that is anything else is
    kept as it is."""
    try:
        test = ast.parse(line.group(2), mode="eval").body
    except SyntaxError:
        return line.group(0)
    if not isinstance(test, ast.BoolOp) or not isinstance(test.op, ast.Or):
        return line.group(0)
    terms = [_string_equal(term) for term in test.values]
    names = {term[0] for term in terms if term is not None}
    if None in terms or len(names) != 1:
        return line.group(0)
    name = names.pop()
    values = ", ".join(repr(term[1]) for term in terms if term is not None)
    return f"{line.group(1)}if not (isinstance({name}, str) and {name} in {{{values}}}):"


def _string_equal(term: ast.expr) -> tuple[str, str] | None:
    """(v, "A") of the term `isinstance(v, str) and v == "A"`, else None."""
    if not (isinstance(term, ast.BoolOp) and isinstance(term.op, ast.And)
            and len(term.values) == 2):
        return None
    check, compare = term.values
    if not (isinstance(check, ast.Call) and isinstance(check.func, ast.Name)
            and check.func.id == "isinstance" and len(check.args) == 2 and not check.keywords
            and isinstance(check.args[0], ast.Name) and isinstance(check.args[1], ast.Name)
            and check.args[1].id == "str"):
        return None
    name = check.args[0].id
    if not (isinstance(compare, ast.Compare) and isinstance(compare.left, ast.Name)
            and compare.left.id == name and len(compare.ops) == 1
            and isinstance(compare.ops[0], ast.Eq) and len(compare.comparators) == 1
            and isinstance(compare.comparators[0], ast.Constant)
            and type(compare.comparators[0].value) is str):
        return None
    return name, compare.comparators[0].value


def violation_kind(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """Which kind of CallError a schema violation is (see docs/ocpp-errors.md)."""
    rule = exc.rule or ""
    if rule in ("minimum", "maximum") and (
            exc.rule_definition in _TYPE_BOUNDS
            or isinstance(exc.value, int) and not INT_MIN <= exc.value <= INT_MAX):
        return "type"  # beyond the OCPP type, whatever the specification's own bound
    return _RULE_KIND.get(rule, "format")


def validate(version: str, action: str, payload: dict[str, Any], response: bool = False) -> None:
    """Raise the RpcError the schema violation calls for."""
    try:
        _validator(version, action, response)(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise RpcError(violation_kind(exc), f"{action} payload does not match its schema",
                       exc.message) from None


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def nesting(text: str) -> int:
    """How deep arrays and objects nest in a JSON text (an upper bound for broken text)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # cannot be deeper than this: the usual frame costs two counts
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _has_lone_surrogate(frame: Any) -> bool:
    """JSON's \\uD800-style escapes can encode half a UTF-16 pair: not a character."""
    try:
        _dumps(frame).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _dumps(frame: Any) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# Answers already found to fit their response schema, by their JSON text: the same text is
# the same payload, so it fits again.
_VALID_ANSWERS: set[tuple[str, str, str]] = set()
_VALID_ANSWERS_KEPT = 4096


class RpcCore:
    """One station's OCPP-J conversation, without the socket."""

    def __init__(self, version: str) -> None:
        if version not in ERROR_CODES:
            raise ValueError(f"unknown OCPP version {version!r}")
        self.version = version
        self.codes = ERROR_CODES[version]
        self._ids = itertools.count(1)
        # OCPP-J: one call at a time in each direction; ours waits for its answer here.
        self.pending: tuple[str, str] | None = None

    # --- frames from the station -----------------------------------------------------------

    def receive(self, text: str | bytes) -> Call | Answer | Send | ResultError | Reply | None:
        """One frame from the station; None when it is to be dropped (a stray answer)."""
        if isinstance(text, bytes):
            return self._reply("-1", "not_rpc", "OCPP-J frames are text frames, not binary")
        if nesting(text) > MAX_DEPTH:
            return self._reply("-1", "not_json", f"frame nests deeper than {MAX_DEPTH} levels")
        try:  # the fast parser takes every well-formed frame (3x the standard library's speed)
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            # What it refuses is decided as before: a number beyond a double, a lone
            # surrogate are JSON to the standard library, and wrong only for OCPP.
            try:
                frame = json.loads(text, parse_constant=_reject_constant)
            except (ValueError, RecursionError):
                return self._reply("-1", "not_json", "frame is not valid JSON")
            if "\\u" in text and _has_lone_surrogate(frame):
                return self._reply("-1", "not_json", "frame holds a lone UTF-16 surrogate")
        if (self.version == "2.1" and isinstance(frame, list) and frame and frame[0] == SEND
                and not isinstance(frame[0], bool)):
            if (len(frame) != 4 or not isinstance(frame[1], str) or len(frame[1]) > MAX_MESSAGE_ID
                    or not isinstance(frame[2], str) or not isinstance(frame[3], dict)):
                return None  # a SEND is never answered, not even with an error
            return Send(frame[1], frame[2], frame[3])
        if not isinstance(frame, list) or len(frame) < 3 or not isinstance(frame[1], str):
            unique_id = (frame[1] if isinstance(frame, list) and len(frame) > 1
                         and isinstance(frame[1], str) and len(frame[1]) <= MAX_MESSAGE_ID
                         else "-1")
            return self._reply(unique_id, "not_rpc", "expected [MessageTypeId, UniqueId, ...]")
        type_id, unique_id = frame[0], frame[1]
        if len(unique_id) > MAX_MESSAGE_ID:
            return self._reply("-1", "not_rpc",
                               f"UniqueId is longer than {MAX_MESSAGE_ID} characters")
        if type_id == CALL and not isinstance(type_id, bool):
            if len(frame) != 4 or not isinstance(frame[2], str) or not isinstance(frame[3], dict):
                return self._reply(unique_id, "not_rpc",
                                   "a CALL is [2, UniqueId, Action, {payload}]")
            return Call(unique_id, frame[2], frame[3], text)
        if type_id in (CALLRESULT, CALLERROR) and not isinstance(type_id, bool):
            return self._answer(type_id, unique_id, frame)
        if self.version == "2.1" and type_id == CALLRESULTERROR and not isinstance(type_id, bool):
            if len(frame) not in (4, 5) or not isinstance(frame[2], str):
                return None
            details = frame[4] if len(frame) == 5 and isinstance(frame[4], dict) else {}
            return ResultError(unique_id, frame[2], str(frame[3])[:255], details)
        return self._reply(unique_id, "message_type", f"message type {type_id!r} is not supported")

    def _answer(self, type_id: int, unique_id: str, frame: list[Any]) -> Answer | None:
        if self.pending is None or self.pending[0] != unique_id:
            return None  # an answer to no call of ours (late, or made up): dropped
        action = self.pending[1]
        if type_id == CALLRESULT and len(frame) == 3 and isinstance(frame[2], dict):
            self.pending = None
            return Answer(unique_id, action, payload=frame[2])
        if type_id == CALLERROR and len(frame) in (4, 5) and isinstance(frame[2], str):
            self.pending = None
            details = frame[4] if len(frame) == 5 and isinstance(frame[4], dict) else {}
            return Answer(unique_id, action, error_code=frame[2],
                          error_description=str(frame[3]), error_details=details)
        return None

    def _reply(self, unique_id: str, kind: str, description: str) -> Reply:
        return Reply(self.error(unique_id, kind, description), description)

    # --- frames to the station -------------------------------------------------------------

    def result(self, call: Call, payload: dict[str, Any]) -> str:
        """Our CallResult to `call`; a payload outside the response schema is our bug."""
        body = _dumps(payload) if payload else "{}"
        key = (self.version, call.action, body)
        if key not in _VALID_ANSWERS:  # most answers are one of a few texts: checked once
            validate(self.version, call.action, payload, response=True)
            if len(_VALID_ANSWERS) >= _VALID_ANSWERS_KEPT:
                _VALID_ANSWERS.clear()
            _VALID_ANSWERS.add(key)
        return f"[{CALLRESULT},{orjson.dumps(call.unique_id).decode()},{body}]"

    def error(self, unique_id: str, kind: str, description: str, cause: str | None = None) -> str:
        """A CallError with this version's code for `kind` (a field of ErrorCodes)."""
        code = getattr(self.codes, kind)
        details = {"cause": cause[:500]} if cause else {}
        return _dumps([CALLERROR, unique_id, code, description[:255], details])

    def call(self, action: str, payload: dict[str, Any]) -> tuple[str, str]:
        """A call of ours: (message id, frame). Only one may be outstanding (OCPP-J)."""
        if self.pending is not None:
            raise RuntimeError(f"call {self.pending[1]} is still waiting for its answer")
        validate(self.version, action, payload)
        unique_id = str(next(self._ids))
        self.pending = (unique_id, action)
        return unique_id, _dumps([CALL, unique_id, action, payload])

    def abandon(self) -> None:
        """Our outstanding call timed out: a late answer to it will be dropped."""
        self.pending = None
