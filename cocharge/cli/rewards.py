"""Rewards: the rule table, outside events, green certificates, green points."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from cocharge.cli.common import (
    cny_to_fen,
    day_date,
    db_option,
    emit,
    fail,
    json_option,
    payment_ref,
    table,
)
from cocharge.cli.settlement import with_money, with_rewards
from cocharge.settlement import loyalty
from cocharge.settlement.money import fmt
from cocharge.settlement.points import GREEN_SCALE, POOL_SCALE, points_text, price_text
from cocharge.settlement.rewards import DEFAULT_RULES
from cocharge.store.db import utcnow


def _pts(units: int, scale: int) -> str:
    return points_text(units, scale)



# --- member show ----------------------------------------------------------------------------

@click.command("show")
@click.argument("tag")
@db_option
@json_option
def member_show(tag: str, db: str | None, as_json: bool) -> None:
    """A member's credit, coins, badges, green certificates, points and reward history."""

    data = with_rewards(db, lambda e: loyalty.member_rewards(e, tag))
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    gp = data["green_points"]
    click.echo(f"{data['name']} ({tag}), {data['status']}")
    if data["referred_by"] or data["referred"]:
        click.echo(f"  referred by {data['referred_by'] or '-'}; referred "
                   f"{', '.join(data['referred']) or 'nobody'}")
    click.echo(f"  credit score   {data['credit']}")
    click.echo(f"  coins          {data['coins']}")
    click.echo(f"  wallet         {fmt(data['wallet_fen'])} CNY")
    for m in data["memberships"]:
        if m["status"] == "active":
            click.echo(f"  membership     {m['level']} ({m['brand']}) until {m['until']}")
    if data["quota_wh_per_month"]:
        click.echo(f"  free energy    {data['quota_wh_per_month'] / 1000:g} kWh a month, "
                   f"{data['quota_left_wh'] / 1000:g} kWh left this month")
    if data["pay_with"]:
        click.echo(f"  pays with      {data['pay_with']} (then the wallet)")
    badges = ", ".join(b["name"] for b in data["badges"]) or "-"
    click.echo(f"  badges         {badges}")
    click.echo(f"  green energy   {data['green_kwh']:.3f} kWh, {data['co2_kg']:.3f} kg CO2 avoided "
               f"({len(data['green_certificates'])} certificates"
               + (": " + ", ".join(c["id"] for c in data["green_certificates"][-5:])
                  if data["green_certificates"] else "") + ")")
    click.echo(f"  green points   {_pts(gp['available'], GREEN_SCALE)} released, "
               f"{_pts(gp['locked'], GREEN_SCALE)} locked in {len(gp['orders'])} orders")
    if data["pool_points"]:
        click.echo(f"  pool points    {_pts(data['pool_points'], POOL_SCALE)} "
                   f"(worth {fmt(data['pool_value_fen'])} CNY at today's price)")
    if data["events"]:
        click.echo("  rewards:")
        for e in data["events"][-10:]:
            parts = [f"{e['coins']:+d} coins" if e["coins"] else "",
                     f"{e['credit']:+d} credit" if e["credit"] else ""]
            click.echo(f"    {e['at']}  {e['event']:20} {' '.join(p for p in parts if p) or '-'}"
                       + (f"  ({e['ref']})" if e["ref"] else ""))


# --- rewards: rule table and outside events -------------------------------------------------

@click.group()
def rewards() -> None:
    """The reward rule table and events reported from outside (posts, likes, answers)."""


@rewards.group("rules")
def rewards_rules() -> None:
    """Show or change the rule table (every change is a new version)."""


@rewards_rules.command("show")
@db_option
@json_option
def rules_show(db: str | None, as_json: bool) -> None:
    """The rule table in force, with its version."""

    rules = with_rewards(db, loyalty.load_rules)
    body = dict(rules.body or DEFAULT_RULES)
    if as_json:
        click.echo(json.dumps({"version": rules.version, "rules": body}, indent=2))
        return
    click.echo(f"reward rules, version {rules.version}"
               + (" (the defaults)" if rules.version == 0 else "")
               + "; change one with `cocharge rewards rules set KEY VALUE`")

    def show(prefix: str, value: Any) -> None:
        # A row of a table (an event, a badge, a level, a brand) on one line, as `set` takes it.
        row = isinstance(value, dict) and prefix.count(".") >= 1 and not any(
            isinstance(v, dict) for v in value.values())
        if isinstance(value, dict) and not row:
            for key, inner in value.items():
                show(f"{prefix}.{key}" if prefix else str(key), inner)
        elif row:
            click.echo(f"  {prefix}: " + ",".join(f"{k}={v}" for k, v in value.items()))
        elif prefix == "points.tiers":
            click.echo(f"  {prefix}: " + ",".join(f"{m}={x}" for m, x in value))
        elif isinstance(value, list):
            click.echo(f"  {prefix}: " + ",".join(str(v) for v in value))
        else:
            click.echo(f"  {prefix}: {value}")

    show("", body)


@rewards_rules.command("set")
@click.argument("key")
@click.argument("value")
@db_option
def rules_set(key: str, value: str, db: str | None) -> None:
    """Set one rule, e.g. `events.post_featured coins=60,credit=10`, `initial_credit 120`,
    `badges.navigator.stations 8`, `points.tiers 3000=2.5,9000=3`, `points.referral_pct 40,20`,
    `green.factor_kg_per_kwh 0.5703`."""

    rules = with_rewards(db, lambda e: loyalty.set_rule(e, key, value))
    click.echo(f"reward rules version {rules.version}: {key} = {value}")


@rewards_rules.command("history")
@db_option
@json_option
def rules_history(db: str | None, as_json: bool) -> None:
    """Every version of the rule table and what it changed."""

    emit(with_rewards(db, loyalty.rules_history), as_json, ["version", "at", "changed"])


@rewards.command("event")
@click.argument("tag")
@click.argument("event")
@click.option("--ref", required=True, help="The event's own id (post id, answer id): applied once.")
@db_option
def rewards_event(tag: str, event: str, ref: str, db: str | None) -> None:
    """Apply an event reported from outside (the table's events: post_approved, post_liked_50,
    post_featured, like_given, answer_accepted, and any an operator added), once per --ref."""

    done = with_rewards(db, lambda e: loyalty.apply_event(e, tag, event, ref))
    if not done.new:
        click.echo(f"{done.event_id}: already applied to {tag}; nothing changed")
        return
    parts = [f"{done.coins:+d} coins" if done.coins else "", f"{done.credit:+d} credit" if done.credit else ""]
    reward = " ".join(p for p in parts if p) or (
        "no reward (over the event's limit for the period)" if done.limited else "no reward")
    click.echo(f"{done.event_id} -> {tag}: {reward}; credit score {done.credit_after}"
               + (f"; badge: {', '.join(done.badges)}" if done.badges else ""))


@rewards.command("dividend")
@click.option("--date", "day", help="The day whose revenue is shared (YYYY-MM-DD, default yesterday).")
@db_option
@json_option
def rewards_dividend(day: str | None, db: str | None, as_json: bool) -> None:
    """Pay a day's dividend pool (when `dividend.enabled`): a share of the platform's
    revenue that day, by green points held, each member capped; once per day."""


    when = day_date(day, "--date") or loyalty.local_day(utcnow()) - timedelta(days=1)
    run = with_rewards(db, lambda e: loyalty.dividend(e, when))
    if as_json:
        click.echo(json.dumps({"day": str(run.day), "new": run.new, "revenue_fen": run.revenue_fen,
                               "pool_fen": run.pool_fen, "payouts": run.payouts,
                               "returned_fen": run.returned_fen}, indent=2))
        return
    click.echo(f"{run.day}: {'paid' if run.new else 'already paid'}: platform revenue "
               f"{fmt(run.revenue_fen)} CNY, pool {fmt(run.pool_fen)}, paid "
               f"{fmt(sum(run.payouts.values()))} to {len(run.payouts)} members, "
               f"{fmt(run.returned_fen)} back to the platform")
    table([{"tag": t, "paid": fmt(v)} for t, v in sorted(run.payouts.items())], ["tag", "paid"])


# --- green certificates ---------------------------------------------------------------------

@click.group()
def green() -> None:
    """Green-energy certificates."""


@green.command("certificate")
@click.argument("cert_id")
@db_option
@json_option
def green_certificate(cert_id: str, db: str | None, as_json: bool) -> None:
    """Print a green certificate (GC-000123)."""

    cert = with_rewards(db, lambda e: loyalty.certificate(e, cert_id))
    if as_json:
        click.echo(json.dumps(cert, indent=2, default=str))
        return
    click.echo(f"GREEN ENERGY CERTIFICATE {cert['id']}")
    click.echo(f"  member      {cert['tag']}")
    click.echo(f"  charger     {cert['station_id']} (session {cert['session_id']})")
    click.echo(f"  period      {cert['started_at']:%Y-%m-%d %H:%M} - {cert['ended_at']:%Y-%m-%d %H:%M} UTC")
    click.echo(f"  energy      {cert['energy_wh'] / 1000:.3f} kWh")
    click.echo(f"  CO2 avoided {cert['co2_g'] / 1000:.3f} kg (estimate: kWh x {cert['factor']} kg/kWh, "
               f"grid factor {cert['factor_year']}, {cert['factor_source']})")
    click.echo(f"  digest      {cert['digest']} (on the ledger as cert:{cert['id']})")


@green.command("verify")
@click.argument("cert_id")
@db_option
def green_verify(cert_id: str, db: str | None) -> None:
    """Check a certificate against the ledger and the session; exit 1 if a check fails."""

    checks = with_rewards(db, lambda e: loyalty.verify_certificate(e, cert_id))
    for name, ok in checks:
        click.echo(f"  {'ok  ' if ok else 'FAIL'} {name}")
    if all(ok for _, ok in checks):
        click.echo(f"certificate {cert_id.upper()}: VALID")
        return
    click.echo(f"certificate {cert_id.upper()}: NOT VALID", err=True)
    sys.exit(1)


# --- green points and the points pool -------------------------------------------------------

@click.group()
def points() -> None:
    """Green points (purchases released day by day) and pool-backed points."""


@points.command("purchase")
@click.argument("tag")
@click.argument("amount")
@click.option("--date", "day", help="The day the order was paid (YYYY-MM-DD, default today).")
@click.option("--ref", help="Payment reference: an order with the same reference is recorded "
              "once (none given: one is made and printed).")
@db_option
def points_purchase(tag: str, amount: str, day: str | None, ref: str | None, db: str | None) -> None:
    """A member buys green points for AMOUNT CNY (the money tops up the wallet; the points
    are locked and released day by day)."""

    fen = cny_to_fen(amount, "AMOUNT")
    paid_on = day_date(day, "--date")
    order_ref = payment_ref(ref, "purchase")
    done = with_rewards(db, lambda e: loyalty.purchase(e, tag, fen, paid_on, order_ref))
    word = "recorded" if done.new else "already recorded"
    click.echo(f"order {done.order_id} {word}: {tag} paid {fmt(done.amount_fen)} CNY -> "
               f"{_pts(done.granted, GREEN_SCALE)} points (x{done.multiplier}) locked, "
               f"released {_pts(done.daily, GREEN_SCALE)} a day")


@points.command("release")
@click.option("--date", "day", help="The day to release (YYYY-MM-DD, default today; not ahead).")
@db_option
@json_option
def points_release(day: str | None, db: str | None, as_json: bool) -> None:
    """Release one day of every order (and the referral acceleration); once per day."""

    when = day_date(day, "--date") or loyalty.local_day(utcnow())
    run = with_rewards(db, lambda e: loyalty.release(e, when))
    if as_json:
        click.echo(json.dumps({"day": str(run.day), "new": run.new, "released": run.released,
                               "by_tag": run.by_tag}, indent=2))
        return
    click.echo(f"{run.day}: {'released' if run.new else 'already released'} "
               f"{_pts(run.released, GREEN_SCALE)} points")
    table([{"tag": t, "own": _pts(v["own"], GREEN_SCALE), "referral": _pts(v["referral"], GREEN_SCALE)}
           for t, v in sorted(run.by_tag.items())], ["tag", "own", "referral"])


@points.command("show")
@click.argument("tag")
@db_option
@json_option
def points_show(tag: str, db: str | None, as_json: bool) -> None:
    """A member's green-point orders: granted, released, locked."""

    data = with_rewards(db, lambda e: loyalty.member_rewards(e, tag))["green_points"]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{tag}: {_pts(data['available'], GREEN_SCALE)} points released, "
               f"{_pts(data['locked'], GREEN_SCALE)} locked")
    table([{**o, "amount": fmt(o["amount_fen"]), "granted": _pts(o["granted"], GREEN_SCALE),
            "daily": _pts(o["daily"], GREEN_SCALE), "released": _pts(o["released"], GREEN_SCALE),
            "locked": _pts(o["locked"], GREEN_SCALE)} for o in data["orders"]],
          ["order", "purchased_on", "amount", "multiplier", "granted", "daily", "released", "locked"])


@points.command("sale")
@click.argument("tag")
@click.argument("amount")
@click.option("--ref", required=True, help="The sale's id: a sale is counted once.")
@db_option
def points_sale(tag: str, amount: str, ref: str, db: str | None) -> None:
    """A sale of AMOUNT CNY to TAG: a share of the margin enters the pool, TAG earns pool points."""

    fen = cny_to_fen(amount, "AMOUNT")
    move = with_rewards(db, lambda e: loyalty.pool_sale(e, tag, fen, ref))
    if not move.new:
        click.echo(f"sale {ref}: already counted; nothing changed")
        return
    click.echo(f"sale {ref}: {fmt(move.fen)} CNY into the pool; {tag} earns "
               f"{_pts(move.units, POOL_SCALE)} points at {price_text(move.price_before)}; "
               f"price now {price_text(move.price_after)}")


@points.command("sell")
@click.argument("tag")
@click.argument("count")
@click.option("--ref", help="An id for this sell-back (repeating it changes nothing).")
@db_option
def points_sell(tag: str, count: str, ref: str | None, db: str | None) -> None:
    """TAG sells COUNT pool points back at the current price less the fee; they are burnt."""

    try:
        number = Decimal(count)
    except InvalidOperation:
        number = Decimal(-1)
    units = number * POOL_SCALE
    if not number.is_finite() or number <= 0 or units != units.to_integral_value():
        fail(f"COUNT {count!r}: give a positive number of points (up to 6 decimals)")
    move = with_rewards(db, lambda e: loyalty.pool_sell(e, tag, int(units), ref or str(uuid.uuid4())))
    if not move.new:
        click.echo(f"sell-back {ref}: already done; nothing changed")
        return
    click.echo(f"{tag} sold {_pts(move.units, POOL_SCALE)} points at {price_text(move.price_before)}: "
               f"{fmt(move.fen)} CNY paid to the wallet; price now {price_text(move.price_after)}")


@points.command("pool")
@db_option
@json_option
def points_pool(db: str | None, as_json: bool) -> None:
    """The pool: reserve, points in circulation, price."""

    pool = with_rewards(db, loyalty.pool_summary)
    if as_json:
        click.echo(json.dumps(pool, indent=2))
        return
    click.echo(f"pool reserve {fmt(pool['reserve_fen'])} CNY, {_pts(pool['circulating'], POOL_SCALE)} "
               f"points in circulation, price {pool['price']} CNY")



# --- green points for goods -----------------------------------------------------------------

@points.command("redeem")
@click.argument("tag")
@click.argument("count")
@click.option("--ref", required=True, help="The redemption's id (the shop's order): once.")
@click.option("--for", "goods", required=True, help="What the points were exchanged for.")
@db_option
def points_redeem(tag: str, count: str, ref: str, goods: str, db: str | None) -> None:
    """Spend released green points on goods outside cocharge (an external redemption)."""

    units = cny_to_fen(count, "COUNT")  # points have two decimals, like CNY
    done = with_money(db, lambda e: loyalty.redeem_points(e, tag, units, ref, goods))
    click.echo(f"{ref}: {points_text(units, GREEN_SCALE)} points of {tag} "
               + ("redeemed" if done else "were redeemed already")
               + f" for {goods}")
