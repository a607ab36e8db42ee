"""`cocharge demo` shows what the README promises: share lock, booking, cutoff, overstay,
settlement, a verified ledger, members' rewards and the liability report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_shows_lock_booking_cutoff_and_overstay(tmp_path):
    # The demo keeps its folder (it prints the files it wrote there): the test's, not /tmp.
    run = subprocess.run([sys.executable, "-m", "cocharge.cli", "demo"], capture_output=True,
                         text=True, timeout=180, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "MEMBER1 at WB01: refused (outside opening hours" in out
    assert "MEMBER3 at WB02: refused (booked by another member" in out
    assert "MEMBER2 at WB02: booking honoured" in out
    assert re.search(r"WB03\s+MEMBER3\s+3\.3\d\d completed\s+Remote\s+budget", out)
    # The car stays 40 simulated minutes, 15 of them free: 25 billed minutes at 0.50 CNY. The
    # stay is timed by the simulator's clock (600 times the wall clock's), so a loaded machine's
    # scheduling delays lengthen it: a tenth of a second late is a minute more.
    overstay = re.search(r"WB04\s+MEMBER4 .* (\d+\.\d\d) CNY \((\d+) min\)", out)
    assert overstay and 25 <= int(overstay.group(2)) <= 40, out
    assert overstay.group(1) == f"{int(overstay.group(2)) * 50 / 100:.2f}"
    assert "blocked tag on WB03: refused" in out
    # OCPP 2.1: the charger's own cost of each session equals our settlement to the fen; a
    # card paid at the terminal, and nothing of it is left owed.
    local = re.findall(r"OCPP 2.1 at WB06: session \d+ \((.+?)\) calculated by the charger "
                       r"from the host's tariff: (\d+\.\d\d) CNY; our settlement: "
                       r"(\d+\.\d\d) CNY", out)
    assert [who for who, _, _ in local] == ["MEMBER6", "a card at the terminal"], local
    assert all(theirs == ours for _, theirs, ours in local)
    assert re.search(r"receivable:#DirectPayment:\d+ +0\.00", out)
    # Settlement: quota and green discounts, the overstay fee owed by an empty wallet,
    # and a verified ledger.
    assert re.search(r"MEMBER3 .* 3\.00 .*\(free quota 2\.000 kWh\)", out)
    # Money at the charger: an empty wallet refused; a top-up held at the start and taken for
    # the session, the rest released; the overstay fee owed; the next top-up pays that debt
    # first, and only then is host4's share of it host4's.
    assert re.search(r"MEMBER4 at WB04 with an empty wallet: refused \(not enough money", out)
    fee = re.escape(overstay.group(1))
    assert re.search(r"MEMBER4 +(\d+\.\d\d) +0\.00 +\1 +\1 +0\.00 +" + fee + "  host:host4", out)
    assert re.search(r"held:MEMBER4\): hold 10\.00; session-payment \d+\.\d\d; hold-release", out)
    debt = re.search(r"MEMBER4 owed (\d+\.\d\d) CNY after the overstay fee \(host4's share of it, "
                     r"(\d+\.\d\d) CNY, waited in owed:host:host4\)", out)
    assert debt and float(debt.group(1)) > 0 and debt.group(1) == debt.group(2)
    assert re.search(r"owed:host:host4 +0\.00", out) and re.search(r"receivable:MEMBER4 +0\.00", out)
    assert re.search(r"MEMBER5 .*\(green energy -10%\)", out)
    assert "property:sunrise-garden" in out
    assert re.search(r"ledger verify: OK \(\d+ transfers, hash chain intact, CNY sums to 0\)", out)
    # Rewards after the settlement table: the green session's certificate, credit and badge,
    # the overstay's penalty, the featured post, referral releases, pool points.
    assert re.search(r"MEMBER5 +108 +0 +\d+\.\d{3} .*Earth Guardian, GC-\d{6}, first_green_session", out)
    assert re.search(r"MEMBER4 +95 .* overstay", out)
    assert re.search(r"MEMBER1 +110 +50 .* 201\.60 +7298\.40 +14\.70 +post_featured", out)
    assert re.search(r"MEMBER2 +100 +0 .* 252\.00 +26748\.00", out)
    assert "pool price 1.7508 CNY per point" in out
    assert re.search(r"coverage overall +\d\.\d\d", out)
    # Money flows: the hosts and the property paid out with a payment file, confirmed; a
    # host's statement with its tax estimate; nothing left unpaid on the liability report.
    paid = re.search(r"Payout run \d{4}-\d\d-\d\d .*: \d+ payouts, \d+\.\d\d CNY; payment file "
                     r"(\S+payouts-\S+\.csv)", out)
    assert paid and paid.group(1).startswith(str(tmp_path))
    assert "host:host1" in Path(paid.group(1)).read_text(encoding="utf-8")  # the file is there
    assert re.search(r"PO-\d{8}-001  host:host1 +\d+\.\d\d  Host1 Ltd, bank …\d{4}  paid", out)
    assert "property:sunrise-garden" in out.split("Payout run")[1]
    assert re.search(r"Statement host:host1 \d{4}-\d\d .*net (\d+\.\d\d), payouts \1, "
                     r"balance 0\.00, tax estimate 0\.00", out)
    assert re.search(r"unpaid payouts +0\.00", out)
