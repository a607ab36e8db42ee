"""The `cocharge` command.

Exit codes: 0 ok; 2 bad arguments or a request that cannot apply (nothing written);
3 the running gateway is unreachable; 4 the station refused, is offline or did not answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from cocharge.config import GatewaySettings
from cocharge.stations import registry
from cocharge.store.db import DatabaseURLError, open_store

T = TypeVar("T")

db_option = click.option("--db", envvar="COCHARGE_DB", default=None,
                         help="Database URL or SQLite file (env COCHARGE_DB, default ./cocharge.db).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def with_store(db: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    async def run() -> T:
        try:
            engine = await open_store(db)
        except DatabaseURLError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot open database {db!r}: {exc}")
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except registry.RegistryError as exc:
        fail(str(exc))
        raise  # unreachable


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def emit(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    elif columns is not None:
        table(data, columns)
    else:
        for key, value in data.items():
            click.echo(f"{key:>16}: {value}")


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """cocharge: OCPP central system for shared EV charging."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --- serve ----------------------------------------------------------------------------------

@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=9000, show_default=True, type=click.IntRange(0, 65535))
@db_option
@click.option("--auto-register", is_flag=True, help="Admit unknown stations as Pending until approved.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate (wss://).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")
@click.option("--operator-host", default="127.0.0.1", show_default=True)
@click.option("--operator-port", default=9001, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the operator channel used by `cocharge remote`.")
@click.option("--heartbeat-interval", default=300, show_default=True, type=click.IntRange(10, 86400))
@click.option("--call-timeout", default=30.0, show_default=True, type=click.FloatRange(1, 600))
def serve(host: str, port: int, db: str | None, auto_register: bool, tls_cert: str | None,
          tls_key: str | None, operator_host: str, operator_port: int, heartbeat_interval: int,
          call_timeout: float) -> None:
    """Run the OCPP 1.6J + 2.0.1 central system."""
    from cocharge.gateway.app import serve_forever
    from cocharge.gateway.server import tls_context

    if bool(tls_cert) != bool(tls_key):
        fail("--tls-cert and --tls-key go together: give both for TLS, or neither")
    settings = GatewaySettings(host=host, port=port, auto_register=auto_register,
                               operator_host=operator_host, operator_port=operator_port,
                               heartbeat_interval_s=heartbeat_interval, call_timeout_s=call_timeout)
    tls = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
    try:
        asyncio.run(serve_forever(db, settings, tls))
    except DatabaseURLError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen: {exc}")


# --- stations -------------------------------------------------------------------------------

@main.group()
def station() -> None:
    """Register and inspect charging stations."""


@station.command("add")
@click.argument("station_id")
@click.option("--password", help="HTTP Basic password the station must present (stored hashed).")
@click.option("--owner")
@click.option("--connectors", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--max-power-kw", type=click.FloatRange(0.1, 1000))
@db_option
def station_add(station_id: str, password: str | None, owner: str | None, connectors: int,
                max_power_kw: float | None, db: str | None) -> None:
    """Register a station so that it is Accepted when it boots."""
    if "/" in station_id or not station_id.strip():
        fail(f"station id {station_id!r} must be non-empty and contain no '/'")
    if password is not None and len(password) < 8:
        fail("--password must be at least 8 characters (OCPP asks for 16 or more)")
    with_store(db, lambda e: registry.add_station(e, registry.NewStation(
        station_id, password, owner, connectors, max_power_kw)))
    click.echo(f"station {station_id} registered")


@station.command("list")
@db_option
@json_option
def station_list(db: str | None, as_json: bool) -> None:
    """All stations with admission, protocol and last contact."""
    rows = with_store(db, registry.list_stations)
    for r in rows:
        r["status"] = ", ".join(f"{k}:{v['status']}" for k, v in r["connector_status"].items())
    emit(rows, as_json, ["id", "owner", "admission", "protocol", "connectors", "max_power_kw",
                         "last_seen_at", "status"])


@station.command("show")
@click.argument("station_id")
@db_option
@json_option
def station_show(station_id: str, db: str | None, as_json: bool) -> None:
    """One station in detail."""
    emit(with_store(db, lambda e: registry.get_station(e, station_id)), as_json)


@station.command("approve")
@click.argument("station_id")
@db_option
def station_approve(station_id: str, db: str | None) -> None:
    """Accept an auto-registered (Pending) station."""
    with_store(db, lambda e: registry.approve_station(e, station_id))
    click.echo(f"station {station_id} approved: it is Accepted at its next BootNotification")


@station.command("remove")
@click.argument("station_id")
@db_option
def station_remove(station_id: str, db: str | None) -> None:
    """Unregister a station (its sessions are kept)."""
    with_store(db, lambda e: registry.remove_station(e, station_id))
    click.echo(f"station {station_id} removed")


# --- members --------------------------------------------------------------------------------

@main.group()
def member() -> None:
    """Members and their idTags."""


@member.command("add")
@click.argument("name")
@click.option("--tag", required=True, help="The member's idTag / idToken (RFID or app token).")
@click.option("--phone")
@click.option("--expires", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Date (UTC) after which the tag answers Expired.")
@db_option
def member_add(name: str, tag: str, phone: str | None, expires: datetime | None,
               db: str | None) -> None:
    """Add a member with an idTag."""
    if not 1 <= len(tag) <= 20:
        fail(f"--tag {tag!r}: an OCPP 1.6 idTag has 1 to 20 characters")
    with_store(db, lambda e: registry.add_member(e, name, tag, phone, expires))
    click.echo(f"member {name} added with tag {tag}")


@member.command("list")
@db_option
@json_option
def member_list(db: str | None, as_json: bool) -> None:
    """All members."""
    emit(with_store(db, registry.list_members), as_json,
         ["tag", "name", "phone", "status", "expires_at"])


@member.command("block")
@click.argument("tag")
@db_option
def member_block(tag: str, db: str | None) -> None:
    """Block a tag: it answers Blocked from now on."""
    with_store(db, lambda e: registry.block_member(e, tag))
    click.echo(f"tag {tag} blocked")


# --- sessions -------------------------------------------------------------------------------

@main.group()
def sessions() -> None:
    """Charging sessions."""


@sessions.command("list")
@click.option("--station", "station_id")
@db_option
@json_option
def sessions_list(station_id: str | None, db: str | None, as_json: bool) -> None:
    """Sessions in order of their start time."""
    emit(with_store(db, lambda e: registry.list_sessions(e, station_id)), as_json,
         ["id", "station", "connector", "tag", "started", "ended", "energy_wh", "status",
          "stop_reason"])


# --- remote ---------------------------------------------------------------------------------

def remote_call(db: str | None, station_id: str, command: str, args: dict[str, Any],
                as_json: bool) -> None:
    from cocharge.gateway.operator import OperatorError, send_request

    async def work(engine: Any) -> dict[str, Any]:
        return await send_request(engine, {"command": command, "station": station_id, "args": args})

    try:
        answer = with_store(db, work)
    except OperatorError as exc:
        fail(str(exc), 3)
        return
    if not answer.get("ok"):
        fail(answer.get("message", "failed"), 2 if answer.get("error") == "bad_request" else 4)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        click.echo(f"{station_id}: {answer['status']}")
        extra = {k: v for k, v in answer.get("response", {}).items() if k != "status"}
        if extra:
            click.echo(json.dumps(extra, indent=2))
    if not answer.get("accepted"):
        sys.exit(4)


@main.group()
def remote() -> None:
    """Commands to a connected station, through the running gateway (same --db)."""


def _remote(name: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
    def wrap(func: Callable[..., Any]) -> Any:
        func = json_option(db_option(click.argument("station_id")(func)))
        return remote.command(name, help=help_text)(func)
    return wrap


@_remote("start", "Remote start: RemoteStartTransaction (1.6) / RequestStartTransaction (2.0.1).")
@click.option("--tag", required=True)
@click.option("--connector", type=click.IntRange(1, 64))
def remote_start(station_id: str, tag: str, connector: int | None, db: str | None, as_json: bool) -> None:
    remote_call(db, station_id, "start", {"tag": tag, "connector_id": connector}, as_json)


@_remote("stop", "Remote stop of a session (its id in `cocharge sessions list`).")
@click.option("--session", "session_id", required=True, type=click.IntRange(1))
def remote_stop(station_id: str, session_id: int, db: str | None, as_json: bool) -> None:
    remote_call(db, station_id, "stop", {"session_id": session_id}, as_json)


@_remote("unlock", "Unlock a connector.")
@click.option("--connector", required=True, type=click.IntRange(1, 64))
def remote_unlock(station_id: str, connector: int, db: str | None, as_json: bool) -> None:
    remote_call(db, station_id, "unlock", {"connector_id": connector}, as_json)


@_remote("availability", "Set a connector (0 = whole station) operative or inoperative.")
@click.option("--connector", default=0, show_default=True, type=click.IntRange(0, 64))
@click.argument("state", type=click.Choice(["operative", "inoperative"]))
def remote_availability(station_id: str, connector: int, state: str, db: str | None,
                        as_json: bool) -> None:
    remote_call(db, station_id, "availability",
                {"connector_id": connector, "operative": state == "operative"}, as_json)


@_remote("reset", "Soft (default) or hard reset.")
@click.option("--hard", is_flag=True)
def remote_reset(station_id: str, hard: bool, db: str | None, as_json: bool) -> None:
    remote_call(db, station_id, "reset", {"hard": hard}, as_json)


@_remote("trigger", "Ask the station to send a message now (e.g. Heartbeat, StatusNotification).")
@click.argument("message")
@click.option("--connector", type=click.IntRange(1, 64))
def remote_trigger(station_id: str, message: str, connector: int | None, db: str | None,
                   as_json: bool) -> None:
    remote_call(db, station_id, "trigger", {"message": message, "connector_id": connector}, as_json)


@_remote("config-get", "Read settings: 1.6 keys, or 2.0.1 Component.Variable names.")
@click.argument("keys", nargs=-1)
def remote_config_get(station_id: str, keys: tuple[str, ...], db: str | None, as_json: bool) -> None:
    remote_call(db, station_id, "config-get", {"keys": list(keys)}, as_json)


@_remote("config-set", "Change one setting (1.6 key or 2.0.1 Component.Variable).")
@click.argument("key")
@click.argument("value")
def remote_config_set(station_id: str, key: str, value: str, db: str | None, as_json: bool) -> None:
    remote_call(db, station_id, "config-set", {"key": key, "value": value}, as_json)


@_remote("clear-cache", "Clear the station's authorization cache.")
def remote_clear_cache(station_id: str, db: str | None, as_json: bool) -> None:
    remote_call(db, station_id, "clear-cache", {}, as_json)


@_remote("data-transfer", "Vendor-specific DataTransfer.")
@click.option("--vendor", required=True)
@click.option("--message-id")
@click.option("--data")
def remote_data_transfer(station_id: str, vendor: str, message_id: str | None, data: str | None,
                         db: str | None, as_json: bool) -> None:
    remote_call(db, station_id, "data-transfer",
                {"vendor_id": vendor, "message_id": message_id, "data": data}, as_json)


# --- simulators and demo --------------------------------------------------------------------

@main.group()
def sim() -> None:
    """Virtual wallboxes and EVs."""


@sim.command("run")
@click.option("--url", required=True, help="Gateway URL, e.g. ws://127.0.0.1:9000/ocpp")
@click.option("--stations", default=1, show_default=True, type=click.IntRange(1, 10000))
@click.option("--protocol", default="1.6", show_default=True, type=click.Choice(["1.6", "2.0.1"]))
@click.option("--id-prefix", default="SIM", show_default=True)
@click.option("--tag", default=None, help="idTag the virtual drivers present.")
@click.option("--sessions", "sessions_count", default=1, show_default=True, type=click.IntRange(0, 1000))
@click.option("--energy-kwh", default=5.0, show_default=True, type=click.FloatRange(0.1, 200))
@click.option("--speed", default=60.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Simulated seconds per real second.")
@click.option("--password", help="Basic-auth password of every simulated station.")
def sim_run(url: str, stations: int, protocol: str, id_prefix: str, tag: str | None,
            sessions_count: int, energy_kwh: float, speed: float, password: str | None) -> None:
    """Run N virtual wallboxes, each charging K sessions, then exit."""
    from cocharge.simulators.fleet import run_fleet

    done = asyncio.run(run_fleet(url, stations, protocol, id_prefix, tag, sessions_count,
                                 energy_kwh * 1000, speed, password))
    click.echo(f"{done} sessions completed on {stations} stations")


@main.command()
@click.option("--stations", default=4, show_default=True, type=click.IntRange(2, 50))
def demo(stations: int) -> None:
    """A gateway, simulated wallboxes (both protocols) and real sessions, then a report."""
    from cocharge.demo import run_demo

    asyncio.run(run_demo(stations))


if __name__ == "__main__":
    main()
