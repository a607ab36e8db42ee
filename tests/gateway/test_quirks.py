"""Quirks: a known deviation of a named charger is made valid; the same frame from any other
charger is still refused; what is stored is the normalised value."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select

from cocharge.gateway.quirks import BUILT_IN, QuirkError, load_quirks
from cocharge.node import running_node
from cocharge.stations import registry
from cocharge.store.schema import connector_status, meter_samples, stations
from tests.conftest import RawStation, raw_station, register, settings

TS = "2026-11-01T10:00:00Z"


async def booted(node: Any, station_id: str, vendor: str, model: str, protocol: str = "ocpp1.6",
                 **boot: Any) -> RawStation:
    station = await raw_station(node, station_id, protocol, boot=False)
    if protocol == "ocpp1.6":
        payload = {"chargePointVendor": vendor, "chargePointModel": model, **boot}
    else:
        payload = {"chargingStation": {"vendorName": vendor, "model": model}, "reason": "PowerUp"}
    answer = await station.call("BootNotification", payload)
    assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
    return station


async def test_evlink_serial_is_truncated_other_vendors_refused(node):
    await register(node, "EV1", "OTHER")
    long_serial = "EVB1A22P4KI-SN-0123456789012"  # 29 characters, CiString25 allows 25
    ev = await raw_station(node, "EV1", boot=False)
    answer = await ev.call("BootNotification", {"chargePointVendor": "Schneider Electric",
                                                "chargePointModel": "EVlink Pro AC",
                                                "chargePointSerialNumber": long_serial})
    assert answer[0] == 3
    async with node.engine.connect() as conn:
        serial = await conn.scalar(select(stations.c.serial).where(stations.c.id == "EV1"))
    assert serial == long_serial[:25]
    other = await raw_station(node, "OTHER", boot=False)
    answer = await other.call("BootNotification", {"chargePointVendor": "Other",
                                                   "chargePointModel": "EVlink Pro AC",
                                                   "chargePointSerialNumber": long_serial})
    assert answer[0] == 4 and answer[2] == "TypeConstraintViolation"


async def test_greenup_error_code_becomes_other_error(node):
    await register(node, "GU1", "OTHER")
    greenup = await booted(node, "GU1", "Legrand", "GreenUp Premium")
    frame = {"connectorId": 1, "errorCode": "Error", "status": "Faulted", "timestamp": TS}
    assert (await greenup.call("StatusNotification", frame))[0] == 3
    async with node.engine.connect() as conn:
        row = (await conn.execute(select(connector_status).where(
            connector_status.c.station_id == "GU1"))).one()
    assert (row.status, row.error_code) == ("Faulted", "OtherError")
    other = await booted(node, "OTHER", "Acme", "Box")
    answer = await other.call("StatusNotification", frame)
    assert answer[0] == 4 and answer[2] == "PropertyConstraintViolation"


async def test_hz_unit_is_spelled_hertz(node):
    await register(node, "HZ1")
    station = await booted(node, "HZ1", "Evnex", "E2")
    answer = await station.call("MeterValues", {"connectorId": 1, "meterValue": [{
        "timestamp": TS, "sampledValue": [{"value": "49.97", "measurand": "Frequency",
                                           "unit": "Hz"}]}]})
    assert answer[0] == 3
    async with node.engine.connect() as conn:
        row = (await conn.execute(select(meter_samples).where(
            meter_samples.c.station_id == "HZ1"))).one()
    assert (row.measurand, row.unit, row.value) == ("Frequency", "Hertz", 49.97)


async def test_hz_unit_is_spelled_hertz_however_the_frame_escapes_it(node):
    """The quirk skips frames that do not hold "Hz" (looked for in the text): one that
    writes it with JSON escapes holds it all the same."""
    await register(node, "HZ2")
    station = await booted(node, "HZ2", "Evnex", "E2")
    answer = await station.send_raw(
        '[2,"m1","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":"' + TS + '",'
        '"sampledValue":[{"value":"50.01","measurand":"Frequency","unit":"H\\u007a"}]}]}]')
    assert answer[0] == 3, answer
    async with node.engine.connect() as conn:
        row = (await conn.execute(select(meter_samples).where(
            meter_samples.c.station_id == "HZ2"))).one()
    assert (row.unit, row.value) == ("Hertz", 50.01)


async def test_alfen_placeholder_transaction_is_dropped(node):
    await register(node, "AL1", "OTHER")
    frame = {"connectorId": 1, "transactionId": 2**63 - 1, "meterValue": [{
        "timestamp": TS, "sampledValue": [{"value": "1200"}]}]}
    alfen = await booted(node, "AL1", "Alfen BV", "NG910")
    assert (await alfen.call("MeterValues", frame))[0] == 3
    async with node.engine.connect() as conn:
        row = (await conn.execute(select(meter_samples).where(
            meter_samples.c.station_id == "AL1"))).one()
    assert row.session_id is None and row.value == 1200
    other = await booted(node, "OTHER", "Acme", "Box")
    answer = await other.call("MeterValues", frame)
    assert answer[0] == 4 and answer[2] == "TypeConstraintViolation"


async def test_connector_zero_of_201_is_connector_one(node):
    await register(node, "Z1")
    station = await booted(node, "Z1", "Any", "Box", "ocpp2.0.1")
    answer = await station.call("StatusNotification", {
        "timestamp": TS, "connectorStatus": "Occupied", "evseId": 1, "connectorId": 0})
    assert answer[0] == 3
    async with node.engine.connect() as conn:
        row = (await conn.execute(select(connector_status).where(
            connector_status.c.station_id == "Z1"))).one()
    assert (row.connector_id, row.status) == (1, "Occupied")
    answer = await station.call("StatusNotification", {
        "timestamp": TS, "connectorStatus": "Occupied", "evseId": 1, "connectorId": -1})
    assert answer[0] == 4 and answer[2] == "PropertyConstraintViolation"


async def test_quirks_follow_the_station_across_reconnects_and_are_logged_once(node, caplog):
    await register(node, "GU1")
    frame = {"connectorId": 1, "errorCode": "Error", "status": "Faulted", "timestamp": TS}
    with caplog.at_level(logging.INFO, logger="cocharge.gateway.quirks"):
        first = await booted(node, "GU1", "Legrand", "GreenUp")
        assert (await first.call("StatusNotification", frame))[0] == 3
        await first.ws.close()
        again = await raw_station(node, "GU1", boot=False)  # no BootNotification this time
        assert (await again.call("StatusNotification", frame))[0] == 3
    applied = [r for r in caplog.records if "greenup-error-code" in r.getMessage()]
    assert len(applied) == 1 and "GU1" in applied[0].getMessage()


QUIRKS_TOML = """
disable = ["hz-unit"]

[[quirk]]
name = "old-meter-kwh"
station = "OLD-*"
action = ["MeterValues", "StopTransaction"]
field = ["meterValue[].sampledValue[].value", "transactionData[].sampledValue[].value"]
fix = "scale"
factor = 1000
where = { measurand = ["", "Energy.Active.Import.Register"], unit = ["", "Wh"] }
note = "firmware 1.2 reports its register in kWh while labelling it Wh"
"""


async def test_an_operator_quirk_from_a_file_scales_kwh_registers(sqlite_url, tmp_path):
    path = tmp_path / "quirks.toml"
    path.write_text(QUIRKS_TOML)
    async with running_node(sqlite_url, settings(quirks_file=str(path))) as node:
        await register(node, "OLD-1", "NEW-1")
        frame = {"connectorId": 1, "meterValue": [{"timestamp": TS, "sampledValue": [
            {"value": "12.345"}, {"value": "7.5", "measurand": "Power.Active.Import",
                                  "unit": "W"}]}]}
        for sid in ("OLD-1", "NEW-1"):
            station = await booted(node, sid, "Acme", "Box")
            assert (await station.call("MeterValues", frame))[0] == 3
        async with node.engine.connect() as conn:
            rows = (await conn.execute(select(meter_samples.c.station_id, meter_samples.c.measurand,
                                              meter_samples.c.value)
                                       .order_by(meter_samples.c.station_id,
                                                 meter_samples.c.measurand))).all()
        assert [tuple(r) for r in rows] == [
            ("NEW-1", "Energy.Active.Import.Register", 12.345),
            ("NEW-1", "Power.Active.Import", 7.5),
            ("OLD-1", "Energy.Active.Import.Register", 12345.0),
            ("OLD-1", "Power.Active.Import", 7.5),  # not an energy register: left alone
        ]
        await registry.add_station(node.engine, registry.NewStation("HZ"))
        station = await booted(node, "HZ", "Evnex", "E2")
        answer = await station.call("MeterValues", {"connectorId": 1, "meterValue": [{
            "timestamp": TS, "sampledValue": [{"value": "50", "measurand": "Frequency",
                                               "unit": "Hz"}]}]})
        assert answer[0] == 4 and answer[2] == "PropertyConstraintViolation"  # switched off


@pytest.mark.parametrize("text,message", [
    ("[[quirk]]\nname='a'\naction='MeterValues'\nfield='x'\nfix='melt'\nvendor='V'",
     "fix must be one of"),
    ("[[quirk]]\nname='a'\naction='MeterValues'\nfield='x'\nfix='drop'", "say whom it concerns"),
    ("[[quirk]]\nname='a'\naction='MeterValues'\nfield='x'\nfix='scale'\nvendor='V'",
     "scale needs factor"),
    ("[[quirk]]\nname='a'\naction='MeterValues'\nfield='x'\nfix='drop'\nvendor='V'\ncolour=1",
     "unknown key"),
    ("disable = ['no-such-quirk']", "disable lists built-in quirks"),
    ("[[quirk]\n", "not valid TOML"),
    (f"[[quirk]]\nname='{BUILT_IN[0].name}'\naction='A'\nfield='x'\nfix='drop'\nvendor='V'",
     "defined twice"),
])
def test_a_bad_quirks_file_is_refused_with_a_clear_line(tmp_path, text, message):
    path = tmp_path / "q.toml"
    path.write_text(text)
    with pytest.raises(QuirkError, match=message):
        load_quirks(str(path))


def test_serve_refuses_a_bad_quirks_file_before_it_starts(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text("[[quirk]]\nname='a'\naction='MeterValues'\nfield='x'\nfix='melt'\n"
                    "vendor='V'\n")
    db = tmp_path / "never.db"
    result = subprocess.run([sys.executable, "-m", "cocharge.cli", "serve", "--no-api", "--db", str(db),
                             "--quirks", str(path)], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "fix must be one of" in result.stderr
    assert "Traceback" not in result.stderr and not db.exists()


def test_the_docs_list_every_built_in_quirk():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "ocpp-errors.md").read_text()
    for quirk in BUILT_IN:
        assert quirk.name in text, quirk.name
