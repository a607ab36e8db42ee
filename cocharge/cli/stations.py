"""Stations and members: register, list, show, import from CSV, block."""

from __future__ import annotations

import contextlib
import csv
import json
import secrets
import string
import sys
from datetime import datetime
from typing import Any

import click
from sqlalchemy import insert, select

from cocharge.cli.common import (
    FiniteRange,
    db_option,
    emit,
    fail,
    json_option,
)
from cocharge.cli.database import with_store
from cocharge.cli.lazy import LazyGroup
from cocharge.stations import registry
from cocharge.stations.passwords import PASSWORD_RULE, hash_password, valid_password
from cocharge.store.audit import cli_actor
from cocharge.store.db import (
    utcnow,
)
from cocharge.store.schema import members
from cocharge.store.schema import stations as stations_table
from cocharge.store.sql import among

# --- stations -------------------------------------------------------------------------------

@click.group(cls=LazyGroup, lazy={
    "rules": "cocharge.cli.sharing:station_rules",
    "attach": "cocharge.cli.load:station_attach",
    "detach": "cocharge.cli.load:station_detach",
    "rotate-password": "cocharge.cli.security:station_rotate_password",
    "certificates": "cocharge.cli.security:station_certificates",
    "revoke-certificate": "cocharge.cli.security:station_revoke_certificate",
    "renew-certificate": "cocharge.cli.security:station_renew_certificate",
    "security-profile": "cocharge.cli.security:station_security_profile",
    "qr": "cocharge.cli.sharing:station_qr",
})
def station() -> None:
    """Register and inspect charging stations."""


@station.command("add")
@click.argument("station_id")
@click.option("--password", help="HTTP Basic password the station must present (stored hashed).")
@click.option("--owner")
@click.option("--connectors", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--max-power-kw", type=FiniteRange(0.1, 1000))
@click.option("--area", help="Neighbourhood (the revenue calculator compares within an area).")
@click.option("--lat", type=FiniteRange(-90, 90), help="Where it is: latitude (WGS-84), with --lon "
              "(drivers find it under 'stations near me').")
@click.option("--lon", type=FiniteRange(-180, 180), help="... and longitude.")
@click.option("--address", help="Its address, as drivers look for it.")
@db_option
def station_add(station_id: str, password: str | None, owner: str | None, connectors: int,
                max_power_kw: float | None, area: str | None, lat: float | None,
                lon: float | None, address: str | None, db: str | None) -> None:
    """Register a station so that it is Accepted when it boots."""
    if "/" in station_id or not station_id.strip():
        fail(f"station id {station_id!r} must be non-empty and contain no '/'")
    if password is not None and len(password) < 8:
        fail("--password must be at least 8 characters (OCPP asks for 16 or more)")
    with_store(db, lambda e: registry.add_station(e, registry.NewStation(
        station_id, password, owner, connectors, max_power_kw, area, lat, lon, address)))
    click.echo(f"station {station_id} registered")


@station.command("update")
@click.argument("station_id")
@click.option("--owner")
@click.option("--max-power-kw", type=FiniteRange(0.1, 1000))
@click.option("--area")
@click.option("--password", help="New HTTP Basic password (stored hashed); the running "
              "gateways use it at once.")
@click.option("--clear-password", is_flag=True, help="Let the station connect without one.")
@click.option("--connectors", type=click.IntRange(1, 64), help="How many connectors it has.")
@click.option("--lat", type=FiniteRange(-90, 90), help="Where it is: latitude (WGS-84), with --lon.")
@click.option("--lon", type=FiniteRange(-180, 180), help="... and longitude.")
@click.option("--address", help="Its address, as drivers look for it ('' to clear).")
@db_option
def station_update(station_id: str, owner: str | None, max_power_kw: float | None,
                   area: str | None, password: str | None, clear_password: bool,
                   connectors: int | None, lat: float | None, lon: float | None,
                   address: str | None, db: str | None) -> None:
    """Change a station's owner, maximum power, area, connectors, password or place."""
    if password is not None and len(password) < 8:
        fail("--password must be at least 8 characters (OCPP asks for 16 or more)")
    async def work(engine: Any) -> None:
        await registry.update_station(engine, station_id, owner, max_power_kw, area, password,
                                      clear_password, connectors, lat, lon, address,
                                      by=cli_actor())
        if password is not None or clear_password:
            # The running gateways forget the old password at once (none running: nothing).
            from cocharge.gateway.operator_client import OperatorError, send_request

            with contextlib.suppress(OperatorError):
                await send_request(engine, {"command": "station-changed",
                                            "station": station_id}, timeout=5)

    with_store(db, work)
    click.echo(f"station {station_id} updated")


@station.command("list")
@db_option
@json_option
def station_list(db: str | None, as_json: bool) -> None:
    """All stations: online (and the gateway node holding it), admission, protocol, last
    contact and connector states (an offline station's are its last known)."""
    rows = with_store(db, registry.list_stations)
    for r in rows:
        r["status"] = ", ".join(f"{k}:{v['status']}" for k, v in r["connector_status"].items())
    shown = rows if as_json else [
        {**r, "password": "yes" if r["password"] else "NONE"} for r in rows]
    if not as_json:
        shown = [{**r, "online": "yes" if r["online"] else "no",
                  "status": r["status"] if r["online"] else f"(last: {r['status'] or '-'})"}
                 for r in shown]
    emit(shown, as_json, ["id", "online", "node", "owner", "admission", "protocol", "password",
                          "connectors", "max_power_kw", "last_seen_at", "status"])
    without = sum(1 for r in rows if not r["password"])
    if without and not as_json:
        click.echo(f"{without} station(s) without a password: anyone who knows the id can "
                   "connect as them (`cocharge station update ID --password ...`)", err=True)


@station.command("variables")
@click.argument("station_id")
@click.option("--component", help="Only this component (e.g. OCPPCommCtrlr, EVSE).")
@db_option
@json_option
def station_variables(station_id: str, component: str | None, db: str | None,
                      as_json: bool) -> None:
    """A 2.0.1 station's device model, as its last reports told it
    (`cocharge remote get-base-report ID` asks for a fresh one)."""
    rows = with_store(db, lambda e: registry.list_station_variables(e, station_id, component))
    emit(rows, as_json, ["component", "evse", "connector", "variable", "type", "value",
                         "mutability", "unit"])


@station.command("monitors")
@click.argument("station_id")
@db_option
@json_option
def station_monitors(station_id: str, db: str | None, as_json: bool) -> None:
    """A 2.0.1 station's variable monitors (`remote set-variable-monitoring` sets them,
    `remote get-monitoring-report` reads them from the station)."""
    rows = with_store(db, lambda e: registry.list_station_monitors(e, station_id))
    emit(rows, as_json, ["id", "component", "evse", "variable", "type", "value", "severity",
                         "transaction", "source"])


@station.command("events")
@click.argument("station_id")
@click.option("--kind", help="Only this kind (auth_lockout, takeover_refused, security, "
              "firmware, diagnostics, data_transfer, ...).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@db_option
@json_option
def station_events(station_id: str, kind: str | None, limit: int, db: str | None,
                   as_json: bool) -> None:
    """What the station (or someone posing as it) did: lockouts, security events, firmware."""
    rows = with_store(db, lambda e: registry.list_station_events(e, station_id, kind, limit))
    shown = rows if as_json else [
        {**r, "details": json.dumps(r["details"], sort_keys=True)[:120]} for r in rows]
    emit(shown, as_json, ["at", "kind", "details"])


@station.command("show")
@click.argument("station_id")
@db_option
@json_option
def station_show(station_id: str, db: str | None, as_json: bool) -> None:
    """One station in detail, with its sharing rules."""

    # Here only: the sharing rules bring the loyalty and ledger modules (25 ms of every other
    # station command's start).
    from cocharge.stations import sharing

    async def work(engine: Any) -> dict[str, Any]:
        shown = await registry.get_station(engine, station_id)
        rules = await sharing.show_rules(engine, station_id)
        shown["rules"] = {scope: {k: v for k, v in r.items() if v not in (None, [], "")}
                          for scope, r in rules.items()} or "none (not share-managed)"
        return shown

    emit(with_store(db, work), as_json)


@station.command("approve")
@click.argument("station_id")
@db_option
def station_approve(station_id: str, db: str | None) -> None:
    """Accept an auto-registered (Pending) station."""
    with_store(db, lambda e: registry.approve_station(e, station_id))
    click.echo(f"station {station_id} approved: it is Accepted at its next BootNotification")


@station.command("remove")
@click.argument("station_id")
@db_option
def station_remove(station_id: str, db: str | None) -> None:
    """Unregister a station (its sessions are kept)."""
    with_store(db, lambda e: registry.remove_station(e, station_id))
    click.echo(f"station {station_id} removed")


# --- members --------------------------------------------------------------------------------

@click.group(cls=LazyGroup, lazy={
    "update": "cocharge.cli.sharing:member_update",
    "show": "cocharge.cli.rewards:member_show",
})
def member() -> None:
    """Members and their idTags."""


HOUSEHOLD_HELP = ("A household or fleet (up to 20 characters): its members' cards stop each "
                  "other's sessions (sent as groupIdToken / parentIdTag).")


def check_household(household: str | None) -> None:
    if household is not None and (len(household.strip()) > 20 or not household.isprintable()):
        fail(f"--household {household!r}: up to 20 printable characters (OCPP's limit)")


@member.command("add")
@click.argument("name")
@click.option("--tag", required=True, help="The member's idTag / idToken (RFID or app token).")
@click.option("--phone")
@click.option("--expires", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Date (UTC) after which the tag answers Expired.")
@click.option("--referred-by", help="Tag of the member who referred this one (set once, here).")
@click.option("--household", help=HOUSEHOLD_HELP)
@db_option
def member_add(name: str, tag: str, phone: str | None, expires: datetime | None,
               referred_by: str | None, household: str | None, db: str | None) -> None:
    """Add a member with an idTag."""
    if not 1 <= len(tag) <= 20:
        fail(f"--tag {tag!r}: an OCPP 1.6 idTag has 1 to 20 characters")
    if tag.startswith("#"):
        fail(f"--tag {tag!r}: a tag cannot begin with '#' (kept for tokens that are no card)")
    check_household(household)
    with_store(db, lambda e: registry.add_member(e, name, tag, phone, expires, referred_by,
                                                 household or None))
    click.echo(f"member {name} added with tag {tag}"
               + (f", referred by {referred_by}" if referred_by else ""))


@member.command("list")
@db_option
@json_option
def member_list(db: str | None, as_json: bool) -> None:
    """All members."""
    emit(with_store(db, registry.list_members), as_json,
         ["tag", "name", "phone", "status", "expires_at", "household"])


@member.command("block")
@click.argument("tag")
@db_option
def member_block(tag: str, db: str | None) -> None:
    """Block a tag: it answers Blocked from now on (and leaves the chargers' local lists)."""
    with_store(db, lambda e: _member_status(e, tag, True))
    click.echo(f"tag {tag} blocked")


async def _member_status(engine: Any, tag: str, blocked: bool) -> None:
    """Block or accept a member, and tell the running gateways (their chargers' local lists
    follow at once; none running: nothing to tell)."""
    from cocharge.gateway.operator_client import OperatorError, send_request

    await registry.block_member(engine, tag, blocked, by=cli_actor())
    with contextlib.suppress(OperatorError):
        await send_request(engine, {"command": "member-changed", "station": "",
                                    "args": {"tag": tag}}, timeout=5)


@member.command("invite")
@click.argument("tag")
@click.option("--valid", default="7d", show_default=True,
              help="How long the link works: 90m, 2d, ...")
@click.option("--base-url", help="The console's address as phones reach it (default: "
              "[gateway] console_url).")
@db_option
def member_invite(tag: str, valid: str, base_url: str | None, db: str | None) -> None:
    """A one-time link that makes the member's login (phone number and password): send it
    to the member."""
    from datetime import timedelta

    from cocharge.api import logins
    from cocharge.cli.channel import parse_duration
    config = click.get_current_context().find_root().obj
    base = base_url or getattr(getattr(config, "gateway", None), "console_url", None) or ""
    if not base.startswith(("http://", "https://")):
        fail("give --base-url https://... (the console's address as phones reach it), or set "
             "[gateway] console_url in the configuration file")
    seconds = parse_duration(valid)  # a bad one: one line, exit 2

    async def work(engine: Any) -> tuple[str, str]:
        try:
            return await logins.invite(engine, tag, cli_actor()[0], timedelta(seconds=seconds))
        except logins.LoginError as exc:
            fail(str(exc))
            raise

    token, expires = with_store(db, work)
    click.echo(f"{base.rstrip('/')}/console/join/{token}")
    click.echo(f"(for {tag}; works once, until {expires})", err=True)


@member.command("unblock")
@click.argument("tag")
@db_option
def member_unblock(tag: str, db: str | None) -> None:
    """Accept a blocked tag again."""
    with_store(db, lambda e: _member_status(e, tag, False))
    click.echo(f"tag {tag} accepted again")



STATION_COLUMNS = ("id", "password", "owner", "connectors", "max_power_kw", "area", "lat",
                   "lon", "address")
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


def _place(row: dict[str, str]) -> tuple[float | None, float | None]:
    """A CSV row's lat and lon (finite numbers, or both empty)."""
    import math

    found: list[float | None] = []
    for name in ("lat", "lon"):
        text = (row.get(name) or "").strip()
        if not text:
            found.append(None)
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{name} {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{name} {text!r} is not a number")
        found.append(value)
    return found[0], found[1]


@station.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check the file and say what would be added.")
@db_option
def station_import(path: str, dry_run: bool, db: str | None) -> None:
    """Register stations from a CSV file:
    id[,password,owner,connectors,max_power_kw,area,lat,lon,address].

    All or nothing: a bad row (or an id already registered) imports none. A row without a
    password gets a generated one, printed once (CSV on standard output: id,password) to
    configure in the charger; store it now, only its hash is kept.
    """
    rows = _rows(path, STATION_COLUMNS, ("id",))
    problems: list[str] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):
        sid = row["id"]
        try:
            registry.check_station_id(sid)  # the same rule as `station add`
        except registry.RegistryError as exc:
            problems.append(f"line {n}: {exc}")
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
        try:
            lat, lon = _place(row)
            registry.check_place(lat, lon, row.get("address") or None)
        except (ValueError, registry.RegistryError) as exc:
            problems.append(f"line {n}: {str(exc).replace('--', '')}")
    _check_all(problems, path)

    async def work(engine: Any) -> list[tuple[str, str]]:
        async with engine.connect() as conn:
            taken = set((await conn.execute(select(stations_table.c.id).where(
                among(conn, stations_table.c.id, seen)))).scalars())
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
                    "lat": _place(row)[0], "lon": _place(row)[1],
                    "address": row.get("address") or None,
                    "created_at": utcnow()})
        async with engine.begin() as conn:
            await conn.execute(insert(stations_table), values)
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
                among(conn, members.c.tag, seen)))).scalars())
            wanted = {r["referred_by"] for r in rows if r.get("referred_by")}
            existing = set((await conn.execute(select(members.c.tag).where(
                among(conn, members.c.tag, wanted)))).scalars())
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
