"""Money: tariffs, split terms, wallets, the ledger, settlement."""

from __future__ import annotations

import csv as csv_module
import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from cocharge.cli.common import (
    ID,
    FiniteRange,
    day_time,
    db_option,
    emit,
    fail,
    json_option,
    money_error,
    payment_ref,
    table,
)
from cocharge.cli.settlement import audited, with_rewards, with_settlement
from cocharge.settlement import checkpoints, disputes, funds, ledger
from cocharge.settlement import settle as settlement
from cocharge.settlement.liabilities import liability_report
from cocharge.settlement.money import fmt, parse_cny, parse_price
from cocharge.settlement.overstay import IdleFeeRule
from cocharge.settlement.settle import SettlementDefaults
from cocharge.settlement.tariff import simple_tariff


@click.group()
def tariff() -> None:
    """Connector tariffs (costed like OCPI 2.2.1 CDRs); a session keeps the tariff it started with."""


@tariff.command("set")
@click.argument("station_id")
@click.option("--connector", default=0, show_default=True, type=click.IntRange(0, 64),
              help="0 = every connector of the station.")
@click.option("--per-kwh", required=True, help="CNY per kWh, e.g. 1.5")
@click.option("--per-hour", help="CNY per hour of charging (time package), e.g. 30")
@click.option("--tod", "tods", multiple=True,
              help="Time-of-day energy price 'HH:MM-HH:MM=PRICE' (station time; may wrap midnight), "
                   "repeatable, e.g. '22:00-06:00=0.9'.")
@click.option("--parking-per-hour", help="CNY per hour parked without charging.")
@click.option("--flat", help="CNY per session.")
@click.option("--idle-per-min", default="0.5", show_default=True, help="Overstay fee, CNY per minute.")
@click.option("--idle-grace-min", default=15, show_default=True, type=click.IntRange(0, 1440))
@click.option("--idle-cap", default="60", show_default=True, help="Overstay fee cap, CNY.")
@click.option("--min-price", help="Minimum session price, CNY.")
@click.option("--max-price", help="Maximum session price (before the idle fee), CNY.")
@click.option("--energy-step-wh", default=1, show_default=True, type=click.IntRange(1, 100000),
              help="Energy is billed in steps of this size (OCPI step_size).")
@click.option("--time-step-s", default=1, show_default=True, type=click.IntRange(1, 86400),
              help="Charging and parking time are billed in steps of this size.")
@click.option("--tz", default="Asia/Shanghai", show_default=True)
@click.option("--feed-in", help="V2X: CNY per kWh a car gives back through the charger "
              "(credited to the driver; default: not paid).")
@db_option
def tariff_set(station_id: str, connector: int, per_kwh: str, per_hour: str | None,
               tods: tuple[str, ...], parking_per_hour: str | None, flat: str | None,
               idle_per_min: str, idle_grace_min: int, idle_cap: str, min_price: str | None,
               max_price: str | None, energy_step_wh: int, time_step_s: int, tz: str,
               feed_in: str | None, db: str | None) -> None:
    """Set a connector's (or the station's) tariff from now on."""


    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        fail(f"--tz {tz!r}: use an IANA time zone such as Asia/Shanghai")
    parsed_tod = []
    for text in tods:
        hours, sep, price = text.partition("=")
        start, dash, end = hours.partition("-")
        ok = sep and dash and all(len(t) == 5 and t[2] == ":" and t.replace(":", "").isdigit()
                                  and int(t[:2]) <= 24 and int(t[3:]) < 60 for t in (start, end))
        if not ok or start == end:
            fail(f"--tod {text!r}: write HH:MM-HH:MM=PRICE, e.g. 22:00-06:00=0.9")
        parsed_tod.append((start, end, money_error(functools.partial(parse_price, price, "--tod price"))))
    idle = IdleFeeRule(idle_grace_min * 60, money_error(lambda: parse_cny(idle_per_min, "--idle-per-min",
                                                                     allow_zero=True)),
                       money_error(lambda: parse_cny(idle_cap, "--idle-cap", allow_zero=True)))
    made = money_error(lambda: simple_tariff(
        parse_price(per_kwh, "--per-kwh"),
        parse_price(per_hour, "--per-hour") if per_hour else None, parsed_tod, idle,
        parse_cny(min_price, "--min-price", allow_zero=True) if min_price else None,
        parse_cny(max_price, "--max-price") if max_price else None,
        parse_price(parking_per_hour, "--parking-per-hour") if parking_per_hour else None,
        parse_price(flat, "--flat") if flat else None, energy_step_wh, time_step_s, tz,
        parse_price(feed_in, "--feed-in") if feed_in else None))
    tariff_id = with_settlement(db, lambda e: settlement.set_tariff(e, station_id, connector, made))
    scope = f"connector {connector}" if connector else "every connector"
    click.echo(f"tariff {tariff_id} for {station_id} {scope}: {per_kwh} CNY/kWh"
               + (f" + {per_hour} CNY/h" if per_hour else "")
               + "".join(f", {a}-{b} {p} CNY/kWh" for a, b, p in parsed_tod)
               + (f"; V2X feed-in {feed_in} CNY/kWh" if feed_in else ""))


@tariff.command("show")
@click.argument("station_id")
@db_option
def tariff_show(station_id: str, db: str | None) -> None:
    """Every tariff of the station, oldest first (JSON)."""

    click.echo(json.dumps(with_settlement(db, lambda e: settlement.show_tariffs(e, station_id)), indent=2))


@click.group()
def split() -> None:
    """Revenue-share terms of a station."""


@split.command("set")
@click.argument("station_id")
@click.option("--model", type=click.Choice(["host", "property"]))
@click.option("--host", "host_name", help="Host account name (default: the station's owner).")
@click.option("--property", "property_name", help="Property account name (property model).")
@click.option("--operator", "operator_name", help="Operator/installer account name (property model).")
@click.option("--platform-pct", help="Platform commission, percent (default 10).")
@click.option("--green-platform-pct", help="Commission at a green charger, percent (default 5).")
@click.option("--property-pct", help="The property's share, percent (default 30).")
@click.option("--green/--not-green", default=None, help="The host's own solar.")
@click.option("--free-days", type=click.IntRange(0, 3650), help="Days without commission (default 30).")
@click.option("--onboarded", help="The host's first day, YYYY-MM-DD (default: registration).")
@db_option
def split_set(station_id: str, model: str | None, host_name: str | None,
              property_name: str | None, operator_name: str | None, platform_pct: str | None,
              green_platform_pct: str | None, property_pct: str | None, green: bool | None,
              free_days: int | None, onboarded: str | None, db: str | None) -> None:
    """Change a station's split terms."""

    changes: dict[str, Any] = {}
    for key, value in (("model", model), ("host", host_name), ("property", property_name),
                       ("operator", operator_name), ("green", green), ("free_days", free_days)):
        if value is not None:
            changes[key] = value
    for key, text in (("platform_pct", platform_pct), ("green_platform_pct", green_platform_pct),
                      ("property_pct", property_pct)):
        if text is not None:
            try:
                changes[key] = Decimal(text)
            except InvalidOperation:
                fail(f"--{key.replace('_', '-')} {text!r} is not a number of percent")
    if onboarded is not None:
        try:
            changes["onboarded_at"] = datetime.fromisoformat(onboarded)
        except ValueError:
            fail(f"--onboarded {onboarded!r}: write a date as YYYY-MM-DD")
    if not changes:
        fail("nothing to change: give --model, --platform-pct, --green, ...")
    terms = with_settlement(db, lambda e: settlement.set_terms(e, station_id, changes))
    click.echo(f"{station_id}: {terms.model} model, platform {terms.platform_pct}%"
               + (f" (green {terms.green_platform_pct}%)" if terms.green else ""))


@split.command("show")
@click.argument("station_id")
@db_option
def split_show(station_id: str, db: str | None) -> None:
    """The station's split terms (JSON)."""

    async def work(engine: Any) -> dict[str, Any]:
        async with engine.connect() as conn:
            return settlement.terms_to_json(await settlement.terms_of(conn, station_id))

    click.echo(json.dumps(with_settlement(db, work), indent=2))


@click.group()
def wallet() -> None:
    """Members' prepaid wallets."""


@wallet.command("topup")
@click.argument("tag")
@click.argument("amount")
@click.option("--ref", help="Payment reference: a top-up with the same reference is applied "
              "once (none given: one is made and printed).")
@db_option
def wallet_topup(tag: str, amount: str, ref: str | None, db: str | None) -> None:
    """Add AMOUNT CNY to a member's wallet (a ledger transfer from external:topup): what the
    member owes is paid from it first; at most funds.max_topup_cny at once and
    funds.max_balance_cny in the wallet (`cocharge rewards rules show`)."""
    fen = money_error(lambda: parse_cny(amount, "AMOUNT"))
    ref = payment_ref(ref, "topup")
    done = with_settlement(db, lambda e: _top_up(e, tag, fen, ref))
    if not done.applied:
        click.echo(f"wallet {tag}: already applied; balance {fmt(done.balance_fen)} CNY")
        return
    debt = (f"; {fmt(done.debt_paid_fen)} CNY of it paid what {tag} owed"
            if done.debt_paid_fen else "")
    click.echo(f"wallet {tag}: topped up {fmt(fen)} CNY{debt}; balance "
               f"{fmt(done.balance_fen)} CNY")


async def _top_up(engine: Any, tag: str, fen: int, ref: str) -> Any:
    return await audited(engine, "top-up", f"wallet:{tag}",
                         lambda: funds.top_up(engine, tag, fen, ref), fen=fen, ref=ref)


@wallet.command("withdraw")
@click.argument("tag")
@click.argument("amount", required=False)
@click.option("--all", "everything", is_flag=True, help="The whole balance (a refund).")
@click.option("--ref", help="The request's reference: applied once (none given: one is made).")
@db_option
def wallet_withdraw(tag: str, amount: str | None, everything: bool, ref: str | None,
                    db: str | None) -> None:
    """Pay money back out of a member's wallet (AMOUNT CNY, or --all): the next `payout run`
    pays it to the member's payee details (`payout payee refund:TAG ...`)."""
    if (amount is None) == (not everything):
        fail("give AMOUNT or --all")
    fen = money_error(lambda: parse_cny(amount, "AMOUNT")) if amount is not None else None
    ref = payment_ref(ref, "withdraw")
    async def work(engine: Any) -> int:
        return await audited(engine, "withdraw", f"wallet:{tag}",
                             lambda: funds.withdraw(engine, tag, fen, ref),
                             fen=fen if fen is not None else "all", ref=ref)

    done = with_settlement(db, work)
    click.echo(f"wallet {tag}: {fmt(done)} CNY to be paid back by the next payout run "
               f"(refund:{tag})")


@wallet.command("show")
@click.argument("tag")
@db_option
@json_option
def wallet_show(tag: str, db: str | None, as_json: bool) -> None:
    """What a member has at the charger: wallet, held for running sessions, owed, credit line,
    and what it may spend now (a session needs the gateway's start_minimum_fen of it)."""

    money = with_settlement(db, lambda e: funds.member_money(e, tag))
    if as_json:
        click.echo(json.dumps(money, indent=2))
        return
    for key in ("wallet", "held", "owed", "credit_line", "available"):
        click.echo(f"{key.replace('_', ' '):>16}: {fmt(money[key + '_fen'])} CNY")


@click.group("ledger")
def ledger_group() -> None:
    """The double-entry, hash-chained ledger."""


@ledger_group.command("balances")
@click.option("--asset", help="Only this asset (CNY, QUOTA_WH, ...).")
@db_option
@json_option
def ledger_balances(asset: str | None, db: str | None, as_json: bool) -> None:
    """Every account's balance (CNY in fen shown as CNY)."""

    rows = with_settlement(db, lambda e: ledger.balances(e, asset))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table([{**r, "balance": fmt(r["balance"]) if r["asset"] == "CNY" else r["balance"]}
           for r in rows], ["account", "asset", "balance"])




@ledger_group.command("statement")
@click.argument("account")
@click.option("--from", "since", help="From this UTC date/time (YYYY-MM-DD).")
@click.option("--to", "until", help="Until this UTC date/time (exclusive).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a table.")
@db_option
@json_option
def ledger_statement(account: str, since: str | None, until: str | None, as_csv: bool,
                     db: str | None, as_json: bool) -> None:
    """An account's transfers with the running balance (e.g. wallet:ANN001, platform)."""


    start, end = day_time(since, "--from"), day_time(until, "--to")

    async def work(engine: Any) -> list[dict[str, Any]]:
        if not await ledger.known(engine, account):
            fail(f"no account {account!r} in the ledger: see `cocharge ledger balances`")
        return await ledger.statement(engine, account, start, end)

    lines = with_settlement(db, work)
    if as_csv:
        writer = csv_module.writer(sys.stdout)
        columns = ["seq", "at", "id", "kind", "asset", "change", "balance", "other", "ref", "memo"]
        writer.writerow(columns)
        for line in lines:
            writer.writerow([line[c] if line[c] is not None else "" for c in columns])
        return
    if not as_json:

        lines = [{**line, "change": fmt(line["change"]), "balance": fmt(line["balance"])}
                 if line["asset"] == "CNY" else line for line in lines]
    emit(lines, as_json, ["seq", "at", "kind", "asset", "change", "balance", "other", "ref"])


T = TypeVar("T")

key_option = click.option(
    "--key", "key_path", envvar="COCHARGE_LEDGER_KEY", default="cocharge-ledger.key",
    show_default=True, type=click.Path(dir_okay=False),
    help="The platform's Ed25519 checkpoint key, kept outside the database (env "
         "COCHARGE_LEDGER_KEY); made on first use.")


@ledger_group.command("verify")
@click.option("--checkpoints", "checkpoint_file", type=click.Path(dir_okay=False),
              help="Also check the ledger against these signed checkpoints (a witness's copy): "
                   "a rewrite with every hash recomputed is caught.")
@click.option("--trust", "trusted_key", help="Only accept checkpoints signed by this public key "
              "(as `ledger checkpoint` prints it).")
@db_option
def ledger_verify(checkpoint_file: str | None, trusted_key: str | None, db: str | None) -> None:
    """Recompute the hash chain, per-asset sums and balances (and, with --checkpoints, compare
    with signed checkpoints); exit 1 and name the first problem."""
    witnessed = checkpoint_error(lambda: checkpoints.read(checkpoint_file)) \
        if checkpoint_file else []

    async def work(engine: Any) -> tuple[Any, list[str]]:
        return (await ledger.verify(engine),
                await checkpoints.verify(engine, witnessed, trusted_key) if witnessed else [])

    verdict, problems = with_settlement(db, work)
    if verdict.ok and not problems:
        sums = ", ".join(f"{a} {v}" for a, v in sorted(verdict.sums.items())) or "no assets yet"
        seen = f"; matches {len(witnessed)} signed checkpoint(s)" if witnessed else ""
        click.echo(f"ledger OK: {verdict.transfers} transfers, hash chain intact, sums: {sums}{seen}")
        return
    for problem in [*verdict.problems, *problems]:
        click.echo(f"ledger BROKEN: {problem}", err=True)
    sys.exit(1)


@ledger_group.command("correct")
@click.argument("transfer_id")
@click.option("--amount", help="The right amount in CNY (none: the transfer is only reversed).")
@click.option("--reason", required=True, help="Why: kept with the correction.")
@click.option("--ref", required=True, help="The correction's own reference: applied once.")
@click.option("--by", "actor", default=lambda: os.environ.get("USER") or "operator",
              help="Who corrects (default: $USER).")
@db_option
def ledger_correct(transfer_id: str, amount: str | None, reason: str, ref: str, actor: str,
                   db: str | None) -> None:
    """Correct a wrong transfer, never edit it: a reversing transfer, and the right one with
    --amount; a wallet that already spent the money cannot be reversed below zero."""
    fen = money_error(lambda: parse_cny(amount, "--amount")) if amount is not None else None
    async def work(engine: Any) -> Any:
        return await audited(engine, "correction", None,
                             lambda: ledger.correct(engine, transfer_id, fen, reason, actor, ref),
                             transfer=transfer_id, fen=fen, reason=reason, ref=ref)

    done = with_settlement(db, work)
    word = "already applied" if not done.applied else f"{done.applied} transfer(s) posted"
    click.echo(f"correction {ref} of {transfer_id}: {word}")


@ledger_group.command("checkpoint")
@key_option
@click.option("--file", "checkpoint_file", default="cocharge-checkpoints.jsonl", show_default=True,
              type=click.Path(dir_okay=False), help="Append it to this witness file.")
@db_option
@json_option
def ledger_checkpoint(key_path: str, checkpoint_file: str, db: str | None, as_json: bool) -> None:
    """Sign the ledger's head (transfer count, head hash, totals per account kind) with the
    platform's key and keep it in a witness file; hand that file (or the line) to property
    backends and auditors (docs/settlement.md)."""
    key = checkpoint_error(lambda: checkpoints.load_or_create_key(key_path))
    made = with_settlement(db, lambda e: checkpoints.make(e, key))
    checkpoints.append(checkpoint_file, made)
    if as_json:
        click.echo(json.dumps(made, indent=2))
        return
    click.echo(f"checkpoint {made['id']}: {made['count']} transfers, head {made['head'][:16]}…, "
               f"signed by {made['key']} (appended to {checkpoint_file})")


def checkpoint_error(work: Callable[[], T]) -> T:
    try:
        return work()
    except checkpoints.CheckpointError as exc:
        fail(str(exc))
        raise


@ledger_group.command("export")
@click.option("--csv", "as_csv", is_flag=True, help="CSV (the default).")
@db_option
@json_option
def ledger_export(as_csv: bool, db: str | None, as_json: bool) -> None:
    """Every transfer with its hashes, for auditors (CSV, or JSON with --json)."""

    if as_json:
        async def rows(engine: Any) -> list[dict[str, Any]]:
            return [{k: (v.isoformat() if isinstance(v, datetime) else v)
                     for k, v in r._mapping.items()} async for r in ledger.transfers(engine)]

        click.echo(json.dumps(with_settlement(db, rows), indent=2))
        return
    click.echo(with_settlement(db, ledger.export_csv), nl=False)


@click.command()
@click.option("--since", help="Only sessions that ended since this UTC date (YYYY-MM-DD).")
@db_option
@json_option
def settle(since: str | None, db: str | None, as_json: bool) -> None:
    """Settle every completed session not settled yet (safe to run again). One that cannot
    be settled is quarantined with its reason (exit 1); the others are settled."""

    done, failed = with_settlement(
        db, lambda e: settlement.settle_pending(e, day_time(since, "--since")))
    rows = [{"session": s.session_id, "cost": fmt(s.cdr.total_fen),
             "discounts": fmt(sum(a for _, a in s.priced.lines)), "payable": fmt(s.priced.payable_fen),
             "paid": fmt(s.paid_fen), "owed": fmt(s.owed_fen),
             "split": ", ".join(f"{p} {fmt(a)}" for p, a in s.split)} for s in done]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(f"{len(done)} sessions settled")
        if rows:
            table(rows, ["session", "cost", "discounts", "payable", "paid", "owed", "split"])
    for sid, why in failed:
        click.echo(f"session {sid} not settled, quarantined: {why}; decide with `cocharge "
                   f"sessions review {sid} --bill|--void --note ...`", err=True)
    if failed:
        sys.exit(1)



# --- the liability report -------------------------------------------------------------------

@ledger_group.command("fund")
@click.argument("amount")
@click.option("--ref", help="The bank transfer's reference: booked once (none given: one is made).")
@db_option
def ledger_fund(amount: str, ref: str | None, db: str | None) -> None:
    """Put the operator's own money (AMOUNT CNY) into the platform, to back what it promised
    on top of what members paid in (green points, coins, free quotas): `ledger liabilities`
    counts it as cash. A transfer from external:capital to platform, kept in the audit trail."""
    fen = money_error(lambda: parse_cny(amount, "AMOUNT"))
    ref = payment_ref(ref, "capital")

    async def work(engine: Any) -> bool:
        return await audited(engine, "capital", "platform",
                             lambda: funds.add_capital(engine, fen, ref), fen=fen, ref=ref)

    if with_settlement(db, work):
        click.echo(f"platform: {fmt(fen)} CNY of capital put in (ref {ref})")
    else:
        click.echo(f"platform: capital {ref} already booked")


@ledger_group.command("liabilities")
@click.option("--fail-under", "fail_under", type=FiniteRange(0, 1000),
              help="Exit 1 when a coverage (cash, pool reserve) is below RATIO (e.g. 1.0): for cron and "
                   "monitoring.")
@db_option
@json_option
def ledger_liabilities(fail_under: float | None, db: str | None, as_json: bool) -> None:
    """What the platform owes (wallets, payouts, points, quotas, pool) against the funds
    that back it, with the coverage ratio; a warning when it is below 1."""


    report = with_rewards(db, lambda e: liability_report(e, SettlementDefaults().price_per_kwh))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.text_lines():
            click.echo(line)
    if fail_under is not None:
        # The worst of the funds: cash must cover what cash backs, the pool what it backs; a
        # fund below zero fails even when nothing is owed (there is no ratio to compare).
        short = report.short(Decimal(str(fail_under)))
        if short:
            click.echo("coverage below --fail-under " + str(fail_under) + ": " + ", ".join(
                f"{g} {r}" for g, r in short.items()), err=True)
            raise SystemExit(1)


@click.group()
def dispute() -> None:
    """Disputes over a bill or a transfer: opened by a member or payee, resolved by an
    operator with a correction (never an edit) or rejected."""


@dispute.command("open")
@click.option("--by", "opened_by", required=True, help="Who disputes: a member tag or an account.")
@click.option("--session", "session_id", type=ID, help="A session.")
@click.option("--transfer", "transfer_id", help="Or a ledger transfer's id.")
@click.option("--text", required=True, help="What is wrong.")
@db_option
def dispute_open(opened_by: str, session_id: int | None, transfer_id: str | None, text: str,
                 db: str | None) -> None:
    """Open a dispute."""
    if (session_id is None) == (transfer_id is None):
        fail("give --session ID or --transfer ID")
    subject = f"session:{session_id}" if session_id is not None else f"transfer:{transfer_id}"
    number = with_settlement(db, lambda e: disputes.open_dispute(e, opened_by, subject, text))
    click.echo(f"dispute {number} opened ({subject})")


@dispute.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only those not decided yet.")
@db_option
@json_option
def dispute_list(open_only: bool, db: str | None, as_json: bool) -> None:
    """Disputes, oldest first."""
    rows = with_settlement(db, lambda e: disputes.list_disputes(e, open_only))
    emit(rows, as_json, ["id", "by", "subject", "status", "text", "resolution", "correction"])


@dispute.command("resolve")
@click.argument("dispute_id", type=ID)
@click.option("--note", required=True, help="How it was decided.")
@click.option("--correct", "transfer_id", help="Correct this transfer (ledger correct).")
@click.option("--amount", help="With --correct: the right amount in CNY (none: reversed).")
@click.option("--ref", help="With --correct: the correction's reference (default dispute-ID).")
@click.option("--reject", is_flag=True, help="Reject it: nothing changes.")
@click.option("--by", "actor", default=lambda: os.environ.get("USER") or "operator",
              help="Who decides (default: $USER).")
@db_option
def dispute_resolve(dispute_id: int, note: str, transfer_id: str | None, amount: str | None,
                    ref: str | None, reject: bool, actor: str, db: str | None) -> None:
    """Decide a dispute: with --correct TRANSFER [--amount CNY], or --reject."""
    if reject and transfer_id:
        fail("--reject and --correct exclude each other")
    if amount is not None and not transfer_id:
        fail("--amount goes with --correct TRANSFER")
    fen = money_error(lambda: parse_cny(amount, "--amount")) if amount is not None else None
    done = with_settlement(db, lambda e: disputes.resolve(
        e, dispute_id, actor, note, reject=reject, transfer_id=transfer_id, amount=fen, ref=ref))
    fixed = f", correction {done['correction']}" if done["correction"] else ""
    click.echo(f"dispute {dispute_id}: {done['status']} by {actor}{fixed}")
