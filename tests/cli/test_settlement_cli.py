"""Tariffs, split terms, wallets and the ledger from the `cocharge` command."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

from tests.cli.test_cli import cocharge


def test_tariff_split_wallet_and_ledger_commands(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("station", "add", "CP1", "--owner", "alice", db=db).returncode == 0
    assert cocharge("member", "add", "Ann", "--tag", "ANN", db=db).returncode == 0
    made = cocharge("tariff", "set", "CP1", "--per-kwh", "1.5", "--per-hour", "30", "--tod",
                    "22:00-06:00=0.9", "--idle-per-min", "0.5", "--idle-grace-min", "15",
                    "--idle-cap", "60", "--min-price", "1", "--max-price", "200", db=db)
    assert made.returncode == 0, made.stderr
    shown = json.loads(cocharge("tariff", "show", "CP1", db=db).stdout)
    elements = shown[0]["tariff"]["elements"]
    assert elements[0]["restrictions"] == {"start_time": "22:00", "end_time": "06:00"}
    assert [c["type"] for c in elements[1]["price_components"]] == ["ENERGY", "TIME"]
    assert shown[0]["tariff"]["idle"] == {"grace_s": 900, "fen_per_minute": 50, "cap_fen": 6000}
    assert cocharge("split", "set", "CP1", "--model", "property", "--property", "sunrise",
                    "--operator", "install-co", db=db).returncode == 0
    terms = json.loads(cocharge("split", "show", "CP1", db=db).stdout)
    assert terms["model"] == "property" and terms["property_pct"] == "30"
    topped = cocharge("wallet", "topup", "ANN", "100", "--ref", "pay-1", db=db)
    assert topped.returncode == 0 and "balance 100.00 CNY" in topped.stdout
    again = cocharge("wallet", "topup", "ANN", "100", "--ref", "pay-1", db=db)
    assert "already applied" in again.stdout and "balance 100.00" in again.stdout
    balances = cocharge("ledger", "balances", db=db).stdout
    assert "wallet:ANN" in balances and "100.00" in balances
    statement = list(csv.reader(io.StringIO(
        cocharge("ledger", "statement", "wallet:ANN", "--csv", db=db).stdout)))
    assert statement[0][:2] == ["seq", "at"] and statement[1][5:7] == ["10000", "10000"]
    assert "topup:pay-1" in cocharge("ledger", "export", "--csv", db=db).stdout
    assert cocharge("ledger", "verify", db=db).returncode == 0
    # Someone edits the database behind the ledger's back.
    raw = sqlite3.connect(db)
    raw.execute("UPDATE ledger_transfers SET amount = 1000000 WHERE id = 'topup:pay-1'")
    raw.commit()
    raw.close()
    broken = cocharge("ledger", "verify", db=db)
    assert broken.returncode == 1 and "transfer 1 (topup:pay-1)" in broken.stderr


def test_bad_settlement_input_exits_2_and_writes_nothing(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("station", "add", "CP1", db=db).returncode == 0
    assert cocharge("member", "add", "Ann", "--tag", "ANN", db=db).returncode == 0
    for args, words in [
        (["tariff", "set", "CP1", "--per-kwh", "-1"], "negative"),
        (["tariff", "set", "CP1", "--per-kwh", "1.5", "--tod", "late=0.5"], "HH:MM-HH:MM=PRICE"),
        (["tariff", "set", "CP1", "--per-kwh", "1.5", "--min-price", "9", "--max-price", "5"],
         "minimum price"),
        (["tariff", "set", "NOPE", "--per-kwh", "1.5"], "no station"),
        (["split", "set", "CP1", "--platform-pct", "120"], "between 0 and 100"),
        (["split", "set", "CP1", "--model", "property"], "--property NAME"),
        (["wallet", "topup", "ANN", "12.345"], "2 decimals"),
        (["wallet", "topup", "NOBODY", "10"], "no member"),
        (["ledger", "statement", "wallet:ANN", "--from", "yesterday"], "YYYY-MM-DD"),
    ]:
        result = cocharge(*args, db=db)
        assert result.returncode == 2 and words in result.stderr, (args, result.stderr)
    assert json.loads(cocharge("tariff", "show", "CP1", db=db).stdout) == []
    assert json.loads(cocharge("ledger", "balances", "--json", db=db).stdout) == []
