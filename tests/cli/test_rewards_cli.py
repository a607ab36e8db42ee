"""Rewards from the `cocharge` command: rules, external events, green points with referral
releases, the points pool, the liability report, and refusals that write nothing."""

from __future__ import annotations

import json
from decimal import ROUND_DOWN, Decimal

from tests.cli.test_cli import cocharge


def members(db: str) -> None:
    assert cocharge("station", "add", "CP1", db=db).returncode == 0
    assert cocharge("member", "add", "Gina", "--tag", "G", db=db).returncode == 0
    made = cocharge("member", "add", "Rui", "--tag", "R", "--referred-by", "G", db=db)
    assert made.returncode == 0 and "referred by G" in made.stdout
    assert cocharge("member", "add", "Nia", "--tag", "N", "--referred-by", "R", db=db).returncode == 0


def balances(db: str) -> dict[tuple[str, str], int]:
    return {(b["account"], b["asset"]): b["balance"]
            for b in json.loads(cocharge("ledger", "balances", "--json", db=db).stdout)}


def points_owed(report: dict) -> int:
    """The pool points at the pool's price less the 10 % fee (fen, floor)."""
    reserve = Decimal(report["pool_reserve_fen"])
    return int((reserve * Decimal("0.9")).to_integral_value(rounding=ROUND_DOWN))


def test_external_events_apply_once_and_rules_are_versioned(tmp_path):
    db = str(tmp_path / "c.db")
    members(db)
    posted = cocharge("rewards", "event", "N", "post_featured", "--ref", "post-77", db=db)
    assert posted.returncode == 0, posted.stderr
    again = cocharge("rewards", "event", "N", "post_featured", "--ref", "post-77", db=db)
    assert again.returncode == 0 and "already applied" in again.stdout
    shown = json.loads(cocharge("member", "show", "N", "--json", db=db).stdout)
    assert shown["coins"] == 50 and shown["credit"] == 110 and shown["referred_by"] == "R"
    # The same post reported for someone else is a mistake, not a second reward.
    other = cocharge("rewards", "event", "G", "post_featured", "--ref", "post-77", db=db)
    assert other.returncode == 2 and "N" in other.stderr
    # The operator changes a reward: a new version, used from now on.
    assert cocharge("rewards", "rules", "set", "events.like_given", "coins=2,credit=1",
                    db=db).returncode == 0
    history = json.loads(cocharge("rewards", "rules", "history", "--json", db=db).stdout)
    assert [h["version"] for h in history][-1] == 1
    rules = json.loads(cocharge("rewards", "rules", "show", "--json", db=db).stdout)
    assert rules["version"] == 1 and rules["rules"]["events"]["like_given"] == {"coins": 2, "credit": 1}
    assert cocharge("rewards", "event", "N", "like_given", "--ref", "like-1", db=db).returncode == 0
    shown = json.loads(cocharge("member", "show", "N", "--json", db=db).stdout)
    assert shown["coins"] == 52 and shown["credit"] == 111
    # An OEM activation is a membership now (tests/cli/test_money_cli.py), not a loose event.
    loose = cocharge("rewards", "event", "G", "oem_activated", "--ref", "VIN-LSVX123", db=db)
    assert loose.returncode == 2 and "membership grant" in loose.stderr
    granted = cocharge("membership", "grant", "G", "--brand", "BYD", "--vin", "LSVX1234567890123",
                       db=db)
    assert granted.returncode == 0, granted.stderr
    gina = json.loads(cocharge("member", "show", "G", "--json", db=db).stdout)
    assert (gina["coins"], gina["credit"], gina["quota_wh_per_month"]) == (200, 110, 50_000)
    assert "free energy    50 kWh a month" in cocharge("member", "show", "G", db=db).stdout
    assert cocharge("ledger", "verify", db=db).returncode == 0


def test_green_points_release_with_two_generations_of_referral(tmp_path):
    db = str(tmp_path / "c.db")
    members(db)
    for tag in ("G", "R", "N"):
        bought = cocharge("points", "purchase", tag, "3000", "--date", "2026-11-01", "--ref",
                          f"order-{tag}", db=db)
        assert bought.returncode == 0 and "7500.00 points (x2.5)" in bought.stdout, bought.stderr
    day = json.loads(cocharge("points", "release", "--date", "2026-11-02", "--json", db=db).stdout)
    # Own 36 each; R +18 (N's referrer); G +18 (R's referrer) + 10.80 (N's second generation).
    assert day["by_tag"] == {"G": {"own": 3600, "referral": 2880}, "R": {"own": 3600, "referral": 1800},
                             "N": {"own": 3600, "referral": 0}}
    again = json.loads(cocharge("points", "release", "--date", "2026-11-02", "--json", db=db).stdout)
    assert again["new"] is False and again["released"] == day["released"]
    held = balances(db)
    assert held[("greenpt:G", "GREEN_PT")] == 6480 and held[("greenpt:N", "GREEN_PT")] == 3600
    assert held[("wallet:G", "CNY")] == 300000  # the purchase is money in the member's wallet
    # A second, bigger order of R's: 108 a day more (x3: 27,000 points).
    bought = cocharge("points", "purchase", "R", "9000", "--date", "2026-11-02", "--ref", "order-R2", db=db)
    assert "27000.00 points (x3)" in bought.stdout
    day = json.loads(cocharge("points", "release", "--date", "2026-11-03", "--json", db=db).stdout)
    assert day["by_tag"]["R"]["own"] == 3600 + 10800
    assert day["by_tag"]["G"]["referral"] == 7200 + 1080  # 50 % of R's 144, 30 % of N's 36
    orders = json.loads(cocharge("points", "show", "R", "--json", db=db).stdout)
    assert [o["released"] for o in orders["orders"]] == [3600 * 2 + 1800 * 2, 10800]
    assert cocharge("ledger", "verify", db=db).returncode == 0
    # The same purchase reference again is the same purchase.
    repeat = cocharge("points", "purchase", "R", "9000", "--date", "2026-11-02", "--ref", "order-R2", db=db)
    assert repeat.returncode == 0 and "already" in repeat.stdout
    assert len(json.loads(cocharge("points", "show", "R", "--json", db=db).stdout)["orders"]) == 2


def test_pool_sales_sells_and_the_liability_report(tmp_path):
    db = str(tmp_path / "c.db")
    members(db)
    first = cocharge("points", "sale", "N", "100", "--ref", "sale-1", db=db)
    assert first.returncode == 0 and "price now 1.4286" in first.stdout, first.stderr
    assert "price now 1.6807" in cocharge("points", "sale", "G", "100", "--ref", "sale-2", db=db).stdout
    # N sells 10 of 21 points at 1.6807 less 10 %: 15.12 CNY into the wallet; the price rises.
    sold = cocharge("points", "sell", "N", "10", db=db)
    assert sold.returncode == 0 and "15.12 CNY" in sold.stdout and "price now 1.7463" in sold.stdout
    pool = json.loads(cocharge("points", "pool", "--json", db=db).stdout)
    assert pool["reserve_fen"] == 6000 - 1512
    too_many = cocharge("points", "sell", "N", "12", db=db)
    assert too_many.returncode == 2 and "holds 11.000000" in too_many.stderr
    again = cocharge("points", "sale", "N", "100", "--ref", "sale-1", db=db)
    assert again.returncode == 0 and "already" in again.stdout
    clash = cocharge("points", "sale", "G", "100", "--ref", "sale-1", db=db)
    assert clash.returncode == 2 and "already used" in clash.stderr
    report = json.loads(cocharge("ledger", "liabilities", "--json", db=db).stdout)
    lines = {li["name"]: li["fen"] for li in report["liabilities"]}
    # The sales' 200 CNY came in; 44.88 of it stays in the pool, backing the pool points.
    assert report["cash_fen"] == 20000 - 4488 and report["pool_reserve_fen"] == 4488
    assert lines["member wallets"] == 1512
    assert lines["pool points"] == points_owed(report)
    assert Decimal(report["coverage"]["pool reserve"]) >= 1 and report["warnings"] == []
    # A 51,000 CNY purchase: the money is in the wallet, and 204,000 points (x4) at
    # 0.01 CNY are promised on top, with nothing behind them but the platform's margin.
    cocharge("points", "purchase", "G", "51000", "--date", "2026-11-01", "--ref", "o1", db=db)
    report = json.loads(cocharge("ledger", "liabilities", "--json", db=db).stdout)
    lines = {li["name"]: li["fen"] for li in report["liabilities"]}
    assert lines["green points, locked"] == 204_000
    assert Decimal(report["coverage"]["cash"]) < 1
    text = cocharge("ledger", "liabilities", db=db)
    assert text.returncode == 0 and "WARNING: NOT COVERED" in text.stdout
    assert "green points, locked" in text.stdout
    gate = cocharge("ledger", "liabilities", "--fail-under", "1", db=db)  # cron's alarm
    assert gate.returncode == 1 and "below --fail-under 1" in gate.stderr
    assert cocharge("ledger", "liabilities", "--fail-under", "0.01", db=db).returncode == 0
    # Funds that cover everything: no warning.
    fresh = str(tmp_path / "ok.db")
    members(fresh)
    cocharge("wallet", "topup", "G", "50", db=fresh)
    fine = cocharge("ledger", "liabilities", db=fresh)
    assert fine.returncode == 0 and "WARNING" not in fine.stdout and "coverage overall" in fine.stdout
    assert cocharge("ledger", "liabilities", "--fail-under", "1", db=fresh).returncode == 0


def test_bad_rewards_input_exits_2_and_writes_nothing(tmp_path):
    db = str(tmp_path / "c.db")
    members(db)
    for args, words in [
        (["rewards", "rules", "set", "points.referral_pct", "50,30,10"], "pyramid selling"),
        (["rewards", "rules", "set", "events.like_given", "coins=lots"], "not a whole number"),
        (["rewards", "event", "N", "bribe", "--ref", "x"], "unknown event"),
        (["rewards", "event", "NOBODY", "like_given", "--ref", "x"], "no member"),
        (["points", "purchase", "N", "12.345"], "2 decimals"),
        (["points", "purchase", "N", "0"], "positive"),
        (["points", "purchase", "N", "3000", "--date", "2999-01-01"], "future"),
        (["points", "release", "--date", "tomorrow"], "YYYY-MM-DD"),
        (["points", "sell", "N", "1"], "holds 0"),
        (["member", "add", "Zed", "--tag", "Z", "--referred-by", "NOBODY"], "no such member"),
        (["green", "certificate", "GC-000404"], "no green certificate"),
        (["rewards", "dividend"], "dividend.enabled true"),
        (["rewards", "rules", "set", "dividend.enabled", "maybe"], "true or false"),
    ]:
        result = cocharge(*args, db=db)
        assert result.returncode == 2 and words in result.stderr, (args, result.stderr)
    assert json.loads(cocharge("ledger", "balances", "--json", db=db).stdout) == []
    assert json.loads(cocharge("rewards", "rules", "history", "--json", db=db).stdout) == []
    assert "Z" not in {m["tag"] for m in json.loads(cocharge("member", "list", "--json", db=db).stdout)}
