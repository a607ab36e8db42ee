"""Memberships, payouts and monthly statements."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from cocharge.cli.common import (
    cny_to_fen,
    day_date,
    db_option,
    emit,
    fail,
    json_option,
    shown_time,
    table,
)
from cocharge.cli.settlement import audited, with_money
from cocharge.settlement import checkpoints, grants, memberships, payouts, statements
from cocharge.settlement.loyalty import local_day
from cocharge.settlement.money import fmt
from cocharge.store.db import utcnow

# --- memberships ----------------------------------------------------------------------------

@click.group()
def membership() -> None:
    """Membership levels with a start and an end: OEM activation by VIN, or a purchase."""


@membership.command("grant")
@click.argument("tag")
@click.option("--brand", help="OEM activation: the vehicle's make (its row of membership.brands).")
@click.option("--vin", help="OEM activation: the vehicle's VIN (17 characters); once per VIN.")
@click.option("--level", help="A purchased level (membership.levels), e.g. gold.")
@click.option("--months", type=click.IntRange(1, 120), help="A purchased level's length.")
@click.option("--ref", help="The purchase's payment id: a level is granted once per ref.")
@db_option
def membership_grant(tag: str, brand: str | None, vin: str | None, level: str | None,
                     months: int | None, ref: str | None, db: str | None) -> None:
    """Grant a level: `--brand MAKE --vin VIN` (OEM: the brand table gives level and months,
    with the starter coins and credit once per member) or `--level L --months N --ref PAY`."""

    if (vin is None) != (brand is None) or (vin is not None and (level or ref)):
        fail("give --brand and --vin (an OEM activation), or --level, --months and --ref (a purchase)")
    done = with_money(db, lambda e: grants.grant(e, tag, brand=brand, vin=vin, level=level,
                                                       months=months, ref=ref))
    if not done.new:
        click.echo(f"membership {done.id} of {tag} was granted already; nothing changed")
        return
    starter = (f"; +{done.coins} coins, +{done.credit} credit (starter, once)"
               if done.coins or done.credit else "")
    click.echo(f"membership {done.id}: {tag} is {done.level} until "
               f"{shown_time(done.ends_at, 'minutes')}, {done.quota_wh / 1000:g} kWh free "
               f"a month{starter}")


@membership.command("show")
@click.argument("tag")
@db_option
@json_option
def membership_show(tag: str, db: str | None, as_json: bool) -> None:
    """A member's levels, past and present."""

    emit(with_money(db, lambda e: memberships.of_member(e, tag)), as_json,
         ["id", "level", "brand", "vin", "from", "until", "quota_kwh_per_month", "status"])


@membership.command("list")
@click.option("--active", is_flag=True, help="Only levels in force now.")
@db_option
@json_option
def membership_list(active: bool, db: str | None, as_json: bool) -> None:
    """Every member's levels."""

    emit(with_money(db, lambda e: memberships.list_all(e, active)), as_json,
         ["id", "tag", "level", "brand", "source", "from", "until", "quota_kwh_per_month", "status"])


@membership.command("expire")
@db_option
@json_option
def membership_expire(db: str | None, as_json: bool) -> None:
    """The daily job (cron, or the gateway once a day): end the levels whose time is over
    (their unused quota goes back) and grant this month's quota to every member entitled.
    Running it again changes nothing."""

    run = with_money(db, memberships.daily)
    if as_json:
        click.echo(json.dumps({"expired": run.expired, "returned_wh": run.returned_wh,
                               "granted": run.granted}, indent=2))
        return
    click.echo(f"{len(run.expired)} memberships ended ({run.returned_wh / 1000:g} kWh of quota "
               f"returned); this month's quota granted to {len(run.granted)} members")


# --- payouts --------------------------------------------------------------------------------

@click.group()
def payout() -> None:
    """Pay hosts, properties and operators: payee details, runs, payment files, confirmations."""


@payout.command("payee")
@click.argument("account")
@click.option("--name", required=True, help="The account holder, as the bank knows them.")
@click.option("--method", required=True, type=click.Choice(["bank", "alipay", "wechat"]))
@click.option("--number", required=True, help="Bank account / card number, or the wallet id.")
@click.option("--bank", help="The bank's name or code (bank transfers).")
@db_option
def payout_payee(account: str, name: str, method: str, number: str, bank: str | None,
                 db: str | None) -> None:
    """Where ACCOUNT's payouts go (host:NAME, property:NAME or operator:NAME)."""

    with_money(db, lambda e: payouts.set_payee(e, account, name, method, number, bank))
    click.echo(f"payee of {account}: {name}, {method} …{number[-4:]}")


@payout.command("payees")
@db_option
@json_option
def payout_payees(db: str | None, as_json: bool) -> None:
    """Accounts with payment details (numbers masked)."""

    emit(with_money(db, payouts.list_payees), as_json, ["account", "name", "method", "bank", "number"])


@payout.command("run")
@click.option("--date", "day", help="The run's date (YYYY-MM-DD, default today, the platform's "
              "local day): once per date.")
@click.option("--minimum", help="Pay balances of at least this many CNY (default payout.minimum_cny).")
@click.option("--file", "path", help="Write the payment file here (default payouts-DATE.csv).")
@db_option
@json_option
def payout_run(day: str | None, minimum: str | None, path: str | None, db: str | None,
               as_json: bool) -> None:
    """Book every balance due to payable:ACCOUNT and write the payment file for the bank."""

    when = day_date(day, "--date") or local_day(utcnow())  # the platform's day, as statements
    least = cny_to_fen(minimum, "--minimum") if minimum is not None else None
    target = Path(path or f"payouts-{when.isoformat()}.csv")
    if not target.parent.is_dir():
        fail(f"--file {target}: no folder {target.parent}")

    async def work(engine: Any) -> tuple[Any, dict[str, Any] | None]:
        done = await audited(engine, "payout-run", None,
                             lambda: payouts.run(engine, when, least), date=when.isoformat())
        return done, await checkpoints.latest(engine)

    run, checkpoint = with_money(db, work)
    target.write_text(payouts.payment_file(run.lines, checkpoint["id"] if checkpoint else None),
                      encoding="utf-8")
    if as_json:
        click.echo(json.dumps({"date": when.isoformat(), "new": run.new, "file": str(target),
                               "lines": run.lines, "total_fen": run.total_fen,
                               "below_minimum": run.below_minimum, "no_payee": run.no_payee},
                              indent=2))
        return
    click.echo(f"payout run {when}: {'booked' if run.new else 'already run; the same'} "
               f"{len(run.lines)} payouts, {fmt(run.total_fen)} CNY; payment file {target}")
    table([{"ref": x["ref"], "account": x["account"], "amount": fmt(x["amount_fen"]),
            "payee": x["payee_name"], "method": x["method"], "status": x["status"]}
           for x in run.lines], ["ref", "account", "amount", "payee", "method", "status"])
    for account, fen in run.no_payee:
        click.echo(f"not paid: {account} ({fmt(fen)} CNY) has no payment details: "
                   f"`cocharge payout payee {account} --name ... --method ... --number ...`")
    if run.below_minimum:
        click.echo(f"{len(run.below_minimum)} balances below the minimum "
                   f"{fmt(run.minimum_fen)} CNY wait for a later run")


@payout.command("confirm")
@click.argument("what")
@click.option("--note", help="The bank's batch id or a remark, kept with the payout.")
@db_option
def payout_confirm(what: str, note: str | None, db: str | None) -> None:
    """The bank paid: WHAT is a payment file (every line in it) or one reference. Confirming
    twice changes nothing."""

    refs: list[tuple[str, int | None]]
    if os.path.isfile(what):
        try:
            text = Path(what).read_text(encoding="utf-8")
            refs = [(ref, fen) for ref, fen in payouts.refs_in_file(text)]
        except (OSError, UnicodeDecodeError, payouts.PayoutError) as exc:
            fail(f"{what}: {exc}")
            raise
    elif what.startswith("PO-"):
        refs = [(what, None)]
    else:
        fail(f"{what!r} is neither a payment file nor a payout reference (PO-YYYYMMDD-NNN)")
        raise AssertionError
    async def confirm(engine: Any) -> Any:
        return await audited(engine, "payout-paid", None,
                             lambda: payouts.confirm_all(engine, refs, note),
                             refs=[r for r, _ in refs][:50], note=note)

    done = with_money(db, confirm)
    new = [d for d in done if d.new]
    click.echo(f"{len(new)} payouts confirmed as paid ({fmt(sum(d.amount_fen for d in new))} CNY)"
               + (f"; {len(done) - len(new)} were confirmed already" if len(done) > len(new) else ""))


@payout.command("fail")
@click.argument("ref")
@click.option("--reason", help="Why the bank refused it (kept with the payout).")
@db_option
def payout_fail(ref: str, reason: str | None, db: str | None) -> None:
    """The bank did not pay REF: its money goes back to the account's balance (and into the
    next run)."""

    async def returned(engine: Any) -> Any:
        return await audited(engine, "payout-failed", None,
                             lambda: payouts.fail(engine, ref, reason), ref=ref, reason=reason)

    done = with_money(db, returned)
    click.echo(f"{ref}: {'returned' if done.new else 'was returned already'}: "
               f"{fmt(done.amount_fen)} CNY back to {done.account}")


@payout.command("list")
@click.option("--status", type=click.Choice(["booked", "paid", "failed"]))
@click.option("--account")
@db_option
@json_option
def payout_list(status: str | None, account: str | None, db: str | None, as_json: bool) -> None:
    """Payouts, oldest first."""

    rows = with_money(db, lambda e: payouts.list_payouts(e, status, account))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table([{**x, "amount": fmt(x["amount_fen"])} for x in rows],
          ["ref", "date", "account", "amount", "payee_name", "status", "settled_at"])


# --- statements -----------------------------------------------------------------------------

@click.command("statement")
@click.argument("account")
@click.option("--month", required=True, help="YYYY-MM (the platform's local month).")
@click.option("--html", "html_path", help="Also write a readable page with a chart here.")
@click.option("--csv", "csv_path", help="Also write the statement as CSV here.")
@click.option("--lang", "language", type=click.Choice(["zh", "en"]), default="zh",
              show_default=True, help="The language of the --html page.")
@db_option
@json_option
def statement_cmd(account: str, month: str, html_path: str | None, csv_path: str | None,
                  language: str, db: str | None, as_json: bool) -> None:
    """A host's or property's monthly statement: sessions, kWh, gross, discounts, commission,
    net, payouts, balance and a tax estimate. brand:NAME: what a carmaker's members used of
    the free quota its OEM membership gives (the invoice to the brand)."""
    if account.startswith("brand:"):
        brand = with_money(db, lambda e: statements.brand_statement(e, account[6:], month))
        if as_json:
            click.echo(json.dumps(brand, indent=2))
            return
        click.echo(f"brand {brand['brand']} {month}: {len(brand['sessions'])} sessions, "
                   f"{brand['quota_kwh']:.3f} kWh of free quota, {fmt(brand['total_fen'])} CNY")
        table([{**x, "cny": fmt(x["fen"])} for x in brand["sessions"]],
              ["session", "day", "member", "station", "quota_kwh", "cny"])
        return

    for path in (html_path, csv_path):
        if path and not Path(path).parent.is_dir():
            fail(f"{path}: no folder {Path(path).parent}")
    st = with_money(db, lambda e: statements.statement(e, account, month))
    if csv_path:
        statements.write(csv_path, statements.to_csv(st))
    if html_path:
        from cocharge.web.statement import to_html  # Jinja and the catalogue: only for a page

        statements.write(html_path, to_html(st, language))
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    t = st["totals"]
    click.echo(f"statement {account} {month} (CNY)")
    click.echo(f"  opening balance   {fmt(st['opening_fen']):>12}")
    click.echo(f"  sessions          {t['sessions']:>12}   {t['kwh']:.3f} kWh")
    click.echo(f"  gross             {fmt(t['gross_fen']):>12}")
    click.echo(f"  discounts         {fmt(-t['discounts_fen']):>12}")
    click.echo(f"  paid by drivers   {fmt(t['paid_fen']):>12}")
    click.echo(f"  commission        {fmt(-t['commission_fen']):>12}")
    click.echo(f"  net income        {fmt(t['net_fen']):>12}")
    for p in st["payouts"]:
        click.echo(f"  payout {p['ref']} {fmt(-p['fen']):>12}   {p['day']}")
    for p in st["payouts_returned"]:
        click.echo(f"  returned {p['ref']} {fmt(p['fen']):>10}   {p['day']}")
    click.echo(f"  closing balance   {fmt(st['closing_fen']):>12}")
    click.echo(f"  tax estimate      {fmt(st['tax']['estimate_fen']):>12}   ({st['tax']['name']}; "
               "an estimate, not advice)")
    if st["waiting_for_drivers_fen"]:
        click.echo(f"  owed by drivers   {fmt(st['waiting_for_drivers_fen']):>12}   (not yet yours: "
                   "yours when they pay)")
    if st["checkpoint"]:
        click.echo(f"  {checkpoints.line(st['checkpoint'])}")
    for path, what in ((csv_path, "CSV"), (html_path, "HTML")):
        if path:
            click.echo(f"{what} written to {path}")
