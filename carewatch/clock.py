"""The one clock everything time-dependent reads.

`carewatch run` uses `WallClock`; `carewatch replay` and the tests use `SimClock`, so the
same pipeline code runs on both. Code never calls `time.time()` for decisions; it asks
the clock it was given.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Current time, Unix epoch seconds (UTC)."""
        ...

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Let `seconds` of this clock pass, or until `stop` is set; True if stopped."""
        ...


class WallClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        return stop.wait(max(0.0, seconds))


class SimClock:
    """A clock that moves only when told to; never goes backwards."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def set(self, t: float) -> None:
        with self._lock:
            if t > self._now:
                self._now = float(t)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        self.advance(seconds)
        return stop.is_set()
