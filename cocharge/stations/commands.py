"""Commands an operator sends to a station, in the version-neutral vocabulary.

`cocharge.gateway.v16` and `cocharge.gateway.v201` turn each into the OCPP call of
their version and the station's answer into a `CommandResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RemoteStart:
    tag: str
    connector_id: int | None = None


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


Command = (RemoteStart | RemoteStop | UnlockConnector | SetAvailability | Reset | TriggerMessage
           | GetConfiguration | SetConfiguration | ClearCache | DataTransfer)

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
}


class CommandRejected(ValueError):
    """The command cannot be expressed for this station (e.g. a trigger its OCPP version lacks)."""


@dataclass(frozen=True)
class CommandResult:
    """The station's answer: `accepted` is False when it refused (Rejected, NotSupported, ...)."""

    accepted: bool
    status: str
    response: dict[str, Any] = field(default_factory=dict)
