"""The README's CLI tour, run as written: every command of its `sh` block in order, in a
fresh folder, with the gateway (`cocharge serve ... &`) and the simulator (`sim run --stay
&`) running in the background; each must exit 0. `make tour` runs this alone.

The tour names the default ports (9000, 8080, ...), as a reader on a fresh machine uses them.
So that it needs neither an idle machine nor those ports, it runs in a network namespace of
its own (`unshare --net`, a private loopback): another `cocharge serve` on the machine, or
another test, cannot collide with it. While it runs, the test holds the default ports on the
machine's own loopback itself, to show that it does not depend on them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import apt_install

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The ports `cocharge serve` takes by default: OCPP, operator channel, uploads, HTTP API.
DEFAULT_PORTS = (9000, 9001, 9002, 8080)


def tour_commands() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    tour = text[text.index("## CLI tour"):]
    block = re.search(r"```sh\n(.*?)```", tour, re.DOTALL)
    assert block, "the README has no CLI tour block"
    return [line.strip() for line in block.group(1).splitlines()
            if line.strip() and not line.strip().startswith("#")]


@contextlib.contextmanager
def private_network() -> Iterator[list[str]]:
    """A network namespace with its loopback up, kept by a sleeping process; yields the prefix
    that runs a command inside it (as root, as the tests run here and in CI)."""
    if not shutil.which("ip"):  # a fresh machine without iproute2: install it (never skip)
        apt_install("iproute2")
    own = os.readlink("/proc/self/ns/net")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
    try:
        target = f"/proc/{holder.pid}/ns/net"
        deadline = time.monotonic() + 10
        while os.readlink(target) == own:  # until unshare has made it and exec'd sleep
            assert holder.poll() is None, "unshare --net failed (the tour runs as root)"
            assert time.monotonic() < deadline, "unshare --net did not start"
            time.sleep(0.01)
        enter = ["nsenter", f"--net={target}"]
        subprocess.run([*enter, "ip", "link", "set", "lo", "up"], check=True)
        yield enter
    finally:
        holder.kill()
        holder.wait(10)


@contextlib.contextmanager
def holding_default_ports() -> Iterator[None]:
    """Listen on the default ports of the machine's loopback where they are free (where they
    are taken, something else already holds them: as good)."""
    held = []
    for port in DEFAULT_PORTS:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
            held.append(s)
        except OSError:
            s.close()
    try:
        yield
    finally:
        for s in held:
            s.close()


def test_the_readme_tour_runs_as_written(tmp_path):
    with private_network() as enter, holding_default_ports():
        run_tour(tmp_path, enter)


def run_tour(tmp_path: Path, enter: list[str]) -> None:
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path / "README.md")  # `firmware add README.md`
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCHARGE_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    background: list[subprocess.Popen[str]] = []
    failures: list[str] = []
    try:
        for line in tour_commands():
            if line.split("#")[0].rstrip().endswith("&"):
                command = line.split("#")[0].rstrip()[:-1]
                process = subprocess.Popen([*enter, "bash", "-c", f"exec {command}"], cwd=tmp_path,
                                           env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)
                background.append(process)
                ready = "web console" if " serve" in command else "staying connected"
                seen = []
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    assert process.stdout is not None
                    out = process.stdout.readline()
                    seen.append(out)
                    if ready in out:
                        break
                    assert out, f"{command!r} stopped: {''.join(seen)}"
                else:
                    raise AssertionError(f"{command!r} not ready: {''.join(seen)}")
                continue
            session = re.search(r"remote stop \S+ --session (\d+)", line)
            if session:
                # A remote start is answered before the charger reports the session it opens:
                # as a user reading `sessions list` would, wait until it is there.
                deadline = time.monotonic() + 30
                while subprocess.run([*enter, "bash", "-c", f"cocharge sessions show "
                                      f"{session.group(1)}"], cwd=tmp_path, env=env,
                                     capture_output=True, check=False).returncode != 0:
                    if time.monotonic() > deadline:
                        state = subprocess.run(
                            [*enter, "bash", "-c", "cocharge sessions list --limit 5; "
                             "cocharge logs WB0001 | tail -n 12"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=False)
                        raise AssertionError(f"session {session.group(1)} never opened:\n"
                                             f"{state.stdout}{state.stderr}")
                    time.sleep(0.2)
            done = subprocess.run([*enter, "bash", "-c", line], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=180, check=False)
            if done.returncode != 0:
                failures.append(f"{line}\n  exit {done.returncode}: "
                                f"{(done.stderr or done.stdout).strip()[-400:]}")
            if session and done.returncode == 0:
                # The stop is answered before the charger ends the transaction: as a user
                # reading `sessions show` would, wait until it has ended.
                deadline = time.monotonic() + 30
                while json.loads(subprocess.run(
                        [*enter, "bash", "-c", f"cocharge sessions show {session.group(1)} "
                         "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                        check=False).stdout or "{}").get("status") == "active":
                    assert time.monotonic() < deadline, f"session {session.group(1)} never ended"
                    time.sleep(0.2)
    finally:
        for process in reversed(background):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    assert not failures, "\n".join(failures)
