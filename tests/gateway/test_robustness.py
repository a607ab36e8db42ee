"""Defects of issue 30 that a charger or an operator could trip: each answered as OCPP and
the product promise, on real connections."""

from __future__ import annotations

from sqlalchemy import select

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
