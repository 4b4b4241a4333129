"""The scale benchmark's measuring parts: Mosquitto's C subscribers split by town see the
whole traffic once, and CPU is counted over a process tree and over reaped senders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from carewatch.bench.blast import write_packets
from carewatch.bench.scale import (
    _c_ceiling,
    _reap_cpu_s,
    _tree_cpu_s,
    _wait_idle,
    steady_rate,
    summarise_rounds,
)
from tests.ingest_harness import wait_for

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _blast(path: Path, town: str, n: int) -> tuple[Path, int]:
    msgs = [(f"carewatch/v1/{town}/dev-{i % 7}/vitals", orjson.dumps({"i": i}))
            for i in range(n)]
    return path, write_packets(path, msgs)


def test_c_ceiling_counts_every_message_once_across_town_subscribers(tmp_path: Path) -> None:
    blasts = [_blast(tmp_path / "a.bin", "town-a", 3_000), _blast(tmp_path / "b.bin", "town-b",
                                                                  2_000)]
    # each subscriber exits after exactly its count: a town's messages reaching the wrong
    # subscriber (or none) leaves one waiting, and the call fails on its timeout
    rate = _c_ceiling([["town-a"], ["town-b"]], [3_000, 2_000], blasts, 50_000, timeout_s=60)
    assert rate > 0
    rate_one = _c_ceiling([["town-a", "town-b"]], [5_000], blasts, 50_000, timeout_s=60)
    assert rate_one > 0


def test_c_ceiling_fails_when_a_subscriber_waits_for_more(tmp_path: Path) -> None:
    blasts = [_blast(tmp_path / "a.bin", "town-a", 500)]
    try:
        _c_ceiling([["town-a"]], [501], blasts, 500, timeout_s=3)
    except subprocess.TimeoutExpired:
        return
    raise AssertionError("a subscriber short of its count must not pass")


def test_cpu_is_counted_over_the_tree_and_over_reaped_senders() -> None:
    # a child that starts a busy grandchild, then burns CPU itself until told to stop
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys\n"
         f"g = subprocess.Popen([sys.executable, '-c', {BURN.format(s=0.4)!r} + 'input()'],"
         " stdin=subprocess.PIPE)\n"
         + BURN.format(s=0.3)
         + "print('burnt', flush=True)\ninput()\ng.communicate(b'\\n')\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == b"burnt\n"
        # the grandchild's burn may still be running: wait for the tree to reach both
        # 0.3 s of the child's + 0.4 s of the grandchild's, less a clock tick or two
        wait_for(lambda: _tree_cpu_s(parent.pid) >= 0.65, 30.0, "the tree's CPU seconds")
    finally:
        assert parent.stdin is not None
        parent.stdin.write(b"\n")
        parent.stdin.close()
        parent.wait(timeout=30)
    sender = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.3)])
    assert _reap_cpu_s([sender]) >= 0.28
    assert sender.returncode == 0


def _round(rate: float, cores: float) -> dict[str, float]:
    return {"samples_per_s": rate, "broker_cores": 0.1, "senders_cores": 0.05,
            "workers_cores": cores, "worker_cpu_us_per_sample": cores / rate * 1e6}


def test_rounds_give_the_median_of_each_rounds_own_ratio() -> None:
    # the host slows down in round 2: each round's pair shares its speed, so the ratio of
    # the medians (300 / 150 = 2.0) would overstate what any one round showed
    runs = {1: [_round(100.0, 1.0), _round(150.0, 1.0), _round(200.0, 1.0)],
            2: [_round(180.0, 1.6), _round(300.0, 1.7), _round(300.0, 1.8)]}
    out = summarise_rounds(runs)
    assert out["two_over_one"] == 1.8  # ratios 1.8, 2.0, 1.5
    assert (out["two_over_one_min"], out["two_over_one_max"]) == (1.5, 2.0)
    assert out["one_worker_samples_per_s"] == 150.0
    assert out["two_workers_samples_per_s"] == 300.0
    assert out["workers_cores_two"] == 1.7


def test_wait_idle_returns_once_the_start_up_work_is_done() -> None:
    # a process that works for 0.6 CPU-s, then waits: timing must not start during the work
    child = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.6) + "input()"],
                             stdin=subprocess.PIPE)
    try:
        _wait_idle(child.pid, timeout_s=30, window_s=0.2)
        assert _tree_cpu_s(child.pid) >= 0.55
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


def test_steady_rate_leaves_out_start_up_and_tail() -> None:
    """A run that stores nothing for its first second and crawls at the end: the rate is
    the middle's, interpolated between looks."""
    seen = [(0.0, 0.0), (1.0, 0.0), (1.5, 50.0), (3.0, 200.0), (5.0, 400.0), (6.0, 450.0),
            (9.0, 500.0)]
    # 10 % (50) at 1.5 s, 90 % (450) at 6.0 s: 400 samples in 4.5 s
    assert steady_rate(seen, 500.0) == pytest.approx(400 / 4.5)
    # between looks: 25 % (125) at 2.25 s, 75 % (375) at 4.75 s
    assert steady_rate(seen, 500.0, 0.25, 0.75) == pytest.approx(250 / 2.5)
    with pytest.raises(ValueError):
        steady_rate(seen[:3], 500.0)
