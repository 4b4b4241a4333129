"""Helpers for detector tests: build sample columns, feed detectors through a real store."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from config.generate import demo_registry
from config.loader import parse_config
from config.models import Config
from detectors.base import Findings, TickState, evidence_at
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns
from ingest.state import StateStore

# 2025-11-28 00:00 Asia/Shanghai = 2025-11-27 16:00 UTC; local midnight for day tests
LOCAL_MIDNIGHT = 1764259200.0
OFFSET = 8 * 3600.0


def local(hours: float) -> float:
    """Epoch seconds at `hours` after local midnight."""
    return LOCAL_MIDNIGHT + hours * 3600.0


@lru_cache(maxsize=64)
def table(n: int, copd: tuple[int, ...] = ()) -> DeviceTable:
    return DeviceTable.from_config(config(n, copd))


def config(n: int, copd: tuple[int, ...] = (), **extra: Any) -> Config:
    data = demo_registry(n, seed=3, towns=2)
    for i, r in enumerate(data["residents"]):
        r["conditions"] = ["copd"] if i in copd else []
    data.update(extra)
    return parse_config(data)


def cols(rows: Any, ts: Any, **values: Any) -> SampleColumns:
    """Samples for rows/ts (broadcast); vitals and flags by keyword (scalars broadcast)."""
    ts = np.atleast_1d(np.asarray(ts, np.float64))
    rows = np.broadcast_to(np.asarray(rows, np.int32), ts.shape).copy()
    c = SampleColumns.empty(len(ts))
    c.row[:] = rows
    c.ts[:] = ts
    for key, value in values.items():
        getattr(c, key)[:] = value
    return c.sorted_by_row_ts()


def series(row: int, t0: float, values: list[float] | np.ndarray, dt: float = 10.0,
           vital: str = "spo2", **other: Any) -> SampleColumns:
    """One device's samples every `dt` s from `t0` with `vital` taking `values`."""
    values = np.asarray(values, np.float64)
    ts = t0 + dt * np.arange(len(values))
    return cols(row, ts, **{vital: values, "worn": 1, **other})


def records(findings: list[Findings]) -> list[dict[str, Any]]:
    out = []
    for f in findings:
        for i in range(len(f)):
            out.append({"kind": f.kind, "row": int(f.row[i]), "severity": int(f.severity[i]),
                        "active": bool(f.active[i]), "onset": float(f.onset_ts[i]),
                        "evidence": evidence_at(f, i)})
    return out


class Feeder:
    """Runs detectors over batches through a real StateStore, like the pipeline's tick."""

    def __init__(self, detectors: list[Any], n: int, started_at: float = 0.0,
                 devices: DeviceTable | None = None) -> None:
        self.detectors = detectors
        self.store = StateStore(n)
        self.devices = devices or table(n)
        self.started_at = started_at
        self.link = (float("nan"), float("nan"))  # the pipeline's broker link (lost, back)

    def tick(self, batch: SampleColumns | None, now: float) -> list[dict[str, Any]]:
        if batch is not None and len(batch):
            self.store.append(batch.sorted_by_row_ts(), now)
        state = TickState(new=self.store.take_pending(), store=self.store, devices=self.devices,
                          started_at=self.started_at, utc_offset_s=OFFSET,
                          link_lost_at=self.link[0], link_back_at=self.link[1])
        found: list[Findings] = []
        for d in self.detectors:
            found += d.update(state, now)
        return records(found)


def run_one(detector: Any, batch: SampleColumns, n: int | None = None) -> list[dict[str, Any]]:
    """Feed one batch in one tick (now = last ts)."""
    n = n or (int(batch.row.max()) + 1 if len(batch) else 1)
    feeder = Feeder([detector], max(n, detector_rows(detector)))
    return feeder.tick(batch, float(batch.ts.max()) if len(batch) else 0.0)


def detector_rows(detector: Any) -> int:
    for value in vars(detector).values():
        if isinstance(value, np.ndarray):
            return int(value.shape[0])
    return 1


def opened(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in recs if r["active"]]
