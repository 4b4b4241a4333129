"""Run detector ticks in process on the benchmark's shape (`detectors.bench`: one sample a
device a tick, a fitted baseline), for counting their instructions with callgrind, which
repeats to about 1 % where timing on this machine moves by ±15 % (docs/benchmarks.md,
fourteenth session).

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python scripts/detect_steps.py 10 all
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python scripts/detect_steps.py 0 all

The difference of the two "Collected" counts, divided by 10, is one tick of the named
detectors (`all`, or registry names joined by commas: name every member of a linked group,
e.g. `inactivity,not_worn`, as the first to ask runs the group's tick). Both runs warm up
with 5 ticks of every detector, then append 10 more ticks' samples; only the first run
hands those ticks to the named detectors. A third argument sets the fleet (10,000).
Run with PYTHONHASHSEED=0 and OPENBLAS_NUM_THREADS=1 for the steadiest counts.
"""

from __future__ import annotations

import sys

import numpy as np

from carewatch.malloc import keep_heap_pages
from detectors.base import TickState
from detectors.bench import T0, _vector_side, tick_samples
from detectors.registry import DETECTORS

WARM, TICKS = 5, 10


def main(argv: list[str]) -> None:
    counted, names = int(argv[1]), argv[2]
    n = int(argv[3]) if len(argv) > 3 else 10_000
    keep_heap_pages()
    store, devices, detectors = _vector_side(n)
    unknown = set(names.split(",")) - {"all", *DETECTORS}
    if unknown:
        raise SystemExit(f"unknown detectors: {', '.join(sorted(unknown))}")
    chosen = [d for name, d in zip(DETECTORS, detectors, strict=True)
              if names == "all" or name in names.split(",")]
    rng = np.random.default_rng(0)
    batches = [tick_samples(n, T0 + i + 1, rng) for i in range(WARM + TICKS)]
    for i, batch in enumerate(batches):
        now = T0 + i + 1
        store.append(batch, now)
        state = TickState(new=store.take_pending(), store=store, devices=devices,
                          started_at=T0, utc_offset_s=8 * 3600.0)
        run = detectors if i < WARM else chosen if counted else []
        for d in run:
            d.update(state, now)


if __name__ == "__main__":
    main(sys.argv)
