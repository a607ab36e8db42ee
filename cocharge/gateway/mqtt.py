"""The MQTT bridge: property backends see their stations and command them (SPEC §5).

Topics (prefix `cocharge/v1` unless the URL names another; docs/mqtt.md):

  <prefix>/gateway/<node>/status                                  retained; last will "offline"
  <prefix>/<property>/stations/<id>/status                        retained
  <prefix>/<property>/stations/<id>/connectors/<n>/status         retained
  <prefix>/<property>/stations/<id>/connectors/<n>/meter          QoS 0, at most one a second
  <prefix>/<property>/stations/<id>/connectors/<n>/session        retained; cleared at the end
  <prefix>/<property>/events/<started|ended|overstay|fault>       QoS 1, with an event id
  <prefix>/<property>/cmd/<verb>           in: block, release, reserve, cancel-reservation,
                                               remote-stop, set-availability
  <prefix>/<backend>/cmd/reward-event      in: a community event for a member's rewards
                                               ({"request_id", "tag", "event", "ref"})
  <prefix>/<property>/ack                  out: "received", then the result, per request_id
  <prefix>/circuits/<circuit>/load/set     in: a circuit's other load (load management)
  <prefix>/sites/<site>/pv/set             in: a site's PV surplus; errors on .../error
  <prefix>/sites/<site>/grid/set           in: a grid operator's limit on the site (DER)

A station belongs to the property its split terms name while they are on the property model
(`cocharge split set ST --model property --property NAME ...`; `settle.property_of`);
stations of no property are not published.

Nothing here blocks the OCPP side: the stations core calls the observer methods, which
only put a message on a bounded queue; when the queue is full (the broker is slow or
down) the message is dropped and counted. A background task connects, publishes the
gateway's status, re-publishes the retained state it holds, subscribes to the command
topics and sends the queue; when the connection breaks it reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from cocharge.mqtt_url import DEFAULT_PREFIX, MqttTarget
from cocharge.settlement.settle import property_in, property_of, terms_of
from cocharge.stations import commands as cmd
from cocharge.stations.observer import StationObserver
from cocharge.store import audit
from cocharge.store.db import utcnow
from cocharge.store.schema import mqtt_requests, sessions, station_terms

if TYPE_CHECKING:
    from cocharge.gateway.server import Gateway

log = logging.getLogger(__name__)

VERSION = 1
# Reservation ids of MQTT reservations start here: bookings' reservations use the booking id.
MQTT_RESERVATIONS = 1 << 30
VERBS = ("block", "release", "reserve", "cancel-reservation", "remote-stop", "set-availability")
# Station notices published as events (station_events kind -> events/<topic>).
NOTICE_TOPICS = {"firmware": "firmware", "diagnostics": "log", "log": "log",
                 "event": "monitor", "customer_information": "customer-information",
                 "security": "security", "der_alarm": "der-alarm",
                 "der_start_stop": "der-control", "settlement": "payment"}
# Every named operation of `cocharge remote` is also a verb, its fields named as the operator
# channel names them (docs/mqtt.md). Raw calls, passwords, certificates and security
# profiles stay with the operator (cmd.OPERATOR_ONLY).
OPERATIONS = tuple(name for name in cmd.COMMANDS
                   if name not in VERBS and name not in cmd.OPERATOR_ONLY)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat(timespec="seconds") + "Z" if at is not None else None


@dataclass(frozen=True)
class Out:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class CommandError(ValueError):
    """A command message that cannot be applied; the message names the problem."""


class MqttBridge(StationObserver):
    def __init__(self, gateway: Gateway, target: MqttTarget, node_id: str,
                 queue_size: int = 10_000, meter_interval_s: float = 1.0,
                 refresh_s: float = 5.0) -> None:
        self.gateway = gateway
        self.target = target
        self.node_id = node_id
        self.prefix = target.prefix
        self.queue: asyncio.Queue[Out] = asyncio.Queue(maxsize=queue_size)
        self.dropped = 0
        self.connected = asyncio.Event()
        self.meter_interval_s = meter_interval_s
        self.refresh_s = refresh_s
        self.properties: dict[str, str] = {}  # station -> property
        self._retained: dict[str, bytes] = {}  # what the broker should hold, to re-publish
        self._last_meter: dict[tuple[str, int], float] = {}
        self._pending: Out | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._commands: set[asyncio.Task[Any]] = set()
        self._client: aiomqtt.Client | None = None
        self._closing = False
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        # Availability changes a station answered Scheduled (a session runs): (station,
        # connector) -> (ack topic, request id, verb, row, the status that means done).
        self._scheduled: dict[tuple[str, int], tuple[str, str, str, int, str]] = {}

    # --- life ------------------------------------------------------------------------------

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/gateway/{self.node_id}/status"

    def _status(self, state: str) -> bytes:
        return json.dumps({"v": VERSION, "node": self.node_id, "state": state,
                           "at": _iso(utcnow())}).encode()

    async def start(self) -> None:
        await self.refresh()
        self._tasks = [asyncio.create_task(self._run(), name="mqtt"),
                       asyncio.create_task(self._refresh_forever(), name="mqtt-properties")]

    async def close(self) -> None:
        self._closing = True
        client = self._client
        if client is not None and self.connected.is_set():
            # A clean disconnect does not fire the last will: say offline ourselves.
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                async with asyncio.timeout(2):
                    await client.publish(self.status_topic, self._status("offline"), qos=1, retain=True)
        for task in [*self._tasks, *self._commands]:
            task.cancel()
        for task in [*self._tasks, *self._commands]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        backoff = 0.5
        will = aiomqtt.Will(self.status_topic, self._status("offline"), qos=1, retain=True)
        while not self._closing:
            try:
                async with aiomqtt.Client(
                        self.target.host, self.target.port, username=self.target.username,
                        password=self.target.password, identifier=f"cocharge-{self.node_id}",
                        will=will, keepalive=30, timeout=10,
                        protocol=aiomqtt.ProtocolVersion.V5) as client:
                    self._client = client
                    await client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
                    for topic, payload in list(self._retained.items()):
                        await client.publish(topic, payload, qos=1, retain=True)
                    # A shared subscription: with several nodes, each command reaches one of
                    # them. MQTT 5 "retain as published": a command published with
                    # retain=true shows as retained even when it arrives live: refused.
                    await client.subscribe(f"$share/cocharge/{self.prefix}/+/cmd/+",
                                           options=SubscribeOptions(qos=1, retainAsPublished=True))
                    # Site meters (load management): every node hears them.
                    await client.subscribe(f"{self.prefix}/circuits/+/load/set", qos=0)
                    await client.subscribe(f"{self.prefix}/sites/+/pv/set", qos=0)
                    await client.subscribe(f"{self.prefix}/sites/+/grid/set", qos=1)
                    # This node's own topics: commands forwarded by other nodes, and replies.
                    await client.subscribe(f"{self.node_topic(self.node_id)}/#", qos=1)
                    # What every node must know at once (a station's password changed).
                    await client.subscribe(self.changed_topic, qos=1)
                    # Other nodes' status: the broker says "offline" (their last will) the
                    # moment a node's connection drops, long before its lease runs out.
                    await client.subscribe(f"{self.prefix}/gateway/+/status", qos=1)
                    self.connected.set()
                    backoff = 0.5
                    log.info("MQTT connected to %s", self.target)
                    await asyncio.gather(self._send(client), self._receive(client))
            except aiomqtt.MqttError as exc:
                if self.connected.is_set():
                    log.warning("MQTT connection to %s lost: %s", self.target, exc)
                else:
                    log.warning("MQTT broker %s unreachable: %s (retry in %.1f s)", self.target,
                                exc, backoff)
            finally:
                self.connected.clear()
                self._client = None
            if self._closing:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            item = self._pending or await self.queue.get()
            self._pending = item  # kept until the broker has it: sent again after a reconnect
            await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
            self._pending = None

    async def _receive(self, client: aiomqtt.Client) -> None:
        mine = self.node_topic(self.node_id)
        async for message in client.messages:
            topic = message.topic.value
            if topic == f"{mine}/reply":
                self._reply(message.payload)
                continue
            if topic == f"{mine}/load":  # a site we allocate: what another node's station said
                self._load_event(message.payload)
                continue
            if topic == self.changed_topic:
                self._spawn(self._station_changed(message.payload))
                continue
            if topic.startswith(f"{self.prefix}/gateway/") and topic.endswith("/status"):
                self._node_status(message.payload)
                continue
            if (topic.endswith(("/load/set", "/pv/set", "/grid/set"))
                    and not topic.startswith(mine)):
                self._meter(topic, message.payload)
                continue
            self._spawn(self._call(message.payload) if topic == f"{mine}/call"
                        else self._command(message))

    def _node_status(self, payload: Any) -> None:
        """Another node went offline (its last will: killed, or cut from the broker): the
        gateway ends its lease at once (gateway.node_gone)."""
        try:
            body = json.loads(payload)
            node, state = body["node"], body["state"]
        except (ValueError, KeyError, TypeError):
            return
        if not isinstance(node, str) or node == self.node_id:
            return
        if state == "offline":
            self._spawn(self.gateway.node_gone(node))
        elif state == "online":
            self.gateway.node_back(node)

    @property
    def changed_topic(self) -> str:
        return f"{self.prefix}/_nodes/_all/changed"

    def station_changed(self, what: dict[str, str]) -> None:
        """Tell every other node what changed here that they keep in memory (service.
        tell_nodes): they act at once instead of at their next refresh."""
        self._put(self.changed_topic, {**what, "from": self.node_id})

    async def _station_changed(self, payload: Any) -> None:
        try:
            body = json.loads(payload)
            sender = body.get("from")
            station_id, member = body.get("station"), body.get("member")
        except (ValueError, TypeError, AttributeError):
            return
        if sender == self.node_id:
            return
        if isinstance(member, str):
            self.gateway.control.members_changed()
        if isinstance(station_id, str) and body.get("certificate") == "revoked":
            await self.gateway.certificate_revoked(station_id)
        elif isinstance(station_id, str):
            await self.gateway.service.station_changed_elsewhere(station_id)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def refresh(self) -> None:
        """Which property each station belongs to (from the split terms)."""
        async with self.gateway.engine.connect() as conn:
            rows = (await conn.execute(select(station_terms.c.station_id, station_terms.c.body))).all()
        found = {}
        for row in rows:
            prop = property_in(row.body)
            if prop:
                found[row.station_id] = prop
        self.properties = found

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:  # the database may be briefly away; keep the last map
                log.exception("MQTT: reading station properties failed")

    # --- out -------------------------------------------------------------------------------

    def ledger_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A signed ledger checkpoint for the property backends to keep (they are witnesses:
        docs/settlement.md), retained so that a backend that connects later gets the newest."""
        self._put(f"{self.prefix}/ledger/checkpoint", checkpoint, retain=True)

    def _put(self, topic: str, body: dict[str, Any] | None, qos: int = 1, retain: bool = False) -> None:
        payload = b"" if body is None else json.dumps({"v": VERSION, **body}, default=str).encode()
        if retain:
            if body is None:
                self._retained.pop(topic, None)
            else:
                self._retained[topic] = payload
        try:
            self.queue.put_nowait(Out(topic, payload, qos, retain))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("MQTT queue full (broker slow or down): %d messages dropped so far",
                            self.dropped)

    def _station_topic(self, station_id: str) -> str | None:
        prop = self.properties.get(station_id)
        return f"{self.prefix}/{prop}/stations/{station_id}" if prop else None

    def _event(self, station_id: str, kind: str, event_id: str, body: dict[str, Any]) -> None:
        prop = self.properties.get(station_id)
        if prop:
            self._put(f"{self.prefix}/{prop}/events/{kind}",
                      {"event": kind, "event_id": event_id, "station": station_id, **body})

    def station_online(self, station_id: str, online: bool, protocol: str | None = None) -> None:
        base = self._station_topic(station_id)
        if base:
            self._put(f"{base}/status", {"station": station_id, "online": online,
                                         "protocol": protocol, "node": self.node_id,
                                         "at": _iso(utcnow())}, retain=True)

    def connector_status(self, station_id: str, connector_id: int, status: str,
                         error_code: str | None, at: datetime) -> None:
        for key in ((station_id, connector_id), (station_id, 0)):
            waiting = self._scheduled.get(key)
            if waiting is not None and waiting[4] == status:
                del self._scheduled[key]
                self._spawn(self._applied(waiting, status))
        base = self._station_topic(station_id)
        if base:
            self._put(f"{base}/connectors/{connector_id}/status",
                      {"station": station_id, "connector": connector_id, "status": status,
                       "error_code": error_code, "at": _iso(at)}, retain=True)

    def meter(self, station_id: str, connector_id: int, session_id: int | None,
              energy_wh: float, at: datetime) -> None:
        base = self._station_topic(station_id)
        if not base:
            return
        key, now = (station_id, connector_id), time.monotonic()
        if now - self._last_meter.get(key, -1e9) < self.meter_interval_s:
            return
        self._last_meter[key] = now
        self._put(f"{base}/connectors/{connector_id}/meter",
                  {"station": station_id, "connector": connector_id, "session": session_id,
                   "energy_wh": round(energy_wh, 1), "at": _iso(at)}, qos=0)

    def session_started(self, station_id: str, connector_id: int, session_id: int,
                        tag: str | None, at: datetime) -> None:
        base = self._station_topic(station_id)
        if not base:
            return
        body = {"session": session_id, "connector": connector_id, "tag": tag, "started_at": _iso(at)}
        self._put(f"{base}/connectors/{connector_id}/session", {"station": station_id, **body},
                  retain=True)
        self._event(station_id, "started", f"started:{session_id}", body)

    def session_ended(self, station_id: str, connector_id: int, session_id: int,
                      energy_wh: int | None, reason: str | None, at: datetime | None) -> None:
        base = self._station_topic(station_id)
        if not base:
            return
        self._put(f"{base}/connectors/{connector_id}/session", None, retain=True)  # cleared
        self._event(station_id, "ended", f"ended:{session_id}",
                    {"session": session_id, "connector": connector_id, "energy_wh": energy_wh,
                     "reason": reason, "ended_at": _iso(at)})

    def overstay(self, station_id: str, connector_id: int, session_id: int, minutes: int,
                 fee_fen: int, at: datetime) -> None:
        self._event(station_id, "overstay", f"overstay:{session_id}",
                    {"session": session_id, "connector": connector_id, "idle_minutes": minutes,
                     "idle_fee_fen": fee_fen, "at": _iso(at)})

    def fault(self, station_id: str, connector_id: int, session_id: int | None, kind: str,
              at: datetime) -> None:
        self._event(station_id, "fault", f"fault:{station_id}:{connector_id}:{_iso(at)}",
                    {"session": session_id, "connector": connector_id, "fault": kind, "at": _iso(at)})

    def notice(self, station_id: str, kind: str, payload: dict[str, Any], at: datetime) -> None:
        topic = NOTICE_TOPICS.get(kind)
        if topic is None or payload.get("criticality") == "normal":
            return  # a security event the standard calls not critical: kept, not raised
        body = {"at": _iso(at), **payload}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        self._event(station_id, topic, f"{topic}:{station_id}:{digest[:16]}", body)

    # --- several nodes: a command for a station another node holds -------------------------

    def node_topic(self, node_id: str) -> str:
        return f"{self.prefix}/_nodes/{node_id}"

    async def forward(self, node_id: str, request: dict[str, Any],
                      timeout: float | None = None) -> dict[str, Any]:
        """Have `node_id` run a command through the broker and return its answer;
        CommandRejected / CommandFailed as if it had run here. Kinds: an operator's command,
        an MQTT verb, and between nodes: "ping" (does its connection of the station answer?)
        and "release" (close it: the station connected to another node)."""
        if not self.connected.is_set():
            raise cmd.CommandFailed("offline", f"the station is held by node {node_id}, and the "
                                    "MQTT broker that reaches it is not connected")
        corr = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[corr] = future
        self._put(f"{self.node_topic(node_id)}/call", {**request, "corr": corr, "from": self.node_id})
        try:
            async with asyncio.timeout(timeout or self.gateway.settings.call_timeout_s + 5):
                answer = await future
        except TimeoutError:
            raise cmd.CommandFailed("timeout", f"node {node_id}, which holds the station, "
                                    "did not answer") from None
        finally:
            self._waiting.pop(corr, None)
        if answer.get("ok"):
            return dict(answer["value"])
        if answer.get("rejected"):
            raise cmd.CommandRejected(str(answer.get("message")))
        raise cmd.CommandFailed(str(answer.get("kind")), str(answer.get("message")))

    def tell(self, node_id: str, body: dict[str, Any]) -> None:
        """Load management: tell the node allocating a site what a station of it said here."""
        self._put(f"{self.node_topic(node_id)}/load", body)

    def _load_event(self, payload: bytes | Any) -> None:
        try:
            self.gateway.load.remote_event(json.loads(payload))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("MQTT: malformed load event from another node ignored: %s", exc)

    def _reply(self, payload: bytes | Any) -> None:
        try:
            body = json.loads(payload)
            future = self._waiting.get(body["corr"])
        except (ValueError, KeyError, TypeError):
            log.warning("MQTT: malformed reply from another node ignored")
            return
        if future is not None and not future.done():
            future.set_result(body)

    async def _call(self, payload: bytes | Any) -> None:
        """Run a command another node forwarded (this node holds the station); answer it."""
        try:
            body = json.loads(payload)
            corr, sender, kind = body["corr"], body["from"], body["kind"]
        except (ValueError, KeyError, TypeError):
            log.warning("MQTT: malformed call from another node ignored")
            return
        answer: dict[str, Any]
        try:
            if kind == "load":  # the node allocating the site writes to our station
                link = self.gateway.connections.get(str(body["station"]))
                if link is None:
                    raise cmd.CommandFailed("offline", f"station {body['station']} is not "
                                            "connected to this node")
                command = cmd.build_command(body["name"], body["args"])
                with self.gateway.load.sending(str(body["station"]), command):
                    result = await link.command(command, body.get("tx_ref"))
                self.gateway.load.relayed(str(body["station"]), command, result.accepted)
                value = {"accepted": result.accepted, "status": result.status}
            elif kind == "ping":
                value = {"alive": await self.gateway.answers_ping(str(body["station"]))}
            elif kind == "release":
                value = {"closed": await self.gateway.release(str(body["station"]))}
            elif kind == "operator":
                command = cmd.build_command(body["name"], body["args"])
                expires = body.get("expires_s")
                value = await self.gateway.control.send(
                    body["station"], command, body["name"], body["args"],
                    queue_for_s=None if body.get("queue") is False else expires
                    if expires is not None else self.gateway.settings.command_queue_s,
                    by=body.get("by"), origin=body.get("from"))
            else:
                value = await self._execute(_plan(body["verb"], body["body"]), int(body["row_id"]))
            answer = {"ok": True, "value": value}
        except cmd.CommandRejected as exc:
            answer = {"ok": False, "rejected": True, "message": str(exc)}
        except cmd.CommandFailed as exc:
            answer = {"ok": False, "kind": exc.kind, "message": str(exc)}
        except (CommandError, KeyError, TypeError, ValueError) as exc:
            answer = {"ok": False, "rejected": True, "message": f"bad forwarded command: {exc}"}
        self._put(f"{self.node_topic(sender)}/reply", {"corr": corr, **answer})

    # --- site meters in (docs/load-management.md) ---------------------------------------------

    def _meter(self, topic: str, payload: Any) -> None:
        """A circuit's load or a site's PV surplus; a bad one is answered on .../error and
        changes nothing."""
        levels = topic.split("/")
        name = levels[-3]
        try:
            body = json.loads(payload)
            if not isinstance(body, dict):
                raise CommandError("the payload must be a JSON object")
            if body.get("v", VERSION) != VERSION:
                raise CommandError(f"unsupported payload version {body.get('v')!r}")
            if topic.endswith("/load/set"):
                currents, total = meter_reading(body, self.gateway.settings.nominal_voltage_v)
                self.gateway.load.circuit_load(name, currents, total)
            elif topic.endswith("/grid/set"):
                limit_w, for_s, source = grid_reading(body)
                if not self.gateway.load.grid_limit(name, limit_w, for_s, source):
                    raise CommandError(f"no site {name!r} under load management")
            else:
                self.gateway.load.site_surplus(name, surplus_reading(body))
        except (CommandError, ValueError) as exc:
            if isinstance(exc, json.JSONDecodeError):
                exc = CommandError(f"the payload is not JSON: {exc}")
            self._put(topic.removesuffix("/set") + "/error", {"error": str(exc)})

    # --- commands in -----------------------------------------------------------------------

    async def _command(self, message: aiomqtt.Message) -> None:
        levels = message.topic.value.split("/")
        prop, verb = levels[-3], levels[-1]
        ack = f"{self.prefix}/{prop}/ack"
        request_id: str | None = None
        if not message.payload:
            return  # an empty message deletes a retained one: nothing to do
        try:
            body = json.loads(message.payload) if message.payload else None
            if isinstance(body, dict) and isinstance(body.get("request_id"), str):
                request_id = body["request_id"]
            if message.retain:
                # Clear it from the broker, so that it does not come back at every subscription.
                self._put(message.topic.value, None, retain=True)
                raise CommandError("retained command refused: publish commands with retain=false "
                                   "(a retained command would run again at every reconnect)")
            if not isinstance(body, dict):
                raise CommandError("the payload must be a JSON object")
            if verb == REWARD_EVENT:
                request_id = _reward_event(body)
                plan = None
            else:
                plan = _plan(verb, body)
        except (CommandError, ValueError) as exc:
            if isinstance(exc, json.JSONDecodeError):
                exc = CommandError(f"the payload is not JSON: {exc}")
            self._put(ack, {"request_id": request_id, "state": "error", "error": str(exc)})
            return
        assert request_id is not None
        digest = hashlib.sha256(json.dumps([verb, body], sort_keys=True).encode()).hexdigest()
        row_id, earlier = await self._claim(prop, request_id, verb, digest)
        if earlier is not None:
            for answer in earlier:
                self._put(ack, answer)
            return
        received = {"request_id": request_id, "verb": verb, "state": "received"}
        self._put(ack, received)
        if plan is None:
            result = await self._reward(prop, body)
        else:
            result = await self._apply(prop, plan, body, row_id)
            async with self.gateway.engine.begin() as conn:  # who asked (store/audit.py)
                await audit.record(conn, f"property {prop} (mqtt)", "mqtt", verb, plan.station,
                                   None, {"request_id": request_id, "state": result["state"],
                                          "args": {k: v for k, v in body.items()
                                                   if k not in ("v", "request_id")}})
        result = {"request_id": request_id, "verb": verb, **result}
        if result["state"] == "scheduled" and plan is not None:
            operative = plan.verb == "release" or bool(plan.operative)
            self._scheduled[(plan.station, plan.connector)] = (
                ack, request_id, verb, row_id, "Available" if operative else "Unavailable")
        async with self.gateway.engine.begin() as conn:
            await conn.execute(update(mqtt_requests).where(mqtt_requests.c.id == row_id)
                               .values(state=result["state"], answer=json.dumps(result)))
        self._put(ack, result)

    async def _applied(self, waiting: tuple[str, str, str, int, str], status: str) -> None:
        """The second ack of a scheduled availability change: the station reports it done."""
        ack, request_id, verb, row_id, _ = waiting
        result = {"request_id": request_id, "verb": verb, "state": "applied",
                  "ocpp_status": status}
        async with self.gateway.engine.begin() as conn:
            await conn.execute(update(mqtt_requests).where(mqtt_requests.c.id == row_id)
                               .values(state="applied", answer=json.dumps(result)))
        self._put(ack, result)

    async def _reward(self, backend: str, body: dict[str, Any]) -> dict[str, Any]:
        """A community event reported by a backend (the app): applied once per event ref."""
        from cocharge.settlement import loyalty
        from cocharge.settlement.rewards import RulesError

        try:
            done = await loyalty.apply_event(self.gateway.engine, body["tag"], body["event"],
                                             body["ref"])
        except (loyalty.RewardsError, RulesError) as exc:
            return {"state": "rejected", "error": str(exc)}
        log.info("reward event %s for %s from %s", done.event_id, body["tag"], backend)
        return {"state": "accepted", "event_id": done.event_id, "new": done.new,
                "coins": done.coins, "credit": done.credit, "credit_after": done.credit_after,
                "limited": done.limited, "badges": list(done.badges)}

    async def _claim(self, prop: str, request_id: str, verb: str,
                     digest: str) -> tuple[int, list[dict[str, Any]] | None]:
        """Record the request once; a repeat gets the answers already given."""
        try:
            async with self.gateway.engine.begin() as conn:
                row_id = int((await conn.execute(insert(mqtt_requests).values(
                    property=prop, request_id=request_id, verb=verb, digest=digest,
                    state="received", node=self.node_id, created_at=utcnow(),
                ).returning(mqtt_requests.c.id))).scalar_one())
            return row_id, None
        except IntegrityError:
            async with self.gateway.engine.connect() as conn:
                row = (await conn.execute(select(mqtt_requests).where(and_(
                    mqtt_requests.c.property == prop,
                    mqtt_requests.c.request_id == request_id)))).one()
            if row.digest != digest:
                return int(row.id), [{"request_id": request_id, "state": "error",
                                      "error": f"request_id {request_id!r} was already used for "
                                               f"another command ({row.verb}); use a new one"}]
            answers = [{"request_id": request_id, "verb": row.verb, "state": "received"}]
            if row.answer:
                answers.append(json.loads(row.answer))
            return int(row.id), answers

    async def _apply(self, prop: str, plan: Plan, body: dict[str, Any], row_id: int) -> dict[str, Any]:
        # Whose the station is now, from its terms (not the map refreshed every few seconds:
        # a station that just left the property must not take its commands meanwhile).
        async with self.gateway.engine.connect() as conn:
            owner = property_of(await terms_of(conn, plan.station))
        if owner:
            self.properties[plan.station] = owner
        else:
            self.properties.pop(plan.station, None)
        if owner != prop:
            return {"state": "rejected", "error": f"station {plan.station!r} is not one of "
                                                  f"{prop}'s stations"}
        if plan.expires_at is not None and plan.expires_at <= utcnow():
            return {"state": "expired", "error": "the command's expires_at has passed"}
        if plan.station not in self.gateway.connections:
            holder = await self.gateway.holder(plan.station)
            if holder is not None:
                try:
                    return await self.forward(holder, {"kind": "mqtt", "verb": plan.verb,
                                                       "body": body, "row_id": row_id})
                except cmd.CommandRejected as exc:
                    return {"state": "rejected", "error": str(exc)}
                except cmd.CommandFailed as exc:
                    return {"state": "failed", "error": f"{exc.kind}: {exc}"}
        return await self._execute(plan, row_id)

    async def _execute(self, plan: Plan, row_id: int) -> dict[str, Any]:
        """Run the command on the station connected here."""
        try:
            if plan.command is not None:  # an operation: kept as the operator's are
                result = await self.gateway.control.send(plan.station, plan.command, plan.verb,
                                                         plan.args)
                return {"state": "accepted" if result["accepted"] else "rejected",
                        "ocpp_status": result["status"], "response": result["response"]}
            commands = await self._commands_for(plan, row_id)
            results = [await self.gateway.control.send(plan.station, c) for c in commands]
        except cmd.CommandRejected as exc:
            return {"state": "rejected", "error": str(exc)}
        except cmd.CommandFailed as exc:
            return {"state": "failed", "error": f"{exc.kind}: {exc}"}
        accepted = all(r["accepted"] for r in results)
        answer: dict[str, Any] = {"state": "accepted" if accepted else "rejected",
                                  "ocpp_status": results[0]["status"]}
        if accepted and results[0]["status"] == "Scheduled":
            # A session runs: the station changes the connector when it ends; a second ack
            # ("applied") follows then (docs/mqtt.md).
            answer["state"] = "scheduled"
        if plan.verb == "reserve":
            answer["reservation_id"] = MQTT_RESERVATIONS + row_id
        return answer

    async def _commands_for(self, plan: Plan, row_id: int) -> list[cmd.Command]:
        c = plan.connector
        if plan.verb == "block":
            return [cmd.SetAvailability(c, False), cmd.ShareLock(c, True)]
        if plan.verb == "release":
            return [cmd.SetAvailability(c, True), cmd.ShareLock(c, False)]
        if plan.verb == "set-availability":
            return [cmd.SetAvailability(c, bool(plan.operative))]
        if plan.verb == "reserve":
            assert plan.tag is not None and plan.minutes is not None
            return [cmd.ReserveNow(c, plan.tag, utcnow() + timedelta(minutes=plan.minutes),
                                   MQTT_RESERVATIONS + row_id)]
        if plan.verb == "cancel-reservation":
            assert plan.reservation_id is not None
            return [cmd.CancelReservation(plan.reservation_id)]
        session_id = plan.session_id
        if session_id is None:
            async with self.gateway.engine.connect() as conn:
                session_id = await conn.scalar(select(sessions.c.id).where(and_(
                    sessions.c.station_id == plan.station, sessions.c.connector_id == c,
                    sessions.c.ended_at.is_(None), sessions.c.status == "active"))
                    .order_by(sessions.c.id.desc()).limit(1))
            if session_id is None:
                raise cmd.CommandRejected(f"no session is running on {plan.station} connector {c}")
        return [cmd.RemoteStop(int(session_id))]


@dataclass(frozen=True)
class Plan:
    verb: str
    request_id: str
    station: str
    connector: int = 0
    operative: bool | None = None
    tag: str | None = None
    minutes: int | None = None
    reservation_id: int | None = None
    session_id: int | None = None
    expires_at: datetime | None = None
    command: cmd.Command | None = None  # one of OPERATIONS
    args: dict[str, Any] | None = None


_FIELDS = {
    "block": {"connector"}, "release": {"connector"},
    "set-availability": {"connector", "operative"},
    "reserve": {"connector", "tag", "minutes"},
    "cancel-reservation": {"reservation_id"},
    "remote-stop": {"connector", "session_id"},
}


def _int(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CommandError(f"{key} must be a whole number from {low} to {high}, not {value!r}")
    return value


def _amps(value: Any, what: str) -> float:
    # (NaN fails the range check too)
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1e6 < value < 1e6:
        raise CommandError(f"{what} must be a number")
    return float(value)


def meter_reading(body: dict[str, Any], voltage_v: int) -> tuple[tuple[float, float, float], bool]:
    """{"current_a": [L1, L2, L3]} or {"power_w": W} (spread over three phases), with
    "includes_chargers": true when the meter measures the whole circuit."""
    unknown = set(body) - {"v", "current_a", "power_w", "includes_chargers", "at"}
    if unknown:
        raise CommandError(f"a circuit load takes no {', '.join(sorted(unknown))}")
    total = body.get("includes_chargers", False)
    if not isinstance(total, bool):
        raise CommandError("includes_chargers must be true or false")
    if ("current_a" in body) == ("power_w" in body):
        raise CommandError("give current_a ([L1, L2, L3] in A) or power_w, one of them")
    if "current_a" in body:
        values = body["current_a"]
        if not isinstance(values, list) or len(values) not in (1, 3):
            raise CommandError("current_a is [L1, L2, L3] (or [L1] for one phase)")
        amps = [max(0.0, _amps(v, "current_a")) for v in values] + [0.0, 0.0]
        return (amps[0], amps[1], amps[2]), total
    each = max(0.0, _amps(body["power_w"], "power_w")) / (3 * voltage_v)
    return (each, each, each), total


def grid_reading(body: dict[str, Any]) -> tuple[float | None, float | None, str]:
    """{"limit_w": W or null (lifted), "for_s": seconds (optional), "source": text}: a grid
    operator's limit on what a site draws."""
    unknown = set(body) - {"v", "limit_w", "for_s", "source", "at"}
    if unknown:
        raise CommandError(f"unknown field(s) {', '.join(sorted(unknown))}: give limit_w "
                           "(null lifts it), for_s, source")
    if "limit_w" not in body:
        raise CommandError("give limit_w (W the site may draw; null lifts the limit)")
    values = []
    for key in ("limit_w", "for_s"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 <= value <= 10**9):
            raise CommandError(f"{key} must be a number from 0 to 10^9")
        values.append(None if value is None else float(value))
    if values[1] == 0:
        raise CommandError("for_s must be more than 0 (leave it out: until lifted)")
    return values[0], values[1], str(body.get("source") or "mqtt")[:64]


def surplus_reading(body: dict[str, Any]) -> float:
    """{"surplus_w": W}, or {"pv_w": P, "house_w": H}: the PV production the building does not
    use (the chargers not counted)."""
    unknown = set(body) - {"v", "surplus_w", "pv_w", "house_w", "at"}
    if unknown:
        raise CommandError(f"a PV reading takes no {', '.join(sorted(unknown))}")
    if "surplus_w" in body:
        if "pv_w" in body or "house_w" in body:
            raise CommandError("give surplus_w, or pv_w and house_w, not both")
        return _amps(body["surplus_w"], "surplus_w")
    if "pv_w" not in body:
        raise CommandError("give surplus_w, or pv_w (and house_w)")
    return _amps(body["pv_w"], "pv_w") - _amps(body.get("house_w", 0), "house_w")


REWARD_EVENT = "reward-event"


def _reward_event(body: dict[str, Any]) -> str:
    """Check a reward event message; returns its request_id (CommandError names a problem)."""
    if body.get("v", VERSION) != VERSION:
        raise CommandError(f"unsupported payload version {body.get('v')!r}: this gateway speaks v{VERSION}")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 64:
        raise CommandError("request_id must be a string of 1 to 64 characters")
    unknown = set(body) - {"v", "request_id", "tag", "event", "ref"}
    if unknown:
        raise CommandError(f"unknown field {min(unknown)!r}: a reward event has tag, "
                           "event and ref")
    for key in ("tag", "event", "ref"):
        if not isinstance(body.get(key), str) or not 1 <= len(body[key]) <= 64:
            raise CommandError(f"{key} must be a string of 1 to 64 characters")
    return request_id


def _plan(verb: str, body: dict[str, Any]) -> Plan:
    """Check a command message; CommandError names the first problem."""
    if verb not in VERBS and verb not in OPERATIONS:
        raise CommandError(f"unknown command {verb!r}: one of "
                           f"{', '.join(VERBS + OPERATIONS + (REWARD_EVENT,))}")
    if body.get("v", VERSION) != VERSION:
        raise CommandError(f"unsupported payload version {body.get('v')!r}: this gateway speaks v{VERSION}")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 64:
        raise CommandError("request_id must be a string of 1 to 64 characters")
    station = body.get("station")
    if not isinstance(station, str) or not station:
        raise CommandError("station must be the station's id")
    common = {"v", "request_id", "station", "expires_at"}
    if verb in OPERATIONS:
        args = {k: v for k, v in body.items() if k not in common}
        try:
            command = cmd.build_command(verb, args)
        except cmd.CommandRejected as exc:
            raise CommandError(str(exc)) from None
        if isinstance(command, cmd.SetConfiguration) and cmd.password_key(command.key):
            # Whoever sets a station's password can pose as the station: the operator's.
            raise CommandError("a station's password is set by the operator only "
                               "(`cocharge station rotate-password`)")
    else:
        unknown = set(body) - _FIELDS[verb] - common
        if unknown:
            raise CommandError(f"{verb} takes no {', '.join(sorted(unknown))}")
    expires_at = None
    if body.get("expires_at") is not None:
        try:
            when = datetime.fromisoformat(str(body["expires_at"]))
        except ValueError:
            raise CommandError("expires_at must be an ISO 8601 time, e.g. 2026-11-23T10:00:00Z") from None
        expires_at = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    plan = Plan(verb, request_id, station, expires_at=expires_at)
    if verb in OPERATIONS:
        return replace(plan, command=command, args=args)
    if verb in ("block", "release", "reserve"):
        plan = replace(plan, connector=_int(body, "connector", 1, 99))
    if verb == "set-availability":
        operative = body.get("operative")
        if not isinstance(operative, bool):
            raise CommandError("operative must be true or false")
        plan = replace(plan, connector=_int(body, "connector", 0, 99), operative=operative)
    if verb == "reserve":
        tag = body.get("tag")
        if not isinstance(tag, str) or not 1 <= len(tag) <= 20:
            raise CommandError("tag must be the member's idTag (1 to 20 characters)")
        plan = replace(plan, tag=tag, minutes=_int(body, "minutes", 1, 1440))
    if verb == "cancel-reservation":
        plan = replace(plan, reservation_id=_int(body, "reservation_id", 1, 2**31 - 1))
    if verb == "remote-stop":
        if ("session_id" in body) == ("connector" in body):
            raise CommandError("remote-stop takes session_id or connector (one of them)")
        if "session_id" in body:
            plan = replace(plan, session_id=_int(body, "session_id", 1, 2**62))
        else:
            plan = replace(plan, connector=_int(body, "connector", 1, 99))
    return plan


def acl_file(properties: list[str], prefix: str = DEFAULT_PREFIX, gateway_user: str = "cocharge") -> str:
    """A Mosquitto ACL file: the gateway may use the whole prefix; each property (its MQTT
    user name = the property's name) reads its own topics and the gateways' status, and
    writes only its own command topics."""
    lines = ["# Mosquitto ACL for cocharge (generated by `cocharge mqtt acl`).",
             "# Use it with `acl_file` in mosquitto.conf, and one user per property (mosquitto_passwd).",
             "", f"user {gateway_user}", f"topic readwrite {prefix}/#", ""]
    for prop in sorted(set(properties)):
        lines += [f"user {prop}", f"topic read {prefix}/gateway/+/status",
                  f"topic read {prefix}/{prop}/stations/#", f"topic read {prefix}/{prop}/events/#",
                  f"topic read {prefix}/{prop}/ack", f"topic write {prefix}/{prop}/cmd/+", ""]
    return "\n".join(lines)
