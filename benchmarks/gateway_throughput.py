"""Gateway throughput: persisted MeterValues per second, latency, memory per idle connection.

Starts `cocharge serve` in its own process on a temporary SQLite (or --db), and N
stations in a second process that send MeterValues back to back (each waits for its
answer, as a charger does). Prints calls/s, p50/p99 latency and server RSS per idle
connection. Budget (issue 2): >= 2,000 MeterValues/s with 50 stations; <= 30 KB/idle conn.

    python benchmarks/gateway_throughput.py [--stations 50] [--seconds 10] [--idle 1000]
        [--mqtt mqtt://127.0.0.1:1883]    # with the MQTT bridge: every station published

With --mqtt the stations belong to property "bench", so their status, meter (rate-limited)
and session messages go to the broker while the load runs; a broker that is down (e.g.
--mqtt mqtt://127.0.0.1:1) shows that OCPP does not wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

import psutil
from websockets.asyncio.client import connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, db: str) -> None:
    subprocess.run([sys.executable, "-m", "cocharge.cli", *args, "--db", db], check=True,
                   capture_output=True)


async def _station(url: str, sid: str, seconds: float, latencies: list[float]) -> int:
    async with connect(f"{url}/{sid}", subprotocols=["ocpp1.6"], compression=None) as ws:
        async def call(n: int, action: str, payload: dict) -> list:
            await ws.send(json.dumps([2, str(n), action, payload]))
            return json.loads(await ws.recv())

        await call(0, "BootNotification", {"chargePointVendor": "b", "chargePointModel": "b"})
        start = await call(1, "StartTransaction", {"connectorId": 1, "idTag": "BENCH",
                                                   "meterStart": 0, "timestamp": "2026-11-01T00:00:00Z"})
        tx = start[2]["transactionId"]
        n, register, end = 2, 0, time.monotonic() + seconds
        while time.monotonic() < end:
            register += 10
            t0 = time.perf_counter()
            answer = await call(n, "MeterValues", {"connectorId": 1, "transactionId": tx, "meterValue": [
                {"timestamp": "2026-11-01T00:00:01Z", "sampledValue": [
                    {"value": str(register), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                    {"value": "7000", "measurand": "Power.Active.Import", "unit": "W"}]}]})
            latencies.append(time.perf_counter() - t0)
            assert answer[0] == 3, answer
            n += 1
        return n - 2


def load_process(url: str, stations: int, seconds: float, queue: multiprocessing.Queue) -> None:
    async def main() -> None:
        latencies: list[float] = []
        t0 = time.monotonic()
        counts = await asyncio.gather(*(_station(url, f"B{i:04d}", seconds, latencies)
                                        for i in range(stations)))
        queue.put((sum(counts), time.monotonic() - t0, latencies))

    asyncio.run(main())


def idle_process(url: str, count: int, ready: multiprocessing.Event, release: multiprocessing.Event) -> None:
    async def main() -> None:
        sockets = []
        for i in range(count):
            ws = await connect(f"{url}/IDLE{i:05d}", subprotocols=["ocpp1.6"], compression=None)
            sockets.append(ws)
        ready.set()
        while not release.is_set():
            await asyncio.sleep(0.1)
        for ws in sockets:
            await ws.close()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--db", default=None, help="database URL (default: a temporary SQLite)")
    parser.add_argument("--mqtt", default=None, help="broker URL for the MQTT bridge (default: none)")
    args = parser.parse_args()
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="cocharge-bench-"), "bench.db")
    cli("db", "init", db=db)
    for i in range(args.stations):
        cli("station", "add", f"B{i:04d}", db=db)
        if args.mqtt:
            cli("split", "set", f"B{i:04d}", "--model", "property", "--property", "bench",
                "--operator", "bench-op", db=db)
    cli("member", "add", "bench", "--tag", "BENCH", db=db)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cocharge.cli", "serve", "--host", "127.0.0.1",
                               "--port", str(port), "--operator-port", "0", "--no-api", "--db", db,
                               *(["--mqtt", args.mqtt] if args.mqtt else [])],
                              stdout=subprocess.PIPE, text=True)
    counter = None
    if args.mqtt and shutil.which("mosquitto_sub"):
        where = urlsplit(args.mqtt)
        counter = subprocess.Popen(["mosquitto_sub", "-h", where.hostname or "127.0.0.1",
                                    "-p", str(where.port or 1883), "-t", "cocharge/v1/bench/#"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()
        url = f"ws://127.0.0.1:{port}/ocpp"
        proc = psutil.Process(server.pid)

        queue: multiprocessing.Queue = multiprocessing.Queue()
        loader = multiprocessing.Process(target=load_process, args=(url, args.stations, args.seconds, queue))
        loader.start()
        calls, elapsed, latencies = queue.get()
        loader.join()
        latencies.sort()
        print(f"stations: {args.stations}, duration: {elapsed:.1f} s, database: {db}")
        print(f"MeterValues persisted: {calls} -> {calls / elapsed:,.0f} calls/s")
        print(f"latency p50 {statistics.median(latencies) * 1000:.2f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.2f} ms")
        if counter is not None:
            time.sleep(1)
            counter.terminate()
            received = len(counter.communicate(timeout=10)[0].splitlines())
            print(f"MQTT messages a subscriber received during the run: {received}")

        if args.idle > 0:
            time.sleep(1)
            before = proc.memory_info().rss
            ready, release = multiprocessing.Event(), multiprocessing.Event()
            idler = multiprocessing.Process(target=idle_process,
                                            args=(url, args.idle, ready, release))
            idler.start()
            ready.wait(120)
            time.sleep(2)
            after = proc.memory_info().rss
            release.set()
            idler.join()
            print(f"idle connections: {args.idle}, server RSS {before / 2**20:.1f} -> "
                  f"{after / 2**20:.1f} MiB: {(after - before) / args.idle / 1024:.1f} KB per "
                  "idle connection")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
