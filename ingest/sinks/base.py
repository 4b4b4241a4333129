"""The sink protocol and the machinery every history sink shares.

A sink receives accepted samples from the pipeline thread and stores them elsewhere,
best-effort and off the hot path. `write()` only appends the columns to a queue bounded
in rows; a worker thread owned by the sink drains it. When the queue is full the new
chunk is dropped and counted (and logged, at most every few seconds): a slow or broken
store can cost history, never ingest or detection, and never unbounded memory.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ingest.samples import SampleColumns

if TYPE_CHECKING:
    from carewatch.clock import Clock
    from config.models import Config
    from ingest.devices import DeviceTable

log = logging.getLogger(__name__)

StatValue = int | str


class Sink(Protocol):
    """Where accepted samples go for history."""

    def write(self, cols: SampleColumns) -> None:
        """Enqueue samples; never blocks, never raises (pipeline thread)."""
        ...

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything written so far is stored; False on timeout."""
        ...

    def close(self) -> None:
        """Store what can be stored, stop and join the worker thread."""
        ...

    def stats(self) -> dict[str, StatValue]:
        """Counters: queued, written, dropped_overflow, failed_batches, retries, last_error..."""
        ...


class RateLimitedLog:
    """Logs a repeated condition at most once per `every_s`, with the count since last time."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self._log, self._every = logger, every_s
        self._last = -float("inf")
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()  # operational pacing, not a decision on data time
        if now - self._last < self._every:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} similar messages suppressed)" if self._suppressed else ""
        self._log.warning(msg + extra, *args)
        self._last, self._suppressed = now, 0


def copy_columns(cols: SampleColumns) -> SampleColumns:
    """A private copy, so the pipeline may reuse its arrays after write()."""
    return SampleColumns(**{k: np.array(v, copy=True) for k, v in vars(cols).items()})


class NullSink:
    """storage.sink = none: history is not kept."""

    def write(self, cols: SampleColumns) -> None:
        return None

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def close(self) -> None:
        return None

    def stats(self) -> dict[str, StatValue]:
        return {"queued": 0, "written": 0, "dropped_overflow": 0, "failed_batches": 0,
                "retries": 0, "last_error": ""}


class BackgroundSink(ABC):
    """A bounded row queue in front of one worker thread.

    Subclasses implement `_process(batch)` (store a batch or keep it for retry) and may
    override `_maintain()` (periodic work: retries, retention) and `_finish()` (last
    chance to store, on close). Rows taken from the queue are "held" until the subclass
    calls `_release(n)` once they are stored or given up; `flush()` waits for both the
    queue and the held rows to drain.
    """

    name = "sink"
    tick_s = 0.25  # how often the worker runs _maintain() when idle
    close_timeout_s = 10.0  # how long close() waits for the worker to finish

    def __init__(self, queue_max: int, batch_max: int, linger_s: float = 0.2) -> None:
        self._queue_max = int(queue_max)
        self._batch_max = int(batch_max)
        self._linger_s = linger_s
        self._cond = threading.Condition()
        self._chunks: deque[SampleColumns] = deque()
        self._queued = 0
        self._held = 0
        self._flushing = 0
        self._stopping = False
        self._closed = False
        self._counts: dict[str, int] = {
            "written": 0, "dropped_overflow": 0, "dropped_failed": 0, "failed_batches": 0,
            "retries": 0, "write_errors": 0,
        }
        self._last_error = ""
        self._overflow_log = RateLimitedLog(log)
        self._error_log = RateLimitedLog(log)
        self._thread = threading.Thread(target=self._run, name=f"carewatch-{self.name}-sink",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ---- pipeline thread -------------------------------------------------------------
    def write(self, cols: SampleColumns) -> None:
        try:
            n = len(cols)
            if n == 0:
                return
            if self._stopping or self._queued + n > self._queue_max:
                self._overflow(n)
                return
            own = copy_columns(cols)
            with self._cond:
                if self._queued + n > self._queue_max:
                    overflow = True
                else:
                    overflow = False
                    self._chunks.append(own)
                    self._queued += n
                    if self._queued >= self._batch_max:
                        self._cond.notify_all()
            if overflow:
                self._overflow(n)
        except Exception as exc:  # a sink must never break the pipeline
            self._note_error(f"write: {exc!r}")

    def _overflow(self, n: int) -> None:
        with self._cond:
            self._counts["dropped_overflow"] += n
            total = self._counts["dropped_overflow"]
        self._overflow_log.warning("%s sink queue full (%d rows): dropped %d samples, %d in all",
                                   self.name, self._queue_max, n, total)

    # ---- any thread ------------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._queued or self._held:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(min(left, 0.1))
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout_s: float | None = None) -> None:
        timeout_s = self.close_timeout_s if timeout_s is None else timeout_s
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("%s sink worker did not stop within %.0f s", self.name, timeout_s)

    def stats(self) -> dict[str, StatValue]:
        with self._cond:
            out: dict[str, StatValue] = {"queued": self._queued, "held": self._held}
            out.update(self._counts)
            out["last_error"] = self._last_error
        out.update(self._extra_stats())
        return out

    # ---- worker thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                batch = self._take()
                if batch is not None:
                    self._guarded(self._process, batch)
                self._guarded(self._maintain)
                if batch is None and self._stopping:
                    break
            self._guarded(self._finish)
        finally:
            with self._cond:
                # whatever is still here will never be stored
                lost = self._queued + self._held
                if lost:
                    self._counts["dropped_failed"] += lost
                    log.warning("%s sink closed with %d samples not stored", self.name, lost)
                self._chunks.clear()
                self._queued = self._held = 0
                self._cond.notify_all()

    def _guarded(self, fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except Exception as exc:  # keep the worker alive whatever a store does
            log.exception("%s sink worker error", self.name)
            self._note_error(repr(exc))

    def _take(self) -> SampleColumns | None:
        with self._cond:
            if not self._accepting():
                self._cond.wait(self.tick_s)
                return None
            if not self._chunks and not self._stopping:
                self._cond.wait(self.tick_s)
            if (self._chunks and self._queued < self._batch_max and not self._stopping
                    and not self._flushing and self._linger_s > 0):
                # small chunks arrive every tick: gather a few into one transaction
                self._cond.wait_for(lambda: self._queued >= self._batch_max or self._stopping
                                    or self._flushing > 0, self._linger_s)
            if not self._chunks:
                return None
            parts: list[SampleColumns] = []
            n = 0
            while self._chunks and n < self._batch_max:
                chunk = self._chunks.popleft()
                room = self._batch_max - n
                if len(chunk) > room:
                    idx = np.arange(len(chunk))
                    self._chunks.appendleft(chunk.take(idx[room:]))
                    chunk = chunk.take(idx[:room])
                parts.append(chunk)
                n += len(chunk)
            self._queued -= n
            self._held += n
        return SampleColumns.concat(parts)

    def _release(self, n: int, *, written: bool, counted_as: str | None = None) -> None:
        """`n` held rows are done: stored (`written`) or given up for good, counted as
        such unless `counted_as` names another outcome (e.g. nothing there to store)."""
        with self._cond:
            self._held = max(0, self._held - n)
            key = counted_as or ("written" if written else "dropped_failed")
            self._counts[key] = self._counts.get(key, 0) + n
            self._cond.notify_all()

    def _count(self, key: str, n: int = 1) -> None:
        with self._cond:
            self._counts[key] = self._counts.get(key, 0) + n

    def _note_error(self, text: str) -> None:
        with self._cond:
            self._last_error = text[:500]
            self._counts["write_errors"] += 1
        self._error_log.warning("%s sink: %s", self.name, text)

    def _clear_error(self) -> None:
        with self._cond:
            self._last_error = ""

    # ---- subclass hooks --------------------------------------------------------------
    def _accepting(self) -> bool:
        """False while the store is saturated: leave rows in the bounded queue."""
        return True

    @abstractmethod
    def _process(self, batch: SampleColumns) -> None:
        """Write one batch to the store (on the sink's thread)."""

    def _maintain(self) -> None:
        return None

    def _finish(self) -> None:
        return None

    def _extra_stats(self) -> dict[str, StatValue]:
        return {}


def build_sink(config: Config, devices: DeviceTable, clock: Clock | None = None) -> Sink:
    """The sink named by `config.storage.sink`, started."""
    kind = config.storage.sink
    if kind == "none":
        return NullSink()
    if kind == "sqlite":
        from ingest.sinks.sqlite import SqliteSink

        return SqliteSink(config.storage.sqlite.path, devices, settings=config.storage.sqlite,
                          clock=clock)
    if kind == "influxdb":
        from ingest.sinks.influx import InfluxSink

        return InfluxSink(config.storage.influxdb, devices)
    raise ValueError(f"unknown storage.sink {kind!r}")
