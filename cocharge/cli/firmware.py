"""Firmware files and campaigns."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from cocharge.cli.common import (
    ID,
    db_option,
    emit,
    fail,
    json_option,
)
from cocharge.cli.database import with_store
from cocharge.stations import firmware

# --- firmware -------------------------------------------------------------------------------

def _read_text(path: str | None, option: str) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{option}: cannot read {path} ({exc})")
        return None


def signature_args(signature: str | None, certificate: str | None) -> tuple[str | None, str | None]:
    """--signature (base64, or a file holding it) and --signing-certificate (a PEM file)."""
    if (signature is None) != (certificate is None):
        fail("a signed image needs both --signature and --signing-certificate")
    if signature is not None and os.path.isfile(signature):
        signature = _read_text(signature, "--signature")
    return signature, _read_text(certificate, "--signing-certificate")


signature_options = [
    click.option("--signature", help="Base64 signature of the image (or a file holding it): "
                 "1.6 stations get SignedUpdateFirmware, 2.0.1 stations the signed form."),
    click.option("--signing-certificate", "signing_certificate",
                 type=click.Path(exists=True, dir_okay=False),
                 help="PEM certificate whose key made --signature."),
]


def with_options(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def wrap(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func
    return wrap



@click.group("firmware")
def firmware_group() -> None:
    """Firmware images and campaigns (docs/operations.md)."""


@firmware_group.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--version", "version", required=True, help="The version stations report after it.")
@with_options(signature_options)
@db_option
def firmware_add(path: str, version: str, signature: str | None,
                 signing_certificate: str | None, db: str | None) -> None:
    """Store a firmware image; the gateway serves it to stations itself. A signed image
    (--signature, --signing-certificate) is checked here, and sent to stations signed."""

    signature, certificate = signature_args(signature, signing_certificate)
    with open(path, "rb") as handle:
        content = handle.read()
    file_id = with_store(db, lambda e: firmware.add_file(e, os.path.basename(path), version,
                                                         content, signature, certificate))
    click.echo(f"firmware file {file_id}: {os.path.basename(path)} {version}, "
               f"{len(content)} bytes{', signed' if signature else ''}")


@firmware_group.command("campaign")
@click.option("--file", "file_id", type=ID, help="A file of `cocharge firmware add`.")
@click.option("--url", help="Or where stations download it (http, https or ftp).")
@click.option("--version", "version", required=True, help="The version stations report after it.")
@click.option("--vendor", help="Stations of this vendor (glob, e.g. 'Acme*').")
@click.option("--model", help="Stations of this model (glob).")
@click.option("--from-firmware", help="Stations running this firmware now (glob).")
@click.option("--station", "station_ids", multiple=True, help="These stations (repeatable).")
@click.option("--at-once", default=5, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--retries", default=1, show_default=True, type=click.IntRange(0, 10))
@with_options(signature_options)
@db_option
def firmware_campaign(file_id: int | None, url: str | None, version: str, vendor: str | None,
                      model: str | None, from_firmware: str | None,
                      station_ids: tuple[str, ...], at_once: int, retries: int,
                      signature: str | None, signing_certificate: str | None,
                      db: str | None) -> None:
    """Roll a firmware version out; the running gateway updates `--at-once` stations at a time.
    A signed image (a signed `firmware add` file, or --url with --signature) goes to 1.6
    stations as SignedUpdateFirmware."""

    signature, certificate = signature_args(signature, signing_certificate)
    selection = firmware.Selection(vendor, model, from_firmware, station_ids)
    campaign_id, count = with_store(db, lambda e: firmware.create_campaign(
        e, version, file_id, url, selection, at_once, retries, signature, certificate))
    click.echo(f"firmware campaign {campaign_id}: {count} station(s) to {version}, "
               f"{at_once} at a time (`cocharge firmware status {campaign_id}`)")


@firmware_group.command("status")
@click.argument("campaign_id", type=ID, required=False)
@db_option
@json_option
def firmware_status(campaign_id: int | None, db: str | None, as_json: bool) -> None:
    """A campaign's progress per station (the latest campaign by default)."""

    shown = with_store(db, lambda e: firmware.campaign_status(e, campaign_id))
    if as_json:
        emit(shown, True)
        return
    counts = ", ".join(f"{v} {k}" for k, v in sorted(shown["counts"].items()))
    click.echo(f"campaign {shown['id']} to {shown['version']}: {shown['status']} ({counts})")
    emit(shown["targets"], False, ["station", "status", "attempts", "detail", "updated_at"])
