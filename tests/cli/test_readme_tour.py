"""The README's CLI tour, run as written: every command of its `sh` block in order, in a
fresh folder, with the gateway (`cocharge serve ... &`) and the simulator (`sim run --stay
&`) running in the background; each must exit 0. `make tour` runs this alone."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

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


def test_the_readme_tour_runs_as_written(tmp_path):
    for port in DEFAULT_PORTS:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is taken: the tour " \
                "runs `cocharge serve` on its default ports"
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path / "README.md")  # `firmware add README.md`
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCHARGE_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    background: list[subprocess.Popen[str]] = []
    failures: list[str] = []
    try:
        for line in tour_commands():
            if line.split("#")[0].rstrip().endswith("&"):
                command = line.split("#")[0].rstrip()[:-1]
                process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=tmp_path,
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
            done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=180, check=False)
            if done.returncode != 0:
                failures.append(f"{line}\n  exit {done.returncode}: "
                                f"{(done.stderr or done.stdout).strip()[-400:]}")
    finally:
        for process in reversed(background):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    assert not failures, "\n".join(failures)
