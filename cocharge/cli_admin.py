"""Onboarding and access commands of `cocharge`: `station import` and `member import` (a
fleet from a CSV file, all or nothing) and `apikey create|list|revoke` (keys of the HTTP API
and the web console).

Imported at the end of `cocharge.cli`, which owns the command groups and helpers.
"""

from __future__ import annotations

import csv
import secrets
import string
import sys
from datetime import datetime
from typing import Any

import click
from sqlalchemy import insert, select

from cocharge.cli import db_option, emit, fail, json_option, main, member, station, with_store
from cocharge.stations import registry
from cocharge.stations.commands import PASSWORD_RULE, valid_password
from cocharge.stations.passwords import hash_password
from cocharge.store.db import utcnow
from cocharge.store.schema import members, stations

STATION_COLUMNS = ("id", "password", "owner", "connectors", "max_power_kw", "area")
MEMBER_COLUMNS = ("name", "tag", "phone", "household", "expires", "referred_by")
# Letters and digits only: a generated password survives any charger's configuration tool.
ALPHABET = string.ascii_letters + string.digits


def generated_password() -> str:
    """24 random letters and digits (about 143 bits), within OCPP's 16-40 characters."""
    return "".join(secrets.choice(ALPHABET) for _ in range(24))


def _rows(path: str, known: tuple[str, ...], required: tuple[str, ...]) -> list[dict[str, str]]:
    """The file's rows as dicts; every problem is one line and exit 2."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                fail(f"{path}: the header must name {', '.join(required)} (missing "
                     f"{', '.join(missing)}); optional: "
                     f"{', '.join(c for c in known if c not in required)}")
            unknown = [c for c in header if c not in known]
            if unknown:
                fail(f"{path}: unknown column(s) {', '.join(unknown)}; known: {', '.join(known)}")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()}
                    for row in reader]
    except FileNotFoundError:
        fail(f"no file {path}")
        raise
    except (UnicodeDecodeError, csv.Error) as exc:
        fail(f"{path}: not a UTF-8 CSV file ({exc})")
        raise
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
        raise
    if not rows:
        fail(f"{path}: no rows under the header")
    return rows


def _check_all(problems: list[str], path: str) -> None:
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        fail(f"{path}: nothing imported, fix these first: " + "; ".join(shown))


@station.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check the file and say what would be added.")
@db_option
def station_import(path: str, dry_run: bool, db: str | None) -> None:
    """Register stations from a CSV file: id[,password,owner,connectors,max_power_kw,area].

    All or nothing: a bad row (or an id already registered) imports none. A row without a
    password gets a generated one, printed once (CSV on standard output: id,password) to
    configure in the charger; store it now, only its hash is kept.
    """
    rows = _rows(path, STATION_COLUMNS, ("id",))
    problems: list[str] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):
        sid = row["id"]
        if not sid or "/" in sid or len(sid) > 64:
            problems.append(f"line {n}: id {sid!r} must be 1-64 characters without '/'")
        if sid in seen:
            problems.append(f"line {n}: id {sid!r} twice in the file")
        seen.add(sid)
        if row.get("password") and not valid_password(row["password"]):
            problems.append(f"line {n}: password: {PASSWORD_RULE}")
        connectors = row.get("connectors") or "1"
        if not connectors.isdigit() or not 1 <= int(connectors) <= 64:
            problems.append(f"line {n}: connectors {connectors!r}: a whole number 1-64")
        power = row.get("max_power_kw") or ""
        if power:
            try:
                if not 0.1 <= float(power) <= 1000 or not power.replace(".", "", 1).isdigit():
                    raise ValueError
            except ValueError:
                problems.append(f"line {n}: max_power_kw {power!r}: 0.1 to 1000 (kW)")
    _check_all(problems, path)

    async def work(engine: Any) -> list[tuple[str, str]]:
        async with engine.connect() as conn:
            taken = set((await conn.execute(select(stations.c.id).where(
                stations.c.id.in_(seen)))).scalars())
        if taken:
            fail(f"{path}: nothing imported, already registered: {', '.join(sorted(taken))} "
                 "(`cocharge station update` changes a registered station)")
        if dry_run:
            return []
        generated: list[tuple[str, str]] = []
        values = []
        with click.progressbar(rows, label="hashing passwords", file=sys.stderr) as shown:
            for row in shown:
                password = row.get("password") or None
                if password is None:
                    password = generated_password()
                    generated.append((row["id"], password))
                power = row.get("max_power_kw")
                values.append({
                    "id": row["id"], "password_hash": hash_password(password),
                    "owner": row.get("owner") or None,
                    "connectors": int(row.get("connectors") or 1),
                    "max_power_w": round(float(power) * 1000) if power else None,
                    "admission": "accepted", "area": row.get("area") or None,
                    "created_at": utcnow()})
        async with engine.begin() as conn:
            await conn.execute(insert(stations), values)
        return generated

    generated = with_store(db, work)
    if dry_run:
        click.echo(f"{path}: {len(rows)} station(s) would be registered "
                   f"({sum(1 for r in rows if not r.get('password'))} with a generated password); "
                   "nothing written (--dry-run)")
        return
    if generated:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["id", "password"])
        writer.writerows(generated)
    click.echo(f"{len(rows)} station(s) registered"
               + (f"; {len(generated)} generated password(s) above, shown only this once"
                  if generated else ""), err=True)


@member.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check the file and say what would be added.")
@db_option
def member_import(path: str, dry_run: bool, db: str | None) -> None:
    """Add members from a CSV file: name,tag[,phone,household,expires,referred_by].

    All or nothing: a bad row, a tag already taken or a referrer that does not exist (in the
    database or on an earlier line) imports none.
    """
    rows = _rows(path, MEMBER_COLUMNS, ("name", "tag"))
    problems: list[str] = []
    seen: set[str] = set()
    phones: dict[str, int] = {}
    expires: dict[str, datetime | None] = {}
    for n, row in enumerate(rows, start=2):
        tag = row["tag"]
        if not row["name"] or len(row["name"]) > 100:
            problems.append(f"line {n}: name: 1 to 100 characters")
        if not 1 <= len(tag) <= 20 or tag.startswith("#"):
            problems.append(f"line {n}: tag {tag!r}: 1 to 20 characters, not beginning with '#'")
        if tag in seen:
            problems.append(f"line {n}: tag {tag!r} twice in the file")
        if len(row.get("household") or "") > 20:
            problems.append(f"line {n}: household: up to 20 characters")
        try:
            expires[tag] = datetime.fromisoformat(row["expires"]) if row.get("expires") else None
        except ValueError:
            problems.append(f"line {n}: expires {row['expires']!r}: a date, 2027-12-31")
        referrer = row.get("referred_by") or ""
        if referrer == tag:
            problems.append(f"line {n}: a member cannot refer itself")
        if row.get("phone"):
            try:
                row["phone"] = registry.normalize_phone(row["phone"])
            except registry.RegistryError as exc:
                problems.append(f"line {n}: {str(exc).removeprefix('--')}")
            if row["phone"] in phones:
                problems.append(f"line {n}: phone {row['phone']} is also on line "
                                f"{phones[row['phone']]}: one phone number, one account")
            phones.setdefault(row["phone"], n)
        seen.add(tag)
    _check_all(problems, path)

    async def work(engine: Any) -> None:
        async with engine.connect() as conn:
            taken = set((await conn.execute(select(members.c.tag).where(
                members.c.tag.in_(seen)))).scalars())
            wanted = {r["referred_by"] for r in rows if r.get("referred_by")}
            existing = set((await conn.execute(select(members.c.tag).where(
                members.c.tag.in_(wanted)))).scalars())
            held = await registry.phone_taken(conn, list(phones))
        if taken:
            fail(f"{path}: nothing imported, tags already taken: {', '.join(sorted(taken))}")
        if held:
            fail(f"{path}: nothing imported, phone numbers already of a member (one phone, one "
                 f"account): {', '.join(f'{p} ({t})' for p, t in sorted(held.items()))}")
        earlier: set[str] = set()
        for n, row in enumerate(rows, start=2):
            referrer = row.get("referred_by")
            if referrer and referrer not in existing and referrer not in earlier:
                fail(f"{path}: nothing imported, line {n}: referred_by {referrer!r} is no "
                     "member (add the referrer first, or on an earlier line)")
            earlier.add(row["tag"])
        if dry_run:
            return
        now = utcnow()
        async with engine.begin() as conn:
            await conn.execute(insert(members), [{
                "tag": r["tag"], "name": r["name"], "phone": r.get("phone") or None,
                "status": "active", "expires_at": expires[r["tag"]],
                "referred_by": r.get("referred_by") or None,
                "household": r.get("household") or None, "created_at": now} for r in rows])

    with_store(db, work)
    click.echo(f"{path}: {len(rows)} member(s) "
               + ("would be added; nothing written (--dry-run)" if dry_run else "added"))


# --- API keys -------------------------------------------------------------------------------

@main.group()
def apikey() -> None:
    """Keys of the HTTP API and the web console (docs/api.md)."""


@apikey.command("create")
@click.option("--name", required=True, help="Who or what uses it, e.g. 'Greenfield backend'.")
@click.option("--role", required=True,
              type=click.Choice(["operator", "property", "host", "member"]),
              help="operator: everything; property/host: its own stations and money; "
                   "member: its own bookings, sessions, wallet, rewards.")
@click.option("--owner", help="What a non-operator key sees: the property's or host's "
              "account name, the member's tag.")
@db_option
def apikey_create(name: str, role: str, owner: str | None, db: str | None) -> None:
    """Make a key; it is printed once (only its hash is kept)."""
    from cocharge.api.keys import ApiKeyError, create_key

    async def work(engine: Any) -> str:
        try:
            return await create_key(engine, name, role, owner)
        except ApiKeyError as exc:
            fail(str(exc))
            raise

    key = with_store(db, work)
    click.echo(key)
    click.echo(f"{role} key for {name}" + (f" ({owner})" if owner else "")
               + ": shown only this once; log in to the console with it, or send it as "
               "'Authorization: Bearer <key>'", err=True)


@apikey.command("list")
@db_option
@json_option
def apikey_list(db: str | None, as_json: bool) -> None:
    """Every key (never the key itself)."""
    from cocharge.api.keys import list_keys

    emit(with_store(db, list_keys), as_json,
         ["id", "name", "role", "owner", "created", "last_used", "revoked"])


@apikey.command("revoke")
@click.argument("key_id")
@db_option
def apikey_revoke(key_id: str, db: str | None) -> None:
    """Revoke a key by its id (`apikey list`); it stops working at once."""
    from cocharge.api.keys import ApiKeyError, revoke_key

    async def work(engine: Any) -> None:
        try:
            await revoke_key(engine, key_id.removeprefix("cck_").split("_")[0])
        except ApiKeyError as exc:
            fail(str(exc))

    with_store(db, work)
    click.echo(f"key {key_id} revoked")
