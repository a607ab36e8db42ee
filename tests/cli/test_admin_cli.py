"""`station import`, `member import` (all or nothing, --dry-run, generated passwords shown
once) and `apikey create|list|revoke`, run as an operator runs them."""

from __future__ import annotations

import asyncio
import csv
import io
import json

from sqlalchemy import select

from cocharge.stations.passwords import verify_password
from cocharge.store.db import make_engine
from cocharge.store.schema import stations
from tests.cli.test_cli import cocharge
from tests.cli.test_db_cli import one_line_error


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def password_hashes(db: str) -> dict[str, str | None]:
    async def read() -> dict[str, str | None]:
        engine = make_engine(db)
        try:
            async with engine.connect() as conn:
                return {r.id: r.password_hash for r in await conn.execute(
                    select(stations.c.id, stations.c.password_hash))}
        finally:
            await engine.dispose()
    return asyncio.run(read())


def test_station_import_dry_run_then_for_real(tmp_path):
    db = str(tmp_path / "c.db")
    sheet = write(tmp_path / "fleet.csv",
                  "id,password,owner,connectors,max_power_kw,area\n"
                  "GF-001,,alice,2,7,Greenfield\n"
                  "GF-002,Secret-Password-0002,bob,1,11,Greenfield\n"
                  "GF-003,,,1,,\n")
    dry = cocharge("station", "import", sheet, "--dry-run", db=db)
    assert dry.returncode == 0 and "3 station(s) would be registered" in dry.stdout
    assert "2 with a generated password" in dry.stdout
    assert json.loads(cocharge("station", "list", "--json", db=db).stdout) == []

    done = cocharge("station", "import", sheet, db=db)
    assert done.returncode == 0, done.stderr
    generated = dict(list(csv.reader(io.StringIO(done.stdout)))[1:])
    assert set(generated) == {"GF-001", "GF-003"}
    assert all(len(p) == 24 and p.isalnum() for p in generated.values())
    assert "3 station(s) registered" in done.stderr and "only this once" in done.stderr
    listed = {s["id"]: s for s in json.loads(cocharge("station", "list", "--json", db=db).stdout)}
    assert listed["GF-001"]["owner"] == "alice" and listed["GF-001"]["connectors"] == 2
    assert listed["GF-002"]["max_power_kw"] == 11 and listed["GF-001"]["password"]
    hashes = password_hashes(db)
    assert verify_password(generated["GF-001"], hashes["GF-001"])
    assert verify_password("Secret-Password-0002", hashes["GF-002"])

    # Importing again: every id is taken; nothing changes, one line, exit 2.
    again = cocharge("station", "import", sheet, db=db)
    one_line_error(again, "already registered: GF-001, GF-002, GF-003")
    assert password_hashes(db) == hashes


def test_a_bad_station_file_imports_nothing(tmp_path):
    db = str(tmp_path / "c.db")
    cases = [
        ("id,colour\nX1,red\n", "unknown column(s) colour"),
        ("owner\nalice\n", "the header must name id"),
        ("id\n", "no rows under the header"),
        ("id,connectors\nA1,2\nA2,lots\n", "line 3: connectors 'lots'"),
        ("id,password\nA1,short\n", "line 2: password: a station password is 16 to 40"),
        ("id\nA1\nA1\n", "line 3: id 'A1' twice in the file"),
        ("id,max_power_kw\nA1,1e9\n", "line 2: max_power_kw '1e9'"),
    ]
    for n, (text, message) in enumerate(cases):
        result = cocharge("station", "import", write(tmp_path / f"bad{n}.csv", text), db=db)
        one_line_error(result, message)
    one_line_error(cocharge("station", "import", str(tmp_path / "none.csv"), db=db),
                   "no file")
    (tmp_path / "binary.csv").write_bytes(b"id\n\xff\xfe\n")
    one_line_error(cocharge("station", "import", str(tmp_path / "binary.csv"), db=db),
                   "not a UTF-8 CSV file")
    assert json.loads(cocharge("station", "list", "--json", db=db).stdout) == []


def test_member_import(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("member", "add", "Ann", "--tag", "A0", db=db).returncode == 0
    sheet = write(tmp_path / "m.csv", "name,tag,phone,household,expires,referred_by\n"
                  "Bob,B1,13800000001,flat-7,,A0\n"
                  "Cat,C1,,flat-7,2030-12-31,B1\n")
    dry = cocharge("member", "import", sheet, "--dry-run", db=db)
    assert dry.returncode == 0 and "2 member(s) would be added" in dry.stdout
    assert len(json.loads(cocharge("member", "list", "--json", db=db).stdout)) == 1
    assert cocharge("member", "import", sheet, db=db).returncode == 0
    listed = {m["tag"]: m for m in json.loads(cocharge("member", "list", "--json", db=db).stdout)}
    assert listed["C1"]["household"] == "flat-7" and listed["C1"]["expires_at"].startswith("2030")
    one_line_error(cocharge("member", "import", sheet, db=db), "tags already taken: B1, C1")
    later = write(tmp_path / "later.csv", "name,tag,referred_by\nDan,D1,Z9\n")
    one_line_error(cocharge("member", "import", later, db=db), "referred_by 'Z9' is no member")
    assert "D1" not in {m["tag"] for m in json.loads(
        cocharge("member", "list", "--json", db=db).stdout)}


def test_api_keys(tmp_path):
    db = str(tmp_path / "c.db")
    assert cocharge("member", "add", "Ann", "--tag", "A0", db=db).returncode == 0
    made = cocharge("apikey", "create", "--name", "ops", "--role", "operator", db=db)
    assert made.returncode == 0 and made.stdout.startswith("cck_")
    assert "shown only this once" in made.stderr
    key = made.stdout.strip()
    member = cocharge("apikey", "create", "--name", "Ann's app", "--role", "member",
                      "--owner", "A0", db=db)
    assert member.returncode == 0
    one_line_error(cocharge("apikey", "create", "--name", "x", "--role", "member",
                            "--owner", "nobody", db=db), "no member with tag 'nobody'")
    one_line_error(cocharge("apikey", "create", "--name", "x", "--role", "property", db=db),
                   "a property key needs --owner")
    one_line_error(cocharge("apikey", "create", "--name", "x", "--role", "host",
                            "--owner", "nobody-at-all", db=db), "no host 'nobody-at-all'")
    one_line_error(cocharge("apikey", "create", "--name", "x", "--role", "property",
                            "--owner", "nowhere", db=db), "no property 'nowhere'")
    one_line_error(cocharge("apikey", "create", "--name", "x", "--role", "operator",
                            "--owner", "y", db=db), "give no --owner")
    listed = json.loads(cocharge("apikey", "list", "--json", db=db).stdout)
    assert [(k["role"], k["owner"]) for k in listed] == [("operator", None), ("member", "A0")]
    assert key.split("_", 2)[2] not in json.dumps(listed)  # the secret is never kept
    assert cocharge("apikey", "revoke", key, db=db).returncode == 0
    listed = json.loads(cocharge("apikey", "list", "--json", db=db).stdout)
    assert listed[0]["revoked"] is not None and listed[1]["revoked"] is None
    one_line_error(cocharge("apikey", "revoke", key, db=db), "no active key")
