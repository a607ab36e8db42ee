"""Commands to a connected station through the running gateway: `remote ...`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from cocharge.cli.channel import remote_call, remote_command
from cocharge.cli.common import (
    ID,
    ID0,
    FiniteRange,
    cny_to_fen,
    fail,
)
from cocharge.cli.firmware import signature_args, signature_options, with_options
from cocharge.cli.lazy import LazyGroup
from cocharge.settlement.funds import CARD_PREFIX
from cocharge.stations.commands import ENERGY_TRANSFER_MODES


# Each command is a `remote_command` (channel.py); those of other domains are listed here.
@click.group(cls=LazyGroup, lazy={
    "certificate-signed": "cocharge.cli.security:remote_certificate_signed",
    "delete-certificate": "cocharge.cli.security:remote_delete_certificate",
    "extended-trigger-message": "cocharge.cli.security:remote_extended_trigger",
    "get-installed-certificate-ids": "cocharge.cli.security:remote_get_installed_certificate_ids",
    "install-certificate": "cocharge.cli.security:remote_install_certificate",
    "set-charging-profile": "cocharge.cli.load:remote_set_charging_profile",
    "update-dynamic-schedule": "cocharge.cli.load:remote_update_dynamic_schedule",
    "clear-charging-profile": "cocharge.cli.load:remote_clear_charging_profile",
    "get-composite-schedule": "cocharge.cli.load:remote_get_composite_schedule",
    "get-charging-profiles": "cocharge.cli.load:remote_get_charging_profiles",
})
def remote() -> None:
    """Commands to a connected station, through the running gateway (same --db)."""


def _remote(name: str, help_text: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A remote command of this module, on the `remote` group."""
    def wrap(func: Callable[..., Any]) -> click.Command:
        command = remote_command(name, help_text)(func)
        remote.add_command(command)
        return command
    return wrap


@_remote("start", "Remote start: RemoteStartTransaction (1.6) / RequestStartTransaction (2.0.1).\n\n"
         "With --budget, --energy-kwh or --quota-only the session stops itself at that limit "
         "(a TxProfile makes the charger stop even if it loses its connection).")
@click.option("--tag", help="The member's tag.")
@click.option("--payment", "payment_ref",
              help="Or 2.1: the reference of a payment the driver made on the page of the "
                   "charger's QR code (no account; give --budget, the amount authorised; "
                   "book what was captured with `cocharge sessions paid`).")
@click.option("--connector", type=click.IntRange(1, 64))
@click.option("--budget", help="Prepaid budget in CNY, e.g. 20 or 12.50.")
@click.option("--energy-kwh", type=FiniteRange(0.001, 1000), help="Stop after this energy.")
@click.option("--quota-only", is_flag=True, help="Stop when the member's free quota is used up.")
def remote_start(station_id: str, tag: str | None, payment_ref: str | None,
                 connector: int | None, budget: str | None, energy_kwh: float | None,
                 quota_only: bool, db: str | None, as_json: bool,
                 expires: float | None) -> None:
    if (tag is None) == (payment_ref is None):
        fail("give --tag (a member) or --payment REF (paid on the charger's payment page), one")
    if payment_ref is not None:
        if budget is None:
            fail("--payment needs --budget: the amount the payment authorised")
        if not 1 <= len(payment_ref) <= 36 or not payment_ref.isprintable():
            fail("--payment: the payment's reference, 1 to 36 printable characters")
        tag = CARD_PREFIX + payment_ref
    args: dict[str, Any] = {"tag": tag, "connector_id": connector}
    if budget is not None:
        args["budget_fen"] = cny_to_fen(budget, "--budget")
    if energy_kwh is not None:
        args["energy_wh"] = round(energy_kwh * 1000)
    if quota_only:
        args["quota_only"] = True
    remote_call(db, station_id, "start", args, as_json, expires)


@_remote("stop", "Remote stop of a session (its id in `cocharge sessions list`).")
@click.option("--session", "session_id", required=True, type=ID)
def remote_stop(station_id: str, session_id: int, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "stop", {"session_id": session_id}, as_json, expires)


@_remote("unlock", "Unlock a connector.")
@click.option("--connector", required=True, type=click.IntRange(1, 64))
def remote_unlock(station_id: str, connector: int, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "unlock", {"connector_id": connector}, as_json, expires)


@_remote("availability", "Set a connector (0 = whole station) operative or inoperative.")
@click.option("--connector", default=0, show_default=True, type=click.IntRange(0, 64))
@click.option("--evse-connector", type=click.IntRange(1, 64),
              help="2.0.1: one connector of the EVSE --connector names.")
@click.argument("state", type=click.Choice(["operative", "inoperative"]))
def remote_availability(station_id: str, connector: int, evse_connector: int | None, state: str,
                        db: str | None, as_json: bool, expires: float | None) -> None:
    if evse_connector is not None and connector == 0:
        fail("--evse-connector needs --connector N (the EVSE)")
    args: dict[str, Any] = {"connector_id": connector, "operative": state == "operative"}
    if evse_connector is not None:
        args["evse_connector"] = evse_connector
    remote_call(db, station_id, "availability", args, as_json, expires)


@_remote("reset", "Soft (default) or hard reset; 2.0.1 can reset one EVSE (--evse).")
@click.option("--hard", is_flag=True)
@click.option("--evse", type=click.IntRange(1, 64), help="2.0.1: only this EVSE.")
def remote_reset(station_id: str, hard: bool, evse: int | None, db: str | None, as_json: bool,
        expires: float | None) -> None:
    args: dict[str, Any] = {"hard": hard}
    if evse is not None:
        args["evse_id"] = evse
    remote_call(db, station_id, "reset", args, as_json, expires)


@_remote("trigger", "Ask the station to send a message now (e.g. Heartbeat, StatusNotification).")
@click.argument("message")
@click.option("--connector", type=click.IntRange(1, 64))
def remote_trigger(station_id: str, message: str, connector: int | None, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "trigger", {"message": message, "connector_id": connector}, as_json, expires)


@_remote("call", "Any call of the station's OCPP version: ACTION and its JSON payload, checked "
         "against the version's schema before it is sent; the answer is printed as JSON.\n\n"
         "Example: cocharge remote call CP1 GetLocalListVersion '{}'")
@click.argument("action")
@click.argument("payload", default="{}")
def remote_raw_call(station_id: str, action: str, payload: str, db: str | None, as_json: bool,
                    expires: float | None) -> None:
    try:
        body = json.loads(payload)
    except ValueError as exc:
        fail(f"PAYLOAD is not JSON ({exc}): write it as one argument, e.g. '{{\"type\": \"Soft\"}}'")
    if not isinstance(body, dict):
        fail("PAYLOAD must be a JSON object, e.g. '{}'")
    remote_call(db, station_id, "call", {"action": action, "payload": body}, True, expires)


@_remote("set-variables", "2.0.1: set several Component.Variable=value at once; each gets "
         "its own result, accepted values go into `cocharge station variables`.")
@click.argument("assignments", nargs=-1, required=True)
def remote_set_variables(station_id: str, assignments: tuple[str, ...], db: str | None,
                         as_json: bool, expires: float | None) -> None:
    values = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            fail(f"{item!r}: write Component.Variable=value, e.g. "
                 "OCPPCommCtrlr.HeartbeatInterval=120")
        values[key] = value
    remote_call(db, station_id, "set-variables", {"values": values}, as_json, expires)


@_remote("get-transaction-status", "2.0.1: is the session still running at the station, and "
         "does it hold messages not yet sent?")
@click.option("--session", "session_id", type=ID, help="A session of `cocharge sessions list` "
              "(without: only whether any message is queued).")
def remote_get_transaction_status(station_id: str, session_id: int | None, db: str | None,
                                  as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "get-transaction-status", {"session_id": session_id}, as_json,
                expires)


@_remote("get-base-report", "2.0.1: the station reports its device model; stored as its "
         "inventory (`cocharge station variables ID`).")
@click.option("--report-base", default="FullInventory", show_default=True,
              type=click.Choice(["FullInventory", "ConfigurationInventory", "SummaryInventory"]))
def remote_get_base_report(station_id: str, report_base: str, db: str | None, as_json: bool,
                           expires: float | None) -> None:
    remote_call(db, station_id, "get-base-report", {"report_base": report_base}, as_json,
                expires)


@_remote("get-local-list-version", "The version of the station's local authorization list "
         "(the gateway keeps it in step with the sharing rules: docs/sharing.md).")
def remote_get_local_list_version(station_id: str, db: str | None, as_json: bool,
                                  expires: float | None) -> None:
    remote_call(db, station_id, "get-local-list-version", {}, as_json, expires)


@_remote("get-diagnostics", "1.6: the station uploads its diagnostics file to the gateway "
         "(`cocharge logs list`).")
@click.option("--start", help="Oldest entries wanted (ISO 8601).")
@click.option("--stop", help="Newest entries wanted (ISO 8601).")
def remote_get_diagnostics(station_id: str, start: str | None, stop: str | None,
                           db: str | None, as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "get-diagnostics", {"start": start, "stop": stop}, as_json,
                expires)


@_remote("get-log", "The station uploads a log to the gateway: 2.0.1, or 1.6 with the "
         "security extension (`cocharge logs list`).")
@click.option("--type", "log_type", default="DiagnosticsLog", show_default=True,
              type=click.Choice(["DiagnosticsLog", "SecurityLog"]))
@click.option("--oldest", help="Oldest entries wanted (ISO 8601).")
@click.option("--latest", help="Newest entries wanted (ISO 8601).")
def remote_get_log(station_id: str, log_type: str, oldest: str | None, latest: str | None,
                   db: str | None, as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "get-log", {"log_type": log_type, "oldest": oldest,
                                            "latest": latest}, as_json, expires)


@_remote("update-firmware", "UpdateFirmware to one station now (a fleet: `cocharge firmware "
         "campaign`); its FirmwareStatusNotifications show in `station show` and `station "
         "events --kind firmware`.")
@click.option("--location", help="Where the station downloads the image (http, https, ftp).")
@click.option("--file", "file_id", type=ID, help="Or a file of `cocharge firmware add`, "
              "served by the gateway (its signature, if any, goes with it).")
@click.option("--retries", type=click.IntRange(0, 100), help="Download attempts (OCPP retries).")
@click.option("--retry-interval", type=click.IntRange(0, 86400), help="Seconds between attempts.")
@click.option("--install-at", help="2.0.1: install at this time once downloaded (ISO 8601, "
              "e.g. 2026-12-24T02:00:00Z).")
@with_options(signature_options)
def remote_update_firmware(station_id: str, location: str | None, file_id: int | None,
                           retries: int | None, retry_interval: int | None,
                           install_at: str | None, signature: str | None,
                           signing_certificate: str | None,
                           db: str | None, as_json: bool, expires: float | None) -> None:
    if (location is None) == (file_id is None):
        fail("give the image: --location URL or --file ID (`cocharge firmware add`), one")
    signature, certificate = signature_args(signature, signing_certificate)
    if file_id is not None and signature is not None:
        fail("a stored firmware file carries its signature: give it to `cocharge firmware add`")
    remote_call(db, station_id, "update-firmware", {
        "url": location, "file_id": file_id, "retries": retries, "retry_interval": retry_interval,
        "signature": signature, "signing_certificate": certificate,
        **({"install_at": _checked_time("--install-at", install_at)} if install_at else {})},
        as_json, expires)


@_remote("send-local-list", "Send the station's local authorization list now, in full, as its "
         "sharing rules make it (the gateway otherwise keeps it in step by itself).")
def remote_send_local_list(station_id: str, db: str | None, as_json: bool,
                           expires: float | None) -> None:
    remote_call(db, station_id, "send-local-list", {}, as_json, expires)


@_remote("get-report", "2.0.1: part of the device model (GetReport), stored as the inventory "
         "(`cocharge station variables ID`).")
@click.option("--component-criteria", "criteria", multiple=True,
              type=click.Choice(["Active", "Available", "Enabled", "Problem"]),
              help="Only components in this state (repeatable).")
@click.option("--component-variable", "wanted", multiple=True,
              help="Component or Component.Variable (repeatable), e.g. OCPPCommCtrlr.")
@click.option("--evse", type=click.IntRange(1, 64), help="The components of this EVSE.")
def remote_get_report(station_id: str, criteria: tuple[str, ...], wanted: tuple[str, ...],
                      evse: int | None, db: str | None, as_json: bool,
                      expires: float | None) -> None:
    if evse is not None and not wanted:
        fail("--evse needs --component-variable (the components of that EVSE)")
    remote_call(db, station_id, "get-report", {"component_criteria": list(criteria),
                                               "component_variables": list(wanted),
                                               "evse_id": evse}, as_json, expires)


@_remote("set-network-profile", "2.0.1: store a connection profile in one of the station's "
         "slots (SetNetworkProfile); it takes effect once NetworkConfigurationPriority names "
         "the slot (`remote set-variables ID OCPPCommCtrlr.NetworkConfigurationPriority=...`).")
@click.option("--configuration-slot", required=True, type=click.IntRange(0, 2**31 - 1))
@click.option("--ocpp-csms-url", required=True, help="e.g. wss://csms.example.org/ocpp/")
@click.option("--security-profile", required=True, type=click.IntRange(1, 3),
              help="1: password over ws, 2: password over TLS, 3: TLS client certificate.")
@click.option("--ocpp-interface", default="Wired0", show_default=True,
              type=click.Choice(["Wired0", "Wired1", "Wired2", "Wired3", "Wireless0",
                                 "Wireless1", "Wireless2", "Wireless3"]))
@click.option("--message-timeout", default=30, show_default=True, type=click.IntRange(1, 3600))
@click.option("--ocpp-version", default="OCPP20", show_default=True,
              type=click.Choice(["OCPP12", "OCPP15", "OCPP16", "OCPP20"]))
def remote_set_network_profile(station_id: str, configuration_slot: int, ocpp_csms_url: str,
                               security_profile: int, ocpp_interface: str, message_timeout: int,
                               ocpp_version: str, db: str | None, as_json: bool,
                               expires: float | None) -> None:
    if not ocpp_csms_url.startswith(("ws://", "wss://")):
        fail("--ocpp-csms-url must be a ws:// or wss:// URL")
    if security_profile > 1 and not ocpp_csms_url.startswith("wss://"):
        fail(f"security profile {security_profile} runs over TLS: the URL must be wss://")
    remote_call(db, station_id, "set-network-profile", {
        "configuration_slot": configuration_slot, "ocpp_csms_url": ocpp_csms_url,
        "security_profile": security_profile, "ocpp_interface": ocpp_interface,
        "message_timeout": message_timeout, "ocpp_version": ocpp_version}, as_json, expires)


@_remote("set-variable-monitoring", "2.0.1: a monitor on Component.Variable; the station sends "
         "NotifyEvent when it trips (`station events ID --kind event`). Kept with the id the "
         "station gave: `cocharge station monitors ID`.")
@click.argument("variable")
@click.option("--type", "monitor_type", required=True,
              type=click.Choice(["UpperThreshold", "LowerThreshold", "Delta", "Periodic",
                                 "PeriodicClockAligned"]))
@click.option("--value", required=True, type=float,
              help="Threshold, delta, or period in seconds.")
@click.option("--severity", default=5, show_default=True, type=click.IntRange(0, 9),
              help="0 Danger … 9 Debug.")
@click.option("--evse", type=click.IntRange(1, 64), help="The component of this EVSE.")
@click.option("--transaction", is_flag=True, help="Only during a transaction.")
@click.option("--id", "monitor_id", type=ID0, help="Replace this monitor.")
@click.option("--also", multiple=True, help="More monitors in the same request "
              "(repeatable): Component.Variable:Type:Value[:severity[:evse]].")
@click.option("--stream-interval", type=click.IntRange(0, 2**31 - 1),
              help="2.1: send its values as a periodic event stream, every N seconds.")
@click.option("--stream-values", type=click.IntRange(0, 2**31 - 1),
              help="2.1: ... this many values at a time.")
def remote_set_variable_monitoring(station_id: str, variable: str, monitor_type: str,
                                   value: float, severity: int, evse: int | None,
                                   transaction: bool, monitor_id: int | None,
                                   also: tuple[str, ...], stream_interval: int | None,
                                   stream_values: int | None,
                                   db: str | None, as_json: bool,
                                   expires: float | None) -> None:
    if "." not in variable:
        fail(f"{variable!r}: name it Component.Variable, e.g. EVSE.Power")
    stream = {k: v for k, v in (("stream_interval", stream_interval),
                                ("stream_values", stream_values)) if v is not None}
    remote_call(db, station_id, "set-variable-monitoring", {
        "variable": variable, "type": monitor_type, "value": value, "severity": severity,
        "evse_id": evse, "transaction": transaction, "id": monitor_id, **stream,
        **({"also": list(also)} if also else {})}, as_json, expires)


@_remote("set-monitoring-base", "2.0.1: which monitors are active: All, FactoryDefault or "
         "HardWiredOnly (the last two drop the custom ones).")
@click.argument("monitoring_base", type=click.Choice(["All", "FactoryDefault", "HardWiredOnly"]))
def remote_set_monitoring_base(station_id: str, monitoring_base: str, db: str | None,
                               as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "set-monitoring-base", {"monitoring_base": monitoring_base},
                as_json, expires)


@_remote("set-monitoring-level", "2.0.1: report only events of this severity or more severe "
         "(0 Danger … 9 Debug).")
@click.argument("severity", type=click.IntRange(0, 9))
def remote_set_monitoring_level(station_id: str, severity: int, db: str | None, as_json: bool,
                                expires: float | None) -> None:
    remote_call(db, station_id, "set-monitoring-level", {"severity": severity}, as_json, expires)


@_remote("clear-variable-monitoring", "2.0.1: remove monitors by id (`station monitors ID`).")
@click.argument("ids", nargs=-1, required=True, type=ID0)
def remote_clear_variable_monitoring(station_id: str, ids: tuple[int, ...], db: str | None,
                                     as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "clear-variable-monitoring", {"ids": list(ids)}, as_json, expires)


@_remote("get-monitoring-report", "2.0.1: the station reports its monitors; stored "
         "(`cocharge station monitors ID`).")
@click.option("--monitoring-criteria", "criteria", multiple=True,
              type=click.Choice(["ThresholdMonitoring", "DeltaMonitoring", "PeriodicMonitoring"]))
@click.option("--component-variable", "wanted", multiple=True,
              help="Component or Component.Variable (repeatable).")
@click.option("--evse", type=click.IntRange(1, 64), help="The components of this EVSE.")
def remote_get_monitoring_report(station_id: str, criteria: tuple[str, ...],
                                 wanted: tuple[str, ...], evse: int | None, db: str | None,
                                 as_json: bool, expires: float | None) -> None:
    if evse is not None and not wanted:
        fail("--evse needs --component-variable (the components of that EVSE)")
    remote_call(db, station_id, "get-monitoring-report", {
        "monitoring_criteria": list(criteria), "component_variables": list(wanted),
        "evse_id": evse}, as_json, expires)


@_remote("customer-information", "2.0.1: what the station holds about a customer "
         "(NotifyCustomerInformation: `station events ID --kind customer_information`), and "
         "with --clear its deletion there, e.g. when a member leaves.")
@click.option("--member", "tag", help="The member's tag (sent as their idToken).")
@click.option("--customer-identifier", help="Or the customer's identifier at the station.")
@click.option("--certificate", type=click.Path(dir_okay=False),
              help="Or the customer's ISO 15118 contract certificate (PEM file).")
@click.option("--issuer", type=click.Path(dir_okay=False),
              help="With --certificate: its issuer's certificate (PEM; default: itself).")
@click.option("--report/--no-report", default=True, show_default=True)
@click.option("--clear", is_flag=True, help="Delete what the station holds about them.")
def remote_customer_information(station_id: str, tag: str | None,
                                customer_identifier: str | None, certificate: str | None,
                                issuer: str | None, report: bool, clear: bool,
                                db: str | None, as_json: bool, expires: float | None) -> None:
    if sum(x is not None for x in (tag, customer_identifier, certificate)) != 1:
        fail("name the customer: --member TAG, --customer-identifier ID or --certificate "
             "FILE, one")
    if not (report or clear):
        fail("--no-report without --clear asks for nothing: add --clear")
    hashed = None
    if certificate is not None:
        from cocharge.stations.ca import hash_data, load_pem_certificates

        try:
            with open(certificate, "rb") as handle:
                [cert, *_] = load_pem_certificates(handle.read())
            parent = cert
            if issuer is not None:
                with open(issuer, "rb") as handle:
                    [parent, *_] = load_pem_certificates(handle.read())
        except (OSError, ValueError) as exc:
            fail(f"--certificate/--issuer: not a PEM certificate ({exc})")
        hashed = hash_data(cert, parent, "SHA256")
    remote_call(db, station_id, "customer-information", {
        "id_token": tag, "customer_identifier": customer_identifier,
        "customer_certificate": hashed, "report": report, "clear": clear}, as_json, expires)


@_remote("config-get", "Read settings: 1.6 keys, or 2.0.1 Component.Variable names.")
@click.argument("keys", nargs=-1)
def remote_config_get(station_id: str, keys: tuple[str, ...], db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "config-get", {"keys": list(keys)}, as_json, expires)


@_remote("config-set", "Change one setting (1.6 key or 2.0.1 Component.Variable).")
@click.argument("key")
@click.argument("value")
def remote_config_set(station_id: str, key: str, value: str, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "config-set", {"key": key, "value": value}, as_json, expires)


@_remote("clear-cache", "Clear the station's authorization cache.")
def remote_clear_cache(station_id: str, db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "clear-cache", {}, as_json, expires)


@_remote("share-lock", "Close or open a connector's bay lock (the sharing controller re-asserts "
                       "the owner's rules at its next check).")
@click.option("--connector", default=1, show_default=True, type=click.IntRange(1, 64))
@click.argument("state", type=click.Choice(["locked", "open"]))
def remote_share_lock(station_id: str, connector: int, state: str, db: str | None, as_json: bool,
                      expires: float | None) -> None:
    remote_call(db, station_id, "share-lock", {"connector_id": connector, "locked": state == "locked"},
                as_json, expires)


@_remote("data-transfer", "Vendor-specific DataTransfer.")
@click.option("--vendor", required=True)
@click.option("--message-id")
@click.option("--data")
def remote_data_transfer(station_id: str, vendor: str, message_id: str | None, data: str | None,
                         db: str | None, as_json: bool,
        expires: float | None) -> None:
    remote_call(db, station_id, "data-transfer",
                {"vendor_id": vendor, "message_id": message_id, "data": data}, as_json, expires)


# --- remote: the driver's display and the price ---------------------------------------------

@_remote("set-display-message", "2.0.1: a message on the station's display (SetDisplayMessage).")
@click.option("--id", "message_id", required=True, type=click.IntRange(0, 2**31 - 1),
              help="The message's id (the same id replaces it). Sharing control uses 1001 "
                   "(price) and 1002 (booking).")
@click.option("--text", "content", required=True, help="Up to 512 characters.")
@click.option("--priority", default="NormalCycle", show_default=True,
              type=click.Choice(["AlwaysFront", "InFront", "NormalCycle"]))
@click.option("--state", type=click.Choice(["Charging", "Faulted", "Idle", "Unavailable"]),
              help="Only in this state (default: always).")
@click.option("--language", help="RFC 5646, e.g. zh-CN.")
@click.option("--from", "start", help="Shown from (ISO 8601, UTC).")
@click.option("--until", "end", help="Shown until (ISO 8601, UTC).")
@click.option("--session", "session_id", type=ID,
              help="Only during this session.")
def remote_set_display_message(station_id: str, message_id: int, content: str, priority: str,
                               state: str | None, language: str | None, start: str | None,
                               end: str | None, session_id: int | None, db: str | None,
                               as_json: bool, expires: float | None) -> None:
    if len(content) > 512:
        fail("--text: at most 512 characters")
    for option, value in (("--from", start), ("--until", end)):
        if value is not None:
            _check_time(option, value)
    args: dict[str, Any] = {"id": message_id, "content": content, "priority": priority,
                            "state": state, "language": language, "start": start, "end": end,
                            "session_id": session_id}
    remote_call(db, station_id, "set-display-message",
                {k: v for k, v in args.items() if v is not None}, as_json, expires)


def _check_time(option: str, value: str) -> None:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r}: give an ISO 8601 time, e.g. 2026-12-01T19:00:00Z")


def _checked_time(option: str, value: str) -> str:
    """An ISO 8601 time with its zone, as OCPP wants it (a time without one is UTC)."""
    _check_time(option, value)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        return moment.isoformat(timespec="seconds") + "Z"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@_remote("get-display-messages", "2.0.1: the messages the station shows (NotifyDisplayMessages: "
         "`station events ID --kind display_messages`).")
@click.option("--id", "ids", multiple=True, type=click.IntRange(0, 2**31 - 1))
@click.option("--priority", type=click.Choice(["AlwaysFront", "InFront", "NormalCycle"]))
@click.option("--state", type=click.Choice(["Charging", "Faulted", "Idle", "Unavailable"]))
def remote_get_display_messages(station_id: str, ids: tuple[int, ...], priority: str | None,
                                state: str | None, db: str | None, as_json: bool,
                                expires: float | None) -> None:
    remote_call(db, station_id, "get-display-messages",
                {"ids": list(ids), "priority": priority, "state": state}, as_json, expires)


@_remote("clear-display-message", "2.0.1: remove a message from the station's display.")
@click.argument("message_id", type=click.IntRange(0, 2**31 - 1))
def remote_clear_display_message(station_id: str, message_id: int, db: str | None,
                                 as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "clear-display-message", {"id": message_id}, as_json, expires)


@_remote("publish-firmware", "2.0.1: a Local Controller publishes a firmware file of ours to "
         "the stations behind it (L03; its status: `station events ID --kind "
         "firmware_publish`).")
@click.option("--file", "file_id", required=True, type=ID, help="See `cocharge firmware list`.")
@click.option("--retries", type=click.IntRange(0, 100))
@click.option("--retry-interval", type=click.IntRange(0, 86400), help="Seconds.")
def remote_publish_firmware(station_id: str, file_id: int, retries: int | None,
                            retry_interval: int | None, db: str | None, as_json: bool,
                            expires: float | None) -> None:
    remote_call(db, station_id, "publish-firmware", {
        "file_id": file_id, "retries": retries, "retry_interval": retry_interval}, as_json,
        expires)


@_remote("unpublish-firmware", "2.0.1: the Local Controller stops publishing the file (L04).")
@click.option("--file", "file_id", required=True, type=ID)
def remote_unpublish_firmware(station_id: str, file_id: int, db: str | None, as_json: bool,
                              expires: float | None) -> None:
    remote_call(db, station_id, "unpublish-firmware", {"file_id": file_id}, as_json, expires)


DER_TYPES = ["EnterService", "FreqDroop", "FreqWatt", "FixedPFAbsorb", "FixedPFInject",
             "FixedVar", "Gradients", "HFMustTrip", "HFMayTrip", "HVMustTrip", "HVMomCess",
             "HVMayTrip", "LimitMaxDischarge", "LFMustTrip", "LVMustTrip", "LVMomCess",
             "LVMayTrip", "PowerMonitoringMustTrip", "VoltVar", "VoltWatt", "WattPF", "WattVar"]


@_remote("set-der-control", "2.1: a grid code for the station's inverter (R04; NotifyDERStartStop "
         "and alarms are kept: `station events ID --kind der_start_stop`).")
@click.option("--id", "control_id", required=True, help="The control's id (max 36).")
@click.option("--type", "control_type", required=True, type=click.Choice(DER_TYPES))
@click.option("--settings", "settings_json", required=True,
              help="The type's settings as 2.1 spells them (JSON), e.g. LimitMaxDischarge "
                   "'{\"priority\": 0, \"pctMaxDischargePower\": 50}'.")
@click.option("--default", "is_default", is_flag=True, help="A default, not a scheduled control.")
def remote_set_der_control(station_id: str, control_id: str, control_type: str,
                           settings_json: str, is_default: bool, db: str | None, as_json: bool,
                           expires: float | None) -> None:
    try:
        settings = json.loads(settings_json)
    except ValueError as exc:
        fail(f"--settings is not JSON: {exc}")
    if not isinstance(settings, dict):
        fail("--settings must be a JSON object")
    remote_call(db, station_id, "set-der-control", {
        "control_id": control_id, "control_type": control_type, "settings": settings,
        "is_default": is_default}, as_json, expires)


@_remote("get-der-control", "2.1: the DER controls the station holds (R05; ReportDERControl: "
         "`station events ID --kind der_control`).")
@click.option("--id", "control_id")
@click.option("--type", "control_type", type=click.Choice(DER_TYPES))
@click.option("--default/--scheduled", "is_default", default=None)
def remote_get_der_control(station_id: str, control_id: str | None, control_type: str | None,
                           is_default: bool | None, db: str | None, as_json: bool,
                           expires: float | None) -> None:
    remote_call(db, station_id, "get-der-control", {
        "control_id": control_id, "control_type": control_type, "is_default": is_default},
        as_json, expires)


@_remote("clear-der-control", "2.1: remove DER controls (R06).")
@click.option("--id", "control_id")
@click.option("--type", "control_type", type=click.Choice(DER_TYPES))
@click.option("--default", "is_default", is_flag=True, help="Defaults, not scheduled controls.")
def remote_clear_der_control(station_id: str, control_id: str | None, control_type: str | None,
                             is_default: bool, db: str | None, as_json: bool,
                             expires: float | None) -> None:
    remote_call(db, station_id, "clear-der-control", {
        "control_id": control_id, "control_type": control_type, "is_default": is_default},
        as_json, expires)


@_remote("get-periodic-event-stream", "2.1: the periodic event streams the station has open.")
def remote_get_periodic_event_stream(station_id: str, db: str | None, as_json: bool,
                                     expires: float | None) -> None:
    remote_call(db, station_id, "get-periodic-event-stream", {}, as_json, expires)


@_remote("adjust-periodic-event-stream", "2.1: how often an open stream sends, and how many "
         "values at once.")
@click.option("--id", "stream_id", required=True, type=click.IntRange(0, 2**31 - 1))
@click.option("--interval", type=click.IntRange(0, 2**31 - 1), help="Seconds.")
@click.option("--values", type=click.IntRange(0, 2**31 - 1))
def remote_adjust_periodic_event_stream(station_id: str, stream_id: int, interval: int | None,
                                        values: int | None, db: str | None, as_json: bool,
                                        expires: float | None) -> None:
    remote_call(db, station_id, "adjust-periodic-event-stream", {
        "id": stream_id, "interval": interval, "values": values}, as_json, expires)


@_remote("use-priority-charging", "2.1: a session charges with the station's priority "
         "profile (e.g. a booked member), or stops (--deactivate).")
@click.option("--session", "session_id", required=True, type=ID)
@click.option("--deactivate", is_flag=True)
def remote_use_priority_charging(station_id: str, session_id: int, deactivate: bool,
                                 db: str | None, as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "use-priority-charging",
                {"session_id": session_id, "activate": not deactivate}, as_json, expires)


@_remote("allowed-energy-transfer", "2.1: the energy transfer modes a session may use (e.g. "
         "AC_BPT: bidirectional, once the driver agreed to give energy back).")
@click.option("--session", "session_id", required=True, type=ID)
@click.option("--mode", "modes", required=True, multiple=True,
              type=click.Choice(list(ENERGY_TRANSFER_MODES)), help="Repeatable.")
def remote_allowed_energy_transfer(station_id: str, session_id: int, modes: tuple[str, ...],
                                   db: str | None, as_json: bool,
                                   expires: float | None) -> None:
    remote_call(db, station_id, "allowed-energy-transfer",
                {"session_id": session_id, "modes": list(modes)}, as_json, expires)


@_remote("web-payment-started", "2.1: a driver opened the payment page of this EVSE's QR code "
         "(C24): the station shows a payment under way and waits for it.")
@click.option("--evse", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--timeout", default=120, show_default=True, type=click.IntRange(1, 3600),
              help="Seconds the station waits.")
def remote_web_payment_started(station_id: str, evse: int, timeout: int, db: str | None,
                               as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "web-payment-started", {"evse_id": evse, "timeout": timeout},
                as_json, expires)


@_remote("set-default-tariff", "2.1: send the host's tariff of a connector to the station, which "
         "calculates its sessions' cost itself (I07; the gateway does this by itself after a "
         "boot and on every tariff change).")
@click.option("--evse", default=1, show_default=True, type=click.IntRange(1, 64))
def remote_set_default_tariff(station_id: str, evse: int, db: str | None, as_json: bool,
                              expires: float | None) -> None:
    remote_call(db, station_id, "set-default-tariff", {"evse_id": evse}, as_json, expires)


@_remote("reserve", "Reserve for a member until a time (not a booking: bookings reserve by "
         "themselves); `cancel-reservation` with the id it answers ends it.")
@click.option("--tag", required=True)
@click.option("--until", required=True, help="ISO 8601 with its zone, e.g. "
              "2026-12-24T19:00:00+08:00.")
@click.option("--evse", type=click.IntRange(1, 64), help="Default (2.0.1): any EVSE.")
@click.option("--connector-type", help="2.0.1: any EVSE with this connector type, e.g. cType2.")
@click.option("--group", help="The member's household or fleet may use it too.")
def remote_reserve(station_id: str, tag: str, until: str, evse: int | None,
                   connector_type: str | None, group: str | None, db: str | None,
                   as_json: bool, expires: float | None) -> None:
    _check_time("--until", until)
    remote_call(db, station_id, "reserve", {
        "tag": tag, "until": until, "evse_id": evse, "connector_type": connector_type,
        "group": group}, as_json, expires)


@_remote("change-transaction-tariff", "2.1: send a running session's tariff to the station again "
         "(I10; the one it is priced with here).")
@click.option("--session", "session_id", required=True, type=ID)
def remote_change_transaction_tariff(station_id: str, session_id: int, db: str | None,
                                     as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "change-transaction-tariff", {"session_id": session_id},
                as_json, expires)


@_remote("get-tariffs", "2.1: the tariffs the station holds, per EVSE (I11).")
@click.option("--evse", default=0, show_default=True, type=click.IntRange(0, 64),
              help="0: every EVSE.")
def remote_get_tariffs(station_id: str, evse: int, db: str | None, as_json: bool,
                       expires: float | None) -> None:
    remote_call(db, station_id, "get-tariffs", {"evse_id": evse}, as_json, expires)


@_remote("clear-tariffs", "2.1: remove tariffs from the station (I12): the named ones, those of "
         "an EVSE, or all.")
@click.option("--tariff-id", "tariff_ids", multiple=True)
@click.option("--evse", type=click.IntRange(0, 64))
def remote_clear_tariffs(station_id: str, tariff_ids: tuple[str, ...], evse: int | None,
                         db: str | None, as_json: bool, expires: float | None) -> None:
    remote_call(db, station_id, "clear-tariffs", {"tariff_ids": list(tariff_ids),
                                                  "evse_id": evse}, as_json, expires)


@_remote("cost-updated", "The running cost of a session on the station's display (2.0.1 "
         "CostUpdated; 1.6 the cost DataTransfer). The gateway sends it by itself while "
         "charging (cost_update_s).")
@click.option("--session", "session_id", required=True, type=ID)
@click.option("--total-cost", required=True, help="In CNY, e.g. 12.35.")
def remote_cost_updated(station_id: str, session_id: int, total_cost: str, db: str | None,
                        as_json: bool, expires: float | None) -> None:
    fen = cny_to_fen(total_cost, "--total-cost")
    remote_call(db, station_id, "cost-updated", {
        "session_id": session_id, "total_cost": f"{fen // 100}.{fen % 100:02d}"}, as_json,
        expires)
