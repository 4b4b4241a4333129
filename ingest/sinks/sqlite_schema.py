"""SQLite history layout and the vectorised row/aggregate builders the writer uses.

Tables:
- `devices(id, device, resident, town)`: a small integer key per device id, so the big
  tables stay narrow and survive registry reordering.
- `raw(device, ts, hr, spo2, rr, temp_c, sbp, dbp, activity, worn, fall, battery)`:
  one row per sample, clustered by (device, ts) (WITHOUT ROWID), which is exactly the
  console's per-device time-range query. A second sample with the same (device, ts) is
  ignored, like the pipeline's de-duplication.
- `minute(device, minute, n, <v>_sum, <v>_n, <v>_min, <v>_max ..., worn_n, worn_known,
  fall, battery_min)`: per-minute aggregates, merged across batches by upsert (sums and
  counts, so means stay exact when a minute arrives in several batches).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ingest.samples import VITALS, SampleColumns

SCHEMA_VERSION = 1
MISSING_INT8 = -1

_RAW_COLS = ("device", "ts", *VITALS, "worn", "fall", "battery")
_AGG_COLS = ("device", "minute", "n",
             *(f"{v}_{s}" for v in VITALS for s in ("sum", "n", "min", "max")),
             "worn_n", "worn_known", "fall", "battery_min")


def _vital_cols() -> str:
    return ", ".join(f"{v}_sum REAL NOT NULL DEFAULT 0, {v}_n INTEGER NOT NULL DEFAULT 0, "
                     f"{v}_min REAL, {v}_max REAL" for v in VITALS)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL UNIQUE, resident TEXT, town TEXT);
CREATE TABLE IF NOT EXISTS raw (
    device INTEGER NOT NULL, ts REAL NOT NULL,
    {", ".join(f"{v} REAL" for v in VITALS)},
    worn INTEGER, fall INTEGER, battery INTEGER,
    PRIMARY KEY (device, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute (
    device INTEGER NOT NULL, minute INTEGER NOT NULL, n INTEGER NOT NULL,
    {_vital_cols()},
    worn_n INTEGER NOT NULL DEFAULT 0, worn_known INTEGER NOT NULL DEFAULT 0,
    fall INTEGER NOT NULL DEFAULT 0, battery_min REAL,
    PRIMARY KEY (device, minute)) WITHOUT ROWID;
"""

INSERT_RAW = (f"INSERT OR IGNORE INTO raw ({', '.join(_RAW_COLS)}) "
              f"VALUES ({', '.join('?' * len(_RAW_COLS))})")


def _merge_min(col: str, fn: str) -> str:
    # SQLite's scalar min()/max() return NULL if any argument is NULL: coalesce both ways
    return f"{col} = {fn}(coalesce({col}, excluded.{col}), coalesce(excluded.{col}, {col}))"


_UPDATES = ["n = n + excluded.n"]
for _v in VITALS:
    _UPDATES += [f"{_v}_sum = {_v}_sum + excluded.{_v}_sum", f"{_v}_n = {_v}_n + excluded.{_v}_n",
                 _merge_min(f"{_v}_min", "min"), _merge_min(f"{_v}_max", "max")]
_UPDATES += ["worn_n = worn_n + excluded.worn_n", "worn_known = worn_known + excluded.worn_known",
             "fall = max(fall, excluded.fall)", _merge_min("battery_min", "min")]

UPSERT_MINUTE = (f"INSERT INTO minute ({', '.join(_AGG_COLS)}) "
                 f"VALUES ({', '.join('?' * len(_AGG_COLS))}) "
                 f"ON CONFLICT (device, minute) DO UPDATE SET {', '.join(_UPDATES)}")

UPSERT_DEVICE = ("INSERT INTO devices (device, resident, town) VALUES (?, ?, ?) "
                 "ON CONFLICT (device) DO UPDATE SET resident = excluded.resident, "
                 "town = excluded.town")


def _floats(values: np.ndarray) -> list[Any]:
    # float32 -> float64 carries binary noise (36.7 -> 36.700000762...); 4 decimals is
    # below every sensor's resolution. NaN binds as NULL in SQLite.
    return np.round(values.astype(np.float64), 4).tolist()


def _flag(values: np.ndarray) -> list[Any]:
    obj = values.astype(object)
    obj[values < 0] = None
    return obj.tolist()


def raw_rows(cols: SampleColumns, keys: np.ndarray) -> list[tuple[Any, ...]]:
    """executemany parameters for `INSERT_RAW`; `keys` maps state row -> devices.id."""
    battery = cols.battery.astype(object)
    nan = np.isnan(cols.battery)
    battery[~nan] = np.rint(cols.battery[~nan]).astype(np.int64)
    battery[nan] = None
    columns = [keys[cols.row].tolist(), cols.ts.astype(np.float64).tolist(),
               *(_floats(getattr(cols, v)) for v in VITALS),
               _flag(cols.worn), _flag(cols.fall), battery.tolist()]
    return list(zip(*columns, strict=True))


def minute_rows(cols: SampleColumns, keys: np.ndarray) -> list[tuple[Any, ...]]:
    """executemany parameters for `UPSERT_MINUTE`: one row per (device, minute) in `cols`."""
    if len(cols) == 0:
        return []
    minute = np.floor(cols.ts / 60.0).astype(np.int64)
    order = np.lexsort((minute, cols.row))
    row, minute = cols.row[order], minute[order]
    edge = np.ones(len(row), bool)
    edge[1:] = (row[1:] != row[:-1]) | (minute[1:] != minute[:-1])
    starts = np.flatnonzero(edge)
    counts = np.diff(np.append(starts, len(row)))
    columns: list[list[Any]] = [keys[row[starts]].tolist(), minute[starts].tolist(),
                                counts.tolist()]
    for v in VITALS:
        x = getattr(cols, v)[order].astype(np.float64)
        have = ~np.isnan(x)
        columns.append(np.add.reduceat(np.where(have, x, 0.0), starts).tolist())
        columns.append(np.add.reduceat(have.astype(np.int64), starts).tolist())
        # fmin/fmax skip NaN unless the whole group is NaN (-> NULL)
        columns.append(_floats(np.fmin.reduceat(x, starts)))
        columns.append(_floats(np.fmax.reduceat(x, starts)))
    worn = cols.worn[order]
    columns.append(np.add.reduceat((worn == 1).astype(np.int64), starts).tolist())
    columns.append(np.add.reduceat((worn >= 0).astype(np.int64), starts).tolist())
    columns.append(np.maximum.reduceat((cols.fall[order] == 1).astype(np.int64), starts).tolist())
    columns.append(_floats(np.fmin.reduceat(cols.battery[order].astype(np.float64), starts)))
    return list(zip(*columns, strict=True))
