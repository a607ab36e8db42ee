"""Run the `cocharge` command in a process of its own, forked from one that has imported it.

The CLI tests run the command some 700 times; a new interpreter imports SQLAlchemy and the
CLI's modules each time (~0.4 s of CPU), which was a third of the suite's CPU. Here one
process per test worker (the zygote) imports them once; each run is a fork of it that sets
its argv, environment, working folder and standard streams, runs `cocharge.cli.main` as the
`cocharge` script does, and exits with its code. It is the same code in a separate process,
with real files for stdout and stderr; an uncaught exception prints its traceback and exits
1, as Python does. Commands that must start as a fresh interpreter (`serve`, the tour, the
demo) keep using subprocess.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

ZYGOTE = r"""
import importlib, json, os, signal, socket, sys, traceback
from cocharge import cli
for where in list(cli.main.lazy.values()):
    module = importlib.import_module(where.split(":")[0])
for name in ("station", "member", "remote"):  # their commands of other domains
    group = cli.main.load(name)
    for where in getattr(group, "lazy", {}).values():
        importlib.import_module(where.split(":")[0])
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(128)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    request = json.loads(conn.makefile().readline())
    if os.fork():
        conn.close()
        continue
    server.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    conn.sendall(f"{os.getpid()}\n".encode())
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, request["out"], os.O_WRONLY | os.O_TRUNC),
                                (2, request["err"], os.O_WRONLY | os.O_TRUNC)):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        sys.argv = ["cocharge", *request["args"]]
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        try:
            conn.sendall(f"{code}\n".encode())
        finally:
            os._exit(code)
"""

_zygote: tuple[subprocess.Popen[str], str] | None = None


def _start() -> tuple[subprocess.Popen[str], str]:
    global _zygote
    if _zygote is not None and _zygote[0].poll() is None:
        return _zygote
    folder = tempfile.mkdtemp(prefix="cocharge-cli-")
    path = os.path.join(folder, "zygote.sock")
    process = subprocess.Popen([sys.executable, "-c", ZYGOTE, path], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    _zygote = (process, path)
    atexit.register(shutil.rmtree, folder, True)  # runs after the kill below (last in, first out)
    atexit.register(process.kill)
    return _zygote


def run(args: list[str], *, timeout: float = 60, cwd: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`cocharge ARGS` in its own (forked) process: its exit code, stdout and stderr."""
    _, path = _start()
    with tempfile.TemporaryDirectory(prefix="cocharge-run-") as folder:
        out, err = os.path.join(folder, "out"), os.path.join(folder, "err")
        for name in (out, err):
            open(name, "w").close()
        request: dict[str, Any] = {"args": list(args), "cwd": cwd or os.getcwd(),
                                   "env": dict(os.environ if env is None else env),
                                   "out": out, "err": err}
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(path)
            conn.sendall((json.dumps(request) + "\n").encode())
            conn.settimeout(timeout)
            reader = conn.makefile()
            pid = int(reader.readline())
            started = time.monotonic()
            try:
                line = reader.readline()
            except TimeoutError:
                os.kill(pid, 9)
                raise subprocess.TimeoutExpired(["cocharge", *args], time.monotonic() - started)
        code = int(line) if line.strip() else -9  # no code: the process died
        with open(out, encoding="utf-8", errors="replace") as f:
            stdout = f.read()
        with open(err, encoding="utf-8", errors="replace") as f:
            stderr = f.read()
    return subprocess.CompletedProcess(["cocharge", *args], code, stdout, stderr)
