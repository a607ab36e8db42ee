"""The simulated OCPP 2.0.1 charger: the 2.0.1 messages it sends, the commands it answers, its
device model, monitors and display."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import Any

import ocpp.messages
from ocpp.routing import on
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import ClientConnection

from cocharge.simulators.hardware import Connector
from cocharge.simulators.profiles import MAX, Profile, purpose_of

ocpp.messages.ASYNC_VALIDATION = False
log = logging.getLogger(__name__)
from cocharge.simulators.charger import WallboxMixin
from cocharge.simulators.state import (
    FAULT_EVENTS_201,
    SimConfig,
    SimSession,
)

log = logging.getLogger(__name__)


class Wallbox201(WallboxMixin, ChargePoint201):
    def __init__(self, config: SimConfig, connection: ClientConnection) -> None:
        ChargePoint201.__init__(self, config.station_id, connection, response_timeout=30)
        self._init_wallbox(config)
        self.settings = {"OCPPCommCtrlr.HeartbeatInterval": "300",
                         "SampledDataCtrlr.TxUpdatedInterval": "60",
                         "OCPPCommCtrlr.NetworkConfigurationPriority": "1",
                         "SecurityCtrlr.SecurityProfile": str(self.security_profile)}
        self._seq = itertools.count()
        # Variable monitors: id -> {component, evse, variable, type, value, severity, ...}
        self.monitors: dict[int, dict[str, Any]] = {}
        self._monitor_ids = itertools.count(1)
        self.monitoring_level = 9
        self._tripped: set[int] = set()  # threshold monitors now beyond their value
        # Slot 1: how it was installed (the URL it connects to now).
        self.network_profiles: dict[int, dict[str, Any]] = {1: {
            "ocpp_csms_url": config.url, "security_profile": self.security_profile}}
        self.customer_data_cleared: list[str] = []

    async def boot(self) -> None:
        answer = await self.call(call201.BootNotification(
            charging_station={"model": self.config.model, "vendor_name": self.config.vendor,
                              "firmware_version": self.firmware},
            reason="PowerUp"))
        self.registration = answer.status
        self.heartbeat_s = answer.interval or 300

    async def heartbeat(self) -> None:
        await self.send(call201.Heartbeat())

    async def send_status(self, connector_id: int, status: str) -> None:
        neutral = {"Preparing": "Occupied", "Charging": "Occupied", "Finishing": "Occupied"}
        await self.send(call201.StatusNotification(
            timestamp=self.clock.iso(), connector_status=neutral.get(status, status),
            evse_id=connector_id, connector_id=1))

    async def authorize(self, tag: str) -> bool:
        answer = await self.send(call201.Authorize(id_token={"id_token": tag, "type": "ISO14443"}))
        if answer is not None:
            self.groups[tag] = (answer.id_token_info.get("group_id_token") or {}).get("id_token")
        return bool(answer and answer.id_token_info["status"] == "Accepted")

    async def charging_state(self, session: SimSession, state: str) -> None:
        await self.send(call201.TransactionEvent(
            event_type="Updated", timestamp=self.clock.iso(), trigger_reason="ChargingStateChanged",
            seq_no=next(self._seq), transaction_info={"transaction_id": session.tx_id,
                                                      "charging_state": state}), keep=True)

    async def report_fault(self, connector_id: int, kind: str) -> None:
        component, variable = FAULT_EVENTS_201[kind]
        await self.send(call201.NotifyEvent(generated_at=self.clock.iso(), seq_no=0, event_data=[{
            "event_id": next(self._seq), "timestamp": self.clock.iso(), "trigger": "Alerting",
            "actual_value": "true", "event_notification_type": "HardWiredNotification",
            "component": {"name": component, "evse": {"id": connector_id}},
            "variable": {"name": variable}}]))
        await self.send_status(connector_id, "Faulted")

    def _register(self, hw: Connector, context: str, at: str | None = None
                  ) -> list[dict[str, Any]]:
        return [{"timestamp": at or self.clock.iso(), "sampled_value": [
            {"value": round(hw.register_wh, 1), "measurand": "Energy.Active.Import.Register",
             "context": context, "unit_of_measure": {"unit": "Wh"}},
            {"value": round(hw.power_w), "measurand": "Power.Active.Import", "context": context,
             "unit_of_measure": {"unit": "W"}},
            *({"value": round(hw.current_a, 2), "measurand": "Current.Import", "context": context,
               "phase": f"L{n}", "unit_of_measure": {"unit": "A"}}
              for n in range(1, hw.phases + 1))]}]

    async def start_transaction(self, session: SimSession, register_wh: float) -> None:
        session.tx_id = str(uuid.uuid4())
        answer = await self.send(call201.TransactionEvent(
            event_type="Started", timestamp=self.clock.iso(), trigger_reason="Authorized",
            seq_no=next(self._seq), transaction_info={"transaction_id": session.tx_id,
                                                      "charging_state": "Charging"},
            evse={"id": session.connector_id, "connector_id": 1},
            id_token={"id_token": session.tag, "type": "ISO14443"},
            meter_value=self._register(self.hw[session.connector_id], "Transaction.Begin")),
            keep=True)
        if answer and answer.id_token_info and answer.id_token_info["status"] != "Accepted":
            session.stop_reason = "DeAuthorized"

    async def send_meter(self, session: SimSession, hw: Connector) -> None:
        at = self.clock.iso(session.sampled_at)
        await self.send(call201.TransactionEvent(
            event_type="Updated", timestamp=at, trigger_reason="MeterValuePeriodic",
            seq_no=next(self._seq), transaction_info={"transaction_id": session.tx_id},
            meter_value=self._register(hw, "Sample.Periodic", at)), keep=True)
        await self.check_monitors("EVSE", session.connector_id, "Power", hw.power_w,
                                  transaction=True)

    def variable_value(self, component: str, evse_id: int | None, variable: str) -> float | None:
        """The present value of a monitorable variable (None: no such variable here)."""
        if component == "EVSE" and variable == "Power":
            hw = self.hw.get(evse_id or 1)
            return hw.power_w if hw is not None else None
        value = self.settings.get(f"{component}.{variable}")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    async def check_monitors(self, component: str, evse_id: int | None, variable: str,
                             value: float, transaction: bool = False,
                             previous: float | None = None) -> None:
        """Fire NotifyEvent for the monitors this new value trips (thresholds once per
        crossing, a delta when it moved by at least the monitor's value)."""
        events = []
        for monitor_id, m in sorted(self.monitors.items()):
            if (m["component"], m["variable"]) != (component, variable) or (
                    m["evse"] not in (None, evse_id)) or m["severity"] > self.monitoring_level:
                continue
            if m["transaction"] and not transaction:
                continue
            if m["type"] in ("UpperThreshold", "LowerThreshold"):
                beyond = value > m["value"] if m["type"] == "UpperThreshold" else value < m["value"]
                if beyond == (monitor_id in self._tripped):
                    continue
                (self._tripped.add if beyond else self._tripped.discard)(monitor_id)
                fire, cleared = True, not beyond
            elif m["type"] == "Delta":
                fire = previous is not None and abs(value - previous) >= m["value"]
                cleared = False
            else:
                fire, cleared = False, False
            if fire:
                target = {"name": component, **({"evse": {"id": evse_id}} if evse_id else {})}
                events.append({
                    "event_id": next(self._seq), "timestamp": self.clock.iso(),
                    "trigger": "Delta" if m["type"] == "Delta" else "Alerting",
                    "actual_value": f"{value:g}", "cleared": cleared,
                    "event_notification_type": "CustomMonitor", "variable_monitoring_id": monitor_id,
                    "component": target, "variable": {"name": variable}})
        if events:
            await self.send(call201.NotifyEvent(generated_at=self.clock.iso(), seq_no=0,
                                                event_data=events))

    async def stop_transaction(self, session: SimSession, register_wh: float) -> None:
        answer = await self.send(call201.TransactionEvent(
            event_type="Ended", timestamp=self.clock.iso(), trigger_reason="StopAuthorized"
            if session.stop_reason == "Local" else "RemoteStop" if session.stop_reason == "Remote"
            else "EVCommunicationLost", seq_no=next(self._seq),
            transaction_info={"transaction_id": session.tx_id,
                              "stopped_reason": session.stop_reason or "Local"},
            meter_value=self._register(self.hw[session.connector_id], "Transaction.End")), keep=True)
        if answer is not None and answer.total_cost is not None:
            self.total_costs[str(session.tx_id)] = f"{answer.total_cost:.2f}"

    @on("CostUpdated")
    def on_cost_updated(self, total_cost: float, transaction_id: str,
                        **_: Any) -> result201.CostUpdated:
        self.costs_shown.setdefault(transaction_id, []).append(f"{total_cost:.2f}")
        return result201.CostUpdated()

    @on("SetDisplayMessage")
    def on_set_display_message(self, message: dict[str, Any],
                               **_: Any) -> result201.SetDisplayMessage:
        if not self.config.display:
            return result201.SetDisplayMessage(status="Rejected")
        if message["message"].get("format") not in ("UTF8", "ASCII"):
            return result201.SetDisplayMessage(status="NotSupportedMessageFormat")
        if message.get("transaction_id") and not any(
                str(s.tx_id) == message["transaction_id"] for s in self.sessions.values()):
            return result201.SetDisplayMessage(status="UnknownTransaction")
        self.display[message["id"]] = message
        return result201.SetDisplayMessage(status="Accepted")

    @on("GetDisplayMessages")
    def on_get_display_messages(self, request_id: int, id: list[int] | None = None,
                                priority: str | None = None, state: str | None = None,
                                **_: Any) -> result201.GetDisplayMessages:
        found = [m for m in self.display.values()
                 if (not id or m["id"] in id) and (priority is None or m["priority"] == priority)
                 and (state is None or m.get("state") == state)]
        if not found:
            return result201.GetDisplayMessages(status="Unknown")
        self._spawn(self._after_answer(lambda: self.send(call201.NotifyDisplayMessages(
            request_id=request_id, message_info=found))))
        return result201.GetDisplayMessages(status="Accepted")

    @on("ClearDisplayMessage")
    def on_clear_display_message(self, id: int, **_: Any) -> result201.ClearDisplayMessage:
        if self.display.pop(id, None) is None:
            return result201.ClearDisplayMessage(status="Unknown")
        return result201.ClearDisplayMessage(status="Accepted")

    def shown(self) -> list[str]:
        """What the display shows now, as text."""
        return [m["message"]["content"] for m in self.display.values()]

    @on("RequestStartTransaction")
    def on_request_start(self, id_token: dict[str, Any], remote_start_id: int,
                         evse_id: int | None = None, charging_profile: dict[str, Any] | None = None,
                         **_: Any) -> result201.RequestStartTransaction:
        n = evse_id or next((c for c in self.hw if c not in self.sessions), None)
        if n is None or n not in self.hw or n in self.sessions or not self.hw[n].operative:
            return result201.RequestStartTransaction(status="Rejected")
        self._spawn(self.charge(n, self.remote_tag(id_token),
                                profile=self.start_profile(n, charging_profile)))
        return result201.RequestStartTransaction(status="Accepted")

    def remote_tag(self, id_token: dict[str, Any]) -> str:
        """The session's tag for the token of a remote start."""
        return str(id_token["id_token"])

    @on("RequestStopTransaction")
    def on_request_stop(self, transaction_id: str, **_: Any) -> result201.RequestStopTransaction:
        ok = self.request_stop(transaction_id)
        return result201.RequestStopTransaction(status="Accepted" if ok else "Rejected")

    @on("UnlockConnector")
    def on_unlock(self, evse_id: int, connector_id: int, **_: Any) -> result201.UnlockConnector:
        if evse_id not in self.hw:
            return result201.UnlockConnector(status="UnknownConnector")
        if evse_id in self.sessions:
            return result201.UnlockConnector(status="OngoingAuthorizedTransaction")
        self.hw[evse_id].cable_locked = False
        return result201.UnlockConnector(status="Unlocked")

    @on("ChangeAvailability")
    def on_change_availability(self, operational_status: str, evse: dict[str, Any] | None = None,
                               **_: Any) -> result201.ChangeAvailability:
        targets = list(self.hw) if not evse else [evse["id"]]
        return result201.ChangeAvailability(
            status=self.set_availability(targets, operational_status == "Operative"))

    @on("Reset")
    def on_reset(self, type: str, evse_id: int | None = None,
                 **_: Any) -> result201.Reset:
        self.last_reset = (type, evse_id)
        if evse_id is not None:  # one EVSE: its session ends, the station stays up
            session = self.sessions.get(evse_id)
            if session is not None and type == "Immediate":
                session.stop_reason = "ImmediateReset"
            return result201.Reset(status="Accepted" if session is None or type == "Immediate"
                                   else "Scheduled")
        if self.sessions and type == "OnIdle":
            self._spawn(self._after_reset())
            return result201.Reset(status="Scheduled")
        for session in self.sessions.values():
            session.stop_reason = "ImmediateReset"
        self._spawn(self._after_reset(power_cycle=True))
        return result201.Reset(status="Accepted")

    @on("ReserveNow")
    def on_reserve_now(self, id: int, expiry_date_time: str, id_token: dict[str, Any],
                       evse_id: int | None = None, **_: Any) -> result201.ReserveNow:
        return result201.ReserveNow(
            status=self.reserve(evse_id, id_token["id_token"], id, expiry_date_time))

    @on("CancelReservation")
    def on_cancel_reservation(self, reservation_id: int, **_: Any) -> result201.CancelReservation:
        ok = self.cancel_reservation(reservation_id)
        return result201.CancelReservation(status="Accepted" if ok else "Rejected")

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any],
                                      **_: Any) -> result201.SetChargingProfile:
        await self.answering_profiles.wait()
        return result201.SetChargingProfile(status=self.install_profile(evse_id, charging_profile))

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, charging_profile_id: int | None = None,
                                  charging_profile_criteria: dict[str, Any] | None = None,
                                  **_: Any) -> result201.ClearChargingProfile:
        criteria = charging_profile_criteria or {}
        cleared = self.clear_profiles(charging_profile_id, criteria.get("evse_id"),
                                      criteria.get("charging_profile_purpose"),
                                      criteria.get("stack_level"))
        return result201.ClearChargingProfile(status="Accepted" if cleared else "Unknown")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, duration: int, evse_id: int,
                                  charging_rate_unit: str | None = None,
                                  **_: Any) -> result201.GetCompositeSchedule:
        if evse_id and evse_id not in self.hw:
            return result201.GetCompositeSchedule(status="Rejected")
        found = self.composite_schedule(evse_id, duration, charging_rate_unit)
        return result201.GetCompositeSchedule(status="Accepted", schedule={
            "evse_id": evse_id, "duration": duration, "schedule_start": found["start"],
            "charging_rate_unit": found["unit"], "charging_schedule_period": found["periods"]})

    @on("GetChargingProfiles")
    def on_get_charging_profiles(self, request_id: int, charging_profile: dict[str, Any],
                                 evse_id: int | None = None,
                                 **_: Any) -> result201.GetChargingProfiles:
        wanted = charging_profile
        found = [p for p in self.charging_profiles
                 if (evse_id is None or p.connector == evse_id)
                 and (wanted.get("charging_profile_purpose") is None
                      or p.purpose == purpose_of(wanted["charging_profile_purpose"]))
                 and (wanted.get("stack_level") is None or p.stack_level == wanted["stack_level"])
                 and (not wanted.get("charging_profile_id") or p.id in wanted["charging_profile_id"])
                 and (not wanted.get("charging_limit_source")
                      or "CSO" in wanted["charging_limit_source"])]
        if not found:
            return result201.GetChargingProfiles(status="NoProfiles")
        by_evse: dict[int, list[Profile]] = {}
        for p in found:
            by_evse.setdefault(p.connector, []).append(p)

        async def report() -> None:
            for n, (evse, profiles) in enumerate(sorted(by_evse.items())):
                await self.send(call201.ReportChargingProfiles(
                    request_id=request_id, charging_limit_source="CSO", evse_id=evse,
                    charging_profile=[self._profile_201(p) for p in profiles],
                    tbc=n < len(by_evse) - 1))
        self._spawn(self._after_answer(report))
        return result201.GetChargingProfiles(status="Accepted")

    def _profile_201(self, p: Profile) -> dict[str, Any]:
        schedule: dict[str, Any] = {"id": p.id, "charging_rate_unit": p.unit,
                                    "charging_schedule_period": [
                                        {"start_period": int(b), "limit": limit}
                                        for b, limit in p.periods]}
        if p.start is not None:
            schedule["start_schedule"] = p.start.isoformat().replace("+00:00", "Z")
        if p.duration is not None:
            schedule["duration"] = int(p.duration)
        purpose = "ChargingStationMaxProfile" if p.purpose == MAX else p.purpose
        found: dict[str, Any] = {"id": p.id, "stack_level": p.stack_level,
                                 "charging_profile_purpose": purpose,
                                 "charging_profile_kind": p.kind, "charging_schedule": [schedule]}
        if p.tx_id is not None and p.purpose == "TxProfile":
            found["transaction_id"] = p.tx_id
        return found

    @on("TriggerMessage")
    def on_trigger(self, requested_message: str, evse: dict[str, Any] | None = None,
                   **_: Any) -> result201.TriggerMessage:
        senders = {"Heartbeat": self.heartbeat, "BootNotification": self.boot,
                   "StatusNotification": lambda: self.send_status((evse or {}).get("id", 1), "Available"),
                   "SignChargingStationCertificate": lambda: self._after_answer(
                       lambda: self.send(call201.SignCertificate(
                           csr=self.csr(), certificate_type="ChargingStationCertificate")))}
        if requested_message not in senders:
            return result201.TriggerMessage(status="NotImplemented")
        self._spawn(senders[requested_message]())
        return result201.TriggerMessage(status="Accepted")

    async def switch_network(self) -> bool:
        """After a reset: connect by the first profile in NetworkConfigurationPriority if
        that is not how we are connected (B10); False if nothing changed."""
        first = self.settings["OCPPCommCtrlr.NetworkConfigurationPriority"].split(",")[0]
        profile = self.network_profiles.get(int(first)) if first.strip().isdigit() else None
        if profile is None or (profile["ocpp_csms_url"], profile["security_profile"]) == (
                self.config.url, self.security_profile):
            return False
        moved = await self.move_to(profile["ocpp_csms_url"], profile["security_profile"])
        if moved:
            self.settings["SecurityCtrlr.SecurityProfile"] = str(self.security_profile)
        return True

    @on("CertificateSigned")
    def on_certificate_signed(self, certificate_chain: str, certificate_type: str | None = None,
                              **_: Any) -> result201.CertificateSigned:
        ok = certificate_type in (None, "ChargingStationCertificate") and \
            self.accept_certificate(certificate_chain)
        return result201.CertificateSigned(status="Accepted" if ok else "Rejected")

    @on("InstallCertificate")
    def on_install_certificate(self, certificate_type: str, certificate: str,
                               **_: Any) -> result201.InstallCertificate:
        return result201.InstallCertificate(status=self.install_root(certificate_type,
                                                                     certificate))

    @on("GetInstalledCertificateIds")
    def on_get_installed_ids(self, certificate_type: list[str] | None = None,
                             **_: Any) -> result201.GetInstalledCertificateIds:
        found = self.installed_roots(certificate_type or [])
        return result201.GetInstalledCertificateIds(
            status="Accepted" if found else "NotFound", certificate_hash_data_chain=found or None)

    @on("DeleteCertificate")
    def on_delete_certificate(self, certificate_hash_data: dict[str, Any],
                              **_: Any) -> result201.DeleteCertificate:
        return result201.DeleteCertificate(status=self.delete_root(certificate_hash_data))

    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> result201.GetVariables:
        results = []
        for item in get_variable_data:
            key = f"{item['component']['name']}.{item['variable']['name']}"
            entry = {"component": item["component"], "variable": item["variable"]}
            if key in self.settings:
                entry.update(attribute_status="Accepted", attribute_value=self.settings[key])
            else:
                entry.update(attribute_status="UnknownVariable")
            results.append(entry)
        return result201.GetVariables(get_variable_result=results)

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> result201.SetVariables:
        results = []
        for item in set_variable_data:
            key = f"{item['component']['name']}.{item['variable']['name']}"
            evse = (item["component"].get("evse") or {}).get("id")
            if key == "ShareLock.Locked":
                value = str(item["attribute_value"]).lower()
                ok = value in ("true", "false") and self.set_bay_lock(evse or 1, value == "true")
                status = "Accepted" if ok else "Rejected"
            elif key == "SecurityCtrlr.BasicAuthPassword":
                status = self.new_password(str(item["attribute_value"]))
            else:
                status = "Accepted" if key in self.settings else "UnknownVariable"
            if status == "Accepted" and key in self.settings:
                before = self.variable_value(item["component"]["name"], None,
                                             item["variable"]["name"])
                self.settings[key] = item["attribute_value"]
                after = self.variable_value(item["component"]["name"], None,
                                            item["variable"]["name"])
                if after is not None:
                    component, variable = item["component"]["name"], item["variable"]["name"]
                    self._spawn(self._after_answer(lambda c=component, v=variable, a=after,
                                                   b=before: self.check_monitors(
                                                       c, None, v, a, previous=b)))
            results.append({"attribute_status": status, "component": item["component"],
                            "variable": item["variable"]})
        return result201.SetVariables(set_variable_result=results)

    async def _after_answer(self, work: Any) -> None:
        await asyncio.sleep(0.05)  # our answer goes first
        await work()

    @on("ClearCache")
    def on_clear_cache(self, **_: Any) -> result201.ClearCache:
        return result201.ClearCache(status="Accepted")

    @on("SendLocalList")
    def on_send_local_list(self, version_number: int, update_type: str,
                           local_authorization_list: list[dict[str, Any]] | None = None,
                           **_: Any) -> result201.SendLocalList:
        entries = {e["id_token"]["id_token"]: (
            (e["id_token_info"]["status"], e["id_token_info"].get("cache_expiry_date_time"))
            if e.get("id_token_info") else None) for e in local_authorization_list or []}
        return result201.SendLocalList(status=self.apply_local_list(
            version_number, update_type == "Full", entries))

    @on("GetLocalListVersion")
    def on_get_local_list_version(self, **_: Any) -> result201.GetLocalListVersion:
        return result201.GetLocalListVersion(version_number=self.local_list_version)

    @on("UpdateFirmware")
    def on_update_firmware(self, request_id: int, firmware: dict[str, Any],
                           **_: Any) -> result201.UpdateFirmware:
        async def report(status: str) -> None:
            await self.send(call201.FirmwareStatusNotification(status=status,
                                                               request_id=request_id))
        self._spawn(self.update_firmware(firmware["location"], report, firmware.get("signature"),
                                         firmware.get("signing_certificate")))
        return result201.UpdateFirmware(status="Accepted")

    @on("GetTransactionStatus")
    def on_get_transaction_status(self, transaction_id: str | None = None,
                                  **_: Any) -> result201.GetTransactionStatus:
        queued = bool(self.outbox)
        if transaction_id is None:
            return result201.GetTransactionStatus(messages_in_queue=queued)
        ongoing = any(s.tx_id == transaction_id for s in self.sessions.values())
        return result201.GetTransactionStatus(messages_in_queue=queued, ongoing_indicator=ongoing)

    @on("GetLog")
    def on_get_log(self, log: dict[str, Any], log_type: str, request_id: int,
                   **_: Any) -> result201.GetLog:
        return result201.GetLog(status="Accepted",
                                filename=self.start_log_upload(log, log_type, request_id))

    @on("GetBaseReport")
    def on_get_base_report(self, request_id: int, report_base: str,
                           **_: Any) -> result201.GetBaseReport:
        self._spawn(self._notify_report(request_id, report_base))
        return result201.GetBaseReport(status="Accepted")

    def device_model(self, report_base: str) -> list[dict[str, Any]]:
        """The sim's components and variables, as NotifyReport reports them."""
        items = []
        for key, value in sorted(self.settings.items()):
            component, variable = key.split(".", 1)
            items.append({"component": {"name": component}, "variable": {"name": variable},
                          "variable_attribute": [{"type": "Actual", "value": value,
                                                  "mutability": "ReadWrite"}],
                          "variable_characteristics": {"data_type": "integer",
                                                       "supports_monitoring": False}})
        if report_base == "ConfigurationInventory":
            return items
        items.append({"component": {"name": "ChargingStation"}, "variable": {"name": "Model"},
                      "variable_attribute": [{"type": "Actual", "value": self.config.model,
                                              "mutability": "ReadOnly"}],
                      "variable_characteristics": {"data_type": "string",
                                                   "supports_monitoring": False}})
        max_w = str(round(self.config.max_current_a * 230 * 3))
        for evse_id in range(1, self.config.connectors + 1):
            items.append({"component": {"name": "EVSE", "evse": {"id": evse_id}},
                          "variable": {"name": "Power"},
                          "variable_attribute": [{"type": "MaxSet", "value": max_w,
                                                  "mutability": "ReadOnly"}],
                          "variable_characteristics": {"unit": "W", "data_type": "decimal",
                                                       "supports_monitoring": True}})
        return items

    async def _notify_report(self, request_id: int, report_base: str,
                             items: list[dict[str, Any]] | None = None) -> None:
        await asyncio.sleep(0.05)  # after our answer to GetBaseReport / GetReport
        items = items if items is not None else self.device_model(report_base)
        parts = [p for p in (items[: len(items) // 2], items[len(items) // 2:]) if p]
        for seq_no, part in enumerate(parts):
            await self.send(call201.NotifyReport(
                request_id=request_id, generated_at=self.clock.iso(), seq_no=seq_no,
                report_data=part, tbc=seq_no < len(parts) - 1))

    @on("GetReport")
    def on_get_report(self, request_id: int, component_variable: list[dict[str, Any]] | None = None,
                      component_criteria: list[str] | None = None,
                      **_: Any) -> result201.GetReport:
        items = self.report_items(component_variable, component_criteria)
        if not items:
            return result201.GetReport(status="EmptyResultSet")
        self._spawn(self._notify_report(request_id, "", items))
        return result201.GetReport(status="Accepted")

    def report_items(self, wanted: list[dict[str, Any]] | None,
                     criteria: list[str] | None) -> list[dict[str, Any]]:
        """The device model filtered as GetReport asks (every component here is Active,
        Available and Enabled; none has a Problem)."""
        items = self.device_model("FullInventory")
        if criteria and not set(criteria) & {"Active", "Available", "Enabled"}:
            return []

        def picked(item: dict[str, Any]) -> bool:
            for w in wanted or []:
                if w["component"]["name"] != item["component"]["name"]:
                    continue
                evse = (w["component"].get("evse") or {}).get("id")
                if evse is not None and evse != (item["component"].get("evse") or {}).get("id"):
                    continue
                if w.get("variable") is None or w["variable"]["name"] == item["variable"]["name"]:
                    return True
            return not wanted
        return [item for item in items if picked(item)]

    @on("SetNetworkProfile")
    def on_set_network_profile(self, configuration_slot: int, connection_data: dict[str, Any],
                               **_: Any) -> result201.SetNetworkProfile:
        # A real station refuses a slot it does not have, and a profile below its own.
        if not 1 <= configuration_slot <= 3 or connection_data["security_profile"] < (
                2 if self.config.url.startswith("wss") else 1):
            return result201.SetNetworkProfile(status="Rejected")
        if connection_data["security_profile"] == 3 and self.client_chain is None:
            return result201.SetNetworkProfile(status="Rejected")  # no certificate to use
        self.network_profiles[configuration_slot] = connection_data
        return result201.SetNetworkProfile(status="Accepted")

    @on("SetVariableMonitoring")
    def on_set_variable_monitoring(self, set_monitoring_data: list[dict[str, Any]],
                                   **_: Any) -> result201.SetVariableMonitoring:
        results = []
        for item in set_monitoring_data:
            component, variable = item["component"], item["variable"]
            evse = (component.get("evse") or {}).get("id")
            known = self.variable_value(component["name"], evse, variable["name"]) is not None
            result = {"type": item["type"], "severity": item["severity"],
                      "component": component, "variable": variable}
            if not known:
                result["status"] = ("UnknownVariable" if component["name"] in
                                    {k.split(".")[0] for k in self.settings} | {"EVSE"}
                                    else "UnknownComponent")
            elif item["type"] == "PeriodicClockAligned":
                result["status"] = "UnsupportedMonitorType"
            elif item.get("id") is not None and item["id"] not in self.monitors:
                result["status"] = "Rejected"
            else:
                monitor_id = item.get("id") or next(self._monitor_ids)
                self.monitors[monitor_id] = {
                    "component": component["name"], "evse": evse, "variable": variable["name"],
                    "type": item["type"], "value": float(item["value"]),
                    "severity": item["severity"], "transaction": bool(item.get("transaction"))}
                self._tripped.discard(monitor_id)
                result.update(status="Accepted", id=monitor_id)
            results.append(result)
        return result201.SetVariableMonitoring(set_monitoring_result=results)

    @on("SetMonitoringBase")
    def on_set_monitoring_base(self, monitoring_base: str, **_: Any) -> result201.SetMonitoringBase:
        if monitoring_base != "All":  # the custom monitors go; this sim has no preconfigured ones
            self.monitors.clear()
            self._tripped.clear()
        return result201.SetMonitoringBase(status="Accepted")

    @on("SetMonitoringLevel")
    def on_set_monitoring_level(self, severity: int, **_: Any) -> result201.SetMonitoringLevel:
        if not 0 <= severity <= 9:
            return result201.SetMonitoringLevel(status="Rejected")
        self.monitoring_level = severity
        return result201.SetMonitoringLevel(status="Accepted")

    @on("ClearVariableMonitoring")
    def on_clear_variable_monitoring(self, id: list[int],
                                     **_: Any) -> result201.ClearVariableMonitoring:
        results = []
        for monitor_id in id:
            found = self.monitors.pop(monitor_id, None) is not None
            self._tripped.discard(monitor_id)
            results.append({"id": monitor_id, "status": "Accepted" if found else "NotFound"})
        return result201.ClearVariableMonitoring(clear_monitoring_result=results)

    @on("GetMonitoringReport")
    def on_get_monitoring_report(self, request_id: int,
                                 component_variable: list[dict[str, Any]] | None = None,
                                 monitoring_criteria: list[str] | None = None,
                                 **_: Any) -> result201.GetMonitoringReport:
        kinds = {"ThresholdMonitoring": {"UpperThreshold", "LowerThreshold"},
                 "DeltaMonitoring": {"Delta"}, "PeriodicMonitoring": {"Periodic"}}
        allowed = set().union(*(kinds[c] for c in monitoring_criteria)) if monitoring_criteria \
            else {t for k in kinds.values() for t in k}
        names = {(w["component"]["name"], (w.get("variable") or {}).get("name"))
                 for w in component_variable or []}
        chosen = {i: m for i, m in self.monitors.items() if m["type"] in allowed and (
            not names or (m["component"], m["variable"]) in names
            or (m["component"], None) in names)}
        if not chosen:
            return result201.GetMonitoringReport(status="EmptyResultSet")
        self._spawn(self._notify_monitoring_report(request_id, chosen))
        return result201.GetMonitoringReport(status="Accepted")

    async def _notify_monitoring_report(self, request_id: int,
                                        chosen: dict[int, dict[str, Any]]) -> None:
        await asyncio.sleep(0.05)
        items = [{"component": {"name": m["component"],
                                **({"evse": {"id": m["evse"]}} if m["evse"] else {})},
                  "variable": {"name": m["variable"]},
                  "variable_monitoring": [{"id": i, "transaction": m["transaction"],
                                           "value": m["value"], "type": m["type"],
                                           "severity": m["severity"]}]}
                 for i, m in sorted(chosen.items())]
        for seq_no, item in enumerate(items):  # one monitor per part: tbc until the last
            await self.send(call201.NotifyMonitoringReport(
                request_id=request_id, seq_no=seq_no, generated_at=self.clock.iso(),
                monitor=[item], tbc=seq_no < len(items) - 1))

    @on("CustomerInformation")
    def on_customer_information(self, request_id: int, report: bool, clear: bool,
                                id_token: dict[str, Any] | None = None,
                                customer_identifier: str | None = None,
                                customer_certificate: dict[str, Any] | None = None,
                                **_: Any) -> result201.CustomerInformation:
        if id_token is None and customer_identifier is None and customer_certificate is None:
            return result201.CustomerInformation(status="Invalid")
        tag = (id_token or {}).get("id_token") or customer_identifier or ""
        lines = []
        if tag in self.local_list:
            expiry = self.local_list[tag]
            lines.append(f"local list: {tag} until {expiry.isoformat() if expiry else 'no expiry'}")
        for done in self.finished:
            if done.tag == tag:
                lines.append(f"session {done.tx_id} on EVSE {done.connector_id}")
        if clear:
            self.local_list.pop(tag, None)
            for done in self.finished:
                if done.tag == tag:
                    done.tag = ""
            self.customer_data_cleared.append(tag)
        if report:
            text = "\n".join(lines) or f"no data held for {tag}"
            if clear:
                text += "\ncleared"
            self._spawn(self._notify_customer(request_id, text))
        return result201.CustomerInformation(status="Accepted")

    async def _notify_customer(self, request_id: int, text: str) -> None:
        await asyncio.sleep(0.05)
        parts = [text[i:i + 512] for i in range(0, len(text), 512)] or [""]
        for seq_no, part in enumerate(parts):
            await self.send(call201.NotifyCustomerInformation(
                data=part, seq_no=seq_no, generated_at=self.clock.iso(), request_id=request_id,
                tbc=seq_no < len(parts) - 1))

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: Any = None,
                         **_: Any) -> result201.DataTransfer:
        return result201.DataTransfer(status="Accepted", data=data)
