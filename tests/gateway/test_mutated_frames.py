"""Hypothesis mutates valid OCPP frames of both versions and sends them to the real gateway.

For every frame: the answer is a CallResult or a CallError with a code of that version (never
InternalError), the connection keeps being served, a charger beside it keeps its session
exact, and a frame that was refused wrote no row. What a frame did store obeys the bounds.

COCHARGE_FUZZ_EXAMPLES raises the number of examples (25 frames each) for a long run.
"""

from __future__ import annotations

import copy
import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from cocharge.gateway.rpc import ERROR_CODES
from cocharge.stations import registry
from cocharge.store.schema import connector_status, meter_samples, sessions, tx_events
from tests.conftest import RawStation, raw_station, register
from tests.gateway.test_hostile_input import ROW_TABLES

TS = "2026-11-01T10:00:00Z"
EXAMPLES = int(os.environ.get("COCHARGE_FUZZ_EXAMPLES", "40"))
FRAMES_PER_EXAMPLE = 25

VALID: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "1.6": [
        ("Heartbeat", {}),
        ("BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "Box",
                              "chargePointSerialNumber": "SN-1", "firmwareVersion": "1.0"}),
        ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging",
                                "timestamp": TS}),
        ("Authorize", {"idTag": "TAG1"}),
        ("StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 100,
                              "timestamp": TS}),
        ("MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": TS, "sampledValue": [
            {"value": "1234.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"}]}]}),
        ("StopTransaction", {"transactionId": 1, "meterStop": 900, "timestamp": TS,
                             "reason": "Local"}),
        ("DataTransfer", {"vendorId": "acme", "messageId": "m", "data": "{}"}),
        ("FirmwareStatusNotification", {"status": "Installed"}),
    ],
    "2.0.1": [
        ("Heartbeat", {}),
        ("BootNotification", {"chargingStation": {"vendorName": "Acme", "model": "Box"},
                              "reason": "PowerUp"}),
        ("StatusNotification", {"timestamp": TS, "connectorStatus": "Occupied", "evseId": 1,
                                "connectorId": 1}),
        ("Authorize", {"idToken": {"idToken": "TAG1", "type": "ISO14443"}}),
        ("TransactionEvent", {"eventType": "Started", "timestamp": TS,
                              "triggerReason": "Authorized", "seqNo": 0,
                              "transactionInfo": {"transactionId": "fz-1"},
                              "evse": {"id": 1, "connectorId": 1},
                              "idToken": {"idToken": "TAG1", "type": "ISO14443"},
                              "meterValue": [{"timestamp": TS, "sampledValue": [
                                  {"value": 100, "measurand": "Energy.Active.Import.Register"}]}]}),
        ("TransactionEvent", {"eventType": "Ended", "timestamp": TS, "triggerReason": "StopAuthorized",
                              "seqNo": 1, "transactionInfo": {"transactionId": "fz-1",
                                                              "stoppedReason": "Local"}}),
        ("MeterValues", {"evseId": 1, "meterValue": [{"timestamp": TS, "sampledValue": [
            {"value": 5.5, "measurand": "Power.Active.Import",
             "unitOfMeasure": {"unit": "kW", "multiplier": 0}}]}]}),
        ("DataTransfer", {"vendorId": "acme", "data": {"a": [1, 2]}}),
    ],
}

json_values = st.one_of(
    st.integers(-2**70, 2**70), st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.none(),
    st.booleans(), st.just([]), st.just({}), st.just({"id": 0}),
    st.sampled_from(["", "NaN", "1e400", "-0", "\ud800", "9223372036854775807", "Error", "Hz",
                     "2026-13-45T99:00:00Z", "x" * 600]),
)


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at] if at else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, at + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, at + (index,))
    return found


def _owner(frame: Any, path: tuple[Any, ...]) -> tuple[Any, Any]:
    node = frame
    for step in path[:-1]:
        node = node[step]
    return node, path[-1]


@st.composite
def mutant(draw: Any, version: str) -> str | bytes:
    action, payload = draw(st.sampled_from(VALID[version]))
    frame: list[Any] = [2, f"m{draw(st.integers(0, 10**6))}", action, copy.deepcopy(payload)]
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["value", "value", "drop", "add", "head", "text", "deep",
                                    "binary"]))
        paths = _paths(frame[3])
        # Drawn values are copied: st.just() hands out one object, which a later mutation
        # would change for every example after it.
        if how == "value" and paths:
            owner, key = _owner(frame[3], draw(st.sampled_from(paths)))
            owner[key] = copy.deepcopy(draw(json_values))
        elif how == "drop" and paths:
            owner, key = _owner(frame[3], draw(st.sampled_from(paths)))
            del owner[key]
        elif how == "add" and isinstance(frame[3], dict):
            frame[3][draw(st.text(min_size=1, max_size=12))] = copy.deepcopy(draw(json_values))
        elif how == "head":
            frame[draw(st.integers(0, 2))] = copy.deepcopy(draw(json_values))
        elif how == "deep" and isinstance(frame[3], dict):
            frame[3]["data" if "data" in frame[3] else "deep"] = "__DEEP__"
    text = json.dumps(frame)  # NaN and Infinity become their non-JSON literals, as sent raw
    if '"__DEEP__"' in text:
        depth = draw(st.integers(20, 3000))
        text = text.replace('"__DEEP__"', "[" * depth + "]" * depth, 1)
    if how == "text":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=5)) + text[at + draw(st.integers(0, 5)):]
    if how == "binary":
        return text.encode("utf-8", errors="surrogatepass")
    return text


async def counts(node: Any, station_id: str) -> tuple[int, ...]:
    """Rows of the station in each table, in one query."""
    async with node.engine.connect() as conn:
        return tuple((await conn.execute(select(*[
            select(func.count()).select_from(t).where(t.c.station_id == station_id)
            .scalar_subquery() for t in ROW_TABLES]))).one())


async def exchange(station: RawStation, frame: str | bytes, n: int) -> list[list[Any]]:
    """Send `frame`, then a Heartbeat; every answer up to the Heartbeat's."""
    await station.ws.send(frame)
    await station.ws.send(json.dumps([2, f"hb{n}", "Heartbeat", {}]))
    answers = []
    while True:
        answer = await station.answer()
        if answer[1] == f"hb{n}":
            assert answer[0] == 3, answer  # the connection is still served
            return answers
        answers.append(answer)


class Run:
    frames = 0
    refused = 0
    accepted = 0
    dropped = 0


# No shrinking: the examples share one gateway and database, so a smaller replay of a failing
# example would not start from the same state; the failing frames are reported as drawn.
@settings(max_examples=EXAMPLES, deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate], derandomize=not os.environ.get(
    "COCHARGE_FUZZ_EXAMPLES"), suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                       HealthCheck.too_slow])
@given(frames16=st.lists(mutant("1.6"), min_size=FRAMES_PER_EXAMPLE,
                         max_size=FRAMES_PER_EXAMPLE),
       frames201=st.lists(mutant("2.0.1"), min_size=FRAMES_PER_EXAMPLE,
                          max_size=FRAMES_PER_EXAMPLE))
async def test_mutated_frames_are_answered_and_refused_ones_store_nothing(node, frames16,
                                                                          frames201):
    if node.gateway.service.directory.get("GOOD") is None:  # the first example
        await register(node, "BAD16", "BAD201", "GOOD")
    good = await raw_station(node, "GOOD")
    start = await good.call("StartTransaction", {"connectorId": 1, "idTag": "TAG1",
                                                 "meterStart": 0, "timestamp": TS})
    tx = start[2]["transactionId"]
    for version, frames in (("1.6", frames16), ("2.0.1", frames201)):
        codes = {getattr(ERROR_CODES[version], f) for f in ERROR_CODES[version].__dataclass_fields__}
        codes.discard(ERROR_CODES[version].internal)
        bad = await raw_station(node, f"BAD{version.replace('.', '')}",
                                "ocpp1.6" if version == "1.6" else "ocpp2.0.1")
        for n, frame in enumerate(frames):
            sid = f"BAD{version.replace('.', '')}"
            before = await counts(node, sid)
            answers = await exchange(bad, frame, n)
            Run.frames += 1
            assert len(answers) <= 1, answers
            if not answers:
                Run.dropped += 1  # a CALLRESULT/CALLERROR to no call of ours: dropped
                assert await counts(node, sid) == before
                continue
            [answer] = answers
            assert answer[0] in (3, 4), answer
            if answer[0] == 4:
                Run.refused += 1
                assert answer[2] in codes, (version, frame, answer)
                assert await counts(node, sid) == before, (frame, answer)
            else:
                Run.accepted += 1
        await bad.ws.close()
        assert (await good.call("MeterValues", {"connectorId": 1, "transactionId": tx,
                                                "meterValue": [{"timestamp": TS, "sampledValue": [
                                                    {"value": "500"}]}]}))[0] == 3
    stop = await good.call("StopTransaction", {"transactionId": tx, "meterStop": 1000,
                                               "timestamp": "2026-11-01T10:30:00Z"})
    assert stop[0] == 3
    await good.ws.close()
    sessions_of_good = await registry.list_sessions(node.engine, "GOOD")
    assert all(s["energy_wh"] == 1000 for s in sessions_of_good)
    await stored_values_obey_the_bounds(node)
    print(f"\nmutated frames: {Run.frames} sent, {Run.refused} refused, {Run.accepted} "
          f"accepted, {Run.dropped} dropped as answers to no call")


async def stored_values_obey_the_bounds(node: Any) -> None:
    async with node.engine.connect() as conn:
        # Connector 0 is "not known": a 2.0.1 transaction whose evse has not come yet, or a
        # StopTransaction for a transaction we never saw (kept as an orphan, not billed).
        bad_sessions = (await conn.execute(select(sessions).where(
            (sessions.c.connector_id < 0)
            | ((sessions.c.connector_id < 1) & (sessions.c.protocol == "1.6")
               & (sessions.c.status != "orphan"))))).all()
        assert bad_sessions == []
        bad_status = (await conn.execute(select(connector_status).where(
            connector_status.c.connector_id < 0))).all()
        assert bad_status == []
        values = (await conn.execute(select(meter_samples.c.value))).scalars().all()
        assert all(math.isfinite(v) and abs(v) <= 1e15 for v in values)
        seqs = (await conn.execute(select(tx_events.c.seq_no))).scalars().all()
        assert all(0 <= s < 2**31 for s in seqs)
