"""Bad input to the people's commands (issue 33): a connector's QR code, a member's
invitation, the audit trail. One line saying what to do, exit 2, nothing written (no file,
no invitation, no database made by accident)."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, func, select

from cocharge.store.schema import invitations
from tests import forked_cli


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("people") / "people.db")
    for args in (["db", "init"], ["station", "add", "WB1", "--connectors", "2"],
                 ["member", "add", "Ann", "--tag", "ANN"]):
        done = forked_cli.run([*args, "--db", path])
        assert done.returncode == 0, done.stderr
    return path


@pytest.mark.parametrize("args, says", [
    (["station", "qr", "NOPE", "--out", "{out}.svg", "--base-url", "https://c.example"],
     "no station 'NOPE'"),
    (["station", "qr", "WB1", "--connector", "3", "--out", "{out}.svg", "--base-url",
      "https://c.example"], "connectors 1..2"),
    (["station", "qr", "WB1", "--out", "{out}.gif", "--base-url", "https://c.example"],
     "name a .svg or .png file"),
    (["station", "qr", "WB1", "--out", "{out}.svg"], "give --base-url https://"),
    (["station", "qr", "WB1", "--out", "{out}.svg", "--base-url", "ftp://c.example"],
     "give --base-url https://"),
    (["member", "invite", "NOBODY", "--base-url", "https://c.example"], "no member with tag"),
    (["member", "invite", "ANN", "--base-url", "https://c.example", "--valid", "90d"],
     "not a duration up to 30 days"),
    (["audit", "--limit", "0"], "0 is not in the range"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(db, tmp_path, args, says):
    out = str(tmp_path / "code")
    done = forked_cli.run([*(a.replace("{out}", out) for a in args), "--db", db])
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr
    assert not [f for f in os.listdir(tmp_path) if f.startswith("code")]
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(invitations)) == 0
    engine.dispose()


def test_no_database_is_made_by_accident(tmp_path):
    missing = str(tmp_path / "none.db")
    for args in (["audit"], ["member", "invite", "ANN", "--base-url", "https://c.example"],
                 ["station", "qr", "WB1", "--out", str(tmp_path / "x.svg"), "--base-url",
                  "https://c.example"]):
        done = forked_cli.run([*args, "--db", missing])
        assert done.returncode == 2 and "no database at" in done.stderr, done
    assert os.listdir(tmp_path) == []


def test_the_qr_code_and_the_invitation_when_all_is_right(db, tmp_path):
    done = forked_cli.run(["station", "qr", "WB1", "--connector", "2", "--out",
                           str(tmp_path / "wb1.png"), "--base-url", "https://c.example/",
                           "--db", db])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("QR code of https://c.example/console/c/WB1/2")
    assert (tmp_path / "wb1.png").read_bytes().startswith(b"\x89PNG")
    shown = forked_cli.run(["audit", "--db", db])
    assert shown.returncode == 0 and shown.stdout.strip() == "nothing recorded"
