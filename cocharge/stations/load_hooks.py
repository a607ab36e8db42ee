"""What the station service and sharing control tell load management (cocharge/load/), and
ask of it: load management sits above stations and plugs itself in as `service.load`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, update

from cocharge.stations.events import MeterSample
from cocharge.store.schema import sessions

# Rows of `LoadHooks.samples`: a session's energy covered by PV surplus, as it grew.
GREEN_UPDATE = (update(sessions).where(sessions.c.id == bindparam("sid"))
                .values(green_wh=bindparam("green")))


class LoadHooks(Protocol):
    """Load management as the stations core sees it (`load.manager.LoadManager`)."""

    def manages(self, station_id: str) -> bool: ...

    def session_started(self, station_id: str, connector_id: int, session_id: int, tx_ref: str,
                        tag: str, started_at: datetime) -> None: ...

    def session_ended(self, station_id: str, connector_id: int, session_id: int) -> None: ...

    def cutoff_moved(self, station_id: str, connector_id: int) -> None: ...

    def start_limit(self, station_id: str, connector_id: int) -> float: ...

    def samples(self, station_id: str, connector_id: int, session_id: int | None,
                samples: list[MeterSample]) -> list[dict[str, Any]]: ...

    def external_limit(self, station_id: str, evse_id: int, limit_a: float | None) -> None: ...

    def ev_needs(self, station_id: str, evse_id: int, max_current_a: float | None,
                 energy_wh: float | None, departure: datetime | None) -> bool: ...

    def limit_a(self, station_id: str, evse_id: int) -> float | None: ...

    def dynamic_limit(self, station_id: str, profile_id: int) -> float | None: ...
