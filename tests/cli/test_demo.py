"""`cocharge demo` shows what the README promises: share lock, booking, cutoff, overstay."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_shows_lock_booking_cutoff_and_overstay():
    run = subprocess.run([sys.executable, "-m", "cocharge.cli", "demo"], capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "MEMBER1 at WB01: refused (outside opening hours" in out
    assert "MEMBER3 at WB02: refused (booked by another member" in out
    assert "MEMBER2 at WB02: booking honoured" in out
    assert re.search(r"WB03\s+MEMBER3\s+3\.3\d\d completed\s+Remote\s+budget", out)
    assert re.search(r"WB04\s+MEMBER4 .* \d+\.\d\d CNY \(2[56] min\)", out)
    assert "blocked tag on WB03: refused" in out
