"""The simulated OCPP 1.6J charger: the 1.6 messages it sends and the commands it answers."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import ocpp.messages
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from websockets.asyncio.client import ClientConnection

from cocharge.simulators.hardware import Connector

ocpp.messages.ASYNC_VALIDATION = False
log = logging.getLogger(__name__)
from cocharge.simulators.charger import WallboxMixin
from cocharge.simulators.state import (
    FAULT_CODES_16,
    SimConfig,
    SimSession,
)

log = logging.getLogger(__name__)


class Wallbox16(WallboxMixin, ChargePoint16):
    def __init__(self, config: SimConfig, connection: ClientConnection) -> None:
        ChargePoint16.__init__(self, config.station_id, connection, response_timeout=30)
        self._init_wallbox(config)
        self.settings = {"HeartbeatInterval": "300", "MeterValueSampleInterval": "60",
                         "NumberOfConnectors": str(config.connectors),
                         "SecurityProfile": str(self.security_profile)}

    async def boot(self) -> None:
        answer = await self.call(call16.BootNotification(
            charge_point_model=self.config.model, charge_point_vendor=self.config.vendor,
            firmware_version=self.firmware))
        self.registration = answer.status
        self.heartbeat_s = answer.interval or 300

    async def heartbeat(self) -> None:
        await self.send(call16.Heartbeat())

    async def send_status(self, connector_id: int, status: str, error_code: str = "NoError") -> None:
        await self.send(call16.StatusNotification(connector_id=connector_id, error_code=error_code,
                                                  status=status, timestamp=self.clock.iso()))

    async def authorize(self, tag: str) -> bool:
        answer = await self.send(call16.Authorize(id_tag=tag))
        if answer is not None:
            self.groups[tag] = answer.id_tag_info.get("parent_id_tag")
        return bool(answer and answer.id_tag_info["status"] == "Accepted")

    async def start_transaction(self, session: SimSession, register_wh: float) -> None:
        reservation = self.hw[session.connector_id].reservation
        request = call16.StartTransaction(
            connector_id=session.connector_id, id_tag=session.tag, meter_start=int(register_wh),
            timestamp=self.clock.iso(), reservation_id=reservation[0] if reservation else None)
        if not self.online:
            # Offline (the local list admitted the tag): charge now; the central system's
            # transaction id comes with the answer once the queued start is delivered, and the
            # transaction's later messages wait behind it.
            async def replay() -> None:
                answer = await self.send(request)
                if answer is not None:
                    session.tx_id = answer.transaction_id
            self.outbox.append(replay)
            return
        answer = await self.send(request)
        if answer is None:
            raise RuntimeError("StartTransaction needs the central system's transaction id")
        session.tx_id = answer.transaction_id
        if answer.id_tag_info["status"] != "Accepted":
            session.stop_reason = "DeAuthorized"

    async def _send_for(self, session: SimSession, build: Any) -> None:
        """A transaction message: built now, or (its transaction id not known yet: started
        offline) when the queued start has been delivered."""
        if session.tx_id is None:
            async def later() -> None:
                await self.send(build(), keep=True)
            self.outbox.append(later)
            return
        await self.send(build(), keep=True)

    async def charging_state(self, session: SimSession, state: str) -> None:
        await self.send_status(session.connector_id, state)

    async def report_fault(self, connector_id: int, kind: str) -> None:
        await self.send_status(connector_id, "Faulted", FAULT_CODES_16[kind])

    async def send_meter(self, session: SimSession, hw: Connector) -> None:
        sampled = [{"timestamp": self.clock.iso(session.sampled_at), "sampledValue": [
            {"value": str(int(hw.register_wh)), "measurand": "Energy.Active.Import.Register",
             "unit": "Wh"},
            {"value": f"{hw.power_w:.0f}", "measurand": "Power.Active.Import", "unit": "W"},
            *({"value": f"{hw.current_a:.2f}", "measurand": "Current.Import", "unit": "A",
               "phase": f"L{n}"} for n in range(1, hw.phases + 1)),
            {"value": f"{(hw.ev.soc if hw.ev else 0) * 100:.0f}", "measurand": "SoC",
             "unit": "Percent"}]}]
        await self._send_for(session, lambda: call16.MeterValues(
            connector_id=session.connector_id, transaction_id=session.tx_id,
            meter_value=sampled))

    async def stop_transaction(self, session: SimSession, register_wh: float) -> None:
        at = self.clock.iso()
        await self._send_for(session, lambda: call16.StopTransaction(
            meter_stop=int(register_wh), timestamp=at, transaction_id=session.tx_id,
            reason=session.stop_reason, id_tag=session.tag))

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, connector_id: int | None = None,
                        charging_profile: dict[str, Any] | None = None,
                        **_: Any) -> result16.RemoteStartTransaction:
        n = connector_id or next((c for c in self.hw if c not in self.sessions), None)
        if n is None or n not in self.hw or n in self.sessions or not self.hw[n].operative:
            return result16.RemoteStartTransaction(status="Rejected")
        self._spawn(self.charge(n, id_tag, profile=self.start_profile(n, charging_profile)))
        return result16.RemoteStartTransaction(status="Accepted")

    @on("RemoteStopTransaction")
    def on_remote_stop(self, transaction_id: int) -> result16.RemoteStopTransaction:
        ok = self.request_stop(transaction_id)
        return result16.RemoteStopTransaction(status="Accepted" if ok else "Rejected")

    @on("UnlockConnector")
    def on_unlock(self, connector_id: int) -> result16.UnlockConnector:
        if connector_id not in self.hw:
            return result16.UnlockConnector(status="NotSupported")
        session = self.sessions.get(connector_id)
        if session is not None:
            session.stop_reason = "UnlockCommand"
        self.hw[connector_id].cable_locked = False
        return result16.UnlockConnector(status="Unlocked")

    @on("ChangeAvailability")
    def on_change_availability(self, connector_id: int, type: str) -> result16.ChangeAvailability:
        targets = list(self.hw) if connector_id == 0 else [connector_id]
        return result16.ChangeAvailability(status=self.set_availability(targets, type == "Operative"))

    @on("Reset")
    def on_reset(self, type: str) -> result16.Reset:
        for session in self.sessions.values():
            session.stop_reason = "HardReset" if type == "Hard" else "SoftReset"
        self._spawn(self._after_reset(power_cycle=type == "Hard"))
        return result16.Reset(status="Accepted")

    @on("TriggerMessage")
    def on_trigger(self, requested_message: str, connector_id: int | None = None) -> result16.TriggerMessage:
        senders = {"Heartbeat": self.heartbeat, "BootNotification": self.boot,
                   "StatusNotification": lambda: self.send_status(connector_id or 1, "Available")}
        if requested_message not in senders:
            return result16.TriggerMessage(status="NotImplemented")
        self._spawn(senders[requested_message]())
        return result16.TriggerMessage(status="Accepted")

    @on("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None) -> result16.GetConfiguration:
        wanted = key or list(self.settings)
        known = [{"key": k, "readonly": k == "NumberOfConnectors", "value": self.settings[k]}
                 for k in wanted if k in self.settings]
        unknown = [k for k in wanted if k not in self.settings]
        return result16.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str) -> result16.ChangeConfiguration:
        if key == "AuthorizationKey":
            return result16.ChangeConfiguration(status=self.new_password(value))
        if key == "SecurityProfile":
            return result16.ChangeConfiguration(status=self.change_profile(value))
        if key not in self.settings:
            return result16.ChangeConfiguration(status="NotSupported")
        if key == "NumberOfConnectors":
            return result16.ChangeConfiguration(status="Rejected")
        self.settings[key] = value
        return result16.ChangeConfiguration(status="Accepted")

    def change_profile(self, value: str) -> str:
        """1.6 security whitepaper: a higher profile only, with what it needs in place;
        the charge point then reconnects that way (wss:// at `secure_url` for 2 and 3)."""
        if not value.isdigit() or not 1 <= int(value) <= 3 or int(value) <= self.security_profile:
            return "Rejected"
        profile = int(value)
        url = self.config.url if self.config.url.startswith("wss") else self.config.secure_url
        if url is None or (profile == 3 and self.client_chain is None):
            return "Rejected"
        self.settings["SecurityProfile"] = value
        self._spawn(self._after_answer16(lambda: self.move_to(url, profile)))
        return "Accepted"

    async def _after_answer16(self, work: Any) -> None:
        await asyncio.sleep(0.05)  # our answer goes first
        await work()

    @on("ExtendedTriggerMessage")
    def on_extended_trigger(self, requested_message: str,
                            connector_id: int | None = None) -> result16.ExtendedTriggerMessage:
        if requested_message == "SignChargePointCertificate":
            self._spawn(self._after_answer16(lambda: self.send(call16.SignCertificate(
                csr=self.csr()))))
            return result16.ExtendedTriggerMessage(status="Accepted")
        senders = {"Heartbeat": self.heartbeat, "BootNotification": self.boot,
                   "StatusNotification": lambda: self.send_status(connector_id or 1, "Available")}
        if requested_message not in senders:
            return result16.ExtendedTriggerMessage(status="NotImplemented")
        self._spawn(senders[requested_message]())
        return result16.ExtendedTriggerMessage(status="Accepted")

    @on("CertificateSigned")
    def on_certificate_signed(self, certificate_chain: str) -> result16.CertificateSigned:
        ok = self.accept_certificate(certificate_chain)
        return result16.CertificateSigned(status="Accepted" if ok else "Rejected")

    @on("InstallCertificate")
    def on_install_certificate(self, certificate_type: str,
                               certificate: str) -> result16.InstallCertificate:
        return result16.InstallCertificate(status=self.install_root(certificate_type, certificate))

    @on("GetInstalledCertificateIds")
    def on_get_installed_ids(self, certificate_type: str) -> result16.GetInstalledCertificateIds:
        found = [f["certificate_hash_data"] for f in self.installed_roots([certificate_type])]
        return result16.GetInstalledCertificateIds(status="Accepted" if found else "NotFound",
                                                   certificate_hash_data=found or None)

    @on("DeleteCertificate")
    def on_delete_certificate(self, certificate_hash_data: dict[str, Any]
                              ) -> result16.DeleteCertificate:
        return result16.DeleteCertificate(status=self.delete_root(certificate_hash_data))

    @on("SendLocalList")
    def on_send_local_list(self, list_version: int, update_type: str,
                           local_authorization_list: list[dict[str, Any]] | None = None,
                           **_: Any) -> result16.SendLocalList:
        entries = {e["id_tag"]: ((e["id_tag_info"]["status"], e["id_tag_info"].get("expiry_date"))
                                 if e.get("id_tag_info") else None)
                   for e in local_authorization_list or []}
        return result16.SendLocalList(status=self.apply_local_list(
            list_version, update_type == "Full", entries))

    @on("GetLocalListVersion")
    def on_get_local_list_version(self) -> result16.GetLocalListVersion:
        return result16.GetLocalListVersion(list_version=self.local_list_version)

    @on("UpdateFirmware")
    def on_update_firmware(self, location: str, retrieve_date: str,
                           **_: Any) -> result16.UpdateFirmware:
        async def report(status: str) -> None:
            await self.send(call16.FirmwareStatusNotification(status=status))
        self._spawn(self.update_firmware(location, report))
        return result16.UpdateFirmware()

    @on("SignedUpdateFirmware")
    def on_signed_update_firmware(self, request_id: int, firmware: dict[str, Any],
                                  **_: Any) -> result16.SignedUpdateFirmware:
        async def report(status: str) -> None:
            await self.send(call16.SignedFirmwareStatusNotification(status=status,
                                                                    request_id=request_id))
        self._spawn(self.update_firmware(firmware["location"], report, firmware["signature"],
                                         firmware["signing_certificate"]))
        return result16.SignedUpdateFirmware(status="Accepted")

    @on("GetLog")
    def on_get_log(self, log: dict[str, Any], log_type: str, request_id: int,
                   **_: Any) -> result16.GetLog:
        return result16.GetLog(status="Accepted",
                               filename=self.start_log_upload(log, log_type, request_id))

    @on("GetDiagnostics")
    def on_get_diagnostics(self, location: str, **_: Any) -> result16.GetDiagnostics:
        name = f"{self.config.station_id}-diagnostics.log"
        self._spawn(self._send_diagnostics(location, name))
        return result16.GetDiagnostics(file_name=name)

    async def _send_diagnostics(self, location: str, name: str) -> None:
        await asyncio.sleep(0.05)  # after our answer
        await self.send(call16.DiagnosticsStatusNotification(status="Uploading"))
        ok = await self.upload(location, name, self.log_file())
        await self.send(call16.DiagnosticsStatusNotification(
            status="Uploaded" if ok else "UploadFailed"))

    @on("ClearCache")
    def on_clear_cache(self) -> result16.ClearCache:
        return result16.ClearCache(status="Accepted")

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None,
                         data: str | None = None) -> result16.DataTransfer:
        if vendor_id == "cocharge" and message_id == "CostUpdated":
            if not self.config.display:
                return result16.DataTransfer(status="UnknownMessageId")
            try:
                cost = json.loads(data or "")
                self.costs_shown.setdefault(str(cost["transactionId"]), []).append(
                    str(cost["totalCost"]))
            except (ValueError, KeyError, TypeError):
                return result16.DataTransfer(status="Rejected")
            return result16.DataTransfer(status="Accepted")
        if vendor_id == "cocharge" and message_id == "ShareLock":
            try:
                request = json.loads(data or "")
                ok = self.set_bay_lock(int(request["connectorId"]), bool(request["locked"]))
            except (ValueError, KeyError, TypeError):
                return result16.DataTransfer(status="Rejected")
            return result16.DataTransfer(status="Accepted" if ok else "Rejected")
        if vendor_id == "cocharge":
            return result16.DataTransfer(status="UnknownMessageId")
        return result16.DataTransfer(status="Accepted", data=data)

    @on("ReserveNow")
    def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str, reservation_id: int,
                       **_: Any) -> result16.ReserveNow:
        return result16.ReserveNow(status=self.reserve(connector_id, id_tag, reservation_id, expiry_date))

    @on("CancelReservation")
    def on_cancel_reservation(self, reservation_id: int) -> result16.CancelReservation:
        ok = self.cancel_reservation(reservation_id)
        return result16.CancelReservation(status="Accepted" if ok else "Rejected")

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]
                                      ) -> result16.SetChargingProfile:
        await self.answering_profiles.wait()
        return result16.SetChargingProfile(status=self.install_profile(connector_id,
                                                                       cs_charging_profiles))

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, id: int | None = None, connector_id: int | None = None,
                                  charging_profile_purpose: str | None = None,
                                  stack_level: int | None = None,
                                  **_: Any) -> result16.ClearChargingProfile:
        cleared = self.clear_profiles(id, connector_id, charging_profile_purpose, stack_level)
        return result16.ClearChargingProfile(status="Accepted" if cleared else "Unknown")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, connector_id: int, duration: int,
                                  charging_rate_unit: str | None = None,
                                  **_: Any) -> result16.GetCompositeSchedule:
        if connector_id and connector_id not in self.hw:
            return result16.GetCompositeSchedule(status="Rejected")
        found = self.composite_schedule(connector_id, duration, charging_rate_unit)
        return result16.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=found["start"],
            charging_schedule={"duration": duration, "start_schedule": found["start"],
                               "charging_rate_unit": found["unit"],
                               "charging_schedule_period": found["periods"]})
