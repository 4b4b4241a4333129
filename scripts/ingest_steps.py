"""Run the pipeline thread's work on the batch-ingest shape in process: for counting its
instructions with callgrind, which repeats to 0.3 % where timing on this machine moves by
±15 % (docs/benchmarks.md, thirteenth session).

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python scripts/ingest_steps.py 20
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python scripts/ingest_steps.py 0

(the difference of the two "Collected" counts, divided by 20 x 600 x 10 samples). Each step
handles 600 ten-sample messages of two devices, as `carewatch bench ingest` sends them, and
every tenth step is followed by a tick.
"""

from __future__ import annotations

import sys

import orjson

from carewatch.clock import SimClock
from carewatch.pipeline import Pipeline
from config.generate import demo_registry
from config.loader import parse_config
from config.models import Config
from ingest.publish import ListPublisher

NOW = 1_790_000_000.0
PER_STEP, BATCH = 600, 10


def steps(config: Config, n: int) -> list[list[tuple[str, bytes, float]]]:
    """`n` steps of messages, every sample distinct, in time order per device."""
    out, i, t0 = [], 0, NOW - 24 * 3600
    for _ in range(n):
        step = []
        for _ in range(PER_STEP):
            r = config.residents[i % 2]
            k0 = (i // 2) * BATCH
            samples = [{"ts": round(t0 + (k0 + k) * 0.01, 3), "seq": k0 + k, "hr": 70 + k % 5,
                        "spo2": 97, "rr": 14, "activity": 0.05, "worn": True}
                       for k in range(BATCH)]
            step.append((f"carewatch/v1/{r.town}/{r.device}/vitals",
                         orjson.dumps({"samples": samples}), NOW))
            i += 1
        out.append(step)
    return out


MAX_STEPS = 20


def main(n: int) -> None:
    """Handle `n` (at most MAX_STEPS) steps; the messages of MAX_STEPS are made either way,
    so that two counts differ by the handling alone."""
    if not 0 <= n <= MAX_STEPS:
        raise SystemExit(f"steps: 0 to {MAX_STEPS}, not {n}")
    config = parse_config(demo_registry(21, seed=0))
    pipeline = Pipeline(config, SimClock(NOW), ListPublisher())
    work = steps(config, 2 + MAX_STEPS)
    for step in work[:2]:  # warm: first-call costs are set-up, counted on both sides
        pipeline.handle(step)
    pipeline.tick(NOW)
    for k, step in enumerate(work[2:2 + n]):
        pipeline.handle(step)
        if k % 10 == 9:
            pipeline.tick(NOW)


if __name__ == "__main__":
    main(int(sys.argv[1]))
