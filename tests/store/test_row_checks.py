"""check_rows: a row the database could not hold is refused before it joins a batch."""

from __future__ import annotations

import pytest

from cocharge.store.db import utcnow
from cocharge.store.schema import meter_samples
from cocharge.store.sql import RowRejected, check_rows


def _row(**changed):  # type: ignore[no-untyped-def]
    return {"session_id": None, "station_id": "CP1", "connector_id": 1, "ts": utcnow(),
            "measurand": "Energy.Active.Import.Register", "phase": None, "value": 1.5,
            "unit": "Wh", "context": None, **changed}


def test_rows_that_fit_pass_and_unnamed_columns_are_not_checked() -> None:
    check_rows(meter_samples, [_row(), _row(value=7, connector_id=2**31 - 1), {"value": 2.0},
                               _row(session_id=2**63 - 1, phase="L1-N", unit=None),
                               _row(session_id=-2**63, connector_id=-2**31)])


@pytest.mark.parametrize("changed, says", [
    ({"connector_id": 2**31}, "meter_samples.connector_id: 2147483648 is outside the range"),
    ({"connector_id": -2**31 - 1}, "is outside the range"),
    ({"connector_id": True}, "meter_samples.connector_id: True is outside the range"),
    ({"connector_id": "1"}, "is outside the range"),
    ({"value": float("inf")}, "meter_samples.value: inf is not a finite number"),
    ({"value": float("nan")}, "is not a finite number"),
    ({"value": "12"}, "is not a finite number"),
    ({"station_id": None}, "meter_samples.station_id may not be empty"),
    ({"ts": None}, "meter_samples.ts may not be empty"),
    ({"station_id": "x" * 65}, "meter_samples.station_id is longer than 64 characters"),
    ({"session_id": 2**63}, "meter_samples.session_id: 9223372036854775808 is outside the range"),
    ({"session_id": -2**63 - 1}, "is outside the range"),
    ({"value": None}, "meter_samples.value may not be empty"),
    ({"connector_id": None}, "meter_samples.connector_id may not be empty"),
    ({"measurand": None}, "meter_samples.measurand may not be empty"),
    ({"phase": "L1-N-L2-L3"}, "meter_samples.phase is longer than 8 characters"),
])
def test_a_row_the_columns_cannot_hold_is_refused(changed, says) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RowRejected, match=says.replace("(", r"\(")):
        check_rows(meter_samples, [_row(), _row(**changed)])
