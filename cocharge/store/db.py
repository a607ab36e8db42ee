"""Engine creation and schema migration for SQLite (default) and PostgreSQL.

Migrations are a numbered list applied in order at start-up, recorded in
`schema_version`. We chose this over Alembic: the schema is small, linear and
owned by one package, and a list of steps needs no ini files, env scripts or
extra dependency while working identically on both backends.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    event,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from cocharge.store.frames import pack
from cocharge.store.schema import (
    charge_groups,
    firmware_campaigns,
    firmware_files,
    frame_chunks,
    ledger_head,
    members,
    metadata,
    nodes,
    schema_version,
    sessions,
    settlements,
    stations,
)

DEFAULT_DB = "./cocharge.db"


class DatabaseURLError(ValueError):
    """The --db value is neither a file path nor a supported database URL."""


def resolve_url(db: str | None) -> str:
    """Turn a --db value (URL, bare file path or None) into an async SQLAlchemy URL."""
    db = db or os.environ.get("COCHARGE_DB") or DEFAULT_DB
    if "://" not in db:
        return f"sqlite+aiosqlite:///{db}"
    if db.startswith("sqlite://") and not db.startswith("sqlite+aiosqlite://"):
        db = "sqlite+aiosqlite://" + db[len("sqlite://"):]
    elif db.startswith(("postgresql://", "postgres://")):
        db = "postgresql+asyncpg://" + db.split("://", 1)[1]
    try:
        url = make_url(db)
    except ArgumentError as exc:
        raise DatabaseURLError(f"cannot parse database URL {db!r}: {exc}") from exc
    if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise DatabaseURLError(
            f"unsupported database {url.drivername!r}: use a file path, "
            "sqlite:///FILE or postgresql+asyncpg://USER@HOST/DB"
        )
    return db


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read while the gateway writes; FULL makes every commit durable.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _no_auto_checkpoint(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


def make_engine(db: str | None, background_checkpoint: bool = False) -> AsyncEngine:
    """An async engine for `db`, with SQLite's durability pragmas applied on every connection.

    `background_checkpoint` (the gateway): SQLite's commits do not copy the WAL into the
    database themselves (a commit that does stalls every charger waiting behind it); the
    journal checkpoints from a connection of its own instead."""
    url = resolve_url(db)
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if background_checkpoint:
            event.listen(engine.sync_engine, "connect", _no_auto_checkpoint)
    else:
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    return engine


_second = -1
_second_parts = (1970, 1, 1, 0, 0, 0)


def _utcnow_built() -> datetime:
    """Now as a naive UTC datetime, built from the clock's microseconds and the calendar
    fields of its second (read once a second): no timedelta, whose constructor is the slow
    part of adding one to the epoch (1.1 µs against 1.7 here)."""
    global _second, _second_parts
    micros = time.time_ns() // 1000
    second = micros // 1_000_000
    if second != _second:
        t = time.gmtime(second)
        _second_parts = (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
        _second = second
    year, month, day, hour, minute, sec = _second_parts
    return datetime(year, month, day, hour, minute, sec, micros - second * 1_000_000)


# Now as the naive UTC datetime the schema stores, read several times for every frame. Up to
# Python 3.11 that is datetime.utcnow, in C (0.14 µs, a twelfth of the epoch plus a
# timedelta); 3.12 deprecates it, and gets the same value built as above.
utcnow: Callable[[], datetime] = (datetime.utcnow if sys.version_info < (3, 12)
                                  else _utcnow_built)


async def _v1_baseline(conn: AsyncConnection) -> None:
    await conn.run_sync(metadata.create_all)


def _add_columns(sync_conn: Connection, wanted: list[tuple[Table, list[str]]]) -> None:
    """Add the named columns (as the schema defines them) to tables that lack them."""
    inspector = inspect(sync_conn)
    for table, names in wanted:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for name in names:
            if name not in present:
                kind = table.c[name].type.compile(dialect=sync_conn.dialect)
                sync_conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{name}" {kind}'))


async def _v2_sharing_control(conn: AsyncConnection) -> None:
    """Tables and columns of sharing control (issue 3); a no-op on a database v1 made fresh."""
    def upgrade(sync_conn: Connection) -> None:
        metadata.create_all(sync_conn)  # only the missing tables
        _add_columns(sync_conn, [
            (members, ["groups", "vehicle_model", "quota_wh"]),
            (sessions, ["booking_id", "group_id", "limit_wh", "cutoff_at", "cutoff_reason",
                        "fault", "idle_started_at", "idle_ended_at", "idle_minutes",
                        "idle_fee_fen"]),
        ])

    await conn.run_sync(upgrade)


GENESIS_HASH = "0" * 64


async def _v3_settlement(conn: AsyncConnection) -> None:
    """Tariffs, split terms, the ledger and settlements (issue 4)."""
    def upgrade(sync_conn: Connection) -> None:
        metadata.create_all(sync_conn)
        _add_columns(sync_conn, [(sessions, ["tariff_id", "budget_fen"]),
                                 (members, ["prefers_green"]),
                                 (stations, ["area"])])
        if sync_conn.execute(select(ledger_head.c.id)).first() is None:
            sync_conn.execute(insert(ledger_head).values(id=1, seq=0, hash=GENESIS_HASH,
                                                         updated_at=utcnow()))

    await conn.run_sync(upgrade)


async def _v4_rewards(conn: AsyncConnection) -> None:
    """Reward rules and events, green certificates, green-point orders (issue 5)."""
    def upgrade(sync_conn: Connection) -> None:
        metadata.create_all(sync_conn)
        _add_columns(sync_conn, [(members, ["referred_by"])])

    await conn.run_sync(upgrade)


async def _v5_mqtt(conn: AsyncConnection) -> None:
    """MQTT command requests, each applied once; the node holding each station (issue 6)."""
    def upgrade(sync_conn: Connection) -> None:
        metadata.create_all(sync_conn)
        _add_columns(sync_conn, [(stations, ["node"])])

    await conn.run_sync(upgrade)


async def _v6_device_model(conn: AsyncConnection) -> None:
    """2.0.1 device model inventory from NotifyReport (issue 14)."""
    await conn.run_sync(lambda sync_conn: metadata.create_all(sync_conn))


async def _v7_local_lists(conn: AsyncConnection) -> None:
    """Local authorization lists kept in step with the sharing rules (issue 14)."""
    await conn.run_sync(lambda sync_conn: metadata.create_all(sync_conn))


async def _v8_log_uploads(conn: AsyncConnection) -> None:
    """Diagnostics and log files uploaded by stations (issue 14)."""
    await conn.run_sync(lambda sync_conn: metadata.create_all(sync_conn))


async def _v9_firmware(conn: AsyncConnection) -> None:
    """Firmware files and campaigns (issue 14)."""
    await conn.run_sync(lambda sync_conn: metadata.create_all(sync_conn))


async def _v10_monitoring_signed_firmware(conn: AsyncConnection) -> None:
    """2.0.1 variable monitors; signed firmware (issue 14)."""
    def upgrade(sync_conn: Connection) -> None:
        metadata.create_all(sync_conn)
        _add_columns(sync_conn, [(firmware_files, ["signature", "signing_certificate"]),
                                 (firmware_campaigns, ["signature", "signing_certificate"])])

    await conn.run_sync(upgrade)


async def _v11_password_rotation(conn: AsyncConnection) -> None:
    """The password a station accepted and has not used yet (issue 15)."""
    await conn.run_sync(lambda sync_conn: _add_columns(sync_conn, [
        (stations, ["next_password_hash"])]))


async def _v12_certificates(conn: AsyncConnection) -> None:
    """Charger certificates of our CA; a station's security profile (issue 15)."""
    def upgrade(sync_conn: Connection) -> None:
        metadata.create_all(sync_conn)
        _add_columns(sync_conn, [(stations, ["security_profile"]), (members, ["household"])])

    await conn.run_sync(upgrade)


async def _v13_load_management(conn: AsyncConnection) -> None:
    """Sites, circuits, stations attached to them; surplus-covered energy (issue 16)."""
    def upgrade(sync_conn: Connection) -> None:
        metadata.create_all(sync_conn)
        _add_columns(sync_conn, [(sessions, ["green_wh"])])

    await conn.run_sync(upgrade)


async def _v14_operations(conn: AsyncConnection) -> None:
    """The per-station OCPP frame log; the database a node writes to (issue 17)."""
    def upgrade(sync_conn: Connection) -> None:
        metadata.create_all(sync_conn)
        _add_columns(sync_conn, [(nodes, ["database"])])

    await conn.run_sync(upgrade)


async def _v15_api_keys(conn: AsyncConnection) -> None:
    """API keys of the HTTP API and the web console (issue 17)."""
    await conn.run_sync(metadata.create_all)


async def _v16_money_flows(conn: AsyncConnection) -> None:
    """Memberships, payees and payouts; a group's free member; paying with coins (issue 18)."""
    def upgrade(sync_conn: Connection) -> None:
        metadata.create_all(sync_conn)
        _add_columns(sync_conn, [(charge_groups, ["free_tag"]), (members, ["pay_with"]),
                                 (settlements, ["redeemed"])])

    await conn.run_sync(upgrade)


async def _v17_money_states(conn: AsyncConnection) -> None:
    """Signed ledger checkpoints and disputes (issue 29)."""
    await conn.run_sync(metadata.create_all)


async def _v18_robust_input(conn: AsyncConnection) -> None:
    """What a charger's clock said when it was not believed (issue 30)."""
    def upgrade(sync_conn: Connection) -> None:
        _add_columns(sync_conn, [(sessions, ["clock", "charger_start"])])

    await conn.run_sync(upgrade)


async def _v19_ocpp21_cost(conn: AsyncConnection) -> None:
    """What a 2.1 charger calculated itself; the type of each member's token (issue 31)."""
    def upgrade(sync_conn: Connection) -> None:
        _add_columns(sync_conn, [(sessions, ["charger_cost_fen", "charger_idle_fen",
                                             "charger_tariff"]),
                                 (members, ["token_type"]), (nodes, ["lease_until"])])

    await conn.run_sync(upgrade)


async def _v20_site_leases(conn: AsyncConnection) -> None:
    """Which node allocates each site (load management across nodes, issue 32)."""
    await conn.run_sync(metadata.create_all)


async def _v21_audit_log(conn: AsyncConnection) -> None:
    """Who did what: commands and money operations (issue 33)."""
    await conn.run_sync(metadata.create_all)


async def _v22_logins(conn: AsyncConnection) -> None:
    """Members' invitations and phone logins (issue 33)."""
    await conn.run_sync(metadata.create_all)


async def _v23_pairing_codes(conn: AsyncConnection) -> None:
    """Pairing codes for new chargers (issue 33)."""
    await conn.run_sync(metadata.create_all)


async def _v24_passkeys(conn: AsyncConnection) -> None:
    """Members' passkeys and their one-time challenges (issue 33)."""
    await conn.run_sync(metadata.create_all)


async def _v25_member_language(conn: AsyncConnection) -> None:
    """The language of a member's messages at the charger (issue 33)."""
    def upgrade(sync_conn: Connection) -> None:
        _add_columns(sync_conn, [(members, ["language"])])

    await conn.run_sync(upgrade)


async def _v26_station_places(conn: AsyncConnection) -> None:
    """Where stations are: coordinates and an address (issue 33, stations near me)."""
    def upgrade(sync_conn: Connection) -> None:
        _add_columns(sync_conn, [(stations, ["lat", "lon", "address"])])

    await conn.run_sync(upgrade)


async def _v27_frame_chunks(conn: AsyncConnection) -> None:
    """The frame log a row per station and flush, not per frame (issue 32: CPU per message).
    The frames kept so far move over, a row each, in their order; the old table goes."""
    def upgrade(sync_conn: Connection) -> None:
        metadata.create_all(sync_conn)
        if not inspect(sync_conn).has_table("station_frames"):
            return
        old = Table("station_frames", MetaData(), Column("id", BigInteger, primary_key=True),
                    Column("station_id", String(64)), Column("ts", DateTime),
                    Column("direction", String(4)), Column("frame", Text))
        done = -1
        while True:
            rows = sync_conn.execute(select(old).where(old.c.id > done).order_by(old.c.id)
                                     .limit(5000)).all()
            if not rows:
                break
            sync_conn.execute(insert(frame_chunks), [
                {"station_id": r.station_id, "first_ts": r.ts, "last_ts": r.ts, "skip": 0,
                 "size": 1, "frames": pack([(r.ts, r.direction, r.frame)])} for r in rows])
            done = rows[-1].id
        old.drop(sync_conn)

    await conn.run_sync(upgrade)


Migration = Callable[[AsyncConnection], Awaitable[None]]
MIGRATIONS: list[tuple[int, Migration]] = [
    (1, _v1_baseline),
    (2, _v2_sharing_control),
    (3, _v3_settlement),
    (4, _v4_rewards),
    (5, _v5_mqtt),
    (6, _v6_device_model),
    (7, _v7_local_lists),
    (8, _v8_log_uploads),
    (9, _v9_firmware),
    (10, _v10_monitoring_signed_firmware),
    (11, _v11_password_rotation),
    (12, _v12_certificates),
    (13, _v13_load_management),
    (14, _v14_operations),
    (15, _v15_api_keys),
    (16, _v16_money_flows),
    (17, _v17_money_states),
    (18, _v18_robust_input),
    (19, _v19_ocpp21_cost),
    (20, _v20_site_leases),
    (21, _v21_audit_log),
    (22, _v22_logins),
    (23, _v23_pairing_codes),
    (24, _v24_passkeys),
    (25, _v25_member_language),
    (26, _v26_station_places),
    (27, _v27_frame_chunks),
]
NEWEST = MIGRATIONS[-1][0]


def node_alive(row: Any, now: datetime) -> bool:
    """A nodes row whose lease has not ended (a row without one: an older node, believed)."""
    return row.lease_until is None or row.lease_until > now


class StoreError(Exception):
    """The database cannot be used as asked; the message says what to do (one line)."""


def sqlite_file(db: str | None) -> str | None:
    """The file of a SQLite database (None: PostgreSQL or an in-memory database)."""
    url = make_url(resolve_url(db))
    if not url.drivername.startswith("sqlite"):
        return None
    name = url.database or ""
    return None if name in ("", ":memory:") or name.startswith("file:") else name


def shown(db: str | None) -> str:
    """The database as an operator may read it in a message (never its password)."""
    url = make_url(resolve_url(db))
    if url.drivername.startswith("sqlite"):
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def describe_error(exc: BaseException, db: str | None) -> str:
    """One line for a failure to reach or use the database, with what to check."""
    origin = getattr(exc, "orig", None) or exc
    text = (str(origin).strip().splitlines() or [type(origin).__name__])[0]
    where = shown(db)
    kind = type(origin).__name__
    if "unable to open database file" in text:
        return (f"cannot open the database file {where}: check that its directory exists and "
                "is writable, and --db / COCHARGE_DB")
    if "file is not a database" in text:
        return f"{where} is not a SQLite database: check --db / COCHARGE_DB"
    cause = origin.__cause__
    kind = type(cause).__name__ if cause is not None else kind
    if kind in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError") or (
            text.startswith("role ") and text.endswith("does not exist")):
        return f"PostgreSQL refused the login to {where}: {text} (check the user and password)"
    if kind == "InvalidCatalogNameError" or (text.startswith("database ")
                                             and text.endswith("does not exist")):
        return (f"PostgreSQL has no such database ({where}): {text}; create it with "
                "`createdb`, or check --db / COCHARGE_DB")
    if isinstance(origin, OSError) or kind in ("ConnectionRefusedError", "TimeoutError"):
        return f"cannot reach the database {where}: {text} (is the server running?)"
    return f"database {where}: {text}"


async def schema_of(engine: AsyncEngine) -> int | None:
    """The newest migration applied to the database (None: not a cocharge database)."""
    async with engine.connect() as conn:
        present = await conn.run_sync(lambda c: inspect(c).has_table(schema_version.name))
        if not present:
            return None
        found = (await conn.execute(select(schema_version.c.version))).scalars().all()
    return max(found, default=None)


async def migrate(engine: AsyncEngine) -> int:
    """Bring the schema to the newest version; safe to run from several processes. A
    database a newer cocharge has upgraded is refused (StoreError), never touched."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: schema_version.create(c, checkfirst=True))
    async with engine.begin() as conn:
        current = (await conn.execute(select(schema_version.c.version))).scalars().all()
        done = set(current)
        if done and max(done) > NEWEST:
            raise StoreError(f"the database's schema (version {max(done)}) is newer than this "
                             f"cocharge's ({NEWEST}): upgrade cocharge first")
        for version, step in MIGRATIONS:
            if version in done:
                continue
            await step(conn)
            await conn.execute(insert(schema_version).values(version=version, applied_at=utcnow()))
    return NEWEST


async def open_store(db: str | None, background_checkpoint: bool = False) -> AsyncEngine:
    """Engine for `db` with the schema migrated to the newest version (`serve`, `db init`,
    `db upgrade`: the only ones that create or change a schema)."""
    engine = make_engine(db, background_checkpoint)
    try:
        await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine


async def open_existing(db: str | None) -> AsyncEngine:
    """Engine for an existing cocharge database at the newest schema (every command but
    `serve` and `db init|upgrade`): nothing is created or migrated."""
    path = sqlite_file(db)
    if path is not None and not os.path.exists(path):
        raise StoreError(f"no database at {path}: create it with `cocharge db init --db {path}` "
                         "(or start `cocharge serve` on it), or check --db / COCHARGE_DB")
    engine = make_engine(db)
    try:
        version = await schema_of(engine)
    except Exception as exc:
        await engine.dispose()
        raise StoreError(describe_error(exc, db)) from exc
    problem = None
    if version is None:
        problem = (f"{shown(db)} is not a cocharge database (no schema): check --db / "
                   "COCHARGE_DB, or create one with `cocharge db init`")
    elif version < NEWEST:
        problem = (f"the database's schema (version {version}) is older than this cocharge's "
                   f"({NEWEST}): run `cocharge db upgrade` (or restart `cocharge serve`)")
    elif version > NEWEST:
        problem = (f"the database's schema (version {version}) is newer than this cocharge's "
                   f"({NEWEST}): upgrade cocharge first")
    if problem is not None:
        await engine.dispose()
        raise StoreError(problem)
    return engine


async def identity(engine: AsyncEngine) -> str:
    """Which database this is, as a node records it and the CLI compares it: a copy (a
    backup) is another database even though its rows are the same. SQLite: the file's device
    and inode (the same through symlinks and bind mounts); PostgreSQL: its system identifier
    and database name."""
    if engine.url.drivername.startswith("sqlite"):
        path = engine.url.database or ""
        if path in ("", ":memory:") or path.startswith("file:") or not os.path.exists(path):
            return "sqlite:memory"
        st = os.stat(path)
        return f"sqlite:{st.st_dev}:{st.st_ino}"
    async with engine.connect() as conn:
        name = (await conn.execute(text("SELECT current_database()"))).scalar()
        try:
            system = (await conn.execute(text(
                "SELECT system_identifier FROM pg_control_system()"))).scalar()
        except DBAPIError:  # a role without pg_monitor: the server's address stands in
            await conn.rollback()
            system = (await conn.execute(text(
                "SELECT coalesce(host(inet_server_addr()), 'local') || ':' || "
                "coalesce(inet_server_port(), 0)"))).scalar()
    return f"postgresql:{system}:{name}"
