"""Decode benchmark: CPU per sample of `VitalsDecoder.decode_vitals` by pipeline step, for
single-sample, 10-sample and minute (60-sample) messages, and how long one step takes.

A step is what the pipeline drains from its inbox and decodes in one call. A backlog (after
an outage, or a worker behind its traffic) used to be drained 20,000 messages at a time
(`pipeline.batch_max`): with minute batches, 1.2 M samples and a ~150 MB table in one call,
during which no tick runs. `pipeline.batch_max_bytes` caps a step by payload size too, which
bounds a step's time and memory, so ticks stay on time while a backlog drains; what a sample
costs either way is measured here (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import time

from carewatch.bench.scale import fleet_messages
from config.generate import demo_registry
from config.loader import parse_config
from config.models import PipelineSettings
from ingest.decode import VitalsDecoder
from ingest.devices import DeviceTable


def _us_per_sample(dec: VitalsDecoder, msgs: list[tuple[str, bytes, float]], step: int,
                   now: float) -> float:
    n = 0
    t0 = time.process_time()
    for i in range(0, len(msgs), step):
        n += len(dec.decode_vitals(msgs[i:i + step], now).samples)
    return (time.process_time() - t0) / n * 1e6


def _compare(dec: VitalsDecoder, msgs: list[tuple[str, bytes, float]], steps: list[int],
             reps: int, now: float) -> list[float]:
    """Best µs per sample of each step size; one untimed pass first, then the sizes in
    turns whose order alternates (whatever runs first in a process pays for warming up)."""
    _us_per_sample(dec, msgs, steps[-1], now)
    best = [float("inf")] * len(steps)
    for rep in range(reps):
        order = range(len(steps)) if rep % 2 == 0 else reversed(range(len(steps)))
        for k in order:
            best[k] = min(best[k], _us_per_sample(dec, msgs, steps[k], now))
    return best


def bench_decode(samples: int = 600_000, reps: int = 4) -> dict[str, float]:
    """µs of CPU per decoded sample with steps of `pipeline.batch_max` messages
    (`*_uncapped`) and with the byte cap as well (`*_capped`, `capped_step_msgs_*`), and the
    time of one full step of a backlog each way (`*_step_ms_*`)."""
    config = parse_config(demo_registry(1_000, seed=0))
    dec = VitalsDecoder(DeviceTable.from_config(config))
    settings = PipelineSettings()
    now = time.time()
    out: dict[str, float] = {}
    for batch, name in ((1, "single"), (10, "batch10"), (60, "minute")):
        per_device = max(batch, samples // len(config.residents) // batch * batch)
        msgs = [(t, p, now) for t, p in fleet_messages(config.residents, per_device, batch,
                                                  now - 86_400)]
        capped = max(1, settings.batch_max_bytes // len(msgs[0][1]))
        uncapped, out[f"{name}_us_per_sample_capped"] = _compare(
            dec, msgs, [settings.batch_max, capped], reps, now)
        out[f"{name}_us_per_sample_uncapped"] = uncapped
        out[f"capped_step_msgs_{name}"] = float(capped)
        out[f"{name}_uncapped_over_capped"] = uncapped / out[f"{name}_us_per_sample_capped"]
        # one full step of a backlog: batch_max messages, or what the byte cap lets through
        out[f"{name}_step_ms_uncapped"] = uncapped * settings.batch_max * batch / 1e3
        out[f"{name}_step_ms_capped"] = out[f"{name}_us_per_sample_capped"] * capped * batch / 1e3
    return out
