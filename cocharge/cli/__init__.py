"""The `cocharge` command: this root only assembles the groups, which live one module per
domain beside it and are imported when one of their commands runs (`lazy.py`).

Exit codes: 0 ok; 2 bad arguments or a request that cannot apply (nothing written);
3 the running gateway is unreachable; 4 the station refused, is offline or did not answer.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from cocharge import __version__, configfile
from cocharge.cli.common import fail, show_times
from cocharge.cli.lazy import LazyGroup
from cocharge.logs import configure_logging
from cocharge.settlement.money import set_input_limit

# Every command of the root: name -> (where it lives, its one-line help for `--help`).
COMMANDS = {
    'apikey': ('cocharge.cli.security:apikey',
                'Keys of the HTTP API and the web console (docs/api.md).'),
    'audit': ('cocharge.cli.ops:audit_cmd',
                'Who did what: commands sent to stations and money operations, newest first.'),
    'booking': ('cocharge.cli.sharing:booking',
                'Bookings: a member reserves a connector for a time slot.'),
    'ca': ('cocharge.cli.security:ca_group',
                "The operator's certificate authority: signs the stations' client certificates (security profile 3) and the gateway's server certificate."),
    'calc': ('cocharge.cli.calc:calc',
                'Calculators for would-be hosts.'),
    'circuit': ('cocharge.cli.load:circuit_group',
                'Circuits of a site: limits per phase, the other load on them.'),
    'commands': ('cocharge.cli.sharing:commands',
                'Commands kept for offline stations.'),
    'config': ('cocharge.cli.ops:config_group',
                'The configuration file (--config FILE, env COCHARGE_CONFIG; docs/config.md).'),
    'db': ('cocharge.cli.ops:db_group',
                'The database: create, inspect, upgrade, back up.'),
    'dispute': ('cocharge.cli.money:dispute',
                'Disputes over a bill or a transfer: opened by a member or payee, resolved by an operator with a correction (never an edit) or rejected.'),
    'demo': ('cocharge.cli.sims:demo',
                'A gateway, simulated wallboxes (both protocols) and real sessions, then a report.'),
    'firmware': ('cocharge.cli.firmware:firmware_group',
                'Firmware images and campaigns (docs/operations.md).'),
    'green': ('cocharge.cli.rewards:green',
                'Green-energy certificates.'),
    'group': ('cocharge.cli.sharing:group',
                'Group charging (拼团): members share a slot once enough of them join.'),
    'ledger': ('cocharge.cli.money:ledger_group',
                'The double-entry, hash-chained ledger.'),
    'logs': ('cocharge.cli.sessions:logs',
                "A station's OCPP log (`cocharge logs STATION [--follow] [--since]`), and the diagnostics and log files stations uploaded (`list`, `save`)."),
    'member': ('cocharge.cli.stations:member',
                'Members and their idTags.'),
    'membership': ('cocharge.cli.payouts:membership',
                'Membership levels with a start and an end: OEM activation by VIN, or a purchase.'),
    'mqtt': ('cocharge.cli.ops:mqtt',
                'The MQTT side: property backends (docs/mqtt.md).'),
    'payout': ('cocharge.cli.payouts:payout',
                'Pay hosts, properties and operators: payee details, runs, payment files, confirmations.'),
    'points': ('cocharge.cli.rewards:points',
                'Green points (purchases released day by day) and pool-backed points.'),
    'remote': ('cocharge.cli.remote:remote',
                'Commands to a connected station, through the running gateway (same --db).'),
    'rewards': ('cocharge.cli.rewards:rewards',
                'The reward rule table and events reported from outside (posts, likes, answers).'),
    'serve': ('cocharge.cli.serve:serve',
                'Run the OCPP 1.6J, 2.0.1 and 2.1 central system (its other settings: --config FILE).'),
    'sessions': ('cocharge.cli.sessions:sessions',
                'Charging sessions.'),
    'settle': ('cocharge.cli.money:settle',
                'Settle every completed session not settled yet (safe to run again).'),
    'sim': ('cocharge.cli.sims:sim',
                'Virtual wallboxes and EVs.'),
    'site': ('cocharge.cli.load:site_group',
                'Sites: one supply (a garage, a home) shared by its chargers, as a tree of circuits.'),
    'split': ('cocharge.cli.money:split',
                'Revenue-share terms of a station.'),
    'statement': ('cocharge.cli.payouts:statement_cmd',
                "A host's or property's monthly statement: sessions, kWh, gross, discounts, commission, net, payouts, balance and a tax estimate. brand:NAME: what a carmaker's members used of the free quota its OEM membership gives (the invoice to the brand)."),
    'station': ('cocharge.cli.stations:station',
                'Register and inspect charging stations.'),
    'tariff': ('cocharge.cli.money:tariff',
                'Connector tariffs (costed like OCPI 2.2.1 CDRs); a session keeps the tariff it started with.'),
    'wallet': ('cocharge.cli.money:wallet',
                "Members' prepaid wallets."),
}


class _Cli(LazyGroup):
    """The `cocharge` group: a usage error (a missing argument, a value out of range, an
    unknown option) is one line naming the fix, exit 2, like every other refusal."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                click.echo(exc.format_message())  # `cocharge station` alone: its help
                sys.exit(2)
            where = exc.ctx.command_path if exc.ctx is not None else "cocharge"
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)


@click.group(cls=_Cli, lazy={name: where for name, (where, _) in COMMANDS.items()},
             helps={name: text for name, (_, text) in COMMANDS.items()})
@click.version_option(__version__, prog_name="cocharge",
                      message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                                               case_sensitive=False),
              help="Logging level (default: info for `serve`: connects, disconnects, boots, "
                   "errors; warning for the other commands).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object per line (for a log collector).")
@click.option("--log-file", type=click.Path(dir_okay=False),
              help="Append the log to this file (reopened when logrotate moves it) instead of "
                   "stderr.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML configuration file (env COCHARGE_CONFIG; docs/config.md).")
@click.option("--utc", is_flag=True,
              help="Print times in UTC (2026-12-04T11:00:00Z), for scripts; by default they "
                   "are the platform's local time with its offset ([gateway] time_zone).")
@click.pass_context
def main(ctx: click.Context, verbose: int, log_level: str | None, log_format: str,
         log_file: str | None, config_file: str | None, utc: bool) -> None:
    """cocharge: OCPP central system for shared EV charging."""
    try:
        config = configfile.load(config_file)
    except configfile.ConfigError as exc:
        fail(str(exc))
        raise
    ctx.obj = config
    # The file's database and broker stand where their environment variables would: an
    # option or the variable itself still wins.
    for name, value in (("COCHARGE_DB", config.db), ("COCHARGE_MQTT", config.mqtt)):
        if value and not os.environ.get(name):
            os.environ[name] = value
    set_input_limit(int(config.cli["max_amount_cny"]))
    zone_name = str(getattr(config.gateway, "time_zone", "Asia/Shanghai"))
    try:
        show_times(ZoneInfo(zone_name), utc)
    except (ValueError, ZoneInfoNotFoundError):
        fail(f"time_zone {zone_name!r} is not a time zone: write e.g. Asia/Shanghai")

    if log_level is not None:
        level = getattr(logging, log_level.upper())
    elif verbose:
        level = logging.WARNING - 10 * min(verbose, 2)
    else:
        level = logging.INFO if ctx.invoked_subcommand == "serve" else logging.WARNING
    try:
        configure_logging(level, log_format, log_file)
    except OSError as exc:
        fail(f"--log-file {log_file}: {exc.strerror or exc}")

