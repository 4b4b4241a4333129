"""Replay benchmark: the whole pipeline (decode, state, every detector, alert engine) on a
generated recording with a simulated clock."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from carewatch.replay import read_lines, replay
from config.generate import demo_registry
from config.loader import parse_config
from simulators.engine import Simulation
from simulators.record import write_recording

START = 1764316800.0


def bench_replay(
    residents: int = 200, hours: float = 24, interval_s: float = 10, batch: int = 1
) -> dict[str, float]:
    """samples/s of `replay` over `residents` x `hours` at `interval_s` (target: 200 x 24 h
    at 10 s, 1.7 M samples, in <= 60 s)."""
    config = parse_config(demo_registry(residents, seed=0))
    with tempfile.TemporaryDirectory(prefix="carewatch-bench-replay-") as d:
        path = Path(d) / "rec.jsonl"
        sim = Simulation(config, 0, START, interval_s, hours, batch=batch, random_rate=1.0)
        stats = write_recording(sim, path)
        t0, c0 = time.perf_counter(), time.process_time()
        result = replay(read_lines(path), config, keep_events=False, data_dir=Path(d) / "data")
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
    samples = float(result.ingest.get("samples", 0))  # type: ignore[arg-type]
    return {
        "residents": residents,
        "hours": hours,
        "samples": samples,
        "recorded_samples": float(stats["samples"]),
        "messages": float(result.messages),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "samples_per_s": samples / seconds,
        "ticks": float(result.ticks),
    }
