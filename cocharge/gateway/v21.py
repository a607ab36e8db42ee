"""OCPP 2.1 (OCA, 2025): what is the same as 2.0.1 is 2.0.1's (v201.py), on 2.1's schemas.

A 2.1 station boots, authorizes, charges (transactions, meter values, offline replay),
takes every version-neutral command and reports as a 2.0.1 station does: the messages
keep their names and shapes, and every frame is checked both ways against the official
2.1 schemas (gateway/rpc.py). What 2.1 adds is answered here:
- `SEND` frames (never answered): NotifyPeriodicEventStream kept as the station's events;
- `CALLRESULTERROR` (the station found our answer wrong): logged and kept;
- the new station-to-CSMS calls are answered as the specification allows without a
  feature we do not run yet (tariffs at the charger, payment, V2X, DER, battery swap:
  issue 31), and what they said is kept among the station's events.
"""

from __future__ import annotations

from typing import Any

from ocpp.v21 import call_result
from ocpp.v21.enums import Action

from cocharge.gateway.connection import handles
from cocharge.gateway.v201 import V201Connection
from cocharge.stations.events import StationNotice
from cocharge.store.db import utcnow


class V21Connection(V201Connection):
    protocol = "2.1"
    ACTIONS = frozenset(a.value for a in Action)

    async def _keep(self, kind: str, payload: dict[str, Any]) -> None:
        await self.service.notice(StationNotice(self.id, kind, utcnow(), payload))

    # --- messages only 2.1 has, kept until their features are built ----------------------

    @handles(Action.notify_settlement)
    async def on_notify_settlement(self, **payload: Any) -> Any:
        """C18-C25: a payment at the charger's terminal. Kept for the operator; not yet
        booked on the ledger (issue 31, item 4)."""
        await self._keep("settlement", payload)
        return call_result.NotifySettlement()

    @handles(Action.notify_der_alarm)
    async def on_notify_der_alarm(self, **payload: Any) -> Any:
        await self._keep("der_alarm", payload)
        return call_result.NotifyDERAlarm()

    @handles(Action.notify_der_start_stop)
    async def on_notify_der_start_stop(self, **payload: Any) -> Any:
        await self._keep("der_start_stop", payload)
        return call_result.NotifyDERStartStop()

    @handles(Action.report_der_control)
    async def on_report_der_control(self, **payload: Any) -> Any:
        await self._keep("der_control", payload)
        return call_result.ReportDERControl()

    @handles(Action.notify_priority_charging)
    async def on_notify_priority_charging(self, **payload: Any) -> Any:
        await self._keep("priority_charging", payload)
        return call_result.NotifyPriorityCharging()

    @handles(Action.open_periodic_event_stream)
    async def on_open_periodic_event_stream(self, **payload: Any) -> Any:
        await self._keep("periodic_event_stream", {"opened": payload})
        return call_result.OpenPeriodicEventStream(status="Accepted")

    @handles(Action.close_periodic_event_stream)
    async def on_close_periodic_event_stream(self, **payload: Any) -> Any:
        await self._keep("periodic_event_stream", {"closed": payload})
        return call_result.ClosePeriodicEventStream()

    @handles(Action.battery_swap)
    async def on_battery_swap(self, **payload: Any) -> Any:
        await self._keep("battery_swap", payload)
        return call_result.BatterySwap()

    @handles(Action.vat_number_validation)
    async def on_vat_number_validation(self, vat_number: str, **payload: Any) -> Any:
        """C21: no validator configured yet: the number is said not to be validated."""
        await self._keep("vat_number", {"vat_number": vat_number, **payload})
        return call_result.VatNumberValidation(
            status="Rejected", vat_number=vat_number,
            status_info={"reason_code": "NotSupported",
                         "additional_info": "no VAT validator on this central system"})

    # --- SEND frames ---------------------------------------------------------------------

    async def on_send(self, action: str, payload: dict[str, Any]) -> None:
        """A SEND that passed its schema (never answered)."""
        if action == "NotifyPeriodicEventStream":
            await self._keep("periodic_event", payload)
