"""The `cocharge` command.

Exit codes: 0 ok; 2 bad arguments or a request that cannot apply (nothing written);
3 the running gateway is unreachable; 4 the station refused, is offline or did not answer.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import ssl
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import click
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from cocharge.config import GatewaySettings
from cocharge.stations import registry
from cocharge.store.db import (
    DatabaseURLError,
    StoreError,
    describe_error,
    open_existing,
    open_store,
)
from cocharge.store.schema import members
from cocharge.store.schema import stations as stations_table

T = TypeVar("T")

db_option = click.option("--db", envvar="COCHARGE_DB", default=None,
                         help="Database URL or SQLite file (env COCHARGE_DB, default ./cocharge.db).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def cny_to_fen(text: str, option: str) -> int:
    """A CNY amount typed by an operator, exactly, in fen (exit 2 if it is not one)."""
    from cocharge.settlement.money import MoneyError, parse_cny

    try:
        return parse_cny(text, option)
    except MoneyError as exc:
        fail(str(exc))
        raise


def with_store(db: str | None, work: Callable[[Any], Awaitable[T]], create: bool = False) -> T:
    """Run `work` on the database. Only `create` (db init|upgrade) makes or migrates a schema:
    every other command needs an existing database at this cocharge's schema, so a typo in
    --db (or an unset COCHARGE_DB under cron) is an error, never a new empty database."""
    async def run() -> T:
        engine = await (open_store(db) if create else open_existing(db))
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except registry.RegistryError as exc:
        fail(str(exc))
    except (DatabaseURLError, StoreError) as exc:
        fail(str(exc))
    except (SQLAlchemyError, OSError) as exc:
        fail(describe_error(exc, db))
    raise AssertionError("unreachable")


def fit(widths: list[int], room: int, floor: int = 6) -> list[int]:
    """Column widths that fit `room` characters (two spaces between columns): the widest
    column gives way first, none below `floor` (or its own width, if narrower)."""
    fitted = list(widths)
    while sum(fitted) + 2 * (len(fitted) - 1) > room:
        widest = max(range(len(fitted)), key=lambda i: fitted[i])
        if fitted[widest] <= floor:
            break  # as narrow as it goes: the terminal wraps the rest
        fitted[widest] -= 1
    return fitted


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows as aligned columns; on a terminal, fitted to its width (a cut cell ends in '…');
    piped (scripts, grep), every cell in full."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    if sys.stdout.isatty():
        widths = fit(widths, shutil.get_terminal_size().columns)

    def cell(text: str, width: int) -> str:
        return (text if len(text) <= width else text[:width - 1] + "…").ljust(width)

    click.echo("  ".join(cell(c.upper(), w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(cell(v, w) for v, w in zip(row, widths, strict=True)).rstrip())


def emit(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    elif columns is not None:
        table(data, columns)
    else:
        for key, value in data.items():
            click.echo(f"{key:>16}: {value}")


class _Cli(click.Group):
    """The `cocharge` group: a usage error (a missing argument, a value out of range, an
    unknown option) is one line naming the fix, exit 2, like every other refusal."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                click.echo(exc.format_message())  # `cocharge station` alone: its help
                sys.exit(2)
            where = exc.ctx.command_path if exc.ctx is not None else "cocharge"
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)


@click.group(cls=_Cli)
@click.version_option(package_name="cocharge", prog_name="cocharge",
                      message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                                               case_sensitive=False),
              help="Logging level (default: info for `serve`: connects, disconnects, boots, "
                   "errors; warning for the other commands).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object per line (for a log collector).")
@click.option("--log-file", type=click.Path(dir_okay=False),
              help="Append the log to this file (reopened when logrotate moves it) instead of "
                   "stderr.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML configuration file (env COCHARGE_CONFIG; docs/config.md).")
@click.pass_context
def main(ctx: click.Context, verbose: int, log_level: str | None, log_format: str,
         log_file: str | None, config_file: str | None) -> None:
    """cocharge: OCPP central system for shared EV charging."""
    from cocharge import configfile
    from cocharge.logs import configure_logging
    from cocharge.settlement import money

    try:
        config = configfile.load(config_file)
    except configfile.ConfigError as exc:
        fail(str(exc))
        raise
    ctx.obj = config
    # The file's database and broker stand where their environment variables would: an
    # option or the variable itself still wins.
    for name, value in (("COCHARGE_DB", config.db), ("COCHARGE_MQTT", config.mqtt)):
        if value and not os.environ.get(name):
            os.environ[name] = value
    money.set_input_limit(int(config.cli["max_amount_cny"]))

    if log_level is not None:
        level = getattr(logging, log_level.upper())
    elif verbose:
        level = logging.WARNING - 10 * min(verbose, 2)
    else:
        level = logging.INFO if ctx.invoked_subcommand == "serve" else logging.WARNING
    try:
        configure_logging(level, log_format, log_file)
    except OSError as exc:
        fail(f"--log-file {log_file}: {exc.strerror or exc}")


# --- serve ----------------------------------------------------------------------------------

# The options of `serve` that are gateway settings: option -> GatewaySettings field.
SERVE_SETTINGS = {
    "host": "host", "port": "port", "auto_register": "auto_register",
    "operator_host": "operator_host", "operator_port": "operator_port",
    "heartbeat_interval": "heartbeat_interval_s", "call_timeout": "call_timeout_s",
    "mqtt_url": "mqtt_url", "max_handshakes": "max_handshakes", "quirks_file": "quirks_file",
    "require_password": "require_password", "allow_takeover": "allow_takeover",
    "upload_port": "upload_port", "upload_url": "upload_url", "tls_port": "tls_port",
    "tls_url": "tls_url", "ca_dir": "ca_dir", "client_ca_file": "client_ca_file",
    "metrics_port": "metrics_port", "api_host": "api_host", "api_port": "api_port",
}

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
@click.option("--mqtt", "mqtt_url", envvar="COCHARGE_MQTT",
              help="Broker for property backends: mqtt://[user:pass@]host[:port][/prefix] "
                   "(env COCHARGE_MQTT; docs/mqtt.md).")
@click.option("--max-handshakes", default=GatewaySettings.max_handshakes, show_default=True,
              type=click.IntRange(1, 1_000_000),
              help="Handshakes in progress beyond which a station gets 503 + Retry-After.")
@click.option("--quirks", "quirks_file", type=click.Path(dir_okay=False),
              help="TOML file of chargers' known deviations to normalise (docs/ocpp-errors.md).")
@click.option("--require-password", is_flag=True,
              help="Refuse stations that have no password (otherwise: a warning at start).")
@click.option("--allow-takeover", is_flag=True,
              help="Let a new connection replace a live one of a station without a password.")
@click.option("--upload-port", default=GatewaySettings.upload_port, show_default=True,
              type=click.IntRange(0, 65535), help="Where stations upload diagnostics and logs.")
@click.option("--upload-url", help="The upload endpoint's address as stations reach it, e.g. "
              "http://gw.example.com:9002 (default: the host they connected to).")
@click.option("--tls-port", type=click.IntRange(0, 65535),
              help="Serve wss:// on this port beside plain ws:// on --port (stations move "
                   "between security profiles 1, 2 and 3); needs --tls-cert/--tls-key.")
@click.option("--tls-url", help="The wss:// URL stations moved to profile 2 or 3 are given "
              "(default: the host they connected to, the TLS port, their path).")
@click.option("--ca-dir", envvar="COCHARGE_CA_DIR", type=click.Path(file_okay=False),
              help="The operator's CA (`cocharge ca init`): signs the stations' certificates; "
                   "its client certificates are accepted (security profile 3). Env "
                   "COCHARGE_CA_DIR.")
@click.option("--client-ca", "client_ca_file", type=click.Path(exists=True, dir_okay=False),
              help="More CA certificates (PEM) whose client certificates are accepted.")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve GET /metrics (Prometheus) and /healthz on --operator-host at this "
                   "port (default: off).")
@click.option("--api-host", default=GatewaySettings.api_host, show_default=True,
              help="Address of the HTTP API and web console.")
@click.option("--api-port", default=GatewaySettings.api_port, show_default=True,
              type=click.IntRange(0, 65535),
              help="Port of the HTTP API (/api/docs) and web console (/console/).")
@click.option("--no-api", is_flag=True, help="Serve no HTTP API or console on this node.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, db: str | None, auto_register: bool,
          tls_cert: str | None, tls_key: str | None, operator_host: str, operator_port: int,
          heartbeat_interval: int, call_timeout: float, mqtt_url: str | None,
          max_handshakes: int, quirks_file: str | None, require_password: bool,
          allow_takeover: bool, upload_port: int, upload_url: str | None,
          tls_port: int | None, tls_url: str | None, ca_dir: str | None,
          client_ca_file: str | None, metrics_port: int | None, api_host: str,
          api_port: int | None, no_api: bool) -> None:
    """Run the OCPP 1.6J + 2.0.1 central system (its other settings: --config FILE)."""
    import dataclasses

    from click.core import ParameterSource

    from cocharge.gateway.app import run_event_loop, serve_forever
    from cocharge.gateway.mqtt import parse_mqtt_url
    from cocharge.gateway.quirks import QuirkError, load_quirks
    from cocharge.gateway.server import client_cas, tls_context
    from cocharge.stations import ca

    # An option not given takes the configuration file's value (then its default).
    config = ctx.find_root().obj
    given = dict(ctx.params)
    for param, field_name in SERVE_SETTINGS.items():
        if ctx.get_parameter_source(param) is ParameterSource.DEFAULT:
            given[param] = getattr(config.gateway, field_name)
    for param in ("tls_cert", "tls_key"):
        if given[param] is None and config.serve.get(param):
            given[param] = config.serve[param]
    # The values the checks below look at, as in force.
    (auto_register, tls_cert, tls_key, mqtt_url, quirks_file, require_password, upload_url,
     tls_port, tls_url, ca_dir, client_ca_file) = (
        given[p] for p in ("auto_register", "tls_cert", "tls_key", "mqtt_url", "quirks_file",
                           "require_password", "upload_url", "tls_port", "tls_url", "ca_dir",
                           "client_ca_file"))

    if upload_url is not None and not upload_url.startswith(("http://", "https://")):
        fail(f"--upload-url {upload_url!r}: give an http:// or https:// URL")
    if require_password and auto_register:
        fail("--auto-register admits unknown stations without a password: it cannot go "
             "with --require-password")
    if bool(tls_cert) != bool(tls_key):
        fail("--tls-cert and --tls-key go together: give both for TLS, or neither")
    if tls_port is not None and not tls_cert:
        fail("--tls-port serves wss://: give --tls-cert and --tls-key with it")
    if tls_url is not None and not tls_url.startswith("wss://"):
        fail(f"--tls-url {tls_url!r}: give a wss:// URL")
    if (ca_dir or client_ca_file) and not tls_cert:
        fail("client certificates (--ca-dir, --client-ca) need TLS: give --tls-cert and "
             "--tls-key")
    if mqtt_url:
        try:
            parse_mqtt_url(mqtt_url)
        except ValueError as exc:
            fail(str(exc))
    try:
        load_quirks(quirks_file)
    except QuirkError as exc:
        fail(str(exc))
    settings = dataclasses.replace(config.gateway, **{
        field_name: given[param] for param, field_name in SERVE_SETTINGS.items()})
    if no_api:
        settings = dataclasses.replace(settings, api_port=None)
    try:
        tls = tls_context(tls_cert, tls_key, client_cas(settings)) if tls_cert and tls_key \
            else None
    except ca.CAError as exc:
        fail(str(exc))
        raise
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot use the TLS files: {exc}")
        raise
    try:
        run_event_loop(serve_forever(db, settings, tls))
    except (DatabaseURLError, StoreError) as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(describe_error(exc, db))
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
@click.option("--area", help="Neighbourhood (the revenue calculator compares within an area).")
@db_option
def station_add(station_id: str, password: str | None, owner: str | None, connectors: int,
                max_power_kw: float | None, area: str | None, db: str | None) -> None:
    """Register a station so that it is Accepted when it boots."""
    if "/" in station_id or not station_id.strip():
        fail(f"station id {station_id!r} must be non-empty and contain no '/'")
    if password is not None and len(password) < 8:
        fail("--password must be at least 8 characters (OCPP asks for 16 or more)")
    with_store(db, lambda e: registry.add_station(e, registry.NewStation(
        station_id, password, owner, connectors, max_power_kw, area)))
    click.echo(f"station {station_id} registered")


@station.command("update")
@click.argument("station_id")
@click.option("--owner")
@click.option("--max-power-kw", type=click.FloatRange(0.1, 1000))
@click.option("--area")
@click.option("--password", help="New HTTP Basic password (stored hashed); the gateway uses "
              "it within 30 s.")
@click.option("--clear-password", is_flag=True, help="Let the station connect without one.")
@click.option("--connectors", type=click.IntRange(1, 64), help="How many connectors it has.")
@db_option
def station_update(station_id: str, owner: str | None, max_power_kw: float | None,
                   area: str | None, password: str | None, clear_password: bool,
                   connectors: int | None, db: str | None) -> None:
    """Change a station's owner, maximum power, area, connectors or password."""
    if password is not None and len(password) < 8:
        fail("--password must be at least 8 characters (OCPP asks for 16 or more)")
    with_store(db, lambda e: registry.update_station(e, station_id, owner, max_power_kw, area,
                                                     password, clear_password, connectors))
    click.echo(f"station {station_id} updated")


@station.command("list")
@db_option
@json_option
def station_list(db: str | None, as_json: bool) -> None:
    """All stations: online (and the gateway node holding it), admission, protocol, last
    contact and connector states (an offline station's are its last known)."""
    rows = with_store(db, registry.list_stations)
    for r in rows:
        r["status"] = ", ".join(f"{k}:{v['status']}" for k, v in r["connector_status"].items())
    shown = rows if as_json else [
        {**r, "password": "yes" if r["password"] else "NONE"} for r in rows]
    if not as_json:
        shown = [{**r, "online": "yes" if r["online"] else "no",
                  "status": r["status"] if r["online"] else f"(last: {r['status'] or '-'})"}
                 for r in shown]
    emit(shown, as_json, ["id", "online", "node", "owner", "admission", "protocol", "password",
                          "connectors", "max_power_kw", "last_seen_at", "status"])
    without = sum(1 for r in rows if not r["password"])
    if without and not as_json:
        click.echo(f"{without} station(s) without a password: anyone who knows the id can "
                   "connect as them (`cocharge station update ID --password ...`)", err=True)


@station.command("variables")
@click.argument("station_id")
@click.option("--component", help="Only this component (e.g. OCPPCommCtrlr, EVSE).")
@db_option
@json_option
def station_variables(station_id: str, component: str | None, db: str | None,
                      as_json: bool) -> None:
    """A 2.0.1 station's device model, as its last reports told it
    (`cocharge remote get-base-report ID` asks for a fresh one)."""
    rows = with_store(db, lambda e: registry.list_station_variables(e, station_id, component))
    emit(rows, as_json, ["component", "evse", "connector", "variable", "type", "value",
                         "mutability", "unit"])


@station.command("monitors")
@click.argument("station_id")
@db_option
@json_option
def station_monitors(station_id: str, db: str | None, as_json: bool) -> None:
    """A 2.0.1 station's variable monitors (`remote set-variable-monitoring` sets them,
    `remote get-monitoring-report` reads them from the station)."""
    rows = with_store(db, lambda e: registry.list_station_monitors(e, station_id))
    emit(rows, as_json, ["id", "component", "evse", "variable", "type", "value", "severity",
                         "transaction", "source"])


@station.command("events")
@click.argument("station_id")
@click.option("--kind", help="Only this kind (auth_lockout, takeover_refused, security, "
              "firmware, diagnostics, data_transfer, ...).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@db_option
@json_option
def station_events(station_id: str, kind: str | None, limit: int, db: str | None,
                   as_json: bool) -> None:
    """What the station (or someone posing as it) did: lockouts, security events, firmware."""
    rows = with_store(db, lambda e: registry.list_station_events(e, station_id, kind, limit))
    shown = rows if as_json else [
        {**r, "details": json.dumps(r["details"], sort_keys=True)[:120]} for r in rows]
    emit(shown, as_json, ["at", "kind", "details"])


@station.command("show")
@click.argument("station_id")
@db_option
@json_option
def station_show(station_id: str, db: str | None, as_json: bool) -> None:
    """One station in detail, with its sharing rules."""
    from cocharge.stations import sharing

    async def work(engine: Any) -> dict[str, Any]:
        shown = await registry.get_station(engine, station_id)
        rules = await sharing.show_rules(engine, station_id)
        shown["rules"] = {scope: {k: v for k, v in r.items() if v not in (None, [], "")}
                          for scope, r in rules.items()} or "none (not share-managed)"
        return shown

    emit(with_store(db, work), as_json)


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


HOUSEHOLD_HELP = ("A household or fleet (up to 20 characters): its members' cards stop each "
                  "other's sessions (sent as groupIdToken / parentIdTag).")


def check_household(household: str | None) -> None:
    if household is not None and (len(household.strip()) > 20 or not household.isprintable()):
        fail(f"--household {household!r}: up to 20 printable characters (OCPP's limit)")


@member.command("add")
@click.argument("name")
@click.option("--tag", required=True, help="The member's idTag / idToken (RFID or app token).")
@click.option("--phone")
@click.option("--expires", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Date (UTC) after which the tag answers Expired.")
@click.option("--referred-by", help="Tag of the member who referred this one (set once, here).")
@click.option("--household", help=HOUSEHOLD_HELP)
@db_option
def member_add(name: str, tag: str, phone: str | None, expires: datetime | None,
               referred_by: str | None, household: str | None, db: str | None) -> None:
    """Add a member with an idTag."""
    if not 1 <= len(tag) <= 20:
        fail(f"--tag {tag!r}: an OCPP 1.6 idTag has 1 to 20 characters")
    if tag.startswith("#"):
        fail(f"--tag {tag!r}: a tag cannot begin with '#' (kept for tokens that are no card)")
    check_household(household)
    with_store(db, lambda e: registry.add_member(e, name, tag, phone, expires, referred_by,
                                                 household or None))
    click.echo(f"member {name} added with tag {tag}"
               + (f", referred by {referred_by}" if referred_by else ""))


@member.command("list")
@db_option
@json_option
def member_list(db: str | None, as_json: bool) -> None:
    """All members."""
    emit(with_store(db, registry.list_members), as_json,
         ["tag", "name", "phone", "status", "expires_at", "household"])


@member.command("block")
@click.argument("tag")
@db_option
def member_block(tag: str, db: str | None) -> None:
    """Block a tag: it answers Blocked from now on."""
    with_store(db, lambda e: registry.block_member(e, tag))
    click.echo(f"tag {tag} blocked")


@member.command("unblock")
@click.argument("tag")
@db_option
def member_unblock(tag: str, db: str | None) -> None:
    """Accept a blocked tag again."""
    with_store(db, lambda e: registry.block_member(e, tag, blocked=False))
    click.echo(f"tag {tag} accepted again")


# --- firmware -------------------------------------------------------------------------------

def _read_text(path: str | None, option: str) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{option}: cannot read {path} ({exc})")
        return None


def _signature(signature: str | None, certificate: str | None) -> tuple[str | None, str | None]:
    """--signature (base64, or a file holding it) and --signing-certificate (a PEM file)."""
    if (signature is None) != (certificate is None):
        fail("a signed image needs both --signature and --signing-certificate")
    if signature is not None and os.path.isfile(signature):
        signature = _read_text(signature, "--signature")
    return signature, _read_text(certificate, "--signing-certificate")


signature_options = [
    click.option("--signature", help="Base64 signature of the image (or a file holding it): "
                 "1.6 stations get SignedUpdateFirmware, 2.0.1 stations the signed form."),
    click.option("--signing-certificate", "signing_certificate",
                 type=click.Path(exists=True, dir_okay=False),
                 help="PEM certificate whose key made --signature."),
]


def _with(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def wrap(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func
    return wrap



@main.group("firmware")
def firmware_group() -> None:
    """Firmware images and campaigns (docs/operations.md)."""


@firmware_group.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--version", "version", required=True, help="The version stations report after it.")
@_with(signature_options)
@db_option
def firmware_add(path: str, version: str, signature: str | None,
                 signing_certificate: str | None, db: str | None) -> None:
    """Store a firmware image; the gateway serves it to stations itself. A signed image
    (--signature, --signing-certificate) is checked here, and sent to stations signed."""
    from cocharge.stations import firmware

    signature, certificate = _signature(signature, signing_certificate)
    with open(path, "rb") as handle:
        content = handle.read()
    file_id = with_store(db, lambda e: firmware.add_file(e, os.path.basename(path), version,
                                                         content, signature, certificate))
    click.echo(f"firmware file {file_id}: {os.path.basename(path)} {version}, "
               f"{len(content)} bytes{', signed' if signature else ''}")


@firmware_group.command("campaign")
@click.option("--file", "file_id", type=int, help="A file of `cocharge firmware add`.")
@click.option("--url", help="Or where stations download it (http, https or ftp).")
@click.option("--version", "version", required=True, help="The version stations report after it.")
@click.option("--vendor", help="Stations of this vendor (glob, e.g. 'Acme*').")
@click.option("--model", help="Stations of this model (glob).")
@click.option("--from-firmware", help="Stations running this firmware now (glob).")
@click.option("--station", "station_ids", multiple=True, help="These stations (repeatable).")
@click.option("--at-once", default=5, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--retries", default=1, show_default=True, type=click.IntRange(0, 10))
@_with(signature_options)
@db_option
def firmware_campaign(file_id: int | None, url: str | None, version: str, vendor: str | None,
                      model: str | None, from_firmware: str | None,
                      station_ids: tuple[str, ...], at_once: int, retries: int,
                      signature: str | None, signing_certificate: str | None,
                      db: str | None) -> None:
    """Roll a firmware version out; the running gateway updates `--at-once` stations at a time.
    A signed image (a signed `firmware add` file, or --url with --signature) goes to 1.6
    stations as SignedUpdateFirmware."""
    from cocharge.stations import firmware

    signature, certificate = _signature(signature, signing_certificate)
    selection = firmware.Selection(vendor, model, from_firmware, station_ids)
    campaign_id, count = with_store(db, lambda e: firmware.create_campaign(
        e, version, file_id, url, selection, at_once, retries, signature, certificate))
    click.echo(f"firmware campaign {campaign_id}: {count} station(s) to {version}, "
               f"{at_once} at a time (`cocharge firmware status {campaign_id}`)")


@firmware_group.command("status")
@click.argument("campaign_id", type=int, required=False)
@db_option
@json_option
def firmware_status(campaign_id: int | None, db: str | None, as_json: bool) -> None:
    """A campaign's progress per station (the latest campaign by default)."""
    from cocharge.stations import firmware

    shown = with_store(db, lambda e: firmware.campaign_status(e, campaign_id))
    if as_json:
        emit(shown, True)
        return
    counts = ", ".join(f"{v} {k}" for k, v in sorted(shown["counts"].items()))
    click.echo(f"campaign {shown['id']} to {shown['version']}: {shown['status']} ({counts})")
    emit(shown["targets"], False, ["station", "status", "attempts", "detail", "updated_at"])


# --- diagnostics and logs -------------------------------------------------------------------

class _LogsGroup(click.Group):
    """`cocharge logs STATION ...` is `cocharge logs frames STATION ...` (a station's OCPP
    log); `list` and `save` stay the uploaded files' commands."""

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["frames", *args]
        return super().resolve_command(ctx, args)


@main.group(cls=_LogsGroup)
def logs() -> None:
    """A station's OCPP log (`cocharge logs STATION [--follow] [--since]`), and the
    diagnostics and log files stations uploaded (`list`, `save`)."""


@logs.command("frames")
@click.argument("station_id")
@click.option("--since", help="From this UTC date/time (2026-11-24T08:00) or this long ago "
              "(30m, 2h, 7d).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
              help="The last N frames (before --follow).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new frames (Ctrl-C stops).")
@db_option
@json_option
def logs_frames(station_id: str, since: str | None, limit: int, follow: bool, db: str | None,
                as_json: bool) -> None:
    """Every OCPP frame a station sent (<<) and was sent (>>), with its connects and
    disconnects (--), oldest first: what the gateway keeps of it (frame_log_per_station)."""
    from cocharge.store.schema import station_frames

    since_at = _since(since)

    def show(rows: list[Any]) -> None:
        for r in rows:
            if as_json:
                click.echo(json.dumps({"id": r.id, "at": r.ts.isoformat(), "direction": r.direction,
                                       "frame": r.frame}))
            else:
                arrow = {"in": "<<", "out": ">>"}.get(r.direction, "--")
                click.echo(f"{r.ts.isoformat(timespec='milliseconds')} {arrow} {r.frame}")

    async def work(engine: Any) -> None:
        async with engine.connect() as conn:
            known = await conn.scalar(select(func.count()).select_from(stations_table)
                                      .where(stations_table.c.id == station_id))
            if not known:
                fail(f"no station {station_id!r}: see `cocharge station list`")
            query = select(station_frames).where(station_frames.c.station_id == station_id)
            if since_at is not None:
                query = query.where(station_frames.c.ts >= since_at)
            rows = list(reversed((await conn.execute(
                query.order_by(station_frames.c.id.desc()).limit(limit))).all()))
        show(rows)
        last = rows[-1].id if rows else 0
        while follow:
            await asyncio.sleep(0.5)
            async with engine.connect() as conn:
                rows = (await conn.execute(
                    select(station_frames).where(station_frames.c.station_id == station_id,
                                                 station_frames.c.id > last)
                    .order_by(station_frames.c.id))).all()
            if rows:
                show(list(rows))
                last = rows[-1].id

    try:
        with_store(db, work)
    except KeyboardInterrupt:
        pass


@logs.command("list")
@click.option("--station", "station_id")
@db_option
@json_option
def logs_list(station_id: str | None, db: str | None, as_json: bool) -> None:
    """Every request, its status, and the file when it arrived."""
    emit(with_store(db, lambda e: registry.list_uploads(e, station_id)), as_json,
         ["id", "station", "kind", "log_type", "status", "filename", "size", "requested_at",
          "received_at"])


@logs.command("save")
@click.argument("request_id", type=int)
@click.argument("path", type=click.Path(dir_okay=False, writable=True), required=False)
@db_option
def logs_save(request_id: int, path: str | None, db: str | None) -> None:
    """Write the file of request REQUEST_ID to PATH (default: its own file name)."""
    name, content = with_store(db, lambda e: registry.upload_content(e, request_id))
    target = path or os.path.basename(name)
    if os.path.exists(target):
        fail(f"{target} exists: give another PATH")
    with open(target, "wb") as handle:
        handle.write(content)
    click.echo(f"{len(content)} bytes written to {target}")


# --- sessions -------------------------------------------------------------------------------

@main.group()
def sessions() -> None:
    """Charging sessions."""


def _since(text: str | None) -> datetime | None:
    """--since: an ISO date/time (UTC) or a duration back from now (30m, 2h, 7d)."""
    if text is None:
        return None
    from datetime import timedelta

    from cocharge.store.db import utcnow

    if "-" not in text:
        try:
            return utcnow() - timedelta(seconds=parse_duration(text))
        except click.BadParameter:
            pass
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since {text!r}: give a date/time (2026-11-24T08:00, UTC) or a duration back "
             "from now (30m, 2h, 7d)")
        raise
    return found if found.tzinfo is None else found.astimezone(UTC).replace(tzinfo=None)


@sessions.command("list")
@click.option("--station", "station_id")
@click.option("--active", is_flag=True, help="Only sessions still charging.")
@click.option("--since", help="Sessions running since, or ended after: a UTC date/time "
              "(2026-11-24T08:00) or a duration back from now (2h, 7d).")
@click.option("--tag", help="Only this member's sessions.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), help="Only the newest N.")
@db_option
@json_option
def sessions_list(station_id: str | None, active: bool, since: str | None, tag: str | None,
                  limit: int | None, db: str | None, as_json: bool) -> None:
    """Sessions in order of their start, with the energy and cost (so far, while charging)."""
    since_at = _since(since)

    async def work(engine: Any) -> list[dict[str, Any]]:
        rows = await registry.list_sessions(engine, station_id, active=active, since=since_at,
                                            tag=tag, limit=limit)
        from cocharge.views import priced

        return await priced(engine, rows)

    emit(with_store(db, work), as_json,
         ["id", "station", "connector", "tag", "started", "ended", "kwh", "cny", "status",
          "stop_reason"])


@sessions.command("show")
@click.argument("session_id", type=click.IntRange(1))
@db_option
@json_option
def sessions_show(session_id: int, db: str | None, as_json: bool) -> None:
    """One session: its meter, its bill (tariff lines, discounts, what was paid) and the
    split of the money."""
    from cocharge.views import session_detail

    async def work(engine: Any) -> dict[str, Any]:
        shown = await session_detail(engine, session_id)
        if shown is None:
            fail(f"no session {session_id}: see `cocharge sessions list`")
        assert shown is not None
        return shown

    shown = with_store(db, work)
    if as_json:
        click.echo(json.dumps(shown, indent=2, default=str))
        return
    for key in ("id", "station", "connector", "transaction", "tag", "started", "ended", "kwh",
                "cny", "status", "stop_reason", "flag_reason"):
        if shown.get(key) is not None:
            click.echo(f"{key:>16}: {shown[key]}")
    bill = shown.get("bill")
    if bill is None:
        click.echo("            bill: not settled yet" if shown["status"] != "active" else
                   "            bill: when the session ends")
        return
    from cocharge.settlement.money import fmt

    def fen(value: int) -> str:
        return f"{fmt(value)} CNY"

    click.echo(f"{'cost':>16}: {fen(bill['cost_fen'])}")
    for d in bill["discounts"]:
        click.echo(f"{'discount':>16}: {json.dumps(d, default=str)}")
    click.echo(f"{'payable':>16}: {fen(bill['payable_fen'])} by {bill['payer']} "
               f"(paid {fen(bill['paid_fen'])}, owed {fen(bill['owed_fen'])})")
    for who, value in shown["split"]:  # [[account, fen], ...], adding up to the payable
        click.echo(f"{'split':>16}: {fen(value)} to {who}")


# --- remote ---------------------------------------------------------------------------------

def remote_call(db: str | None, station_id: str, command: str, args: dict[str, Any],
                as_json: bool, expires: float | None = None) -> None:
    from cocharge.gateway.operator import OperatorError, send_request

    request: dict[str, Any] = {"command": command, "station": station_id, "args": args}
    if expires is not None:
        request["expires_s"] = expires

    async def work(engine: Any) -> dict[str, Any]:
        return await send_request(engine, request)

    try:
        answer = with_store(db, work)
    except OperatorError as exc:
        fail(str(exc), 3)
        return
    if not answer.get("ok"):
        fail(answer.get("message", "failed"), 2 if answer.get("error") == "bad_request" else 4)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    elif answer.get("queued"):
        click.echo(f"{station_id}: queued (station offline; command {answer['command_id']} is "
                   "delivered at its next boot: see `cocharge commands list`)")
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


def parse_duration(text: str) -> float:
    """`90`, `90s`, `30m`, `1h`, `2d` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    factor = units.get(value[-1:], 0)
    try:
        seconds = float(value[:-1] if factor else value) * (factor or 1)
    except ValueError:
        seconds = -1
    if seconds <= 0:
        raise click.BadParameter(f"{text!r} is not a duration: write 90s, 30m, 1h or 2d")
    return seconds


expires_option = click.option(
    "--expires", "expires", default=None, callback=lambda _c, _p, v: parse_duration(v) if v else None,
    help="If the station is offline, keep the command this long (default 1h) and deliver it "
         "at its next boot.")


def _remote(name: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
    def wrap(func: Callable[..., Any]) -> Any:
        func = expires_option(json_option(db_option(click.argument("station_id")(func))))
        return remote.command(name, help=help_text)(func)
    return wrap


@_remote("start", "Remote start: RemoteStartTransaction (1.6) / RequestStartTransaction (2.0.1).\n\n"
         "With --budget, --energy-kwh or --quota-only the session stops itself at that limit "
         "(a TxProfile makes the charger stop even if it loses its connection).")
@click.option("--tag", required=True)
@click.option("--connector", type=click.IntRange(1, 64))
@click.option("--budget", help="Prepaid budget in CNY, e.g. 20 or 12.50.")
@click.option("--energy-kwh", type=click.FloatRange(0.001, 1000), help="Stop after this energy.")
@click.option("--quota-only", is_flag=True, help="Stop when the member's free quota is used up.")
def remote_start(station_id: str, tag: str, connector: int | None, budget: str | None,
                 energy_kwh: float | None, quota_only: bool, db: str | None, as_json: bool,
                 expires: float | None) -> None:
    args: dict[str, Any] = {"tag": tag, "connector_id": connector}
    if budget is not None:
        args["budget_fen"] = cny_to_fen(budget, "--budget")
    if energy_kwh is not None:
        args["energy_wh"] = round(energy_kwh * 1000)
    if quota_only:
        args["quota_only"] = True
    remote_call(db, station_id, "start", args, as_json, expires)


@_remote("stop", "Remote stop of a session (its id in `cocharge sessions list`).")
@click.option("--session", "session_id", required=True, type=click.IntRange(1))
def remote_stop(station_id: str, session_id: int, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "stop", {"session_id": session_id}, as_json, expires)


@_remote("unlock", "Unlock a connector.")
@click.option("--connector", required=True, type=click.IntRange(1, 64))
def remote_unlock(station_id: str, connector: int, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "unlock", {"connector_id": connector}, as_json, expires)


@_remote("availability", "Set a connector (0 = whole station) operative or inoperative.")
@click.option("--connector", default=0, show_default=True, type=click.IntRange(0, 64))
@click.argument("state", type=click.Choice(["operative", "inoperative"]))
def remote_availability(station_id: str, connector: int, state: str, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "availability",
                {"connector_id": connector, "operative": state == "operative"}, as_json, expires)


@_remote("reset", "Soft (default) or hard reset; 2.0.1 can reset one EVSE (--evse).")
@click.option("--hard", is_flag=True)
@click.option("--evse", type=click.IntRange(1, 64), help="2.0.1: only this EVSE.")
def remote_reset(station_id: str, hard: bool, evse: int | None, db: str | None, as_json: bool,
        expires: float | None) -> None:
    args: dict[str, Any] = {"hard": hard}
    if evse is not None:
        args["evse_id"] = evse
    remote_call(db, station_id, "reset", args, as_json, expires)


@_remote("trigger", "Ask the station to send a message now (e.g. Heartbeat, StatusNotification).")
@click.argument("message")
@click.option("--connector", type=click.IntRange(1, 64))
def remote_trigger(station_id: str, message: str, connector: int | None, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "trigger", {"message": message, "connector_id": connector}, as_json, expires)


@_remote("call", "Any call of the station's OCPP version: ACTION and its JSON payload, checked "
         "against the version's schema before it is sent; the answer is printed as JSON.\n\n"
         "Example: cocharge remote call CP1 GetLocalListVersion '{}'")
@click.argument("action")
@click.argument("payload", default="{}")
def remote_raw_call(station_id: str, action: str, payload: str, db: str | None, as_json: bool,
                    expires: float | None) -> None:
    try:
        body = json.loads(payload)
    except ValueError as exc:
        fail(f"PAYLOAD is not JSON ({exc}): write it as one argument, e.g. '{{\"type\": \"Soft\"}}'")
    if not isinstance(body, dict):
        fail("PAYLOAD must be a JSON object, e.g. '{}'")
    remote_call(db, station_id, "call", {"action": action, "payload": body}, True, expires)


@_remote("set-variables", "2.0.1: set several Component.Variable=value at once; each gets "
         "its own result, accepted values go into `cocharge station variables`.")
@click.argument("assignments", nargs=-1, required=True)
def remote_set_variables(station_id: str, assignments: tuple[str, ...], db: str | None,
                         as_json: bool, expires: float | None) -> None:
    values = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            fail(f"{item!r}: write Component.Variable=value, e.g. "
                 "OCPPCommCtrlr.HeartbeatInterval=120")
        values[key] = value
    remote_call(db, station_id, "set-variables", {"values": values}, as_json, expires)


@_remote("get-transaction-status", "2.0.1: is the session still running at the station, and "
         "does it hold messages not yet sent?")
@click.option("--session", "session_id", type=int, help="A session of `cocharge sessions list` "
              "(without: only whether any message is queued).")
def remote_get_transaction_status(station_id: str, session_id: int | None, db: str | None,
                                  as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "get-transaction-status", {"session_id": session_id}, as_json,
                expires)


@_remote("get-base-report", "2.0.1: the station reports its device model; stored as its "
         "inventory (`cocharge station variables ID`).")
@click.option("--report-base", default="FullInventory", show_default=True,
              type=click.Choice(["FullInventory", "ConfigurationInventory", "SummaryInventory"]))
def remote_get_base_report(station_id: str, report_base: str, db: str | None, as_json: bool,
                           expires: float | None) -> None:
    remote_call(db, station_id, "get-base-report", {"report_base": report_base}, as_json,
                expires)


@_remote("get-local-list-version", "The version of the station's local authorization list "
         "(the gateway keeps it in step with the sharing rules: docs/sharing.md).")
def remote_get_local_list_version(station_id: str, db: str | None, as_json: bool,
                                  expires: float | None) -> None:
    remote_call(db, station_id, "get-local-list-version", {}, as_json, expires)


@_remote("get-diagnostics", "1.6: the station uploads its diagnostics file to the gateway "
         "(`cocharge logs list`).")
@click.option("--start", help="Oldest entries wanted (ISO 8601).")
@click.option("--stop", help="Newest entries wanted (ISO 8601).")
def remote_get_diagnostics(station_id: str, start: str | None, stop: str | None,
                           db: str | None, as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "get-diagnostics", {"start": start, "stop": stop}, as_json,
                expires)


@_remote("get-log", "The station uploads a log to the gateway: 2.0.1, or 1.6 with the "
         "security extension (`cocharge logs list`).")
@click.option("--type", "log_type", default="DiagnosticsLog", show_default=True,
              type=click.Choice(["DiagnosticsLog", "SecurityLog"]))
@click.option("--oldest", help="Oldest entries wanted (ISO 8601).")
@click.option("--latest", help="Newest entries wanted (ISO 8601).")
def remote_get_log(station_id: str, log_type: str, oldest: str | None, latest: str | None,
                   db: str | None, as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "get-log", {"log_type": log_type, "oldest": oldest,
                                            "latest": latest}, as_json, expires)


@_remote("update-firmware", "UpdateFirmware to one station now (a fleet: `cocharge firmware "
         "campaign`); its FirmwareStatusNotifications show in `station show` and `station "
         "events --kind firmware`.")
@click.option("--location", help="Where the station downloads the image (http, https, ftp).")
@click.option("--file", "file_id", type=int, help="Or a file of `cocharge firmware add`, "
              "served by the gateway (its signature, if any, goes with it).")
@click.option("--retries", type=click.IntRange(0, 100), help="Download attempts (OCPP retries).")
@click.option("--retry-interval", type=click.IntRange(0, 86400), help="Seconds between attempts.")
@_with(signature_options)
def remote_update_firmware(station_id: str, location: str | None, file_id: int | None,
                           retries: int | None, retry_interval: int | None,
                           signature: str | None, signing_certificate: str | None,
                           db: str | None, as_json: bool, expires: float | None) -> None:
    if (location is None) == (file_id is None):
        fail("give the image: --location URL or --file ID (`cocharge firmware add`), one")
    signature, certificate = _signature(signature, signing_certificate)
    if file_id is not None and signature is not None:
        fail("a stored firmware file carries its signature: give it to `cocharge firmware add`")
    remote_call(db, station_id, "update-firmware", {
        "url": location, "file_id": file_id, "retries": retries, "retry_interval": retry_interval,
        "signature": signature, "signing_certificate": certificate}, as_json, expires)


@_remote("send-local-list", "Send the station's local authorization list now, in full, as its "
         "sharing rules make it (the gateway otherwise keeps it in step by itself).")
def remote_send_local_list(station_id: str, db: str | None, as_json: bool,
                           expires: float | None) -> None:
    remote_call(db, station_id, "send-local-list", {}, as_json, expires)


@_remote("get-report", "2.0.1: part of the device model (GetReport), stored as the inventory "
         "(`cocharge station variables ID`).")
@click.option("--component-criteria", "criteria", multiple=True,
              type=click.Choice(["Active", "Available", "Enabled", "Problem"]),
              help="Only components in this state (repeatable).")
@click.option("--component-variable", "wanted", multiple=True,
              help="Component or Component.Variable (repeatable), e.g. OCPPCommCtrlr.")
def remote_get_report(station_id: str, criteria: tuple[str, ...], wanted: tuple[str, ...],
                      db: str | None, as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "get-report", {"component_criteria": list(criteria),
                                               "component_variables": list(wanted)},
                as_json, expires)


@_remote("set-network-profile", "2.0.1: store a connection profile in one of the station's "
         "slots (SetNetworkProfile); it takes effect once NetworkConfigurationPriority names "
         "the slot (`remote set-variables ID OCPPCommCtrlr.NetworkConfigurationPriority=...`).")
@click.option("--configuration-slot", required=True, type=click.IntRange(0, 2**31 - 1))
@click.option("--ocpp-csms-url", required=True, help="e.g. wss://csms.example.org/ocpp/")
@click.option("--security-profile", required=True, type=click.IntRange(1, 3),
              help="1: password over ws, 2: password over TLS, 3: TLS client certificate.")
@click.option("--ocpp-interface", default="Wired0", show_default=True,
              type=click.Choice(["Wired0", "Wired1", "Wired2", "Wired3", "Wireless0",
                                 "Wireless1", "Wireless2", "Wireless3"]))
@click.option("--message-timeout", default=30, show_default=True, type=click.IntRange(1, 3600))
@click.option("--ocpp-version", default="OCPP20", show_default=True,
              type=click.Choice(["OCPP12", "OCPP15", "OCPP16", "OCPP20"]))
def remote_set_network_profile(station_id: str, configuration_slot: int, ocpp_csms_url: str,
                               security_profile: int, ocpp_interface: str, message_timeout: int,
                               ocpp_version: str, db: str | None, as_json: bool,
                               expires: float | None) -> None:
    if not ocpp_csms_url.startswith(("ws://", "wss://")):
        fail("--ocpp-csms-url must be a ws:// or wss:// URL")
    if security_profile > 1 and not ocpp_csms_url.startswith("wss://"):
        fail(f"security profile {security_profile} runs over TLS: the URL must be wss://")
    remote_call(db, station_id, "set-network-profile", {
        "configuration_slot": configuration_slot, "ocpp_csms_url": ocpp_csms_url,
        "security_profile": security_profile, "ocpp_interface": ocpp_interface,
        "message_timeout": message_timeout, "ocpp_version": ocpp_version}, as_json, expires)


@_remote("set-variable-monitoring", "2.0.1: a monitor on Component.Variable; the station sends "
         "NotifyEvent when it trips (`station events ID --kind event`). Kept with the id the "
         "station gave: `cocharge station monitors ID`.")
@click.argument("variable")
@click.option("--type", "monitor_type", required=True,
              type=click.Choice(["UpperThreshold", "LowerThreshold", "Delta", "Periodic",
                                 "PeriodicClockAligned"]))
@click.option("--value", required=True, type=float,
              help="Threshold, delta, or period in seconds.")
@click.option("--severity", default=5, show_default=True, type=click.IntRange(0, 9),
              help="0 Danger … 9 Debug.")
@click.option("--evse", type=click.IntRange(1, 64), help="The component of this EVSE.")
@click.option("--transaction", is_flag=True, help="Only during a transaction.")
@click.option("--id", "monitor_id", type=click.IntRange(0), help="Replace this monitor.")
def remote_set_variable_monitoring(station_id: str, variable: str, monitor_type: str,
                                   value: float, severity: int, evse: int | None,
                                   transaction: bool, monitor_id: int | None, db: str | None,
                                   as_json: bool, expires: float | None) -> None:
    if "." not in variable:
        fail(f"{variable!r}: name it Component.Variable, e.g. EVSE.Power")
    remote_call(db, station_id, "set-variable-monitoring", {
        "variable": variable, "type": monitor_type, "value": value, "severity": severity,
        "evse_id": evse, "transaction": transaction, "id": monitor_id}, as_json, expires)


@_remote("set-monitoring-base", "2.0.1: which monitors are active: All, FactoryDefault or "
         "HardWiredOnly (the last two drop the custom ones).")
@click.argument("monitoring_base", type=click.Choice(["All", "FactoryDefault", "HardWiredOnly"]))
def remote_set_monitoring_base(station_id: str, monitoring_base: str, db: str | None,
                               as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "set-monitoring-base", {"monitoring_base": monitoring_base},
                as_json, expires)


@_remote("set-monitoring-level", "2.0.1: report only events of this severity or more severe "
         "(0 Danger … 9 Debug).")
@click.argument("severity", type=click.IntRange(0, 9))
def remote_set_monitoring_level(station_id: str, severity: int, db: str | None, as_json: bool,
                                expires: float | None) -> None:
    remote_call(db, station_id, "set-monitoring-level", {"severity": severity}, as_json, expires)


@_remote("clear-variable-monitoring", "2.0.1: remove monitors by id (`station monitors ID`).")
@click.argument("ids", nargs=-1, required=True, type=click.IntRange(0))
def remote_clear_variable_monitoring(station_id: str, ids: tuple[int, ...], db: str | None,
                                     as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "clear-variable-monitoring", {"ids": list(ids)}, as_json, expires)


@_remote("get-monitoring-report", "2.0.1: the station reports its monitors; stored "
         "(`cocharge station monitors ID`).")
@click.option("--monitoring-criteria", "criteria", multiple=True,
              type=click.Choice(["ThresholdMonitoring", "DeltaMonitoring", "PeriodicMonitoring"]))
@click.option("--component-variable", "wanted", multiple=True,
              help="Component or Component.Variable (repeatable).")
def remote_get_monitoring_report(station_id: str, criteria: tuple[str, ...],
                                 wanted: tuple[str, ...], db: str | None, as_json: bool,
                                 expires: float | None) -> None:
    remote_call(db, station_id, "get-monitoring-report", {
        "monitoring_criteria": list(criteria), "component_variables": list(wanted)},
        as_json, expires)


@_remote("customer-information", "2.0.1: what the station holds about a customer "
         "(NotifyCustomerInformation: `station events ID --kind customer_information`), and "
         "with --clear its deletion there, e.g. when a member leaves.")
@click.option("--member", "tag", help="The member's tag (sent as their idToken).")
@click.option("--customer-identifier", help="Or the customer's identifier at the station.")
@click.option("--report/--no-report", default=True, show_default=True)
@click.option("--clear", is_flag=True, help="Delete what the station holds about them.")
def remote_customer_information(station_id: str, tag: str | None,
                                customer_identifier: str | None, report: bool, clear: bool,
                                db: str | None, as_json: bool, expires: float | None) -> None:
    if (tag is None) == (customer_identifier is None):
        fail("name the customer: --member TAG or --customer-identifier ID, one")
    if not (report or clear):
        fail("--no-report without --clear asks for nothing: add --clear")
    remote_call(db, station_id, "customer-information", {
        "id_token": tag, "customer_identifier": customer_identifier, "report": report,
        "clear": clear}, as_json, expires)


@_remote("config-get", "Read settings: 1.6 keys, or 2.0.1 Component.Variable names.")
@click.argument("keys", nargs=-1)
def remote_config_get(station_id: str, keys: tuple[str, ...], db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "config-get", {"keys": list(keys)}, as_json, expires)


@_remote("config-set", "Change one setting (1.6 key or 2.0.1 Component.Variable).")
@click.argument("key")
@click.argument("value")
def remote_config_set(station_id: str, key: str, value: str, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "config-set", {"key": key, "value": value}, as_json, expires)


@_remote("clear-cache", "Clear the station's authorization cache.")
def remote_clear_cache(station_id: str, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "clear-cache", {}, as_json, expires)


@_remote("share-lock", "Close or open a connector's bay lock (the sharing controller re-asserts "
                       "the owner's rules at its next check).")
@click.option("--connector", default=1, show_default=True, type=click.IntRange(1, 64))
@click.argument("state", type=click.Choice(["locked", "open"]))
def remote_share_lock(station_id: str, connector: int, state: str, db: str | None, as_json: bool,
                      expires: float | None) -> None:
    remote_call(db, station_id, "share-lock", {"connector_id": connector, "locked": state == "locked"},
                as_json, expires)


@_remote("data-transfer", "Vendor-specific DataTransfer.")
@click.option("--vendor", required=True)
@click.option("--message-id")
@click.option("--data")
def remote_data_transfer(station_id: str, vendor: str, message_id: str | None, data: str | None,
                         db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "data-transfer",
                {"vendor_id": vendor, "message_id": message_id, "data": data}, as_json, expires)


@station.command("rotate-password")
@click.argument("station_id")
@click.option("--password", help="The new password (16-40 printable characters); default: a "
              "strong random one that nobody needs to see.")
@expires_option
@db_option
@json_option
def station_rotate_password(station_id: str, password: str | None, db: str | None,
                            as_json: bool, expires: float | None) -> None:
    """Give a connected station a new password: 1.6 AuthorizationKey / 2.0.1
    BasicAuthPassword. It is valid once the station accepted it, and the old one until the
    station has connected with the new one, so the station is never locked out."""
    from cocharge.stations.commands import valid_password

    if password is not None and not valid_password(password):
        fail("--password must be 16 to 40 printable ASCII characters without spaces")
    remote_call(db, station_id, "rotate-password", {"password": password}, as_json, expires)


# --- sharing: rules, bookings, groups, queued commands ---------------------------------------

def _rule_error(func: Callable[[], T]) -> T:
    from cocharge.stations.policy import RuleError

    try:
        return func()
    except RuleError as exc:
        fail(str(exc))
        raise  # unreachable


@station.command("rules")
@click.argument("station_id")
@click.option("--connector", default=0, show_default=True, type=click.IntRange(0, 64),
              help="Rules for one connector (0 = the whole station).")
@click.option("--window", "windows", multiple=True,
              help="Opening window, repeatable: 'mon-fri 19:00-23:00', 'sat,sun 00:00-24:00', "
                   "'fri 22:00-02:00' (crosses midnight). Replaces the windows.")
@click.option("--always-open", is_flag=True, help="Remove the windows: open around the clock.")
@click.option("--closed", "closed_dates", multiple=True, help="Closed date YYYY-MM-DD, repeatable.")
@click.option("--allow-tag", "allow_tags", multiple=True, help="Share only with these tags (repeatable).")
@click.option("--allow-group", "allow_groups", multiple=True, help="... or members of these groups.")
@click.option("--allow-model", "allow_models", multiple=True, help="Only these vehicle models.")
@click.option("--allow-everyone", is_flag=True, help="Clear the tag, group and model restrictions.")
@click.option("--bookings/--no-bookings", default=None, help="Accept bookings.")
@click.option("--owner-tag", "owner_tags", multiple=True, help="The owner's own tags: always allowed.")
@click.option("--owner-priority", type=click.Choice(["on", "off"]),
              help="'on': the owner takes the charger back after the current session.")
@click.option("--tz", help="Time zone of the windows (IANA name, default Asia/Shanghai).")
@click.option("--min-credit", type=click.IntRange(0, 1_000_000),
              help="Members below this credit score may not charge here (0: no minimum).")
@click.option("--clear", is_flag=True, help="Remove all rules: the station is no longer share-managed.")
@db_option
@json_option
def station_rules(station_id: str, connector: int, windows: tuple[str, ...], always_open: bool,
                  closed_dates: tuple[str, ...], allow_tags: tuple[str, ...],
                  allow_groups: tuple[str, ...], allow_models: tuple[str, ...], allow_everyone: bool,
                  bookings: bool | None, owner_tags: tuple[str, ...], owner_priority: str | None,
                  tz: str | None, min_credit: int | None, clear: bool, db: str | None,
                  as_json: bool) -> None:
    """Show or change the owner's sharing rules (without options: show them)."""
    from datetime import date

    from cocharge.stations import sharing
    from cocharge.stations.policy import parse_window

    changes: dict[str, Any] = {}
    if windows and always_open:
        fail("--window and --always-open contradict each other: give one")
    if windows:
        changes["windows"] = tuple(_rule_error(functools.partial(parse_window, w)) for w in windows)
    if always_open:
        changes["windows"] = ()
    if closed_dates:
        try:
            changes["closed_dates"] = frozenset(date.fromisoformat(d) for d in closed_dates)
        except ValueError as exc:
            fail(f"--closed: {exc}; write dates as YYYY-MM-DD")
    if allow_everyone:
        changes.update(allowed_tags=frozenset(), allowed_groups=frozenset(), allowed_models=frozenset())
    if allow_tags:
        changes["allowed_tags"] = frozenset(allow_tags)
    if allow_groups:
        changes["allowed_groups"] = frozenset(allow_groups)
    if allow_models:
        changes["allowed_models"] = frozenset(allow_models)
    if bookings is not None:
        changes["bookings"] = bookings
    if owner_tags:
        changes["owner_tags"] = frozenset(owner_tags)
    if owner_priority is not None:
        changes["owner_priority"] = owner_priority == "on"
    if tz:
        changes["tz"] = tz
    if min_credit is not None:
        changes["min_credit"] = min_credit
    if clear:
        if changes:
            fail("--clear removes every rule: give it alone")
        with_store(db, lambda e: sharing.clear_rules(e, station_id))
        click.echo(f"station {station_id}: rules removed, no longer share-managed")
        return
    if changes:
        with_store(db, lambda e: sharing.set_rules(e, station_id, connector, changes))
    shown = with_store(db, lambda e: sharing.show_rules(e, station_id))
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    if not shown:
        click.echo(f"station {station_id}: no rules (open to every member, not share-managed)")
    for scope, rules in shown.items():
        click.echo(f"{station_id} {scope}:")
        for key, value in rules.items():
            if isinstance(value, list):
                value = ", ".join(value) or "-"
            click.echo(f"  {key:>16}: {value}")


@member.command("update")
@click.argument("tag")
@click.option("--groups", help="Comma-separated groups the member belongs to ('' to clear).")
@click.option("--vehicle", help="The member's vehicle model, e.g. 'BYD Dolphin'.")
@click.option("--quota-kwh", type=click.FloatRange(0, 100000),
              help="Free energy per month, kWh (OEM membership: 50).")
@click.option("--green/--no-green", default=None, help="Chooses green energy (-10% at green chargers).")
@click.option("--household", help=HOUSEHOLD_HELP + " '' to clear.")
@click.option("--pay-with", help="coins, points or coins,points: they pay part of each session "
              "before the wallet (redeem.* in the rule table); '' for the wallet only.")
@db_option
def member_update(tag: str, groups: str | None, vehicle: str | None, quota_kwh: float | None,
                  green: bool | None, household: str | None, pay_with: str | None,
                  db: str | None) -> None:
    """Change what sharing and settlement look at: groups, vehicle, a monthly free quota set by
    hand (memberships give theirs: `cocharge membership`), green, paying with coins."""
    from cocharge.stations import sharing

    quota = round(quota_kwh * 1000) if quota_kwh is not None else None
    check_household(household)
    with_store(db, lambda e: sharing.update_member(e, tag, groups, vehicle, quota, green,
                                                   household, pay_with))
    click.echo(f"member {tag} updated")


def _when(text: str) -> datetime:
    from cocharge.stations import sharing

    try:
        return sharing.parse_when(text)
    except registry.RegistryError as exc:
        fail(str(exc))
        raise


@main.group()
def booking() -> None:
    """Bookings: a member reserves a connector for a time slot."""


@booking.command("add")
@click.argument("station_id")
@click.option("--connector", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--tag", required=True, help="The member's tag.")
@click.option("--from", "start", required=True,
              help="Slot start: 2026-11-24T19:00 (Asia/Shanghai time) or with an offset/Z.")
@click.option("--to", "end", required=True, help="Slot end, same forms.")
@db_option
def booking_add(station_id: str, connector: int, tag: str, start: str, end: str,
                db: str | None) -> None:
    """Book a slot; the charger is reserved (ReserveNow) when the slot starts."""
    from cocharge.stations import sharing

    booking_id = with_store(db, lambda e: sharing.add_booking(
        e, station_id, connector, tag, _when(start), _when(end)))
    click.echo(f"booking {booking_id}: {station_id} connector {connector} for {tag}")


@booking.command("list")
@click.option("--station", "station_id")
@db_option
@json_option
def booking_list(station_id: str | None, db: str | None, as_json: bool) -> None:
    """Bookings with their status (booked, honoured, cancelled, no_show)."""
    from cocharge.stations import sharing

    emit(with_store(db, lambda e: sharing.list_bookings(e, station_id)), as_json,
         ["id", "station", "connector", "tag", "from", "to", "status", "reserved", "group", "session"])


@booking.command("cancel")
@click.argument("booking_id", type=click.IntRange(1))
@db_option
def booking_cancel(booking_id: int, db: str | None) -> None:
    """Cancel a booking (the running gateway cancels the charger's reservation)."""
    from cocharge.stations import sharing

    with_store(db, lambda e: sharing.cancel_booking(e, booking_id))
    click.echo(f"booking {booking_id} cancelled")


@main.group()
def group() -> None:
    """Group charging (拼团): members share a slot once enough of them join."""


def _slot(text: str) -> tuple[datetime, datetime]:
    """'2026-11-24T19:00-21:00' (same day), or 'FROM/TO' with full times."""
    if "/" in text:
        start, _, end = text.partition("/")
        return _when(start), _when(end)
    head, sep, tail = text.rpartition("-")
    if not sep or ":" not in tail or "T" not in head.replace(" ", "T"):
        fail(f"--slot {text!r}: write 2026-11-24T19:00-21:00 or 2026-11-24T19:00/2026-11-25T01:00")
    day = head.replace(" ", "T").split("T")[0]
    return _when(head), _when(f"{day}T{tail}")


@group.command("create")
@click.option("--station", "station_id", required=True)
@click.option("--slot", required=True, help="2026-11-24T19:00-21:00 (station time) or FROM/TO.")
@click.option("--min", "min_members", type=click.IntRange(2, 100),
              help="Members it needs to form (default and least: group.min_members, 5).")
@click.option("--initiator", help="Tag of the member who starts the group (joins it).")
@db_option
def group_create(station_id: str, slot: str, min_members: int | None, initiator: str | None,
                 db: str | None) -> None:
    """Open a group for a slot at a station; it forms at --min members."""
    from cocharge.stations import sharing

    start, end = _slot(slot)
    group_id = with_store(db, lambda e: sharing.create_group(e, station_id, start, end,
                                                             min_members, initiator))
    shown = with_store(db, lambda e: sharing.show_group(e, group_id))
    click.echo(f"group {group_id} forming at {station_id}: needs {shown['min_members']} members")


@group.command("join")
@click.argument("group_id", type=click.IntRange(1))
@click.option("--tag", required=True)
@db_option
def group_join(group_id: int, tag: str, db: str | None) -> None:
    """Join a group; when it reaches its minimum every member's slot is booked."""
    from cocharge.stations import sharing

    status = with_store(db, lambda e: sharing.join_group(e, group_id, tag))
    click.echo(f"{tag} joined group {group_id}: {status}")


@group.command("show")
@click.argument("group_id", type=click.IntRange(1))
@db_option
@json_option
def group_show(group_id: int, db: str | None, as_json: bool) -> None:
    """A group, its members and their booked slots."""
    from cocharge.stations import sharing

    shown = with_store(db, lambda e: sharing.show_group(e, group_id))
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    for key in ("id", "station", "from", "to", "min_members", "status", "initiator", "free_session"):
        click.echo(f"{key:>12}: {shown[key]}")
    click.echo(f"{'members':>12}: {', '.join(shown['members']) or '-'}")
    for line in shown["bookings"]:
        click.echo(f"{'':>12}  {line}")


@group.command("list")
@db_option
@json_option
def group_list(db: str | None, as_json: bool) -> None:
    """All groups."""
    from cocharge.stations import sharing

    emit(with_store(db, sharing.list_groups), as_json,
         ["id", "station", "from", "to", "members", "min", "status"])


@main.group()
def commands() -> None:
    """Commands kept for offline stations."""


@commands.command("list")
@click.option("--station", "station_id")
@db_option
@json_option
def commands_list(station_id: str | None, db: str | None, as_json: bool) -> None:
    """Queued commands: pending, delivered (with the station's answer), failed or expired."""
    from cocharge.stations import sharing

    emit(with_store(db, lambda e: sharing.list_commands(e, station_id)), as_json,
         ["id", "station", "command", "args", "queued", "expires", "status", "delivered", "result"])


# --- settlement: tariffs, split terms, wallets, the ledger -----------------------------------

def payment_ref(ref: str | None, kind: str) -> str:
    """The payment reference of a top-up or purchase: the operator's, or a new one printed
    so that a retry (`--ref` it) cannot book the money twice."""
    if ref is not None:
        if not ref.strip() or len(ref) > 64:
            fail(f"--ref {ref!r}: give the payment's reference (1 to 64 characters)")
        return ref
    import uuid

    made = f"{kind}-{datetime.now().strftime('%Y%m%d')}-{uuid.uuid4().hex[:10]}"
    click.echo(f"no --ref given: this {kind} is {made} (to retry it, give --ref {made}: it is "
               "then applied once)", err=True)
    return made


def _money(func: Callable[[], T]) -> T:
    from cocharge.settlement.money import MoneyError

    try:
        return func()
    except MoneyError as exc:
        fail(str(exc))
        raise


def with_settlement(db: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """with_store, turning settlement and ledger refusals into exit 2."""
    from cocharge.settlement.ledger import LedgerError
    from cocharge.settlement.settle import SettlementError

    async def guarded(engine: Any) -> T:
        try:
            return await work(engine)
        except (SettlementError, LedgerError) as exc:
            fail(str(exc))
            raise

    return with_store(db, guarded)


@main.group()
def tariff() -> None:
    """Connector tariffs (costed like OCPI 2.2.1 CDRs); a session keeps the tariff it started with."""


@tariff.command("set")
@click.argument("station_id")
@click.option("--connector", default=0, show_default=True, type=click.IntRange(0, 64),
              help="0 = every connector of the station.")
@click.option("--per-kwh", required=True, help="CNY per kWh, e.g. 1.5")
@click.option("--per-hour", help="CNY per hour of charging (time package), e.g. 30")
@click.option("--tod", "tods", multiple=True,
              help="Time-of-day energy price 'HH:MM-HH:MM=PRICE' (station time; may wrap midnight), "
                   "repeatable, e.g. '22:00-06:00=0.9'.")
@click.option("--parking-per-hour", help="CNY per hour parked without charging.")
@click.option("--flat", help="CNY per session.")
@click.option("--idle-per-min", default="0.5", show_default=True, help="Overstay fee, CNY per minute.")
@click.option("--idle-grace-min", default=15, show_default=True, type=click.IntRange(0, 1440))
@click.option("--idle-cap", default="60", show_default=True, help="Overstay fee cap, CNY.")
@click.option("--min-price", help="Minimum session price, CNY.")
@click.option("--max-price", help="Maximum session price (before the idle fee), CNY.")
@click.option("--energy-step-wh", default=1, show_default=True, type=click.IntRange(1, 100000),
              help="Energy is billed in steps of this size (OCPI step_size).")
@click.option("--time-step-s", default=1, show_default=True, type=click.IntRange(1, 86400),
              help="Charging and parking time are billed in steps of this size.")
@click.option("--tz", default="Asia/Shanghai", show_default=True)
@db_option
def tariff_set(station_id: str, connector: int, per_kwh: str, per_hour: str | None,
               tods: tuple[str, ...], parking_per_hour: str | None, flat: str | None,
               idle_per_min: str, idle_grace_min: int, idle_cap: str, min_price: str | None,
               max_price: str | None, energy_step_wh: int, time_step_s: int, tz: str,
               db: str | None) -> None:
    """Set a connector's (or the station's) tariff from now on."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from cocharge.settlement import settle
    from cocharge.settlement.money import parse_cny, parse_price
    from cocharge.settlement.overstay import IdleFeeRule
    from cocharge.settlement.tariff import simple_tariff

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        fail(f"--tz {tz!r}: use an IANA time zone such as Asia/Shanghai")
    parsed_tod = []
    for text in tods:
        hours, sep, price = text.partition("=")
        start, dash, end = hours.partition("-")
        ok = sep and dash and all(len(t) == 5 and t[2] == ":" and t.replace(":", "").isdigit()
                                  and int(t[:2]) <= 24 and int(t[3:]) < 60 for t in (start, end))
        if not ok or start == end:
            fail(f"--tod {text!r}: write HH:MM-HH:MM=PRICE, e.g. 22:00-06:00=0.9")
        parsed_tod.append((start, end, _money(functools.partial(parse_price, price, "--tod price"))))
    idle = IdleFeeRule(idle_grace_min * 60, _money(lambda: parse_cny(idle_per_min, "--idle-per-min",
                                                                     allow_zero=True)),
                       _money(lambda: parse_cny(idle_cap, "--idle-cap", allow_zero=True)))
    made = _money(lambda: simple_tariff(
        parse_price(per_kwh, "--per-kwh"),
        parse_price(per_hour, "--per-hour") if per_hour else None, parsed_tod, idle,
        parse_cny(min_price, "--min-price", allow_zero=True) if min_price else None,
        parse_cny(max_price, "--max-price") if max_price else None,
        parse_price(parking_per_hour, "--parking-per-hour") if parking_per_hour else None,
        parse_price(flat, "--flat") if flat else None, energy_step_wh, time_step_s, tz))
    tariff_id = with_settlement(db, lambda e: settle.set_tariff(e, station_id, connector, made))
    scope = f"connector {connector}" if connector else "every connector"
    click.echo(f"tariff {tariff_id} for {station_id} {scope}: {per_kwh} CNY/kWh"
               + (f" + {per_hour} CNY/h" if per_hour else "")
               + "".join(f", {a}-{b} {p} CNY/kWh" for a, b, p in parsed_tod))


@tariff.command("show")
@click.argument("station_id")
@db_option
def tariff_show(station_id: str, db: str | None) -> None:
    """Every tariff of the station, oldest first (JSON)."""
    from cocharge.settlement import settle

    click.echo(json.dumps(with_settlement(db, lambda e: settle.show_tariffs(e, station_id)), indent=2))


@main.group()
def split() -> None:
    """Revenue-share terms of a station."""


@split.command("set")
@click.argument("station_id")
@click.option("--model", type=click.Choice(["host", "property"]))
@click.option("--host", "host_name", help="Host account name (default: the station's owner).")
@click.option("--property", "property_name", help="Property account name (property model).")
@click.option("--operator", "operator_name", help="Operator/installer account name (property model).")
@click.option("--platform-pct", help="Platform commission, percent (default 10).")
@click.option("--green-platform-pct", help="Commission at a green charger, percent (default 5).")
@click.option("--property-pct", help="The property's share, percent (default 30).")
@click.option("--green/--not-green", default=None, help="The host's own solar.")
@click.option("--free-days", type=click.IntRange(0, 3650), help="Days without commission (default 30).")
@click.option("--onboarded", help="The host's first day, YYYY-MM-DD (default: registration).")
@db_option
def split_set(station_id: str, model: str | None, host_name: str | None,
              property_name: str | None, operator_name: str | None, platform_pct: str | None,
              green_platform_pct: str | None, property_pct: str | None, green: bool | None,
              free_days: int | None, onboarded: str | None, db: str | None) -> None:
    """Change a station's split terms."""
    from cocharge.settlement import settle

    changes: dict[str, Any] = {}
    for key, value in (("model", model), ("host", host_name), ("property", property_name),
                       ("operator", operator_name), ("green", green), ("free_days", free_days)):
        if value is not None:
            changes[key] = value
    for key, text in (("platform_pct", platform_pct), ("green_platform_pct", green_platform_pct),
                      ("property_pct", property_pct)):
        if text is not None:
            try:
                changes[key] = Decimal(text)
            except InvalidOperation:
                fail(f"--{key.replace('_', '-')} {text!r} is not a number of percent")
    if onboarded is not None:
        try:
            changes["onboarded_at"] = datetime.fromisoformat(onboarded)
        except ValueError:
            fail(f"--onboarded {onboarded!r}: write a date as YYYY-MM-DD")
    if not changes:
        fail("nothing to change: give --model, --platform-pct, --green, ...")
    terms = with_settlement(db, lambda e: settle.set_terms(e, station_id, changes))
    click.echo(f"{station_id}: {terms.model} model, platform {terms.platform_pct}%"
               + (f" (green {terms.green_platform_pct}%)" if terms.green else ""))


@split.command("show")
@click.argument("station_id")
@db_option
def split_show(station_id: str, db: str | None) -> None:
    """The station's split terms (JSON)."""
    from cocharge.settlement import settle

    async def work(engine: Any) -> dict[str, Any]:
        async with engine.connect() as conn:
            return settle.terms_to_json(await settle.terms_of(conn, station_id))

    click.echo(json.dumps(with_settlement(db, work), indent=2))


@main.group()
def wallet() -> None:
    """Members' prepaid wallets."""


@wallet.command("topup")
@click.argument("tag")
@click.argument("amount")
@click.option("--ref", help="Payment reference: a top-up with the same reference is applied "
              "once (none given: one is made and printed).")
@db_option
def wallet_topup(tag: str, amount: str, ref: str | None, db: str | None) -> None:
    """Add AMOUNT CNY to a member's wallet (a ledger transfer from external:topup)."""
    from cocharge.settlement import ledger
    from cocharge.settlement.money import fmt, parse_cny

    fen = _money(lambda: parse_cny(amount, "AMOUNT"))
    ref = payment_ref(ref, "topup")

    async def work(engine: Any) -> tuple[ledger.Posted, int]:
        async with engine.begin() as conn:
            if await conn.scalar(select(members.c.tag).where(members.c.tag == tag)) is None:
                fail(f"no member with tag {tag!r}: see `cocharge member list`")
            transfer_id = f"topup:{ref}"
            done = await ledger.post(conn, [ledger.Transfer(
                transfer_id, "external:topup", f"wallet:{tag}", fen, kind="topup", ref=ref)],
                transfer_id)
            return done, await ledger.balance(conn, f"wallet:{tag}")

    done, balance = with_settlement(db, work)
    word = "already applied" if done.skipped else f"topped up {fmt(fen)} CNY"
    click.echo(f"wallet {tag}: {word}; balance {fmt(balance)} CNY")


@main.group("ledger")
def ledger_group() -> None:
    """The double-entry, hash-chained ledger."""


@ledger_group.command("balances")
@click.option("--asset", help="Only this asset (CNY, QUOTA_WH, ...).")
@db_option
@json_option
def ledger_balances(asset: str | None, db: str | None, as_json: bool) -> None:
    """Every account's balance (CNY in fen shown as CNY)."""
    from cocharge.settlement import ledger
    from cocharge.settlement.money import fmt

    rows = with_settlement(db, lambda e: ledger.balances(e, asset))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table([{**r, "balance": fmt(r["balance"]) if r["asset"] == "CNY" else r["balance"]}
           for r in rows], ["account", "asset", "balance"])


def _day(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r}: write YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")
        raise


@ledger_group.command("statement")
@click.argument("account")
@click.option("--from", "since", help="From this UTC date/time (YYYY-MM-DD).")
@click.option("--to", "until", help="Until this UTC date/time (exclusive).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a table.")
@db_option
@json_option
def ledger_statement(account: str, since: str | None, until: str | None, as_csv: bool,
                     db: str | None, as_json: bool) -> None:
    """An account's transfers with the running balance (e.g. wallet:ANN001, platform)."""
    import csv as csv_module

    from cocharge.settlement import ledger

    lines = with_settlement(db, lambda e: ledger.statement(e, account, _day(since, "--from"),
                                                           _day(until, "--to")))
    if as_csv:
        writer = csv_module.writer(sys.stdout)
        columns = ["seq", "at", "id", "kind", "asset", "change", "balance", "other", "ref", "memo"]
        writer.writerow(columns)
        for line in lines:
            writer.writerow([line[c] if line[c] is not None else "" for c in columns])
        return
    if not as_json:
        from cocharge.settlement.money import fmt

        lines = [{**line, "change": fmt(line["change"]), "balance": fmt(line["balance"])}
                 if line["asset"] == "CNY" else line for line in lines]
    emit(lines, as_json, ["seq", "at", "kind", "asset", "change", "balance", "other", "ref"])


@ledger_group.command("verify")
@db_option
def ledger_verify(db: str | None) -> None:
    """Recompute the hash chain, per-asset sums and balances; exit 1 and name the first problem."""
    from cocharge.settlement import ledger

    verdict = with_settlement(db, ledger.verify)
    if verdict.ok:
        sums = ", ".join(f"{a} {v}" for a, v in sorted(verdict.sums.items())) or "no assets yet"
        click.echo(f"ledger OK: {verdict.transfers} transfers, hash chain intact, sums: {sums}")
        return
    for problem in verdict.problems:
        click.echo(f"ledger BROKEN: {problem}", err=True)
    sys.exit(1)


@ledger_group.command("export")
@click.option("--csv", "as_csv", is_flag=True, help="CSV (the default).")
@db_option
@json_option
def ledger_export(as_csv: bool, db: str | None, as_json: bool) -> None:
    """Every transfer with its hashes, for auditors (CSV, or JSON with --json)."""
    from cocharge.settlement import ledger

    if as_json:
        async def rows(engine: Any) -> list[dict[str, Any]]:
            return [{k: (v.isoformat() if isinstance(v, datetime) else v)
                     for k, v in r._mapping.items()} async for r in ledger.transfers(engine)]

        click.echo(json.dumps(with_settlement(db, rows), indent=2))
        return
    click.echo(with_settlement(db, ledger.export_csv), nl=False)


@main.command()
@click.option("--since", help="Only sessions that ended since this UTC date (YYYY-MM-DD).")
@db_option
@json_option
def settle(since: str | None, db: str | None, as_json: bool) -> None:
    """Settle every completed session not settled yet (safe to run again)."""
    from cocharge.settlement import settle as settlement
    from cocharge.settlement.money import fmt

    done = with_settlement(db, lambda e: settlement.settle_pending(e, _day(since, "--since")))
    rows = [{"session": s.session_id, "cost": fmt(s.cdr.total_fen),
             "discounts": fmt(sum(a for _, a in s.priced.lines)), "payable": fmt(s.priced.payable_fen),
             "paid": fmt(s.paid_fen), "owed": fmt(s.owed_fen),
             "split": ", ".join(f"{p} {fmt(a)}" for p, a in s.split)} for s in done]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{len(done)} sessions settled")
    if rows:
        table(rows, ["session", "cost", "discounts", "payable", "paid", "owed", "split"])


@main.group()
def calc() -> None:
    """Calculators for would-be hosts."""


@calc.command("revenue")
@click.option("--power-kw", required=True, type=click.FloatRange(1, 400),
              help="Charger power: 7, 11, 22 (AC) or more (DC).")
@click.option("--open", "windows", multiple=True,
              help="Opening window, repeatable: 'mon-fri 19:00-23:00' (default: always open).")
@click.option("--price", required=True, help="CNY per kWh.")
@click.option("--per-hour", help="Also price it as a time package: CNY per hour of charging "
              "(e.g. 30).")
@click.option("--area", help="Use this area's own session history and prices, and rank the "
              "estimate against the area's hosts.")
@click.option("--ranking-chart", type=click.Path(dir_okay=False, writable=True),
              help="Draw the area's hosts' monthly revenue and this estimate to this SVG.")
@click.option("--platform-pct", default="10", show_default=True, help="Platform commission, percent.")
@click.option("--sessions-per-day", help="What-if: sessions a day (instead of the demand model).")
@click.option("--kwh-per-session", help="kWh per session (default: from the demand model, 20).")
@click.option("--kwh-per-month", help="What-if: kWh sold a month.")
@click.option("--chart", "chart_path", type=click.Path(dir_okay=False, writable=True),
              help="Draw utilisation by hour of the week to this PNG (needs matplotlib).")
@db_option
@json_option
def calc_revenue(power_kw: float, windows: tuple[str, ...], price: str, per_hour: str | None,
                 area: str | None, ranking_chart: str | None,
                 platform_pct: str, sessions_per_day: str | None, kwh_per_session: str | None,
                 kwh_per_month: str | None, chart_path: str | None, db: str | None,
                 as_json: bool) -> None:
    """Estimate a charger's monthly revenue, utilisation and the host's income."""
    from cocharge.settlement import calculator, revenue
    from cocharge.settlement.money import fmt, parse_price
    from cocharge.stations.policy import parse_window

    parsed = tuple(_rule_error(functools.partial(parse_window, w)) for w in windows)
    unit_price = _money(lambda: parse_price(price, "--price"))

    def number(text: str | None, option: str) -> Decimal | None:
        if text is None:
            return None
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = Decimal(-1)
        if not value.is_finite() or value <= 0:
            fail(f"{option} {text!r}: give a positive number")
        return value

    commission = number(platform_pct, "--platform-pct") if platform_pct != "0" else Decimal(0)
    if commission is not None and commission > 100:
        fail("--platform-pct must be between 0 and 100")
    if sessions_per_day and kwh_per_month:
        fail("--sessions-per-day and --kwh-per-month are two what-ifs: give one")
    if chart_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--chart needs matplotlib: pip install 'cocharge[chart]'")

    hourly = _money(lambda: parse_price(per_hour, "--per-hour")) if per_hour else None
    if ranking_chart and not area:
        fail("--ranking-chart needs --area (the hosts it ranks against)")

    async def work(engine: Any) -> tuple[Any, list[Decimal], dict[str, int], Any]:
        from cocharge.settlement import loyalty

        return (await calculator.area_demand(engine, area),
                await calculator.area_prices(engine, area),
                await calculator.area_host_revenue(engine, area),
                await loyalty.load_rules(engine))

    from cocharge.store.db import sqlite_file

    path = sqlite_file(db)
    if path is not None and not os.path.exists(path):
        # A would-be host trying the calculator before any gateway runs: no history, the
        # default demand model (and no database made for it).
        click.echo(f"(no database at {path}: estimating from the default demand model)",
                   err=True)
        from cocharge.settlement.rewards import DEFAULTS

        no_prices: list[Decimal] = []
        no_hosts: dict[str, int] = {}
        demand, prices, hosts, rules = revenue.prior_demand(), no_prices, no_hosts, DEFAULTS
    else:
        demand, prices, hosts, rules = with_store(db, work)
    result = revenue.estimate(Decimal(str(power_kw)), parsed, unit_price, demand,
                              commission or Decimal(0), prices,
                              number(sessions_per_day, "--sessions-per-day"),
                              number(kwh_per_session, "--kwh-per-session"),
                              number(kwh_per_month, "--kwh-per-month"))
    if chart_path:
        revenue.chart(result, chart_path, f"{power_kw:g} kW, {'; '.join(windows) or 'always open'}, "
                                          f"{price} CNY/kWh")
    extra: dict[str, Any] = {
        "tax_estimate_per_month": fmt(rules.tax.estimate(result.host_fen)) if rules.tax else "0.00",
        "tax_table": rules.tax.name if rules.tax else "",
        "pricing_advice": revenue.pricing_advice(demand, parsed, unit_price)}
    if hourly is not None:
        extra["time_package"] = {"per_hour": str(hourly),
                                 "revenue_per_month": fmt(revenue.time_package_fen(result, hourly)),
                                 "per_kwh_equivalent": str((hourly / Decimal(str(power_kw)))
                                                           .quantize(Decimal("0.01")))}
    if area:
        rank, of = revenue.ranking(result.revenue_fen, list(hosts.values()))
        extra["area_ranking"] = {"area": area, "rank": rank, "of": of,
                                 "hosts": {k: fmt(v) for k, v in sorted(hosts.items())}}
        if ranking_chart:
            from cocharge.web.charts import bars, standalone

            names = [*sorted(hosts), "you"]
            values = [hosts[k] / 100 for k in sorted(hosts)] + [result.revenue_fen / 100]
            chart = bars(values, names, f"Revenue a month in {area} (CNY), last 30 days", " CNY")
            with open(ranking_chart, "w", encoding="utf-8") as f:
                f.write(standalone(chart))
    if as_json:
        click.echo(json.dumps({**result.as_json(), **extra}, indent=2))
        return
    shown = result.as_json()
    click.echo(f"{power_kw:g} kW charger, open {shown['open_hours_per_week']} h a week, "
               f"{price} CNY/kWh")
    click.echo(f"  demand: {shown['demand']}")
    click.echo(f"  energy sold:        {shown['kwh_per_month']} kWh a month "
               f"({shown['sessions_per_month']} sessions)")
    click.echo(f"  revenue:            {shown['revenue_per_month']} CNY a month "
               f"({fmt(result.per_day_fen())} a day)")
    click.echo(f"  host income:        {shown['host_income_per_month']} CNY")
    click.echo(f"  platform fee:       {shown['platform_fee_per_month']} CNY "
               "(0 in the host's first 30 days)")
    click.echo(f"  utilisation:        {Decimal(str(shown['utilisation_of_open_hours'])) * 100:.1f} % of "
               f"the open hours, {shown['charging_hours_per_day']} h charging a day")
    if hourly is not None:
        package = extra["time_package"]
        click.echo(f"  as a time package:  {package['revenue_per_month']} CNY a month at {hourly} "
                   f"CNY/hour (like {package['per_kwh_equivalent']} CNY/kWh at full power)")
    click.echo(f"  tax estimate:       {extra['tax_estimate_per_month']} CNY a month on the host "
               f"income ({extra['tax_table']}; an estimate, see docs/payouts.md)")
    if area:
        ranked = extra["area_ranking"]
        click.echo(f"  in {area}:        rank {ranked['rank']} of {ranked['of']} hosts by revenue "
                   "(last 30 days)")
    for line in result.suggestions:
        click.echo(f"  suggestion: {line}")
    for line in extra["pricing_advice"]:
        click.echo(f"  pricing: {line}")
    if chart_path:
        click.echo(f"  chart: {chart_path}")
    if ranking_chart:
        click.echo(f"  ranking chart: {ranking_chart}")


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
@click.option("--stay", is_flag=True, help="Keep the stations connected after their sessions, "
              "answering `cocharge remote` commands, until Ctrl-C or SIGTERM.")
def sim_run(url: str, stations: int, protocol: str, id_prefix: str, tag: str | None,
            sessions_count: int, energy_kwh: float, speed: float, password: str | None,
            stay: bool) -> None:
    """Run N virtual wallboxes, each charging K sessions, then exit (or --stay)."""
    import signal

    from cocharge.simulators.fleet import run_fleet

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
                               energy_kwh * 1000, speed, password, leave, charged)

    done = asyncio.run(run())
    click.echo(f"{done} sessions completed on {stations} stations")


@main.command()
@click.option("--stations", default=6, show_default=True, type=click.IntRange(4, 50))
def demo(stations: int) -> None:
    """A gateway, simulated wallboxes (both protocols) and real sessions, then a report."""
    from cocharge.demo import run_demo

    asyncio.run(run_demo(stations))


# --- mqtt -----------------------------------------------------------------------------------

@main.group()
def mqtt() -> None:
    """The MQTT side: property backends (docs/mqtt.md)."""


@mqtt.command("acl")
@click.option("--prefix", default="cocharge/v1", show_default=True, help="The topic prefix of --mqtt.")
@click.option("--gateway-user", default="cocharge", show_default=True,
              help="The MQTT user name the gateways connect with.")
@click.option("--backend", "backends", multiple=True,
              help="A backend that is not a property (e.g. the community app reporting reward "
                   "events): it gets its own cmd/+ and ack topics. Repeatable.")
@db_option
def mqtt_acl(prefix: str, gateway_user: str, backends: tuple[str, ...], db: str | None) -> None:
    """Print a Mosquitto ACL file: each property sees and commands only its own stations."""
    from cocharge.gateway.mqtt import acl_file

    async def properties(engine: Any) -> list[str]:
        from cocharge.store.schema import station_terms

        async with engine.connect() as conn:
            bodies = (await conn.execute(select(station_terms.c.body))).scalars().all()
        return [str(p) for p in (json.loads(b).get("property") for b in bodies) if p]

    prefix = prefix.strip("/")
    if not prefix or any(c in prefix for c in "+#"):
        fail(f"--prefix {prefix!r}: a topic prefix without + or #, e.g. cocharge/v1")
    for name in backends:
        if not name or any(c in name for c in "/+# "):
            fail(f"--backend {name!r}: a name without / + # or spaces")
    click.echo(acl_file(with_store(db, properties) + list(backends), prefix, gateway_user),
               nl=False)


# The rewards commands live in their own module; importing it registers them on the groups above.
from cocharge import (
    cli_admin,  # noqa: F401
    cli_load,  # noqa: F401
    cli_money,  # noqa: F401
    cli_ops,  # noqa: F401
    cli_rewards,  # noqa: F401
    cli_security,  # noqa: F401
)

if __name__ == "__main__":
    # Run as `python -m cocharge.cli`: this file is `__main__`, and the rewards commands were
    # registered on the groups of the imported `cocharge.cli`; run that one.
    from cocharge.cli import main as cocharge_main

    cocharge_main()
