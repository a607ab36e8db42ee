"""Sharing rules, bookings, groups and queued commands from the `cocharge` command."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from tests.cli.test_cli import cocharge


def local(dt: datetime) -> str:
    """A time as the operator types it: Asia/Shanghai wall clock."""
    return (dt + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M")


def setup(db: str) -> None:
    assert cocharge("station", "add", "CP1", "--connectors", "2", db=db).returncode == 0
    for name, tag in (("Alice", "ALICE"), ("Bob", "BOB"), ("Cai", "CAI")):
        assert cocharge("member", "add", name, "--tag", tag, db=db).returncode == 0


def test_rules_are_stored_and_shown(tmp_path):
    db = str(tmp_path / "c.db")
    setup(db)
    done = cocharge("station", "rules", "CP1", "--window", "mon-fri 19:00-23:00", "--window",
                    "sat,sun 00:00-24:00", "--closed", "2026-12-25", "--allow-group", "block-7",
                    "--owner-tag", "ALICE", "--no-bookings", db=db)
    assert done.returncode == 0, done.stderr
    assert "mon-fri 19:00-23:00" in done.stdout and "block-7" in done.stdout
    shown = json.loads(cocharge("station", "show", "CP1", "--json", db=db).stdout)
    rules = shown["rules"]["station"]
    assert rules["windows"] == ["mon-fri 19:00-23:00", "sat-sun 00:00-24:00"]
    assert rules["closed_dates"] == ["2026-12-25"] and rules["allowed_groups"] == ["block-7"]
    assert rules["owner_tags"] == ["ALICE"] and rules["bookings"] is False
    # A connector can have its own rules; the rest keep the station's.
    assert cocharge("station", "rules", "CP1", "--connector", "2", "--always-open", db=db).returncode == 0
    both = json.loads(cocharge("station", "rules", "CP1", "--json", db=db).stdout)
    assert both["connector 2"]["windows"] == [] and both["connector 2"]["allowed_groups"] == ["block-7"]
    # Who changed the rules, from the CLI as from the API and the console (the audit trail).
    trail = json.loads(cocharge("audit", "--station", "CP1", "--json", db=db).stdout)
    assert [e["action"] for e in trail] == ["rules", "rules"]
    assert trail[0]["actor"].startswith("cli ") and trail[0]["details"] == {
        "windows": [], "connector": 2}
    assert trail[1]["details"]["closed_dates"] == ["2026-12-25"]
    assert cocharge("station", "rules", "CP1", "--clear", db=db).returncode == 0
    assert "no rules" in cocharge("station", "rules", "CP1", db=db).stdout


def test_bad_rules_exit_2_and_change_nothing(tmp_path):
    db = str(tmp_path / "c.db")
    setup(db)
    assert cocharge("station", "rules", "CP1", "--window", "mon 08:00-10:00", db=db).returncode == 0
    for args, words in [(["--window", "weekdays 7pm-11pm"], "days"),
                        (["--window", "mon 10:00-10:00"], "00:00-24:00"),
                        (["--closed", "25/12/2026"], "YYYY-MM-DD"),
                        (["--tz", "Mars/Olympus"], "time zone"),
                        (["--connector", "5", "--always-open"], "connectors 1..2")]:
        bad = cocharge("station", "rules", "CP1", *args, db=db)
        assert bad.returncode == 2 and words in bad.stderr, (args, bad.stderr)
    kept = json.loads(cocharge("station", "rules", "CP1", "--json", db=db).stdout)
    assert kept == {"station": kept["station"]} and kept["station"]["windows"] == ["mon 08:00-10:00"]


def test_bookings_refuse_overlaps_and_can_be_cancelled(tmp_path):
    db = str(tmp_path / "c.db")
    setup(db)
    start = datetime.utcnow() + timedelta(hours=1)
    ok = cocharge("booking", "add", "CP1", "--connector", "1", "--tag", "BOB", "--from",
                  local(start), "--to", local(start + timedelta(hours=1)), db=db)
    assert ok.returncode == 0, ok.stderr
    clash = cocharge("booking", "add", "CP1", "--connector", "1", "--tag", "CAI", "--from",
                     local(start + timedelta(minutes=30)), "--to", local(start + timedelta(hours=2)),
                     db=db)
    assert clash.returncode == 2 and "already booked" in clash.stderr
    other = cocharge("booking", "add", "CP1", "--connector", "2", "--tag", "CAI", "--from",
                     local(start + timedelta(minutes=30)), "--to", local(start + timedelta(hours=2)),
                     db=db)
    assert other.returncode == 0
    bad = cocharge("booking", "add", "CP1", "--tag", "CAI", "--from", "tomorrow", "--to", "later",
                   db=db)
    assert bad.returncode == 2 and "is not a time" in bad.stderr
    listed = json.loads(cocharge("booking", "list", "--json", db=db).stdout)
    assert [(b["tag"], b["connector"], b["status"]) for b in listed] == [
        ("BOB", 1, "booked"), ("CAI", 2, "booked")]
    assert cocharge("booking", "cancel", str(listed[0]["id"]), db=db).returncode == 0
    again = cocharge("booking", "cancel", str(listed[0]["id"]), db=db)
    assert again.returncode == 2 and "cancelled" in again.stderr
    # The cancelled slot is free again.
    assert cocharge("booking", "add", "CP1", "--connector", "1", "--tag", "CAI", "--from",
                    local(start), "--to", local(start + timedelta(minutes=20)), db=db).returncode == 0


def test_group_forms_and_books_its_members(tmp_path):
    db = str(tmp_path / "c.db")
    setup(db)
    start = datetime.utcnow() + timedelta(days=1)
    slot = f"{local(start)}-{local(start + timedelta(hours=2))[-5:]}"
    if local(start)[:10] != local(start + timedelta(hours=2))[:10]:
        slot = f"{local(start)}/{local(start + timedelta(hours=2))}"
    below = cocharge("group", "create", "--station", "CP1", "--slot", slot, "--min", "3",
                     "--initiator", "ALICE", db=db)
    assert below.returncode == 2 and "at least 5 members" in below.stderr  # the rule's minimum
    assert cocharge("rewards", "rules", "set", "group.min_members", "3", db=db).returncode == 0
    made = cocharge("group", "create", "--station", "CP1", "--slot", slot,
                    "--initiator", "ALICE", db=db)
    assert made.returncode == 0, made.stderr
    assert "needs 3 members" in made.stdout
    assert "forming" in cocharge("group", "join", "1", "--tag", "BOB", db=db).stdout
    twice = cocharge("group", "join", "1", "--tag", "BOB", db=db)
    assert twice.returncode == 2 and "already in group" in twice.stderr
    assert "formed" in cocharge("group", "join", "1", "--tag", "CAI", db=db).stdout
    shown = json.loads(cocharge("group", "show", "1", "--json", db=db).stdout)
    assert shown["status"] == "formed" and shown["members"] == ["ALICE", "BOB", "CAI"]
    assert shown["free_session"] == "ALICE"  # all at 100 credit: the first to join
    listed = json.loads(cocharge("booking", "list", "--json", db=db).stdout)
    assert sorted(b["tag"] for b in listed) == ["ALICE", "BOB", "CAI"]
    assert all(b["group"] == 1 for b in listed)
    bad = cocharge("group", "create", "--station", "CP1", "--slot", "noon", db=db)
    assert bad.returncode == 2 and "--slot" in bad.stderr


def test_member_update_and_remote_limits_are_checked(tmp_path):
    db = str(tmp_path / "c.db")
    setup(db)
    ok = cocharge("member", "update", "BOB", "--groups", "block-7,ev-club", "--vehicle",
                  "BYD Dolphin", "--quota-kwh", "50", db=db)
    assert ok.returncode == 0
    nothing = cocharge("member", "update", "BOB", db=db)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    bad = cocharge("remote", "start", "CP1", "--tag", "BOB", "--budget", "-3", db=db)
    assert bad.returncode == 2 and "--budget" in bad.stderr
    bad = cocharge("remote", "start", "CP1", "--tag", "BOB", "--expires", "soon", db=db)
    assert bad.returncode == 2 and "duration" in bad.stderr


def test_member_details_are_changed_checked_and_recorded(tmp_path):
    """`member update` changes name, phone and expiry too (the API's and the console's
    checks, one place); a bad value is one line, exit 2, nothing written; a change is in the
    audit trail with who typed it."""
    db = str(tmp_path / "c.db")
    setup(db)
    assert cocharge("member", "add", "Dai", "--tag", "DAI", "--phone", "13900139000",
                    db=db).returncode == 0
    for args, says in ((("--phone", "call me"), "--phone"),
                       (("--phone", "139 0013 9000"), "already belongs to member DAI"),
                       (("--expires", "next year"), "--expires"),
                       (("--name", ""), "name: 1 to"),
                       (("--lang", "fr"), "language 'fr'")):
        bad = cocharge("member", "update", "BOB", "--name", "Robert", *args, db=db)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr
    listed = {m["tag"]: m for m in json.loads(cocharge("member", "list", "--json",
                                                       db=db).stdout)}
    assert listed["BOB"]["name"] == "Bob"  # nothing of a refused change written
    ok = cocharge("member", "update", "BOB", "--name", "Robert", "--phone", "+86 138 0013 8000",
                  "--expires", "2027-06-30", db=db)
    assert ok.returncode == 0, ok.stderr
    listed = {m["tag"]: m for m in json.loads(cocharge("member", "list", "--json",
                                                       db=db).stdout)}
    assert (listed["BOB"]["name"], listed["BOB"]["phone"]) == ("Robert", "13800138000")
    assert listed["BOB"]["expires_at"].startswith("2027-06-30")
    assert cocharge("member", "update", "BOB", "--expires", "never", db=db).returncode == 0
    listed = {m["tag"]: m for m in json.loads(cocharge("member", "list", "--json",
                                                       db=db).stdout)}
    assert listed["BOB"]["expires_at"] in (None, "")
    assert cocharge("member", "block", "BOB", db=db).returncode == 0
    trail = json.loads(cocharge("audit", "--account", "member:BOB", "--json", db=db).stdout)
    assert [e["action"] for e in trail] == ["blocked", "member-changed", "member-changed"]
    assert trail[2]["details"]["name"] == "Robert" and trail[2]["actor"].startswith("cli ")


def test_a_booking_is_refused_to_a_member_the_owner_does_not_share_with(tmp_path):
    """The same rule as at the charger: a member outside the allowed groups and models
    cannot book the charger either (it could then charge at the booked time)."""
    db = str(tmp_path / "c.db")
    assert cocharge("station", "add", "WB0001", db=db).returncode == 0
    for name, tag in (("Bob", "BOB002"), ("Ann", "ANN001")):
        assert cocharge("member", "add", name, "--tag", tag, db=db).returncode == 0
    assert cocharge("member", "update", "ANN001", "--groups", "block-7", "--vehicle",
                    "BYD Dolphin", db=db).returncode == 0
    assert cocharge("station", "rules", "WB0001", "--allow-group", "block-7", "--allow-model",
                    "BYD Dolphin", db=db).returncode == 0
    slot = ["--from", "2027-06-05T19:00", "--to", "2027-06-05T20:00"]
    refused = cocharge("booking", "add", "WB0001", "--tag", "BOB002", *slot, db=db)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "BOB002 cannot book here: the owner does not share this charger with this member" in refused.stderr
    assert cocharge("booking", "add", "WB0001", "--tag", "ANN001", *slot, db=db).returncode == 0
    assert len(json.loads(cocharge("booking", "list", "--json", db=db).stdout)) == 1


def test_times_are_printed_local_with_their_offset_and_in_utc_with_utc(tmp_path):
    """Issue 33, item 1: a booking typed for 19:00 is listed at 19:00+08:00 (the platform's
    zone, `[gateway] time_zone`), in the table and in JSON; `cocharge --utc` prints 11:00Z for
    scripts; another zone in the configuration prints that zone's time; a zone that is not
    one is refused in one line."""
    from tests import forked_cli

    db = str(tmp_path / "c.db")
    setup(db)
    day = (datetime.utcnow() + timedelta(days=2)).strftime("%Y-%m-%d")
    assert cocharge("booking", "add", "CP1", "--tag", "BOB", "--from", f"{day}T19:00", "--to",
                    f"{day}T20:00", db=db).returncode == 0
    table = cocharge("booking", "list", db=db).stdout
    assert f"{day}T19:00:00+08:00" in table and f"{day}T20:00:00+08:00" in table
    listed = json.loads(cocharge("booking", "list", "--json", db=db).stdout)
    assert (listed[0]["from"], listed[0]["to"]) == (f"{day}T19:00:00+08:00",
                                                    f"{day}T20:00:00+08:00")
    utc = json.loads(forked_cli.run(["--utc", "booking", "list", "--json", "--db", db]).stdout)
    assert (utc[0]["from"], utc[0]["to"]) == (f"{day}T11:00:00Z", f"{day}T12:00:00Z")
    paris = tmp_path / "paris.toml"
    paris.write_text('[gateway]\ntime_zone = "Europe/Paris"\n')
    there = forked_cli.run(["--config", str(paris), "booking", "list", "--db", db]).stdout
    assert f"{day}T12:00:00+01:00" in there
    mars = tmp_path / "mars.toml"
    mars.write_text('[gateway]\ntime_zone = "Mars/Olympus"\n')
    bad = forked_cli.run(["--config", str(mars), "booking", "list", "--db", db])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "time zone" in bad.stderr
