"""Bad frames get the right CallError; only the bad connection suffers; nothing committed is lost."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed

from cocharge.stations import registry
from cocharge.store.schema import meter_samples
from tests.conftest import raw_station, register

CASES = [
    ("not json", "{nope", {"ocpp1.6": "FormationViolation", "ocpp2.0.1": "FormatViolation"}),
    ("not a list", '{"a": 1}', {"ocpp1.6": "FormationViolation", "ocpp2.0.1": "RpcFrameworkError"}),
    ("bad type id", '[7, "u1", "Heartbeat", {}]',
     {"ocpp1.6": "FormationViolation", "ocpp2.0.1": "MessageTypeNotSupported"}),
    ("unknown action", '[2, "u2", "MakeCoffee", {}]',
     {"ocpp1.6": "NotImplemented", "ocpp2.0.1": "NotImplemented"}),
]


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
@pytest.mark.parametrize("name,frame,codes", CASES)
async def test_bad_frames_get_call_errors(node, protocol, name, frame, codes):
    await register(node, "BAD")
    st = await raw_station(node, "BAD", protocol)
    answer = await st.send_raw(frame)
    assert answer[0] == 4 and answer[2] == codes[protocol], name
    assert (await st.call("Heartbeat", {}))[0] == 3  # the connection still works


async def test_schema_violation_is_a_call_error(node):
    await register(node, "BAD")
    st = await raw_station(node, "BAD")
    answer = await st.call("StartTransaction", {"connectorId": "one", "idTag": "TAG1"})
    assert answer[0] == 4 and answer[2] in ("FormationViolation", "ProtocolError",
                                            "TypeConstraintViolation")
    answer = await st.call("Authorize", {"idTag": "TAG1", "extra": 1})
    assert answer[0] == 4 and answer[2] == "FormationViolation"


async def test_meter_values_for_unknown_transaction_are_kept_flagged_and_answered(node):
    """MeterValues.conf has no failure form: an error would make the charger retry forever."""
    await register(node, "BAD")
    st = await raw_station(node, "BAD")
    answer = await st.call("MeterValues", {"connectorId": 1, "transactionId": 424242, "meterValue": [
        {"timestamp": "2026-11-01T10:00:00Z", "sampledValue": [{"value": "10"}]}]})
    assert answer == [3, answer[1], {}]
    async with node.engine.connect() as conn:
        samples = (await conn.execute(select(meter_samples).where(
            meter_samples.c.station_id == "BAD"))).all()
    assert [(s.session_id, s.connector_id, s.value) for s in samples] == [(None, 1, 10.0)]
    [flag] = await registry.list_station_events(node.engine, "BAD", "unknown_transaction")
    assert flag["details"] == {"transaction_id": "424242", "connector_id": 1, "samples": 1}


async def test_oversized_frame_closes_only_that_connection(node):
    await register(node, "BIG", "GOOD")
    good = await raw_station(node, "GOOD")
    start = await good.call("StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 5,
                                                 "timestamp": "2026-11-01T10:00:00Z"})
    big = await raw_station(node, "BIG")
    await big.ws.send(json.dumps([2, "x", "DataTransfer", {"vendorId": "v", "data": "a" * 200_000}]))
    with pytest.raises(ConnectionClosed) as closed:
        await big.ws.recv()
    assert closed.value.rcvd.code == 1009
    stop = await good.call("StopTransaction", {"transactionId": start[2]["transactionId"],
                                               "meterStop": 1005, "timestamp": "2026-11-01T10:30:00Z"})
    assert stop[0] == 3
    [row] = await registry.list_sessions(node.engine, "GOOD")
    assert row["energy_wh"] == 1000


async def test_known_but_unhandled_action_is_not_supported(node):
    await register(node, "BAD")
    st = await raw_station(node, "BAD")
    # A call of this version that only the central system sends.
    answer = await st.call("RemoteStartTransaction", {"idTag": "TAG1"})
    assert answer[0] == 4 and answer[2] == "NotSupported"
    # A CSR without a CA to sign it (serve --ca-dir): answered, Rejected.
    answer = await st.call("SignCertificate", {"csr": "-----BEGIN CERTIFICATE REQUEST-----"})
    assert answer[0] == 3 and answer[2] == {"status": "Rejected"}


async def test_reservation_status_update_frees_the_booking(node):
    """2.0.1: the charger says our reservation expired or was removed; the booking follows."""
    from datetime import timedelta

    from sqlalchemy import update

    from cocharge.stations import sharing
    from cocharge.store.db import utcnow
    from cocharge.store.schema import bookings

    await register(node, "RES", tags=("BOB",))
    start = utcnow().replace(microsecond=0) + timedelta(hours=1)
    booking_id = await sharing.add_booking(node.engine, "RES", 1, "BOB", start,
                                           start + timedelta(hours=1))
    async with node.engine.begin() as conn:
        await conn.execute(update(bookings).where(bookings.c.id == booking_id)
                           .values(reserved=True))
    st = await raw_station(node, "RES", "ocpp2.0.1")
    answer = await st.call("ReservationStatusUpdate", {"reservationId": booking_id,
                                                       "reservationUpdateStatus": "Removed"})
    assert answer[0] == 3
    async with node.engine.connect() as conn:
        reserved = await conn.scalar(select(bookings.c.reserved).where(bookings.c.id == booking_id))
    assert reserved is False
    [event] = await registry.list_station_events(node.engine, "RES", "reservation")
    assert event["details"] == {"reservation_id": booking_id, "status": "Removed"}


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_log_status_notification_is_stored(node, protocol):
    await register(node, "LOG")
    st = await raw_station(node, "LOG", protocol)
    answer = await st.call("LogStatusNotification", {"status": "Uploaded", "requestId": 7})
    assert answer[0] == 3
    [event] = await registry.list_station_events(node.engine, "LOG", "log")
    assert event["details"] == {"status": "Uploaded", "request_id": 7}
