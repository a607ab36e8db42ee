"""Commands an operator sends to a station, in the version-neutral vocabulary.

`cocharge.gateway.v16` and `cocharge.gateway.v201` turn each into the OCPP call of
their version and the station's answer into a `CommandResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RemoteStart:
    tag: str
    connector_id: int | None = None
    # Limits the session stops at (cocharge.stations.policy.SessionLimits); not sent to the charger.
    budget_fen: int | None = None
    energy_wh: int | None = None
    quota_only: bool = False
    # Set by sharing control for a limited start: a TxProfile sent with the start request.
    profile_offset_s: int | None = None
    profile_limit_a: float | None = None

    def tx_profile(self) -> dict[str, Any] | None:
        """The start's TxProfile (Relative: full current, 0 A after the offset), snake_case."""
        if self.profile_offset_s is None or self.profile_limit_a is None:
            return None
        return {"id": 1, "stack_level": 1, "charging_profile_purpose": "TxProfile",
                "charging_profile_kind": "Relative",
                "charging_schedule": {"charging_rate_unit": "A", "charging_schedule_period": [
                    {"start_period": 0, "limit": self.profile_limit_a},
                    {"start_period": self.profile_offset_s, "limit": 0}]}}


@dataclass(frozen=True)
class RemoteStop:
    session_id: int


@dataclass(frozen=True)
class UnlockConnector:
    connector_id: int


@dataclass(frozen=True)
class SetAvailability:
    connector_id: int  # 0 = the whole station
    operative: bool


@dataclass(frozen=True)
class Reset:
    hard: bool = False
    evse_id: int | None = None  # 2.0.1: reset one EVSE only


@dataclass(frozen=True)
class TriggerMessage:
    message: str
    connector_id: int | None = None


@dataclass(frozen=True)
class GetConfiguration:
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetConfiguration:
    key: str
    value: str


@dataclass(frozen=True)
class ClearCache:
    pass


@dataclass(frozen=True)
class DataTransfer:
    vendor_id: str
    message_id: str | None = None
    data: str | None = None


@dataclass(frozen=True)
class ReserveNow:
    connector_id: int
    tag: str
    expires_at: datetime  # naive UTC
    reservation_id: int


@dataclass(frozen=True)
class CancelReservation:
    reservation_id: int


@dataclass(frozen=True)
class ShareLock:
    """The physical bay lock: 1.6 DataTransfer cocharge/ShareLock, 2.0.1 ShareLock.Locked."""

    connector_id: int
    locked: bool


@dataclass(frozen=True)
class TxLimit:
    """A TxProfile on a running transaction: full power, then 0 A `offset_s` after its start."""

    connector_id: int
    session_id: int
    offset_s: int
    limit_a: float


@dataclass(frozen=True)
class SendLocalList:
    """The station's local authorization list (kept by the controller, local_list.py):
    entries tag -> expiry (ISO) | None (no expiry) | False (remove, differential only)."""

    version: int
    full: bool
    entries: dict[str, str | None | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class GetLocalListVersion:
    pass


@dataclass(frozen=True)
class GetDiagnostics:
    """1.6: the station uploads its diagnostics file to the gateway (`location` and
    `request_id` are filled in by the gateway: uploads.py)."""

    start: str | None = None  # ISO 8601: oldest entries wanted
    stop: str | None = None
    location: str | None = None
    request_id: int | None = None


@dataclass(frozen=True)
class GetLog:
    """2.0.1 (and 1.6 with the security extension): the station uploads a log."""

    log_type: str = "DiagnosticsLog"  # | SecurityLog
    oldest: str | None = None
    latest: str | None = None
    location: str | None = None
    request_id: int | None = None


@dataclass(frozen=True)
class UpdateFirmware:
    """Sent by a firmware campaign (stations/firmware.py): the image at `url`, or the
    gateway's own file `file_id` (its URL is filled in per station)."""

    request_id: int
    url: str | None = None
    file_id: int | None = None


@dataclass(frozen=True)
class SetVariables:
    """2.0.1: several Component.Variable values in one SetVariables; each gets its own
    result, and the accepted ones are written into the station's inventory."""

    values: dict[str, str] = field(default_factory=dict)  # "Component.Variable" -> value


@dataclass(frozen=True)
class GetTransactionStatus:
    """2.0.1: does the station still hold messages of this session (or any) to send?"""

    session_id: int | None = None


@dataclass(frozen=True)
class GetBaseReport:
    """2.0.1: the station reports its device model (NotifyReport parts, stored as its
    inventory: `cocharge station variables`)."""

    report_base: str = "FullInventory"  # | ConfigurationInventory | SummaryInventory


@dataclass(frozen=True)
class RawCall:
    """Any call of the station's OCPP version, as its JSON payload (camelCase): validated
    against the version's schema before it leaves (`cocharge remote call`)."""

    action: str
    payload: dict[str, Any] = field(default_factory=dict)


Command = (RemoteStart | RemoteStop | UnlockConnector | SetAvailability | Reset | TriggerMessage
           | GetConfiguration | SetConfiguration | ClearCache | DataTransfer | ReserveNow
           | CancelReservation | ShareLock | TxLimit | GetBaseReport | SendLocalList
           | GetLocalListVersion | GetDiagnostics | GetLog | UpdateFirmware | SetVariables
           | GetTransactionStatus | RawCall)

# The operator channel's names for the commands, as `cocharge remote <name>` spells them.
COMMANDS: dict[str, type] = {
    "start": RemoteStart,
    "stop": RemoteStop,
    "unlock": UnlockConnector,
    "availability": SetAvailability,
    "reset": Reset,
    "trigger": TriggerMessage,
    "config-get": GetConfiguration,
    "config-set": SetConfiguration,
    "clear-cache": ClearCache,
    "data-transfer": DataTransfer,
    "cancel-reservation": CancelReservation,
    "share-lock": ShareLock,
    "get-base-report": GetBaseReport,
    "set-variables": SetVariables,
    "get-transaction-status": GetTransactionStatus,
    "get-local-list-version": GetLocalListVersion,
    "get-diagnostics": GetDiagnostics,
    "get-log": GetLog,
    "call": RawCall,
}


class CommandRejected(ValueError):
    """The command cannot be expressed for this station (e.g. a trigger its OCPP version lacks)."""


@dataclass(frozen=True)
class CommandResult:
    """The station's answer: `accepted` is False when it refused (Rejected, NotSupported, ...)."""

    accepted: bool
    status: str
    response: dict[str, Any] = field(default_factory=dict)


class CommandFailed(Exception):
    """A command that got no usable answer: `kind` is offline, timeout or call_error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def build_command(name: str, args: dict[str, Any]) -> Command:
    """A command from its channel name and arguments; raises CommandRejected with the reason."""
    command_class = COMMANDS.get(name)
    if command_class is None:
        raise CommandRejected(f"unknown command {name!r}: one of {', '.join(COMMANDS)}")
    names = {f.name for f in fields(command_class)
             if not f.name.startswith("profile_") and f.name not in ("location", "request_id")}
    unknown = set(args) - names
    if unknown:
        raise CommandRejected(f"{name} takes no {', '.join(sorted(unknown))}")
    if "keys" in args:
        args = {**args, "keys": tuple(args["keys"])}
    if command_class is SetVariables and (
            not isinstance(args.get("values"), dict) or not args["values"]
            or not all(isinstance(k, str) and isinstance(v, str)
                       for k, v in args["values"].items())):
        raise CommandRejected("set-variables needs values: {\"Component.Variable\": \"value\"}")
    if command_class is RawCall and (not isinstance(args.get("action"), str)
                                     or not isinstance(args.get("payload", {}), dict)):
        raise CommandRejected("call needs an action name and a JSON object as its payload")
    try:
        command: Command = command_class(**args)
    except TypeError as exc:
        raise CommandRejected(f"{name}: {exc}") from exc
    return command
