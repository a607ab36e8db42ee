"""Cluster benchmark (issue 32, item 7): HAProxy in front of two gateway nodes on one
PostgreSQL and one Mosquitto; a storm of N chargers through the balancer, paced MeterValues,
one load-managed site of S simulated chargers spread over both nodes; then SIGKILL of the
node that allocates the site.

    python benchmarks/cluster.py [--chargers 20000] [--site 200] [--paced 60] [--lease 15]
        [--saturated-s 10] [--balancers N] [--node-workers N]

It prints: the storm (time until every charger booted through the balancer, handshakes
refused and failed); after the kill, the time until the dead node's stations are shown
offline, until the site is allocated by the other node, and until every charger cut off is
back through the balancer; answered MeterValues lost (must be 0); the site's meter readings
over its limit (must be 0) and its peak; sessions settled exactly once; then saturated
calls/s and server CPU µs per call with 1 and 2 workers (benchmarks/fleet.py's
`postgres` and `postgres-w2` targets, 200 chargers back to back: 50 leave each of two
workers idle while it waits for its commit; the load generator in its own process, its CPU
printed).

Needs haproxy and mosquitto (Debian packages: installed when missing, as root, as the tests
do) and the PostgreSQL of COCHARGE_TEST_PG.

Every process lives within a hard open-files limit (20,000 here, without CAP_SYS_RESOURCE
to raise it): one HAProxy process holds half as many chargers (two descriptors per
connection), one node as many. So the run takes as many HAProxy processes on the one port
(SO_REUSEPORT, HAProxy's default on Linux: the kernel deals the connections out among them;
to a charger it is one address) and as many workers per node (`serve --workers N`, each a
process) as the storm needs, the chargers from as many load processes as they need: for
20,000 here, 3 HAProxy processes and 2 workers per node (`--balancers`, `--node-workers`
choose; a storm that does not fit is cut, and says so). The kill then takes the whole
machine of the node that allocates the site: its `serve` and all its workers.

Each HAProxy process runs one thread (`nbthread 1`): with its default of a thread per
core, three processes' six threads spun on their locks whenever the nodes and the load took
the cores, 1.3-1.45 cores of the two while the survivor took over 9,500 chargers, and it
never finished; with one thread each they take 10-20 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from fleet import PG, free_port, raise_nofile, register  # noqa: E402

SITE_LIMIT_A = 10.0  # per site charger: the circuit is sized for 10 A each, they want 16


def balancer_room(hard_limit: int) -> int:
    """Connections one HAProxy process can hold within the open-files limit (two
    descriptors each)."""
    return min(100_000, (hard_limit - 500) // 2 - 50)


def balancers_hold(processes: int, hard_limit: int) -> int:
    """Connections `processes` HAProxy processes on one port hold: the kernel deals them out
    by a hash, not evenly, so each is given room for 15 % more than its share."""
    if processes == 1:
        return balancer_room(hard_limit) - 200
    return processes * balancer_room(hard_limit) * 100 // 115


def workers_hold(workers: int, hard_limit: int) -> int:
    """Chargers the surviving node's `workers` hold (one descriptor each, beside the
    database's, the broker's and the listening sockets; dealt out by the kernel's hash)."""
    if workers == 1:
        return hard_limit - 800
    return workers * (hard_limit - 800) * 100 // 115


# Chargers per load process (one descriptor each, within any limit seen here).
PER_LOADER = 9000


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def charger_ids(loader: int, count: int) -> list[str]:
    return [f"F{loader}{n:05d}" for n in range(count)]


def processes_of(pid: int) -> set[str]:
    """A process and its children (a node's `serve` and its workers), as pid texts."""
    found = {str(pid)}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[1] == str(pid):
                    found.add(entry)
    return found


def binary(name: str) -> str:
    """The server's binary; on a machine without it, installed from Debian's package of that
    name as the tests do (as root; otherwise one line saying what to install)."""

    def where() -> str | None:
        return shutil.which(name) or next(
            (p for p in (f"/usr/sbin/{name}",) if os.path.exists(p)), None)

    found = where()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{name} is not installed: apt-get install {name}", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", name], check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = where()
    if found is None:
        raise SystemExit(f"{name} is not installed: apt-get install {name}")
    return found


class Cluster:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.folder = tempfile.mkdtemp(prefix="cocharge-cluster-")
        self.pg_name = f"cocharge_cluster_{uuid.uuid4().hex[:8]}"
        base = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        self.db = f"{base}/{self.pg_name}"
        self.broker_port, self.front = free_port(), free_port()
        self.nodes: dict[str, dict[str, Any]] = {}
        self.loads = split(args.chargers, -(-args.chargers // PER_LOADER)) if args.chargers else []
        self.processes: list[subprocess.Popen[bytes]] = []

    def log(self, name: str) -> Any:
        return open(os.path.join(self.folder, f"{name}.log"), "ab")

    async def prepare(self) -> None:
        import asyncpg

        from cocharge.load import sites
        from cocharge.stations import registry
        from cocharge.store.db import make_engine

        conn = await asyncpg.connect(PG)
        await conn.execute(f'CREATE DATABASE "{self.pg_name}"')
        await conn.close()
        site = [f"C{n:04d}" for n in range(self.args.site)]
        await register(self.db, [sid for k, count in enumerate(self.loads)
                                 for sid in charger_ids(k, count)] + site)
        engine = make_engine(self.db)
        await sites.add_site(engine, "GARAGE")
        await sites.add_circuit(engine, "MAIN", "GARAGE", None, SITE_LIMIT_A * len(site), 3,
                                0.0, "none")
        for sid in site:
            await sites.attach(engine, sid, "MAIN", "L1L2L3", "fast", 16)
            await registry.add_member(engine, f"driver {sid}", f"T{sid}", None)
        await engine.dispose()

    def start_broker(self) -> None:
        config = os.path.join(self.folder, "mosquitto.conf")
        with open(config, "w") as handle:
            handle.write(f"listener {self.broker_port} 127.0.0.1\nallow_anonymous true\n"
                         "persistence false\nmax_queued_messages 100000\n")
        self.processes.append(subprocess.Popen([binary("mosquitto"), "-c", config],
                                               stdout=self.log("mosquitto"),
                                               stderr=subprocess.STDOUT))

    def start_node(self, name: str) -> None:
        port, metrics = free_port(), free_port()
        config = os.path.join(self.folder, f"{name}.toml")
        with open(config, "w") as handle:
            handle.write(f"[gateway]\nnode_lease_s = {self.args.lease}\nstart_minimum_fen = 0\n"
                         "load_period_s = 5.0\nload_reload_s = 5.0\n")
        process = subprocess.Popen([
            sys.executable, "-m", "cocharge.cli", "--config", config, "serve", "--host",
            "127.0.0.1", "--port", str(port), "--operator-port", "0", "--upload-port", "0",
            "--no-api", "--metrics-port", str(metrics), "--trusted-proxy", "127.0.0.1",
            "--mqtt", f"mqtt://127.0.0.1:{self.broker_port}/cocharge/v1", "--db", self.db,
            *(["--workers", str(self.args.node_workers)] if self.args.node_workers > 1 else [])],
            stdout=self.log(name), stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: a machine's node, killed whole
        self.processes.append(process)
        self.nodes[name] = {"port": port, "metrics": metrics, "process": process}

    def start_haproxy(self, processes: int) -> None:
        """`processes` HAProxy processes on the front port (SO_REUSEPORT), one config."""
        config = os.path.join(self.folder, "haproxy.cfg")
        servers = "\n".join(
            f"    server {name} 127.0.0.1:{n['port']} check port {n['metrics']}"
            for name, n in self.nodes.items())
        with open(config, "w") as handle:
            handle.write(f"""global
    maxconn {balancer_room(resource.getrlimit(resource.RLIMIT_NOFILE)[1])}
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    timeout tunnel 10m
frontend ocpp
    bind 127.0.0.1:{self.front}
    use_backend nodes if {{ nbsrv(nodes) gt 0 }}
    default_backend nodes_alive
backend nodes
    balance leastconn
    option httpchk GET /healthz
    retries 2
    option redispatch 1
    timeout check 4s
    default-server send-proxy-v2 inter 1s fall 2 rise 2
{servers}
backend nodes_alive
    # deploy/haproxy.cfg's: when every node failed its check, those that accept a connection
    balance leastconn
    retries 2
    option redispatch 1
    default-server send-proxy-v2 inter 1s fall 1 rise 1
{servers}
""")
        for n in range(processes):
            self.processes.append(subprocess.Popen([binary("haproxy"), "-f", config, "-db"],
                                                   stdout=self.log(f"haproxy{n}"),
                                                   stderr=subprocess.STDOUT))

    async def wait_listening(self) -> None:
        import socket

        for port in [self.broker_port, self.front, *(n["port"] for n in self.nodes.values())]:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"nothing listens on {port}: see {self.folder}")
                    await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # the balancer's health checks see both nodes up

    async def query(self, sql: str, *args: Any) -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(PG.rsplit("/", 1)[0] + "/" + self.pg_name)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(20)
            if process.poll() is None:
                process.kill()

    async def cleanup(self) -> None:
        import asyncpg

        self.stop()
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(PG)
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            await conn.close()
        if os.environ.get("CLUSTER_KEEP"):
            print(f"logs kept in {self.folder}")
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


# --- the site's chargers (their own process) --------------------------------------------------

async def run_site(args: argparse.Namespace) -> None:
    """Open S simulated chargers through the balancer, charge, and check the site's draw at
    every meter value any of them sends; a line on stdin ends the sessions."""
    raise_nofile()
    from cocharge.simulators.hardware import EV
    from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox

    limit = SITE_LIMIT_A * args.site
    boxes: list[tuple[Any, Any]] = []
    leave = asyncio.Event()  # each charger reconnects through the balancer until then
    keepers = []
    seen: dict[str, Any] = {"checks": 0, "over": 0, "peak": 0.0, "over_at": []}

    def check(_box: Any) -> None:
        drawn = sum(hw.current_a for box, _ in boxes for hw in box.hw.values())
        seen["checks"] += 1
        seen["peak"] = max(seen["peak"], drawn)
        if drawn > limit + 0.05:
            seen["over"] += 1
            if len(seen["over_at"]) < 50:  # when (wall clock), for the report
                seen["over_at"].append(round(time.time(), 1))

    for n in range(args.site):
        box, reader = await open_wallbox(SimConfig(
            url=args.url, station_id=f"C{n:04d}", protocol="2.0.1" if n % 2 else "1.6",
            speed=1, meter_interval_s=2.0, max_current_a=32, phases=3))
        box.meter_listeners.append(check)
        boxes.append((box, reader))
        keepers.append(asyncio.create_task(box.stay_connected(leave)))
    arriving = asyncio.Semaphore(20)  # cars arrive twenty at a time, not one by one

    async def arrive(n: int, box: Any) -> Any:
        async with arriving:
            return await box.charge(1, f"TC{n:04d}", ev=EV(battery_wh=500_000, soc=0.1,
                                                           max_power_w=22_000))

    sessions = await asyncio.gather(*(arrive(n, box) for n, (box, _) in enumerate(boxes)))
    print(json.dumps({"charging": len(sessions)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for (box, _), session in zip(boxes, sessions, strict=True):
        box.request_stop(session.tx_id, "Local")
    await asyncio.gather(*(asyncio.wait_for(s.done.wait(), 60) for s in sessions),
                         return_exceptions=True)
    leave.set()
    print(json.dumps({"site": {**seen, "limit_a": limit,
                               "ended": sum(1 for s in sessions if s.done.is_set())}}), flush=True)
    for box, reader in boxes:
        with contextlib.suppress(Exception):
            await close_wallbox(box, reader)


# --- the run ---------------------------------------------------------------------------------

async def lines(process: asyncio.subprocess.Process) -> Any:
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        if not line:
            return
        with contextlib.suppress(ValueError):
            yield json.loads(line)


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    # After the kill, the surviving node holds every charger, a descriptor each, besides its
    # database, broker and listening sockets: on a machine whose hard open-files limit is
    # below that (20,000 here, without CAP_SYS_RESOURCE to raise it) the storm is cut to what
    # it can hold, and said so. The balancer and the load are spread over processes instead.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # Unless told, as many HAProxy processes and workers per node as the storm needs.
    if args.balancers is None:
        args.balancers = next((b for b in range(1, 17) if balancers_hold(b, hard) - args.site
                               >= args.chargers), 16)
    if args.node_workers is None:
        args.node_workers = next((w for w in range(1, 9) if workers_hold(w, hard) - args.site
                                  >= args.chargers), 8)
    balancers = args.balancers
    fits = min(balancers_hold(balancers, hard), workers_hold(args.node_workers, hard)) - args.site
    if args.chargers > fits:
        print(f"open-files limit {hard}: {balancers} HAProxy process(es) and the node that "
              f"survives can hold {fits} chargers besides the site's, not {args.chargers}: "
              f"the storm is cut to {fits}", flush=True)
        args.chargers = fits
    cluster = Cluster(args)
    figures: dict[str, Any] = {}
    try:
        await cluster.prepare()
        cluster.start_broker()
        for name in ("node1", "node2"):
            cluster.start_node(name)
        cluster.start_haproxy(balancers)
        await cluster.wait_listening()
        url = f"ws://127.0.0.1:{cluster.front}/ocpp"
        figures["balancers"], figures["loaders"] = balancers, len(cluster.loads)
        loads = [await asyncio.create_subprocess_exec(
            sys.executable, os.path.join(HERE, "fleet.py"), "load", "--url", url,
            "--prefix", f"F{k}", "--chargers", str(count), "--paced", str(args.paced),
            "--storm-limit", "600", "--saturated", "0", "--kill-wait",
            stdout=asyncio.subprocess.PIPE, limit=256 * 1024 * 1024)
            for k, count in enumerate(cluster.loads)]
        load_lines = [lines(load) for load in loads]
        booted = []  # each load process's storm: they started together, the last one counts
        for each in load_lines:
            async for message in each:
                if "booted" in message:
                    booted.append(message["booted"])
                    break
        figures["storm_s"] = max(booted) if len(booted) == len(loads) else None
        site = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "site", "--url", url, "--site", str(args.site),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        site_lines = lines(site)
        async for message in site_lines:
            if "charging" in message:
                break
        await asyncio.sleep(min(20.0, args.paced / 3))  # the site allocated, paced values flowing
        [owner] = [r["node"] for r in await cluster.query(
            "SELECT node FROM site_leases WHERE site = 'GARAGE'")]
        spread = await cluster.query(
            "SELECT node, count(*) AS n FROM stations WHERE node IS NOT NULL GROUP BY node")
        figures["spread"] = {r["node"][-6:]: r["n"] for r in spread}
        # The machine of the node that allocates the site: its serve and every worker of it.
        victim = next(n for n in cluster.nodes.values()
                      if owner.split(":")[1] in processes_of(n["process"].pid))
        victims = [r["id"] for r in await cluster.query("SELECT id FROM nodes")
                   if r["id"].split(":")[1] in processes_of(victim["process"].pid)]
        held = {r["id"] for r in await cluster.query(
            "SELECT id FROM stations WHERE node = ANY($1::text[])", victims)}
        figures["victim_held"], figures["victim_nodes"] = len(held), len(victims)
        os.killpg(victim["process"].pid, signal.SIGKILL)
        killed = time.monotonic()
        figures["killed_at"] = time.time()
        offline_s = moved_s = None
        while offline_s is None or moved_s is None:
            await asyncio.sleep(0.25)
            if offline_s is None and not await cluster.query(
                    "SELECT s.id FROM stations s JOIN nodes n ON n.id = s.node WHERE "
                    "s.node = ANY($1::text[]) AND (n.lease_until IS NULL OR "
                    "n.lease_until > now() at time zone 'utc') LIMIT 1", victims):
                offline_s = time.monotonic() - killed
            if moved_s is None:
                now_owner = await cluster.query(
                    "SELECT node FROM site_leases WHERE site = 'GARAGE'")
                if now_owner and now_owner[0]["node"] not in victims:
                    moved_s = time.monotonic() - killed
            if time.monotonic() - killed > 120:
                break
        figures["offline_s"], figures["site_moved_s"] = offline_s, moved_s
        answered: dict[str, int] = {}
        backs: list[float] = []
        for key in ("dropped", "refused", "failed", "reconnects"):
            figures[key] = 0
        figures["why"] = {}
        for each in load_lines:  # every load process's: summed, the last one back counts
            async for message in each:
                if "back" in message:
                    backs.append(message["back"])
                    figures["dropped"] += message["dropped"]
                elif "result" in message:
                    answered.update(message["result"].get("answered", {}))
                    for key in ("refused", "failed", "reconnects"):
                        figures[key] += message["result"].get(key) or 0
                    for why, n in (message["result"].get("why") or {}).items():
                        figures["why"][why] = figures["why"].get(why, 0) + n
        for load in loads:
            await load.wait()
        rows = await cluster.query(
            "SELECT station_id, count(*) AS n FROM meter_samples GROUP BY station_id")
        stored = {r["station_id"]: r["n"] for r in rows}
        figures["answered"] = sum(answered.values())
        figures["lost"] = sum(max(0, n - stored.get(sid, 0)) for sid, n in answered.items())
        figures["back_s"] = max(backs) if backs else None
        assert site.stdin is not None
        site.stdin.write(b"stop\n")
        await site.stdin.drain()
        async for message in site_lines:
            if "site" in message:
                figures["site"] = message["site"]
        await site.wait()
        await asyncio.sleep(10)  # settlement of the ended sessions
        counts = await cluster.query(
            "SELECT s.id, count(t.session_id) AS n FROM sessions s LEFT JOIN settlements t "
            "ON t.session_id = s.id WHERE s.station_id LIKE 'C%' AND s.ended_at IS NOT NULL "
            "GROUP BY s.id")
        figures["sessions_ended"] = len(counts)
        figures["settled_once"] = sum(1 for r in counts if r["n"] == 1)
    finally:
        await cluster.cleanup()
    report(figures, args)
    if args.saturated_s:
        subprocess.run([sys.executable, os.path.join(HERE, "fleet.py"), "--chargers", "0",
                        "--saturated", "200", "--saturated-s", str(args.saturated_s),
                        "--targets", "postgres,postgres-w2"], check=False)


def report(f: dict[str, Any], args: argparse.Namespace) -> None:
    def num(value: Any, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    site = f.get("site") or {}
    workers = f" of {args.node_workers} workers each" if args.node_workers > 1 else ""
    print(f"\nCluster benchmark: HAProxy ({f.get('balancers')} processes on one port), 2 nodes"
          f"{workers} (PostgreSQL, Mosquitto), {args.chargers} chargers from "
          f"{f.get('loaders')} load processes + a site of {args.site}, node lease {args.lease:g} s "
          f"({os.cpu_count()} cores, everything on this machine)")
    print(f"storm through the balancer: all booted in {num(f.get('storm_s'))} s; "
          f"stations per node {f.get('spread')}")
    machine = (f"the machine of the node allocating the site ({f.get('victim_nodes')} "
               "workers)" if args.node_workers > 1 else "the node allocating the site")
    print(f"SIGKILL of {machine} (it held {f.get('victim_held')}): its "
          f"stations shown offline after {num(f.get('offline_s'))} s, the site allocated by "
          f"the other node after {num(f.get('site_moved_s'))} s, all {f.get('dropped')} "
          f"chargers cut off back after {num(f.get('back_s'))} s ({f.get('reconnects')} "
          f"reconnections; handshakes refused 503 {f.get('refused')}, failed {f.get('failed')}"
          f"{' ' + str(f['why']) if f.get('why') else ''}, storm included)")
    print(f"answered MeterValues {f.get('answered')}, lost {f.get('lost')}")
    print(f"site limit {num(site.get('limit_a'), 0)} A: over it at {site.get('over')} of "
          f"{site.get('checks')} meter readings (peak {num(site.get('peak'))} A)")
    if site.get("over_at") and f.get("killed_at"):
        print("  over the limit at (s after the kill): " + " ".join(
            f"{t - f['killed_at']:+.1f}" for t in site["over_at"]))
    print(f"site sessions ended {f.get('sessions_ended')}, settled exactly once "
          f"{f.get('settled_once')}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "site"])
    parser.add_argument("--chargers", type=int, default=20_000)
    parser.add_argument("--site", type=int, default=200)
    parser.add_argument("--paced", type=float, default=60.0)
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--saturated-s", type=float, default=10.0,
                        help="0: skip the 1-and-2-worker saturated run")
    parser.add_argument("--balancers", type=int, choices=range(1, 17), metavar="1..16",
                        help="HAProxy processes on the one port (SO_REUSEPORT); default: as "
                        "many as the open-files limit needs for the storm")
    parser.add_argument("--node-workers", type=int, choices=range(1, 9), metavar="1..8",
                        help="`serve --workers N` on each node's machine (the kill takes the "
                        "whole machine, all its workers); default: as many as the open-files "
                        "limit needs for the surviving node to hold every charger")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    asyncio.run(run_site(arguments) if arguments.mode == "site" else main(arguments))
