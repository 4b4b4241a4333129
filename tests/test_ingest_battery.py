"""The held battery reading is the newest one: a late sample, a backlog or a status message
dated earlier does not bring back an earlier charge (it cleared an open low-battery alert)."""

from __future__ import annotations

from ingest.samples import SampleColumns
from ingest.state import StateStore


def readings(rows: list[int], ts: list[float], battery: list[float]) -> SampleColumns:
    cols = SampleColumns.empty(len(rows))
    cols.row[:] = rows
    cols.ts[:] = ts
    cols.battery[:] = battery
    return cols


def test_an_older_reading_never_replaces_a_newer_one() -> None:
    store = StateStore(3)
    store.append(readings([0, 1], [100.0, 100.0], [12.0, 50.0]), 101.0)
    # row 0: a late sample from before; row 1: a batch with an older and a newer reading
    store.append(readings([0, 1, 1], [40.0, 90.0, 110.0], [80.0, 70.0, 45.0]), 111.0)
    assert store.battery[:2].tolist() == [12.0, 45.0]
    assert store.battery_ts[:2].tolist() == [100.0, 110.0]
    store.set_status(0, True, 90.0, at=120.0, ts=30.0)  # a status dated before: ignored
    assert (store.battery[0], store.battery_ts[0]) == (12.0, 100.0)
    store.set_status(0, True, 11.0, at=121.0)  # no ts: dated by its receipt, newer
    assert (store.battery[0], store.battery_ts[0]) == (11.0, 121.0)
    store.set_status(2, True, 60.0, at=5.0, ts=4.0)  # the first reading of a row
    assert (store.battery[2], store.battery_ts[2]) == (60.0, 4.0)
