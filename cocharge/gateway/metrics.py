"""Prometheus counters of one gateway node (`serve --metrics-port`), bumped where things
happen: a frame, a refused handshake, a journal commit. What is read from the gateway at
scrape time, and the HTTP side, are in exporter.py. prometheus-client (ARCHITECTURE.md)
writes the format."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, Metric, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from cocharge.store.journal import Journal

log = logging.getLogger(__name__)


class _FrameCounts(Collector):
    def __init__(self, counts: dict[tuple[str, str], int]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("cocharge_ocpp_messages", "OCPP frames by direction and "
                                     "action (calls; answers and errors count as their kind)",
                                     labels=["direction", "action"])
        for (direction, action), count in sorted(self._counts.items()):
            family.add_metric([direction, action], count)
        yield family


class GatewayMetrics:
    """The node's counters and histograms; `collector` adds what is read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Frames are counted in a plain dict (a frame's path takes no lock) and read out at
        # scrape time.
        self._frames: dict[tuple[str, str], int] = {}
        self.registry.register(_FrameCounts(self._frames))
        self.handshakes_refused = Counter("cocharge_handshakes_refused",
                                          "WebSocket handshakes refused, by HTTP status",
                                          ["status"], registry=self.registry)
        self.journal_batch = Histogram("cocharge_journal_batch_rows", "Rows per journal commit",
                                       buckets=(1, 5, 20, 100, 500, 2000, 5000),
                                       registry=self.registry)
        self.journal_commit = Histogram("cocharge_journal_commit_seconds",
                                        "Time of one journal commit",
                                        buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.5, 2, 10),
                                        registry=self.registry)

    def attach(self, journal: Journal) -> None:
        """Time the journal's commits."""
        journal.observe = self._journal

    def _journal(self, rows: int, seconds: float) -> None:
        self.journal_batch.observe(rows)
        self.journal_commit.observe(seconds)

    def frame(self, direction: str, frame: str | bytes) -> None:
        """Count a frame: calls by action, answers as CallResult / CallError."""
        text_ = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
        kind = text_[1:2]
        if kind == "3" and text_[2:3] == ",":
            action = "CallResult"
        elif kind == "4" and text_[2:3] == ",":
            action = "CallError"
        elif text_.startswith("[2"):
            parts = text_[:80].split(",", 3)
            self.call(direction, parts[2].strip().strip('"') if len(parts) > 2 else "?")
            return
        elif text_.startswith(("[3", "[4")):
            action = "CallResult" if kind == "3" else "CallError"
        else:
            action = "(invalid)"
        key = (direction, action)
        self._frames[key] = self._frames.get(key, 0) + 1

    def call(self, direction: str, action: str) -> None:
        """Count a call by its action (one that is no name counts as "(invalid)")."""
        key = (direction, action if action.isidentifier() and len(action) <= 40
               else "(invalid)")
        self._frames[key] = self._frames.get(key, 0) + 1

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
