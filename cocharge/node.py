"""Running a whole gateway node: store, OCPP server and operator channel together."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import resource
import signal
import ssl
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.api.service import Api
from cocharge.config import GatewaySettings
from cocharge.gateway.exporter import MetricsServer
from cocharge.gateway.heap import HeapKeeper
from cocharge.gateway.mqtt import MqttBridge
from cocharge.gateway.operator import OperatorChannel
from cocharge.gateway.server import Gateway
from cocharge.load.cluster import SiteOwnership
from cocharge.mqtt_url import parse_mqtt_url
from cocharge.settlement.checkpoints import Checkpointer
from cocharge.store.db import StoreError, describe_error, open_store
from cocharge.web.site import ApiServer

log = logging.getLogger(__name__)

# File descriptors the process needs besides its stations' sockets (database, broker, logs).
RESERVED_FDS = 64


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files as far as the hard limit allows; returns how many
    station connections the process can hold."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return max(0, soft - RESERVED_FDS)


@dataclass
class Node:
    engine: AsyncEngine
    gateway: Gateway
    operator: OperatorChannel
    mqtt: MqttBridge | None = None
    metrics: MetricsServer | None = None
    api: ApiServer | None = None


@contextlib.asynccontextmanager
async def running_node(db: str | None, settings: GatewaySettings,
                       tls: ssl.SSLContext | None = None) -> AsyncIterator[Node]:
    """A started gateway with its operator channel; everything is closed on exit."""
    target = parse_mqtt_url(settings.mqtt_url) if settings.mqtt_url else None
    try:
        engine = await open_store(db, background_checkpoint=True)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(describe_error(exc, db)) from exc
    gateway = Gateway(engine, settings, tls)
    operator = OperatorChannel(gateway, settings.operator_host, settings.operator_port)
    bridge = None
    if target is not None:
        bridge = MqttBridge(gateway, target, operator.node_id, settings.mqtt_queue_size,
                            settings.mqtt_meter_interval_s)
        gateway.set_observer(bridge)
        gateway.router = bridge
        gateway.service.on_station_changed = bridge.station_changed
        gateway.load.cluster = SiteOwnership(engine, gateway.node_id, settings.node_lease_s,
                                             bridge.forward, bridge.tell)
        await bridge.start()
    metrics = (MetricsServer(gateway, gateway.metrics, settings.operator_host,
                             settings.metrics_port)
               if settings.metrics_port is not None else None)
    api = None
    if settings.api_port is not None:
        api = ApiServer(Api(engine, gateway, operator), settings.api_host, settings.api_port)
    checkpointer = None
    if settings.ledger_key_file:
        checkpointer = Checkpointer(
            engine, settings.ledger_key_file,
            settings.checkpoint_file or settings.ledger_key_file + ".checkpoints.jsonl",
            settings.checkpoint_interval_s, settings.checkpoint_every_transfers,
            bridge.ledger_checkpoint if bridge is not None else None)
    try:
        await gateway.start()
        await operator.start()
        if metrics is not None:
            await metrics.start()
        if api is not None:
            await api.start()
        if checkpointer is not None:
            await checkpointer.start()
        yield Node(engine, gateway, operator, bridge, metrics, api)
    finally:
        if checkpointer is not None:
            await checkpointer.close()
        if api is not None:
            await api.close()
        if metrics is not None:
            await metrics.close()
        await operator.close()
        await gateway.close()
        if bridge is not None:
            await bridge.close()
        await engine.dispose()


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the gateway on uvloop (measured: fewer microseconds per frame than asyncio's own
    loop, benchmarks/fleet.py), or on asyncio's loop where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


async def serve_forever(db: str | None, settings: GatewaySettings,
                        tls: ssl.SSLContext | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    capacity = raise_open_files_limit()
    async with running_node(db, settings, tls) as node:
        heap = HeapKeeper(settings.gc_full_collection_s)
        heap.start()
        log.info("open-files limit allows about %d station connections", capacity)
        print(f"cocharge gateway: room for {capacity} station connections (open-files limit)",
              flush=True)
        both = tls is not None and settings.tls_port is not None  # ws:// and wss://
        where = (f"ws://{settings.host}:{node.gateway.port}/ocpp/<station_id> and wss://"
                 f"{settings.host}:{node.gateway.tls_port}/ocpp/<station_id>" if both else
                 f"{'wss' if tls else 'ws'}://{settings.host}:{node.gateway.port}/ocpp/<station_id>")
        print(f"cocharge gateway: OCPP on {where}, operator channel {node.operator.url}"
              + (f", MQTT {node.mqtt.target} as node {node.gateway.node_id}" if node.mqtt else "")
              + (f", metrics http://{settings.operator_host}:{node.metrics.port}/metrics"
                 if node.metrics else ""),
              flush=True)
        if node.api is not None:
            print(f"cocharge gateway: web console {node.api.url}/console/, HTTP API "
                  f"{node.api.url}/api/docs", flush=True)
        await stop.wait()
        await heap.close()


# --- serve --workers N: one node per process, all on the same ports -----------------------------

def worker_settings(settings: GatewaySettings, index: int) -> GatewaySettings:
    """Worker `index` of `serve --workers N`: every worker takes OCPP connections and
    uploads on the same ports (SO_REUSEPORT: the kernel spreads new connections); the first
    also serves the HTTP API and console, metrics and health, ledger checkpoints and the
    operator port given; the others an operator port of their own (found through the
    database, as for any node)."""
    shared = dataclasses.replace(settings, reuse_port=True)
    if index == 0:
        return shared
    return dataclasses.replace(shared, operator_port=0, api_port=None, metrics_port=None,
                               ledger_key_file=None)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with_parent(parent: int) -> None:
    """A worker is stopped (SIGTERM: as `serve` stops) when the `serve` that started it dies,
    even by SIGKILL: left running, nobody would restart or stop it, and the next `serve
    --workers N` would run beside it on the same port. Linux only (prctl); elsewhere the
    workers outlive a killed supervisor."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


async def _prepare(db: str | None) -> None:
    """Create or upgrade the schema once, before the workers start (not N times at once)."""
    engine = await open_store(db)
    await engine.dispose()


def run_workers(n: int, db: str | None, settings: GatewaySettings,
                tls: ssl.SSLContext | None = None, quick_failure_s: float = 10.0) -> int:
    """Run `n` gateway nodes as child processes and keep them running: a worker that dies
    is started again (its chargers reconnect to the others meanwhile); SIGTERM or SIGINT
    stops them all. A worker that fails by itself within `quick_failure_s` of its start (a
    port taken, a database away) stops everything: 1 is returned, as nothing would get
    better (one killed by a signal is started again)."""
    run_event_loop(_prepare(db))
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started)
    stopping = False

    def stop(_signal: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    supervisor = os.getpid()

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: a node like any `serve`
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _stop_with_parent(supervisor)
            code = 0
            try:
                run_event_loop(serve_forever(db, worker_settings(settings, index), tls))
            except (OSError, StoreError, SQLAlchemyError) as exc:
                log.error("worker %d: %s", index, exc)  # e.g. cannot listen: said in one line
                code = 1
            except BaseException:
                log.exception("worker %d failed", index)
                code = 1
            os._exit(code)
        children[pid] = (index, time.monotonic())

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"cocharge serve: {n} workers, one node each, sharing port {settings.port}",
          flush=True)
    for index in range(n):
        start(index)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index, started = children.pop(pid)
        if stopping:
            continue
        failed_itself = os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0
        if failed_itself and time.monotonic() - started < quick_failure_s:
            log.error("worker %d failed at its start: stopping the others", index)
            failed = True
            stop(signal.SIGTERM, None)
            continue
        log.warning("worker %d (pid %d) ended (status %d): started again", index, pid, status)
        time.sleep(1.0)
        if not stopping:
            start(index)
    return 1 if failed else 0
