"""Statistical checks of the simulated physiology over a week, with tolerances that can fail."""

from __future__ import annotations

import numpy as np
import pytest

from config.generate import demo_registry
from config.loader import parse_config
from simulators.engine import Simulation
from simulators.physiology import Chunk

START = 1764316800.0  # local midnight in Asia/Shanghai


def _week(seed: int = 3, residents: int = 40, rate: float = 0.0) -> tuple[Simulation, list[Chunk]]:
    config = parse_config(demo_registry(residents, seed=seed))
    sim = Simulation(config, seed, START, interval_s=30.0, hours=168, random_rate=rate)
    return sim, list(sim.chunks(prefetch=False))


@pytest.fixture(scope="module")
def week() -> tuple[Simulation, dict[str, np.ndarray]]:
    sim, chunks = _week()
    cols = {name: np.concatenate([getattr(c, name) for c in chunks], axis=1)
            for name in ("hr", "spo2", "rr", "temp_c", "sbp", "activity", "worn", "sent",
                         "battery", "tod", "true_t", "ts")}
    return sim, cols


def test_baselines_in_range(week: tuple[Simulation, dict[str, np.ndarray]]) -> None:
    sim, c = week
    pop = sim.phys.pop
    rest = c["worn"] & (c["activity"] <= 0.1)
    hr_rest = np.nanmedian(np.where(rest, c["hr"], np.nan), axis=1)
    assert np.all(np.abs(hr_rest - pop.hr0) < 8), "resting HR near each resident's baseline"
    assert 60 <= np.median(hr_rest) <= 80
    spo2 = np.nanmedian(c["spo2"], axis=1)
    assert np.all((spo2[pop.copd] >= 88) & (spo2[pop.copd] <= 92)), "copd: SpO2 88-92"
    assert np.all(spo2[~pop.copd] >= 94)
    assert 13 <= np.nanmedian(c["rr"]) <= 19
    assert 36.2 <= np.nanmedian(c["temp_c"]) <= 36.9
    sbp = np.nanmedian(c["sbp"], axis=1)
    if pop.hypertension.any():
        assert sbp[pop.hypertension].mean() > sbp[~pop.hypertension].mean() + 10
    af = pop.af
    if af.any():  # atrial fibrillation: irregular (larger sample-to-sample variation)
        jitter = np.nanmedian(np.abs(np.diff(c["hr"], axis=1)), axis=1)
        assert jitter[af].mean() > 2 * jitter[~af].mean()


def test_circadian_amplitude(week: tuple[Simulation, dict[str, np.ndarray]]) -> None:
    _sim, c = week
    night = (c["tod"] >= 2 * 3600) & (c["tod"] < 4 * 3600)
    afternoon = (c["tod"] >= 15 * 3600) & (c["tod"] < 17 * 3600)
    rest = c["worn"] & (c["activity"] <= 0.1)

    def mean(v: np.ndarray, m: np.ndarray) -> float:
        return float(np.nanmean(np.where(m & rest, v, np.nan)))

    assert 5 <= mean(c["hr"], afternoon) - mean(c["hr"], night) <= 16
    assert 1 <= mean(c["rr"], afternoon) - mean(c["rr"], night) <= 4
    assert 0.2 <= mean(c["temp_c"], afternoon) - mean(c["temp_c"], night) <= 0.8
    act_night = np.nanmean(np.where(night, c["activity"], np.nan))
    act_day = np.nanmean(np.where(afternoon, c["activity"], np.nan))
    assert act_day > 5 * act_night


def test_artefact_rates(week: tuple[Simulation, dict[str, np.ndarray]]) -> None:
    _sim, c = week
    off = 1 - c["worn"].mean()  # charging ~40 min a day plus short off-wrist moments
    assert 0.015 <= off <= 0.06
    lost = 1 - c["sent"].mean()  # isolated losses and radio gaps
    assert 0.001 <= lost <= 0.012
    moving = c["worn"] & (c["activity"] > 0.4)
    dips = moving & (c["spo2"] < 92)
    assert 0.05 <= dips.sum() / moving.sum() <= 0.25, "SpO2 dips during motion"
    skew = np.abs(c["ts"] - c["true_t"]).max(axis=1)
    assert 0.1 <= np.mean(skew > 0.5) <= 0.6, "some devices' clocks drift"
    assert np.nanmin(c["battery"]) > 15 and np.nanmax(c["battery"]) <= 100
    assert np.nanmax(c["activity"]) < 2.5


def _runs(mask: np.ndarray) -> int:
    """Longest run of True along axis 1, over all rows."""
    best = 0
    for row in mask:  # test-side reference, clarity over speed
        run = 0
        for v in row:
            run = run + 1 if v else 0
            best = max(best, run)
    return best


def test_benign_data_meets_no_rule(week: tuple[Simulation, dict[str, np.ndarray]]) -> None:
    sim, c = week
    copd = sim.phys.pop.copd[:, None]
    rest = c["worn"] & (c["activity"] <= 0.1)
    dt = sim.interval_s
    assert _runs(rest & ~copd & (c["spo2"] <= 90)) * dt < 60
    assert _runs(rest & (c["hr"] >= 130)) * dt < 120
    assert not np.any(c["hr"] <= 40)
    assert not np.any((c["rr"] >= 25) | (c["rr"] <= 8))
    assert not np.any((c["temp_c"] >= 38.0) | (c["temp_c"] <= 35.0))
    assert not np.any((c["sbp"] <= 90) | (c["sbp"] >= 180))
    awake = (c["tod"] >= 7 * 3600) & (c["tod"] < 21 * 3600)
    assert _runs(awake & ~c["worn"]) * dt < 30 * 60, "not-worn moments are short"
    assert _runs(awake & c["worn"] & (c["activity"] <= 0.02)) * dt < 3 * 3600


def test_random_event_rate() -> None:
    config = parse_config(demo_registry(100, seed=5))
    sim = Simulation(config, 5, START, interval_s=30.0, hours=168, random_rate=1.0)
    expected = 1.0 * 100 * 7
    n = len(sim.events.events)
    # overlapping events on one resident are dropped, so somewhat fewer than drawn
    assert 0.6 * expected <= n <= 1.1 * expected
    kinds = {e.kind for e in sim.events.events}
    assert len(kinds) >= 12, "all kinds get drawn"
    rows = [e.row for e in sim.events.events]
    assert len(set(rows)) > 80
