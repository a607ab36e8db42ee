"""What happens at the stations, told to whoever listens (the MQTT bridge).

The stations core calls these after it has committed what they describe; a listener
must not block (the MQTT bridge only enqueues). The base class listens to nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class StationObserver:
    def station_online(self, station_id: str, online: bool, protocol: str | None = None) -> None:
        """A station connected (online) or its connection closed."""

    def connector_status(self, station_id: str, connector_id: int, status: str,
                         error_code: str | None, at: datetime) -> None:
        """A connector's status as the charger reported it."""

    def meter(self, station_id: str, connector_id: int, session_id: int | None,
              energy_wh: float, at: datetime) -> None:
        """An energy register reading (Wh), during a session or not."""

    def session_started(self, station_id: str, connector_id: int, session_id: int,
                        tag: str | None, at: datetime) -> None:
        """An accepted session began."""

    def session_ended(self, station_id: str, connector_id: int, session_id: int,
                      energy_wh: int | None, reason: str | None, at: datetime | None) -> None:
        """A session ended (energy as billed, None when flagged)."""

    def overstay(self, station_id: str, connector_id: int, session_id: int, minutes: int,
                 fee_fen: int, at: datetime) -> None:
        """A car left after overstaying: the idle minutes and fee."""

    def fault(self, station_id: str, connector_id: int, session_id: int | None, kind: str,
              at: datetime) -> None:
        """A safety fault on a connector (its session, if any, is stopped)."""

    def notice(self, station_id: str, kind: str, payload: dict[str, Any], at: datetime) -> None:
        """What a station reported about itself (firmware and log status, monitor events,
        customer information, security events), as `station events` keeps it."""
