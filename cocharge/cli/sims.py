"""Simulated wallboxes and the demo."""

from __future__ import annotations

import asyncio
import signal

import click
from websockets.exceptions import InvalidHandshake

from cocharge.cli.common import FiniteRange, fail
from cocharge.simulators.fleet import run_fleet

# --- simulators and demo --------------------------------------------------------------------

@click.group()
def sim() -> None:
    """Virtual wallboxes and EVs."""


@sim.command("run")
@click.option("--url", required=True, help="Gateway URL, e.g. ws://127.0.0.1:9000/ocpp")
@click.option("--stations", default=1, show_default=True, type=click.IntRange(1, 10000))
@click.option("--protocol", default="1.6", show_default=True, type=click.Choice(["1.6", "2.0.1", "2.1"]))
@click.option("--id-prefix", default="SIM", show_default=True)
@click.option("--tag", default=None, help="idTag the virtual drivers present.")
@click.option("--sessions", "sessions_count", default=1, show_default=True, type=click.IntRange(0, 1000))
@click.option("--energy-kwh", default=5.0, show_default=True, type=FiniteRange(0.1, 200))
@click.option("--speed", default=60.0, show_default=True, type=FiniteRange(1, 3600),
              help="Simulated seconds per real second.")
@click.option("--max-power-kw", default=11.0, show_default=True, type=FiniteRange(4.2, 350),
              help="What each wallbox's hardware delivers at most (3 phases): give the "
                   "station's registered maximum, or its sessions are flagged as misreads.")
@click.option("--password", help="Basic-auth password of every simulated station.")
@click.option("--stay", is_flag=True, help="Keep the stations connected after their sessions, "
              "answering `cocharge remote` commands, until Ctrl-C or SIGTERM.")
def sim_run(url: str, stations: int, protocol: str, id_prefix: str, tag: str | None,
            sessions_count: int, energy_kwh: float, speed: float, max_power_kw: float,
            password: str | None, stay: bool) -> None:
    """Run N virtual wallboxes, each charging K sessions, then exit (or --stay)."""
    if not url.startswith(("ws://", "wss://")):
        fail(f"--url {url!r}: the gateway's WebSocket URL, e.g. ws://127.0.0.1:9000/ocpp")

    async def run() -> int:
        leave = asyncio.Event() if stay else None
        if leave is not None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, leave.set)

        def charged(station_id: str, done: int) -> None:
            if stay:
                click.echo(f"{station_id}: {done} session(s) completed; staying connected "
                           "(Ctrl-C to leave)")

        return await run_fleet(url, stations, protocol, id_prefix, tag, sessions_count,
                               energy_kwh * 1000, speed, password, leave, charged,
                               max_power_kw * 1000, said=click.echo)

    try:
        done = asyncio.run(run())
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        fail(f"cannot reach the gateway at {url}: {exc or type(exc).__name__}")
        raise
    click.echo(f"{done} sessions completed on {stations} stations")


@click.command()
@click.option("--stations", default=6, show_default=True, type=click.IntRange(4, 50))
def demo(stations: int) -> None:
    """A gateway, simulated wallboxes (both protocols) and real sessions, then a report."""
    # the demo starts a whole gateway and simulators: imported for `demo` alone
    from cocharge.demo import run_demo

    asyncio.run(run_demo(stations))
