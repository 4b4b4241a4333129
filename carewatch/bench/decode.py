"""Decode benchmark: CPU per sample of `VitalsDecoder.decode_vitals` by pipeline step, for
single-sample, 10-sample and minute (60-sample) messages, and how long one step takes.

A step is what the pipeline drains from its inbox and decodes in one call. A backlog (after
an outage, or a worker behind its traffic) used to be drained 20,000 messages at a time
(`pipeline.batch_max`): with minute batches, 1.2 M samples and a ~150 MB table in one call,
during which no tick runs. `pipeline.batch_max_bytes` caps a step by payload size too. The
cost per sample is the same either way (measured here); the cap bounds a step's time and
memory, so ticks stay on time while a backlog drains.
"""

from __future__ import annotations

import time

from carewatch.bench.scale import _messages
from config.generate import demo_registry
from config.loader import parse_config
from config.models import PipelineSettings
from ingest.decode import VitalsDecoder
from ingest.devices import DeviceTable


def _us_per_sample(dec: VitalsDecoder, msgs: list[tuple[str, bytes, float]], step: int,
                   reps: int, now: float) -> float:
    best = float("inf")
    for _ in range(reps):
        n = 0
        t0 = time.process_time()
        for i in range(0, len(msgs), step):
            n += len(dec.decode_vitals(msgs[i:i + step], now).samples)
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def bench_decode(samples: int = 600_000, reps: int = 2) -> dict[str, float]:
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
        msgs = [(t, p, now) for t, p in _messages(config.residents, per_device, batch,
                                                  now - 86_400)]
        capped = max(1, settings.batch_max_bytes // len(msgs[0][1]))
        uncapped = _us_per_sample(dec, msgs, settings.batch_max, reps, now)
        out[f"{name}_us_per_sample_uncapped"] = uncapped
        out[f"{name}_us_per_sample_capped"] = _us_per_sample(dec, msgs, capped, reps, now)
        out[f"capped_step_msgs_{name}"] = float(capped)
        out[f"{name}_uncapped_over_capped"] = uncapped / out[f"{name}_us_per_sample_capped"]
        # one full step of a backlog: batch_max messages, or what the byte cap lets through
        out[f"{name}_step_ms_uncapped"] = uncapped * settings.batch_max * batch / 1e3
        out[f"{name}_step_ms_capped"] = out[f"{name}_us_per_sample_capped"] * capped * batch / 1e3
    return out
