"""OCPP 2.0.1: frames in, domain events out; commands out, answers in.

Our connector number is the 2.0.1 EVSE id (each EVSE of a shared wallbox has one
connector in practice).
"""

from __future__ import annotations

import itertools
import math
import time
from decimal import Decimal
from typing import Any

from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from cocharge.gateway.clock import Stamp, clock_note, iso, now_iso
from cocharge.gateway.connection import (
    StationConnection,
    handles,
    normalise_sample,
    profile_fields,
    sample_value,
)
from cocharge.settlement.funds import CARD_PREFIX
from cocharge.settlement.tariff21 import charger_cost_fen
from cocharge.stations import commands as cmd
from cocharge.stations.commands import CommandResult
from cocharge.stations.events import (
    AuthStatus,
    ConnectorStatus,
    MeterReport,
    MeterSample,
    StationBooted,
    StationNotice,
    TransactionEvent,
)
from cocharge.stations.policy import safety_fault_201
from cocharge.stations.security_events import criticality
from cocharge.store.db import utcnow

TRIGGERS = {"BootNotification", "LogStatusNotification", "FirmwareStatusNotification",
            "Heartbeat", "MeterValues", "SignChargingStationCertificate", "SignV2GCertificate",
            "StatusNotification", "TransactionEvent", "SignCombinedCertificate",
            "PublishFirmwareStatusNotification"}
_remote_start_ids = itertools.count(int(time.time()) % 1_000_000)
_report_ids = itertools.count(int(time.time()) % 1_000_000)
# 1.6 names of the same things, accepted for either version.
_ROOT_TYPES = {"CentralSystemRootCertificate": "CSMSRootCertificate"}
_TRIGGER_NAMES = {"SignChargePointCertificate": "SignChargingStationCertificate"}

# A departure time an EV gives further ahead than this is not planned for (none is used).
DEPARTURE_HORIZON_S = 7 * 86400


def _max_201(purpose: str | None) -> str | None:
    return "ChargingStationMaxProfile" if purpose in cmd.MAX_PURPOSES else purpose


def _status_info(answer: dict[str, Any]) -> dict[str, str] | None:
    """An answer's camelCase statusInfo as the ocpp library's call result takes it."""
    info = answer.get("statusInfo")
    if not info:
        return None
    return {"reason_code": info["reasonCode"], "additional_info": info["additionalInfo"]}


def cmd_hash_data(command: cmd.DeleteCertificate) -> dict[str, str]:
    return {"hash_algorithm": command.hash_algorithm, "issuer_name_hash": command.issuer_name_hash,
            "issuer_key_hash": command.issuer_key_hash, "serial_number": command.serial_number}


# Members' tags are RFID cards: local lists name them as such.
TOKEN_TYPE = "ISO14443"


# The types a station may present a member's card with, kept per member and sent back where
# we name the card to the station (remote start, reservation, local list, customer data).
CARD_TYPES = frozenset({"ISO14443", "ISO15693"})

# The idToken types a member's card or app token can be (Central: the tokens we send in
# RequestStartTransaction). Any other type (KeyCode, MacAddress, eMAID, ...) is not a member,
# whatever its value: a key code equal to someone's card number is not their card.
MEMBER_TOKEN_TYPES = frozenset({"ISO14443", "ISO15693", "Central"})


def member_tag(id_token: dict[str, Any]) -> str:
    """The token as the members table knows it: by value and type (a token of another type
    gets a value no member tag can have)."""
    if id_token.get("type") in MEMBER_TOKEN_TYPES:
        return str(id_token["id_token"])
    return f"#{id_token.get('type')}:{id_token['id_token']}"


def id_token_info(status: AuthStatus, group: str | None = None,
                  message: dict[str, str] | None = None) -> dict[str, Any]:
    """idTokenInfo; `group` (the member's household) lets the station accept another card of
    the household to stop the transaction (groupIdToken, C09); `message`: the member's
    personal message (service.personal_message)."""
    info: dict[str, Any] = {"status": status.value}
    if group is not None:
        info["group_id_token"] = {"id_token": group, "type": "Central"}
    if message is not None:
        info["personal_message"] = message
    return info


def parse_meter_values(meter_value: list[dict[str, Any]] | None,
                       stamps: list[Stamp]) -> list[MeterSample]:
    """MeterValueType entries as the charger sent them (camelCase keys: RAW_ARGUMENTS)."""
    samples = []
    for entry, stamp in zip(meter_value or [], stamps, strict=True):
        at = stamp.at
        for sampled in entry.get("sampledValue", []):
            unit_of_measure = sampled.get("unitOfMeasure") or {}
            value = sample_value(sampled.get("value"), unit_of_measure.get("multiplier", 0))
            samples.append(normalise_sample(at, sampled.get("measurand"), value,
                                            unit_of_measure.get("unit"), sampled.get("phase"),
                                            sampled.get("context")))
    return samples


def _component_variable(key: str) -> tuple[str, str]:
    component, _, variable = key.partition(".")
    if not component or not variable:
        raise cmd.CommandRejected(
            f"OCPP 2.0.1 names a setting as Component.Variable (e.g. OCPPCommCtrlr.HeartbeatInterval), "
            f"not {key!r}")
    return component, variable


def _on_evse(found: list[dict[str, Any]] | None, evse_id: int | None
             ) -> list[dict[str, Any]] | None:
    """The components of one EVSE (a report or monitors of EVSE 2 only)."""
    if evse_id is None or not found:
        return found
    return [{**item, "component": {**item["component"], "evse": {"id": evse_id}}}
            for item in found]


def _component_variables(wanted: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """"Component" or "Component.Variable" names as ComponentVariableType entries."""
    found = []
    for name in wanted:
        component, _, variable = name.partition(".")
        if not component:
            raise cmd.CommandRejected(f"{name!r} names no component")
        found.append({"component": {"name": component},
                      **({"variable": {"name": variable}} if variable else {})})
    return found or None


MONITOR_TYPES = ("UpperThreshold", "LowerThreshold", "Delta", "Periodic", "PeriodicClockAligned")


def _more_monitor(spec: str) -> dict[str, Any]:
    """One more monitor of a SetVariableMonitoring request, from
    "Component.Variable:Type:Value[:severity[:evse]]" (raises CommandRejected)."""
    parts = spec.split(":")
    try:
        if not 3 <= len(parts) <= 5 or parts[1] not in MONITOR_TYPES:
            raise ValueError
        component, variable = _component_variable(parts[0])
        value = float(parts[2])
        severity = int(parts[3]) if len(parts) > 3 else 5
        evse = int(parts[4]) if len(parts) > 4 else None
        if not variable or not math.isfinite(value) or not 0 <= severity <= 9 or (
                evse is not None and not 1 <= evse <= 64):
            raise ValueError
    except ValueError:
        raise cmd.CommandRejected(
            f"monitor {spec!r}: write Component.Variable:Type:Value[:severity[:evse]], type "
            f"one of {', '.join(MONITOR_TYPES)}, severity 0-9") from None
    target: dict[str, Any] = {"name": component, **({"evse": {"id": evse}} if evse else {})}
    return {"value": value, "type": parts[1], "severity": severity, "transaction": False,
            "component": target, "variable": {"name": variable}}


def _tags_of(command: cmd.Command) -> list[str]:
    """The member tags a command names to the station."""
    match command:
        case cmd.RemoteStart(tag=tag) | cmd.ReserveNow(tag=tag) | cmd.Reserve(tag=tag):
            return [tag]
        case cmd.SendLocalList(entries=entries):
            return list(entries)
        case cmd.CustomerInformation(id_token=token):
            return [token] if token else []
    return []


class V201Connection(StationConnection):
    protocol = "2.0.1"
    ACTIONS = frozenset(a.value for a in Action)
    RAW_ARGUMENTS = frozenset({"meterValue"})  # parse_meter_values
    SPLITS = {
        "GetVariables": ("getVariableData", "DeviceDataCtrlr", "GetVariables",
                         "getVariableResult"),
        "SetVariables": ("setVariableData", "DeviceDataCtrlr", "SetVariables",
                         "setVariableResult"),
        "SetVariableMonitoring": ("setMonitoringData", "MonitoringCtrlr",
                                  "SetVariableMonitoring", "setMonitoringResult"),
        "ClearVariableMonitoring": ("id", "MonitoringCtrlr", "ClearVariableMonitoring",
                                    "clearMonitoringResult"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token_types: dict[str, str] = {}  # member tag -> its card's idToken type

    @handles(Action.boot_notification)
    async def on_boot_notification(self, charging_station: dict[str, Any], reason: str,
                                   **_: Any) -> call_result.BootNotification:
        self.admission = await self.service.boot(StationBooted(
            self.id, self.protocol, charging_station.get("vendor_name", ""),
            charging_station.get("model", ""), charging_station.get("serial_number"),
            charging_station.get("firmware_version")))
        interval = self.boot_interval()
        return call_result.BootNotification(current_time=now_iso(), interval=interval,
                                            status=self.admission.value)

    @handles(Action.heartbeat)
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=now_iso())

    @handles(Action.status_notification)
    async def on_status_notification(self, timestamp: str, connector_status: str, evse_id: int,
                                     connector_id: int, **_: Any) -> call_result.StatusNotification:
        await self.service.connector_status(ConnectorStatus(
            self.id, evse_id, connector_status, None, self.clock.read(timestamp).at))
        return call_result.StatusNotification()

    @handles(Action.authorize)
    async def on_authorize(self, id_token: dict[str, Any],
                           iso15118_certificate_hash_data: list[dict[str, Any]] | None = None,
                           **_: Any) -> call_result.Authorize:
        tag = member_tag(id_token)
        status = await self.service.authorize(tag, self.id)
        if status is not AuthStatus.UNKNOWN:  # a member's card: its type is kept
            await self.learn_type(id_token)
        certificate = None
        if iso15118_certificate_hash_data:
            # C07: the contract certificate's status from its issuer's OCSP responder.
            certificate = await self.service.certificates.contract_status([
                {"hashAlgorithm": d.get("hash_algorithm"),
                 "issuerNameHash": d.get("issuer_name_hash"),
                 "issuerKeyHash": d.get("issuer_key_hash"),
                 "serialNumber": d.get("serial_number"), "responderURL": d.get("responder_url")}
                for d in iso15118_certificate_hash_data])
            if certificate == "CertificateRevoked":
                status = AuthStatus.INVALID
        return call_result.Authorize(id_token_info=id_token_info(
            status, await self.service.household(tag),
            await self.service.personal_message(tag, status)), certificate_status=certificate)

    @handles(Action.transaction_event)
    async def on_transaction_event(self, event_type: str, timestamp: str, trigger_reason: str,
                                   seq_no: int, transaction_info: dict[str, Any],
                                   meter_value: list[dict[str, Any]] | None = None,
                                   offline: bool | None = None, evse: dict[str, Any] | None = None,
                                   id_token: dict[str, Any] | None = None,
                                   cost_details: dict[str, Any] | None = None,
                                   **_: Any) -> Any:
        stamp, stamps = self.read_times(timestamp, meter_value)
        status = await self.service.transaction_event(TransactionEvent(
            station_id=self.id,
            tx_ref=transaction_info["transaction_id"],
            event_type=event_type,
            seq_no=seq_no,
            at=stamp.at,
            connector_id=evse["id"] if evse else None,
            id_tag=member_tag(id_token) if id_token else None,
            stop_reason=transaction_info.get("stopped_reason"),
            samples=parse_meter_values(meter_value, stamps),
            offline=bool(offline),
            charging_state=transaction_info.get("charging_state"),
            clock=clock_note(f"TransactionEvent {event_type}", [stamp, *stamps]),
            protocol=self.protocol,
            charger_cost=charger_cost_fen(cost_details) if cost_details else None,  # 2.1
            charger_tariff=transaction_info.get("tariff_id"),  # 2.1
        ))
        if id_token and status is not None and status is not AuthStatus.UNKNOWN:
            await self.learn_type(id_token)
        tx_ref = transaction_info["transaction_id"]
        total_cost = None
        if event_type == "Ended":
            session_id = await self.service.session_of(self.id, tx_ref)
            fen = await self.service.settled_total(session_id) if session_id else None
            total_cost = float(Decimal(fen) / 100) if fen is not None else None
            self._cost_at.pop(tx_ref, None)
        elif meter_value and self.cost_due(tx_ref):
            self.push_cost(tx_ref)
        info = None if status is None else id_token_info(
            status, await self.service.household(member_tag(id_token or {})))
        return await self.transaction_answer(event_type, tx_ref, total_cost, info)

    # --- token types --------------------------------------------------------------------

    async def learn_type(self, id_token: dict[str, Any]) -> None:
        """Keep the type a member's card was presented with (once per connection)."""
        kind, tag = id_token.get("type"), str(id_token.get("id_token", ""))
        if kind in CARD_TYPES and self.token_types.get(tag) != kind:
            self.token_types[tag] = str(kind)
            await self.service.learn_token_type(tag, str(kind))

    def type_of(self, tag: str, default: str = TOKEN_TYPE) -> str:
        return self.token_types.get(tag, default)

    async def _send_command(self, command: cmd.Command, tx_ref: str | None = None) -> CommandResult:
        tags = [t for t in _tags_of(command) if t not in self.token_types]
        if tags:  # what the station knows these cards as, before we name them to it
            self.token_types.update(await self.service.token_types(tags))
        return await super()._send_command(command, tx_ref)

    async def transaction_answer(self, event_type: str, tx_ref: str, total_cost: float | None,
                                 info: dict[str, Any] | None) -> Any:
        """The TransactionEventResponse (2.1 adds the transaction's spending limit)."""
        return call_result.TransactionEvent(total_cost=total_cost, id_token_info=info)

    @handles(Action.meter_values)
    async def on_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]],
                              **_: Any) -> call_result.MeterValues:
        stamps = self.read_times(None, meter_value)[1]
        await self.service.meter_report(MeterReport(self.id, evse_id, None,
                                                    parse_meter_values(meter_value, stamps),
                                                    clock_note("MeterValues", stamps)))
        return call_result.MeterValues()

    @handles(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, message_id: str | None = None,
                               data: Any = None, **_: Any) -> call_result.DataTransfer:
        await self.service.notice(StationNotice(
            self.id, "data_transfer", utcnow(),
            {"vendor_id": vendor_id, "message_id": message_id, "data": data}))
        return call_result.DataTransfer(status="UnknownVendorId")

    @handles(Action.firmware_status_notification)
    async def on_firmware_status(self, status: str, request_id: int | None = None,
                                 **_: Any) -> call_result.FirmwareStatusNotification:
        await self.service.notice(StationNotice(self.id, "firmware", utcnow(),
                                                {"status": status, "request_id": request_id}))
        await self.service.firmware_status(self.id, status, request_id)
        return call_result.FirmwareStatusNotification()

    @handles(Action.security_event_notification)
    async def on_security_event(self, type: str, timestamp: str,
                                tech_info: str | None = None,
                                **_: Any) -> call_result.SecurityEventNotification:
        await self.service.notice(StationNotice(self.id, "security", self.clock.read(timestamp).at, {
            "type": type, "tech_info": tech_info,
            "criticality": criticality(self.protocol, type)}))
        return call_result.SecurityEventNotification()

    @handles(Action.sign_certificate)
    async def on_sign_certificate(self, csr: str, certificate_type: str | None = None,
                                  **_: Any) -> call_result.SignCertificate:
        answer = await self.service.certificates.sign_request(self.id, csr, certificate_type)
        if answer.accepted:
            return call_result.SignCertificate(status="Accepted")
        return call_result.SignCertificate(status="Rejected", status_info={
            "reason_code": "InvalidCSR", "additional_info": answer.reason[:512]})

    @handles(Action.get_certificate_status)
    async def on_get_certificate_status(self, ocsp_request_data: dict[str, Any],
                                        **_: Any) -> call_result.GetCertificateStatus:
        request = {"hashAlgorithm": ocsp_request_data.get("hash_algorithm"),
                   "issuerNameHash": ocsp_request_data.get("issuer_name_hash"),
                   "issuerKeyHash": ocsp_request_data.get("issuer_key_hash"),
                   "serialNumber": ocsp_request_data.get("serial_number")}
        answer = await self.service.certificates.certificate_status(request)
        return call_result.GetCertificateStatus(
            status=answer["status"], ocsp_result=answer.get("ocspResult"),
            status_info=_status_info(answer))

    @handles(Action.get_15118_ev_certificate)
    async def on_get_15118_ev_certificate(self, iso15118_schema_version: str, action: str,
                                          exi_request: str,
                                          **_: Any) -> call_result.Get15118EVCertificate:
        answer = await self.service.certificates.contracts.get(
            self.id, iso15118_schema_version, action, exi_request)
        return call_result.Get15118EVCertificate(
            status=answer["status"], exi_response=answer["exiResponse"],
            status_info=_status_info(answer))

    @handles(Action.notify_display_messages)
    async def on_notify_display_messages(self, request_id: int,
                                         message_info: list[dict[str, Any]] | None = None,
                                         tbc: bool | None = None,
                                         **_: Any) -> call_result.NotifyDisplayMessages:
        await self.service.notice(StationNotice(
            self.id, "display_messages", utcnow(),
            {"request_id": request_id, "tbc": bool(tbc), "messages": [
                {"id": m.get("id"), "priority": m.get("priority"), "state": m.get("state"),
                 "content": (m.get("message") or {}).get("content")}
                for m in message_info or []]}))
        return call_result.NotifyDisplayMessages()

    # --- smart charging (K): what the station, an EMS or the grid operator says ----------------

    def _limit_a(self, schedule: dict[str, Any] | None) -> float | None:
        """The limit in force now of an external schedule, in A per phase (W divided over
        the phases at the nominal voltage)."""
        if not schedule:
            return None
        periods = schedule.get("charging_schedule_period") or []
        if not periods:
            return None
        limit = float(periods[0]["limit"])
        if schedule.get("charging_rate_unit") == "W":
            phases = periods[0].get("number_phases") or 3
            limit /= self.settings.nominal_voltage_v * phases
        return limit

    @handles(Action.notify_charging_limit)
    async def on_notify_charging_limit(self, charging_limit: dict[str, Any],
                                       charging_schedule: list[dict[str, Any]] | None = None,
                                       evse_id: int | None = None,
                                       **_: Any) -> call_result.NotifyChargingLimit:
        await self.service.notice(StationNotice(self.id, "charging_limit", utcnow(), {
            "source": charging_limit.get("charging_limit_source"),
            "grid_critical": charging_limit.get("is_grid_critical"), "evse_id": evse_id,
            "schedule": charging_schedule}))
        limit = self._limit_a(charging_schedule[0] if charging_schedule else None)
        if self.service.load is not None and limit is not None:
            self.service.load.external_limit(self.id, evse_id or 0, limit)
        return call_result.NotifyChargingLimit()

    @handles(Action.cleared_charging_limit)
    async def on_cleared_charging_limit(self, charging_limit_source: str,
                                        evse_id: int | None = None,
                                        **_: Any) -> call_result.ClearedChargingLimit:
        await self.service.notice(StationNotice(self.id, "charging_limit_cleared",
                                                utcnow(),
                                                {"source": charging_limit_source, "evse_id": evse_id}))
        if self.service.load is not None:
            self.service.load.external_limit(self.id, evse_id or 0, None)
        return call_result.ClearedChargingLimit()

    @handles(Action.report_charging_profiles)
    async def on_report_charging_profiles(self, request_id: int, charging_limit_source: str,
                                          charging_profile: list[dict[str, Any]], evse_id: int,
                                          tbc: bool | None = None,
                                          **_: Any) -> call_result.ReportChargingProfiles:
        await self.service.notice(StationNotice(self.id, "charging_profiles", utcnow(), {
            "request_id": request_id, "source": charging_limit_source, "evse_id": evse_id,
            "tbc": bool(tbc), "profiles": charging_profile}))
        return call_result.ReportChargingProfiles()

    @handles(Action.notify_ev_charging_needs)
    async def on_notify_ev_charging_needs(self, charging_needs: dict[str, Any], evse_id: int,
                                          max_schedule_tuples: int | None = None,
                                          **_: Any) -> call_result.NotifyEVChargingNeeds:
        await self.service.notice(StationNotice(self.id, "ev_charging_needs", utcnow(), {
            "evse_id": evse_id, "needs": charging_needs, "max_schedule_tuples": max_schedule_tuples}))
        ac = charging_needs.get("ac_charging_parameters") or {}
        dc = charging_needs.get("dc_charging_parameters") or {}
        energy = ac.get("energy_amount") or dc.get("energy_amount")
        departure = charging_needs.get("departure_time")
        scheduled = self.service.load is not None and self.service.load.ev_needs(
            self.id, evse_id, ac.get("ev_max_current"),
            float(energy) if energy is not None else None,
            self.clock.ahead(departure, DEPARTURE_HORIZON_S) if departure else None)
        return call_result.NotifyEVChargingNeeds(status="Accepted" if scheduled else "Rejected")

    @handles(Action.notify_ev_charging_schedule)
    async def on_notify_ev_charging_schedule(self, time_base: str,
                                             charging_schedule: dict[str, Any], evse_id: int,
                                             **_: Any) -> call_result.NotifyEVChargingSchedule:
        over = self._beyond_our_limits(evse_id, charging_schedule)
        await self.service.notice(StationNotice(self.id, "ev_charging_schedule", utcnow(), {
            "evse_id": evse_id, "time_base": time_base, "schedule": charging_schedule,
            **({"rejected": over} if over else {})}))
        if over:  # K15.FR.12: the EV asks for more than we allow this EVSE
            return call_result.NotifyEVChargingSchedule(status="Rejected", status_info={
                "reason_code": "ExceedsLimits", "additional_info": over[:512]})
        return call_result.NotifyEVChargingSchedule(status="Accepted")

    def _beyond_our_limits(self, evse_id: int, schedule: dict[str, Any]) -> str | None:
        """Why an EV's schedule exceeds what we allow the EVSE (load management's limit, else
        the station's registered power), or None."""
        ours = self.service.load.limit_a(self.id, evse_id) if self.service.load else None
        record = self.service.directory.get(self.id)
        if ours is None and record is not None and record.max_power_w:
            ours = record.max_power_w / (self.settings.nominal_voltage_v * 3)
        if ours is None:
            return None
        for period in schedule.get("charging_schedule_period") or []:
            asked = self._limit_a({**schedule, "charging_schedule_period": [period]})
            if asked is not None and asked > ours + 0.05:
                return (f"period at {period.get('start_period', 0)} s asks {asked:.1f} A; "
                        f"this EVSE may draw {ours:.1f} A")
        return None

    @handles(Action.publish_firmware_status_notification)
    async def on_publish_firmware_status_notification(
            self, status: str, location: list[str] | None = None, request_id: int | None = None,
            **payload: Any) -> call_result.PublishFirmwareStatusNotification:
        """L03: how a Local Controller's publication goes (Published: the URLs it serves)."""
        await self.service.notice(StationNotice(self.id, "firmware_publish", utcnow(), {
            "status": status, "location": location, "request_id": request_id, **payload}))
        return call_result.PublishFirmwareStatusNotification()

    @handles(Action.notify_report)
    async def on_notify_report(self, request_id: int, generated_at: str, seq_no: int,
                               report_data: list[dict[str, Any]] | None = None,
                               tbc: bool | None = None, **_: Any) -> call_result.NotifyReport:
        stored = await self.service.device_model(self.id, request_id, report_data or [])
        await self.service.notice(StationNotice(
            self.id, "report", self.clock.read(generated_at).at,
            {"request_id": request_id, "seq_no": seq_no, "tbc": bool(tbc), "attributes": stored}))
        return call_result.NotifyReport()

    @handles(Action.log_status_notification)
    async def on_log_status(self, status: str, request_id: int | None = None,
                            **_: Any) -> call_result.LogStatusNotification:
        await self.service.notice(StationNotice(self.id, "log", utcnow(),
                                                {"status": status, "request_id": request_id}))
        await self.service.upload_status(self.id, request_id, status)
        return call_result.LogStatusNotification()

    @handles(Action.reservation_status_update)
    async def on_reservation_status(self, reservation_id: int, reservation_update_status: str,
                                    **_: Any) -> call_result.ReservationStatusUpdate:
        await self.service.reservation_ended(self.id, reservation_id, reservation_update_status)
        return call_result.ReservationStatusUpdate()

    @handles(Action.notify_monitoring_report)
    async def on_notify_monitoring_report(self, request_id: int, seq_no: int, generated_at: str,
                                          monitor: list[dict[str, Any]] | None = None,
                                          tbc: bool | None = None,
                                          **_: Any) -> call_result.NotifyMonitoringReport:
        stored = await self.service.monitors_reported(self.id, request_id, seq_no, monitor or [])
        await self.service.notice(StationNotice(
            self.id, "monitoring_report", self.clock.read(generated_at).at,
            {"request_id": request_id, "seq_no": seq_no, "tbc": bool(tbc), "monitors": stored}))
        return call_result.NotifyMonitoringReport()

    @handles(Action.notify_customer_information)
    async def on_notify_customer_information(self, data: str, seq_no: int, generated_at: str,
                                             request_id: int, tbc: bool | None = None,
                                             **_: Any) -> call_result.NotifyCustomerInformation:
        await self.service.notice(StationNotice(
            self.id, "customer_information", self.clock.read(generated_at).at,
            {"request_id": request_id, "seq_no": seq_no, "tbc": bool(tbc), "data": data}))
        return call_result.NotifyCustomerInformation()

    @handles(Action.notify_event)
    async def on_notify_event(self, generated_at: str, seq_no: int,
                              event_data: list[dict[str, Any]], tbc: bool | None = None,
                              **_: Any) -> call_result.NotifyEvent:
        await self.service.notice(StationNotice(
            self.id, "event", self.clock.read(generated_at).at,
            {"seq_no": seq_no, "tbc": bool(tbc), "event_data": event_data}))
        for item in event_data:
            component, variable = item.get("component", {}), item.get("variable", {})
            kind = safety_fault_201(component.get("name", ""), variable.get("name", ""),
                                    str(item.get("actual_value", "")), bool(item.get("cleared")))
            if kind is not None:
                evse_id = (component.get("evse") or {}).get("id") or 1
                await self.service.fault(self.id, evse_id, kind,
                                         self.clock.read(item["timestamp"]).at)
        return call_result.NotifyEvent()

    # --- commands --------------------------------------------------------------------------

    def to_call(self, command: cmd.Command, tx_ref: str | None) -> Any:
        if self.protocol == "2.0.1" and cmd.only_21(command):
            raise cmd.not_in_version(command, self.protocol)
        match command:
            case cmd.RemoteStart(tag=tag, connector_id=connector_id):
                profile = command.tx_profile()
                if profile is not None:  # 2.0.1: a list of schedules, each with an id
                    profile["charging_schedule"] = [{"id": 1, **profile["charging_schedule"]}]
                token = {"id_token": tag, "type": self.type_of(tag, "Central")}
                if tag.startswith(CARD_PREFIX):  # a payment made on the QR code's page (C24)
                    if self.protocol == "2.0.1":
                        raise cmd.CommandRejected("a payment at the charger (DirectPayment) "
                                                  "needs an OCPP 2.1 station")
                    token = {"id_token": tag[len(CARD_PREFIX):], "type": "DirectPayment"}
                return call.RequestStartTransaction(
                    id_token=token,
                    remote_start_id=next(_remote_start_ids), evse_id=connector_id,
                    charging_profile=profile)
            case cmd.RemoteStop():
                if tx_ref is None:
                    raise cmd.CommandRejected(f"session {command.session_id} has no transaction id")
                return call.RequestStopTransaction(transaction_id=tx_ref)
            case cmd.UnlockConnector(connector_id=connector_id):
                return call.UnlockConnector(evse_id=connector_id, connector_id=1)
            case cmd.SetAvailability(connector_id=connector_id, operative=operative):
                evse: dict[str, Any] | None = {"id": connector_id} if connector_id else None
                if evse is not None and command.evse_connector is not None:
                    evse["connector_id"] = command.evse_connector
                return call.ChangeAvailability(
                    operational_status="Operative" if operative else "Inoperative", evse=evse)
            case cmd.Reset(hard=hard, evse_id=evse_id):
                return call.Reset(type="Immediate" if hard else "OnIdle", evse_id=evse_id)
            case cmd.SendLocalList(version=version, full=full, entries=entries):
                return call.SendLocalList(
                    version_number=version, update_type="Full" if full else "Differential",
                    local_authorization_list=[
                        {"id_token": {"id_token": tag, "type": self.type_of(tag)}}
                        if expiry is False
                        else {"id_token": {"id_token": tag, "type": self.type_of(tag)},
                              "id_token_info": {"status": "Accepted", **(
                                  {"cache_expiry_date_time": expiry} if expiry else {})}}
                        for tag, expiry in entries.items()] or None)  # empty: an empty list
            case cmd.GetLocalListVersion():
                return call.GetLocalListVersion()
            case cmd.UpdateFirmware(request_id=request_id, url=url):
                firmware = {"location": url, "retrieve_date_time": now_iso()}
                if command.install_at:
                    firmware["install_date_time"] = command.install_at
                if command.signature:
                    firmware.update(signature=command.signature,
                                    signing_certificate=command.signing_certificate)
                return call.UpdateFirmware(request_id=request_id, firmware=firmware,
                                           retries=command.retries,
                                           retry_interval=command.retry_interval)
            case cmd.GetReport(component_criteria=criteria, component_variables=wanted):
                return call.GetReport(request_id=next(_report_ids),
                                      component_criteria=list(criteria) or None,
                                      component_variable=_on_evse(
                                          _component_variables(wanted), command.evse_id))
            case cmd.SetNetworkProfile():
                return call.SetNetworkProfile(
                    configuration_slot=command.configuration_slot, connection_data={
                        "ocpp_version": command.ocpp_version,
                        "ocpp_transport": command.ocpp_transport,
                        "ocpp_csms_url": command.ocpp_csms_url,
                        "message_timeout": command.message_timeout,
                        "security_profile": command.security_profile,
                        "ocpp_interface": command.ocpp_interface})
            case cmd.SetVariableMonitoring():
                component, variable = _component_variable(command.variable)
                target: dict[str, Any] = {"name": component}
                if command.evse_id:
                    target["evse"] = {"id": command.evse_id}
                stream = {k: v for k, v in (("interval", command.stream_interval),
                                            ("values", command.stream_values)) if v is not None}
                if stream and self.protocol == "2.0.1":
                    raise cmd.CommandRejected("periodic event streams are OCPP 2.1")
                if (not stream and self.protocol == "2.1"
                        and command.type in ("Periodic", "PeriodicClockAligned")):
                    # 2.1: a periodic monitor's values come as a stream (SEND frames, no
                    # answers), one value each period, rather than a NotifyEvent each.
                    stream = {"interval": max(1, int(command.value)), "values": 1}
                return call.SetVariableMonitoring(set_monitoring_data=[{
                    "value": command.value, "type": command.type, "severity": command.severity,
                    "transaction": command.transaction, "component": target,
                    "variable": {"name": variable},
                    **({"periodic_event_stream": stream} if stream else {}),
                    **({"id": command.id} if command.id is not None else {})},
                    *map(_more_monitor, command.also)])
            case cmd.SetMonitoringBase(monitoring_base=base):
                return call.SetMonitoringBase(monitoring_base=base)
            case cmd.SetMonitoringLevel(severity=severity):
                return call.SetMonitoringLevel(severity=severity)
            case cmd.ClearVariableMonitoring(ids=ids):
                return call.ClearVariableMonitoring(id=list(ids))
            case cmd.GetMonitoringReport(monitoring_criteria=criteria, component_variables=wanted):
                return call.GetMonitoringReport(request_id=next(_report_ids),
                                                monitoring_criteria=list(criteria) or None,
                                                component_variable=_on_evse(
                                                    _component_variables(wanted),
                                                    command.evse_id))
            case cmd.CustomerInformation(request_id=request_id):
                return call.CustomerInformation(
                    request_id=request_id, report=command.report, clear=command.clear,
                    id_token={"id_token": command.id_token,
                              "type": self.type_of(command.id_token)}
                    if command.id_token else None,
                    customer_identifier=command.customer_identifier,
                    customer_certificate=command.customer_certificate)
            case cmd.CertificateSigned(certificate_chain=chain, certificate_type=kind):
                return call.CertificateSigned(certificate_chain=chain, certificate_type=kind)
            case cmd.InstallCertificate(certificate_type=kind, certificate=pem):
                return call.InstallCertificate(certificate_type=_ROOT_TYPES.get(kind, kind),
                                               certificate=pem)
            case cmd.GetInstalledCertificateIds(certificate_types=kinds):
                return call.GetInstalledCertificateIds(
                    certificate_type=[_ROOT_TYPES.get(k, k) for k in kinds] or None)
            case cmd.DeleteCertificate():
                return call.DeleteCertificate(certificate_hash_data=cmd_hash_data(command))
            case cmd.ExtendedTriggerMessage(message=message, connector_id=connector_id):
                return self.to_call(cmd.TriggerMessage(
                    _TRIGGER_NAMES.get(message, message), connector_id), tx_ref)
            case cmd.SetDisplayMessage():
                shown: dict[str, Any] = {
                    "id": command.id, "priority": command.priority,
                    "message": {"format": command.format, "content": command.content,
                                **({"language": command.language} if command.language else {})}}
                if command.state:
                    shown["state"] = command.state
                if command.start:
                    shown["start_date_time"] = command.start
                if command.end:
                    shown["end_date_time"] = command.end
                if command.session_id is not None:
                    if tx_ref is None:
                        raise cmd.CommandRejected(f"session {command.session_id} has no "
                                                  "transaction id")
                    shown["transaction_id"] = tx_ref
                return call.SetDisplayMessage(message=shown)
            case cmd.GetDisplayMessages(ids=ids, priority=priority, state=state,
                                        request_id=request_id):
                return call.GetDisplayMessages(request_id=request_id or next(_report_ids),
                                               id=list(ids) or None, priority=priority,
                                               state=state)
            case cmd.ClearDisplayMessage(id=message_id):
                return call.ClearDisplayMessage(id=message_id)
            case cmd.CostUpdated(session_id=session_id, total_cost=total_cost):
                if tx_ref is None:
                    raise cmd.CommandRejected(f"session {session_id} has no transaction id")
                return call.CostUpdated(total_cost=float(Decimal(total_cost)), transaction_id=tx_ref)
            case cmd.SetChargingProfile():
                if command.session_id is not None and tx_ref is None:
                    raise cmd.CommandRejected(f"session {command.session_id} has no transaction id")
                profile = profile_fields(command, "ChargingStationMaxProfile")
                profile["charging_schedule"] = [{"id": command.id, **profile["charging_schedule"]}]
                if command.session_id is not None:
                    profile["transaction_id"] = tx_ref
                return call.SetChargingProfile(evse_id=command.connector_id,
                                               charging_profile=profile)
            case cmd.ClearChargingProfile():
                clearing: dict[str, Any] = {key: value for key, value in (
                    ("evse_id", command.connector_id),
                    ("charging_profile_purpose", _max_201(command.purpose)),
                    ("stack_level", command.stack_level)) if value is not None}
                return call.ClearChargingProfile(charging_profile_id=command.id,
                                                 charging_profile_criteria=clearing or None)
            case cmd.GetCompositeSchedule():
                return call.GetCompositeSchedule(duration=command.duration,
                                                 evse_id=command.connector_id,
                                                 charging_rate_unit=command.unit)
            case cmd.GetChargingProfiles(request_id=request_id):
                asked: dict[str, Any] = {key: value for key, value in (
                    ("charging_profile_purpose", _max_201(command.purpose)),
                    ("stack_level", command.stack_level),
                    ("charging_limit_source", list(command.sources) or None),
                    ("charging_profile_id", list(command.ids) or None)) if value is not None}
                return call.GetChargingProfiles(request_id=request_id or next(_report_ids),
                                                evse_id=command.connector_id,
                                                charging_profile=asked)
            case cmd.PublishFirmware(url=url, checksum=checksum, request_id=request_id):
                return call.PublishFirmware(location=url, checksum=checksum,
                                            request_id=request_id, retries=command.retries,
                                            retry_interval=command.retry_interval)
            case cmd.UnpublishFirmware(checksum=checksum):
                return call.UnpublishFirmware(checksum=checksum)
            case cmd.GetDiagnostics():
                raise cmd.CommandRejected("OCPP 2.0.1 has no GetDiagnostics: use "
                                          "`remote get-log` (type DiagnosticsLog)")
            case cmd.GetLog(log_type=log_type, oldest=oldest, latest=latest, location=location,
                            request_id=request_id):
                return call.GetLog(log_type=log_type, request_id=request_id, log={
                    "remote_location": location, "oldest_timestamp": oldest,
                    "latest_timestamp": latest})
            case cmd.GetBaseReport(report_base=report_base):
                return call.GetBaseReport(request_id=next(_report_ids), report_base=report_base)
            case cmd.TriggerMessage(message=message, connector_id=connector_id):
                if message not in TRIGGERS:
                    raise cmd.CommandRejected(
                        f"OCPP 2.0.1 cannot trigger {message}: choose one of {', '.join(sorted(TRIGGERS))}")
                return call.TriggerMessage(requested_message=message,
                                           evse={"id": connector_id} if connector_id else None)
            case cmd.GetConfiguration(keys=keys):
                if not keys:
                    raise cmd.CommandRejected(
                        "OCPP 2.0.1 stations answer only named variables: give one or more "
                        "Component.Variable keys")
                return call.GetVariables(get_variable_data=[
                    {"component": {"name": component}, "variable": {"name": variable}}
                    for component, variable in map(_component_variable, keys)])
            case cmd.SetConfiguration(key=key, value=value):
                component, variable = _component_variable(key)
                return call.SetVariables(set_variable_data=[{
                    "attribute_value": value, "component": {"name": component},
                    "variable": {"name": variable}}])
            case cmd.GetTransactionStatus():
                return call.GetTransactionStatus(transaction_id=tx_ref)
            case cmd.SetVariables(values=values):
                return call.SetVariables(set_variable_data=[
                    {"attribute_value": value, "component": {"name": component},
                     "variable": {"name": variable}}
                    for (component, variable), value in (
                        (_component_variable(k), v) for k, v in values.items())])
            case cmd.ClearCache():
                return call.ClearCache()
            case cmd.DataTransfer(vendor_id=vendor_id, message_id=message_id, data=data):
                return call.DataTransfer(vendor_id=vendor_id, message_id=message_id, data=data)
            case cmd.ReserveNow(connector_id=connector_id, tag=tag, expires_at=expires_at,
                                reservation_id=reservation_id):
                return call.ReserveNow(id=reservation_id, expiry_date_time=iso(expires_at),
                                       id_token={"id_token": tag,
                                                 "type": self.type_of(tag, "Central")},
                                       evse_id=connector_id)
            case cmd.Reserve(tag=tag, until=until, reservation_id=reservation_id):
                return call.ReserveNow(
                    id=reservation_id, expiry_date_time=until,
                    id_token={"id_token": tag, "type": self.type_of(tag, "Central")},
                    evse_id=command.evse_id, connector_type=command.connector_type,
                    group_id_token={"id_token": command.group, "type": "Central"}
                    if command.group else None)
            case cmd.CancelReservation(reservation_id=reservation_id):
                return call.CancelReservation(reservation_id=reservation_id)
            case cmd.ShareLock(connector_id=connector_id, locked=locked):
                return call.SetVariables(set_variable_data=[{
                    "attribute_value": "true" if locked else "false",
                    "component": {"name": "ShareLock", "evse": {"id": connector_id}},
                    "variable": {"name": "Locked"}}])
            case cmd.TxLimit(connector_id=connector_id, session_id=session_id, offset_s=offset_s,
                             limit_a=limit_a):
                if tx_ref is None:
                    raise cmd.CommandRejected(f"session {session_id} has no transaction id")
                return call.SetChargingProfile(evse_id=connector_id, charging_profile={
                    "id": session_id, "stack_level": 1, "charging_profile_purpose": "TxProfile",
                    "charging_profile_kind": "Relative", "transaction_id": tx_ref,
                    "charging_schedule": [{"id": session_id, "charging_rate_unit": "A",
                                           "charging_schedule_period": [
                                               {"start_period": 0, "limit": limit_a},
                                               {"start_period": offset_s, "limit": 0}]}]})
        raise cmd.CommandRejected(f"unsupported command {command!r}")

    def result_of(self, command: cmd.Command, answer: dict[str, Any]) -> CommandResult:
        results = answer.get("getVariableResult") or answer.get("setVariableResult")
        if results:
            statuses = [r.get("attributeStatus", "") for r in results]
            accepted = all(s in ("Accepted", "RebootRequired") for s in statuses)
            return CommandResult(accepted, ",".join(statuses), answer)
        results = answer.get("setMonitoringResult") or answer.get("clearMonitoringResult")
        if results:
            statuses = [r.get("status", "") for r in results]
            return CommandResult(all(s == "Accepted" for s in statuses), ",".join(statuses),
                                 answer)
        return super().result_of(command, answer)
