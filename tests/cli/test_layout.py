"""The CLI as a package: the root only assembles the groups, each command's module is imported
when it runs, the help the root lists is each command's own, and no module leans back on the
root."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import click

from cocharge import cli
from cocharge.cli.lazy import LazyGroup, short_help

CLI = pathlib.Path(cli.__file__).parent


def test_every_listed_command_loads_and_its_help_is_its_own():
    root = cli.main
    assert isinstance(root, LazyGroup) and not root.commands  # nothing loaded by the root
    ctx = click.Context(root)
    for name, where in root.lazy.items():
        command = root.load(name)
        assert command.name == name, (name, where)
        assert short_help(root.helps[name], 200) == command.get_short_help_str(200), name
        if isinstance(command, LazyGroup):  # station, member, remote: their other domains'
            for sub in command.lazy:
                assert isinstance(command.get_command(ctx, sub), click.Command), (name, sub)


def test_version_and_help_import_no_database_or_web_stack():
    code = ("import sys\nfrom cocharge.cli import main\n"
            "for args in (['--version'], ['--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('sqlalchemy', 'fastapi', 'cocharge.gateway', "
            "'cocharge.stations', 'cocharge.cli.stations') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    assert shown.strip().splitlines()[-1] == "[]"


def test_no_module_imports_from_the_root():
    for path in CLI.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "cocharge.cli":
                names = [a.name for a in node.names]
                assert path.name == "__main__.py" and names == ["main"], (path.name, names)
