"""The simulated OCPP 2.1 charger: everything the 2.0.1 one does (v201.py), its frames
checked on 2.1's schemas, and what 2.1 adds at a charger:
- local cost calculation (I07-I12): it keeps the tariff each EVSE is given
  (SetDefaultTariff, GetTariffs, ClearTariffs; TariffCostCtrlr.Enabled), calculates each
  transaction's cost itself (tariffs.py), shows it, and reports it in costDetails;
- a spending limit: the transactionLimit.maxCost of the central system's answer stops the
  transaction by itself (LocalOutOfCredit) when its own cost reaches it;
- payment at the charger (C18): a driver without an account pays at the card terminal:
  `charge(..., tag="card:4111...")` starts with a DirectPayment idToken (no Authorize), and
  after the transaction the terminal's settlement is reported (NotifySettlement) for the
  amount the charger calculated.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ocpp.routing import on
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21

from cocharge.simulators.hardware import Connector
from cocharge.simulators.state import SimConfig, SimSession
from cocharge.simulators.tariffs import Metered, local_cost, running_total
from cocharge.simulators.v201 import Wallbox201

CARD = "card:"  # a session's tag that is a bank card at the terminal, not a member's token
WEB = "web:"  # ... paid on the payment page of the QR code (the page's backend books it)


def _token(tag: str) -> dict[str, str]:
    for prefix in (CARD, WEB):
        if tag.startswith(prefix):
            return {"id_token": tag[len(prefix):], "type": "DirectPayment"}
    return {"id_token": tag, "type": "ISO14443"}


class Wallbox21(Wallbox201):
    _ocpp_version = "2.1"
    _call = call21  # answers are read as 2.1's (transactionLimit, ...)
    _call_result = result21

    def __init__(self, config: SimConfig, connection: Any) -> None:
        super().__init__(config, connection)
        if config.local_cost:
            self.settings["TariffCostCtrlr.Enabled"] = "true"
        self.settings["TariffCostCtrlr.Currency"] = "CNY"
        self.tariffs: dict[int, dict[str, Any]] = {}  # EVSE -> its default tariff (snake_case)
        self.metered: dict[str, Metered] = {}  # transaction -> what its meter measured
        self.limits: dict[str, Decimal] = {}  # transaction -> maxCost, while it runs
        self.limits_given: dict[str, Decimal] = {}  # ... and as the central system gave it
        self.local_costs: dict[str, dict[str, Any]] = {}  # transaction -> its totalCost
        self.settlements: list[dict[str, Any]] = []  # what the card terminal settled
        self.der_controls: dict[str, dict[str, Any]] = {}  # control id -> type and settings
        self.member_tariffs: dict[str, dict[str, Any]] = {}  # tag -> its own price (Authorize)
        self.tx_tariffs: dict[str, dict[str, Any]] = {}  # transaction -> the tariff it uses
        self.streams: dict[int, dict[str, Any]] = {}  # periodic event streams it opened
        self.web_payments: list[tuple[int, int]] = []  # (EVSE, timeout) of payments begun
        self.allowed_transfer: dict[str, list[str]] = {}  # transaction -> modes allowed
        self.priority: dict[str, bool] = {}  # transaction -> charging with priority

    # --- tariffs (I07-I12) -------------------------------------------------------------------

    @on("SetDefaultTariff")
    def on_set_default_tariff(self, evse_id: int, tariff: dict[str, Any],
                              **_: Any) -> result21.SetDefaultTariff:
        if not self.config.local_cost:
            return result21.SetDefaultTariff(status="Rejected")
        if tariff.get("currency") != self.settings["TariffCostCtrlr.Currency"]:
            return result21.SetDefaultTariff(status="Rejected", status_info={
                "reason_code": "InvalidCurrency"})
        for target in (self.hw if evse_id == 0 else [evse_id]):
            if target not in self.hw:
                return result21.SetDefaultTariff(status="Rejected", status_info={
                    "reason_code": "UnknownEvse"})
            self.tariffs[target] = tariff
        return result21.SetDefaultTariff(status="Accepted")

    @on("ChangeTransactionTariff")
    def on_change_transaction_tariff(self, transaction_id: str, tariff: dict[str, Any],
                                     **_: Any) -> result21.ChangeTransactionTariff:
        if transaction_id not in self.metered:
            return result21.ChangeTransactionTariff(status="TxNotFound")
        current = self.tx_tariffs.get(transaction_id)
        if current is not None and current.get("currency") != tariff.get("currency"):
            return result21.ChangeTransactionTariff(status="NoCurrencyChange")
        self.tx_tariffs[transaction_id] = tariff
        return result21.ChangeTransactionTariff(status="Accepted")

    @on("GetTariffs")
    def on_get_tariffs(self, evse_id: int, **_: Any) -> result21.GetTariffs:
        held: dict[str, list[int]] = {}
        for evse, tariff in sorted(self.tariffs.items()):
            if evse_id in (0, evse):
                held.setdefault(tariff["tariff_id"], []).append(evse)
        if not held:
            return result21.GetTariffs(status="NoTariff")
        return result21.GetTariffs(status="Accepted", tariff_assignments=[
            {"tariff_id": tid, "tariff_kind": "DefaultTariff", "evse_ids": evses}
            for tid, evses in held.items()])

    @on("ClearTariffs")
    def on_clear_tariffs(self, tariff_ids: list[str] | None = None, evse_id: int | None = None,
                         **_: Any) -> result21.ClearTariffs:
        results = []
        named: list[str | None] = list(tariff_ids or sorted(
            {t["tariff_id"] for t in self.tariffs.values()})) or [None]
        for tid in named:
            gone = [e for e, t in self.tariffs.items()
                    if (tid is None or t["tariff_id"] == tid) and evse_id in (None, 0, e)]
            for evse in gone:
                del self.tariffs[evse]
            results.append({"status": "Accepted" if gone else "NoTariff",
                            **({"tariff_id": tid} if tid else {})})
        return result21.ClearTariffs(clear_tariffs_result=results)

    # --- payment by QR code (C24) -----------------------------------------------------------

    def remote_tag(self, id_token: dict[str, Any]) -> str:
        """A DirectPayment token (paid on the QR code's page) starts as such."""
        if id_token.get("type") == "DirectPayment":
            return WEB + str(id_token["id_token"])
        return super().remote_tag(id_token)

    @on("SetDisplayMessage")
    def on_set_display_message(self, message: dict[str, Any],
                               **_: Any) -> result21.SetDisplayMessage:
        """2.1 adds QR codes to the display's formats."""
        if not self.config.display:
            return result21.SetDisplayMessage(status="Rejected")
        if message["message"].get("format") not in ("UTF8", "ASCII", "QRCODE"):
            return result21.SetDisplayMessage(status="NotSupportedMessageFormat")
        self.display[message["id"]] = message
        return result21.SetDisplayMessage(status="Accepted")

    @on("NotifyAllowedEnergyTransfer")
    def on_notify_allowed_energy_transfer(self, transaction_id: str,
                                          allowed_energy_transfer: list[str],
                                          **_: Any) -> result21.NotifyAllowedEnergyTransfer:
        if not any(str(s.tx_id) == transaction_id for s in self.sessions.values()):
            return result21.NotifyAllowedEnergyTransfer(status="Rejected")
        self.allowed_transfer[transaction_id] = list(allowed_energy_transfer)
        return result21.NotifyAllowedEnergyTransfer(status="Accepted")

    @on("UpdateDynamicSchedule")
    def on_update_dynamic_schedule(self, charging_profile_id: int,
                                   schedule_update: dict[str, Any],
                                   **_: Any) -> result21.UpdateDynamicSchedule:
        return result21.UpdateDynamicSchedule(
            status=self.update_dynamic(charging_profile_id, schedule_update))

    @on("UsePriorityCharging")
    def on_use_priority_charging(self, transaction_id: str, activate: bool,
                                 **_: Any) -> result21.UsePriorityCharging:
        if transaction_id not in self.metered:
            return result21.UsePriorityCharging(status="NoProfile")
        self.priority[transaction_id] = activate
        return result21.UsePriorityCharging(status="Accepted")

    @on("NotifyWebPaymentStarted")
    def on_notify_web_payment_started(self, evse_id: int, timeout: int,
                                      **_: Any) -> result21.NotifyWebPaymentStarted:
        self.web_payments.append((evse_id, timeout))  # the display: "payment under way"
        return result21.NotifyWebPaymentStarted()

    # --- DER control (block R) and periodic event streams ---------------------------------------

    @on("SetDERControl")
    def on_set_der_control(self, is_default: bool, control_id: str, control_type: str,
                           **settings: Any) -> result21.SetDERControl:
        if not self.config.der:
            return result21.SetDERControl(status="NotSupported")
        superseded = [cid for cid, c in self.der_controls.items()
                      if c["control_type"] == control_type and c["is_default"] == is_default]
        for cid in superseded:
            del self.der_controls[cid]
        self.der_controls[control_id] = {"control_type": control_type,
                                         "is_default": is_default, **settings}
        if not is_default:  # a scheduled control starts now: the station says so
            self._spawn(self._der_started(control_id, superseded))
        return result21.SetDERControl(status="Accepted", superseded_ids=superseded or None)

    async def _der_started(self, control_id: str, superseded: list[str]) -> None:
        await self.send(call21.NotifyDERStartStop(control_id=control_id, started=True,
                                                  timestamp=self.clock.iso(),
                                                  superseded_ids=superseded or None))

    async def der_alarm(self, control_type: str, fault: str, ended: bool = False) -> None:
        """The inverter reports a grid event (NotifyDERAlarm), e.g. OverVoltage while a
        VoltWatt curve acts."""
        await self.send(call21.NotifyDERAlarm(control_type=control_type, grid_event_fault=fault,
                                              alarm_ended=ended, timestamp=self.clock.iso()))

    @on("GetDERControl")
    def on_get_der_control(self, request_id: int, is_default: bool | None = None,
                           control_type: str | None = None, control_id: str | None = None,
                           **_: Any) -> result21.GetDERControl:
        found = {cid: c for cid, c in self.der_controls.items()
                 if control_id in (None, cid) and control_type in (None, c["control_type"])
                 and is_default in (None, c["is_default"])}
        if not found:
            return result21.GetDERControl(status="NotFound")
        self._spawn(self._report_der(request_id, found))
        return result21.GetDERControl(status="Accepted")

    async def _report_der(self, request_id: int, found: dict[str, dict[str, Any]]) -> None:
        limits = [{"id": cid, "is_default": c["is_default"], "is_superseded": False,
                   "limit_max_discharge": c["limit_max_discharge"]}
                  for cid, c in found.items() if "limit_max_discharge" in c]
        await self.send(call21.ReportDERControl(request_id=request_id,
                                                limit_max_discharge=limits or None))

    @on("ClearDERControl")
    def on_clear_der_control(self, is_default: bool, control_type: str | None = None,
                             control_id: str | None = None, **_: Any) -> result21.ClearDERControl:
        gone = [cid for cid, c in self.der_controls.items()
                if c["is_default"] == is_default and control_id in (None, cid)
                and control_type in (None, c["control_type"])]
        for cid in gone:
            del self.der_controls[cid]
        return result21.ClearDERControl(status="Accepted" if gone else "NotFound")

    @on("GetPeriodicEventStream")
    def on_get_periodic_event_stream(self, **_: Any) -> result21.GetPeriodicEventStream:
        return result21.GetPeriodicEventStream(constant_stream_data=[
            {"id": sid, "variable_monitoring_id": stream["monitor"], "params": stream["params"]}
            for sid, stream in self.streams.items()] or None)

    @on("AdjustPeriodicEventStream")
    def on_adjust_periodic_event_stream(self, id: int, params: dict[str, Any],
                                        **_: Any) -> result21.AdjustPeriodicEventStream:
        if id not in self.streams:
            return result21.AdjustPeriodicEventStream(status="Rejected")
        self.streams[id]["params"] = params
        return result21.AdjustPeriodicEventStream(status="Accepted")

    async def open_stream(self, monitor_id: int, interval: int, values: int) -> int:
        """Open a periodic event stream for a monitor (its values then go as SEND frames)."""
        stream_id = len(self.streams) + 1
        params = {"interval": interval, "values": values}
        self.streams[stream_id] = {"monitor": monitor_id, "params": params}
        await self.send(call21.OpenPeriodicEventStream(constant_stream_data={
            "id": stream_id, "variable_monitoring_id": monitor_id, "params": params}))
        return stream_id

    async def stream_values(self, stream_id: int, values: list[tuple[float, str]]) -> None:
        """A stream's values as a SEND frame (2.1 framing: message type 6, never answered)."""
        payload = {"id": stream_id, "pending": 0, "basetime": self.clock.iso(),
                   "data": [{"t": t, "v": v} for t, v in values]}
        await self._connection.send(json.dumps(
            [6, str(uuid.uuid4()), "NotifyPeriodicEventStream", payload]))

    # --- V2X (block Q): a car that gives energy back -------------------------------------------

    async def v2x(self, connector_id: int, tag: str, discharge_wh: float,
                  energy_wh: float | None = None, ev: Any = None) -> SimSession:
        """A bidirectional session: the car first gives `discharge_wh` back through the
        charger (the site uses it; the export register counts it), then charges."""
        self.hw[connector_id].discharge_left_wh = discharge_wh
        return await self.charge(connector_id, tag, energy_wh=energy_wh, ev=ev)

    def _register(self, hw: Connector, context: str, at: str | None = None
                  ) -> list[dict[str, Any]]:
        """Its meter reads whole Wh (as a calibrated meter does): what it bills itself and
        what it reports are the same readings."""
        reading = super()._register(hw, context, at)
        values = reading[0]["sampled_value"]
        for value in values:
            if value["measurand"] == "Power.Active.Import":
                value["value"] = max(0, value["value"])
            if value["measurand"] == "Energy.Active.Import.Register":
                value["value"] = round(hw.register_wh)
        values.append({"value": round(hw.export_wh), "measurand": "Energy.Active.Export.Register",
                       "context": context, "unit_of_measure": {"unit": "Wh"}})
        if hw.power_w < 0:
            values.append({"value": round(-hw.power_w), "measurand": "Power.Active.Export",
                           "context": context, "unit_of_measure": {"unit": "W"}})
        return reading

    # --- transactions with their own cost ---------------------------------------------------

    async def authorize(self, tag: str) -> bool:
        if tag.startswith((CARD, WEB)):
            return True  # paid at the terminal or on the page: nothing asked of the CSMS
        answer = await self.send(call21.Authorize(id_token=_token(tag)))
        if answer is None:
            return False
        info = answer.id_token_info
        self.groups[tag] = (info.get("group_id_token") or {}).get("id_token")
        if answer.tariff:  # the driver's own price, for their sessions here
            self.member_tariffs[tag] = answer.tariff
        return bool(info["status"] == "Accepted")

    def _reading(self, tx_id: str, hw: Connector) -> None:
        metered = self.metered.get(tx_id)
        if metered is not None:
            metered.readings.append((self.clock.now(), float(round(hw.register_wh))))

    async def start_transaction(self, session: SimSession, register_wh: float) -> None:
        session.tx_id = tx_id = str(uuid.uuid4())
        hw = self.hw[session.connector_id]
        self.metered[tx_id] = Metered(self.clock.now())
        self._reading(tx_id, hw)
        tariff = self.member_tariffs.get(session.tag) or self.tariffs.get(session.connector_id)
        if tariff is not None:
            self.tx_tariffs[tx_id] = tariff
        answer = await self.send(call21.TransactionEvent(
            event_type="Started", timestamp=self.clock.iso(), trigger_reason="Authorized",
            seq_no=next(self._seq), transaction_info={
                "transaction_id": tx_id, "charging_state": "Charging",
                **({"tariff_id": tariff["tariff_id"]} if tariff else {})},
            evse={"id": session.connector_id, "connector_id": 1},
            id_token=_token(session.tag),
            meter_value=self._register(hw, "Transaction.Begin")), keep=True)
        if answer is None:
            return
        info = answer.id_token_info if isinstance(answer.id_token_info, dict) else None
        if info and info["status"] != "Accepted":
            session.stop_reason = "DeAuthorized"
        limit = (answer.transaction_limit or {}).get("max_cost")
        if limit is not None:
            self.limits[tx_id] = self.limits_given[tx_id] = Decimal(str(limit))

    async def send_meter(self, session: SimSession, hw: Connector) -> None:
        tx_id = str(session.tx_id)
        self._reading(tx_id, hw)
        tariff = self.tx_tariffs.get(tx_id)
        limit = self.limits.get(tx_id)
        if tariff is not None and limit is not None and running_total(
                tariff, self.metered[tx_id], self.config.tz) >= limit:
            session.stop_reason = "LocalOutOfCredit"  # its own cost reached the limit
        await super().send_meter(session, hw)

    async def charging_state(self, session: SimSession, state: str) -> None:
        metered = self.metered.get(str(session.tx_id))
        if metered is not None and state == "SuspendedEV":
            metered.idle_since = self.clock.now()
        await super().charging_state(session, state)

    async def stop_transaction(self, session: SimSession, register_wh: float) -> None:
        tx_id = str(session.tx_id)
        hw = self.hw[session.connector_id]
        metered = self.metered.pop(tx_id, None)
        details = None
        tariff = self.tx_tariffs.pop(tx_id, None)
        if metered is not None:
            self._reading_into(metered, hw)
            if metered.idle_since is not None and metered.end is not None:
                metered.idle_s = (metered.end - metered.idle_since).total_seconds()
            if tariff is not None:
                cost = local_cost(tariff, metered, self.config.tz)
                self.local_costs[tx_id] = cost
                details = {"total_cost": cost, "total_usage": {
                    "energy": round(metered.energy_wh(), 1),
                    "charging_time": int(max(0.0, (metered.end - metered.start).total_seconds()
                                             - metered.idle_s)) if metered.end else 0,
                    "idle_time": int(metered.idle_s)}}
        reason = session.stop_reason or "Local"
        answer = await self.send(call21.TransactionEvent(
            event_type="Ended", timestamp=self.clock.iso(),
            trigger_reason={"Local": "StopAuthorized", "Remote": "RemoteStop",
                            "LocalOutOfCredit": "CostLimitReached"}.get(
                                reason, "EVCommunicationLost"),
            seq_no=next(self._seq),
            transaction_info={"transaction_id": tx_id, "stopped_reason": reason},
            meter_value=self._register(hw, "Transaction.End"), cost_details=details), keep=True)
        if answer is not None and answer.total_cost is not None:
            self.total_costs[tx_id] = f"{answer.total_cost:.2f}"
        self.limits.pop(tx_id, None)
        if session.tag.startswith(CARD):
            await self._settle_card(session, tx_id)

    def _reading_into(self, metered: Metered, hw: Connector) -> None:
        metered.end = self.clock.now()
        metered.readings.append((metered.end, float(round(hw.register_wh))))

    async def _settle_card(self, session: SimSession, tx_id: str) -> None:
        """The terminal captures what the charger calculated (or, without a tariff, what the
        central system said the session cost) and the charger reports it."""
        cost = self.local_costs.get(tx_id)
        amount = (cost["total"]["incl_tax"] if cost is not None
                  else float(self.total_costs.get(tx_id, "0")))
        settled = {"transaction_id": tx_id, "psp_ref": f"psp-{tx_id[:8]}", "status": "Settled",
                   "settlement_amount": amount,
                   "settlement_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                   "receipt_id": f"R-{tx_id[:8]}"}  # (the ocpp library spells a
        # receipt_url "receiptURL", which 2.1's schema refuses)
        self.settlements.append(settled)
        await self.send(call21.NotifySettlement(**settled), keep=True)
