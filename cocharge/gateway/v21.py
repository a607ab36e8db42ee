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

from collections.abc import Awaitable, Callable
from typing import Any

from ocpp.v21 import call_result
from ocpp.v21.enums import Action

from cocharge.gateway.connection import handles
from cocharge.gateway.v201 import V201Connection
from cocharge.stations.events import StationNotice
from cocharge.store.db import utcnow


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

    async def _keep(self, kind: str, payload: dict[str, Any]) -> None:
        await self.service.notice(StationNotice(self.id, kind, utcnow(), payload))

    # --- messages only 2.1 has, kept until their features are built ----------------------
    # C18-C25: a payment at the charger's terminal, kept for the operator; not yet booked on
    # the ledger (issue 31, item 4). DER, priority charging, battery swap: kept likewise.
    on_notify_settlement = _kept(Action.notify_settlement, "settlement")
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
