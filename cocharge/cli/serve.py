"""`cocharge serve`: a gateway node with its operator channel, API and console."""


from __future__ import annotations

import dataclasses
import ssl
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from click.core import ParameterSource
from sqlalchemy.exc import SQLAlchemyError

from cocharge.cli.common import (
    FiniteRange,
    db_option,
    fail,
)
from cocharge.config import GatewaySettings
from cocharge.gateway import proxy
from cocharge.gateway.quirks import QuirkError, load_quirks
from cocharge.gateway.server import client_cas, tls_context
from cocharge.mqtt_url import parse_mqtt_url
from cocharge.settlement.checkpoints import CheckpointError, load_or_create_key
from cocharge.stations import ca
from cocharge.store.db import (
    DatabaseURLError,
    StoreError,
    describe_error,
    resolve_url,
)


async def _opened(_engine: Any) -> None:
    """Nothing more to do once the database is open (created or checked by with_store)."""
from cocharge.node import run_event_loop, run_workers, serve_forever

# The options of `serve` that are gateway settings: option -> GatewaySettings field.
SERVE_SETTINGS = {
    "host": "host", "port": "port", "auto_register": "auto_register",
    "operator_host": "operator_host", "operator_port": "operator_port",
    "heartbeat_interval": "heartbeat_interval_s", "call_timeout": "call_timeout_s",
    "mqtt_url": "mqtt_url", "max_handshakes": "max_handshakes", "quirks_file": "quirks_file",
    "require_password": "require_password", "allow_takeover": "allow_takeover",
    "upload_port": "upload_port", "upload_url": "upload_url", "tls_port": "tls_port",
    "tls_url": "tls_url", "ca_dir": "ca_dir", "client_ca_file": "client_ca_file",
    "metrics_port": "metrics_port", "api_host": "api_host", "api_port": "api_port",
    "ledger_key": "ledger_key_file",
}

@click.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=9000, show_default=True, type=click.IntRange(0, 65535))
@db_option
@click.option("--auto-register", is_flag=True, help="Admit unknown stations as Pending until approved.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate (wss://).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")
@click.option("--tls-rsa-cert", type=click.Path(exists=True, dir_okay=False),
              help="A second (RSA) certificate beside an ECDSA --tls-cert: OCPP's TLS_RSA "
                   "suites need it (`cocharge ca server-cert` makes both).")
@click.option("--tls-rsa-key", type=click.Path(exists=True, dir_okay=False),
              help="Its private key.")
@click.option("--operator-host", default="127.0.0.1", show_default=True)
@click.option("--operator-port", default=9001, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the operator channel used by `cocharge remote`.")
@click.option("--heartbeat-interval", default=300, show_default=True, type=click.IntRange(10, 86400))
@click.option("--call-timeout", default=30.0, show_default=True, type=FiniteRange(1, 600))
@click.option("--mqtt", "mqtt_url", envvar="COCHARGE_MQTT",
              help="Broker for property backends: mqtt://[user:pass@]host[:port][/prefix] "
                   "(env COCHARGE_MQTT; docs/mqtt.md).")
@click.option("--max-handshakes", default=GatewaySettings.max_handshakes, show_default=True,
              type=click.IntRange(1, 1_000_000),
              help="Handshakes in progress beyond which a station gets 503 + Retry-After.")
@click.option("--quirks", "quirks_file", type=click.Path(dir_okay=False),
              help="TOML file of chargers' known deviations to normalise (docs/ocpp-errors.md).")
@click.option("--require-password", is_flag=True,
              help="Refuse stations that have no password (otherwise: a warning at start).")
@click.option("--allow-takeover", is_flag=True,
              help="Let a new connection replace a live one of a station without a password.")
@click.option("--upload-port", default=GatewaySettings.upload_port, show_default=True,
              type=click.IntRange(0, 65535), help="Where stations upload diagnostics and logs.")
@click.option("--upload-url", help="The upload endpoint's address as stations reach it, e.g. "
              "http://gw.example.com:9002 (default: the host they connected to).")
@click.option("--tls-port", type=click.IntRange(0, 65535),
              help="Serve wss:// on this port beside plain ws:// on --port (stations move "
                   "between security profiles 1, 2 and 3); needs --tls-cert/--tls-key.")
@click.option("--tls-url", help="The wss:// URL stations moved to profile 2 or 3 are given "
              "(default: the host they connected to, the TLS port, their path).")
@click.option("--ca-dir", envvar="COCHARGE_CA_DIR", type=click.Path(file_okay=False),
              help="The operator's CA (`cocharge ca init`): signs the stations' certificates; "
                   "its client certificates are accepted (security profile 3). Env "
                   "COCHARGE_CA_DIR.")
@click.option("--client-ca", "client_ca_file", type=click.Path(exists=True, dir_okay=False),
              help="More CA certificates (PEM) whose client certificates are accepted.")
@click.option("--ledger-key", envvar="COCHARGE_LEDGER_KEY", type=click.Path(dir_okay=False),
              help="Sign ledger checkpoints with this Ed25519 key (made on first use; keep it "
                   "outside the database): hourly and every 1000 transfers, to the database, "
                   "KEY.checkpoints.jsonl and MQTT (docs/settlement.md).")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve GET /metrics (Prometheus) and /healthz on --operator-host at this "
                   "port (default: off).")
@click.option("--api-host", default=GatewaySettings.api_host, show_default=True,
              help="Address of the HTTP API and web console.")
@click.option("--api-port", default=GatewaySettings.api_port, show_default=True,
              type=click.IntRange(0, 65535),
              help="Port of the HTTP API (/api/docs) and web console (/console/).")
@click.option("--no-api", is_flag=True, help="Serve no HTTP API or console on this node.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Gateway processes on this machine, sharing the OCPP port (each a node; "
                   "PostgreSQL only: SQLite keeps one process). The first serves the API, "
                   "console and metrics.")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True,
              envvar="COCHARGE_TRUSTED_PROXIES",
              help="A load balancer or reverse proxy (address or network, repeatable) whose "
                   "PROXY header or X-Forwarded-For names the charger's address (env "
                   "COCHARGE_TRUSTED_PROXIES, space-separated; docs/operations.md "
                   "\"Several nodes\").")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, db: str | None, auto_register: bool,
          tls_cert: str | None, tls_key: str | None, tls_rsa_cert: str | None,
          tls_rsa_key: str | None, operator_host: str, operator_port: int,
          heartbeat_interval: int, call_timeout: float, mqtt_url: str | None,
          max_handshakes: int, quirks_file: str | None, require_password: bool,
          allow_takeover: bool, upload_port: int, upload_url: str | None,
          tls_port: int | None, tls_url: str | None, ca_dir: str | None,
          client_ca_file: str | None, ledger_key: str | None, metrics_port: int | None,
          api_host: str, api_port: int | None, no_api: bool,
          workers: int, trusted_proxies: tuple[str, ...]) -> None:
    """Run the OCPP 1.6J, 2.0.1 and 2.1 central system (its other settings: --config FILE)."""
    # An option not given takes the configuration file's value (then its default).
    config = ctx.find_root().obj
    given = dict(ctx.params)
    for param, field_name in SERVE_SETTINGS.items():
        if ctx.get_parameter_source(param) is ParameterSource.DEFAULT:
            given[param] = getattr(config.gateway, field_name)
    for param in ("tls_cert", "tls_key", "tls_rsa_cert", "tls_rsa_key"):
        if given[param] is None and config.serve.get(param):
            given[param] = config.serve[param]
    # The values the checks below look at, as in force.
    (auto_register, tls_cert, tls_key, mqtt_url, quirks_file, require_password, upload_url,
     tls_port, tls_url, ca_dir, client_ca_file) = (
        given[p] for p in ("auto_register", "tls_cert", "tls_key", "mqtt_url", "quirks_file",
                           "require_password", "upload_url", "tls_port", "tls_url", "ca_dir",
                           "client_ca_file"))

    if upload_url is not None and not upload_url.startswith(("http://", "https://")):
        fail(f"--upload-url {upload_url!r}: give an http:// or https:// URL")
    if require_password and auto_register:
        fail("--auto-register admits unknown stations without a password: it cannot go "
             "with --require-password")
    if bool(tls_cert) != bool(tls_key):
        fail("--tls-cert and --tls-key go together: give both for TLS, or neither")
    tls_rsa_cert, tls_rsa_key = given["tls_rsa_cert"], given["tls_rsa_key"]
    if bool(tls_rsa_cert) != bool(tls_rsa_key):
        fail("--tls-rsa-cert and --tls-rsa-key go together: give both, or neither")
    if tls_rsa_cert and not tls_cert:
        fail("--tls-rsa-cert goes beside --tls-cert (ECDSA): give --tls-cert and --tls-key")
    if tls_port is not None and not tls_cert:
        fail("--tls-port serves wss://: give --tls-cert and --tls-key with it")
    if tls_url is not None and not tls_url.startswith("wss://"):
        fail(f"--tls-url {tls_url!r}: give a wss:// URL")
    if (ca_dir or client_ca_file) and not tls_cert:
        fail("client certificates (--ca-dir, --client-ca) need TLS: give --tls-cert and "
             "--tls-key")
    if mqtt_url:
        try:
            parse_mqtt_url(mqtt_url)
        except ValueError as exc:
            fail(str(exc))
    try:
        load_quirks(quirks_file)
    except QuirkError as exc:
        fail(str(exc))
    if given["ledger_key"]:
        try:  # a key that cannot be read is said now, in one line, not by the running node
            load_or_create_key(given["ledger_key"])
        except (CheckpointError, OSError) as exc:
            fail(f"--ledger-key: {exc}")
    settings = dataclasses.replace(config.gateway, **{
        field_name: given[param] for param, field_name in SERVE_SETTINGS.items()})
    if no_api:
        settings = dataclasses.replace(settings, api_port=None)
    if trusted_proxies:
        settings = dataclasses.replace(settings, trusted_proxies=",".join(trusted_proxies))
    try:
        proxy.parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        fail(str(exc))
    try:
        ZoneInfo(settings.time_zone)
    except (ValueError, ZoneInfoNotFoundError):
        fail(f"time_zone {settings.time_zone!r} is not a time zone: write e.g. Asia/Shanghai")
    from cocharge.stations.display import LANGUAGES
    if settings.display_language not in LANGUAGES:
        fail(f"display_language {settings.display_language!r}: one of {', '.join(LANGUAGES)}")
    try:
        tls = tls_context(tls_cert, tls_key, client_cas(settings),
                          (tls_rsa_cert, tls_rsa_key) if tls_rsa_cert and tls_rsa_key else None
                          ) if tls_cert and tls_key else None
    except ca.CAError as exc:
        fail(str(exc))
        raise
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot use the TLS files: {exc}")
        raise
    if workers > 1 and not resolve_url(db).startswith("postgresql"):
        fail(f"--workers {workers} needs PostgreSQL (--db postgresql://...): SQLite keeps one "
             "process, one writer")
    try:
        if workers > 1:
            if run_workers(workers, db, settings, tls) != 0:
                fail("a worker could not start (see its error above): nothing is served")
            return
        run_event_loop(serve_forever(db, settings, tls))
    except (DatabaseURLError, StoreError) as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(describe_error(exc, db))
    except OSError as exc:
        fail(f"cannot listen: {exc}")
