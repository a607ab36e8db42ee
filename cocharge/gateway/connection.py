"""What both OCPP versions share: framing errors, admission gate, commands to the station.

Each version's handler class (`v16.py`, `v201.py`) subclasses `StationConnection` and
owns everything that differs between the versions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ClassVar, Protocol

from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from websockets.exceptions import ConnectionClosedOK

from cocharge.config import GatewaySettings
from cocharge.gateway import rpc
from cocharge.gateway.clock import ChargerClock, Stamp, now_iso
from cocharge.gateway.fastpath import send_now
from cocharge.gateway.quirks import Quirk, QuirkBook, boot_identity
from cocharge.gateway.rpc import Answer, Call, Reply, ResultError, RpcCore, RpcError, Send
from cocharge.stations.commands import (
    MAX_PURPOSES,
    PASSWORD_KEYS,
    RAW_PASSWORD_REFUSED,
    ClearVariableMonitoring,
    Command,
    CommandFailed,
    CommandRejected,
    CommandResult,
    CostUpdated,
    CustomerInformation,
    GetConfiguration,
    GetDiagnostics,
    GetLog,
    PublishFirmware,
    RawCall,
    Reserve,
    Reset,
    RotatePassword,
    SetChargingProfile,
    SetConfiguration,
    SetNetworkProfile,
    SetSecurityProfile,
    SetVariableMonitoring,
    SetVariables,
    UnpublishFirmware,
    UpdateFirmware,
    password_key,
    sets_password,
)
from cocharge.stations.events import Admission, MeterSample, StationNotice
from cocharge.stations.passwords import PASSWORD_RULE, hash_password, valid_password
from cocharge.stations.service import StationService
from cocharge.store.db import utcnow
from cocharge.store.sql import RowRejected

log = logging.getLogger(__name__)
# Request ids of one-off operator requests (update-firmware, customer-information): from
# 2^30 up, apart from the firmware campaigns' ids (a campaign's id is its request id).
_request_ids = itertools.count(2**30 + int(time.time()) % 2**20)
ocpp_log = logging.getLogger("cocharge.ocpp")

# Reservation ids of operators' reservations: far above any booking's id (bookings reserve
# with their own id), different on every start.
_reservation_ids = itertools.count(1_500_000_000 + int(time.time()) % 100_000_000)
ACCEPTED_STATUSES = {"Accepted", "Unlocked", "Scheduled", "RebootRequired", "Unpublished"}
# Unit prefixes we fold so that energy is always Wh and power always W.
_KILO_UNITS = {"kWh": "Wh", "kW": "W", "kvarh": "varh", "kvar": "var", "kVA": "VA"}
# A sample beyond this magnitude (in base units) is the charger's error: no meter reads
# 10^15 Wh, and the value must survive a float column and the sums built from it exactly.
MAX_SAMPLE_MAGNITUDE = 1e15
# OCPP 2.0.1 unitOfMeasure.multiplier: powers of ten a real meter uses (milli to giga).
MAX_MULTIPLIER = 9


def sample_value(text: Any, multiplier: Any = 0) -> float:
    """A sampled value as a finite float, times 10**multiplier, within what a meter can read;
    anything else is the charger's error (answered, never stored)."""
    if not isinstance(multiplier, int) or abs(multiplier) > MAX_MULTIPLIER:
        raise RpcError("property", "unitOfMeasure.multiplier out of range",
                       f"multiplier {multiplier!r} is outside -{MAX_MULTIPLIER}..{MAX_MULTIPLIER}")
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise RpcError("type", "sampled value is not a number",
                       f"sampled value {str(text)[:40]!r} is not a number") from None
    if multiplier:
        value *= 10.0 ** multiplier
    if not math.isfinite(value) or abs(value) > MAX_SAMPLE_MAGNITUDE:
        raise RpcError("property", "sampled value out of range",
                       f"sampled value {str(text)[:40]!r} is outside what a meter can read")
    return value


def normalise_sample(at: datetime, measurand: str | None, value: float, unit: str | None,
                     phase: str | None, context: str | None) -> MeterSample:
    """A sample in base units: kWh becomes Wh, kW becomes W."""
    measurand = measurand or "Energy.Active.Import.Register"
    if unit is None and measurand == "Frequency":
        unit = "Hertz"  # 1.6 had no unit for it (errata 4.0 added Hertz)
    if unit is None and measurand.startswith("Energy.Active"):
        unit = "Wh"
    if unit in _KILO_UNITS:
        value, unit = value * 1000, _KILO_UNITS[unit]
        if abs(value) > MAX_SAMPLE_MAGNITUDE:
            raise RpcError("property", "sampled value out of range",
                           f"{value / 1000:g} k{unit} is outside what a meter can read")
    return MeterSample(at=at, measurand=measurand, value=value, unit=unit, phase=phase,
                       context=context)


class _Keys(dict[str, str]):
    """One key naming converted to the other, each key converted once (the names of a
    version's schemas: a few hundred; a charger's made-up keys are not kept past 4,096)."""

    def __init__(self, convert: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        super().__init__()
        self._convert = convert

    def __missing__(self, key: str) -> str:
        converted = str(next(iter(self._convert({key: None}))))
        if len(self) < 4096:
            self[key] = converted
        return converted


_SNAKE_KEYS = _Keys(camel_to_snake_case)
_CAMEL_KEYS = _Keys(snake_to_camel_case)


def _convert_keys(data: Any, keys: _Keys) -> Any:
    """`data` with every object's keys renamed by `keys` (done for every message: written
    flat, without a call per value that has no keys)."""
    if type(data) is dict:
        converted = {}
        for key, value in data.items():
            kind = type(value)
            converted[keys[key]] = (_convert_keys(value, keys) if kind is dict or kind is list
                                    else value)
        return converted
    if type(data) is list:
        return [_convert_keys(value, keys) if type(value) is dict or type(value) is list
                else value for value in data]
    return data


def handler_arguments(payload: dict[str, Any], raw: frozenset[str]) -> dict[str, Any]:
    """A call's payload as its handler's keyword arguments: every key in snake_case, all the
    way down, except under the `raw` keys, whose values are passed as the charger sent them
    (the meter values a version's own parser reads in camelCase: renaming every key of nine
    sampled values cost 8.9 µs a 2.0.1 MeterValues)."""
    keys = _SNAKE_KEYS
    return {keys[key]: value if key in raw else _convert_keys(value, keys)
            for key, value in payload.items()}


def as_camel_dict(payload: Any) -> dict[str, Any]:
    """A call or call-result dataclass of the `ocpp` library as the JSON object it stands for."""
    if not any(value is not None for value in vars(payload).values()):
        return {}  # most answers to a charger's reports: an empty object
    result = _convert_keys(remove_nones(serialize_as_dict(payload)), _CAMEL_KEYS)
    return result if isinstance(result, dict) else {}


def handles(action: str) -> Callable[[Handler], Handler]:
    """Mark a method as the handler of the station's `action` calls (snake_case keyword args)."""
    def mark(method: Handler) -> Handler:
        method.ocpp_action = action  # type: ignore[attr-defined]
        return method
    return mark


Handler = Callable[..., Awaitable[Any]]


class FrameCounter(Protocol):
    """What a connection tells the node's metrics (gateway/metrics.py) of each frame."""

    def frame(self, direction: str, frame: str | bytes) -> None: ...

    def call(self, direction: str, action: str) -> None: ...


class StationConnection:
    """One connected station; subclasses handle one OCPP version each."""

    protocol: ClassVar[str]
    ACTIONS: ClassVar[frozenset[str]]
    HANDLERS: ClassVar[dict[str, str]]  # action -> method name, collected from @handles
    # Payload keys whose values reach the handlers as sent, in camelCase (handler_arguments).
    RAW_ARGUMENTS: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                action = getattr(member, "ocpp_action", None)
                if action is not None:
                    found[action] = name
        cls.HANDLERS = found

    def __init__(self, station_id: str, websocket: Any, service: StationService,
                 settings: GatewaySettings, admission: Admission | None,
                 quirks: QuirkBook | None = None) -> None:
        self.id = station_id
        self.service = service
        self.settings = settings
        # None until a BootNotification for an unknown station; ACCEPTED for a registered
        # station that reconnects without rebooting (chargers do not always boot again).
        self.admission = admission
        self.websocket = websocket
        self.rpc = RpcCore(self.protocol)
        self.clock = ChargerClock(settings.clock_past_s, settings.clock_future_s)
        # Set while no charger message is being answered: commands wait for it, so that
        # what a handler starts (a TxProfile after StartTransaction) follows its answer.
        self._answered = asyncio.Event()
        self._answered.set()
        self._answering = 0
        self._call_lock = asyncio.Lock()
        self._answer: asyncio.Future[Answer] | None = None
        self.upload_port = settings.upload_port  # the gateway sets the port it listens on
        self.upload_scheme = "http"  # https when the gateway serves TLS (uploads too)
        self.tls_port: int | None = None  # the gateway's wss:// port, if it has one
        self.metrics: FrameCounter | None = None  # the node's counters (the gateway sets it)
        self._cost_at: dict[str, float] = {}  # transaction -> when its cost was last sent
        self._cost_refused = False  # the station answered our cost DataTransfer with no
        self._tasks: set[asyncio.Task[Any]] = set()
        # The quirks of this station's vendor and model (known from an earlier boot).
        self.quirk_book = quirks or QuirkBook()
        record = service.directory.get(station_id)
        self.quirks: tuple[Quirk, ...] = self.quirk_book.for_station(
            self.protocol, record.vendor if record else None, record.model if record else None,
            station_id)

    def read_times(self, timestamp: str | None,
                   meter_value: list[dict[str, Any]] | None) -> tuple[Stamp, list[Stamp]]:
        """A message's own time (the receive time when it has none) and its meter values'
        times, read together (cocharge/gateway/clock.py)."""
        texts = [entry["timestamp"] for entry in meter_value or []]
        if timestamp is None:
            return Stamp(utcnow()), self.clock.read_all(texts)
        stamps = self.clock.read_all([timestamp, *texts])
        return stamps[0], stamps[1:]

    def boot_interval(self) -> int:
        """The heartbeat (accepted) or boot-retry interval for this station, varied by a
        little so that the stations of a reconnect storm spread out."""
        base = (self.settings.heartbeat_interval_s if self.admission is Admission.ACCEPTED
                else self.settings.boot_retry_interval_s)
        spread = base * self.settings.interval_jitter
        return max(1, round(base + random.uniform(-spread, spread)))

    async def start(self) -> None:
        """Serve the station until its connection closes (one frame at a time, as OCPP-J).
        recv() in a loop, as the connection's own `async for` does, without the asynchronous
        generator between them."""
        recv = getattr(self.websocket, "recv_text", self.websocket.recv)  # fastpath.py
        while True:
            try:
                frame = await recv()
            except ConnectionClosedOK:  # a normal close ends the loop, as it ends `async for`
                return
            await self.route_message(frame)

    async def _send(self, frame: str) -> None:
        ocpp_log.debug("%s: send %s", self.id, frame)
        self.service.frames.add(self.id, "out", frame)
        if self.metrics is not None:
            self.metrics.frame("out", frame)
        if not await send_now(self.websocket, frame):
            await self.websocket.send(frame)

    # --- incoming frames -------------------------------------------------------------------

    async def route_message(self, raw_msg: str | bytes) -> None:
        now = utcnow()
        self.service.seen(self.id, now)
        ocpp_log.debug("%s: receive %.2000s", self.id, raw_msg)
        self.service.frames.add(self.id, "in", raw_msg, now)
        event = self.rpc.receive(raw_msg)
        if self.metrics is not None:
            if isinstance(event, Call):  # counted by the action it parsed to
                self.metrics.call("in", event.action)
            else:
                self.metrics.frame("in", raw_msg)
        if isinstance(event, Call):
            await self._on_call(event)
        elif isinstance(event, Answer):
            if self._answer is not None and not self._answer.done():
                self._answer.set_result(event)
        elif isinstance(event, Reply):
            log.warning("%s: %s: %.200r", self.id, event.reason, raw_msg)
            await self._send(event.frame)
        elif isinstance(event, Send):
            await self._on_send(event)
        elif isinstance(event, ResultError):
            log.warning("%s: CALLRESULTERROR %s for our answer %s: %s", self.id, event.error_code,
                        event.unique_id, event.error_description)
            await self.service.notice(StationNotice(
                self.id, "callresulterror", utcnow(),
                {"unique_id": event.unique_id, "code": event.error_code,
                 "description": event.error_description, "details": event.error_details}))
        else:
            log.warning("%s: answer to no pending call dropped: %.200r", self.id, raw_msg)

    async def _on_send(self, msg: Send) -> None:
        """A 2.1 SEND: checked against its schema, never answered (not even when wrong)."""
        if msg.action not in rpc.SEND_ACTIONS:
            log.warning("%s: SEND of %.60r dropped: not a message sent that way", self.id,
                        msg.action)
            return
        try:
            rpc.validate(self.protocol, msg.action, msg.payload)
        except RpcError as error:
            log.warning("%s: SEND %s dropped: %s", self.id, msg.action, error.cause)
            return
        await self.on_send(msg.action, _convert_keys(msg.payload, _SNAKE_KEYS))

    async def on_send(self, action: str, payload: dict[str, Any]) -> None:
        """What a version that has SEND frames does with one (v21.py)."""

    async def _on_call(self, msg: Call) -> None:
        self._answering += 1
        self._answered.clear()
        try:
            await self._answer_call(msg)
        finally:
            self._answering -= 1
            if self._answering == 0:
                self._answered.set()

    async def _answer_call(self, msg: Call) -> None:
        if self.admission is not Admission.ACCEPTED and msg.action != "BootNotification":
            log.warning("%s: %s refused, station not accepted (admission %s)", self.id, msg.action,
                        self.admission.value if self.admission else "none: no BootNotification")
            await self._send(self.rpc.error(msg.unique_id, "security",
                                            "station is not accepted: send BootNotification first"))
            return
        method = self.HANDLERS.get(msg.action)
        if method is None:
            # OCPP-J: an action we do not know is NotImplemented; one of this version that
            # we know but do not handle is NotSupported.
            known = msg.action in self.ACTIONS
            await self._send(self.rpc.error(
                msg.unique_id, "not_supported" if known else "not_implemented",
                f"{msg.action} is {'not supported' if known else 'unknown'} "
                f"(OCPP {self.protocol})"))
            return
        if msg.action == "BootNotification":
            vendor, model = boot_identity(self.protocol, msg.payload)
            self.quirks = self.quirk_book.for_station(self.protocol, vendor, model, self.id)
        if self.quirks:  # known deviations made valid, before the strict check
            self.quirk_book.fix(self.quirks, self.id, msg.action, msg.payload, msg.text)
        try:
            rpc.validate(self.protocol, msg.action, msg.payload)
            response = await getattr(self, method)(**handler_arguments(msg.payload,
                                                                        self.RAW_ARGUMENTS))
            try:
                frame = self.rpc.result(msg, as_camel_dict(response))
            except RpcError as error:  # our answer breaks the schema: our bug, not theirs
                raise RuntimeError(f"our {msg.action} answer: {error.cause}") from error
        except RpcError as error:
            log.warning("%s: %s answered %s: %s", self.id, msg.action,
                        getattr(self.rpc.codes, error.kind), error.cause or error.description)
            frame = self.rpc.error(msg.unique_id, error.kind, error.description, error.cause)
        except RowRejected as error:  # a value the database cannot hold: the charger's error
            log.warning("%s: %s answered %s: %s", self.id, msg.action, self.rpc.codes.property,
                        error)
            frame = self.rpc.error(msg.unique_id, "property", "a value is out of range",
                                   str(error))
        except Exception:
            log.exception("%s: handling %s failed", self.id, msg.action)
            frame = self.rpc.error(msg.unique_id, "internal", "An unexpected error occurred.")
        await self._send(frame)

    # --- commands --------------------------------------------------------------------------

    def to_call(self, command: Command, tx_ref: str | None) -> Any:
        """The OCPP call of this version for `command` (raises CommandRejected)."""
        raise NotImplementedError

    def result_of(self, command: Command, answer: dict[str, Any]) -> CommandResult:
        status = answer.get("status")
        if isinstance(status, str):
            return CommandResult(status in ACCEPTED_STATUSES, status, answer)
        return CommandResult(True, "Accepted", answer)

    async def command(self, command: Command, tx_ref: str | None = None) -> CommandResult:
        """Send `command` and wait for the answer; one call at a time, bounded by call_timeout."""
        if isinstance(command, SetConfiguration) and password_key(command.key):
            command = RotatePassword(command.value)
        if isinstance(command, RotatePassword):
            return await self._rotate_password(command.password)
        if isinstance(command, SetSecurityProfile):
            return await self._move_security_profile(command)
        if isinstance(command, SetVariables) and any(password_key(k) for k in command.values):
            raise CommandRejected("set the station's password alone, with `cocharge station "
                                  "rotate-password` (or `remote config-set`), so that the "
                                  "gateway accepts it once the station does")
        if isinstance(command, RawCall) and sets_password(command.action, command.payload):
            raise CommandRejected(RAW_PASSWORD_REFUSED)  # e.g. a queued call delivered now
        return await self._send_command(command, tx_ref)

    async def _send_command(self, command: Command, tx_ref: str | None = None) -> CommandResult:
        if isinstance(command, RawCall):
            action, payload = command.action, command.payload
            if action not in rpc.TO_STATION[self.protocol]:
                raise CommandRejected(
                    f"OCPP {self.protocol} has no call {action!r} from the central system: one "
                    f"of {', '.join(sorted(rpc.TO_STATION[self.protocol]))}")
            try:
                rpc.validate(self.protocol, action, payload)
            except RpcError as error:
                raise CommandRejected(f"{action} payload does not match the OCPP "
                                      f"{self.protocol} schema: {error.cause}") from None
        else:
            if isinstance(command, GetDiagnostics | GetLog) and command.location is None:
                command = await self._with_upload(command)
            if isinstance(command, UpdateFirmware) and command.url is None:
                command = dataclasses.replace(
                    command, url=f"{self.upload_base()}/firmware/{command.file_id}")
            if isinstance(command, PublishFirmware | UnpublishFirmware) and not command.checksum:
                checksum = await self.service.firmware_md5(command.file_id)
                if checksum is None:
                    raise CommandRejected(f"no firmware file {command.file_id}: see "
                                          "`cocharge firmware list`")
                command = dataclasses.replace(command, checksum=checksum)
            if isinstance(command, PublishFirmware) and command.url is None:
                command = dataclasses.replace(
                    command, url=f"{self.upload_base()}/firmware/{command.file_id}",
                    request_id=command.request_id or next(_request_ids))
            if isinstance(command, Reserve) and not command.reservation_id:
                # Apart from bookings' ids (a booking reserves with its own id).
                command = dataclasses.replace(command, reservation_id=next(_reservation_ids))
            if isinstance(command, UpdateFirmware) and not command.request_id:
                command = dataclasses.replace(command, request_id=next(_request_ids))
            if isinstance(command, CustomerInformation) and command.request_id is None:
                command = dataclasses.replace(command, request_id=next(_request_ids))
            request = self.to_call(command, tx_ref)
            action = type(request).__name__
            payload = as_camel_dict(request)
            try:  # what we send keeps to the schema, as what we accept does
                rpc.validate(self.protocol, action, payload)
            except RpcError as error:
                raise CommandRejected(f"{action} would not match the OCPP {self.protocol} "
                                      f"schema: {error.cause}") from None
        parts = await self._split(action, payload)
        try:
            async with asyncio.timeout(self.settings.call_timeout_s * len(parts)):
                await self._answered.wait()
                async with self._call_lock:
                    answer = await self._call_parts(action, parts)
        except TimeoutError:
            raise CommandFailed("timeout", f"station {self.id} did not answer {action} within "
                                f"{self.settings.call_timeout_s:g} s") from None
        if answer.error_code is not None:
            raise CommandFailed("call_error", f"station {self.id} answered {action} with "
                                f"CALLERROR {answer.error_code}: {answer.error_description}")
        assert answer.payload is not None
        try:
            rpc.validate(self.protocol, action, answer.payload, response=True)
        except RpcError as error:
            raise CommandFailed("call_error", f"station {self.id} answered {action} outside "
                                f"the schema: {error.cause}") from None
        result = self.result_of(command, answer.payload)
        if isinstance(command, SetVariables):
            await self.service.variables_set(self.id, answer.payload.get("setVariableResult", []),
                                             command.values)
        if isinstance(command, SetVariableMonitoring):
            await self.service.monitors_set(self.id, payload["setMonitoringData"],
                                            answer.payload.get("setMonitoringResult", []))
        if isinstance(command, ClearVariableMonitoring):
            await self.service.monitors_cleared(self.id,
                                                answer.payload.get("clearMonitoringResult", []))
        if "requestId" in payload and "requestId" not in result.response:
            # The request id names what follows (reports, status notifications): shown with it.
            result = dataclasses.replace(result, response={**result.response,
                                                           "requestId": payload["requestId"]})
        if isinstance(command, GetDiagnostics | GetLog) and command.request_id is not None:
            filename = answer.payload.get("fileName") or answer.payload.get("filename")
            status = answer.payload.get("status") or ("Accepted" if filename else "NoFile")
            await self.service.upload_answered(command.request_id, str(status), filename)
            result = CommandResult(status in ("Accepted", "AcceptedCanceled"), str(status),
                                   {**answer.payload, "requestId": command.request_id})
        return result

    # A request whose list the station takes only so many items of at a time (2.0.1
    # ItemsPerMessage, B06.FR.05, N06.FR.04): action -> (the list, the component and
    # instance of its limit, the answer's list).
    SPLITS: ClassVar[dict[str, tuple[str, str, str, str]]] = {}

    async def _split(self, action: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The request as the station takes it: in parts of at most its ItemsPerMessage (as
        its device model reported it), else whole."""
        found = self.SPLITS.get(action)
        items = payload.get(found[0]) if found else None
        if found is None or not isinstance(items, list) or len(items) <= 1:
            return [payload]
        limit = await self.service.items_per_message(self.id, found[1], found[2]) or len(items)
        size = await self.service.items_per_message(self.id, found[1], found[2],
                                                    "BytesPerMessage")
        parts: list[list[Any]] = [[]]
        for item in items:  # at most `limit` items and `size` bytes of frame per part
            part = [*parts[-1], item]
            frame = len(json.dumps([2, "x" * 36, action, {**payload, found[0]: part}]))
            if parts[-1] and (len(part) > max(1, limit) or (size and frame > size)):
                parts.append([item])
            else:
                parts[-1] = part
        return [{**payload, found[0]: part} for part in parts]

    async def _call_parts(self, action: str, parts: list[dict[str, Any]]) -> Answer:
        """One call per part; their answers' lists joined as one answer (the first refusal or
        error is the answer)."""
        if len(parts) == 1:
            return await self._call(action, parts[0])
        results_key = self.SPLITS[action][3]
        joined: list[Any] = []
        answer: Answer | None = None
        for part in parts:
            answer = await self._call(action, part)
            if answer.error_code is not None or answer.payload is None:
                return answer
            joined.extend(answer.payload.get(results_key) or [])
        assert answer is not None and answer.payload is not None
        return dataclasses.replace(answer, payload={**answer.payload, results_key: joined})

    async def _rotate_password(self, password: str | None) -> CommandResult:
        """Send a new password; it becomes valid here once the station accepted it (the old
        one stays valid until the station connects with the new one)."""
        password = password if password is not None else secrets.token_hex(16)
        if not valid_password(password):
            raise CommandRejected(PASSWORD_RULE)
        new_hash = await asyncio.to_thread(hash_password, password)
        result = await self._send_command(SetConfiguration(PASSWORD_KEYS[self.protocol],
                                                           password))
        if result.accepted:
            await self.service.password_accepted(self.id, new_hash)
        log.info("station %s: new password %s (%s)", self.id,
                 "accepted" if result.accepted else "refused", result.status)
        return CommandResult(result.accepted, result.status, {"status": result.status})

    # --- the price at the charger ---------------------------------------------------------

    def cost_due(self, tx_ref: str) -> bool:
        """Send this running transaction's cost now? Every cost_update_s, the first time
        that long after its first meter values here (a short session sees only its total)."""
        every = self.settings.cost_update_s
        if every <= 0 or self._cost_refused or (
                self.protocol == "1.6" and not self.settings.cost_data_transfer):
            return False
        now = time.monotonic()
        if now - self._cost_at.setdefault(tx_ref, now) < every:
            return False
        self._cost_at[tx_ref] = now
        return True

    def push_cost(self, tx_ref: str, final_fen: int | None = None) -> None:
        """Send the cost so far (or the final total) to the station's display, after the
        answer that is being made now."""
        task = asyncio.create_task(self._push_cost(tx_ref, final_fen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push_cost(self, tx_ref: str, final_fen: int | None) -> None:
        session_id = await self.service.session_of(self.id, tx_ref)
        if session_id is None:
            return
        fen = final_fen if final_fen is not None else await self.service.running_cost(session_id)
        if fen is None:
            return
        total = f"{fen // 100}.{fen % 100:02d}"
        try:
            result = await self.command(CostUpdated(session_id, total), tx_ref)
        except (CommandFailed, CommandRejected) as exc:
            log.info("%s: cost of session %s not shown: %s", self.id, session_id, exc)
            return
        if self.protocol == "1.6" and not result.accepted:
            self._cost_refused = True  # no display (or not this DataTransfer): stop sending
        if final_fen is not None:
            self._cost_at.pop(tx_ref, None)

    def on_tls(self) -> bool:
        transport = getattr(self.websocket, "transport", None)
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    def secure_url(self) -> str | None:
        """Where this station reaches our wss:// listener (without its own id)."""
        if self.settings.tls_url:
            return self.settings.tls_url
        if self.tls_port is None:
            return None
        request = getattr(self.websocket, "request", None)
        host = (request.headers.get("Host", "") if request is not None else "") or "127.0.0.1"
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        path = request.path.split("?")[0] if request is not None else "/"
        return f"wss://{host}:{self.tls_port}{path.rsplit('/', 1)[0]}/"

    async def _move_security_profile(self, command: SetSecurityProfile) -> CommandResult:
        """Move the station to another security profile without a site visit: a certificate
        first (profile 3), then the profile (2.0.1: a network profile in a free slot, made
        first in priority, then a reset; 1.6: SecurityProfile). The gateway keeps accepting
        the station's present way in until it comes back the new way."""
        record = self.service.directory.get(self.id)
        current = 3 if record is not None and record.security_profile == 3 else (
            2 if self.on_tls() else 1)
        target = command.profile
        if target == current:
            raise CommandRejected(f"station {self.id} is at security profile {target} already")
        if target < current and not command.force:
            raise CommandRejected(f"moving station {self.id} down from security profile "
                                  f"{current} to {target} weakens it: add --force if you mean it")
        url = command.csms_url or (self.secure_url() if target >= 2 else None)
        if target >= 2 and url is None:
            raise CommandRejected("this gateway has no wss:// listener for profile 2 or 3: "
                                  "serve with --tls-cert/--tls-key (and --tls-port)")
        if target == 3:
            await self._ensure_certificate()
        if self.protocol == "1.6":
            result = await self._send_command(SetConfiguration("SecurityProfile", str(target)))
        else:
            result = await self._network_profile(target, url or "", command.configuration_slot)
        if result.accepted and target < current:
            await self.service.security_profile(self.id, target,
                                                f"moved down to {target} by the operator")
        elif result.accepted:
            await self.service.notice_now(self.id, "security_profile", {
                "profile": target, "step": "accepted by the station: valid once it connects "
                "that way"})
        return result

    async def _ensure_certificate(self) -> None:
        keeper = self.service.certificates
        if keeper.authority is None:
            raise CommandRejected("security profile 3 needs client certificates from the "
                                  "operator's CA: serve with --ca-dir (`cocharge ca init`)")
        if await keeper.current(self.id) is not None:
            return
        waiting = asyncio.ensure_future(keeper.wait_installed(self.id,
                                                              2 * self.settings.call_timeout_s))
        await asyncio.sleep(0)  # waiting before the station can answer
        asked = await keeper.ask_renewal(self.id)
        if not asked.accepted:
            waiting.cancel()
            raise CommandFailed("call_error", f"station {self.id} did not start a certificate "
                                f"request ({asked.status})")
        if not await waiting:
            raise CommandFailed("timeout", f"station {self.id} got no certificate of ours in "
                                f"time: see `cocharge station events {self.id}`")

    async def _network_profile(self, target: int, url: str, slot: int | None) -> CommandResult:
        """2.0.1 B09/B10: the new connection profile in a slot, first in priority, a reset."""
        priority_key = "OCPPCommCtrlr.NetworkConfigurationPriority"
        answer = await self._send_command(GetConfiguration((priority_key,)))
        results = answer.response.get("getVariableResult") or [{}]
        order = [p.strip() for p in str(results[0].get("attributeValue") or "").split(",")
                 if p.strip()]
        if slot is None:
            slot = next(n for n in range(1, 100) if str(n) not in order)
        profile = await self._send_command(SetNetworkProfile(slot, url, target))
        if not profile.accepted:
            return profile
        order = [str(slot), *(p for p in order if p != str(slot))]
        priority = await self._send_command(SetConfiguration(priority_key, ",".join(order)))
        if not priority.accepted:
            return priority
        reset = await self._send_command(Reset())
        return CommandResult(reset.accepted, reset.status, {
            "status": reset.status, "configurationSlot": slot, "ocppCsmsUrl": url,
            "securityProfile": target})

    def upload_base(self) -> str:
        """Where this station can reach our upload endpoint: the setting, else the host name
        it connected to us by."""
        if self.settings.upload_url:
            return self.settings.upload_url.rstrip("/")
        request = getattr(self.websocket, "request", None)
        host = (request.headers.get("Host", "") if request is not None else "") or "127.0.0.1"
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return f"{self.upload_scheme}://{host}:{self.upload_port}"

    async def _with_upload(self, command: GetDiagnostics | GetLog) -> Any:
        """The command with a fresh upload URL (its one-time token) and request id."""
        self.to_call(dataclasses.replace(command, location="http://check", request_id=0), None)
        kind = "diagnostics" if isinstance(command, GetDiagnostics) else "log"
        log_type = None if isinstance(command, GetDiagnostics) else command.log_type
        upload_id, token = await self.service.new_upload(self.id, kind, log_type)
        location = f"{self.upload_base()}/upload/{token}"
        return dataclasses.replace(command, location=location, request_id=upload_id)

    async def _call(self, action: str, payload: dict[str, Any]) -> Answer:
        _, frame = self.rpc.call(action, payload)
        self._answer = asyncio.get_running_loop().create_future()
        try:
            await self._send(frame)
            return await self._answer
        finally:
            # Timed out or cancelled (a cancelled wait cancels the future: done, no result):
            # the call is released, a late answer dropped, the next call may go out.
            if not self._answer.done() or self._answer.cancelled():
                self.rpc.abandon()
            self._answer = None


def profile_fields(command: SetChargingProfile, max_purpose: str) -> dict[str, Any]:
    """The parts of a charging profile both versions share (snake_case, for the ocpp
    library); the schedule is 1.6's (one object); 2.0.1 wraps it in a list with an id."""
    schedule: dict[str, Any] = {
        "charging_rate_unit": command.unit,
        "charging_schedule_period": [
            {"start_period": int(start), "limit": float(limit),
             **({"number_phases": command.number_phases} if command.number_phases else {}),
             **{key: value for key, value in (  # 2.1's operation modes (V2X)
                 ("operation_mode", command.operation_mode), ("setpoint", command.setpoint),
                 ("discharge_limit", command.discharge_limit)) if value is not None}}
            for start, limit in command.periods]}
    start = command.start_schedule
    if start is None and command.kind in ("Absolute", "Dynamic"):
        start = now_iso()  # an Absolute profile counts from now unless told otherwise
    if start is not None:
        schedule["start_schedule"] = start
    if command.duration is not None:
        schedule["duration"] = command.duration
    purpose = max_purpose if command.purpose in MAX_PURPOSES else command.purpose
    profile: dict[str, Any] = {"id": command.id, "stack_level": command.stack_level,
                               "charging_profile_purpose": purpose,
                               "charging_profile_kind": command.kind,
                               "charging_schedule": schedule}
    for key, value in (("recurrency_kind", command.recurrency), ("valid_from", command.valid_from),
                       ("valid_to", command.valid_to),
                       ("dyn_update_interval", command.dyn_update_interval)):
        if value is not None:
            profile[key] = value
    return profile
