"""OCPP 1.6J: frames in, domain events out; commands out, answers in."""

from __future__ import annotations

import json
from typing import Any

from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from cocharge.gateway.clock import Stamp, clock_note, iso, now_iso
from cocharge.gateway.connection import (
    StationConnection,
    handles,
    normalise_sample,
    profile_fields,
    sample_value,
)
from cocharge.stations import commands as cmd
from cocharge.stations.events import (
    AuthStatus,
    ConnectorStatus,
    MeterReport,
    MeterSample,
    SessionEnded,
    SessionStarted,
    StationBooted,
    StationNotice,
)
from cocharge.stations.security_events import criticality
from cocharge.store.db import utcnow

# 1.6 has no "Unknown": an idTag the central system does not know is Invalid.
_ID_TAG_STATUS = {
    AuthStatus.ACCEPTED: "Accepted",
    AuthStatus.BLOCKED: "Blocked",
    AuthStatus.EXPIRED: "Expired",
    AuthStatus.UNKNOWN: "Invalid",
    AuthStatus.NOT_AT_THIS_TIME: "Blocked",
    AuthStatus.NOT_AT_THIS_LOCATION: "Blocked",
    AuthStatus.NO_CREDIT: "Blocked",
    AuthStatus.INVALID: "Invalid",
}
TRIGGERS = {"BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
            "Heartbeat", "MeterValues", "StatusNotification"}


# 2.0.1 names of the same things, accepted for either version.
_ROOT_TYPES = {"CSMSRootCertificate": "CentralSystemRootCertificate"}
_TRIGGER_NAMES = {"SignChargingStationCertificate": "SignChargePointCertificate"}


def id_tag_info(status: AuthStatus, parent: str | None = None) -> dict[str, str]:
    """idTagInfo; `parent` (the member's household) lets the charger accept another card of
    the household to stop the transaction (parentIdTag)."""
    info = {"status": _ID_TAG_STATUS[status]}
    if parent is not None:
        info["parent_id_tag"] = parent
    return info


def parse_meter_values(meter_value: list[dict[str, Any]], stamps: list[Stamp]) -> list[MeterSample]:
    """MeterValueType entries as the charger sent them (camelCase keys: RAW_ARGUMENTS)."""
    samples = []
    for entry, stamp in zip(meter_value, stamps, strict=True):
        at = stamp.at
        for sampled in entry.get("sampledValue", []):
            if sampled.get("format") == "SignedData":
                continue  # the signed blob is kept by the charger; we bill the plain reading
            value = sample_value(sampled["value"])
            samples.append(normalise_sample(at, sampled.get("measurand"), value,
                                            sampled.get("unit"), sampled.get("phase"),
                                            sampled.get("context")))
    return samples


def _max_16(purpose: str | None) -> str | None:
    return "ChargePointMaxProfile" if purpose in cmd.MAX_PURPOSES else purpose


class V16Connection(StationConnection):
    protocol = "1.6"
    ACTIONS = frozenset(a.value for a in Action)
    RAW_ARGUMENTS = frozenset({"meterValue", "transactionData"})  # parse_meter_values

    @handles(Action.boot_notification)
    async def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                                   **details: Any) -> call_result.BootNotification:
        self.admission = await self.service.boot(StationBooted(
            self.id, self.protocol, charge_point_vendor, charge_point_model,
            details.get("charge_point_serial_number") or details.get("charge_box_serial_number"),
            details.get("firmware_version")))
        interval = self.boot_interval()
        return call_result.BootNotification(current_time=now_iso(), interval=interval,
                                            status=self.admission.value)

    @handles(Action.heartbeat)
    async def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=now_iso())

    @handles(Action.status_notification)
    async def on_status_notification(self, connector_id: int, error_code: str, status: str,
                                     timestamp: str | None = None,
                                     **_: Any) -> call_result.StatusNotification:
        stamp, _none = self.read_times(timestamp, None)
        await self.service.connector_status(ConnectorStatus(
            self.id, connector_id, status, None if error_code == "NoError" else error_code,
            stamp.at))
        return call_result.StatusNotification()

    @handles(Action.authorize)
    async def on_authorize(self, id_tag: str) -> call_result.Authorize:
        status = await self.service.authorize(id_tag, self.id)
        return call_result.Authorize(
            id_tag_info=id_tag_info(status, await self.service.household(id_tag)))

    @handles(Action.start_transaction)
    async def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int,
                                   timestamp: str, **_: Any) -> call_result.StartTransaction:
        stamp = self.clock.read(timestamp)
        session_id, status = await self.service.start_session(SessionStarted(
            self.id, connector_id, id_tag, stamp.at, meter_start,
            clock_note("StartTransaction", [stamp]), stamp.charger))
        return call_result.StartTransaction(
            transaction_id=session_id,
            id_tag_info=id_tag_info(status, await self.service.household(id_tag)))

    @handles(Action.stop_transaction)
    async def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int,
                                  reason: str | None = None, id_tag: str | None = None,
                                  transaction_data: list[dict[str, Any]] | None = None,
                                  **_: Any) -> call_result.StopTransaction:
        data = transaction_data or []
        stamp, stamps = self.read_times(timestamp, data)
        status = await self.service.end_session(SessionEnded(
            self.id, str(transaction_id), stamp.at, meter_stop, reason, id_tag,
            parse_meter_values(data, stamps), clock_note("StopTransaction", [stamp, *stamps])))
        if self.settings.cost_data_transfer and not self._cost_refused:
            session_id = await self.service.session_of(self.id, str(transaction_id))
            fen = await self.service.settled_total(session_id) if session_id else None
            if fen is not None:
                self.push_cost(str(transaction_id), fen)  # the final total on the display
        if status is None or id_tag is None:
            return call_result.StopTransaction()
        return call_result.StopTransaction(
            id_tag_info=id_tag_info(status, await self.service.household(id_tag)))

    @handles(Action.meter_values)
    async def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]],
                              transaction_id: int | None = None) -> call_result.MeterValues:
        stamps = self.read_times(None, meter_value)[1]
        await self.service.meter_report(MeterReport(
            self.id, connector_id, str(transaction_id) if transaction_id is not None else None,
            parse_meter_values(meter_value, stamps), clock_note("MeterValues", stamps)))
        if transaction_id is not None and self.cost_due(str(transaction_id)):
            self.push_cost(str(transaction_id))
        return call_result.MeterValues()

    @handles(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, message_id: str | None = None,
                               data: str | None = None) -> call_result.DataTransfer:
        await self.service.notice(StationNotice(
            self.id, "data_transfer", utcnow(),
            {"vendor_id": vendor_id, "message_id": message_id, "data": data}))
        return call_result.DataTransfer(status="UnknownVendorId")

    @handles(Action.firmware_status_notification)
    async def on_firmware_status(self, status: str) -> call_result.FirmwareStatusNotification:
        await self.service.notice(StationNotice(self.id, "firmware", utcnow(),
                                                {"status": status}))
        await self.service.firmware_status(self.id, status, None)
        return call_result.FirmwareStatusNotification()

    @handles(Action.signed_firmware_status_notification)
    async def on_signed_firmware_status(self, status: str, request_id: int | None = None
                                        ) -> call_result.SignedFirmwareStatusNotification:
        await self.service.notice(StationNotice(self.id, "firmware", utcnow(),
                                                {"status": status, "request_id": request_id}))
        await self.service.firmware_status(self.id, status, request_id)
        return call_result.SignedFirmwareStatusNotification()

    @handles(Action.diagnostics_status_notification)
    async def on_diagnostics_status(self, status: str) -> call_result.DiagnosticsStatusNotification:
        await self.service.notice(StationNotice(self.id, "diagnostics", utcnow(),
                                                {"status": status}))
        await self.service.upload_status(self.id, None, status)
        return call_result.DiagnosticsStatusNotification()

    @handles(Action.log_status_notification)
    async def on_log_status(self, status: str,
                            request_id: int | None = None) -> call_result.LogStatusNotification:
        await self.service.notice(StationNotice(self.id, "log", utcnow(),
                                                {"status": status, "request_id": request_id}))
        await self.service.upload_status(self.id, request_id, status)
        return call_result.LogStatusNotification()

    @handles(Action.security_event_notification)
    async def on_security_event(self, type: str, timestamp: str,
                                tech_info: str | None = None) -> call_result.SecurityEventNotification:
        await self.service.notice(StationNotice(self.id, "security", self.clock.read(timestamp).at, {
            "type": type, "tech_info": tech_info,
            "criticality": criticality(self.protocol, type)}))
        return call_result.SecurityEventNotification()

    @handles(Action.sign_certificate)
    async def on_sign_certificate(self, csr: str) -> call_result.SignCertificate:
        answer = await self.service.certificates.sign_request(self.id, csr, None)
        return call_result.SignCertificate(status="Accepted" if answer.accepted else "Rejected")

    # --- commands --------------------------------------------------------------------------

    def to_call(self, command: cmd.Command, tx_ref: str | None) -> Any:
        if cmd.only_21(command):
            raise cmd.not_in_version(command, self.protocol)
        match command:
            case cmd.RemoteStart(tag=tag, connector_id=connector_id):
                if tag.startswith("#"):  # a payment at the charger: 2.1's DirectPayment
                    raise cmd.CommandRejected("a payment at the charger (DirectPayment) needs "
                                              "an OCPP 2.1 station")
                profile = command.tx_profile()
                if profile is not None:  # 1.6 names the id chargingProfileId
                    profile = {"charging_profile_id": profile.pop("id"), **profile}
                return call.RemoteStartTransaction(id_tag=tag, connector_id=connector_id,
                                                   charging_profile=profile)
            case cmd.RemoteStop():
                if tx_ref is None or not tx_ref.isdigit():
                    raise cmd.CommandRejected(f"session {command.session_id} has no 1.6 transaction id")
                return call.RemoteStopTransaction(transaction_id=int(tx_ref))
            case cmd.UnlockConnector(connector_id=connector_id):
                return call.UnlockConnector(connector_id=connector_id)
            case cmd.SetAvailability(connector_id=connector_id, operative=operative):
                return call.ChangeAvailability(connector_id=connector_id,
                                               type="Operative" if operative else "Inoperative")
            case cmd.Reset(hard=hard, evse_id=evse_id):
                if evse_id is not None:
                    raise cmd.CommandRejected("OCPP 1.6 resets the whole charge point: drop --evse")
                return call.Reset(type="Hard" if hard else "Soft")
            case cmd.TriggerMessage(message=message, connector_id=connector_id):
                if message not in TRIGGERS:
                    raise cmd.CommandRejected(
                        f"OCPP 1.6 cannot trigger {message}: choose one of {', '.join(sorted(TRIGGERS))}")
                return call.TriggerMessage(requested_message=message, connector_id=connector_id)
            case cmd.GetConfiguration(keys=keys):
                return call.GetConfiguration(key=list(keys) or None)
            case cmd.SetConfiguration(key=key, value=value):
                return call.ChangeConfiguration(key=key, value=value)
            case cmd.ClearCache():
                return call.ClearCache()
            case cmd.DataTransfer(vendor_id=vendor_id, message_id=message_id, data=data):
                return call.DataTransfer(vendor_id=vendor_id, message_id=message_id, data=data)
            case cmd.ReserveNow(connector_id=connector_id, tag=tag, expires_at=expires_at,
                                reservation_id=reservation_id):
                return call.ReserveNow(connector_id=connector_id, expiry_date=iso(expires_at),
                                       id_tag=tag, reservation_id=reservation_id)
            case cmd.Reserve(tag=tag, until=until, reservation_id=reservation_id):
                if command.connector_type is not None:
                    raise cmd.CommandRejected("OCPP 1.6 reserves a connector, not a connector "
                                              "type: give --evse (the connector)")
                return call.ReserveNow(connector_id=command.evse_id or 0, expiry_date=until,
                                       id_tag=tag, reservation_id=reservation_id,
                                       parent_id_tag=command.group)
            case cmd.CancelReservation(reservation_id=reservation_id):
                return call.CancelReservation(reservation_id=reservation_id)
            case cmd.ShareLock(connector_id=connector_id, locked=locked):
                return call.DataTransfer(vendor_id="cocharge", message_id="ShareLock", data=json.dumps(
                    {"connectorId": connector_id, "locked": locked}, separators=(",", ":")))
            case cmd.TxLimit(connector_id=connector_id, session_id=session_id, offset_s=offset_s,
                             limit_a=limit_a):
                if tx_ref is None or not tx_ref.isdigit():
                    raise cmd.CommandRejected(f"session {session_id} has no 1.6 transaction id")
                return call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles={
                    "charging_profile_id": session_id, "transaction_id": int(tx_ref),
                    "stack_level": 1, "charging_profile_purpose": "TxProfile",
                    "charging_profile_kind": "Relative",
                    "charging_schedule": {"charging_rate_unit": "A", "charging_schedule_period": [
                        {"start_period": 0, "limit": limit_a},
                        {"start_period": offset_s, "limit": 0}]}})
            case cmd.SetChargingProfile():
                if command.session_id is not None and (tx_ref is None or not tx_ref.isdigit()):
                    raise cmd.CommandRejected(f"session {command.session_id} has no 1.6 "
                                              "transaction id")
                profile = profile_fields(command, "ChargePointMaxProfile")
                profile["charging_profile_id"] = profile.pop("id")
                if tx_ref is not None and command.session_id is not None:
                    profile["transaction_id"] = int(tx_ref)
                return call.SetChargingProfile(connector_id=command.connector_id,
                                               cs_charging_profiles=profile)
            case cmd.ClearChargingProfile():
                return call.ClearChargingProfile(
                    id=command.id, connector_id=command.connector_id,
                    charging_profile_purpose=_max_16(command.purpose),
                    stack_level=command.stack_level)
            case cmd.GetCompositeSchedule():
                return call.GetCompositeSchedule(connector_id=command.connector_id,
                                                 duration=command.duration,
                                                 charging_rate_unit=command.unit)
            case cmd.GetChargingProfiles():
                raise cmd.CommandRejected("OCPP 1.6 has no GetChargingProfiles: use "
                                          "`remote get-composite-schedule`")
            case cmd.SendLocalList(version=version, full=full, entries=entries):
                return call.SendLocalList(
                    list_version=version, update_type="Full" if full else "Differential",
                    local_authorization_list=[
                        {"id_tag": tag} if expiry is False else
                        {"id_tag": tag, "id_tag_info": {"status": "Accepted", **(
                            {"expiry_date": expiry} if expiry else {})}}
                        for tag, expiry in entries.items()] or None)  # empty: an empty list
            case cmd.GetLocalListVersion():
                return call.GetLocalListVersion()
            case cmd.UpdateFirmware(url=url, request_id=request_id) if command.signature:
                # The security extension's signed update (its own status notification).
                return call.SignedUpdateFirmware(
                    request_id=request_id, retries=command.retries,
                    retry_interval=command.retry_interval, firmware={
                        "location": url, "retrieve_date_time": now_iso(),
                        "signing_certificate": command.signing_certificate or "",
                        "signature": command.signature})
            case cmd.UpdateFirmware(url=url):
                return call.UpdateFirmware(location=url, retrieve_date=now_iso(),
                                           retries=command.retries,
                                           retry_interval=command.retry_interval)
            case cmd.GetDiagnostics(start=start, stop=stop, location=location):
                return call.GetDiagnostics(location=location, start_time=start, stop_time=stop)
            case cmd.GetLog(log_type=log_type, oldest=oldest, latest=latest, location=location,
                            request_id=request_id):
                return call.GetLog(log_type=log_type, request_id=request_id, log={
                    "remote_location": location, "oldest_timestamp": oldest,
                    "latest_timestamp": latest})
            case cmd.CertificateSigned(certificate_chain=chain, certificate_type=kind):
                if kind not in (None, "ChargingStationCertificate"):
                    raise cmd.CommandRejected(f"OCPP 1.6 installs only the charge point's own "
                                              f"certificate this way, not a {kind}")
                return call.CertificateSigned(certificate_chain=chain)
            case cmd.InstallCertificate(certificate_type=kind, certificate=pem):
                return call.InstallCertificate(certificate_type=_ROOT_TYPES.get(kind, kind),
                                               certificate=pem)
            case cmd.GetInstalledCertificateIds(certificate_types=kinds):
                if len(kinds) != 1:
                    raise cmd.CommandRejected(
                        "OCPP 1.6 asks for one certificate type at a time: "
                        "CentralSystemRootCertificate or ManufacturerRootCertificate")
                return call.GetInstalledCertificateIds(
                    certificate_type=_ROOT_TYPES.get(kinds[0], kinds[0]))
            case cmd.DeleteCertificate():
                return call.DeleteCertificate(certificate_hash_data={
                    "hash_algorithm": command.hash_algorithm,
                    "issuer_name_hash": command.issuer_name_hash,
                    "issuer_key_hash": command.issuer_key_hash,
                    "serial_number": command.serial_number})
            case cmd.ExtendedTriggerMessage(message=message, connector_id=connector_id):
                return call.ExtendedTriggerMessage(
                    requested_message=_TRIGGER_NAMES.get(message, message),
                    connector_id=connector_id)
            case cmd.GetTransactionStatus():
                raise cmd.CommandRejected("OCPP 1.6 has no GetTransactionStatus")
            case cmd.SetVariables():
                raise cmd.CommandRejected("OCPP 1.6 sets one key at a time: use "
                                          "`remote config-set`")
            case (cmd.GetReport() | cmd.SetNetworkProfile() | cmd.SetVariableMonitoring()
                  | cmd.SetMonitoringBase() | cmd.SetMonitoringLevel()
                  | cmd.ClearVariableMonitoring() | cmd.GetMonitoringReport()
                  | cmd.CustomerInformation()):
                raise cmd.CommandRejected(
                    f"OCPP 1.6 has no {type(command).__name__}: it is an OCPP 2.0.1 operation")
            case cmd.CostUpdated(session_id=session_id, total_cost=total_cost):
                vendor = self.settings.cost_data_transfer
                if not vendor:
                    raise cmd.CommandRejected("OCPP 1.6 has no CostUpdated: set "
                                              "cost_data_transfer to send the cost by DataTransfer")
                if tx_ref is None or not tx_ref.isdigit():
                    raise cmd.CommandRejected(f"session {session_id} has no 1.6 transaction id")
                return call.DataTransfer(vendor_id=vendor, message_id="CostUpdated", data=json.dumps(
                    {"transactionId": int(tx_ref), "totalCost": total_cost,
                     "currency": self.settings.currency}, separators=(",", ":")))
            case (cmd.SetDisplayMessage() | cmd.GetDisplayMessages()
                  | cmd.ClearDisplayMessage()):
                raise cmd.CommandRejected(
                    f"OCPP 1.6 has no {type(command).__name__}: it is an OCPP 2.0.1 operation")
            case cmd.PublishFirmware() | cmd.UnpublishFirmware():
                raise cmd.CommandRejected(f"OCPP 1.6 has no {type(command).__name__}: it is an "
                                          "OCPP 2.0.1 operation (a Local Controller)")
            case cmd.GetBaseReport():
                raise cmd.CommandRejected("OCPP 1.6 has no device model to report: read its "
                                          "configuration with `remote config-get`")
        raise cmd.CommandRejected(f"unsupported command {command!r}")
