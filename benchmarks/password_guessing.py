"""A normal charger's latency while another address guesses passwords as fast as it can.

    .venv/bin/python benchmarks/password_guessing.py [--seconds 20] [--guessers 32]

Runs the gateway (SQLite) in a child process twice: with the throttling of
`cocharge/gateway/guard.py` as configured by default, and with it switched off (every
guess gets its scrypt check, as before issue 13). In each run a 1.6 charger on 127.0.0.1
sends MeterValues every 50 ms during a quiet phase and then while `--guessers` parallel
connections from 127.0.0.2 try distinct wrong passwords for a registered station. Prints the
charger's p50/p99/max latency in both phases, the guesses answered per second, and how many
of them cost a password check (401) or were refused unchecked (429).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVE = """
import asyncio, sys
from cocharge.config import GatewaySettings
from cocharge.node import running_node
off = sys.argv[3] == "off"
unlimited = dict(auth_station_free=10**9, auth_station_lockout=10**9,
                 auth_address_free=10**9, auth_address_lockout=10**9) if off else {}
settings = GatewaySettings(host="127.0.0.1", port=int(sys.argv[2]), operator_port=0, api_port=None,
                           upload_port=0, **unlimited)
async def main():
    async with running_node(sys.argv[1], settings):
        print("ready", flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def prepare(db: str) -> None:
    from cocharge.stations import registry
    from cocharge.store.db import open_store

    engine = await open_store(db)
    try:
        await registry.add_station(engine, registry.NewStation("NORMAL"))
        await registry.add_station(engine, registry.NewStation("TARGET", password="the-right-one-16"))
    finally:
        await engine.dispose()


async def charger(url: str, phase: dict[str, str], latencies: dict[str, list[float]],
                  stop: asyncio.Event) -> None:
    async with connect(f"{url}/NORMAL", subprotocols=[Subprotocol("ocpp1.6")]) as ws:
        await ws.send(json.dumps([2, "b", "BootNotification", {"chargePointVendor": "v",
                                                               "chargePointModel": "m"}]))
        await ws.recv()
        n = 0
        while not stop.is_set():
            n += 1
            frame = [2, f"m{n}", "MeterValues", {"connectorId": 1, "meterValue": [
                {"timestamp": "2026-11-01T10:00:00Z", "sampledValue": [{"value": str(n)}]}]}]
            began = time.perf_counter()
            await ws.send(json.dumps(frame))
            await ws.recv()
            latencies[phase["now"]].append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(0.05)


async def guesser(url: str, n: int, counts: dict[str, int], stop: asyncio.Event) -> None:
    attempt = 0
    while not stop.is_set():
        attempt += 1
        token = base64.b64encode(f"TARGET:guess-{n}-{attempt}".encode()).decode()
        try:
            ws = await connect(f"{url}/TARGET", subprotocols=[Subprotocol("ocpp1.6")],
                               additional_headers={"Authorization": f"Basic {token}"},
                               local_addr=("127.0.0.2", 0), open_timeout=30)
            await ws.close()
            counts["admitted"] += 1
        except InvalidStatus as refused:
            counts[str(refused.response.status_code)] = counts.get(
                str(refused.response.status_code), 0) + 1
        except (OSError, TimeoutError):
            counts["error"] += 1
            await asyncio.sleep(0.1)


def start_gateway(db: str, port: int, throttle: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SERVE, db, str(port), throttle],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT)


async def one_run(throttle: str, seconds: float, guessers: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="cocharge-guess-")
    db = os.path.join(tmp, "bench.db")
    await prepare(db)
    port = free_port()
    server = start_gateway(db, port, throttle)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        url = f"ws://127.0.0.1:{port}/ocpp"
        phase = {"now": "quiet"}
        latencies: dict[str, list[float]] = {"quiet": [], "guessing": []}
        stop_charger = asyncio.Event()
        normal = asyncio.create_task(charger(url, phase, latencies, stop_charger))
        await asyncio.sleep(seconds / 2)
        phase["now"] = "guessing"
        began = time.perf_counter()
        # The guessing runs in a process of its own: its work does not slow the measurement.
        guessing = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--guess", url, "--guessers", str(guessers),
            "--seconds", str(seconds), stdout=asyncio.subprocess.PIPE)
        out, _ = await guessing.communicate()
        elapsed = time.perf_counter() - began
        counts = json.loads(out)
        stop_charger.set()
        await normal
    finally:
        server.terminate()
        server.wait(10)
    guesses = sum(v for k, v in counts.items() if k != "error")
    return {"throttle": throttle, "latencies": latencies, "counts": counts,
            "guesses_per_s": guesses / elapsed}


def line(result: dict[str, Any]) -> str:
    quiet, busy = result["latencies"]["quiet"], result["latencies"]["guessing"]
    counts = result["counts"]
    return (f"{result['throttle']:>9} | {pct(quiet, .5):6.1f} {pct(quiet, .99):7.1f} | "
            f"{pct(busy, .5):6.1f} {pct(busy, .99):7.1f} {max(busy or [0]):7.1f} | "
            f"{result['guesses_per_s']:8.1f} | {counts.get('401', 0):6d} "
            f"{counts.get('429', 0):7d} {counts['admitted']:4d} {counts['error']:4d}")


async def guess(url: str, guessers: int, seconds: float) -> None:
    counts = {"admitted": 0, "error": 0}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(guesser(url, n, counts, stop)) for n in range(guessers)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    print(json.dumps(counts))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--guessers", type=int, default=32)
    parser.add_argument("--guess", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.guess:
        await guess(args.guess, args.guessers, args.seconds)
        return
    results = [await one_run(mode, args.seconds, args.guessers) for mode in ("on", "off")]
    print(f"normal charger latency (ms) while {args.guessers} connections from another "
          f"address guess passwords for {args.seconds:g} s")
    print("throttle  | quiet p50     p99 | guessing p50 p99     max | guesses/s |   401s    429s   ok  err")
    for result in results:
        print(line(result))


if __name__ == "__main__":
    asyncio.run(main())
