"""OCPP 2.1 (OCA, 2025): what is the same as 2.0.1 is 2.0.1's (v201.py), on 2.1's schemas.

A 2.1 station boots, authorizes, charges (transactions, meter values, offline replay),
takes every version-neutral command and reports as a 2.0.1 station does: the messages
keep their names and shapes, and every frame is checked both ways against the official
2.1 schemas (gateway/rpc.py). What 2.1 adds is here:
- local cost calculation (I07-I12): a station with TariffCostCtrlr enabled is given the
  host's tariff as a TariffType (settlement/tariff21.py) per EVSE after it boots and
  whenever the tariff changes (`tariff_sync_s`); the cost it calculates itself
  (costDetails at the end) is checked against our settlement, which is what is billed;
  `remote set-default-tariff`, `get-tariffs`, `clear-tariffs`;
- the spending limit: a session with a budget (the member's money, a remote start's
  --budget) gets it as transactionLimit.maxCost, so the charger stops itself there;
- payment at the charger (C17-C25): a DirectPayment token starts a session without an
  account; NotifySettlement books the payment (`external:card`) for the session, which is
  settled and split like a member's, so its host is paid;
- VatNumberValidation (C21): the number's format (stations/vat.py);
- DER control (R04-R06) and periodic event streams as commands; what the station reports
  of them is kept;
- `SEND` frames (never answered): NotifyPeriodicEventStream kept as the station's events;
- `CALLRESULTERROR` (the station found our answer wrong): logged and kept;
- the other new station-to-CSMS calls (priority charging, battery swap) are answered as
  the specification allows and what they said is kept among the station's events.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from ocpp.v21 import call, call_result
from ocpp.v21.enums import Action

from cocharge.gateway.connection import handles
from cocharge.gateway.v201 import V201Connection, member_tag
from cocharge.settlement.funds import CardError
from cocharge.settlement.money import to_fen
from cocharge.settlement.settle import SettlementError
from cocharge.settlement.tariff21 import Untranslatable
from cocharge.stations import commands as cmd
from cocharge.stations.events import Admission, StationNotice
from cocharge.stations.vat import vat_problem
from cocharge.store.db import utcnow

log = logging.getLogger(__name__)
_der_requests = itertools.count(int(time.time()) % 1_000_000)
QR_MESSAGE = 9100  # the display message id of EVSE n's payment QR code: QR_MESSAGE + n


def _kept(action: Action, kind: str) -> Callable[..., Awaitable[Any]]:
    """A handler that keeps what a 2.1-only message said as the station's `kind` event and
    answers with the message's empty response."""
    answer = getattr(call_result, action.value)

    @handles(action)
    async def handler(self: V21Connection, **payload: Any) -> Any:
        await self._keep(kind, payload)
        return answer()

    return handler


class V21Connection(V201Connection):
    protocol = "2.1"
    ACTIONS = frozenset(a.value for a in Action)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.local_cost: bool | None = None  # TariffCostCtrlr.Enabled[Tariff], once read
        self.tariffs: dict[int, str] = {}  # EVSE -> the tariff id it holds from us
        self.qr_shown: set[int] = set()  # EVSEs showing the payment page's QR code
        self.qr_refused = False  # the station took no QR code (no such display)
        self._booted = asyncio.Event()

    async def _keep(self, kind: str, payload: dict[str, Any]) -> None:
        await self.service.notice(StationNotice(self.id, kind, utcnow(), payload))

    async def start(self) -> None:
        keeper = asyncio.create_task(self._keep_tariffs(), name=f"tariffs {self.id}")
        try:
            await super().start()
        finally:
            keeper.cancel()

    async def on_boot_notification(self, *args: Any, **kwargs: Any) -> Any:
        answer = await super().on_boot_notification(*args, **kwargs)
        self.tariffs.clear()  # a rebooted charger is given its tariffs again
        self.qr_shown.clear()
        self._booted.set()
        return answer

    @handles(Action.authorize)
    async def on_authorize(self, id_token: dict[str, Any], **payload: Any) -> Any:
        """2.0.1's Authorize, and at a station that calculates cost itself the member's own
        price (AuthorizeResponse.tariff: e.g. their green-energy discount)."""
        answer = await super().on_authorize(id_token, **payload)
        tariff = None
        if self.local_cost and answer.id_token_info.get("status") == "Accepted":
            tariff = await self.service.member_tariff(self.id, member_tag(id_token))
        return call_result.Authorize(id_token_info=answer.id_token_info,
                                     certificate_status=answer.certificate_status, tariff=tariff)

    # --- local cost calculation (I07-I12) -------------------------------------------------

    async def _keep_tariffs(self) -> None:
        """After the boot, and every tariff_sync_s: each EVSE holds the host's tariff."""
        every = self.settings.tariff_sync_s
        if every <= 0:
            return
        while True:
            try:  # after a boot; a charger that reconnected without one, a while later
                await asyncio.wait_for(self._booted.wait(), every)
            except TimeoutError:
                pass
            self._booted.clear()
            if self.admission is Admission.ACCEPTED:
                try:
                    if not await self.sync_tariffs():
                        return  # no local cost calculation at this charger
                except (cmd.CommandFailed, cmd.CommandRejected) as exc:
                    log.info("%s: tariffs not sent: %s", self.id, exc)
                except Exception:  # never let one station's tariffs end its connection
                    log.exception("%s: sending tariffs failed", self.id)

    async def sync_tariffs(self) -> bool:
        """Send each EVSE the host's tariff where it holds another; False when the station
        does not calculate cost itself."""
        if self.local_cost is None:
            answer = await self.command(cmd.RawCall("GetVariables", {"getVariableData": [{
                "component": {"name": "TariffCostCtrlr"},
                "variable": {"name": "Enabled", "instance": "Tariff"}}]}))
            result = (answer.response.get("getVariableResult") or [{}])[0]
            self.local_cost = (result.get("attributeStatus") == "Accepted"
                               and str(result.get("attributeValue", "")).lower() == "true")
            log.info("%s: local cost calculation %s", self.id,
                     "enabled" if self.local_cost else "not enabled")
        record = self.service.directory.get(self.id)
        evses = range(1, (record.connectors if record else 1) + 1)
        await self._show_payment_codes(evses)
        if not self.local_cost:
            return self.settings.payment_page_url is not None
        for evse in evses:
            try:
                tariff = await self.service.tariff_type(self.id, evse)
            except Untranslatable as exc:
                log.info("%s: EVSE %s gets no tariff: %s", self.id, evse, exc)
                continue
            if self.tariffs.get(evse) == tariff["tariffId"]:
                continue
            result = await self.command(cmd.SetDefaultTariff(evse, tariff))
            if result.accepted:
                self.tariffs[evse] = tariff["tariffId"]
            else:
                await self._keep("tariff_refused", {"evse": evse, "tariff": tariff["tariffId"],
                                                    "status": result.status})
        return True

    async def _show_payment_codes(self, evses: range) -> None:
        """C24: each EVSE shows, while idle, the QR code of the operator's payment page."""
        template = self.settings.payment_page_url
        if template is None or self.qr_refused:
            return
        for evse in evses:
            if evse in self.qr_shown:
                continue
            url = template.replace("{station}", self.id).replace("{evse}", str(evse))
            result = await self.command(cmd.RawCall("SetDisplayMessage", {"message": {
                "id": QR_MESSAGE + evse, "priority": "NormalCycle", "state": "Idle",
                "display": {"name": "EVSE", "evse": {"id": evse}},
                "message": {"format": "QRCODE", "content": url[:1024]}}}))
            if not result.accepted:
                log.info("%s: no payment QR code shown (%s)", self.id, result.status)
                self.qr_refused = True
                return
            self.qr_shown.add(evse)

    async def command(self, command: Any, tx_ref: str | None = None) -> Any:
        if isinstance(command, cmd.SetDERControl):
            # Its settings are 2.1's own object (camelCase, e.g. fixedPFAbsorb): sent as
            # written, checked on the schema like any call.
            command = cmd.RawCall("SetDERControl", {
                "isDefault": command.is_default, "controlId": command.control_id,
                "controlType": command.control_type,
                cmd.DER_FIELDS.get(command.control_type, "curve"): command.settings})
        if isinstance(command, cmd.SetDefaultTariff) and command.tariff is None:
            try:
                tariff = await self.service.tariff_type(self.id, command.evse_id)
            except Untranslatable as exc:
                raise cmd.CommandRejected(f"the tariff of EVSE {command.evse_id} cannot be a "
                                          f"2.1 tariff: {exc}") from None
            command = cmd.SetDefaultTariff(command.evse_id, tariff)
        if isinstance(command, cmd.ChangeTransactionTariff) and command.tariff is None:
            try:
                tariff = await self.service.session_tariff_type(command.session_id)
            except (Untranslatable, SettlementError) as exc:
                raise cmd.CommandRejected(f"session {command.session_id}: {exc}") from None
            command = cmd.ChangeTransactionTariff(command.session_id, tariff)
        result = await super().command(command, tx_ref)
        if isinstance(command, cmd.SetDefaultTariff) and result.accepted and command.tariff:
            self.tariffs[command.evse_id] = str(command.tariff.get("tariffId"))
        if isinstance(command, cmd.ClearTariffs) and result.accepted:
            self.tariffs.clear()  # whatever was cleared is sent again at the next check
        return result

    def to_call(self, command: Any, tx_ref: str | None) -> Any:
        match command:
            case cmd.SetDefaultTariff(evse_id=evse_id, tariff=tariff):
                return call.SetDefaultTariff(evse_id=evse_id, tariff=tariff)
            case cmd.ChangeTransactionTariff(session_id=session_id, tariff=tariff):
                if tx_ref is None:
                    raise cmd.CommandRejected(f"session {session_id} has no transaction id")
                return call.ChangeTransactionTariff(transaction_id=tx_ref, tariff=tariff)
            case cmd.GetTariffs(evse_id=evse_id):
                return call.GetTariffs(evse_id=evse_id)
            case cmd.ClearTariffs(tariff_ids=ids, evse_id=evse_id):
                return call.ClearTariffs(tariff_ids=list(ids) or None, evse_id=evse_id)
            case cmd.GetDERControl(request_id=request_id):
                return call.GetDERControl(request_id=request_id or next(_der_requests),
                                          is_default=command.is_default,
                                          control_type=command.control_type,
                                          control_id=command.control_id)
            case cmd.ClearDERControl(is_default=is_default):
                return call.ClearDERControl(is_default=is_default,
                                            control_type=command.control_type,
                                            control_id=command.control_id)
            case cmd.AdjustPeriodicEventStream(id=stream_id, interval=interval, values=values):
                return call.AdjustPeriodicEventStream(id=stream_id, params={
                    k: v for k, v in (("interval", interval), ("values", values))
                    if v is not None})
            case cmd.GetPeriodicEventStream():
                return call.GetPeriodicEventStream()
            case cmd.NotifyWebPaymentStarted(evse_id=evse_id, timeout=timeout):
                return call.NotifyWebPaymentStarted(evse_id=evse_id, timeout=timeout)
            case cmd.NotifyAllowedEnergyTransfer(session_id=session_id, modes=modes):
                unknown = sorted(set(modes) - set(cmd.ENERGY_TRANSFER_MODES))
                if tx_ref is None or unknown or not modes:
                    raise cmd.CommandRejected(
                        f"session {session_id} has no transaction id" if tx_ref is None else
                        f"energy transfer modes: one or more of "
                        f"{', '.join(cmd.ENERGY_TRANSFER_MODES)}")
                return call.NotifyAllowedEnergyTransfer(transaction_id=tx_ref,
                                                        allowed_energy_transfer=list(modes))
            case cmd.UpdateDynamicSchedule(profile_id=profile_id):
                update = {key: value for key, value in (
                    ("limit", command.limit), ("setpoint", command.setpoint),
                    ("discharge_limit", command.discharge_limit)) if value is not None}
                if not update:
                    raise cmd.CommandRejected("update-dynamic-schedule: give a limit, a setpoint "
                                              "or a discharge limit")
                return call.UpdateDynamicSchedule(charging_profile_id=profile_id,
                                                  schedule_update=update)
            case cmd.UsePriorityCharging(session_id=session_id, activate=activate):
                if tx_ref is None:
                    raise cmd.CommandRejected(f"session {session_id} has no transaction id")
                return call.UsePriorityCharging(transaction_id=tx_ref, activate=activate)
        return super().to_call(command, tx_ref)

    def result_of(self, command: Any, answer: dict[str, Any]) -> Any:
        cleared = answer.get("clearTariffsResult")
        if isinstance(command, cmd.ClearTariffs) and cleared:
            statuses = [r.get("status", "") for r in cleared]
            return cmd.CommandResult(all(s in ("Accepted", "NoTariff") for s in statuses),
                                     ",".join(statuses), answer)
        return super().result_of(command, answer)

    async def transaction_answer(self, event_type: str, tx_ref: str, total_cost: float | None,
                                 info: dict[str, Any] | None) -> Any:
        """At the start, the session's budget as its transactionLimit (maxCost): the charger
        stops by itself there, by its own cost calculation (E.g. a member's money)."""
        limit = None
        if event_type == "Started":
            session_id = await self.service.session_of(self.id, tx_ref)
            budget = await self.service.session_budget(session_id) if session_id else None
            if budget is not None:
                limit = {"max_cost": float(Decimal(budget) / 100)}
        return call_result.TransactionEvent(total_cost=total_cost, id_token_info=info,
                                            transaction_limit=limit)

    # --- dynamic charging profiles (K, 2.1) --------------------------------------------------

    @handles(Action.pull_dynamic_schedule_update)
    async def on_pull_dynamic_schedule_update(self, charging_profile_id: int,
                                              **_: Any) -> Any:
        """A station with a dynamic profile of ours asks what it may draw now: load
        management's allocation for that EVSE (Rejected for a profile that is not ours)."""
        limit = (self.service.load.dynamic_limit(self.id, charging_profile_id)
                 if self.service.load is not None else None)
        if limit is None:
            return call_result.PullDynamicScheduleUpdate(status="Rejected", status_info={
                "reason_code": "UnknownProfile",
                "additional_info": "not a load-management profile of this station"})
        return call_result.PullDynamicScheduleUpdate(status="Accepted",
                                                     schedule_update={"limit": limit})

    # --- payment at the charger (C17-C25) ---------------------------------------------------

    @handles(Action.notify_settlement)
    async def on_notify_settlement(self, psp_ref: str, status: str, settlement_amount: float,
                                   settlement_time: str, transaction_id: str | None = None,
                                   **payload: Any) -> Any:
        """A payment the charger's terminal settled: kept, and when Settled, booked on the
        ledger for its session (the session is then paid: its host's share is the host's)."""
        kept = {"psp_ref": psp_ref, "status": status, "amount": settlement_amount,
                "time": settlement_time, "transaction_id": transaction_id, **payload}
        if status == "Settled":
            try:
                paid = await self.service.card_payment(
                    self.id, transaction_id, psp_ref, to_fen(Decimal(str(settlement_amount))),
                    payload.get("receipt_url") or payload.get("receipt_id"))
                kept["booked"] = {"session": paid.session_id, "paid_fen": paid.debt_paid_fen,
                                  "left_fen": paid.left_fen}
            except CardError as exc:
                kept["not_booked"] = str(exc)
                log.warning("%s: settlement %s not booked: %s", self.id, psp_ref, exc)
        await self._keep("settlement", kept)
        return call_result.NotifySettlement()

    # --- messages only 2.1 has, answered and kept ----------------------------------------
    # DER, priority charging, battery swap: kept among the station's events.
    on_notify_der_alarm = _kept(Action.notify_der_alarm, "der_alarm")
    on_notify_der_start_stop = _kept(Action.notify_der_start_stop, "der_start_stop")
    on_report_der_control = _kept(Action.report_der_control, "der_control")
    on_notify_priority_charging = _kept(Action.notify_priority_charging, "priority_charging")
    on_battery_swap = _kept(Action.battery_swap, "battery_swap")

    @handles(Action.open_periodic_event_stream)
    async def on_open_periodic_event_stream(self, **payload: Any) -> Any:
        await self._keep("periodic_event_stream", {"opened": payload})
        return call_result.OpenPeriodicEventStream(status="Accepted")

    @handles(Action.close_periodic_event_stream)
    async def on_close_periodic_event_stream(self, **payload: Any) -> Any:
        await self._keep("periodic_event_stream", {"closed": payload})
        return call_result.ClosePeriodicEventStream()

    @handles(Action.vat_number_validation)
    async def on_vat_number_validation(self, vat_number: str, evse_id: int | None = None,
                                       **payload: Any) -> Any:
        """C21: a company's VAT number for the invoice, checked by its format (a credit code's
        check character; an EU number's shape). The company's name is not known here."""
        problem = vat_problem(vat_number)
        await self._keep("vat_number", {"vat_number": vat_number, "evse_id": evse_id,
                                        "valid_format": problem is None, **payload})
        if problem is None:
            return call_result.VatNumberValidation(status="Accepted", vat_number=vat_number,
                                                   evse_id=evse_id)
        return call_result.VatNumberValidation(
            status="Rejected", vat_number=vat_number, evse_id=evse_id,
            status_info={"reason_code": "InvalidValue", "additional_info": problem[:512]})

    # --- SEND frames ---------------------------------------------------------------------

    async def on_send(self, action: str, payload: dict[str, Any]) -> None:
        """A SEND that passed its schema (never answered)."""
        if action == "NotifyPeriodicEventStream":
            await self._keep("periodic_event", payload)
