"""What every command shares: the --db and --json options, one-line refusals (exit 2),
amounts, dates and tables. Light on purpose: the root imports it for every command."""

from __future__ import annotations

import json
import re
import shutil
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, tzinfo
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click

from cocharge.hours import RuleError
from cocharge.settlement.money import MoneyError, parse_cny

T = TypeVar("T")


db_option = click.option("--db", envvar="COCHARGE_DB", default=None,
                         help="Database URL or SQLite file (env COCHARGE_DB, default ./cocharge.db).")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def cny_to_fen(text: str, option: str) -> int:
    """A CNY amount typed by an operator, exactly, in fen (exit 2 if it is not one)."""

    try:
        return parse_cny(text, option)
    except MoneyError as exc:
        fail(str(exc))
        raise


# How times are printed: in the platform's time zone with its offset (`[gateway] time_zone`,
# default Asia/Shanghai: 2026-12-04T19:00:00+08:00), or with `cocharge --utc` in UTC
# (2026-12-04T11:00:00Z) for scripts. The database's times are naive UTC.
_shown: dict[str, Any] = {"zone": ZoneInfo("Asia/Shanghai"), "utc": False}
_ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|\+00:00)$")


def show_times(zone: tzinfo, utc: bool) -> None:
    _shown["zone"], _shown["utc"] = zone, utc


def shown_time(value: datetime, timespec: str = "seconds") -> str:
    """A time as the CLI prints it (see `show_times`)."""
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if _shown["utc"]:
        return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
    return moment.astimezone(_shown["zone"]).isoformat(timespec=timespec)


def shown(value: Any) -> Any:
    """`value` with every time in it as the CLI prints times: datetimes, and the ISO texts
    in UTC that the read models give (`...Z`); through lists and dicts."""
    if isinstance(value, datetime):
        return shown_time(value)
    if isinstance(value, str) and _ISO_Z.match(value):
        try:
            return shown_time(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shown(v) for v in value]
    return value


def fit(widths: list[int], room: int, floor: int = 6) -> list[int]:
    """Column widths that fit `room` characters (two spaces between columns): the widest
    column gives way first, none below `floor` (or its own width, if narrower)."""
    fitted = list(widths)
    while sum(fitted) + 2 * (len(fitted) - 1) > room:
        widest = max(range(len(fitted)), key=lambda i: fitted[i])
        if fitted[widest] <= floor:
            break  # as narrow as it goes: the terminal wraps the rest
        fitted[widest] -= 1
    return fitted


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows as aligned columns; on a terminal, fitted to its width (a cut cell ends in '…');
    piped (scripts, grep), every cell in full."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[("" if r.get(c) is None else str(shown(r.get(c)))) for c in columns]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    if sys.stdout.isatty():
        widths = fit(widths, shutil.get_terminal_size().columns)

    def cell(text: str, width: int) -> str:
        return (text if len(text) <= width else text[:width - 1] + "…").ljust(width)

    click.echo("  ".join(cell(c.upper(), w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(cell(v, w) for v, w in zip(row, widths, strict=True)).rstrip())


def emit(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(shown(data), indent=2, default=str))
    elif columns is not None:
        table(data, columns)
    else:
        for key, value in data.items():
            click.echo(f"{key:>16}: {shown(value)}")


def payment_ref(ref: str | None, kind: str) -> str:
    """The payment reference of a top-up or purchase: the operator's, or a new one printed
    so that a retry (`--ref` it) cannot book the money twice."""
    if ref is not None:
        if not ref.strip() or len(ref) > 64:
            fail(f"--ref {ref!r}: give the payment's reference (1 to 64 characters)")
        return ref

    made = f"{kind}-{datetime.now().strftime('%Y%m%d')}-{uuid.uuid4().hex[:10]}"
    click.echo(f"no --ref given: this {kind} is {made} (to retry it, give --ref {made}: it is "
               "then applied once)", err=True)
    return made


def money_error(func: Callable[[], T]) -> T:
    try:
        return func()
    except MoneyError as exc:
        fail(str(exc))
        raise


def rule_error(func: Callable[[], T]) -> T:
    try:
        return func()
    except RuleError as exc:
        fail(str(exc))
        raise  # unreachable


def day_time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r}: write YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")
        raise


def day_date(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r}: write a date as YYYY-MM-DD")
        raise


# Ids are 64-bit in the database; a larger number is refused as a bad option, not a crash.
ID = click.IntRange(1, 2**63 - 1)
ID0 = click.IntRange(0, 2**63 - 1)


class FiniteRange(click.FloatRange):
    """A FloatRange that refuses NaN and infinity (they pass every comparison's `not`)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        number = super().convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
