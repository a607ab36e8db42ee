"""A virtual wallbox: a real OCPP 1.6J or 2.0.1 client over a real WebSocket.

It knows nothing of the server's insides: it connects, boots, reports status,
charges virtual EVs with a hardware model, and answers commands as a charger does.
Handlers never await a call of their own (the reply must go out first): follow-up
messages are sent from tasks.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import ocpp.messages
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import ClientConnection, connect

from cocharge.simulators.hardware import EV, Connector

ocpp.messages.ASYNC_VALIDATION = False
log = logging.getLogger(__name__)


@dataclass
class SimConfig:
    url: str
    station_id: str
    protocol: str = "1.6"  # or "2.0.1"
    connectors: int = 1
    max_current_a: float = 16
    password: str | None = None
    speed: float = 1.0  # simulated seconds per real second
    meter_interval_s: float = 1.0  # real seconds between meter reports
    vendor: str = "cocharge-sim"
    model: str = "VirtualWallbox"


class SimClock:
    """Simulated time: starts now, runs `speed` times faster than the wall clock."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._origin = datetime.now(UTC)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self._origin + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def iso(self) -> str:
        return self.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class SimSession:
    connector_id: int
    tag: str
    tx_id: str | int | None = None
    authorized: bool = True
    energy_wh: float = 0.0
    stop_reason: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)


class WallboxMixin:
    """Protocol-neutral behaviour; the protocol classes below supply the messages."""

    config: SimConfig

    def _init_wallbox(self, config: SimConfig) -> None:
        self.config = config
        self.clock = SimClock(config.speed)
        self.hw = {n: Connector(n, max_current_a=config.max_current_a)
                   for n in range(1, config.connectors + 1)}
        self.sessions: dict[int, SimSession] = {}
        self.finished: list[SimSession] = []
        self.registration: str | None = None
        self.heartbeat_s = 300
        self.settings: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def charge(self, connector_id: int, tag: str, energy_wh: float | None = None,
                     ev: EV | None = None) -> SimSession:
        """Plug in an EV, authorize `tag`, start a transaction and charge until the EV is full,
        `energy_wh` is delivered, or the central system stops it. Returns once started."""
        hw = self.hw[connector_id]
        if connector_id in self.sessions:
            raise RuntimeError(f"connector {connector_id} is busy")
        hw.ev = ev or EV()
        session = SimSession(connector_id, tag)
        self.sessions[connector_id] = session
        self._spawn(self._run_session(session, energy_wh))
        await session.started.wait()
        return session

    async def _run_session(self, session: SimSession, energy_wh: float | None) -> None:
        hw = self.hw[session.connector_id]
        try:
            await self.send_status(session.connector_id, "Preparing")
            if not await self.authorize(session.tag):
                session.authorized = False
                session.stop_reason = "DeAuthorized"
                hw.ev = None
                await self.send_status(session.connector_id, "Available")
                return
            hw.cable_locked = True
            hw.relay_closed = True
            await self.start_transaction(session, hw.register_wh)
            session.started.set()
            await self.send_status(session.connector_id, "Charging")
            last = time.monotonic()
            while session.stop_reason is None:
                await asyncio.sleep(self.config.meter_interval_s)
                now = time.monotonic()
                session.energy_wh += hw.step((now - last) * self.config.speed)
                last = now
                if hw.ev is not None and hw.ev.full:
                    session.stop_reason = "EVDisconnected"
                elif energy_wh is not None and session.energy_wh >= energy_wh:
                    session.stop_reason = "Local"
                if session.stop_reason is None:
                    await self.send_meter(session, hw)
            hw.relay_closed = False
            hw.power_w = 0
            await self.stop_transaction(session, hw.register_wh)
            hw.cable_locked = False
            hw.ev = None
            await self.send_status(session.connector_id, "Available")
        except Exception:
            log.exception("%s: session on connector %s failed", self.config.station_id,
                          session.connector_id)
            session.stop_reason = session.stop_reason or "Other"
        finally:
            self.sessions.pop(session.connector_id, None)
            self.finished.append(session)
            session.started.set()
            session.done.set()

    def request_stop(self, tx_id: Any, reason: str = "Remote") -> bool:
        for session in self.sessions.values():
            if session.tx_id is not None and str(session.tx_id) == str(tx_id):
                session.stop_reason = reason
                return True
        return False

    def set_availability(self, targets: list[int], operative: bool) -> str:
        """ChangeAvailability as hardware does it: Scheduled while a connector is charging."""
        if any(t not in self.hw for t in targets):
            return "Rejected"
        busy = any(t in self.sessions for t in targets)
        for t in targets:
            self.hw[t].operative = operative
            if t not in self.sessions:
                self._spawn(self.send_status(t, "Available" if operative else "Unavailable"))
        return "Scheduled" if busy else "Accepted"

    async def boot_and_report(self) -> None:
        await self.boot()
        if self.registration == "Accepted":
            for n, hw in self.hw.items():
                await self.send_status(n, "Available" if hw.operative else "Unavailable")
            self._spawn(self._heartbeats())

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self.heartbeat()

    # protocol hooks -----------------------------------------------------------------------
    async def boot(self) -> None: ...
    async def heartbeat(self) -> None: ...
    async def send_status(self, connector_id: int, status: str) -> None: ...
    async def authorize(self, tag: str) -> bool: ...
    async def start_transaction(self, session: SimSession, register_wh: float) -> None: ...
    async def send_meter(self, session: SimSession, hw: Connector) -> None: ...
    async def stop_transaction(self, session: SimSession, register_wh: float) -> None: ...


class Wallbox16(WallboxMixin, ChargePoint16):
    def __init__(self, config: SimConfig, connection: ClientConnection) -> None:
        ChargePoint16.__init__(self, config.station_id, connection, response_timeout=30)
        self._init_wallbox(config)
        self.settings = {"HeartbeatInterval": "300", "MeterValueSampleInterval": "60",
                         "NumberOfConnectors": str(config.connectors)}

    async def boot(self) -> None:
        answer = await self.call(call16.BootNotification(
            charge_point_model=self.config.model, charge_point_vendor=self.config.vendor))
        self.registration = answer.status
        self.heartbeat_s = answer.interval or 300

    async def heartbeat(self) -> None:
        await self.call(call16.Heartbeat())

    async def send_status(self, connector_id: int, status: str) -> None:
        await self.call(call16.StatusNotification(connector_id=connector_id, error_code="NoError",
                                                  status=status, timestamp=self.clock.iso()))

    async def authorize(self, tag: str) -> bool:
        answer = await self.call(call16.Authorize(id_tag=tag))
        return bool(answer and answer.id_tag_info["status"] == "Accepted")

    async def start_transaction(self, session: SimSession, register_wh: float) -> None:
        answer = await self.call(call16.StartTransaction(
            connector_id=session.connector_id, id_tag=session.tag, meter_start=int(register_wh),
            timestamp=self.clock.iso()))
        session.tx_id = answer.transaction_id
        if answer.id_tag_info["status"] != "Accepted":
            session.stop_reason = "DeAuthorized"

    async def send_meter(self, session: SimSession, hw: Connector) -> None:
        await self.call(call16.MeterValues(
            connector_id=session.connector_id, transaction_id=session.tx_id,
            meter_value=[{"timestamp": self.clock.iso(), "sampledValue": [
                {"value": str(int(hw.register_wh)), "measurand": "Energy.Active.Import.Register",
                 "unit": "Wh"},
                {"value": f"{hw.power_w:.0f}", "measurand": "Power.Active.Import", "unit": "W"},
                {"value": f"{(hw.ev.soc if hw.ev else 0) * 100:.0f}", "measurand": "SoC",
                 "unit": "Percent"}]}]))

    async def stop_transaction(self, session: SimSession, register_wh: float) -> None:
        await self.call(call16.StopTransaction(
            meter_stop=int(register_wh), timestamp=self.clock.iso(),
            transaction_id=session.tx_id, reason=session.stop_reason, id_tag=session.tag))

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, connector_id: int | None = None,
                        **_: Any) -> result16.RemoteStartTransaction:
        n = connector_id or next((c for c in self.hw if c not in self.sessions), None)
        if n is None or n not in self.hw or n in self.sessions or not self.hw[n].operative:
            return result16.RemoteStartTransaction(status="Rejected")
        self._spawn(self.charge(n, id_tag))
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
    def on_change_availability(self, connector_id: int, type: str) -> result16.ChangeAvailability:  # noqa: A002
        targets = list(self.hw) if connector_id == 0 else [connector_id]
        return result16.ChangeAvailability(status=self.set_availability(targets, type == "Operative"))

    @on("Reset")
    def on_reset(self, type: str) -> result16.Reset:  # noqa: A002
        for session in self.sessions.values():
            session.stop_reason = "HardReset" if type == "Hard" else "SoftReset"
        self._spawn(self._after_reset())
        return result16.Reset(status="Accepted")

    async def _after_reset(self) -> None:
        while self.sessions:
            await asyncio.sleep(0.05)
        await self.boot_and_report()

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
        if key not in self.settings:
            return result16.ChangeConfiguration(status="NotSupported")
        if key == "NumberOfConnectors":
            return result16.ChangeConfiguration(status="Rejected")
        self.settings[key] = value
        return result16.ChangeConfiguration(status="Accepted")

    @on("ClearCache")
    def on_clear_cache(self) -> result16.ClearCache:
        return result16.ClearCache(status="Accepted")

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None,
                         data: str | None = None) -> result16.DataTransfer:
        return result16.DataTransfer(status="Accepted", data=data)


class Wallbox201(WallboxMixin, ChargePoint201):
    def __init__(self, config: SimConfig, connection: ClientConnection) -> None:
        ChargePoint201.__init__(self, config.station_id, connection, response_timeout=30)
        self._init_wallbox(config)
        self.settings = {"OCPPCommCtrlr.HeartbeatInterval": "300",
                         "SampledDataCtrlr.TxUpdatedInterval": "60"}
        self._seq = itertools.count()

    async def boot(self) -> None:
        answer = await self.call(call201.BootNotification(
            charging_station={"model": self.config.model, "vendor_name": self.config.vendor},
            reason="PowerUp"))
        self.registration = answer.status
        self.heartbeat_s = answer.interval or 300

    async def heartbeat(self) -> None:
        await self.call(call201.Heartbeat())

    async def send_status(self, connector_id: int, status: str) -> None:
        neutral = {"Preparing": "Occupied", "Charging": "Occupied", "Finishing": "Occupied"}
        await self.call(call201.StatusNotification(
            timestamp=self.clock.iso(), connector_status=neutral.get(status, status),
            evse_id=connector_id, connector_id=1))

    async def authorize(self, tag: str) -> bool:
        answer = await self.call(call201.Authorize(id_token={"id_token": tag, "type": "ISO14443"}))
        return bool(answer and answer.id_token_info["status"] == "Accepted")

    def _register(self, hw: Connector, context: str) -> list[dict[str, Any]]:
        return [{"timestamp": self.clock.iso(), "sampled_value": [
            {"value": round(hw.register_wh, 1), "measurand": "Energy.Active.Import.Register",
             "context": context, "unit_of_measure": {"unit": "Wh"}},
            {"value": round(hw.power_w), "measurand": "Power.Active.Import", "context": context,
             "unit_of_measure": {"unit": "W"}}]}]

    async def start_transaction(self, session: SimSession, register_wh: float) -> None:
        session.tx_id = str(uuid.uuid4())
        answer = await self.call(call201.TransactionEvent(
            event_type="Started", timestamp=self.clock.iso(), trigger_reason="Authorized",
            seq_no=next(self._seq), transaction_info={"transaction_id": session.tx_id,
                                                      "charging_state": "Charging"},
            evse={"id": session.connector_id, "connector_id": 1},
            id_token={"id_token": session.tag, "type": "ISO14443"},
            meter_value=self._register(self.hw[session.connector_id], "Transaction.Begin")))
        if answer.id_token_info and answer.id_token_info["status"] != "Accepted":
            session.stop_reason = "DeAuthorized"

    async def send_meter(self, session: SimSession, hw: Connector) -> None:
        await self.call(call201.TransactionEvent(
            event_type="Updated", timestamp=self.clock.iso(), trigger_reason="MeterValuePeriodic",
            seq_no=next(self._seq), transaction_info={"transaction_id": session.tx_id},
            meter_value=self._register(hw, "Sample.Periodic")))

    async def stop_transaction(self, session: SimSession, register_wh: float) -> None:
        await self.call(call201.TransactionEvent(
            event_type="Ended", timestamp=self.clock.iso(), trigger_reason="StopAuthorized"
            if session.stop_reason == "Local" else "RemoteStop" if session.stop_reason == "Remote"
            else "EVCommunicationLost", seq_no=next(self._seq),
            transaction_info={"transaction_id": session.tx_id,
                              "stopped_reason": session.stop_reason or "Local"},
            meter_value=self._register(self.hw[session.connector_id], "Transaction.End")))

    @on("RequestStartTransaction")
    def on_request_start(self, id_token: dict[str, Any], remote_start_id: int,
                         evse_id: int | None = None, **_: Any) -> result201.RequestStartTransaction:
        n = evse_id or next((c for c in self.hw if c not in self.sessions), None)
        if n is None or n not in self.hw or n in self.sessions or not self.hw[n].operative:
            return result201.RequestStartTransaction(status="Rejected")
        self._spawn(self.charge(n, id_token["id_token"]))
        return result201.RequestStartTransaction(status="Accepted")

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
    def on_reset(self, type: str, **_: Any) -> result201.Reset:  # noqa: A002
        if self.sessions and type == "OnIdle":
            return result201.Reset(status="Scheduled")
        return result201.Reset(status="Accepted")

    @on("TriggerMessage")
    def on_trigger(self, requested_message: str, evse: dict[str, Any] | None = None,
                   **_: Any) -> result201.TriggerMessage:
        senders = {"Heartbeat": self.heartbeat, "BootNotification": self.boot,
                   "StatusNotification": lambda: self.send_status((evse or {}).get("id", 1), "Available")}
        if requested_message not in senders:
            return result201.TriggerMessage(status="NotImplemented")
        self._spawn(senders[requested_message]())
        return result201.TriggerMessage(status="Accepted")

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
            status = "Accepted" if key in self.settings else "UnknownVariable"
            if status == "Accepted":
                self.settings[key] = item["attribute_value"]
            results.append({"attribute_status": status, "component": item["component"],
                            "variable": item["variable"]})
        return result201.SetVariables(set_variable_result=results)

    @on("ClearCache")
    def on_clear_cache(self, **_: Any) -> result201.ClearCache:
        return result201.ClearCache(status="Accepted")

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: Any = None,
                         **_: Any) -> result201.DataTransfer:
        return result201.DataTransfer(status="Accepted", data=data)


Wallbox = Wallbox16 | Wallbox201


async def open_wallbox(config: SimConfig) -> tuple[Wallbox, asyncio.Task[None]]:
    """Connect, start reading, boot and report status; returns the wallbox and its reader task."""
    headers = {}
    if config.password:
        token = base64.b64encode(f"{config.station_id}:{config.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    subprotocol = "ocpp1.6" if config.protocol == "1.6" else "ocpp2.0.1"
    url = config.url.rstrip("/") + "/" + config.station_id
    connection = await connect(url, subprotocols=[subprotocol],  # type: ignore[list-item]
                               additional_headers=headers, compression=None, open_timeout=10)
    box: Wallbox = (Wallbox16 if config.protocol == "1.6" else Wallbox201)(config, connection)
    reader = asyncio.create_task(box.start())
    await box.boot_and_report()
    return box, reader


async def close_wallbox(box: Wallbox, reader: asyncio.Task[None]) -> None:
    for task in list(box._tasks):
        task.cancel()
    reader.cancel()
    await box._connection.close()
