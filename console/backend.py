"""What the console reads and acts on, and how it crosses threads safely.

The pipeline thread owns the StateStore and mutates it without locks, so every read of it
(`snapshot`, `minute_series`) runs *on* the pipeline thread through `call` (Service.submit
hands back a Future). The AlertEngine is thread-safe (one lock serialises every change),
so actions call it directly and get their result or error at once; its events reach the
console through an engine listener. With no pipeline thread (tests, tools), calls run
inline under a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from prometheus_client import CollectorRegistry

from alerts.engine import AlertEngine
from alerts.store import Txn
from carewatch.clock import Clock
from carewatch.pipeline import Pipeline
from config.models import Config
from ingest.devices import DeviceTable
from ingest.minutes import MinuteSeries
from ingest.samples import VITALS
from ingest.state import StateStore

T = TypeVar("T")
Submit = Callable[[Callable[[], Any]], "Future[Any]"]


class BackendUnavailable(RuntimeError):
    """The pipeline is stopping or did not answer in time."""


class PastDeadline(RuntimeError):
    """The request's deadline passed before the pipeline thread came to it: not done."""


# The deadline (epoch s) of the request being served, when its sender set one (the district
# console's actions: `console.app._Deadline`); inf otherwise.
REQUEST_DEADLINE: ContextVar[float] = ContextVar("request_deadline", default=float("inf"))


def _by(deadline: float, fn: Callable[[], T]) -> Callable[[], T]:
    """`fn`, refused if the pipeline thread comes to it after `deadline`: its sender has
    told staff by then that it was not done (a busy tick held it back)."""
    def guarded() -> T:
        if time.time() > deadline:
            raise PastDeadline("the pipeline came to it after its deadline")
        return fn()
    return guarded


@dataclass(frozen=True)
class Snapshot:
    """Copies of the per-device scalars the console shows, taken on the pipeline thread."""

    now: float
    started_at: float
    last_received: np.ndarray
    last_ts: np.ndarray
    worn: np.ndarray
    battery: np.ndarray
    online: np.ndarray
    status_ts: np.ndarray  # when `online` was set (pipeline clock), NaN if never
    latest: dict[str, np.ndarray]
    latest_ts: dict[str, np.ndarray]


class ConsoleBackend:
    """The pipeline's state, alert engine and settings, as the console needs them."""

    def __init__(self, config: Config, clock: Clock, alerts: AlertEngine, state: StateStore,
                 devices: DeviceTable, data_dir: Path, registry: CollectorRegistry,
                 ready: Callable[[], dict[str, object]], started_at: float,
                 submit: Submit | None = None, history_db: Path | None = None,
                 timeout_s: float = 5.0,
                 monitoring: Callable[[], dict[str, Any]] | None = None) -> None:
        self.config, self.clock, self.alerts, self.state = config, clock, alerts, state
        self.devices, self.data_dir, self.registry = devices, Path(data_dir), registry
        self.ready, self.started_at = ready, started_at
        # is anyone's data reaching the detectors (carewatch.health.Health.monitoring)
        self.monitoring = monitoring or (lambda: {"state": "ok", "now": self.clock.now(),
                                                  "problems": []})
        self._submit = submit
        self._inline = threading.Lock()
        self.timeout_s = timeout_s
        self.history_db = history_db

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline, data_dir: Path, *, submit: Submit | None = None,
                      ready: Callable[[], dict[str, object]] | None = None,
                      monitoring: Callable[[], dict[str, Any]] | None = None
                      ) -> ConsoleBackend:
        """A backend over a built pipeline (its `alerts` must be an AlertEngine)."""
        config = pipeline.config
        if not isinstance(pipeline.alerts, AlertEngine):
            raise TypeError("the console needs the pipeline's AlertEngine")
        history = None
        if config.storage.sink == "sqlite":
            history = Path(config.storage.sqlite.path)
        return cls(config, pipeline.clock, pipeline.alerts, pipeline.store, pipeline.devices,
                   data_dir, pipeline.metrics.registry,
                   ready or (lambda: {"pipeline_running": True}), pipeline.started_at,
                   submit=submit, history_db=history, monitoring=monitoring)

    # ---- pipeline-thread hand-off -------------------------------------------------------
    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` where the StateStore may be read (the pipeline thread) and return its
        result; BackendUnavailable if the pipeline is stopping or busy past the timeout."""
        if self._submit is None:
            with self._inline:
                return fn()
        deadline = REQUEST_DEADLINE.get()
        if deadline != float("inf"):
            fn = _by(deadline, fn)
        fut = None
        try:
            fut = self._submit(fn)
            return cast(T, fut.result(timeout=self.timeout_s))
        except TimeoutError as exc:
            # withdrawn unless already running: a busy pipeline must not work later through
            # reads nobody waits for (a console polling every few seconds would pile them up)
            if fut is not None and not fut.cancel():
                try:
                    return cast(T, fut.result(timeout=self.timeout_s))
                except TimeoutError:
                    pass
            raise BackendUnavailable("the pipeline did not answer in time") from exc
        except RuntimeError as exc:
            if isinstance(exc, BackendUnavailable | PastDeadline):
                raise
            raise BackendUnavailable(str(exc)) from exc

    def snapshot(self) -> Snapshot:
        s, clock, started = self.state, self.clock, self.started_at

        def take() -> Snapshot:
            return Snapshot(
                now=clock.now(), started_at=started, last_received=s.last_received.copy(),
                last_ts=s.last_ts.copy(), worn=s.worn.copy(), battery=s.battery.copy(),
                online=s.online.copy(), status_ts=s.status_ts.copy(),
                latest={v: s.latest[v].copy() for v in VITALS},
                latest_ts={v: s.latest_ts[v].copy() for v in VITALS})

        return self.call(take)

    def minute_series(self, row: int, minutes: int) -> MinuteSeries:
        s, clock = self.state, self.clock
        return self.call(lambda: s.minute_series(np.array([row]), clock.now(), minutes))

    # ---- audit ---------------------------------------------------------------------------
    def audit(self, actor: str, action: str, *, resident_id: str | None = None,
              alert_id: str | None = None, detail: dict[str, Any] | None = None) -> None:
        """Append a console entry (reads, sign-ins) to the alert store's audit log."""
        txn = Txn(audit=[(self.clock.now(), alert_id, resident_id, actor, action,
                          dict(detail or {}))])
        self.alerts.store.commit(txn)
