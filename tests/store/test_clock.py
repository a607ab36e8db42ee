"""The node's `utcnow`: the naive UTC time the schema stores, on either of its paths."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from cocharge.store import db


@pytest.mark.parametrize("now", [db.utcnow, db._utcnow_built], ids=["utcnow", "built"])
def test_utcnow_is_the_system_clock_in_utc_without_a_zone(now) -> None:  # type: ignore[no-untyped-def]
    for _ in range(20_000):  # across at least one change of second at times
        before = time.time()
        read = now()
        after = time.time()
        assert read.tzinfo is None
        seconds = read.replace(tzinfo=UTC).timestamp()
        assert before - 2e-6 <= seconds <= after + 2e-6  # microseconds, truncated
    assert abs(now() - datetime.now(UTC).replace(tzinfo=None)).total_seconds() < 0.5
