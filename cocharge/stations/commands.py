"""Commands an operator sends to a station, in the version-neutral vocabulary.

`cocharge.gateway.v16` and `cocharge.gateway.v201` turn each into the OCPP call of
their version and the station's answer into a `CommandResult`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from cocharge.stations.passwords import PASSWORD_RULE, valid_password


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
    evse_connector: int | None = None  # 2.0.1: one connector of the EVSE `connector_id`


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
    """The image at `url`, or the gateway's own file `file_id` (its URL is filled in per
    station). Sent by a firmware campaign (stations/firmware.py) or `remote update-firmware`.
    With a signature (base64) and the PEM certificate it was made with, 1.6 stations get the
    security extension's SignedUpdateFirmware, 2.0.1 stations both in the firmware field."""

    request_id: int = 0  # 0: the gateway picks one
    url: str | None = None
    file_id: int | None = None
    retries: int | None = None
    retry_interval: int | None = None
    signature: str | None = None
    signing_certificate: str | None = None
    install_at: str | None = None  # 2.0.1: ISO 8601, when to install once downloaded


@dataclass(frozen=True)
class SyncLocalList:
    """Send the station's local list as the sharing rules make it, now, as a Full update
    (`remote send-local-list`; the controller otherwise keeps it in step by itself)."""


@dataclass(frozen=True)
class GetReport:
    """2.0.1: a part of the device model (NotifyReport, stored as the inventory)."""

    component_criteria: tuple[str, ...] = ()  # Active | Available | Enabled | Problem
    component_variables: tuple[str, ...] = ()  # "Component" or "Component.Variable"
    evse_id: int | None = None  # the components of this EVSE


@dataclass(frozen=True)
class SetNetworkProfile:
    """2.0.1: a connection profile in one of the station's configuration slots."""

    configuration_slot: int
    ocpp_csms_url: str
    security_profile: int
    ocpp_interface: str = "Wired0"
    message_timeout: int = 30
    ocpp_version: str = "OCPP20"
    ocpp_transport: str = "JSON"


@dataclass(frozen=True)
class SetVariableMonitoring:
    """2.0.1: a monitor on a Component.Variable; the station fires NotifyEvent when it trips.
    `id` replaces an existing monitor."""

    variable: str  # "Component.Variable"
    type: str  # UpperThreshold | LowerThreshold | Delta | Periodic | PeriodicClockAligned
    value: float
    severity: int = 5
    evse_id: int | None = None
    transaction: bool = False
    id: int | None = None
    # 2.1: the monitor's values as a periodic event stream (SEND frames): every
    # `stream_interval` s, `stream_values` values at a time.
    stream_interval: int | None = None
    stream_values: int | None = None
    # More monitors in the same request: "Component.Variable:Type:Value[:severity[:evse]]".
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetMonitoringBase:
    monitoring_base: str  # All | FactoryDefault | HardWiredOnly


@dataclass(frozen=True)
class SetMonitoringLevel:
    severity: int  # 0 (Danger) .. 9 (Debug): events up to this severity are reported


@dataclass(frozen=True)
class ClearVariableMonitoring:
    ids: tuple[int, ...]


@dataclass(frozen=True)
class GetMonitoringReport:
    """2.0.1: the station's monitors (NotifyMonitoringReport, stored: `station monitors`)."""

    monitoring_criteria: tuple[str, ...] = ()  # ThresholdMonitoring | DeltaMonitoring | PeriodicMonitoring
    component_variables: tuple[str, ...] = ()
    evse_id: int | None = None  # the components of this EVSE


@dataclass(frozen=True)
class CustomerInformation:
    """2.0.1: what the station holds about a customer (NotifyCustomerInformation, stored as
    events), and/or clear it (e.g. a member who leaves). `request_id` is filled in."""

    id_token: str | None = None
    customer_identifier: str | None = None
    report: bool = True
    clear: bool = False
    request_id: int | None = None
    # Or the customer's ISO 15118 certificate, as CertificateHashDataType (camelCase).
    customer_certificate: dict[str, Any] | None = None


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
class RotatePassword:
    """A new HTTP Basic password for the station (1.6 AuthorizationKey, 2.0.1
    SecurityCtrlr.BasicAuthPassword): valid once the station accepted it, beside the old one
    until the station connects with it. Without `password`, a strong one is made."""

    password: str | None = None


@dataclass(frozen=True)
class CertificateSigned:
    """A signed certificate chain (PEM, leaf first) for the station's own key. The gateway
    sends one by itself after a SignCertificate it accepted; this delivers one from an
    external CA."""

    certificate_chain: str
    certificate_type: str | None = None  # 2.0.1: ChargingStationCertificate | V2GCertificate


@dataclass(frozen=True)
class InstallCertificate:
    """A root certificate the station is to trust (e.g. our CA, before the station's server
    certificate is one of its certificates)."""

    certificate_type: str  # 1.6: CentralSystemRootCertificate | ManufacturerRootCertificate;
    # 2.0.1: CSMSRootCertificate | ManufacturerRootCertificate | V2GRootCertificate | MORootCertificate
    certificate: str  # PEM


@dataclass(frozen=True)
class GetInstalledCertificateIds:
    certificate_types: tuple[str, ...] = ()  # 1.6 asks for exactly one type


@dataclass(frozen=True)
class DeleteCertificate:
    """A root certificate the station holds, by its hash data (as GetInstalledCertificateIds
    reports it)."""

    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str
    hash_algorithm: str = "SHA256"


@dataclass(frozen=True)
class ExtendedTriggerMessage:
    """1.6 security extension's trigger (2.0.1: TriggerMessage), e.g.
    SignChargingStationCertificate to renew the station's certificate."""

    message: str
    connector_id: int | None = None


@dataclass(frozen=True)
class SetSecurityProfile:
    """Move the station to security profile 1, 2 or 3 (2.0.1 SetNetworkProfile, priority and
    a reset; 1.6 SecurityProfile). Profile 3 needs a certificate of ours on the station (one
    is asked for first); a lower profile than the station's is refused unless forced."""

    profile: int
    force: bool = False
    csms_url: str | None = None  # default: settings.tls_url, else derived
    configuration_slot: int | None = None  # 2.0.1: default a free slot


@dataclass(frozen=True)
class SetDisplayMessage:
    """2.0.1: a message on the station's display (e.g. the host's price, a booking)."""

    id: int
    content: str
    priority: str = "NormalCycle"  # AlwaysFront | InFront | NormalCycle
    state: str | None = None  # Charging | Faulted | Idle | Unavailable; None: always
    format: str = "UTF8"  # ASCII | HTML | URI | UTF8
    language: str | None = None
    start: str | None = None  # ISO 8601: shown from
    end: str | None = None  # ... until
    session_id: int | None = None  # only during this session


@dataclass(frozen=True)
class PublishFirmware:
    """2.0.1 L03: a Local Controller publishes the gateway's firmware file `file_id` to the
    stations behind it (its URL and MD5 checksum are filled in by the gateway);
    PublishFirmwareStatusNotification is kept as the station's `firmware_publish` events."""

    file_id: int
    request_id: int = 0  # 0: the gateway picks one
    retries: int | None = None
    retry_interval: int | None = None
    url: str | None = None
    checksum: str | None = None


@dataclass(frozen=True)
class UnpublishFirmware:
    """2.0.1 L04: the Local Controller stops publishing the file (by its MD5 checksum)."""

    file_id: int
    checksum: str | None = None


# The field of SetDERControlRequest that carries each control type's settings (2.1, R04).
DER_FIELDS = {"EnterService": "enterService", "FreqDroop": "freqDroop",
              "FixedPFAbsorb": "fixedPFAbsorb", "FixedPFInject": "fixedPFInject",
              "FixedVar": "fixedVar", "Gradients": "gradient",
              "LimitMaxDischarge": "limitMaxDischarge"}  # every other type: "curve"


@dataclass(frozen=True)
class SetDERControl:
    """2.1 R04: a grid code setting for the station's inverter (V2X): `settings` is the
    control type's object as 2.1 spells it (camelCase), e.g. LimitMaxDischarge
    {"priority": 0, "pctMaxDischargePower": 50}; NotifyDERStartStop / NotifyDERAlarm follow
    as the station's events."""

    control_id: str
    control_type: str
    settings: dict[str, Any] = field(default_factory=dict)
    is_default: bool = False


@dataclass(frozen=True)
class GetDERControl:
    """2.1 R05: the DER controls the station holds (ReportDERControl, kept as events)."""

    control_type: str | None = None
    control_id: str | None = None
    is_default: bool | None = None
    request_id: int | None = None


@dataclass(frozen=True)
class ClearDERControl:
    """2.1 R06: remove DER controls (by id, or type; defaults or scheduled ones)."""

    is_default: bool = False
    control_type: str | None = None
    control_id: str | None = None


@dataclass(frozen=True)
class AdjustPeriodicEventStream:
    """2.1: change how often an open stream sends (interval s) and how many values at once."""

    id: int
    interval: int | None = None
    values: int | None = None


@dataclass(frozen=True)
class GetPeriodicEventStream:
    """2.1: the streams the station has open (their ids and parameters)."""


@dataclass(frozen=True)
class UsePriorityCharging:
    """2.1: the session charges with the station's priority profile (a booked member), or
    stops doing so (`activate` False)."""

    session_id: int
    activate: bool = True


ENERGY_TRANSFER_MODES = ("AC_single_phase", "AC_two_phase", "AC_three_phase", "DC", "AC_BPT",
                         "AC_BPT_DER", "AC_DER", "DC_BPT", "DC_ACDP", "DC_ACDP_BPT", "WPT")


@dataclass(frozen=True)
class NotifyAllowedEnergyTransfer:
    """2.1 Q: the energy transfer modes a session may use, e.g. AC_BPT once the driver
    agreed to give energy back (V2X)."""

    session_id: int
    modes: tuple[str, ...]


@dataclass(frozen=True)
class NotifyWebPaymentStarted:
    """2.1 C24: a driver opened the payment page of this EVSE's QR code; the station shows
    that a payment is under way and waits up to `timeout` seconds for it."""

    evse_id: int
    timeout: int = 120


@dataclass(frozen=True)
class SetDefaultTariff:
    """2.1: the tariff an EVSE calculates its sessions' cost with (I07). Without `tariff`
    the gateway sends the host's tariff of that connector as we price it."""

    evse_id: int = 1
    tariff: dict[str, Any] | None = None  # a 2.1 TariffType (camelCase)


@dataclass(frozen=True)
class Reserve:
    """An operator's reservation (not a member's booking, which the controller reserves by
    itself): for `tag` until `until` (ISO 8601), on an EVSE, or (2.0.1) on any EVSE, of a
    connector type, for a group (groupIdToken; 1.6 parentIdTag). `reservation_id` is filled
    in; `cancel-reservation` ends it."""

    tag: str
    until: str
    evse_id: int | None = None
    connector_type: str | None = None
    group: str | None = None
    reservation_id: int = 0


@dataclass(frozen=True)
class ChangeTransactionTariff:
    """2.1 I10: a running session's tariff at the charger, replaced (without `tariff`: the
    one the session is priced with here, e.g. for a charger that lost it)."""

    session_id: int
    tariff: dict[str, Any] | None = None


@dataclass(frozen=True)
class GetTariffs:
    """2.1: the tariffs the station holds (I11), per EVSE (0: all)."""

    evse_id: int = 0


@dataclass(frozen=True)
class ClearTariffs:
    """2.1: remove tariffs from the station (I12): the named ones, or all of an EVSE, or all."""

    tariff_ids: tuple[str, ...] = ()
    evse_id: int | None = None


@dataclass(frozen=True)
class GetDisplayMessages:
    """2.0.1: the messages the station shows (NotifyDisplayMessages, kept as events)."""

    ids: tuple[int, ...] = ()
    priority: str | None = None
    state: str | None = None
    request_id: int | None = None


@dataclass(frozen=True)
class ClearDisplayMessage:
    id: int


@dataclass(frozen=True)
class CostUpdated:
    """The running cost of a session on the station's display: 2.0.1 CostUpdated; 1.6 the
    DataTransfer docs/operations.md describes (settings.cost_data_transfer)."""

    session_id: int
    total_cost: str  # in the tariff's currency, e.g. "12.35" (exact)


@dataclass(frozen=True)
class SetChargingProfile:
    """A charging profile (every purpose, every version). `periods` are [start_s, limit]
    pairs; `session_id` names the transaction of a TxProfile; connector 0 is the whole
    station (TxDefaultProfile for every connector, or the station's maximum).

    2.1 only: a Dynamic profile (one period, moved by UpdateDynamicSchedule; the station
    may ask for it every `dyn_update_interval` s), and for every period an operation mode
    with its setpoint (negative: the car gives energy back, V2X) and discharge limit (0 or
    less)."""

    connector_id: int
    purpose: str  # TxProfile | TxDefaultProfile | ChargePointMaxProfile (= ChargingStationMaxProfile)
    periods: tuple[tuple[float, ...], ...]
    id: int = 1
    stack_level: int = 0
    kind: str = "Absolute"  # Absolute | Relative | Recurring
    unit: str = "A"  # A | W
    start_schedule: str | None = None
    duration: int | None = None
    valid_from: str | None = None
    valid_to: str | None = None
    recurrency: str | None = None  # Daily | Weekly (kind Recurring)
    session_id: int | None = None
    number_phases: int | None = None
    operation_mode: str | None = None  # 2.1: OPERATION_MODES (absent: ChargingOnly)
    setpoint: float | None = None  # 2.1: CentralSetpoint's target, in the unit
    discharge_limit: float | None = None  # 2.1: at most this much discharged (<= 0)
    dyn_update_interval: int | None = None  # 2.1, Dynamic: the station pulls every so often

    @property
    def needs_21(self) -> bool:
        return self.kind == "Dynamic" or any(v is not None for v in (
            self.operation_mode, self.setpoint, self.discharge_limit, self.dyn_update_interval))


@dataclass(frozen=True)
class UpdateDynamicSchedule:
    """2.1: a Dynamic profile's one period moved (K28): its new limit, setpoint or discharge
    limit."""

    profile_id: int
    limit: float | None = None
    setpoint: float | None = None
    discharge_limit: float | None = None


OPERATION_MODES = ("Idle", "ChargingOnly", "CentralSetpoint", "ExternalSetpoint",
                   "ExternalLimits", "CentralFrequency", "LocalFrequency", "LocalLoadBalancing")


@dataclass(frozen=True)
class ClearChargingProfile:
    """Clear profiles by id, or by connector / purpose / stack level (all given must match)."""

    id: int | None = None
    connector_id: int | None = None
    purpose: str | None = None
    stack_level: int | None = None


@dataclass(frozen=True)
class GetCompositeSchedule:
    connector_id: int
    duration: int
    unit: str | None = None  # A | W


@dataclass(frozen=True)
class GetChargingProfiles:
    """2.0.1: the station reports its profiles (ReportChargingProfiles) matching these."""

    connector_id: int | None = None
    purpose: str | None = None
    stack_level: int | None = None
    sources: tuple[str, ...] = ()  # EMS | Other | SO | CSO
    ids: tuple[int, ...] = ()
    request_id: int | None = None


PURPOSES = ("TxProfile", "TxDefaultProfile", "ChargePointMaxProfile", "ChargingStationMaxProfile")
MAX_PURPOSES = ("ChargePointMaxProfile", "ChargingStationMaxProfile")
MAX_PURPOSE = {"1.6": "ChargePointMaxProfile", "2.0.1": "ChargingStationMaxProfile",
               "2.1": "ChargingStationMaxProfile"}


def check_profile(command: SetChargingProfile) -> None:
    """What OCPP says in words about a profile, checked before it is sent (CommandRejected)."""
    name = "set-charging-profile"
    if command.purpose not in PURPOSES:
        raise CommandRejected(f"{name}: purpose is one of {', '.join(PURPOSES)}")
    if command.kind not in ("Absolute", "Relative", "Recurring", "Dynamic"):
        raise CommandRejected(f"{name}: kind is Absolute, Relative, Recurring or Dynamic")
    if command.kind == "Dynamic" and len(command.periods) != 1:
        raise CommandRejected(f"{name}: a Dynamic profile has one period (UpdateDynamicSchedule "
                              "moves it)")
    if command.dyn_update_interval is not None and command.kind != "Dynamic":
        raise CommandRejected(f"{name}: only a Dynamic profile has an update interval")
    if command.operation_mode not in (None, *OPERATION_MODES):
        raise CommandRejected(f"{name}: operation mode is one of {', '.join(OPERATION_MODES)}")
    if command.setpoint is not None and command.operation_mode != "CentralSetpoint":
        raise CommandRejected(f"{name}: a setpoint belongs to operation mode CentralSetpoint")
    if command.discharge_limit is not None and command.discharge_limit > 0:
        raise CommandRejected(f"{name}: a discharge limit is 0 or less (negative: discharging)")
    if command.unit not in ("A", "W"):
        raise CommandRejected(f"{name}: unit is A or W")
    if not command.periods or any(len(p) != 2 for p in command.periods):
        raise CommandRejected(f"{name}: periods are [start_s, limit] pairs, the first at 0")
    starts = [p[0] for p in command.periods]
    if starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
        raise CommandRejected(f"{name}: periods start at 0 and rise")
    if any(p[1] < 0 or p[0] != int(p[0]) for p in command.periods):
        raise CommandRejected(f"{name}: starts are whole seconds, limits 0 or more")
    if command.purpose == "TxProfile" and command.session_id is None:
        raise CommandRejected(f"{name}: a TxProfile names its session (session_id)")
    if command.purpose != "TxProfile" and command.session_id is not None:
        raise CommandRejected(f"{name}: only a TxProfile names a session")
    if command.purpose in MAX_PURPOSES and command.connector_id:
        raise CommandRejected(f"{name}: the station's maximum is set on connector 0")
    if command.purpose == "TxProfile" and not command.connector_id:
        raise CommandRejected(f"{name}: a TxProfile is set on its connector (1 or more)")
    if (command.kind == "Recurring") != (command.recurrency is not None):
        raise CommandRejected(f"{name}: a Recurring profile has a recurrency (Daily or "
                              "Weekly), and only it")
    if command.recurrency not in (None, "Daily", "Weekly"):
        raise CommandRejected(f"{name}: recurrency is Daily or Weekly")
    if command.kind == "Recurring" and command.start_schedule is None:
        raise CommandRejected(f"{name}: a Recurring profile has a start_schedule")


# The settings that hold a station's password: changed only through RotatePassword.
PASSWORD_KEYS = {"1.6": "AuthorizationKey", "2.0.1": "SecurityCtrlr.BasicAuthPassword",
                 "2.1": "SecurityCtrlr.BasicAuthPassword"}


RAW_PASSWORD_REFUSED = ("a raw call would change the station's password behind the gateway's "
                        "back (the station would be locked out): use `cocharge station "
                        "rotate-password`")
def password_key(key: str) -> bool:
    return key.casefold() in {k.casefold() for k in PASSWORD_KEYS.values()} | {
        "basicauthpassword"}


def sets_password(action: str, payload: dict[str, Any]) -> bool:
    """Does this raw call change the station's password?"""
    if action == "ChangeConfiguration":
        return password_key(str(payload.get("key", "")))
    if action == "SetVariables":
        return any(password_key(f"{(d.get('component') or {}).get('name')}."
                                f"{(d.get('variable') or {}).get('name')}")
                   or password_key(str((d.get("variable") or {}).get("name", "")))
                   for d in payload.get("setVariableData", []) if isinstance(d, dict))
    return False


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
           | GetTransactionStatus | RawCall | SyncLocalList | GetReport | SetNetworkProfile
           | SetVariableMonitoring | SetMonitoringBase | SetMonitoringLevel
           | ClearVariableMonitoring | GetMonitoringReport | CustomerInformation
           | RotatePassword | CertificateSigned | InstallCertificate
           | GetInstalledCertificateIds | DeleteCertificate | ExtendedTriggerMessage
           | SetSecurityProfile | SetDisplayMessage | GetDisplayMessages | ClearDisplayMessage
           | CostUpdated | SetChargingProfile | ClearChargingProfile | GetCompositeSchedule
           | GetChargingProfiles | SetDefaultTariff | GetTariffs | ClearTariffs
           | PublishFirmware | UnpublishFirmware | SetDERControl | GetDERControl
           | ClearDERControl | AdjustPeriodicEventStream | GetPeriodicEventStream
           | NotifyWebPaymentStarted | UsePriorityCharging | NotifyAllowedEnergyTransfer
           | ChangeTransactionTariff | UpdateDynamicSchedule | Reserve)

# What only OCPP 2.1 stations take (a 1.6 or 2.0.1 station refuses it with the reason).
ONLY_21: tuple[type, ...] = (
    SetDefaultTariff, GetTariffs, ClearTariffs, SetDERControl, GetDERControl, ClearDERControl,
    AdjustPeriodicEventStream, GetPeriodicEventStream, NotifyWebPaymentStarted,
    UsePriorityCharging, NotifyAllowedEnergyTransfer, ChangeTransactionTariff,
    UpdateDynamicSchedule)


def only_21(command: Any) -> bool:
    """Does only an OCPP 2.1 station take this (a 2.1 operation, or a profile with 2.1's
    Dynamic kind or operation modes)?"""
    return isinstance(command, ONLY_21) or (isinstance(command, SetChargingProfile)
                                            and command.needs_21)


def not_in_version(command: Any, protocol: str) -> CommandRejected:
    """The refusal of a 2.1 operation for an older station."""
    if isinstance(command, SetChargingProfile):
        return CommandRejected(f"OCPP {protocol} has no Dynamic profiles, operation modes, "
                               "setpoints or discharge limits: they are OCPP 2.1's")
    return CommandRejected(f"OCPP {protocol} has no {type(command).__name__}: it is an OCPP "
                           "2.1 operation")


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
    "reserve": Reserve,
    "cancel-reservation": CancelReservation,
    "share-lock": ShareLock,
    "get-base-report": GetBaseReport,
    "set-variables": SetVariables,
    "get-transaction-status": GetTransactionStatus,
    "get-local-list-version": GetLocalListVersion,
    "get-diagnostics": GetDiagnostics,
    "get-log": GetLog,
    "update-firmware": UpdateFirmware,
    "send-local-list": SyncLocalList,
    "get-report": GetReport,
    "set-network-profile": SetNetworkProfile,
    "set-variable-monitoring": SetVariableMonitoring,
    "set-monitoring-base": SetMonitoringBase,
    "set-monitoring-level": SetMonitoringLevel,
    "clear-variable-monitoring": ClearVariableMonitoring,
    "get-monitoring-report": GetMonitoringReport,
    "customer-information": CustomerInformation,
    "rotate-password": RotatePassword,
    "certificate-signed": CertificateSigned,
    "install-certificate": InstallCertificate,
    "get-installed-certificate-ids": GetInstalledCertificateIds,
    "delete-certificate": DeleteCertificate,
    "extended-trigger-message": ExtendedTriggerMessage,
    "security-profile": SetSecurityProfile,
    "set-display-message": SetDisplayMessage,
    "get-display-messages": GetDisplayMessages,
    "clear-display-message": ClearDisplayMessage,
    "cost-updated": CostUpdated,
    "set-charging-profile": SetChargingProfile,
    "clear-charging-profile": ClearChargingProfile,
    "get-composite-schedule": GetCompositeSchedule,
    "get-charging-profiles": GetChargingProfiles,
    "set-default-tariff": SetDefaultTariff,
    "publish-firmware": PublishFirmware,
    "set-der-control": SetDERControl,
    "web-payment-started": NotifyWebPaymentStarted,
    "use-priority-charging": UsePriorityCharging,
    "update-dynamic-schedule": UpdateDynamicSchedule,
    "allowed-energy-transfer": NotifyAllowedEnergyTransfer,
    "get-der-control": GetDERControl,
    "clear-der-control": ClearDERControl,
    "adjust-periodic-event-stream": AdjustPeriodicEventStream,
    "get-periodic-event-stream": GetPeriodicEventStream,
    "unpublish-firmware": UnpublishFirmware,
    "get-tariffs": GetTariffs,
    "change-transaction-tariff": ChangeTransactionTariff,
    "clear-tariffs": ClearTariffs,
    "call": RawCall,
}


# What only the operator may send (not a property backend over MQTT): raw OCPP, and what
# decides whom the station trusts or how it proves who it is — a password, a root or own
# certificate, its security profile. Whoever can set those can pose as the station or as us.
OPERATOR_ONLY = frozenset({"call", "rotate-password", "install-certificate", "delete-certificate",
                           "certificate-signed", "security-profile"})


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


def _fits(value: Any, hint: Any) -> bool:
    """Does a JSON value (from the CLI or an MQTT backend) fit a command field's type?"""
    if hint is Any:
        return True
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return any(_fits(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        item = get_args(hint)[0]
        return isinstance(value, list | tuple) and all(_fits(v, item) for v in value)
    if origin is dict:
        key, item = get_args(hint)
        return isinstance(value, dict) and all(
            _fits(k, key) and _fits(v, item) for k, v in value.items())
    return False


_HIDDEN = ("location", "request_id", "file_id")  # filled in by the gateway
# The ranges OCPP gives these fields in its text (the JSON schemas leave them open).
_RANGES = {"severity": (0, 9), "security_profile": (0, 3), "profile": (1, 3), "configuration_slot": (0, 2**31 - 1),
           "message_timeout": (1, 2**31 - 1), "retries": (0, 2**31 - 1),
           "retry_interval": (0, 2**31 - 1), "connector_id": (0, 2**31 - 1),
           "evse_id": (0, 2**31 - 1), "session_id": (1, 2**62), "reservation_id": (0, 2**31 - 1),
           "id": (0, 2**31 - 1), "stack_level": (0, 2**31 - 1), "duration": (0, 2**31 - 1),
           "number_phases": (1, 3)}


def build_command(name: str, args: dict[str, Any]) -> Command:
    """A command from its channel name and arguments; raises CommandRejected with the reason."""
    command_class = COMMANDS.get(name)
    if command_class is None:
        raise CommandRejected(f"unknown command {name!r}: one of {', '.join(COMMANDS)}")
    hints = get_type_hints(command_class)
    names = {f.name for f in fields(command_class)
             if not f.name.startswith("profile_") and f.name not in _HIDDEN}
    if command_class in (UpdateFirmware, PublishFirmware, UnpublishFirmware):
        names.add("file_id")
    if command_class in (PublishFirmware, UnpublishFirmware):
        names -= {"url", "checksum"}  # of the gateway's own file, filled in by the gateway
    if command_class is Reserve:
        names -= {"reservation_id"}  # filled in by the gateway
    unknown = set(args) - names
    if unknown:
        raise CommandRejected(f"{name} takes no {', '.join(sorted(unknown))}")
    for key, value in args.items():
        if not _fits(value, hints[key]):
            raise CommandRejected(f"{name}: {key} must be {_describe(hints[key])}, not {value!r}")
    for key, value in args.items():
        if key not in _RANGES or not isinstance(value, int):
            continue
        low, high = _RANGES[key]
        if not low <= value <= high:
            raise CommandRejected(f"{name}: {key} must be from {low} to {high}, not {value}")
    if command_class is ClearVariableMonitoring and not all(
            0 <= i < 2**31 for i in args.get("ids", ())):
        raise CommandRejected("clear-variable-monitoring: monitor ids are 0 or more")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    if command_class is SetVariables and not args.get("values"):
        raise CommandRejected("set-variables needs values: {\"Component.Variable\": \"value\"}")
    if command_class is UpdateFirmware and (args.get("url") is None) == (args.get("file_id") is None):
        raise CommandRejected("update-firmware needs the image: a URL or a stored firmware file "
                              "id (`cocharge firmware add`), one of them")
    if command_class is Reserve:
        try:
            until = datetime.fromisoformat(str(args.get("until", "")))
        except ValueError:
            raise CommandRejected("reserve: until must be an ISO 8601 time, e.g. "
                                  "2026-12-24T19:00:00+08:00") from None
        if until.tzinfo is None:
            raise CommandRejected("reserve: until needs its zone (Z or +08:00)")
    if command_class is ClearVariableMonitoring and not args.get("ids"):
        raise CommandRejected("clear-variable-monitoring needs the monitor ids")
    if command_class is CustomerInformation and sum(args.get(k) is not None for k in (
            "id_token", "customer_identifier", "customer_certificate")) != 1:
        raise CommandRejected("customer-information names the customer: id_token (a member's "
                              "tag), customer_identifier or customer_certificate, one of them")
    if command_class is RotatePassword and args.get("password") is not None and not valid_password(
            args["password"]):
        raise CommandRejected(PASSWORD_RULE)
    if command_class is CostUpdated:
        try:
            cost = Decimal(str(args.get("total_cost")))
        except InvalidOperation:
            cost = Decimal(-1)
        if not cost.is_finite() or cost < 0 or cost.as_tuple().exponent < -2:  # type: ignore[operator]
            raise CommandRejected("cost-updated: total_cost is an amount like 12.35 (0 or more, "
                                  "at most 2 decimals)")
    if command_class is CustomerInformation and not (args.get("report", True) or args.get("clear")):
        raise CommandRejected("customer-information: ask for a report, a clear, or both")
    if command_class is SetChargingProfile:
        args["periods"] = tuple(tuple(p) for p in args.get("periods", ()))
    try:
        command: Command = command_class(**args)
    except TypeError as exc:
        raise CommandRejected(f"{name}: {exc}") from exc
    if isinstance(command, SetChargingProfile):
        check_profile(command)
    if isinstance(command, ClearChargingProfile | GetChargingProfiles) and command.purpose not in (
            None, *PURPOSES):
        raise CommandRejected(f"{name}: purpose is one of {', '.join(PURPOSES)}")
    if isinstance(command, GetCompositeSchedule) and command.unit not in (None, "A", "W"):
        raise CommandRejected(f"{name}: unit is A or W")
    return command


def _describe(hint: Any) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
             type(None): "null"}
    if get_origin(hint) in (Union, UnionType):
        return " or ".join(_describe(h) for h in get_args(hint))
    if get_origin(hint) is tuple:
        return f"a list of {_describe(get_args(hint)[0]).removeprefix('a ')}s"
    if get_origin(hint) is dict:
        return "an object"
    return names.get(hint, str(hint))
