"""The per-station OCPP log: every frame in and out and the connection's notes, bounded per
station, passwords never kept, read with `cocharge logs STATION [--follow] [--since]`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, inspect, select, text

from cocharge.node import running_node
from cocharge.stations.framelog import REDACTED, redact
from cocharge.store.db import make_engine, migrate
from cocharge.store.frames import Frame, read_frames
from cocharge.store.schema import frame_chunks, schema_version
from tests.conftest import raw_station, register, settings, until

FAST = {"frame_log_flush_s": 0.05}


def cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cocharge.cli", *args, "--db", db],
                          capture_output=True, text=True, timeout=60, check=False)


async def frames(node: Any, station_id: str) -> list[Frame]:
    async with node.engine.connect() as conn:
        return await read_frames(conn, station_id)


async def test_frames_in_and_out_with_notes_read_by_the_cli(sqlite_url):
    async with running_node(sqlite_url, settings(**FAST)) as node:
        await register(node, "CP1", "CP2")
        station = await raw_station(node, "CP1")
        await station.call("Heartbeat", {})
        bad = await station.send_raw('[2,"x1","NoSuchAction",{}]')
        assert bad[0] == 4
        other = await raw_station(node, "CP2")
        await other.call("Heartbeat", {})
        await station.ws.close()

        async def closed_and_kept() -> Any:  # the log is written every flush
            kept = await frames(node, "CP1")
            return kept if kept and kept[-1].frame.startswith("disconnected") else None

        kept = await until(closed_and_kept, 10)
        kinds = [(f.direction, f.frame[:40]) for f in kept]
        assert kinds[0][0] == "note" and kinds[0][1].startswith("connected (OCPP 1.6)")
        assert any(d == "in" and "BootNotification" in t for d, t in kinds)
        assert any(d == "out" and t.startswith("[3,") for d, t in kinds)
        assert any(d == "out" and t.startswith("[4,\"x1\"") for d, t in kinds)  # the CallError
        assert kinds[-1][0] == "note" and kinds[-1][1].startswith("disconnected")
        assert all("CP2" not in f.frame for f in kept)  # only this station's
        shown = await asyncio.to_thread(cli, "logs", "CP1", db=sqlite_url)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert " -- connected" in lines[0] and "<< [2," in shown.stdout and ">> [3," in shown.stdout
        as_json = [json.loads(x) for x in (await asyncio.to_thread(
            cli, "logs", "CP1", "--json", "--limit", "2", db=sqlite_url)).stdout.splitlines()]
        assert len(as_json) == 2 and as_json[-1]["direction"] == "note"
        none_yet = await asyncio.to_thread(cli, "logs", "CP1", "--since", "2099-01-01",
                                           db=sqlite_url)
        assert none_yet.returncode == 0 and none_yet.stdout == ""
        unknown = await asyncio.to_thread(cli, "logs", "NOPE", db=sqlite_url)
        assert unknown.returncode == 2 and "no station 'NOPE'" in unknown.stderr
        uploads = await asyncio.to_thread(cli, "logs", "list", db=sqlite_url)
        assert uploads.returncode == 0  # the uploaded files' command is still there
        await other.ws.close()


async def test_follow_prints_new_frames(sqlite_url):
    async with running_node(sqlite_url, settings(**FAST)) as node:
        await register(node, "CP1")
        station = await raw_station(node, "CP1")
        await asyncio.sleep(0.2)
        follower = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cocharge.cli", "logs", "CP1", "--follow", "--limit", "1",
            "--db", sqlite_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            assert follower.stdout is not None
            first = await asyncio.wait_for(follower.stdout.readline(), 20)
            assert b"[3," in first  # the last frame kept: the boot's answer
            await station.call("DataTransfer", {"vendorId": "follow-me"})
            seen = b""
            async with asyncio.timeout(10):
                while b"follow-me" not in seen:
                    seen += await follower.stdout.readline()
        finally:
            follower.terminate()
            await follower.wait()
        await station.ws.close()


async def test_each_station_keeps_its_last_frames_only(sqlite_url):
    async with running_node(sqlite_url, settings(frame_log_per_station=5, **FAST)) as node:
        await register(node, "CP1", "CP2")
        station = await raw_station(node, "CP1")
        other = await raw_station(node, "CP2")
        for _ in range(10):
            await station.call("Heartbeat", {})

        async def all_kept() -> Any:  # connected, boot + answer, 10 heartbeats + answers
            kept = await frames(node, "CP1")
            return kept if len(kept) >= 23 else None

        before = {f.id: f for f in await until(all_kept, 10)}
        assert len(before) == 23
        await node.gateway.service.frames.prune()
        kept = await frames(node, "CP1")
        assert len(kept) == 5 and all("Heartbeat" in f.frame or f.frame.startswith("[3,")
                                      for f in kept)
        # The last five as they were, under the same ids (a reader's `after` still holds).
        assert kept == sorted(before.values(), key=lambda f: f.id)[-5:]
        assert len(await frames(node, "CP2")) == 3  # connected, boot, its answer: untouched
        await station.ws.close()
        await other.ws.close()


async def test_no_frames_kept_when_switched_off(sqlite_url):
    async with running_node(sqlite_url, settings(frame_log_per_station=0, **FAST)) as node:
        await register(node, "CP1")
        station = await raw_station(node, "CP1")
        await station.call("Heartbeat", {})
        await asyncio.sleep(0.2)
        async with node.engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(frame_chunks)) == 0
        await station.ws.close()


def test_passwords_are_never_kept():
    change = '[2,"1","ChangeConfiguration",{"key":"AuthorizationKey","value":"0123456789abcdef"}]'
    assert "0123456789abcdef" not in redact(change) and REDACTED in redact(change)
    set_vars = json.dumps([2, "2", "SetVariables", {"setVariableData": [
        {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"},
         "attributeValue": "s3cret-s3cret-s3cret"},
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
         "attributeValue": "300"}]}])
    kept = redact(set_vars)
    assert "s3cret" not in kept and '"300"' in kept
    profile = json.dumps([2, "3", "SetNetworkProfile", {"configurationSlot": 1, "connectionData": {
        "basicAuthPassword": "another-secret-16", "ocppCsmsUrl": "wss://x"}}])
    assert "another-secret" not in redact(profile) and "wss://x" in redact(profile)
    assert redact('[2,"4","Heartbeat",{}]') == '[2,"4","Heartbeat",{}]'
    assert "AuthorizationKey" not in redact('not json AuthorizationKey=abc') or \
        "abc" not in redact('not json AuthorizationKey=abc')


async def test_frames_kept_before_the_upgrade_are_read_after_it(db_url):
    """Schema 27 keeps a station's frames of one flush in a row: the frames a database held
    in its old table (a row per frame) move over in their order, and the old table goes."""
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(delete(schema_version).where(schema_version.c.version == 27))
            await conn.execute(text(
                "CREATE TABLE station_frames (id INTEGER PRIMARY KEY, station_id VARCHAR(64) "
                "NOT NULL, ts TIMESTAMP NOT NULL, direction VARCHAR(4) NOT NULL, "
                "frame TEXT NOT NULL)"))
            await conn.execute(text(
                "INSERT INTO station_frames (id, station_id, ts, direction, frame) VALUES "
                "(1, 'OLD', '2026-11-30 08:00:00.000000', 'note', 'connected (OCPP 1.6)'), "
                "(2, 'OLD', '2026-11-30 08:00:01.250000', 'in', '[2,\"1\",\"Heartbeat\",{}]'), "
                "(3, 'OTHER', '2026-11-30 08:00:02.000000', 'in', '[2,\"9\",\"Heartbeat\",{}]')"))
        await migrate(engine)
        async with engine.connect() as conn:
            old = await read_frames(conn, "OLD")
            assert not await conn.run_sync(lambda c: inspect(c).has_table("station_frames"))
        assert [(f.direction, f.frame, f.ts) for f in old] == [
            ("note", "connected (OCPP 1.6)", datetime(2026, 11, 30, 8, 0)),
            ("in", '[2,"1","Heartbeat",{}]', datetime(2026, 11, 30, 8, 0, 1, 250000))]
        assert old[0].id < old[1].id
    finally:
        await engine.dispose()


async def test_a_storms_frames_are_packed_with_the_chargers_served_between(sqlite_url):
    """The frames of thousands of stations (a reconnect storm's) are packed for their write
    a few hundred stations at a time, other tasks (the chargers) running between, and every
    one of them is kept."""
    from cocharge.config import GatewaySettings
    from cocharge.stations.framelog import FrameLog
    from cocharge.store.db import open_store
    from cocharge.store.journal import Journal

    turns = 0
    at_write: list[int] = []

    class Watched(Journal):  # the real journal, told how many turns others had by the write
        async def write(self, rows: Any, express: bool = False) -> None:
            at_write.append(turns)
            await super().write(rows, express)

    engine = await open_store(sqlite_url)
    journal = Watched(engine)
    journal.start()
    log = FrameLog(journal, GatewaySettings())
    names = [f"S{n:05d}" for n in range(3000)]
    for name in names:
        log.add(name, "note", "connected from 10.0.0.1")
        log.add(name, "in", '[2,"1","BootNotification",{"chargePointVendor":"v","chargePointModel":"m"}]')
        log.add(name, "out", '[3,"1",{"status":"Accepted","currentTime":"2026-12-06T01:00:00Z","interval":300}]')

    async def other_tasks() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(other_tasks())
    await asyncio.sleep(0)
    before = turns
    await log.flush()
    ticking.cancel()
    await journal.close()
    try:
        assert at_write and at_write[0] - before >= 3000 // 500 - 1  # a turn each 500 stations
        async with engine.connect() as conn:
            for name in (names[0], names[1234], names[-1]):
                kept = await read_frames(conn, name)
                assert [f.direction for f in kept] == ["note", "in", "out"]
    finally:
        await engine.dispose()
