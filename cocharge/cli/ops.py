"""Running and keeping the system: `serve`, `db`, `config`, `mqtt`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import sqlite3
import ssl
import subprocess
from typing import Any

import click
from click.core import ParameterSource
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from cocharge.cli.common import (
    db_option,
    emit,
    fail,
    json_option,
)
from cocharge.cli.database import with_store
from cocharge.config import GatewaySettings
from cocharge.configfile import effective
from cocharge.gateway.mqtt import acl_file
from cocharge.gateway.quirks import QuirkError, load_quirks
from cocharge.gateway.server import client_cas, tls_context
from cocharge.mqtt_url import parse_mqtt_url
from cocharge.stations import ca
from cocharge.store.db import (
    NEWEST,
    DatabaseURLError,
    StoreError,
    describe_error,
    identity,
    make_engine,
    resolve_url,
    schema_of,
    shown,
    sqlite_file,
)
from cocharge.store.schema import nodes, sessions, station_terms, stations

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

@click.command()
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


    # `serve` alone needs the gateway (and its web stack): the other commands here stay light
    from cocharge.node import run_event_loop, serve_forever

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



async def _opened(_engine: Any) -> None:
    """Nothing more to do once the database is open (created or checked by with_store)."""


@click.group("db")
def db_group() -> None:
    """The database: create, inspect, upgrade, back up."""


@db_group.command("init")
@db_option
def db_init(db: str | None) -> None:
    """Create a new database (or bring an existing one to this cocharge's schema)."""
    path = sqlite_file(db)
    if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        fail(f"cannot create {path}: its directory does not exist")
    with_store(db, _opened, create=True)
    click.echo(f"database {shown(db)} ready (schema version {NEWEST})")


@db_group.command("upgrade")
@db_option
def db_upgrade(db: str | None) -> None:
    """Migrate an existing database to this cocharge's schema (stop old nodes first)."""
    before = _status(db)
    if before["schema"] is None:
        fail(f"{shown(db)} is not a cocharge database: create one with `cocharge db init`")
    with_store(db, _opened, create=True)
    if before["schema"] == NEWEST:
        click.echo(f"database {shown(db)} is already at schema version {NEWEST}")
    else:
        click.echo(f"database {shown(db)} upgraded from schema version {before['schema']} to "
                   f"{NEWEST}")


def _status(db: str | None) -> dict[str, Any]:
    """What `db status` shows; a database that does not exist is an error (exit 2)."""
    path = sqlite_file(db)
    if path is not None and not os.path.exists(path):
        fail(f"no database at {path}: create it with `cocharge db init --db {path}`")

    async def run() -> dict[str, Any]:
        engine = make_engine(db)
        try:
            version = await schema_of(engine)
            info: dict[str, Any] = {"database": shown(db), "schema": version, "newest": NEWEST}
            if version is None:
                info["state"] = "not a cocharge database"
                return info
            info["state"] = ("current" if version == NEWEST else
                             "older: run `cocharge db upgrade`" if version < NEWEST else
                             "newer: upgrade cocharge")
            if version == NEWEST:
                here = await identity(engine)
                async with engine.connect() as conn:
                    info["stations"] = (await conn.execute(
                        select(func.count()).select_from(stations))).scalar()
                    info["active_sessions"] = (await conn.execute(
                        select(func.count()).select_from(sessions)
                        .where(sessions.c.status == "active"))).scalar()
                    rows = (await conn.execute(select(nodes.c.id, nodes.c.operator_url,
                                                      nodes.c.database))).all()
                info["running_nodes"] = [f"{r.id} {r.operator_url}" for r in rows
                                         if r.database in (None, here)]
                copied = [r.id for r in rows if r.database not in (None, here)]
                if copied:
                    info["copied_node_rows"] = (f"{len(copied)} (of the database this was "
                                                "copied from: never contacted)")
            return info
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (DatabaseURLError, StoreError) as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - every database failure is one line
        fail(describe_error(exc, db))
    raise AssertionError("unreachable")


@db_group.command("status")
@db_option
@json_option
def db_status(db: str | None, as_json: bool) -> None:
    """The database's schema version against this cocharge's, and what runs on it."""
    info = _status(db)
    emit(info, as_json)
    if info["schema"] is None or info["schema"] != NEWEST:
        raise SystemExit(2)


@db_group.command("backup")
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite TARGET if it exists.")
@db_option
def db_backup(target: str, force: bool, db: str | None) -> None:
    """Copy the database to TARGET while the gateway runs (SQLite: a database file;
    PostgreSQL: a pg_dump archive for pg_restore). The copy never carries the running
    nodes: a command given on the copy cannot reach the live gateway."""
    if os.path.exists(target) and not force:
        fail(f"{target} exists: choose another file, or add --force to overwrite it")
    if not os.path.isdir(os.path.dirname(os.path.abspath(target))):
        fail(f"cannot write {target}: its directory does not exist")

    with_store(db, _opened)  # an existing cocharge database at the current schema
    path = sqlite_file(db)
    if path is not None:
        _backup_sqlite(path, target)
    else:
        _backup_postgresql(db, target)
    click.echo(f"backup of {shown(db)} written to {target} (without the running nodes)")


def _backup_sqlite(path: str, target: str) -> None:
    partial = target + ".partial"
    if os.path.exists(partial):
        os.remove(partial)
    try:
        source = sqlite3.connect(path, timeout=30)
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)  # SQLite's online backup: consistent while the gateway writes
            copy.execute("DELETE FROM nodes")
            copy.execute("UPDATE stations SET node = NULL")
            copy.commit()
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
            source.close()
    except sqlite3.Error as exc:
        if os.path.exists(partial):
            os.remove(partial)
        fail(f"backup failed: {exc}")
    os.replace(partial, target)


def _backup_postgresql(db: str | None, target: str) -> None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        fail("pg_dump is not installed: install PostgreSQL's client tools "
             "(Debian: apt-get install postgresql-client)")
    url = resolve_url(db).replace("postgresql+asyncpg://", "postgresql://", 1)
    done = subprocess.run([str(pg_dump), "--format=custom", "--exclude-table-data=nodes",
                           "--file", target, "--dbname", url],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if os.path.exists(target):
            os.remove(target)
        lines = (done.stderr or "pg_dump failed").strip().splitlines()
        fail(f"backup failed: {lines[0] if lines else 'pg_dump failed'}")


# --- the configuration file -----------------------------------------------------------------

@click.group("config")
def config_group() -> None:
    """The configuration file (--config FILE, env COCHARGE_CONFIG; docs/config.md)."""


@config_group.command("check")
@json_option
@click.pass_context
def config_check(ctx: click.Context, as_json: bool) -> None:
    """Read the configuration file and print every setting in force (file, environment or
    default); a bad file is one line and exit 2."""

    config = ctx.find_root().obj
    shown = effective(config)
    if as_json:
        click.echo(json.dumps(shown, indent=2, default=str))
        return
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        mark = "  (file)" if key in config.from_file else ""
        click.echo(f"{key:<{width}}  {value}{mark}")

# --- mqtt -----------------------------------------------------------------------------------

@click.group()
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

    async def properties(engine: Any) -> list[str]:

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
