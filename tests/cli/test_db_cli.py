"""The database's lifecycle as an operator meets it: nothing created or migrated by accident,
every database problem one line (exit 2), backups that cannot drive the live gateway."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys

import pytest

from cocharge.simulators.wallbox import SimConfig, close_wallbox, open_wallbox
from cocharge.store.db import NEWEST
from tests.cli.test_cli import cocharge, served  # noqa: F401 - the fixture


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize("args", [
    ["station", "list"], ["ledger", "verify"], ["ledger", "balances"], ["sessions", "list"],
    ["station", "add", "CP1"], ["wallet", "topup", "T1", "10", "--ref", "r1"],
])
def test_a_missing_database_is_an_error_and_is_not_created(tmp_path, args):
    db = tmp_path / "typo.db"
    result = cocharge(*args, db=str(db), init=False)
    one_line_error(result, "no database at", "cocharge db init")
    assert not db.exists()


def test_unset_cocharge_db_under_cron_creates_nothing(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "cocharge.cli", "ledger", "verify"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    one_line_error(result, "no database at ./cocharge.db")
    assert list(tmp_path.iterdir()) == []


def test_database_problems_are_one_line(tmp_path, pg_url):
    one_line_error(cocharge("station", "list", db=str(tmp_path / "no" / "dir.db"), init=False),
                   "no database at")
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    one_line_error(cocharge("station", "list", db=str(tmp_path / "notes.txt"), init=False),
                   "is not a SQLite database")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE other (x)").connection.close()
    one_line_error(cocharge("station", "list", db=str(empty), init=False),
                   "not a cocharge database")
    base = pg_url.rsplit("/", 1)[0].replace("postgresql+asyncpg://", "postgresql://")
    host = base.split("@", 1)[1]
    one_line_error(cocharge("station", "list", db=f"postgresql://nobody-here@{host}/postgres"),
                   "refused the login", "nobody-here")
    one_line_error(cocharge("station", "list", db=f"{base}/no_such_db_17"),
                   "no such database", "createdb")
    one_line_error(cocharge("station", "list", db="postgresql://u:secret@127.0.0.1:1/x"),
                   "cannot reach the database", "u:***@")
    assert "secret" not in cocharge("station", "list", db="postgresql://u:secret@127.0.0.1:1/x"
                                    ).stderr
    one_line_error(cocharge("station", "list", db="mysql://x@y/z"), "unsupported database")


def test_older_schema_needs_db_upgrade_and_newer_is_refused(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("db", "init", db=db).returncode == 0
    assert cocharge("station", "add", "CP1", db=db).returncode == 0
    with sqlite3.connect(db) as conn:  # as a database of the previous release would be
        conn.execute("DELETE FROM schema_version WHERE version = ?", (NEWEST,))
    one_line_error(cocharge("station", "list", db=db), "older", "cocharge db upgrade")
    status = cocharge("db", "status", "--json", db=db)
    assert status.returncode == 2 and json.loads(status.stdout)["schema"] == NEWEST - 1
    upgraded = cocharge("db", "upgrade", db=db)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"from schema version {NEWEST - 1} to {NEWEST}" in upgraded.stdout
    listed = json.loads(cocharge("station", "list", "--json", db=db).stdout)
    assert [s["id"] for s in listed] == ["CP1"]  # the upgrade kept the rows
    assert "already at" in cocharge("db", "upgrade", db=db).stdout

    with sqlite3.connect(db) as conn:  # as a newer release would leave it
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                     (NEWEST + 1, "2030-01-01 00:00:00"))
    one_line_error(cocharge("station", "list", db=db), "newer", "upgrade cocharge")
    one_line_error(cocharge("db", "upgrade", db=db), "newer")
    served_newer = subprocess.run([sys.executable, "-m", "cocharge.cli", "serve", "--port", "0",
                                   "--operator-port", "0", "--no-api", "--db", db],
                                  capture_output=True, text=True, timeout=60, check=False)
    one_line_error(served_newer, "newer")
    with sqlite3.connect(db) as conn:
        assert max(v for (v,) in conn.execute("SELECT version FROM schema_version")) == NEWEST + 1


def test_db_init_and_status(tmp_path):
    db = str(tmp_path / "new.db")
    one_line_error(cocharge("db", "status", db=db, init=False), "no database")
    made = cocharge("db", "init", db=db, init=False)
    assert made.returncode == 0 and f"schema version {NEWEST}" in made.stdout
    status = json.loads(cocharge("db", "status", "--json", db=db).stdout)
    assert status["state"] == "current" and status["stations"] == 0
    one_line_error(cocharge("db", "init", db=str(tmp_path / "no" / "x.db"), init=False),
                   "directory does not exist")


async def test_a_backup_cannot_drive_the_live_gateway(served, tmp_path):  # noqa: F811
    db, url, _ = served
    box, reader = await open_wallbox(SimConfig(url=url, station_id="CP1", protocol="2.0.1"))
    run = lambda *a, on=db: asyncio.to_thread(cocharge, *a, db=on)
    try:
        live = json.loads((await run("db", "status", "--json")).stdout)
        assert len(live["running_nodes"]) == 1
        copy = str(tmp_path / "copy.db")
        made = await run("db", "backup", copy)
        assert made.returncode == 0, made.stderr
        one_line_error(await run("db", "backup", copy), "exists", "--force")
        status = json.loads((await run("db", "status", "--json", on=copy)).stdout)
        assert status["running_nodes"] == [] and status["stations"] == 2
        # A copy made behind cocharge's back (sqlite3's .backup) keeps the node rows...
        raw = str(tmp_path / "raw.db")
        with sqlite3.connect(db) as source, sqlite3.connect(raw) as target:
            source.backup(target)
        status = json.loads((await run("db", "status", "--json", on=raw)).stdout)
        assert status["running_nodes"] == [] and "copied_node_rows" in status
        for target in (copy, raw):  # ... and neither reaches the live gateway
            result = await run("remote", "reset", "CP1", on=target)
            assert result.returncode == 3, (result.stdout, result.stderr)
            assert "no running gateway" in result.stderr
        await asyncio.sleep(0.3)
        assert getattr(box, "last_reset", None) is None
        # The live database still commands its gateway.
        result = await run("remote", "reset", "CP1")
        assert result.returncode == 0, result.stderr
        assert getattr(box, "last_reset", None) is not None
    finally:
        await close_wallbox(box, reader)


async def test_postgresql_backup_restores_without_the_nodes(pg_url, tmp_path, postgres_server):
    from tests.conftest import throwaway_pg

    run = lambda *a, on=pg_url: asyncio.to_thread(cocharge, *a, db=on)
    assert (await run("db", "init")).returncode == 0
    assert (await run("station", "add", "PG1")).returncode == 0
    dump = tmp_path / "pg.dump"
    made = await run("db", "backup", str(dump))
    assert made.returncode == 0, made.stderr
    async with throwaway_pg(postgres_server) as restored:
        plain = restored.replace("postgresql+asyncpg://", "postgresql://")
        done = await asyncio.to_thread(subprocess.run, ["pg_restore", "--no-owner", "--dbname", plain, str(dump)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        listed = json.loads((await run("station", "list", "--json", on=restored)).stdout)
        assert [s["id"] for s in listed] == ["PG1"]
        status = json.loads((await run("db", "status", "--json", on=restored)).stdout)
        assert status["running_nodes"] == []
