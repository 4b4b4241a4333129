"""`carewatch bench decode` runs, and its capped steps are what `pipeline.batch_max_bytes`
makes of each message shape (a minute batch is ~5 KB: ~100 to a 512 KiB step)."""

from __future__ import annotations

from carewatch.bench.decode import bench_decode


def test_decode_bench_measures_both_steps_per_shape() -> None:
    out = bench_decode(samples=6_000, reps=1)
    for shape in ("single", "batch10", "minute"):
        assert out[f"{shape}_us_per_sample_capped"] > 0
        assert out[f"{shape}_us_per_sample_uncapped"] > 0
    assert 50 <= out["capped_step_msgs_minute"] <= 200
    # bigger messages, fewer to a step
    assert (out["capped_step_msgs_single"] > out["capped_step_msgs_batch10"]
            > out["capped_step_msgs_minute"])
