"""Defects of issue 30 that a charger or an operator could trip: each answered as OCPP and
the product promise, on real connections."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import select

from cocharge.gateway.operator_client import send_request
from cocharge.stations import registry, sharing
from cocharge.store.db import utcnow
from cocharge.store.schema import connector_status
from tests.conftest import raw_station, register


async def test_201_station_level_status_with_evse_0_is_kept_as_the_stations(node):
    """Cold boot (TC_B_01 of a third-party kit): StatusNotification evseId 0, connectorId 0 is
    allowed by the official schema; it is the station's status, as 1.6's connector 0."""
    await register(node, "COLD")
    st = await raw_station(node, "COLD", "ocpp2.0.1")
    now = utcnow().isoformat(timespec="seconds") + "Z"
    answer = await st.call("StatusNotification", {"timestamp": now, "connectorStatus": "Available",
                                                  "evseId": 0, "connectorId": 0})
    assert answer[0] == 3 and answer[2] == {}, answer
    assert (await st.call("StatusNotification", {"timestamp": now, "connectorStatus": "Occupied",
                                                  "evseId": 1, "connectorId": 1}))[0] == 3
    async with node.engine.connect() as conn:
        rows = (await conn.execute(select(connector_status.c.connector_id, connector_status.c.status)
                                   .where(connector_status.c.station_id == "COLD")
                                   .order_by(connector_status.c.connector_id))).all()
    assert [tuple(r) for r in rows] == [(0, "Available"), (1, "Occupied")]


async def test_a_remote_start_for_a_tag_the_charger_would_refuse_is_not_sent(node):
    """Unknown, blocked, or not shared with: refused with the reason before anything reaches
    the station (which would say Accepted, then refuse at Authorize)."""
    await register(node, "RS1", tags=("OK1", "BLK1", "OUT1"))
    await registry.block_member(node.engine, "BLK1")
    await sharing.set_rules(node.engine, "RS1", 0, {"allowed_tags": frozenset({"OK1", "BLK1"})})
    await node.gateway.control.tick(utcnow())  # the rules in force (re-read every control tick)
    st = await raw_station(node, "RS1")
    for tag, why in (("NOPE99", "no member has this tag"), ("BLK1", "blocked"),
                     ("OUT1", "does not share this charger")):
        answer = await send_request(node.engine, {"command": "start", "station": "RS1",
                                                  "args": {"tag": tag, "connector_id": 1}})
        assert not answer["ok"] and answer["error"] == "bad_request", (tag, answer)
        assert why in answer["message"] and "nothing sent" in answer["message"], answer
    # The member the owner shares with: the station gets the call.
    started = asyncio.create_task(send_request(node.engine, {
        "command": "start", "station": "RS1", "args": {"tag": "OK1", "connector_id": 1}}))
    seen = []
    while not seen or seen[-1][2] != "RemoteStartTransaction":  # the share lock comes first
        seen.append(await st.answer())
        await st.ws.send(json.dumps([3, seen[-1][1], {"status": "Accepted"}]))
    assert seen[-1][3]["idTag"] == "OK1"
    assert [c[2] for c in seen].count("RemoteStartTransaction") == 1
    assert (await started)["accepted"]
