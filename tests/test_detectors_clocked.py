"""Clocked device rules skip ticks where nothing can change: skipping never changes findings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from detectors_harness import cols, records

from detectors.base import TickState
from detectors.device import DeviceOffline, LowBattery
from ingest.state import StateStore

T0 = 1_764_316_800.0
N = 5


def always_full(det: Any) -> Any:
    """The same detector with its skip disabled (it recomputes on every tick)."""
    update = det.update

    def full(state: TickState, now: float) -> Any:
        det._seen = None
        return update(state, now)

    det.update = full
    return det


@pytest.mark.parametrize("seed", range(6))
def test_skipping_quiet_ticks_finds_what_recomputing_finds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    params = DeviceOffline.Params(offline_s=float(rng.choice([30.0, 120.0, 600.0])))
    skipping = [DeviceOffline(N, params), LowBattery(N)]
    full = [always_full(DeviceOffline(N, params)), always_full(LowBattery(N))]
    store = StateStore(N)
    now = T0
    got: list[dict[str, Any]] = []
    want: list[dict[str, Any]] = []
    skipped = 0
    for _ in range(600):
        now += float(rng.choice([0.5, 1.0, 1.0, 7.0]))
        event = rng.random()
        if event < 0.05:
            row = int(rng.integers(0, N))
            batt = float(rng.choice([10.0, 18.0, 50.0])) if rng.random() < 0.5 else None
            store.set_status(row, bool(rng.random() < 0.5), batt, now)
        elif event < 0.15:
            rows = np.sort(rng.choice(N, int(rng.integers(1, N + 1)), replace=False))
            store.append(cols(rows, np.full(len(rows), now - 0.2), hr=70.0, worn=1,
                              battery=rng.choice([12.0, 16.0, 22.0, np.nan], len(rows))), now)
        state = TickState(new=store.take_pending(), store=store, devices=None,  # type: ignore[arg-type]
                          started_at=T0)
        for det in skipping:
            before = det._seen
            got += records(det.update(state, now))
            skipped += before is not None and det._seen is before
        for det in full:
            want += records(det.update(state, now))
    assert skipped > 100, "quiet ticks should mostly be skipped"
    assert want and got == want
