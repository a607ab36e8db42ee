"""Groups whose commands are imported only when one of them runs: `cocharge --version`,
`--help` and a read command load no more than they use (start-up stays well under 0.25 s)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click


class LazyGroup(click.Group):
    """A click group with commands that live in other modules.

    `lazy` maps a command's name to where it lives ("module:attribute"); `helps`, optional,
    to its one-line help, which `--help` then lists without importing the module
    (`tests/cli/test_layout.py` checks that it is the command's own)."""

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None,
                 helps: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = dict(lazy or {})
        self.helps: dict[str, str] = dict(helps or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self.load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def load(self, cmd_name: str) -> click.Command:
        """Import the command `cmd_name` from its module."""
        where = self.lazy[cmd_name]
        module_name, attribute = where.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{where} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max((len(n) for n in self.list_commands(ctx)), default=0)
        rows = []
        for name in self.list_commands(ctx):
            if name not in self.commands and name in self.helps:
                rows.append((name, short_help(self.helps[name], limit)))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def short_help(text: str, limit: int) -> str:
    """A help text cut as click cuts a command's short help."""
    return click.Command(None, help=text).get_short_help_str(limit)
