"""Shared helpers for the sink tests: a small registry and hand-made sample columns."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from config.models import Config
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns

T0 = 1_764_316_800.0  # 2025-11-28 08:00 UTC, on a minute boundary


def small_config(extra: dict[str, object] | None = None) -> Config:
    data: dict[str, object] = {
        "towns": [{"id": "gufu"}, {"id": "jijiang"}],
        "residents": [
            {"id": "r-0001", "town": "gufu", "device": "dev-0001"},
            {"id": "r-0002", "town": "jijiang", "device": "dev-0002"},
            {"id": "r-0003", "town": "gufu", "device": "dev-0003"},
        ],
    }
    data.update(extra or {})
    return Config.model_validate(data)


def small_devices() -> DeviceTable:
    return DeviceTable.from_config(small_config())


def columns(rows: list[int], ts: list[float], **values: list[float | int | None]) -> SampleColumns:
    """Samples for `rows` at `ts`; keyword lists give vitals/flags (None = absent)."""
    cols = SampleColumns.empty(len(rows))
    cols.row = np.asarray(rows, np.int32)
    cols.ts = np.asarray(ts, np.float64)
    for name, vals in values.items():
        arr = getattr(cols, name)
        missing = -1 if arr.dtype == np.int8 else np.nan
        arr[:] = [missing if v is None else v for v in vals]
    return cols


def fleet(n: int, devices: int = 3, start: float = T0, step: float = 1.0,
          seed: int = 0) -> SampleColumns:
    """`n` samples round-robin over devices, each device one sample every `step * devices` s."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    cols = SampleColumns.empty(n)
    cols.row = (idx % devices).astype(np.int32)
    cols.ts = start + idx * step
    cols.hr = rng.integers(50, 110, n).astype(np.float32)
    cols.spo2 = rng.integers(88, 100, n).astype(np.float32)
    cols.worn = np.ones(n, np.int8)
    return cols


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        threading.Event().wait(0.02)  # poll interval, not a race cover: the predicate decides
    return predicate()


def sink_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("carewatch-")
            and t.name.endswith("-sink")]
