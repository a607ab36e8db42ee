"""Fleet benchmark: a reconnect storm of N chargers, paced meter values, a saturated run, and
(with --kill) a SIGKILL of the gateway in the middle of the paced phase.

One run starts each target in its own process and gives it the same load from a separate
load process (this file again, in `load` mode):
  (a) echo     - a raw `websockets` echo server (the floor of what Python can do)
  (b) naive    - benchmarks/naive_csms.py, a central system written the naive way on `ocpp`
  (c) sqlite   - `cocharge serve` on a fresh SQLite file
  (d) postgres - `cocharge serve` on a fresh PostgreSQL database (COCHARGE_TEST_PG server)
  (e) postgres-w2 - the same with `--workers 2` (not in the default targets)
  (f) echo-picows - an echo server on picows, a WebSocket stack written in Cython (not in the
      default targets; `pip install picows`): what the frames would cost on a faster stack
      than `websockets` (issue 32 names it as a candidate; cocharge does not use it)

Per target it prints: storm time until every charger booted (BootNotification, then
StatusNotification for connectors 0 and 1), handshakes refused (503) and failed, paced
MeterValues p50/p99 once all are booted (each charger every 10 s, random phase), saturated
calls/s of 50 chargers (--saturated) back to back with the server's CPU time per answered
call (µs, all its processes, over the timed window only), the load generator's own CPU and
PostgreSQL's (% of one core), server RSS per booted station, and the ratios of cocharge to
(a) and (b). The chargers are a lean client of hand-built frames (`--client websockets` for
the `websockets` client, which took half a core of the two itself at saturation, and more
than a core in a storm); the load process runs on uvloop, as cocharge does.

    python benchmarks/fleet.py [--chargers 10000] [--paced 60]
        [--targets echo,naive,sqlite,postgres] [--samples 1] [--rounds 1]
    python benchmarks/fleet.py --kill [--chargers 10000] [--targets sqlite,postgres]

--baseline DIR runs each cocharge target twice in turn, from this checkout and from DIR (another
commit's worktree: `git worktree add DIR COMMIT`), for before/after figures of one run.

--rounds N runs the targets in turn N times and reports each figure's median (the µs/call of
a shared machine moves by a fifth from one minute to the next; interleaved rounds spread that
over every target).

FLEET_KEEP=1 keeps each target's folder (its server.log); FLEET_PROFILE=1 (with FLEET_KEEP) runs
cocharge under py-spy and keeps its collapsed stacks there (profile.txt). FLEET_SLOW=1 prints when (seconds
after all booted) the paced answers slower than 50 ms came.

--kill: SIGKILL cocharge 20 s into the paced phase, restart it at once; prints the time until
every charger is back, and checks against the database that no answered MeterValues was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import functools
import gc
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
PG = os.environ.get("COCHARGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
METER_EVERY_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile(wanted: int = 1 << 20) -> None:
    """Open files: as many as the hard limit allows; as root, the hard limit raised first
    (the processes this one starts inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the load (runs in its own process) -------------------------------------------------------

@dataclass
class Load:
    url: str
    chargers: int
    paced_s: float
    prefix: str
    client: str = "lean"  # or "websockets"
    t0: float = field(default_factory=time.monotonic)
    booted: int = 0
    all_booted_at: float | None = None
    refused: int = 0          # 503 answers
    failed: int = 0           # handshakes that failed otherwise (timeout, reset, refused TCP)
    why: dict[str, int] = field(default_factory=dict)  # failed, by reason
    reconnects: int = 0
    back_at: float | None = None
    paced: list[tuple[float, float]] = field(default_factory=list)  # (sent at, latency)
    answered: dict[str, int] = field(default_factory=dict)          # station -> answered meters
    down_at: float | None = None
    back: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)  # lost their connection after down_at


async def _connect(load: Load, sid: str) -> Any:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    while True:
        try:
            if load.client == "lean":
                return await lean_connect(load.url, sid, 60)
            return await connect(f"{load.url}/{sid}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                 compression=None, open_timeout=60, ping_interval=None,
                                 close_timeout=1, max_queue=4)
        except LeanRefused as exc:
            if exc.status != 503:
                _failed(load, f"HTTP {exc.status}")  # as below
                await asyncio.sleep(1 + random.random() * 4)
                continue
            load.refused += 1
            await asyncio.sleep(float(exc.retry_after or "5"))
        except InvalidStatus as exc:
            if exc.response.status_code != 503:
                # Refused otherwise (409: the node still counts its old connection alive):
                # a charger tries again later, as a real one does.
                _failed(load, f"HTTP {exc.response.status_code}")
                await asyncio.sleep(1 + random.random() * 4)
                continue
            load.refused += 1
            retry = float(exc.response.headers.get("Retry-After", "5"))
            await asyncio.sleep(retry)
        except (OSError, TimeoutError, EOFError) as exc:
            _failed(load, type(exc).__name__)
            await asyncio.sleep(1 + random.random() * 4)
        except Exception as exc:  # the handshake broke off (a server killed mid-handshake)
            _failed(load, type(exc).__name__)
            await asyncio.sleep(1 + random.random() * 4)


def _failed(load: Load, why: str) -> None:
    load.failed += 1
    load.why[why] = load.why.get(why, 0) + 1


async def _charger(load: Load, n: int, end: float) -> None:
    from websockets.exceptions import ConnectionClosed

    sid = f"{load.prefix}{n:05d}"
    register = 0
    msg = 0
    first = True
    while time.monotonic() < end:
        ws = await _connect(load, sid)
        try:
            async def call(action: str, payload: dict[str, Any]) -> list[Any]:
                nonlocal msg
                msg += 1
                await ws.send(json.dumps([2, str(msg), action, payload]))
                return json.loads(await ws.recv())  # type: ignore[no-any-return]

            await call("BootNotification", {"chargePointVendor": "bench",
                                             "chargePointModel": "fleet"})
            for connector in (0, 1):
                await call("StatusNotification", {"connectorId": connector, "errorCode": "NoError",
                                                  "status": "Available"})
            if first:
                first = False
                load.booted += 1
                if load.booted == load.chargers:
                    load.all_booted_at = time.monotonic()
                    print(json.dumps({"booted": load.all_booted_at - load.t0}), flush=True)
            elif load.down_at is not None:
                load.back.add(sid)
                if load.back >= load.dropped:  # every charger that was cut off is back
                    load.back_at = time.monotonic()
            await asyncio.sleep(random.random() * METER_EVERY_S)
            while time.monotonic() < end:
                register += 10
                sent = time.monotonic()
                answer = await call("MeterValues", {"connectorId": 1, "meterValue": [{
                    "timestamp": now_iso(),
                    "sampledValue": [{"value": str(register), "unit": "Wh",
                                      "measurand": "Energy.Active.Import.Register"}]}]})
                if answer[0] != 4:  # a CallResult (or, from the echo server, the frame itself)
                    load.paced.append((sent, time.monotonic() - sent))
                    load.answered[sid] = load.answered.get(sid, 0) + 1
                await asyncio.sleep(max(0.0, sent + METER_EVERY_S - time.monotonic()))
        except (ConnectionClosed, LeanClosed):
            if load.down_at is None:
                load.down_at = time.monotonic()
            load.dropped.add(sid)
            load.back.discard(sid)
            load.back_at = None
            load.reconnects += 1
            continue
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
        return


def now_iso() -> str:
    """The charger's clock, right (a wrong one makes every message a clock notice: a
    station event written per message, which is not the load being measured)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def _saturated(url: str, prefix: str, chargers: int, seconds: float,
                     samples: int = 1) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    # Every charger connected and booted first; the timed window is marked on stdout (the
    # driver reads the server's CPU time at both marks) and its own CPU time is counted.
    ready = asyncio.Barrier(chargers + 1)
    done = asyncio.Barrier(chargers + 1)
    window: dict[str, float] = {}
    started = asyncio.Event()

    async def one(n: int) -> int:
        async with connect(f"{url}/{prefix}{n:05d}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                           compression=None, ping_interval=None) as ws:
            await ws.send(json.dumps([2, "b", "BootNotification", {"chargePointVendor": "bench",
                                                                    "chargePointModel": "sat"}]))
            await ws.recv()
            await ready.wait()
            await started.wait()
            count, end = 0, window["start"] + seconds
            while time.monotonic() < end:
                sent = time.perf_counter()
                await ws.send(f'[2,"{count}","MeterValues",{{"connectorId":1,"meterValue":[{{'
                              f'"timestamp":"{now_iso()}","sampledValue":'
                              f'{sampled_values(samples, count)}}}]}}]')
                answer = json.loads(await ws.recv())
                latencies.append(time.perf_counter() - sent)
                if answer[0] != 4:  # a CallResult (or, from the echo server, the frame itself)
                    count += 1
            await done.wait()
            return count

    async def timed() -> None:
        await ready.wait()  # everyone booted
        print(json.dumps({"saturated_begin": True}), flush=True)
        window["start"], window["cpu"] = time.monotonic(), time.process_time()
        started.set()
        await done.wait()  # everyone's window ended (before closing their connections)
        window["took"] = time.monotonic() - window["start"]
        window["cpu"] = time.process_time() - window["cpu"]
        print(json.dumps({"saturated_end": True}), flush=True)

    marks = asyncio.create_task(timed())
    counts = await asyncio.gather(*(one(n) for n in range(chargers)))
    await marks
    calls = sum(counts)
    return {"calls_per_s": calls / window["took"], "calls": calls,
            "p50_ms": pct(latencies, 0.5) * 1000, "p99_ms": pct(latencies, 0.99) * 1000,
            "load_cpu_s": window["cpu"], "load_s": window["took"]}


class LeanRefused(Exception):
    """The handshake was answered with another status than 101."""

    def __init__(self, status: int, retry_after: str | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.retry_after = status, retry_after


class LeanClosed(Exception):
    """The connection closed."""


class _LeanSocket(asyncio.Protocol):
    """A charger's WebSocket at the cost of a few bytes' work per message (the load
    generator's CPU is not the server's: with `websockets` as the client, the generator took
    ~45 µs a call and 1.2-1.6 cores of the two in a storm, and the servers got what was left).

    The frames are built by hand: the handshake, then text frames masked with the all-zero
    key (RFC 6455 asks a client to mask, and any key, this one too, is one a server must
    take; XOR with zeros leaves the payload as it is, so no byte is touched here). Pings are
    answered; what else the server sends is framed and handed to `on_message`."""

    def __init__(self, path: str, host: str, protocol: str = "1.6") -> None:
        self.path, self.host, self.protocol = path, host, protocol
        self.transport: Any = None
        self.buffer = b""
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox: collections.deque[bytes] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.is_closed = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
                              f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                              f"Sec-WebSocket-Protocol: ocpp{self.protocol}\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"{self.path}: closed ({exc})"))
        self._wake()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.opened.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            head = buffer[:end].decode("latin-1").split("\r\n")
            status = int(head[0].split(" ")[1])
            if status != 101:
                retry = next((line.split(":", 1)[1].strip() for line in head[1:]
                              if line.lower().startswith("retry-after:")), None)
                self.opened.set_exception(LeanRefused(status, retry))
                self.transport.close()
                return
            self.opened.set_result(None)
            buffer = buffer[end + 4:]
        while len(buffer) >= 2:
            size, start = buffer[1] & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    break
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                if len(buffer) < 10:
                    break
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + size:
                break
            opcode = buffer[0] & 0x0F
            payload = buffer[start:start + size]
            buffer = buffer[start + size:]
            if opcode == 0x9:  # ping: pong
                self.send_frame(payload, 0x8A)
            elif opcode == 0x8:  # close: closed
                self.transport.close()
            elif opcode == 0x1:
                self.on_message(payload)
        self.buffer = buffer

    # -- what a charger does with it

    def send_frame(self, payload: bytes, opcode: int = 0x81) -> None:
        n = len(payload)
        if n < 126:
            head = bytes((opcode, 0x80 | n))
        else:
            head = bytes((opcode, 0xFE)) + n.to_bytes(2, "big")
        self.transport.write(head + b"\0\0\0\0" + payload)

    def on_message(self, payload: bytes) -> None:
        self.inbox.append(payload)
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def send(self, text: str) -> None:
        if self.is_closed:
            raise LeanClosed(self.path)
        self.send_frame(text.encode())

    async def recv(self) -> str:
        while not self.inbox:
            if self.is_closed:
                raise LeanClosed(self.path)
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.inbox.popleft().decode()

    async def close(self) -> None:
        if self.transport is not None and not self.is_closed:
            self.send_frame(b"\x03\xe8", 0x88)
            self.transport.close()


async def lean_connect(url: str, station: str, timeout: float,
                       socket_class: type[_LeanSocket] = _LeanSocket,
                       **extra: Any) -> Any:
    """Open `url`/`station` with a lean socket (raises LeanRefused, OSError, TimeoutError)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = f"{parts.path}/{station}"
    transport, sock = await asyncio.wait_for(asyncio.get_running_loop().create_connection(
        lambda: socket_class(path, f"{host}:{port}", **extra), host, port), timeout)
    try:
        await asyncio.wait_for(sock.opened, timeout)
    except BaseException:
        transport.close()
        raise
    return sock


class _LeanCharger(_LeanSocket):
    """A saturated charger: each answer sends the next call at once, from the callback. A
    CallResult counts, a CallError does not (the echo server's answer is the frame itself,
    which counts, as with the `websockets` client)."""

    def __init__(self, path: str, host: str, sat: "_LeanRun") -> None:
        super().__init__(path, host, sat.protocol)
        self.sat = sat
        self.booted = False
        self.count = 0
        self.sent = 0.0

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.sat.closed(self)

    def on_message(self, payload: bytes) -> None:
        if not self.booted:
            self.booted = True
            super().on_message(payload)
            return
        self.sat.latencies.append(time.perf_counter() - self.sent)
        if not payload.startswith(b"[4"):
            self.count += 1
        self.sat.next(self)


# What a three-phase wallbox reports each period (--samples N takes the first N; 1: the bare
# energy register, as the benchmark has always sent).
_WALLBOX_SAMPLES = (
    ("Power.Active.Import", "W", None, "7360"),
    ("Current.Import", "A", "L1", "32.0"), ("Current.Import", "A", "L2", "31.8"),
    ("Current.Import", "A", "L3", "32.1"),
    ("Voltage", "V", "L1-N", "230.1"), ("Voltage", "V", "L2-N", "229.7"),
    ("Voltage", "V", "L3-N", "231.0"), ("SoC", "Percent", None, "57"),
)


def sampled_values(samples: int, count: int, protocol: str = "1.6") -> str:
    """The sampledValue array of one MeterValues, as JSON text (1.6: values as text and a
    unit; 2.0.1: numbers and a unitOfMeasure). Only the energy register changes from one
    message to the next; the rest is written once."""
    v16 = protocol == "1.6"
    value = f'"{count}"' if v16 else str(count)
    if samples <= 1:
        return f'[{{"value":{value}}}]'
    unit = '"unit":"Wh"' if v16 else '"unitOfMeasure":{"unit":"Wh"}'
    return (f'[{{"value":{value},"measurand":"Energy.Active.Import.Register",'
            f'"context":"Sample.Periodic",{unit}}}{_other_values(samples, v16)}]')


@functools.cache
def _other_values(samples: int, v16: bool) -> str:
    """The values after the energy register, as JSON text with a leading comma."""
    values = []
    for measurand, unit, phase, value in _WALLBOX_SAMPLES[:samples - 1]:
        entry: dict[str, Any] = {"value": value if v16 else float(value),
                                 "measurand": measurand, "context": "Sample.Periodic"}
        entry.update({"unit": unit} if v16 else {"unitOfMeasure": {"unit": unit}})
        if phase:
            entry["phase"] = phase
        values.append(json.dumps(entry, separators=(",", ":")))
    return "".join("," + value for value in values)


class _LeanRun:
    def __init__(self, seconds: float, samples: int = 1, protocol: str = "1.6") -> None:
        self.seconds = seconds
        self.samples = samples
        self.protocol = protocol
        # What identifies the connector: 1.6 names it, 2.0.1 names the EVSE.
        self.where = '"connectorId":1' if protocol == "1.6" else '"evseId":1'
        self.latencies: list[float] = []
        self.end = float("inf")
        self.running: set[_LeanCharger] = set()
        self.finished = asyncio.get_running_loop().create_future()
        self.stamp = (0, "")

    def begin(self, chargers: list[_LeanCharger]) -> None:
        self.end = time.monotonic() + self.seconds
        self.running = set(chargers)
        for charger in chargers:
            self.next(charger)

    def next(self, charger: _LeanCharger) -> None:
        now = time.monotonic()
        if now >= self.end:
            self.closed(charger)
            return
        second = int(time.time())
        if self.stamp[0] != second:
            self.stamp = (second, now_iso())
        n = charger.count
        charger.sent = time.perf_counter()
        values = sampled_values(self.samples, n, self.protocol)
        charger.send_frame(f'[2,"{n}","MeterValues",{{{self.where},"meterValue":[{{'
                           f'"timestamp":"{self.stamp[1]}","sampledValue":{values}}}]}}]'.encode())

    def closed(self, charger: _LeanCharger) -> None:
        self.running.discard(charger)
        if not self.running and self.end != float("inf") and not self.finished.done():
            self.finished.set_result(None)


async def _saturated_lean(url: str, prefix: str, chargers: int, seconds: float,
                          samples: int = 1, protocol: str = "1.6") -> dict[str, Any]:
    run = _LeanRun(seconds, samples, protocol)
    made: list[_LeanCharger] = []
    boot = (b'[2,"b","BootNotification",{"chargePointVendor":"bench","chargePointModel":"sat"}]'
            if protocol == "1.6" else b'[2,"b","BootNotification",{"reason":"PowerUp",'
            b'"chargingStation":{"model":"sat","vendorName":"bench"}}]')
    for n in range(chargers):
        charger = await lean_connect(url, f"{prefix}{n:05d}", 60, _LeanCharger, sat=run)
        charger.send_frame(boot)
        made.append(charger)
    for charger in made:
        await charger.recv()  # booted
    print(json.dumps({"saturated_begin": True}), flush=True)
    start, cpu = time.monotonic(), time.process_time()
    run.begin(made)
    await run.finished
    took, cpu = time.monotonic() - start, time.process_time() - cpu
    print(json.dumps({"saturated_end": True}), flush=True)
    for charger in made:
        await charger.close()
    calls = sum(c.count for c in made)
    return {"calls_per_s": calls / took, "calls": calls,
            "p50_ms": pct(run.latencies, 0.5) * 1000, "p99_ms": pct(run.latencies, 0.99) * 1000,
            "load_cpu_s": cpu, "load_s": took}


async def run_load(args: argparse.Namespace) -> None:
    raise_nofile()
    # The load generator holds as many connections as the server: its own collector's full
    # passes would show up as the server's latency.
    gc.disable()
    result: dict[str, Any] = {}
    if args.chargers:
        load = Load(args.url, args.chargers, args.paced, args.prefix, args.client)
        end = load.t0 + args.paced + 3600  # the storm may take longer; paced runs after it
        tasks = [asyncio.create_task(_charger(load, n, end)) for n in range(args.chargers)]
        while load.all_booted_at is None and time.monotonic() - load.t0 < args.storm_limit:
            await asyncio.sleep(0.1)
        stop_at = (load.all_booted_at or time.monotonic()) + args.paced
        while time.monotonic() < stop_at:
            await asyncio.sleep(0.2)
        if args.kill_wait:  # wait for everyone cut off to come back after the kill
            limit = time.monotonic() + 3600  # the kill comes when the driver is ready
            while load.down_at is None and time.monotonic() < limit:
                await asyncio.sleep(0.2)
            limit = time.monotonic() + args.storm_limit
            while load.back_at is None and time.monotonic() < limit:
                await asyncio.sleep(0.2)
            if load.back_at is not None and load.down_at is not None:
                print(json.dumps({"back": load.back_at - load.down_at,
                                  "dropped": len(load.dropped)}), flush=True)
            stop_at = time.monotonic() + 15
            while time.monotonic() < stop_at:
                await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        steady = [lat for sent, lat in load.paced
                  if load.all_booted_at is not None and sent >= load.all_booted_at
                  and (load.down_at is None or sent < load.down_at)]
        if os.environ.get("FLEET_SLOW"):  # when the slow answers came (seconds after all booted)
            slow = sorted(round(sent - (load.all_booted_at or 0), 1)
                          for sent, lat in load.paced if lat > 0.05)
            print(json.dumps({"slow": slow}), file=sys.stderr, flush=True)
        result.update(
            storm_s=(load.all_booted_at - load.t0) if load.all_booted_at else None,
            booted=load.booted, refused=load.refused, failed=load.failed, why=load.why,
            paced_n=len(steady), paced_p50_ms=pct(steady, 0.5) * 1000,
            paced_p99_ms=pct(steady, 0.99) * 1000,
            back_s=(load.back_at - load.down_at) if load.back_at and load.down_at else None,
            back=len(load.back), reconnects=load.reconnects, answered=load.answered)
    if args.saturated:
        if args.client == "websockets":
            result["saturated"] = await _saturated(args.url, "S", args.saturated,
                                                   args.saturated_s, args.samples)
        else:
            result["saturated"] = await _saturated_lean(args.url, "S", args.saturated,
                                                        args.saturated_s, args.samples,
                                                        args.protocol)
    print(json.dumps({"result": result}), flush=True)


# --- the targets ---------------------------------------------------------------------------

def picows_echo_server(port: int) -> None:
    """The same echo on picows and uvloop: frames answered from its callback, no task."""
    try:
        import picows
        import uvloop
    except ImportError:
        sys.exit("echo-picows needs picows: pip install picows")

    class Echo(picows.WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == picows.WSMsgType.TEXT:
                transport.send(picows.WSMsgType.TEXT, frame.get_payload_as_bytes())
            elif frame.msg_type == picows.WSMsgType.PING:
                transport.send_pong(frame.get_payload_as_bytes())
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    def accept(request: Any) -> Any:
        offered = str(request.headers.get("Sec-WebSocket-Protocol") or "ocpp1.6")
        answer = picows.WSUpgradeResponse.create_101_response(
            extra_headers={"Sec-WebSocket-Protocol": offered.split(",")[0].strip()})
        return picows.WSUpgradeResponseWithListener(answer, Echo())

    async def main() -> None:
        server = await picows.ws_create_server(accept, "127.0.0.1", port)
        print(f"echo-picows on {port}", flush=True)
        await server.serve_forever()

    uvloop.run(main())


async def echo_server(port: int) -> None:
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                await ws.send(message)

    offered = ["ocpp1.6", "ocpp2.0.1"]
    async with serve(echo, "127.0.0.1", port, subprotocols=offered,  # type: ignore[arg-type]
                     compression=None, backlog=4096):
        print(f"echo on {port}", flush=True)
        await asyncio.Future()


def database_cpu_s() -> float:
    """CPU time (user + system) of this machine's PostgreSQL processes so far (the server the
    postgres targets use; nothing else runs on it during a benchmark)."""
    import psutil
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if (p.info["name"] or "").startswith("postgres"):
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
    return total


class Target:
    def __init__(self, name: str, chargers: int, saturated: int,
                 baseline: str | None = None) -> None:
        self.name = name
        # "sqlite@base": the same target run from another checkout (--baseline)
        self.kind, _, other = name.partition("@")
        self.baseline = baseline if other else None
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.db: str | None = None
        self.pg_name: str | None = None
        self.folder = tempfile.mkdtemp(prefix=f"cocharge-fleet-{name}-")
        self.chargers, self.saturated = chargers, saturated

    @property
    def cocharge(self) -> bool:
        return self.kind in ("sqlite", "postgres", "postgres-w2")

    def cpu_s(self) -> float:
        """CPU time (user + system) of the server and its worker processes so far."""
        import psutil
        assert self.process is not None
        process = psutil.Process(self.process.pid)
        total = 0.0
        for p in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = p.cpu_times()
                total += times.user + times.system
        return total

    def command(self) -> list[str]:
        if self.kind in ("echo", "echo-picows"):
            return [sys.executable, os.path.abspath(__file__), self.kind, "--port", str(self.port)]
        if self.kind == "naive":
            return [sys.executable, os.path.join(HERE, "naive_csms.py"), "--port", str(self.port)]
        assert self.db is not None
        workers = ["--workers", "2"] if self.kind == "postgres-w2" else []
        spy = []
        if os.environ.get("FLEET_PROFILE"):  # collapsed stacks of the whole run, for py-spy
            spy = [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-f", "raw",
                   "--rate", "250", "--nonblocking", "-o", os.path.join(self.folder, "profile.txt"), "--"]
        return [*spy, sys.executable, "-m", "cocharge.cli", "serve", "--host", "127.0.0.1",
                "--port", str(self.port), "--operator-port", str(free_port()), "--no-api",
                "--upload-port", str(free_port()), "--db", self.db, *workers]

    async def prepare(self) -> None:
        if self.kind == "sqlite":
            self.db = os.path.join(self.folder, "fleet.db")
        elif self.kind in ("postgres", "postgres-w2"):
            import asyncpg
            self.pg_name = f"cocharge_fleet_{uuid.uuid4().hex[:8]}"
            conn = await asyncpg.connect(PG)
            await conn.execute(f'CREATE DATABASE "{self.pg_name}"')
            await conn.close()
            base = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            self.db = f"{base}/{self.pg_name}"
        if self.cocharge:
            await register(self.db, [f"F{n:05d}" for n in range(self.chargers)]
                           + [f"S{n:05d}" for n in range(self.saturated)])

    def start(self) -> None:
        log = open(os.path.join(self.folder, "server.log"), "ab")
        env = None
        if self.baseline:  # the other checkout's cocharge first on the path
            env = {**os.environ, "PYTHONPATH": self.baseline}
        # In its own folder: `python -m` puts the working directory first on the path, and a
        # checkout's own folder there would shadow the baseline's cocharge.
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log, env=env,
                                        cwd=self.folder)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.folder}/server.log")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen within 60 s")

    def rss(self) -> int:
        import psutil
        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        gentle = signal.SIGINT if os.environ.get("FLEET_PROFILE") else signal.SIGTERM  # py-spy saves
        self.process.send_signal(signal.SIGKILL if kill else gentle)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    async def persisted(self) -> dict[str, int]:
        """Meter rows per station in the database (for the no-loss check)."""
        from sqlalchemy import func, select

        from cocharge.store.db import make_engine
        from cocharge.store.schema import meter_samples
        engine = make_engine(self.db)
        async with engine.connect() as conn:
            rows = (await conn.execute(select(meter_samples.c.station_id, func.count())
                                       .group_by(meter_samples.c.station_id))).all()
        await engine.dispose()
        return {r[0]: int(r[1]) for r in rows}

    async def cleanup(self) -> None:
        self.stop()
        if self.pg_name:
            import asyncpg
            conn = await asyncpg.connect(PG)
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            await conn.close()
        if os.environ.get("FLEET_KEEP"):
            print(f"{self.name}: server log kept in {self.folder}", flush=True)
            return
        shutil.rmtree(self.folder, ignore_errors=True)


async def register(db: str | None, ids: list[str]) -> None:
    from sqlalchemy import insert

    from cocharge.store.db import open_store, utcnow
    from cocharge.store.schema import stations
    engine = await open_store(db)
    now = utcnow()
    async with engine.begin() as conn:
        for start in range(0, len(ids), 2000):
            await conn.execute(insert(stations), [
                {"id": sid, "connectors": 1, "admission": "accepted", "created_at": now}
                for sid in ids[start:start + 2000]])
    await engine.dispose()


async def drive(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Start the target, run the load process against it, return the figures."""
    await target.prepare()
    target.start()
    await asyncio.sleep(1)
    rss_before = target.rss()
    command = [sys.executable, __file__, "load", "--url", f"ws://127.0.0.1:{target.port}/ocpp",
               "--chargers", str(args.chargers), "--paced", str(args.paced),
               "--storm-limit", str(args.storm_limit), "--saturated", str(args.saturated),
               "--saturated-s", str(args.saturated_s), "--samples", str(args.samples),
               "--protocol", args.protocol,
               "--client", args.client]
    if args.kill:
        command += ["--kill-wait", "--saturated", "0"]
    load = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                limit=256 * 1024 * 1024)
    assert load.stdout is not None
    figures: dict[str, Any] = {}
    rss_booted = None
    cpu_begin, server_cpu = 0.0, None
    db_begin, db_cpu = 0.0, None
    while True:
        line = await load.stdout.readline()
        if not line:
            break
        message = json.loads(line)
        if "booted" in message:
            await asyncio.sleep(2)
            rss_booted = target.rss()
            if args.kill:
                await asyncio.sleep(20)
                target.stop(kill=True)
                target.start()
        elif "saturated_begin" in message:
            cpu_begin, db_begin = target.cpu_s(), database_cpu_s()
        elif "saturated_end" in message:
            server_cpu, db_cpu = target.cpu_s() - cpu_begin, database_cpu_s() - db_begin
        elif "result" in message:
            figures = message["result"]
    await load.wait()
    sat = figures.get("saturated")
    if sat and server_cpu is not None and sat.get("calls"):
        sat["server_us_per_call"] = server_cpu / sat["calls"] * 1e6
        sat["server_cpu_s"] = server_cpu
        if target.pg_name and db_cpu is not None and sat.get("load_s"):
            sat["db_cores"] = db_cpu / sat["load_s"]  # PostgreSQL's own processes
    if rss_booted is not None and args.chargers:
        figures["rss_kb_per_station"] = (rss_booted - rss_before) / 1024 / args.chargers
    answered = figures.pop("answered", {})
    if args.kill and target.cocharge:
        stored = await target.persisted()
        figures["lost"] = sum(max(0, n - stored.get(sid, 0)) for sid, n in answered.items())
        figures["answered_total"] = sum(answered.values())
    await target.cleanup()
    return figures


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nFleet benchmark: {args.chargers} chargers, paced {args.paced:g} s, "
          f"saturated {args.saturated} chargers x {args.saturated_s:g} s, "
          f"{args.samples} sampled value{'s' if args.samples != 1 else ''} per MeterValues "
          f"(OCPP {args.protocol}) "
          f"({os.cpu_count()} cores, load generator on the same machine)")
    header = (f"{'target':<14}{'storm s':>9}{'booted':>8}{'503':>6}{'failed':>8}"
              f"{'paced p50':>11}{'p99 ms':>9}{'sat. /s':>10}{'sat p99':>9}{'µs/call':>9}"
              f"{'gen. CPU':>9}{'DB CPU':>8}{'KB/stn':>8}")
    print(header)
    for name, f in results.items():
        sat = f.get("saturated") or {}
        generator = (sat["load_cpu_s"] / sat["load_s"] * 100
                     if sat.get("load_s") else None)  # % of one core
        print(f"{name:<14}{_num(f.get('storm_s'), 9, 1)}{f.get('booted', 0):>8}"
              f"{f.get('refused', 0):>6}{f.get('failed', 0):>8}"
              f"{_num(f.get('paced_p50_ms'), 11, 1)}{_num(f.get('paced_p99_ms'), 9, 1)}"
              f"{_num(sat.get('calls_per_s'), 10, 0)}{_num(sat.get('p99_ms'), 9, 1)}"
              f"{_num(sat.get('server_us_per_call'), 9, 0)}{_num(generator, 8, 0)}%"
              f"{(_num(sat['db_cores'] * 100, 7, 0) + '%') if 'db_cores' in sat else '       -'}"
              f"{_num(f.get('rss_kb_per_station'), 8, 1)}")
        if args.kill:
            print(f"{'':<10}killed and restarted: all {f.get('back')} back after "
                  f"{_num(f.get('back_s'), 0, 1).strip()} s; answered MeterValues "
                  f"{f.get('answered_total')}, lost {f.get('lost')}")
    if "postgres" in results and "postgres-w2" in results:
        print(f"postgres --workers 2 / 1 worker: saturated calls/s x"
              f"{_ratio((results['postgres-w2'].get('saturated') or {}).get('calls_per_s'), (results['postgres'].get('saturated') or {}).get('calls_per_s'))}")
    for name in ("sqlite", "postgres"):
        if name not in results:
            continue
        mine = results[name]
        for ref in ("echo", "naive"):
            if ref not in results:
                continue
            other = results[ref]
            storm = _ratio(mine.get("storm_s"), other.get("storm_s"))
            sat = _ratio((mine.get("saturated") or {}).get("calls_per_s"),
                         (other.get("saturated") or {}).get("calls_per_s"))
            print(f"{name} / {ref}: storm time x{storm}, saturated calls/s x{sat}")


def _num(value: Any, width: int, digits: int) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return f"{'-':>{width}}"
    return f"{value:>{width}.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def median_figures(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One target's figures over its rounds: each number the median of its rounds' (the
    rounds of every target interleaved, so that a slow minute of a shared machine is spread
    over all of them, not charged to one)."""
    def merge(values: list[Any]) -> Any:
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, dict) for v in present):
            keys = {k for v in present for k in v}
            return {k: merge([v.get(k) for v in present]) for k in keys}
        if present and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in present):
            return statistics.median(present)
        return present[-1] if present else None
    merged: dict[str, Any] = merge(list(rounds))
    return merged


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    rounds: dict[str, list[dict[str, Any]]] = {}
    names = []
    for name in args.targets.split(","):
        names.append(name)
        if args.baseline and name in ("sqlite", "postgres", "postgres-w2"):
            names.append(f"{name}@base")
    for round_no in range(1, args.rounds + 1):
        for name in names:
            target = Target(name, args.chargers, args.saturated, args.baseline)
            try:
                figures = await drive(target, args)
            finally:
                await target.cleanup()
            rounds.setdefault(name, []).append(figures)
            label = f"{name} (round {round_no})" if args.rounds > 1 else name
            print(f"{label}: {json.dumps(figures)}", flush=True)
            await asyncio.sleep(2)
    results = {name: median_figures(each_round) for name, each_round in rounds.items()}
    report(results, args)
    if args.rounds > 1:
        print(f"medians of {args.rounds} rounds; server µs/call by round:")
        for name, each_round in rounds.items():
            each = [(f.get("saturated") or {}).get("server_us_per_call") for f in each_round]
            print(f"  {name:<14}" + " ".join(_num(v, 5, 0) for v in each))
        # The two targets of a round ran one after the other: their ratio is less at the
        # mercy of the machine's drift (10-25 % from one half hour to the next) than the
        # ratio of the medians.
        for one, two in (("postgres", "postgres-w2"), ("postgres@base", "postgres-w2@base")):
            if one in rounds and two in rounds:
                ratios = [b / a for f1, f2 in zip(rounds[one], rounds[two], strict=True)
                          if (a := (f1.get("saturated") or {}).get("calls_per_s"))
                          and (b := (f2.get("saturated") or {}).get("calls_per_s"))]
                if ratios:
                    print(f"{two} / {one}, saturated calls/s by round: "
                          + " ".join(f"x{r:.2f}" for r in ratios)
                          + f" (median x{statistics.median(ratios):.2f})")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "load", "echo", "echo-picows"])
    parser.add_argument("--targets", default="echo,naive,sqlite,postgres")
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--paced", type=float, default=60.0)
    parser.add_argument("--storm-limit", type=float, default=300.0)
    parser.add_argument("--saturated", type=int, default=50)
    parser.add_argument("--saturated-s", type=float, default=10.0)
    parser.add_argument("--client", choices=["lean", "websockets"], default="lean",
                        help="the chargers' client: frames built by hand (default), or the "
                             "`websockets` client (~45 µs of the generator's CPU a call)")
    parser.add_argument("--samples", type=int, default=1,
                        help="sampled values per saturated MeterValues (1: the energy register; "
                             "9: a three-phase wallbox's energy, power, currents, voltages, SoC)")
    parser.add_argument("--protocol", choices=["1.6", "2.0.1"], default="1.6",
                        help="the saturated chargers' OCPP version (the lean client's)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the targets in turn this many times; report the medians")
    parser.add_argument("--baseline", metavar="DIR",
                        help="another checkout of cocharge (git worktree add DIR COMMIT): each "
                             "cocharge target also runs from it, in turn with this one")
    parser.add_argument("--kill", action="store_true")
    parser.add_argument("--kill-wait", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="F", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.protocol != "1.6" and args.client != "lean":
        parser.error("--protocol 2.0.1 is the lean client's (leave out --client websockets)")
    if args.kill and args.targets == parser.get_default("targets"):
        args.targets = "sqlite,postgres"
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.mode == "load":
        try:  # the generator on the loop the server runs on: less of the cores it shares
            import uvloop
        except ImportError:
            asyncio.run(run_load(arguments))
        else:
            uvloop.run(run_load(arguments))
    elif arguments.mode == "echo":
        asyncio.run(echo_server(arguments.port))
    elif arguments.mode == "echo-picows":
        picows_echo_server(arguments.port)
    else:
        asyncio.run(main(arguments))
