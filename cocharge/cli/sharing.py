"""Sharing: the owner's rules, bookings, group charging, queued commands."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

import click

from cocharge.cli.common import (
    ID,
    FiniteRange,
    db_option,
    emit,
    fail,
    json_option,
    rule_error,
)
from cocharge.cli.database import with_store
from cocharge.cli.stations import HOUSEHOLD_HELP
from cocharge.stations import registry, sharing
from cocharge.store.audit import cli_actor


@click.command("rules")
@click.argument("station_id")
@click.option("--connector", default=0, show_default=True, type=click.IntRange(0, 64),
              help="Rules for one connector (0 = the whole station).")
@click.option("--window", "windows", multiple=True,
              help="Opening window, repeatable: 'mon-fri 19:00-23:00', 'sat,sun 00:00-24:00', "
                   "'fri 22:00-02:00' (crosses midnight). Replaces the windows.")
@click.option("--always-open", is_flag=True, help="Remove the windows: open around the clock.")
@click.option("--closed", "closed_dates", multiple=True, help="Closed date YYYY-MM-DD, repeatable.")
@click.option("--allow-tag", "allow_tags", multiple=True, help="Share only with these tags (repeatable).")
@click.option("--allow-group", "allow_groups", multiple=True, help="... or members of these groups.")
@click.option("--allow-model", "allow_models", multiple=True, help="Only these vehicle models.")
@click.option("--allow-everyone", is_flag=True, help="Clear the tag, group and model restrictions.")
@click.option("--bookings/--no-bookings", default=None, help="Accept bookings.")
@click.option("--owner-tag", "owner_tags", multiple=True, help="The owner's own tags: always allowed.")
@click.option("--owner-priority", type=click.Choice(["on", "off"]),
              help="'on': the owner takes the charger back after the current session.")
@click.option("--tz", help="Time zone of the windows (IANA name, default Asia/Shanghai).")
@click.option("--min-credit", type=click.IntRange(0, 1_000_000),
              help="Members below this credit score may not charge here (0: no minimum).")
@click.option("--clear", is_flag=True, help="Remove all rules: the station is no longer share-managed.")
@db_option
@json_option
def station_rules(station_id: str, connector: int, windows: tuple[str, ...], always_open: bool,
                  closed_dates: tuple[str, ...], allow_tags: tuple[str, ...],
                  allow_groups: tuple[str, ...], allow_models: tuple[str, ...], allow_everyone: bool,
                  bookings: bool | None, owner_tags: tuple[str, ...], owner_priority: str | None,
                  tz: str | None, min_credit: int | None, clear: bool, db: str | None,
                  as_json: bool) -> None:
    """Show or change the owner's sharing rules (without options: show them)."""


    if windows and always_open:
        fail("--window and --always-open contradict each other: give one")
    given: dict[str, Any] = {}
    if windows or always_open:
        given["windows"] = list(windows)
    if closed_dates:
        given["closed_dates"] = list(closed_dates)
    if allow_everyone:
        given.update(allowed_tags=[], allowed_groups=[], allowed_models=[])
    for key, values in (("allowed_tags", allow_tags), ("allowed_groups", allow_groups),
                        ("allowed_models", allow_models), ("owner_tags", owner_tags)):
        if values:
            given[key] = list(values)
    if bookings is not None:
        given["bookings"] = bookings
    if owner_priority is not None:
        given["owner_priority"] = owner_priority == "on"
    if tz:
        given["tz"] = tz
    if min_credit is not None:
        given["min_credit"] = min_credit
    changes = rule_error(lambda: sharing.rule_changes(given))
    if clear:
        if changes:
            fail("--clear removes every rule: give it alone")
        with_store(db, lambda e: sharing.clear_rules(e, station_id))
        click.echo(f"station {station_id}: rules removed, no longer share-managed")
        return
    if changes:
        with_store(db, lambda e: sharing.set_rules(e, station_id, connector, changes,
                                                   by=cli_actor(), said=given))
    shown = with_store(db, lambda e: sharing.show_rules(e, station_id))
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    if not shown:
        click.echo(f"station {station_id}: no rules (open to every member, not share-managed)")
    for scope, rules in shown.items():
        click.echo(f"{station_id} {scope}:")
        for key, value in rules.items():
            if isinstance(value, list):
                value = ", ".join(value) or "-"
            click.echo(f"  {key:>16}: {value}")


@click.command("update")
@click.argument("tag")
@click.option("--name", help="The member's name.")
@click.option("--phone", help="The member's phone number ('' to clear).")
@click.option("--expires", help="Date (UTC) after which the tag answers Expired: 2027-06-30 or "
              "2027-06-30T18:00:00; 'never' to clear.")
@click.option("--groups", help="Comma-separated groups the member belongs to ('' to clear).")
@click.option("--vehicle", help="The member's vehicle model, e.g. 'BYD Dolphin'.")
@click.option("--quota-kwh", type=FiniteRange(0, 100000),
              help="Free energy per month, kWh (OEM membership: 50).")
@click.option("--green/--no-green", default=None, help="Chooses green energy (-10% at green chargers).")
@click.option("--household", help=HOUSEHOLD_HELP + " '' to clear.")
@click.option("--pay-with", help="coins, points or coins,points: they pay part of each session "
              "before the wallet (redeem.* in the rule table); '' for the wallet only.")
@click.option("--lang", "language", help="The language of the member's messages at the "
              "charger: zh or en ('' for the platform's display_language).")
@db_option
def member_update(tag: str, name: str | None, phone: str | None, expires: str | None,
                  groups: str | None, vehicle: str | None, quota_kwh: float | None,
                  green: bool | None, household: str | None, pay_with: str | None,
                  language: str | None, db: str | None) -> None:
    """Change a member's details and what sharing and settlement look at: name, phone,
    expiry, groups, vehicle, a monthly free quota set by hand (memberships give theirs:
    `cocharge membership`), green, paying with coins, the language at the charger."""

    quota = round(quota_kwh * 1000) if quota_kwh is not None else None
    until: datetime | Literal[""] | None = None
    if expires is not None:
        until = "" if expires.strip().lower() == "never" else _expiry(expires)
    changed = with_store(db, lambda e: sharing.update_member(
        e, tag, groups, vehicle, quota, green, household, pay_with, language,
        name=name, phone=phone, expires=until, by=cli_actor()))
    click.echo(f"member {tag} updated: " + ", ".join(
        f"{k}={'' if v is None else v}" for k, v in changed.items()))


def _expiry(text: str) -> datetime:
    for form in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"):
        try:
            return datetime.strptime(text.strip(), form)
        except ValueError:
            continue
    fail(f"--expires {text!r}: a date (UTC) like 2027-06-30 or 2027-06-30T18:00:00, or 'never'")
    raise AssertionError


def _when(text: str) -> datetime:
    try:
        return sharing.parse_when(text)
    except registry.RegistryError as exc:
        fail(str(exc))
        raise


@click.group()
def booking() -> None:
    """Bookings: a member reserves a connector for a time slot."""


@booking.command("add")
@click.argument("station_id")
@click.option("--connector", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--tag", required=True, help="The member's tag.")
@click.option("--from", "start", required=True,
              help="Slot start: 2026-11-24T19:00 (Asia/Shanghai time) or with an offset/Z.")
@click.option("--to", "end", required=True, help="Slot end, same forms.")
@db_option
def booking_add(station_id: str, connector: int, tag: str, start: str, end: str,
                db: str | None) -> None:
    """Book a slot; the charger is reserved (ReserveNow) when the slot starts."""

    booking_id = with_store(db, lambda e: sharing.add_booking(
        e, station_id, connector, tag, _when(start), _when(end)))
    click.echo(f"booking {booking_id}: {station_id} connector {connector} for {tag}")


@booking.command("list")
@click.option("--station", "station_id")
@db_option
@json_option
def booking_list(station_id: str | None, db: str | None, as_json: bool) -> None:
    """Bookings with their status (booked, honoured, cancelled, no_show)."""

    emit(with_store(db, lambda e: sharing.list_bookings(e, station_id)), as_json,
         ["id", "station", "connector", "tag", "from", "to", "status", "reserved", "group", "session"])


@booking.command("cancel")
@click.argument("booking_id", type=ID)
@db_option
def booking_cancel(booking_id: int, db: str | None) -> None:
    """Cancel a booking (the running gateway cancels the charger's reservation)."""

    with_store(db, lambda e: sharing.cancel_booking(e, booking_id))
    click.echo(f"booking {booking_id} cancelled")


@click.group()
def group() -> None:
    """Group charging (拼团): members share a slot once enough of them join."""


def _slot(text: str) -> tuple[datetime, datetime]:
    """'2026-11-24T19:00-21:00' (same day), or 'FROM/TO' with full times."""
    if "/" in text:
        start, _, end = text.partition("/")
        return _when(start), _when(end)
    head, sep, tail = text.rpartition("-")
    if not sep or ":" not in tail or "T" not in head.replace(" ", "T"):
        fail(f"--slot {text!r}: write 2026-11-24T19:00-21:00 or 2026-11-24T19:00/2026-11-25T01:00")
    day = head.replace(" ", "T").split("T")[0]
    return _when(head), _when(f"{day}T{tail}")


@group.command("create")
@click.option("--station", "station_id", required=True)
@click.option("--slot", required=True, help="2026-11-24T19:00-21:00 (station time) or FROM/TO.")
@click.option("--min", "min_members", type=click.IntRange(2, 100),
              help="Members it needs to form (default and least: group.min_members, 5).")
@click.option("--initiator", help="Tag of the member who starts the group (joins it).")
@click.option("--base-url", help="The console's address as phones reach it (default: [gateway] "
              "console_url): the invitation link to send the neighbours is printed.")
@db_option
def group_create(station_id: str, slot: str, min_members: int | None, initiator: str | None,
                 base_url: str | None, db: str | None) -> None:
    """Open a group for a slot at a station; it forms at --min members. Neighbours join from
    its link (/console/g/ID) or with `group join`."""

    config = click.get_current_context().find_root().obj
    base = base_url or getattr(getattr(config, "gateway", None), "console_url", None) or ""
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        fail(f"--base-url {base_url!r}: the console's address, https://...")
    start, end = _slot(slot)
    group_id = with_store(db, lambda e: sharing.create_group(e, station_id, start, end,
                                                             min_members, initiator))
    shown = with_store(db, lambda e: sharing.show_group(e, group_id))
    click.echo(f"group {group_id} forming at {station_id}: needs {shown['min_members']} members")
    if base:
        click.echo(f"invite the neighbours with {base.rstrip('/')}/console/g/{group_id}")


@group.command("join")
@click.argument("group_id", type=ID)
@click.option("--tag", required=True)
@db_option
def group_join(group_id: int, tag: str, db: str | None) -> None:
    """Join a group; when it reaches its minimum every member's slot is booked."""

    status = with_store(db, lambda e: sharing.join_group(e, group_id, tag))
    click.echo(f"{tag} joined group {group_id}: {status}")


@group.command("show")
@click.argument("group_id", type=ID)
@db_option
@json_option
def group_show(group_id: int, db: str | None, as_json: bool) -> None:
    """A group, its members and their booked slots."""

    shown = with_store(db, lambda e: sharing.show_group(e, group_id))
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    for key in ("id", "station", "from", "to", "min_members", "status", "initiator", "free_session"):
        click.echo(f"{key:>12}: {shown[key]}")
    click.echo(f"{'members':>12}: {', '.join(shown['members']) or '-'}")
    for line in shown["bookings"]:
        click.echo(f"{'':>12}  {line}")


@group.command("list")
@db_option
@json_option
def group_list(db: str | None, as_json: bool) -> None:
    """All groups."""

    emit(with_store(db, sharing.list_groups), as_json,
         ["id", "station", "from", "to", "members", "min", "status"])


@click.group()
def commands() -> None:
    """Commands kept for offline stations."""


@commands.command("list")
@click.option("--station", "station_id")
@db_option
@json_option
def commands_list(station_id: str | None, db: str | None, as_json: bool) -> None:
    """Queued commands: pending, delivered (with the station's answer), failed or expired."""

    emit(with_store(db, lambda e: sharing.list_commands(e, station_id)), as_json,
         ["id", "station", "command", "args", "queued", "expires", "status", "delivered", "result"])


@click.command("qr")
@click.argument("station_id")
@click.option("--connector", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="The QR code's file: .svg (print it) or .png.")
@click.option("--base-url", help="The console's address as drivers' phones reach it, e.g. "
              "https://charge.example.com (default: [gateway] console_url).")
@db_option
def station_qr(station_id: str, connector: int, out_file: str, base_url: str | None,
               db: str | None) -> None:
    """The QR code to stick on a connector: it opens that connector's page in the console
    (price, hours, start, live kWh and cost, stop, the bill)."""
    from sqlalchemy import select

    from cocharge.store.schema import stations as stations_table
    from cocharge.web import qr

    config = click.get_current_context().find_root().obj
    base = (base_url or getattr(getattr(config, "gateway", None), "console_url", None) or "")
    if not base.startswith(("http://", "https://")):
        fail("give --base-url https://... (the console's address as phones reach it), or set "
             "[gateway] console_url in the configuration file")
    if not out_file.lower().endswith((".svg", ".png")):
        fail(f"--out {out_file}: name a .svg or .png file")

    async def find(engine: Any) -> int | None:
        async with engine.connect() as conn:
            found = await conn.scalar(select(stations_table.c.connectors)
                                      .where(stations_table.c.id == station_id))
        return None if found is None else int(found)

    connectors = with_store(db, find)
    if connectors is None:
        fail(f"no station {station_id!r}: see `cocharge station list`")
    elif connector > connectors:
        fail(f"station {station_id} has connectors 1..{connectors}")
    url = qr.connector_url(base, station_id, connector)
    try:
        qr.save(url, out_file)
    except OSError as exc:
        fail(f"--out {out_file}: {exc.strerror}")
    click.echo(f"{out_file}: QR code of {url}")
