"""Sessions and what stations said: `sessions`, `logs`."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from sqlalchemy import func, select

from cocharge.cli.channel import parse_duration
from cocharge.cli.common import (
    ID,
    cny_to_fen,
    db_option,
    emit,
    fail,
    json_option,
    shown_time,
)
from cocharge.cli.database import with_store
from cocharge.cli.settlement import audited, with_settlement
from cocharge.settlement import funds, settle
from cocharge.settlement.money import fmt
from cocharge.stations import registry
from cocharge.store.db import utcnow
from cocharge.store.frames import read_frames
from cocharge.store.schema import stations as stations_table
from cocharge.views import priced, session_detail

# --- diagnostics and logs -------------------------------------------------------------------

class _LogsGroup(click.Group):
    """`cocharge logs STATION ...` is `cocharge logs frames STATION ...` (a station's OCPP
    log); `list` and `save` stay the uploaded files' commands."""

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["frames", *args]
        return super().resolve_command(ctx, args)


@click.group(cls=_LogsGroup)
def logs() -> None:
    """A station's OCPP log (`cocharge logs STATION [--follow] [--since]`), and the
    diagnostics and log files stations uploaded (`list`, `save`)."""


@logs.command("frames")
@click.argument("station_id")
@click.option("--since", help="From this UTC date/time (2026-11-24T08:00) or this long ago "
              "(30m, 2h, 7d).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
              help="The last N frames (before --follow).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new frames (Ctrl-C stops).")
@db_option
@json_option
def logs_frames(station_id: str, since: str | None, limit: int, follow: bool, db: str | None,
                as_json: bool) -> None:
    """Every OCPP frame a station sent (<<) and was sent (>>), with its connects and
    disconnects (--), oldest first: what the gateway keeps of it (frame_log_per_station)."""

    since_at = _since(since)

    def show(rows: list[Any]) -> None:
        for r in rows:
            if as_json:
                click.echo(json.dumps({"id": r.id, "at": shown_time(r.ts, "milliseconds"),
                                       "direction": r.direction, "frame": r.frame}))
            else:
                arrow = {"in": "<<", "out": ">>"}.get(r.direction, "--")
                click.echo(f"{shown_time(r.ts, 'milliseconds')} {arrow} {r.frame}")

    async def work(engine: Any) -> None:
        async with engine.connect() as conn:
            known = await conn.scalar(select(func.count()).select_from(stations_table)
                                      .where(stations_table.c.id == station_id))
            if not known:
                fail(f"no station {station_id!r}: see `cocharge station list`")
            rows = await read_frames(conn, station_id, limit=limit, since=since_at)
        show(rows)
        last = rows[-1].id if rows else 0
        while follow:
            await asyncio.sleep(0.5)
            async with engine.connect() as conn:
                rows = await read_frames(conn, station_id, after=last)
            if rows:
                show(rows)
                last = rows[-1].id

    try:
        with_store(db, work)
    except KeyboardInterrupt:
        pass


@logs.command("list")
@click.option("--station", "station_id")
@db_option
@json_option
def logs_list(station_id: str | None, db: str | None, as_json: bool) -> None:
    """Every request, its status, and the file when it arrived."""
    emit(with_store(db, lambda e: registry.list_uploads(e, station_id)), as_json,
         ["id", "station", "kind", "log_type", "status", "filename", "size", "requested_at",
          "received_at"])


@logs.command("save")
@click.argument("request_id", type=ID)
@click.argument("path", type=click.Path(dir_okay=False, writable=True), required=False)
@db_option
def logs_save(request_id: int, path: str | None, db: str | None) -> None:
    """Write the file of request REQUEST_ID to PATH (default: its own file name)."""
    name, content = with_store(db, lambda e: registry.upload_content(e, request_id))
    target = path or os.path.basename(name)
    if os.path.exists(target):
        fail(f"{target} exists: give another PATH")
    with open(target, "wb") as handle:
        handle.write(content)
    click.echo(f"{len(content)} bytes written to {target}")


# --- sessions -------------------------------------------------------------------------------

@click.group()
def sessions() -> None:
    """Charging sessions."""


def _since(text: str | None) -> datetime | None:
    """--since: an ISO date/time (UTC) or a duration back from now (30m, 2h, 7d)."""
    if text is None:
        return None


    if "-" not in text:
        try:
            return utcnow() - timedelta(seconds=parse_duration(text))
        except click.BadParameter:
            pass
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since {text!r}: give a date/time (2026-11-24T08:00, UTC) or a duration back "
             "from now (30m, 2h, 7d)")
        raise
    return found if found.tzinfo is None else found.astimezone(UTC).replace(tzinfo=None)


@sessions.command("list")
@click.option("--station", "station_id")
@click.option("--active", is_flag=True, help="Only sessions still charging.")
@click.option("--since", help="Sessions running since, or ended after: a UTC date/time "
              "(2026-11-24T08:00) or a duration back from now (2h, 7d).")
@click.option("--tag", help="Only this member's sessions.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), help="Only the newest N.")
@db_option
@json_option
def sessions_list(station_id: str | None, active: bool, since: str | None, tag: str | None,
                  limit: int | None, db: str | None, as_json: bool) -> None:
    """Sessions in order of their start, with the energy and cost (so far, while charging)."""
    since_at = _since(since)

    async def work(engine: Any) -> list[dict[str, Any]]:
        if station_id is not None:
            async with engine.connect() as conn:
                if await conn.scalar(select(stations_table.c.id).where(
                        stations_table.c.id == station_id)) is None:
                    fail(f"no station {station_id!r}: see `cocharge station list`")
        rows = await registry.list_sessions(engine, station_id, active=active, since=since_at,
                                            tag=tag, limit=limit)

        return await priced(engine, rows)

    emit(with_store(db, work), as_json,
         ["id", "station", "connector", "tag", "started", "ended", "kwh", "cny", "status",
          "stop_reason"])


@sessions.command("show")
@click.argument("session_id", type=ID)
@db_option
@json_option
def sessions_show(session_id: int, db: str | None, as_json: bool) -> None:
    """One session: its meter, its bill (tariff lines, discounts, what was paid) and the
    split of the money."""

    async def work(engine: Any) -> dict[str, Any]:
        shown = await session_detail(engine, session_id)
        if shown is None:
            fail(f"no session {session_id}: see `cocharge sessions list`")
        assert shown is not None
        return shown

    shown = with_store(db, work)
    if as_json:
        click.echo(json.dumps(shown, indent=2, default=str))
        return
    for key in ("id", "station", "connector", "transaction", "tag", "started", "ended", "kwh",
                "cny", "status", "stop_reason", "flag_reason", "clock"):
        if shown.get(key) is not None:
            click.echo(f"{key:>16}: {shown[key]}")
    if shown.get("charger_cost_fen") is not None:
        click.echo(f"{'charger_cost':>16}: {fmt(shown['charger_cost_fen'])} CNY "
                   "(the charger's own calculation, checked against ours)")
    bill = shown.get("bill")
    if bill is None:
        click.echo("            bill: not settled yet" if shown["status"] != "active" else
                   "            bill: when the session ends")
        return

    def fen(value: int) -> str:
        return f"{fmt(value)} CNY"

    click.echo(f"{'cost':>16}: {fen(bill['cost_fen'])}")
    for d in bill["discounts"]:
        click.echo(f"{'discount':>16}: {json.dumps(d, default=str)}")
    click.echo(f"{'payable':>16}: {fen(bill['payable_fen'])} by {bill['payer']} "
               f"(paid {fen(bill['paid_fen'])}, owed {fen(bill['owed_fen'])})")
    for who, value in shown["split"]:  # [[account, fen], ...], adding up to the payable
        click.echo(f"{'split':>16}: {fen(value)} to {who}")
    if bill["cdr"].get("discharged_wh"):
        click.echo(f"{'v2x':>16}: {bill['cdr']['discharged_wh'] / 1000:.3f} kWh given back, "
                   f"{fen(bill['cdr'].get('feed_in_fen', 0))} credited to {bill['payer']}")


@sessions.command("paid")
@click.argument("session_id", type=ID)
@click.option("--amount", required=True, help="What the payment captured, CNY.")
@click.option("--psp-ref", required=True, help="The payment's reference at the payment "
              "provider (a payment is booked once per reference).")
@click.option("--receipt", help="The receipt's URL or id.")
@db_option
def sessions_paid(session_id: int, amount: str, psp_ref: str, receipt: str | None,
                  db: str | None) -> None:
    """Book the payment of a session paid at the charger (2.1 DirectPayment: the payment
    page of its QR code captured it): from `external:card`, paying what the session owes, so
    its host is paid. A card terminal's payment (NotifySettlement) is booked by itself."""
    if not 1 <= len(psp_ref) <= 255:
        fail("--psp-ref: 1 to 255 characters")
    fen = cny_to_fen(amount, "--amount")
    async def work(engine: Any) -> Any:
        return await audited(engine, "card-payment", None,
                             lambda: funds.card_payment(engine, session_id, psp_ref, fen, receipt),
                             session=session_id, psp_ref=psp_ref, fen=fen)

    done = with_settlement(db, work)
    if not done.applied:
        click.echo(f"session {session_id}: payment {psp_ref} was booked before (nothing new)")
        return
    click.echo(f"session {session_id}: {fmt(fen)} CNY booked ({psp_ref}); paid of what it "
               f"owed {fmt(done.debt_paid_fen)} CNY, left for a refund {fmt(done.left_fen)} CNY")


@sessions.command("review")
@click.argument("session_id", type=ID)
@click.option("--bill", "decision", flag_value="bill", help="Bill it as metered (settled now).")
@click.option("--void", "decision", flag_value="void", help="Never bill it; release its hold.")
@click.option("--note", required=True, help="Why: kept on the session with who decided.")
@click.option("--by", "actor", default=lambda: os.environ.get("USER") or "operator",
              help="Who decides (default: $USER).")
@db_option
def sessions_review(session_id: int, decision: str | None, note: str, actor: str,
                    db: str | None) -> None:
    """Decide on a flagged session (e.g. more energy than the station can deliver): --bill
    or --void, with a --note."""
    if decision is None:
        fail("give --bill or --void")
    async def work(engine: Any) -> Any:
        return await audited(engine, f"review-{decision}", None,
                             lambda: settle.review_session(engine, session_id,
                                                           decision == "bill", note, actor),
                             session=session_id, note=note, decided_by=actor)

    done = with_settlement(db, work)
    if decision == "bill":
        payable = f"{fmt(done.priced.payable_fen)} CNY" if done else "nothing (no member)"
        click.echo(f"session {session_id}: billed ({payable}), reviewed by {actor}")
    else:
        click.echo(f"session {session_id}: voided, its hold released; reviewed by {actor}")
