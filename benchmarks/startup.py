"""Start-up of the `cocharge` command: wall time from exec to exit, as a script pays it.

Measures `cocharge --version`, `cocharge --help` and a read command (`station list` on a
SQLite database with 20 stations) over repeated runs, and prints the median, the best and
the slowest, beside a bare `python -c pass` (the interpreter's own floor). Budget (issue
28): under 0.25 s for each on the reference 2-core machine. `python -X importtime` shows
where a command's time goes:

    python -X importtime -m cocharge.cli station list --db x.db 2> imports.txt

    python benchmarks/startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(argv: list[str], runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()[-300:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    here = os.path.dirname(sys.executable)
    command = shutil.which("cocharge", path=here) or shutil.which("cocharge")
    if command is None:
        raise SystemExit("no `cocharge` command: pip install -e . first")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCHARGE_")}
    with tempfile.TemporaryDirectory() as folder:
        db = os.path.join(folder, "startup.db")
        subprocess.run([command, "db", "init", "--db", db], check=True, capture_output=True)
        for n in range(20):
            subprocess.run([command, "station", "add", f"WB{n:04d}", "--db", db], check=True,
                           capture_output=True)
        cases = [
            ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
            ("cocharge --version", [command, "--version"]),
            ("cocharge --help", [command, "--help"]),
            ("cocharge station list (SQLite)", [command, "station", "list", "--db", db]),
        ]
        print(f"{'command':<34} {'median':>8} {'best':>8} {'slowest':>8}   ({args.runs} runs)")
        for name, argv in cases:
            times = timed(argv, args.runs, env)
            print(f"{name:<34} {statistics.median(times):8.3f} {min(times):8.3f} "
                  f"{max(times):8.3f}")


if __name__ == "__main__":
    main()
