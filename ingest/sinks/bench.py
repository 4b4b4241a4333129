"""Sink throughput: how many rows a second the SQLite sink writes on this machine."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from config.generate import demo_registry
from config.models import Config, SqliteSinkSettings
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns


def synthetic_columns(n: int, devices: int, start: float, seed: int = 0,
                      interval_s: float = 10.0) -> SampleColumns:
    """`n` plausible samples spread over `devices` devices, every `interval_s` per device."""
    rng = np.random.default_rng(seed)
    cols = SampleColumns.empty(n)
    idx = np.arange(n)
    cols.row = (idx % devices).astype(np.int32)
    cols.ts = start + (idx // devices) * interval_s + rng.uniform(0, 1, n)
    cols.seq = (idx // devices).astype(np.int64)
    cols.hr = rng.normal(75, 8, n).astype(np.float32)
    cols.spo2 = rng.normal(96, 1.5, n).clip(50, 100).astype(np.float32)
    cols.rr = rng.normal(16, 2, n).astype(np.float32)
    cols.temp_c = np.where(rng.random(n) < 0.1, rng.normal(36.6, 0.3, n), np.nan).astype(np.float32)
    cols.activity = rng.exponential(0.1, n).astype(np.float32)
    cols.worn = (rng.random(n) > 0.05).astype(np.int8)
    cols.fall = np.zeros(n, np.int8)
    cols.battery = np.full(n, 80.0, np.float32)
    return cols


def bench_sinks(samples: int = 200_000, devices: int = 1000, chunk: int = 2000,
                batch_max: int = 5000, path: str | None = None) -> dict[str, Any]:
    """Write `samples` rows through SqliteSink in pipeline-sized chunks; rows/s written."""
    from ingest.sinks.sqlite import SqliteSink

    table = DeviceTable.from_config(Config.model_validate(demo_registry(devices, seed=1)))
    start = 1_764_316_800.0
    cols = synthetic_columns(samples, devices, start)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(path) if path else Path(tmp) / "bench.db"
        settings = SqliteSinkSettings.model_validate(
            {"path": str(db), "queue_max": max(samples, 1000), "batch_max": batch_max})
        sink = SqliteSink(db, table, settings=settings)
        try:
            sink.flush(30.0)  # schema and device table before the clock starts
            t0 = time.perf_counter()
            for lo in range(0, samples, chunk):
                sink.write(cols.take(np.arange(lo, min(lo + chunk, samples))))
            enqueue_s = time.perf_counter() - t0
            done = sink.flush(600.0)
            elapsed = time.perf_counter() - t0
        finally:
            sink.close()
        stats = sink.stats()
        size = db.stat().st_size if db.exists() else 0
    return {
        "samples": samples, "devices": devices, "chunk": chunk, "batch_max": batch_max,
        "flushed": done,
        "written": stats["written"], "dropped": stats["dropped_overflow"],
        "seconds": round(elapsed, 3), "rows_per_s": round(samples / elapsed),
        "write_call_us": round(enqueue_s / max(1, samples // chunk) * 1e6, 1),
        "db_bytes": size, "bytes_per_row": round(size / max(1, samples), 1),
    }


def bench_lineproto(samples: int = 200_000, devices: int = 1000) -> dict[str, Any]:
    """Line-protocol encoding rate of the InfluxDB sink (its CPU cost per sample)."""
    from ingest.sinks.lineproto import encode_lines, tag_prefixes

    table = DeviceTable.from_config(Config.model_validate(demo_registry(devices, seed=1)))
    cols = synthetic_columns(samples, devices, 1_764_316_800.0)
    prefixes = tag_prefixes(table)
    t0 = time.perf_counter()
    lines = encode_lines(cols, prefixes, "ms")
    elapsed = time.perf_counter() - t0
    return {"samples": samples, "lines": len(lines), "seconds": round(elapsed, 3),
            "lines_per_s": round(len(lines) / elapsed),
            "bytes_per_line": round(sum(map(len, lines)) / max(1, len(lines)), 1)}


if __name__ == "__main__":
    import json

    for batch in (5000, 20_000):
        print(json.dumps(bench_sinks(batch_max=batch)))
    print(json.dumps(bench_lineproto()))
