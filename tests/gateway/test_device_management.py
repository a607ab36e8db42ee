"""Remote fleet operations beyond start/stop, over the operator channel to simulated
stations: GetReport, SetNetworkProfile, variable monitoring, CustomerInformation, signed
firmware, the local list sent on demand, the security extension's GetLog on 1.6."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from cocharge.gateway.operator_client import send_request
from cocharge.stations import commands as cmd
from cocharge.stations import firmware, registry, sharing
from cocharge.stations.registry import RegistryError
from tests.conftest import register, running_node, settings, simulated, until


@pytest.fixture
async def node(sqlite_url: str) -> Any:
    # Quick control ticks: local lists and firmware campaigns move within a test.
    async with running_node(sqlite_url, settings(control_interval_s=0.2,
                                                 local_list_sync_s=0.3)) as running:
        yield running


async def ask(node: Any, station: str, command: str, **args: Any) -> dict[str, Any]:
    return await send_request(node.engine, {"command": command, "station": station, "args": args})


async def events(node: Any, station: str, kind: str) -> list[dict[str, Any]]:
    return await registry.list_station_events(node.engine, station, kind, 100)


# --- GetReport ---------------------------------------------------------------------------

async def test_get_report_stores_the_part_asked_for(node):
    await register(node, "GR1")
    async with simulated(node, "GR1", "2.0.1", connectors=2):
        answer = await ask(node, "GR1", "get-report", component_variables=["EVSE.Power"])
        assert answer["ok"] and answer["status"] == "Accepted", answer
        assert isinstance(answer["response"]["requestId"], int)
        expected = {("EVSE", 1, "Power"), ("EVSE", 2, "Power")}

        async def every_part_in() -> bool:
            rows = await registry.list_station_variables(node.engine, "GR1")
            return {(r["component"], r["evse"], r["variable"]) for r in rows} == expected

        await until(every_part_in, 10)
        # Nothing has a problem: an empty result, said so, and nothing stored.
        empty = await ask(node, "GR1", "get-report", component_criteria=["Problem"])
        assert empty["ok"] and empty["accepted"] is False and empty["status"] == "EmptyResultSet"


# --- SetNetworkProfile ------------------------------------------------------------------------

async def test_set_network_profile_reaches_the_slot_and_the_answer_is_kept(node):
    await register(node, "NP1")
    async with simulated(node, "NP1", "2.0.1") as box:
        answer = await ask(node, "NP1", "set-network-profile", configuration_slot=2,
                           ocpp_csms_url="wss://csms.example.org/ocpp/", security_profile=2)
        assert answer["ok"] and answer["accepted"], answer
        profile = box.network_profiles[2]
        assert profile["ocpp_csms_url"] == "wss://csms.example.org/ocpp/"
        assert profile["security_profile"] == 2 and profile["ocpp_version"] == "OCPP20"
        refused = await ask(node, "NP1", "set-network-profile", configuration_slot=7,
                            ocpp_csms_url="wss://csms.example.org/ocpp/", security_profile=2)
        assert refused["ok"] and refused["accepted"] is False and refused["status"] == "Rejected"
        kept = await events(node, "NP1", "command")
        assert [(e["details"]["command"], e["details"]["status"]) for e in kept] == [
            ("set-network-profile", "Rejected"), ("set-network-profile", "Accepted")]


# --- monitoring ---------------------------------------------------------------------------

async def test_a_monitor_fires_notify_event_is_reported_and_cleared(node):
    await register(node, "MON1")
    async with simulated(node, "MON1", "2.0.1", meter_interval_s=0.1) as box:
        answer = await ask(node, "MON1", "set-variable-monitoring", variable="EVSE.Power",
                           type="UpperThreshold", value=1000, severity=4, evse_id=1)
        assert answer["ok"] and answer["accepted"], answer
        [result] = answer["response"]["setMonitoringResult"]
        monitor_id = result["id"]
        [row] = await registry.list_station_monitors(node.engine, "MON1")
        assert (row["id"], row["component"], row["evse"], row["variable"], row["type"],
                row["value"], row["severity"], row["source"]) == (
            monitor_id, "EVSE", 1, "Power", "UpperThreshold", "1000", 4, "set")
        unknown = await ask(node, "MON1", "set-variable-monitoring", variable="Nope.Thing",
                            type="Delta", value=1)
        assert unknown["ok"] and unknown["accepted"] is False
        assert unknown["status"] == "UnknownComponent"
        assert len(await registry.list_station_monitors(node.engine, "MON1")) == 1

        # Charging above 1 kW trips it: the station's NotifyEvent is kept.
        await box.charge(1, "TAG1", energy_wh=2000)

        async def fired() -> list[dict[str, Any]]:
            return [e for e in await events(node, "MON1", "event")
                    if any(d.get("variable_monitoring_id") == monitor_id
                           for d in e["details"]["event_data"])]
        [event] = await until(fired)
        [data] = event["details"]["event_data"]
        assert data["component"]["name"] == "EVSE" and data["variable"]["name"] == "Power"
        assert float(data["actual_value"]) > 1000 and data["trigger"] == "Alerting"

        # The station's own report replaces what we knew.
        report = await ask(node, "MON1", "get-monitoring-report")
        assert report["ok"] and report["accepted"], report

        async def reported() -> list[dict[str, Any]]:
            rows = await registry.list_station_monitors(node.engine, "MON1")
            return rows if rows and rows[0]["source"] == "report" else []
        [row] = await until(reported)
        assert row["id"] == monitor_id and row["value"] == "1000"

        level = await ask(node, "MON1", "set-monitoring-level", severity=2)
        assert level["accepted"] and box.monitoring_level == 2
        cleared = await ask(node, "MON1", "clear-variable-monitoring", ids=[monitor_id, 999])
        assert cleared["ok"] and cleared["status"] == "Accepted,NotFound"
        assert box.monitors == {}
        assert await registry.list_station_monitors(node.engine, "MON1") == []
        base = await ask(node, "MON1", "set-monitoring-base", monitoring_base="FactoryDefault")
        assert base["accepted"]


async def test_a_delta_monitor_on_a_setting_fires_when_it_changes(node):
    await register(node, "MON2")
    async with simulated(node, "MON2", "2.0.1"):
        answer = await ask(node, "MON2", "set-variable-monitoring",
                           variable="OCPPCommCtrlr.HeartbeatInterval", type="Delta", value=10)
        assert answer["accepted"], answer
        assert (await ask(node, "MON2", "set-variables",
                          values={"OCPPCommCtrlr.HeartbeatInterval": "305"}))["accepted"]
        assert (await ask(node, "MON2", "set-variables",
                          values={"OCPPCommCtrlr.HeartbeatInterval": "600"}))["accepted"]
        [event] = await until(lambda: events(node, "MON2", "event"))
        [data] = event["details"]["event_data"]
        assert data["trigger"] == "Delta" and data["actual_value"] == "600"  # 5 s: no event


# --- CustomerInformation --------------------------------------------------------------------

async def test_customer_information_reports_then_clears_what_the_station_holds(node):
    await register(node, "CI1", tags=("TAG1", "TAG2"))
    await sharing.set_rules(node.engine, "CI1", 0, {"allowed_tags": frozenset({"TAG1", "TAG2"})})
    async with simulated(node, "CI1", "2.0.1") as box:
        await until(lambda: asyncio.sleep(0, result="TAG1" in box.local_list))
        answer = await ask(node, "CI1", "customer-information", id_token="TAG1", clear=True)
        assert answer["ok"] and answer["accepted"], answer
        request_id = answer["response"]["requestId"]

        async def told() -> list[dict[str, Any]]:
            return [e for e in await events(node, "CI1", "customer_information")
                    if e["details"]["request_id"] == request_id]
        [info] = await until(told)
        assert "TAG1" in info["details"]["data"] and "cleared" in info["details"]["data"]
        assert "TAG1" not in box.local_list and "TAG2" in box.local_list
        invalid = await ask(node, "CI1", "customer-information")
        assert invalid["ok"] is False and "names the customer" in invalid["message"]


# --- firmware: one station, signed ----------------------------------------------------------

def signing_pair(kind: str = "rsa") -> tuple[Any, str]:
    key: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
                else ec.generate_private_key(ec.SECP256R1()))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cocharge firmware signer")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, certificate.public_bytes(serialization.Encoding.PEM).decode()


def sign(key: Any, content: bytes) -> str:
    raw = (key.sign(content, padding.PKCS1v15(), hashes.SHA256()) if isinstance(key, rsa.RSAPrivateKey)
           else key.sign(content, ec.ECDSA(hashes.SHA256())))
    return base64.b64encode(raw).decode()


async def test_a_signature_that_does_not_match_is_refused_when_stored(node):
    key, certificate = signing_pair("ec")
    good = sign(key, b"2.1.0")
    file_id = await firmware.add_file(node.engine, "fw.bin", "2.1.0", b"2.1.0", good, certificate)
    assert file_id > 0
    with pytest.raises(RegistryError, match="does not match"):
        await firmware.add_file(node.engine, "fw.bin", "2.1.1", b"2.1.1", good, certificate)
    with pytest.raises(RegistryError, match="base64"):
        await firmware.add_file(node.engine, "fw.bin", "2.1.1", b"2.1.1", "not base64!", certificate)
    with pytest.raises(RegistryError, match="both"):
        await firmware.add_file(node.engine, "fw.bin", "2.1.1", b"2.1.1", good, None)


@pytest.mark.parametrize("protocol", ["1.6", "2.0.1"])
async def test_signed_update_firmware_is_verified_and_installed(node, protocol):
    """1.6 gets the security extension's SignedUpdateFirmware, 2.0.1 the signed firmware
    field; the simulated charger checks the signature before it installs."""
    await register(node, "FW1")
    key, certificate = signing_pair()
    image = b"3.0.0"
    file_id = await firmware.add_file(node.engine, "fw.bin", "3.0.0", image, sign(key, image),
                                      certificate)
    async with simulated(node, "FW1", protocol, firmware="2.9.0") as box:
        answer = await ask(node, "FW1", "update-firmware", file_id=file_id)
        assert answer["ok"] and answer["accepted"], answer
        request_id = answer["response"]["requestId"]
        await until(lambda: asyncio.sleep(0, result=box.firmware == "3.0.0"))

        async def statuses() -> list[str]:
            found = [e["details"] for e in await events(node, "FW1", "firmware")]
            return [f["status"] for f in reversed(found)] if len(found) >= 5 else []
        assert await until(statuses) == ["Downloading", "Downloaded", "SignatureVerified",
                                         "Installing", "Installed"]
        found = await events(node, "FW1", "firmware")
        assert {f["details"]["request_id"] for f in found} == {request_id}


async def test_a_campaign_with_a_bad_signature_fails_at_the_station(node):
    await register(node, "FW2")
    _, certificate = signing_pair()
    other, _ = signing_pair()
    image = b"4.0.0"
    file_id = await firmware.add_file(node.engine, "fw.bin", "4.0.0", image)
    url = f"http://127.0.0.1:{node.gateway.uploads.port}/firmware/{file_id}"
    async with simulated(node, "FW2", "2.0.1", firmware="3.0.0") as box:
        campaign_id, count = await firmware.create_campaign(
            node.engine, "4.0.0", None, url, firmware.Selection(stations=("FW2",)), at_once=1,
            retries=0, signature=sign(other, image), signing_certificate=certificate)
        assert count == 1

        async def finished() -> dict[str, Any] | None:
            shown = await firmware.campaign_status(node.engine, campaign_id)
            return shown if shown["targets"][0]["status"] == "failed" else None
        shown = await until(finished, 20)
        assert shown["targets"][0]["detail"] == "InvalidSignature"
        assert box.firmware == "3.0.0"


# --- local list on demand; 2.0.1-only operations at a 1.6 station -----------------------

@pytest.mark.parametrize("protocol", ["1.6", "2.0.1"])
async def test_send_local_list_sends_the_rules_list_in_full_now(node, protocol):
    await register(node, "LL1", tags=("TAG1", "TAG2"))
    async with simulated(node, "LL1", protocol) as box:
        refused = await ask(node, "LL1", "send-local-list")
        assert refused["ok"] is False and "no sharing rules" in refused["message"]
        await sharing.set_rules(node.engine, "LL1", 0,
                                {"allowed_tags": frozenset({"TAG1", "TAG2"})})
        await until(lambda: asyncio.sleep(0, result=box.local_list_version > 0))
        before = box.local_list_version
        box.local_list.clear()  # the charger lost it (e.g. a factory reset)
        answer = await ask(node, "LL1", "send-local-list")
        assert answer["ok"] and answer["accepted"], answer
        assert box.local_list_version == before + 1
        assert set(box.local_list) == {"TAG1", "TAG2"}
        shown = await registry.get_station(node.engine, "LL1")
        assert shown["local_list"]["version"] == before + 1


async def test_201_operations_are_refused_for_a_16_station_with_the_reason(node):
    await register(node, "OLD1")
    async with simulated(node, "OLD1", "1.6"):
        for name, args in [("get-report", {}),
                           ("set-variable-monitoring", {"variable": "EVSE.Power",
                                                        "type": "Delta", "value": 1}),
                           ("customer-information", {"id_token": "TAG1"}),
                           ("set-network-profile", {"configuration_slot": 1,
                                                    "ocpp_csms_url": "wss://x/",
                                                    "security_profile": 2})]:
            answer = await ask(node, "OLD1", name, **args)
            assert answer["ok"] is False and answer["error"] == "bad_request", (name, answer)
            assert "OCPP 2.0.1 operation" in answer["message"], (name, answer)


async def test_security_extension_get_log_on_16_is_uploaded_and_stored(node):
    await register(node, "SL1")
    async with simulated(node, "SL1", "1.6"):
        answer = await ask(node, "SL1", "get-log", log_type="SecurityLog")
        assert answer["ok"] and answer["accepted"], answer

        async def uploaded() -> list[dict[str, Any]]:
            rows = await registry.list_uploads(node.engine, "SL1")
            return rows if rows and rows[0]["status"] == "Uploaded" else []
        [row] = await until(uploaded)
        assert row["log_type"] == "SecurityLog" and row["filename"] == "SL1-SecurityLog.log"


# --- arguments are checked before anything is sent ---------------------------------------

@pytest.mark.parametrize("name, args, message", [
    ("set-variable-monitoring", {"variable": "EVSE.Power", "type": "Delta", "value": "high"},
     "value must be a number"),
    ("set-monitoring-level", {"severity": True}, "severity must be a whole number"),
    ("clear-variable-monitoring", {"ids": []}, "needs the monitor ids"),
    ("clear-variable-monitoring", {"ids": ["7"]}, "ids must be a list of whole numbers"),
    ("update-firmware", {}, "needs the image"),
    ("update-firmware", {"url": "http://x/fw", "file_id": 1}, "one of them"),
    ("customer-information", {"id_token": "T", "report": False}, "a report, a clear"),
    ("get-report", {"component_criteria": "Active"}, "must be a list"),
])
def test_bad_arguments_are_refused_with_the_reason(name, args, message):
    with pytest.raises(cmd.CommandRejected, match=message):
        cmd.build_command(name, args)


async def test_a_value_outside_the_schema_is_refused_before_it_is_sent(node):
    await register(node, "SC1")
    async with simulated(node, "SC1", "2.0.1") as box:
        installed = dict(box.network_profiles)  # slot 1: how it was installed
        answer = await ask(node, "SC1", "set-network-profile", configuration_slot=1,
                           ocpp_csms_url="wss://" + "x" * 600, security_profile=2)
        assert answer["ok"] is False and "schema" in answer["message"], answer
        assert box.network_profiles == installed
