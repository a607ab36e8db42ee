"""What both OCPP versions share: framing errors, admission gate, commands to the station.

Each version's handler class (`v16.py`, `v201.py`) subclasses `StationConnection` and
owns everything that differs between the versions.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any, ClassVar

import fastjsonschema
import ocpp.messages
from ocpp.charge_point import (
    ChargePoint,
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import (
    FormatViolationError,
    OCPPError,
    ProtocolError,
    TypeConstraintViolationError,
    UnknownCallErrorCodeError,
)
from ocpp.messages import Call, CallError, CallResult, MessageType

from cocharge.config import GatewaySettings
from cocharge.stations.commands import Command, CommandFailed, CommandResult
from cocharge.stations.events import Admission, MeterSample
from cocharge.stations.service import StationService

# Validating a small payload costs less than the thread hop the library makes by default.
ocpp.messages.ASYNC_VALIDATION = False

log = logging.getLogger(__name__)
ocpp_log = logging.getLogger("cocharge.ocpp")

ACCEPTED_STATUSES = {"Accepted", "Unlocked", "Scheduled", "RebootRequired"}
# Unit prefixes we fold so that energy is always Wh and power always W.
_KILO_UNITS = {"kWh": "Wh", "kW": "W", "kvarh": "varh", "kvar": "var", "kVA": "VA"}


def parse_time(value: str) -> datetime:
    """An OCPP timestamp as naive UTC; a charger's bad timestamp is its error, not ours."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise TypeConstraintViolationError(details={"cause": f"not an ISO 8601 timestamp: {value!r}"})
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def iso(value: datetime) -> str:
    """A naive UTC datetime as an OCPP timestamp."""
    return value.replace(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def normalise_sample(at: datetime, measurand: str | None, value: float, unit: str | None,
                     phase: str | None, context: str | None) -> MeterSample:
    """A sample in base units: kWh becomes Wh, kW becomes W."""
    measurand = measurand or "Energy.Active.Import.Register"
    if unit is None and measurand.startswith("Energy.Active"):
        unit = "Wh"
    if unit in _KILO_UNITS:
        value, unit = value * 1000, _KILO_UNITS[unit]
    return MeterSample(at=at, measurand=measurand, value=value, unit=unit, phase=phase,
                       context=context)


@functools.cache
def request_validator(version: str, action: str) -> Any:
    """The OCPP JSON schema of a request, compiled to Python once (10-20x faster than jsonschema)."""
    name = action if version == "1.6" else f"{action}Request"
    path = os.path.join(os.path.dirname(ocpp.messages.__file__),
                        f"v{version.replace('.', '')}", "schemas", f"{name}.json")
    with open(path, encoding="utf-8-sig") as schema_file:
        return fastjsonschema.compile(json.load(schema_file))


def validate_request(version: str, action: str, payload: dict[str, Any]) -> None:
    """Raise the OCPPError the schema violation calls for (codes as the ocpp library maps them)."""
    try:
        request_validator(version, action)(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        cause = {"cause": exc.message}
        if exc.rule in ("type", "maxLength", "minimum", "maximum", "enum"):
            raise TypeConstraintViolationError(details=cause) from None
        if exc.rule == "required":
            raise ProtocolError(details=cause) from None
        raise FormatViolationError(details=cause) from None


@functools.lru_cache(maxsize=4096)
def _snake_key(key: str) -> str:
    return next(iter(camel_to_snake_case({key: None})))


@functools.lru_cache(maxsize=4096)
def _camel_key(key: str) -> str:
    return next(iter(snake_to_camel_case({key: None})))


def _convert_keys(data: Any, key: Any) -> Any:
    if isinstance(data, dict):
        return {key(k): _convert_keys(v, key) for k, v in data.items()}
    if isinstance(data, list):
        return [_convert_keys(v, key) for v in data]
    return data


def as_camel_dict(payload: Any) -> dict[str, Any]:
    """A call-result dataclass as the JSON object the station sent."""
    result = snake_to_camel_case(remove_nones(serialize_as_dict(payload)))
    return result if isinstance(result, dict) else {}


class StationConnection(ChargePoint):
    """One connected station; subclasses handle one OCPP version each."""

    protocol: ClassVar[str]
    # CallError codes for frames that are not OCPP-J at all, per version.
    ERR_NOT_JSON: ClassVar[str]
    ERR_NOT_RPC: ClassVar[str]
    ERR_MESSAGE_TYPE: ClassVar[str]
    # Library error codes spelled differently by this version.
    ERROR_SPELLING: ClassVar[dict[str, str]] = {}
    ACTIONS: ClassVar[frozenset[str]]

    def __init__(self, station_id: str, websocket: Any, service: StationService,
                 settings: GatewaySettings, admission: Admission | None) -> None:
        super().__init__(station_id, websocket, response_timeout=settings.call_timeout_s,
                         logger=ocpp_log)
        self.service = service
        self.settings = settings
        # None until a BootNotification for an unknown station; ACCEPTED for a registered
        # station that reconnects without rebooting (chargers do not always boot again).
        self.admission = admission
        self.websocket = websocket
        # Set while no charger message is being answered: commands wait for it, so that
        # what a handler starts (a TxProfile after StartTransaction) follows its answer.
        self._answered = asyncio.Event()
        self._answered.set()
        self._answering = 0

    # --- incoming frames -------------------------------------------------------------------

    async def _send_error(self, unique_id: str, code: str, description: str,
                          details: dict[str, Any] | None = None) -> None:
        await self._send(CallError(unique_id, code, description, details or {}).to_json())

    def _error_parts(self, error: OCPPError) -> tuple[str, str, dict[str, Any]]:
        code = self.ERROR_SPELLING.get(error.code, error.code)
        details = error.details if isinstance(error.details, dict) else {}
        cause = details.get("cause")
        return code, str(error.description), ({"cause": str(cause)} if cause else {})

    async def route_message(self, raw_msg: str | bytes) -> None:  # noqa: C901 - one frame, many ways to be wrong
        self.service.seen(self.id)
        try:
            frame = json.loads(raw_msg)
        except (ValueError, UnicodeDecodeError):
            log.warning("%s: frame is not valid JSON: %.200r", self.id, raw_msg)
            await self._send_error("-1", self.ERR_NOT_JSON, "frame is not valid JSON")
            return
        if (not isinstance(frame, list) or len(frame) < 3 or not isinstance(frame[1], str)):
            unique_id = frame[1] if isinstance(frame, list) and len(frame) > 1 and isinstance(
                frame[1], str) else "-1"
            log.warning("%s: not an OCPP-J message: %.200r", self.id, raw_msg)
            await self._send_error(unique_id, self.ERR_NOT_RPC,
                                   "expected [MessageTypeId, UniqueId, ...]")
            return
        type_id, unique_id = frame[0], frame[1]
        if type_id == MessageType.Call:
            if len(frame) != 4 or not isinstance(frame[2], str) or not isinstance(frame[3], dict):
                await self._send_error(unique_id, self.ERR_NOT_RPC,
                                       "a CALL is [2, UniqueId, Action, {payload}]")
                return
            await self._on_call(Call(unique_id, frame[2], frame[3]))
        elif type_id in (MessageType.CallResult, MessageType.CallError):
            if not self._call_lock.locked():
                log.warning("%s: answer %s to no pending call dropped", self.id, unique_id)
                return
            if type_id == MessageType.CallResult and len(frame) == 3:
                self._response_queue.put_nowait(CallResult(unique_id, frame[2]))
            elif type_id == MessageType.CallError and len(frame) >= 4:
                self._response_queue.put_nowait(
                    CallError(unique_id, frame[2], frame[3], frame[4] if len(frame) > 4 else {}))
            else:
                log.warning("%s: malformed answer %.200r dropped", self.id, raw_msg)
        else:
            log.warning("%s: message type %r not supported", self.id, type_id)
            await self._send_error(unique_id, self.ERR_MESSAGE_TYPE,
                                   f"message type {type_id!r} is not supported")

    async def _on_call(self, msg: Call) -> None:
        self._answering += 1
        self._answered.clear()
        try:
            await self._answer(msg)
        finally:
            self._answering -= 1
            if self._answering == 0:
                self._answered.set()

    async def _answer(self, msg: Call) -> None:
        if self.admission is not Admission.ACCEPTED and msg.action != "BootNotification":
            log.warning("%s: %s refused, station not accepted (admission %s)", self.id, msg.action,
                        self.admission.value if self.admission else "none: no BootNotification")
            await self._send_error(msg.unique_id, "SecurityError",
                                   "station is not accepted: send BootNotification first")
            return
        if msg.action not in self.route_map:
            # OCPP-J: an action we do not know is NotImplemented; one of this version that
            # we know but do not handle is NotSupported (the library has these the other way).
            known = msg.action in self.ACTIONS
            await self._send_error(msg.unique_id, "NotSupported" if known else "NotImplemented",
                                   f"{msg.action} is {'not supported' if known else 'unknown'}"
                                   f" (OCPP {self.protocol})")
            return
        try:
            await self._dispatch(msg)
        except OCPPError as error:
            code, description, details = self._error_parts(error)
            log.warning("%s: %s answered %s: %s", self.id, msg.action, code,
                        details.get("cause", description))
            await self._send_error(msg.unique_id, code, description, details)

    async def _dispatch(self, msg: Call) -> None:
        """Validate, call our handler, answer: the library's path minus its per-message costs
        (jsonschema interpretation, regex key conversion, signature inspection)."""
        validate_request(self.protocol, msg.action, msg.payload)
        handler = self.route_map[msg.action]["_on_action"]
        try:
            response = handler(**_convert_keys(msg.payload, _snake_key))
            if inspect.isawaitable(response):
                response = await response
        except OCPPError:
            raise
        except Exception:
            log.exception("%s: handling %s failed", self.id, msg.action)
            await self._send_error(msg.unique_id, "InternalError", "An unexpected error occurred.")
            return
        answer = _convert_keys(remove_nones(serialize_as_dict(response)), _camel_key)
        await self._send(CallResult(msg.unique_id, answer).to_json())

    # --- commands --------------------------------------------------------------------------

    def to_call(self, command: Command, tx_ref: str | None) -> Any:
        """The OCPP call of this version for `command` (raises CommandRejected)."""
        raise NotImplementedError

    def result_of(self, command: Command, response: Any) -> CommandResult:
        answer = as_camel_dict(response)
        status = answer.get("status")
        if isinstance(status, str):
            return CommandResult(status in ACCEPTED_STATUSES, status, answer)
        return CommandResult(True, "Accepted", answer)

    async def command(self, command: Command, tx_ref: str | None = None) -> CommandResult:
        """Send `command` and wait for the answer; one call at a time, bounded by call_timeout."""
        request = self.to_call(command, tx_ref)
        action = type(request).__name__
        try:
            async with asyncio.timeout(self.settings.call_timeout_s):
                await self._answered.wait()
                response = await self.call(request, suppress=False)
        except TimeoutError:
            raise CommandFailed("timeout", f"station {self.id} did not answer {action} within "
                                f"{self.settings.call_timeout_s:g} s")
        except OCPPError as error:
            raise CommandFailed("call_error", f"station {self.id} answered {action} with "
                                f"CALLERROR {error.code}: {error.description}")
        except UnknownCallErrorCodeError as error:
            raise CommandFailed("call_error", f"station {self.id} answered {action}: {error}")
        return self.result_of(command, response)
