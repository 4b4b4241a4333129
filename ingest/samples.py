"""Columnar vital-sign samples: the one shape samples take between decode, state and detectors.

A `SampleColumns` holds many samples as parallel NumPy arrays, one entry per sample.
Missing vitals are NaN; missing booleans are -1.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

# Float vitals, in the order used everywhere (state rings, sinks, detectors).
VITALS: tuple[str, ...] = ("hr", "spo2", "rr", "temp_c", "sbp", "dbp", "activity")

# Contract plausibility ranges (inclusive). A value outside is a sensor fault.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "hr": (20.0, 250.0),
    "spo2": (50.0, 100.0),
    "rr": (3.0, 60.0),
    "temp_c": (30.0, 43.0),
    "sbp": (50.0, 260.0),
    "dbp": (25.0, 160.0),
    "activity": (0.0, 16.0),
    "battery": (0.0, 100.0),
}

FLAGS: tuple[str, ...] = ("fall", "worn")


@dataclass
class SampleColumns:
    """Samples as columns. `row` is the device's row in the state store."""

    row: np.ndarray  # int32
    ts: np.ndarray  # float64, device time, epoch s
    seq: np.ndarray  # int64, -1 when absent
    hr: np.ndarray  # float32 ...
    spo2: np.ndarray
    rr: np.ndarray
    temp_c: np.ndarray
    sbp: np.ndarray
    dbp: np.ndarray
    activity: np.ndarray
    battery: np.ndarray  # float32, NaN when absent
    fall: np.ndarray  # int8: -1 absent, 0 false, 1 true
    worn: np.ndarray  # int8

    def __len__(self) -> int:
        return int(self.row.shape[0])

    @classmethod
    def empty(cls, n: int = 0) -> SampleColumns:
        """n samples with every vital missing (rows 0, ts 0)."""
        f32 = {v: np.full(n, np.nan, np.float32) for v in (*VITALS, "battery")}
        return cls(
            row=np.zeros(n, np.int32),
            ts=np.zeros(n, np.float64),
            seq=np.full(n, -1, np.int64),
            fall=np.full(n, -1, np.int8),
            worn=np.full(n, -1, np.int8),
            **f32,
        )

    def take(self, index: np.ndarray) -> SampleColumns:
        """The samples at `index` (an integer or boolean array), as a new object."""
        names = [f.name for f in fields(self)]
        if np.asarray(index).dtype.kind in "iu":  # integers: take, cheaper than indexing
            return SampleColumns(**{name: getattr(self, name).take(index) for name in names})
        return SampleColumns(**{name: getattr(self, name)[index] for name in names})

    def sorted_by_row_ts(self) -> SampleColumns:
        if len(self) < 2:
            return self
        return self.take(row_ts_order(self.row, self.ts))

    @staticmethod
    def concat(parts: list[SampleColumns]) -> SampleColumns:
        parts = [p for p in parts if len(p)]
        if not parts:
            return SampleColumns.empty()
        if len(parts) == 1:
            return parts[0]
        return SampleColumns(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(parts[0])
            }
        )


def row_ts_order(row: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The order of `np.lexsort((ts, row))`: by row, then time, ties as given.

    Cheaper when every row's samples already come in time order, as they do when parts
    sorted this way are joined in arrival order (a tick's, a pipeline step's messages): a
    stable sort on the row alone (a radix sort below 65,536 rows), checked to leave each
    row's times non-decreasing, else the full sort. 55 against 10 ms for 360,000 samples
    of 10,000 devices in 60 parts, 13 against 7 ms for 2 devices."""
    if len(row) < 2:
        return np.arange(len(row))
    key = row.astype(np.uint16) if row.min() >= 0 and row.max() < 65536 else row
    order = np.argsort(key, kind="stable")
    r, t = row[order], ts[order]
    # `not >=` also catches NaN, which lexsort places last in its row
    if (~(t[1:] >= t[:-1]) & (r[1:] == r[:-1])).any():
        return np.lexsort((ts, row))
    return order
