"""Signed checkpoints catch the audit's attack: a transfer edited in the database with every
hash after it, and the head, recomputed. `ledger verify` alone cannot see it; `ledger verify
--checkpoints` with a witness's copy of an older checkpoint does."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
from datetime import datetime

from cocharge.settlement import funds, ledger
from cocharge.stations import registry
from cocharge.store.db import GENESIS_HASH, open_store
from tests import forked_cli


def cli(*args: str, db: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return forked_cli.run([*args, "--db", db], cwd=cwd)


async def a_ledger(db: str) -> None:
    engine = await open_store(db)
    try:
        for tag in ("ANN", "BOB"):
            await registry.add_member(engine, tag, tag, None)
        await funds.top_up(engine, "ANN", 20_000, "pay-1")
        await funds.top_up(engine, "BOB", 5_000, "pay-2")
    finally:
        await engine.dispose()


def rewrite(db: str, transfer_id: str, amount: int) -> None:
    """The attack: change one transfer's amount, fix the balances, recompute every hash."""
    conn = sqlite3.connect(db)
    try:
        old, debit, credit = conn.execute("SELECT amount, debit, credit FROM ledger_transfers "
                                          "WHERE id = ?", (transfer_id,)).fetchone()
        conn.execute("UPDATE ledger_transfers SET amount = ? WHERE id = ?", (amount, transfer_id))
        conn.execute("UPDATE ledger_balances SET balance = balance + ? WHERE account = ?",
                     (old - amount, debit))
        conn.execute("UPDATE ledger_balances SET balance = balance - ? WHERE account = ?",
                     (old - amount, credit))
        prev = GENESIS_HASH
        rows = conn.execute("SELECT seq, id, batch, asset, debit, credit, amount, kind, ref, memo, "
                            "created_at FROM ledger_transfers ORDER BY seq").fetchall()
        for seq, *fields in rows:
            keys = ["id", "batch", "asset", "debit", "credit", "amount", "kind", "ref", "memo",
                    "created_at"]
            row = dict(zip(keys, fields, strict=True))
            row["created_at"] = datetime.fromisoformat(str(row["created_at"]))
            digest = ledger.transfer_hash(prev, seq, row)
            conn.execute("UPDATE ledger_transfers SET prev_hash = ?, hash = ? WHERE seq = ?",
                         (prev, digest, seq))
            prev = digest
        conn.execute("UPDATE ledger_head SET hash = ? WHERE id = 1", (prev,))
        conn.commit()
    finally:
        conn.close()


def test_a_recomputed_rewrite_is_caught_by_a_signed_checkpoint(tmp_path):
    db, folder = str(tmp_path / "live.db"), str(tmp_path)
    asyncio.run(a_ledger(db))
    made = cli("ledger", "checkpoint", "--key", "platform.key", "--file", "witness.jsonl",
               "--json", db=db, cwd=folder)
    assert made.returncode == 0, made.stderr
    checkpoint = json.loads(made.stdout)
    assert checkpoint["count"] == 2 and checkpoint["totals"]["wallet/CNY"] == 25_000
    assert (tmp_path / "platform.key").stat().st_mode & 0o077 == 0  # the key: owner only
    honest = cli("ledger", "verify", "--checkpoints", "witness.jsonl", db=db, cwd=folder)
    assert honest.returncode == 0 and "matches 1 signed checkpoint" in honest.stdout

    copy = str(tmp_path / "edited.db")
    shutil.copy(db, copy)
    rewrite(copy, "topup:pay-1", 15_000)  # the audit: 200 CNY became 150
    plain = cli("ledger", "verify", db=copy, cwd=folder)
    assert plain.returncode == 0 and "ledger OK" in plain.stdout  # the chain alone is fooled
    caught = cli("ledger", "verify", "--checkpoints", "witness.jsonl", db=copy, cwd=folder)
    assert caught.returncode == 1
    assert "do not hash to the signed head" in caught.stderr and caught.stdout == ""


def test_a_checkpoint_signed_by_another_key_is_not_trusted(tmp_path):
    db, folder = str(tmp_path / "live.db"), str(tmp_path)
    asyncio.run(a_ledger(db))
    ours = json.loads(cli("ledger", "checkpoint", "--key", "ours.key", "--file", "w.jsonl",
                          "--json", db=db, cwd=folder).stdout)
    forged = cli("ledger", "checkpoint", "--key", "theirs.key", "--file", "forged.jsonl",
                 db=db, cwd=folder)
    assert forged.returncode == 0
    trusted = cli("ledger", "verify", "--checkpoints", "forged.jsonl", "--trust", ours["key"],
                  db=db, cwd=folder)
    assert trusted.returncode == 1 and "signature is not the platform's" in trusted.stderr
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    bad = cli("ledger", "verify", "--checkpoints", "bad.jsonl", db=db, cwd=folder)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "line 1" in bad.stderr


async def test_the_gateway_signs_checkpoints_for_its_witnesses(sqlite_url, tmp_path, broker):
    """A node with a ledger key checkpoints as the ledger grows: to the database, the witness
    file and a retained MQTT topic a property backend keeps; statements print the newest."""
    import aiomqtt

    from cocharge.node import running_node
    from cocharge.settlement import checkpoints, statements
    from tests.conftest import settings, until

    key = str(tmp_path / "ledger.key")
    async with running_node(sqlite_url, settings(
            mqtt_url=broker.url, ledger_key_file=key, checkpoint_every_transfers=1,
            checkpoint_interval_s=0.2)) as node:
        async with aiomqtt.Client("127.0.0.1", broker.port) as backend:
            await backend.subscribe("cocharge/v1/ledger/checkpoint", qos=1)
            await registry.add_member(node.engine, "Ann", "ANN", None)
            await funds.top_up(node.engine, "ANN", 3000, "pay-1")
            async with asyncio.timeout(30):
                async for message in backend.messages:
                    seen = json.loads(bytes(message.payload))
                    break
        witness = checkpoints.read(key + ".checkpoints.jsonl")
        assert seen["count"] == 1 and seen["head"] == witness[-1]["head"]
        assert checkpoints.signature_ok(seen)
        assert await checkpoints.verify(node.engine, witness) == []
        latest = await until(lambda: checkpoints.latest(node.engine))
        month = utcnow_month()
        await funds.withdraw(node.engine, "ANN", 100, "back-1")  # refund:ANN: a payee account
        st = await statements.statement(node.engine, "refund:ANN", month)
        assert st["checkpoint"]["id"] == latest["id"]
        assert f"ledger checkpoint {latest['id']}" in statements.to_csv(st)


def utcnow_month() -> str:
    from cocharge.settlement import memberships
    from cocharge.store.db import utcnow

    return memberships.month_of(utcnow())
