"""`--workers 2` against one worker, both running at once, in short alternating windows.

Issue 32 asks `cocharge serve --workers 2` for 1.5x the saturated calls/s of one worker on
this 2-core machine, the load generator on the same machine. benchmarks/fleet.py measures
the two one after the other, 10 s each: on a shared machine their ratio then moves from
x1.0 to x2.0 from one round to the next (another tenant's load lands on one of them). Here
both servers run at the same time on PostgreSQL, each with its own database and its own
saturated chargers from one load process, and take turns of `--window` seconds (A B B A,
so that a drift falls on both alike): the load is on one while the other idles. Each pair
of windows gives a ratio; their median is the figure, printed beside each window's server
CPU per call, the load generator's CPU and PostgreSQL's.

    python benchmarks/workers_paired.py [--saturated 200] [--window 3] [--pairs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

from fleet import (  # this folder's fleet.py: the targets and the lean chargers
    Target,
    _LeanCharger,
    _LeanRun,
    database_cpu_s,
    lean_connect,
    raise_nofile,
)

_BOOT = (b'[2,"b","BootNotification",{"chargePointVendor":"bench",'
         b'"chargePointModel":"sat"}]')


async def run_load(args: argparse.Namespace) -> None:
    """The load process: `--saturated` chargers on each URL, saturated in turns as the driver
    says (a line on stdin: the name of the side, or "end")."""
    import gc
    gc.disable()  # (as fleet.py's load: its own collector's passes are not the servers')
    raise_nofile()
    sides: dict[str, list[_LeanCharger]] = {}
    idle = _LeanRun(0)
    idle.end = 0.0  # between turns a charger sends nothing, whatever it is sent
    for side, url in zip(("one", "two"), args.urls.split(","), strict=True):
        made = []
        for n in range(args.saturated):
            charger = await lean_connect(url, f"S{n:05d}", 60, _LeanCharger, sat=idle)
            charger.send_frame(_BOOT)
            made.append(charger)
        for charger in made:
            await charger.recv()  # booted
        sides[side] = made
    print(json.dumps({"ready": True}), flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (side := (await reader.readline()).decode().strip()) in sides:
        run = _LeanRun(args.window)
        for charger in sides[side]:
            charger.sat, charger.count = run, 0
        start, cpu = time.monotonic(), time.process_time()
        run.begin(sides[side])
        await run.finished
        took, cpu = time.monotonic() - start, time.process_time() - cpu
        for charger in sides[side]:
            charger.sat = idle
        print(json.dumps({"side": side, "calls": sum(c.count for c in sides[side]),
                          "seconds": took, "load_cpu_s": cpu}), flush=True)
    for made in sides.values():
        for charger in made:
            await charger.close()


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    targets = {"one": Target("postgres", 0, args.saturated),
               "two": Target("postgres-w2", 0, args.saturated)}
    try:
        for target in targets.values():
            await target.prepare()
            target.start()
        await asyncio.sleep(2)
        urls = ",".join(f"ws://127.0.0.1:{t.port}/ocpp" for t in targets.values())
        load = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "load", "--urls", urls, "--saturated",
            str(args.saturated), "--window", str(args.window),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert load.stdin is not None and load.stdout is not None
        assert json.loads(await load.stdout.readline()).get("ready")
        windows: dict[str, list[dict[str, float]]] = {"one": [], "two": []}
        for pair in range(args.pairs):
            for side in (("one", "two") if pair % 2 == 0 else ("two", "one")):
                server, db = targets[side].cpu_s(), database_cpu_s()
                load.stdin.write(f"{side}\n".encode())
                await load.stdin.drain()
                done = json.loads(await load.stdout.readline())
                server, db = targets[side].cpu_s() - server, database_cpu_s() - db
                windows[side].append({"calls_per_s": done["calls"] / done["seconds"],
                                      "us_per_call": server / max(1, done["calls"]) * 1e6,
                                      "gen": done["load_cpu_s"] / done["seconds"],
                                      "db": db / done["seconds"]})
                await asyncio.sleep(0.5)  # the side that ran settles (its commits) first
        load.stdin.write(b"end\n")
        await load.stdin.drain()
        await load.wait()
    finally:
        for target in targets.values():
            await target.cleanup()
    report(windows, args)


def report(windows: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    print(f"\n--workers 2 against 1 worker, at once, in turns of {args.window:g} s "
          f"({args.pairs} pairs, {args.saturated} saturated chargers each, PostgreSQL; "
          f"{os.cpu_count()} cores, the load generator on the same machine)")
    print(f"{'':<12}{'calls/s':>10}{'µs/call':>9}{'gen. CPU':>10}{'DB CPU':>8}  (medians)")
    for side, label in (("one", "1 worker"), ("two", "2 workers")):
        each = windows[side]
        print(f"{label:<12}{statistics.median(w['calls_per_s'] for w in each):>10.0f}"
              f"{statistics.median(w['us_per_call'] for w in each):>9.0f}"
              f"{statistics.median(w['gen'] for w in each) * 100:>9.0f}%"
              f"{statistics.median(w['db'] for w in each) * 100:>7.0f}%")
    ratios = [two["calls_per_s"] / one["calls_per_s"]
              for one, two in zip(windows["one"], windows["two"], strict=True)]
    print("2 workers / 1 worker by pair: " + " ".join(f"x{r:.2f}" for r in ratios))
    print(f"median x{statistics.median(ratios):.2f}; of all windows' calls x"
          f"{sum(w['calls_per_s'] for w in windows['two']) / sum(w['calls_per_s'] for w in windows['one']):.2f}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "load"])
    parser.add_argument("--saturated", type=int, default=200,
                        help="saturated chargers on each server")
    parser.add_argument("--window", type=float, default=3.0, help="seconds of one turn")
    parser.add_argument("--pairs", type=int, default=10, help="turns of each server")
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.saturated < 1 or args.window <= 0 or args.pairs < 1:
        parser.error("--saturated, --window and --pairs: more than 0")
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.mode == "load":
        import uvloop  # the load on the loop the servers run on, as fleet.py's
        uvloop.run(run_load(arguments))
    else:
        asyncio.run(main(arguments))
