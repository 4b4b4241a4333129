"""Linked detectors (shared tick work, as `build_detectors` and the benchmark assemble them)
find exactly what the same detectors find standing alone."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from detectors_harness import opened, run_one, series, table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_detectors_properties import COPD, T0, N, key, run, streams

from detectors.activity import Inactivity, NotWorn
from detectors.registry import DETECTORS, link
from detectors.sustained import Bradycardia, Hypoxemia, SustainedThreshold, Tachycardia
from ingest.samples import SampleColumns


def alone() -> list[Any]:
    return [cls(table(N, copd=COPD)) for cls in DETECTORS.values()]


def linked() -> list[Any]:
    return link(alone())


def test_link_groups_the_sustained_rules() -> None:
    dets = linked()
    sustained = [d for d in dets if isinstance(d, SustainedThreshold)]
    assert len(sustained) == 7
    assert len({id(d._group) for d in sustained}) == 1
    apart = [d for d in alone() if isinstance(d, SustainedThreshold)]
    assert len({id(d._group) for d in apart}) == 7
    awake = [d for d in dets if isinstance(d, Inactivity | NotWorn)]
    assert len(awake) == 2 and awake[0]._group is awake[1]._group


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.lists(st.floats(0.0, 1.0), max_size=3))
def test_linked_detectors_find_what_they_find_alone(stream: SampleColumns,
                                                    cuts: list[float]) -> None:
    edges = sorted(T0 + c * 2000.0 for c in cuts)
    bounds = [-np.inf, *edges, np.inf]
    parts = [stream.take((stream.ts > lo) & (stream.ts <= hi))
             for lo, hi in itertools.pairwise(bounds)]
    want = run(alone(), parts, T0 + 10_000)
    got = run(linked(), parts, T0 + 10_000)
    assert key(got) == key(want)


def test_linked_rules_with_per_row_and_shared_gating_parameters() -> None:
    # brady/tachycardia gate alike (one stream) unless their parameters differ
    rng = np.random.default_rng(5)
    n = 300
    c = SampleColumns.empty(n)
    c.row[:] = rng.integers(0, N, n)
    c.ts[:] = T0 + np.sort(rng.uniform(0, 3000, n))
    c.hr[:] = rng.choice([35.0, 38.0, 75.0, 135.0, 155.0, np.nan], n)
    c.spo2[:] = rng.choice([80.0, 84.0, 89.0, 97.0, np.nan], n)
    c.activity[:] = rng.choice([0.0, 0.05, 0.3], n)
    c.worn[:] = rng.choice([1, 1, 0, -1], n)
    c = c.sorted_by_row_ts()
    devices = table(N, copd=COPD)

    def make() -> list[Any]:
        return [Bradycardia(devices, [Bradycardia.Params(max_jump=30.0 + i) for i in range(N)]),
                Tachycardia(devices, Tachycardia.Params(recovery_s=30.0)),
                Hypoxemia(devices, [Hypoxemia.Params(threshold=91.0), *[Hypoxemia.Params()] * 3])]

    batches = [c.take((c.ts > T0 + lo) & (c.ts <= T0 + lo + 500)) for lo in range(-500, 3000, 500)]
    want = run(make(), batches, T0 + 5000)
    got = run(link(make()), batches, T0 + 5000)
    assert want and key(got) == key(want)


def test_activity_exactly_at_the_rest_threshold_counts_as_rest() -> None:
    # activity is float32: 0.1 compares equal to a 0.1 threshold, as each rule compares it
    for det in (Hypoxemia(1), link([Hypoxemia(1), Bradycardia(1)])[0]):
        got = opened(run_one(det, series(0, T0, [97.0] * 3 + [88.0] * 8, activity=0.1)))
        assert [r["severity"] for r in got] == [3]


def test_benchmark_times_every_detector_linked_as_the_pipeline_links_them() -> None:
    from detectors.bench import bench_detect, per_detector_us

    times = per_detector_us(50, ticks=3, per_tick=10)
    assert set(times) == {*DETECTORS, "all"} and all(v >= 0 for v in times.values())
    figures = bench_detect(sizes=(300,), quick=True)
    assert figures["tick_ms_300"] > 0 and figures["loop_over_vector_ratio_300"] > 0
