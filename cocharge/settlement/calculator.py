"""The revenue calculator's data: local demand and prices from the platform's own records."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.settlement.revenue import Demand, demand_from_sessions, prior_demand
from cocharge.settlement.settle import tariff_in_force
from cocharge.settlement.tariff import per_kwh
from cocharge.store.schema import sessions, stations
from cocharge.store.sql import among


async def area_demand(engine: AsyncEngine, area: str | None, tz: str = "Asia/Shanghai") -> Demand:
    """Demand by hour of the week from the area's finished sessions, or the prior."""
    if not area:
        return prior_demand()
    zone = ZoneInfo(tz)
    async with engine.connect() as conn:
        chargers = int(await conn.scalar(select(func.coalesce(func.sum(stations.c.connectors), 0))
                                         .where(stations.c.area == area)) or 0)
        rows = (await conn.execute(select(sessions.c.started_at, sessions.c.energy_wh)
                                   .join(stations, stations.c.id == sessions.c.station_id)
                                   .where(and_(stations.c.area == area,
                                               sessions.c.status == "completed",
                                               sessions.c.started_at.is_not(None))))).all()
    starts = [r.started_at.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None) for r in rows]
    found = demand_from_sessions(starts, [float(r.energy_wh or 0) for r in rows], chargers, area)
    return found or prior_demand()


async def area_prices(engine: AsyncEngine, area: str | None) -> list[Decimal]:
    """The energy price of every station in the area that has a tariff."""
    if not area:
        return []
    prices = []
    async with engine.connect() as conn:
        ids = (await conn.execute(select(stations.c.id).where(stations.c.area == area))).scalars().all()
        for station_id in ids:
            found = await tariff_in_force(conn, station_id, 0)
            price = per_kwh(found[1]) if found else None
            if price is not None:
                prices.append(price)
    return prices


async def area_host_revenue(engine: AsyncEngine, area: str | None,
                            days: int = 30) -> dict[str, int]:
    """What each station of the area took (fen, paid by drivers) in the last `days` days."""
    from datetime import timedelta

    from cocharge.store.db import utcnow
    from cocharge.store.schema import settlements

    if not area:
        return {}
    since = utcnow() - timedelta(days=days)
    async with engine.connect() as conn:
        ids = (await conn.execute(select(stations.c.id).where(stations.c.area == area))).scalars().all()
        rows = (await conn.execute(select(sessions.c.station_id, func.sum(settlements.c.payable_fen))
                                   .join(settlements, settlements.c.session_id == sessions.c.id)
                                   .where(and_(among(conn, sessions.c.station_id, ids or [""]),
                                               sessions.c.ended_at >= since))
                                   .group_by(sessions.c.station_id))).all()
    found = {station_id: 0 for station_id in ids}
    found.update({r[0]: int(r[1] or 0) for r in rows})
    return found
