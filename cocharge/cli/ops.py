"""Keeping the system: `db`, `config`, `mqtt` (`serve` is serve.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
from typing import Any

import click
from sqlalchemy import func, select

from cocharge.cli.common import (
    db_option,
    emit,
    fail,
    json_option,
    table,
)
from cocharge.cli.database import with_store
from cocharge.configfile import effective
from cocharge.gateway.mqtt import acl_file
from cocharge.settlement.settle import property_in
from cocharge.store.db import (
    NEWEST,
    DatabaseURLError,
    StoreError,
    describe_error,
    identity,
    make_engine,
    node_alive,
    resolve_url,
    schema_of,
    shown,
    sqlite_file,
    utcnow,
)
from cocharge.store.schema import nodes, sessions, station_terms, stations


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
                                                      nodes.c.database,
                                                      nodes.c.lease_until))).all()
                now = utcnow()
                info["running_nodes"] = [f"{r.id} {r.operator_url}" for r in rows
                                         if r.database in (None, here) and node_alive(r, now)]
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
        return [p for p in (property_in(b) for b in bodies) if p]

    prefix = prefix.strip("/")
    if not prefix or any(c in prefix for c in "+#"):
        fail(f"--prefix {prefix!r}: a topic prefix without + or #, e.g. cocharge/v1")
    for name in backends:
        if not name or any(c in name for c in "/+# "):
            fail(f"--backend {name!r}: a name without / + # or spaces")
    click.echo(acl_file(with_store(db, properties) + list(backends), prefix, gateway_user),
               nl=False)


@click.command("audit")
@click.option("--station", help="Only this station's commands.")
@click.option("--account", help="Only this ledger account's operations (wallet:TAG, "
              "payable:host:NAME, ...); ending in ':' every account of that kind.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@db_option
@json_option
def audit_cmd(station: str | None, account: str | None, limit: int, db: str | None,
              as_json: bool) -> None:
    """Who did what: commands sent to stations and money operations, newest first.

    Every command an operator, host or property sent to a station, and every money
    operation (top-ups, withdrawals, corrections, payouts, payments booked, reviews), with
    who (API key, CLI user, property) and from where."""
    from cocharge.store import audit

    rows = with_store(db, lambda e: audit.entries(e, station, account, limit))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("nothing recorded" + (" for that" if station or account else ""))
        return
    table([{"at": r["at"], "who": r["actor"], "from": r["origin"] or "", "action": r["action"],
            "station": r["station"] or "", "account": r["account"] or "",
            "details": json.dumps(r["details"], sort_keys=True)[:80]} for r in rows],
          ["at", "who", "from", "action", "station", "account", "details"])
