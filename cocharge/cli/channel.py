"""Reaching the running gateway: the operator channel (`cocharge remote ...`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from cocharge.cli.common import (
    db_option,
    fail,
    json_option,
)
from cocharge.cli.database import with_store
from cocharge.gateway.operator_client import OperatorError, send_request
from cocharge.store.audit import cli_actor

# --- remote ---------------------------------------------------------------------------------

def remote_call(db: str | None, station_id: str, command: str, args: dict[str, Any],
                as_json: bool, expires: float | None = None) -> None:
    by, origin = cli_actor()
    request: dict[str, Any] = {"command": command, "station": station_id, "args": args,
                               "by": by, "from": origin}
    if expires is not None:
        request["expires_s"] = expires

    async def work(engine: Any) -> dict[str, Any]:
        return await send_request(engine, request)

    try:
        answer = with_store(db, work)
    except OperatorError as exc:
        fail(str(exc), 3)
        return
    if not answer.get("ok"):
        fail(answer.get("message", "failed"), 2 if answer.get("error") == "bad_request" else 4)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    elif answer.get("queued"):
        click.echo(f"{station_id}: queued (station offline; command {answer['command_id']} is "
                   "delivered at its next boot: see `cocharge commands list`)")
    elif answer.get("status") == "Scheduled" and command == "availability":
        click.echo(f"{station_id}: Scheduled (a session is running: the station makes the change "
                   "when it ends; `cocharge station show` shows the connector then)")
    else:
        click.echo(f"{station_id}: {answer['status']}")
        extra = {k: v for k, v in answer.get("response", {}).items() if k != "status"}
        if extra:
            click.echo(json.dumps(extra, indent=2))
    if not answer.get("accepted"):
        sys.exit(4)


def parse_duration(text: str) -> float:
    """`90`, `90s`, `30m`, `1h`, `2d` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    factor = units.get(value[-1:], 0)
    try:
        seconds = float(value[:-1] if factor else value) * (factor or 1)
    except ValueError:
        seconds = -1
    if not 0 < seconds <= 30 * 86400:  # NaN and inf fail too
        raise click.BadParameter(f"{text!r} is not a duration up to 30 days: write 90s, 30m, "
                                 "1h or 2d")
    return seconds


expires_option = click.option(
    "--expires", "expires", default=None, callback=lambda _c, _p, v: parse_duration(v) if v else None,
    help="If the station is offline, keep the command this long (default 1h) and deliver it "
         "at its next boot.")


def remote_command(name: str, help_text: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A `cocharge remote NAME STATION_ID` command with the options every remote command has
    (--db, --json, --expires); `remote.py` lists where each one lives."""
    def wrap(func: Callable[..., Any]) -> click.Command:
        func = expires_option(json_option(db_option(click.argument("station_id")(func))))
        return click.command(name, help=help_text)(func)
    return wrap
