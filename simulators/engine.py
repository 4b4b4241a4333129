"""A simulation run: physiology + events over a time span, chunk by chunk.

`Simulation` is shared by the recorder (replay files) and the live fleet (MQTT); it yields
sample chunks in time order with events applied, and knows the truth and status messages.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from config.models import Config
from simulators.events import Event, EventSet, apply_events, random_events
from simulators.physiology import Chunk, Physiology
from simulators.truth import offline_status, truth_records

TARGET_CHUNK_SAMPLES = 72_000  # residents x samples per chunk: ~20 MB of text in flight


@dataclass
class Simulation:
    """Everything one run needs; `hours=None` runs until the caller stops iterating."""

    config: Config
    seed: int
    t0: float
    interval_s: float = 10.0
    hours: float | None = 24.0
    batch: int = 1
    scenario_events: list[Event] = field(default_factory=list)
    random_rate: float = 0.0
    chunk_s: float | None = None

    def __post_init__(self) -> None:
        self.phys = Physiology.create(self.config, self.seed, self.t0, self.interval_s)
        horizon = self.hours if self.hours is not None else 24.0 * 30
        rand = random_events(self.phys, self.random_rate, horizon, self.seed,
                             existing=self.scenario_events) if self.random_rate > 0 else []
        self.events = EventSet(list(self.scenario_events) + rand, self.seed)
        n = max(1, self.phys.pop.n)
        per = self.chunk_s / self.interval_s if self.chunk_s else TARGET_CHUNK_SAMPLES / n
        self.chunk_len = max(self.batch, int(per) // self.batch * self.batch)

    @property
    def total_samples(self) -> int | None:
        """Samples per resident, rounded up to whole batches."""
        if self.hours is None:
            return None
        k = math.ceil(self.hours * 3600 / self.interval_s)
        return -(-k // self.batch) * self.batch

    @property
    def end_t(self) -> float | None:
        total = self.total_samples
        return None if total is None else self.t0 + total * self.interval_s

    def truth(self) -> list[dict[str, Any]]:
        return truth_records(self.events.events, self.phys)

    def status_changes(self) -> list[tuple[float, int, dict[str, Any]]]:
        """(true time, row, payload) of offline/online status messages."""
        return offline_status(self.events.events, self.phys)

    def _make(self, k0: int, k1: int) -> Chunk:
        chunk = self.phys.chunk(k0, k1)
        apply_events(chunk, self.phys, self.events)
        return chunk

    def chunks(self, prefetch: bool = True) -> Iterator[Chunk]:
        """Chunks in time order; the next one is generated on a worker thread meanwhile
        (NumPy releases the GIL, so generation and encoding overlap on two cores)."""
        total = self.total_samples
        bounds: Iterator[tuple[int, int]] = (
            (k, k + self.chunk_len if total is None else min(total, k + self.chunk_len))
            for k in range(0, total if total is not None else 1 << 62, self.chunk_len)
        )
        if not prefetch:
            for k0, k1 in bounds:
                yield self._make(k0, k1)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="sim-gen") as pool:
            nxt = next(bounds, None)
            fut = pool.submit(self._make, *nxt) if nxt else None
            while fut is not None:
                chunk = fut.result()
                nxt = next(bounds, None)
                fut = pool.submit(self._make, *nxt) if nxt else None
                yield chunk

    def chunk_bounds_t(self, k1: int) -> float:
        """Earliest true time of any sample with index >= k1."""
        return self.t0 + k1 * self.interval_s
