"""Decode benchmark: CPU per sample of `VitalsDecoder.decode_vitals` by pipeline step, for
single-sample, 10-sample and minute (60-sample) messages.

A step is what the pipeline drains from its inbox and decodes in one call. A backlog (after
an outage, or a worker behind its traffic) used to be drained 20,000 messages at a time
(`pipeline.batch_max`): with minute batches, a 1.2 M-sample table of ~150 MB, past every
cache. `pipeline.batch_max_bytes` caps a step by payload size too; this measures both.
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
    (`*_uncapped`) and with the byte cap as well (`*_capped`, `capped_step_msgs_*`)."""
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
    return out
