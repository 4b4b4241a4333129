"""AlertEngine: findings in, durable alerts, contract events and notifications out.

The pipeline thread calls `on_findings(findings, now)` and `tick(now)` on whatever clock
drives it (wall clock in `run`, simulated in `replay`); people call `ack`, `dispatch`,
`resolve` and `silence` (console, replay's ack lines, MQTT commands). Every change is one
store transaction, committed before its events are published (MQTT, QoS 1) and handed to
listeners; webhook notices leave through the outbox on worker threads. No APScheduler: the
pipeline already ticks every `pipeline.tick_s` (1 s), and deadlines are data checked in
`tick`, so live and replay share one decision function.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alerts.deadlines import Deadlines
from alerts.delivery import Dispatcher, group_rows, load_secret
from alerts.engine_api import EngineApi
from alerts.engine_findings import EngineFindings
from alerts.lifecycle import Lifecycle, Step
from alerts.model import (
    Alert,
    default_message,
    json_scalar,
)
from alerts.noise import silence_matches
from alerts.outbox import EventOutbox
from alerts.pg_refresh import follower_for
from alerts.routing import Router
from alerts.store import AlertStore, SqliteAlertStore
from alerts.store_pg_base import StaleAlertError
from carewatch.clock import Clock
from config.models import Config
from detectors.base import Findings
from ingest.devices import DeviceTable
from ingest.publish import Publisher

log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]


class AlertEngine(EngineFindings, EngineApi):
    """The alert path. Thread-safe: one lock serialises every change."""

    def __init__(self, config: Config, devices: DeviceTable, clock: Clock, publisher: Publisher,
                 data_dir: Path | str,
                 message_for: Callable[[str, str, dict[str, Any]], str] | None = None,
                 deterministic_ids: bool = False, store: AlertStore | None = None,
                 webhook_secret: bytes | None = None, send_notifications: bool = True) -> None:
        self.config, self.devices, self.clock = config, devices, clock
        self._publisher = publisher
        settings = config.alerts
        if store is None and config.storage.alerts_backend == "postgresql":
            from alerts.store_pg import open_pg_store  # psycopg only when it is used

            store = open_pg_store(config.storage.postgresql)
        self.store: AlertStore = store or SqliteAlertStore(
            Path(data_dir) / settings.db_file, settings.sqlite_synchronous)
        self.router = Router(config)
        self.life = Lifecycle(config, self.router, message_for or default_message)
        self.deterministic_ids = deterministic_ids
        # False (e.g. replay): notices are still recorded in the outbox, never sent.
        self.send_notifications = send_notifications
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._open: dict[tuple[str, str], Alert] = {}
        self._by_id: dict[str, Alert] = {}
        self._deadlines = Deadlines()
        # order of first indexing: due alerts are handled in it, as a scan of _by_id would
        self._rank: dict[str, int] = {}
        self._ranks = itertools.count()
        self._sev: dict[str, np.ndarray] = {}  # kind -> per-row open severity (0: none)
        self._cond: dict[str, np.ndarray] = {}  # kind -> per-row condition_active
        self._evidence: dict[str, dict[str, np.ndarray]] = {}  # kind -> key -> per-row latest
        self._noted: set[tuple[str, str, str]] = set()  # (resident, kind, why) audited once
        self._counter = int(self.store.meta("counter", 0))
        self._silences = {s["silence_id"]: s for s in self.store.active_silences()}
        self._follower = follower_for(self.store)  # shared store: before the load below
        for alert in self.store.open_alerts():
            # a shared store holds other workers' alerts too: escalating one of those here,
            # with no route to its resident's staff, would notify nobody (and win the race)
            if alert.resident_id in self.devices.row_of_resident:
                self._index(alert)
        self._unsynced: set[str] = set()  # alerts to take again from the store (`_rollback`)
        # (row, kind) -> severity of a condition going on whose alert a silence or an
        # inhibiting alert held back: detectors report a condition once, when it begins, so
        # it opens when that ends (`_release_held`) unless its clear came first
        self._held: dict[tuple[int, str], int] = {}
        # events to the broker, marked published once delivered; a crashed run's first
        self.outbox = EventOutbox(self.store, publisher)
        if webhook_secret is None:
            webhook_secret = load_secret(settings.webhook_secret_file, settings.webhook_secret_env,
                                         "alerts.webhook_secret_file")
        self.dispatcher = Dispatcher(
            self.store, clock, secret=webhook_secret, timeout_s=settings.webhook_timeout_s,
            retry_base_s=settings.retry_base_s, retry_cap_s=settings.retry_cap_s,
            max_attempts=settings.retry_max_attempts, workers=settings.workers,
            queue_max=settings.queue_max)
        self._nonces: dict[str, float] = {}
        self.command_secret = load_secret(settings.command_secret_file,
                                          settings.command_secret_env,
                                          "alerts.command_secret_file")
        self._closed = False

    # ---- bookkeeping -------------------------------------------------------------------
    def _arrays(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        if kind not in self._sev:
            n = len(self.devices)
            self._sev[kind] = np.zeros(n, np.int8)
            self._cond[kind] = np.zeros(n, bool)
            self._evidence[kind] = {}
        return self._sev[kind], self._cond[kind]

    def _index(self, alert: Alert) -> None:
        self._open[(alert.resident_id, alert.kind)] = alert
        if alert.alert_id not in self._by_id:
            self._rank[alert.alert_id] = next(self._ranks)
        self._by_id[alert.alert_id] = alert
        self._deadlines.watch(alert)
        row = self.devices.row_of_resident.get(alert.resident_id)
        if row is not None:
            sev, cond = self._arrays(alert.kind)
            sev[row], cond[row] = alert.severity, alert.condition_active

    def _unindex(self, alert: Alert) -> None:
        self._open.pop((alert.resident_id, alert.kind), None)
        self._by_id.pop(alert.alert_id, None)
        self._rank.pop(alert.alert_id, None)
        row = self.devices.row_of_resident.get(alert.resident_id)
        if row is not None and alert.kind in self._sev:
            self._sev[alert.kind][row], self._cond[alert.kind][row] = 0, False
            for col in self._evidence[alert.kind].values():
                col[row] = None
        for key in [k for k in self._noted if k[0] == alert.resident_id]:
            self._noted.discard(key)

    def _onset(self, kind: str, row: int) -> Any:
        """The latest finding of `kind` on `row`: when its condition began (None: unknown)."""
        col = self._evidence.get(kind, {}).get("onset_ts")
        return None if col is None else json_scalar(col[row])

    def _refresh_evidence(self, alert: Alert) -> None:
        """Fold the latest repeat-finding evidence (kept as columns) into the alert."""
        row = self.devices.row_of_resident.get(alert.resident_id)
        if row is None:
            return
        for key, col in self._evidence.get(alert.kind, {}).items():
            value = col[row]
            if value is not None:
                alert.evidence[key] = json_scalar(value)

    def _new_id(self, resident_id: str, kind: str, now: float) -> str:
        self._counter += 1
        if not self.deterministic_ids:
            return uuid.uuid4().hex
        seed = f"{resident_id}|{kind}|{now:.3f}|{self._counter}".encode()
        return "al-" + hashlib.sha1(seed).hexdigest()[:16]

    def _silenced(self, resident_id: str, device_id: str, kind: str, now: float) -> str | None:
        for sid, s in self._silences.items():
            if silence_matches(s, resident_id, device_id, kind, now):
                return sid
        return None

    # ---- commit and announce -----------------------------------------------------------
    @property
    def publisher(self) -> Publisher:
        """Where events and command results go (replaceable: tests swap in a failing one)."""
        return self._publisher

    @publisher.setter
    def publisher(self, publisher: Publisher) -> None:
        self._publisher = self.outbox.publisher = publisher

    def add_listener(self, fn: Listener) -> None:
        """Call `fn(event)` for every contract event after it is stored (in order, this thread)."""
        with self._lock:
            self._listeners.append(fn)

    def _finish(self, step: Step) -> None:
        if not step.txn:
            return
        for alert in step.txn.alerts:  # a deadline may have moved (queued even if this fails)
            self._deadlines.watch(alert)
        step.txn.meta["counter"] = self._counter
        self.outbox.resend_unpublished()  # a crashed run's events first (before ours are stored)
        try:
            seqs = self.store.commit(step.txn)
        except StaleAlertError:
            # A shared store refused the whole step: another instance changed one of its
            # alerts. Our copies of them are ahead of the store now; take the stored ones.
            self._reload([a.alert_id for a in step.txn.alerts])
            raise
        except Exception:
            self._rollback(step)
            raise
        for seq, (topic, doc) in zip(seqs, step.announce, strict=True):
            self._announce(topic, doc, seq)
        self.outbox.confirm()

    def _rollback(self, step: Step) -> None:
        """After a commit that stored nothing (a lost connection, a full disk): take back
        what the step changed in memory, so that its alerts escalate as stored and a retry
        (a console ack) is not refused as already done. While the store cannot be read
        either, they are taken again at the next tick (`_resync`)."""
        self._unsynced.update(a.alert_id for a in step.txn.alerts)
        if step.txn.silences:
            self._unsynced.add("")  # "" stands for the silences
        try:
            self._resync()
        except Exception:
            log.exception("alert store unreadable after a failed commit; retrying next tick")

    def _resync(self) -> None:
        if not self._unsynced:
            return
        ids = sorted(self._unsynced)
        if "" in ids:
            self._silences = {s["silence_id"]: s for s in self.store.active_silences()}
        self._reload([i for i in ids if i])
        self._unsynced.clear()

    def _reload(self, alert_ids: list[str]) -> None:
        """Replace our copies of these alerts by the stored ones (drop them if resolved or
        never stored)."""
        for alert_id in dict.fromkeys(alert_ids):
            stored = self.store.get_alert(alert_id)  # first: if reading fails, ours stays
            cached = self._by_id.get(alert_id)
            if cached is not None:
                self._unindex(cached)
            if stored is not None and stored.is_open:
                self._index(stored)

    def _announce(self, topic: str, doc: dict[str, Any], seq: int) -> None:
        self.outbox.send(seq, topic, doc)
        for fn in self._listeners:
            try:
                fn(doc)
            except Exception:  # one broken listener must not stop the others or the pipeline
                log.exception("alert listener %r failed", fn)

    # ---- findings ----------------------------------------------------------------------
    def on_findings(self, findings: list[Findings], now: float) -> None:
        """Open, raise, clear or update alerts from one tick's findings."""
        with self._lock:
            for attempt in range(3):
                held = dict(self._held)
                step = Step()
                for f in findings:
                    if len(f):
                        self._apply(f, now, step)
                self._release_held(now, step)  # e.g. an offline device's backlog cleared it
                try:
                    self._finish(step)
                    return
                except StaleAlertError:  # reloaded: apply again to the stored alerts
                    self._held = held
                    if attempt == 2:
                        raise
                except Exception:
                    self._held = held
                    raise

    # ---- timers ------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Escalations, tier-4 re-notifications, silence expiry and notices due by `now`."""
        with self._lock:
            if self._follower is not None:  # other instances' acks, resolves, new alerts
                self._follower.refresh(self)
            self._resync()
            step = Step()
            self.outbox.resend_unpublished()
            self.outbox.confirm()
            for sid, s in list(self._silences.items()):
                if s["until"] <= now:
                    s = {**s, "active": False}
                    del self._silences[sid]
                    step.txn.silences.append(s)
                    step.txn.audit.append((now, None, s.get("resident_id"), "system",
                                           "silence_expired", {"silence_id": sid}))
            self._finish_releasing(step, now)
            for attempt in range(3):
                due = self._deadlines.pop_due(now, self._by_id)
                if not due:
                    break  # most ticks
                due.sort(key=lambda a: self._rank[a.alert_id])
                step = Step()
                try:
                    for alert in due:
                        if self._silenced(alert.resident_id, alert.device_id, alert.kind,
                                          now) is None:
                            self._refresh_evidence(alert)
                            self.life.due(step, alert, now)
                    self._finish(step)
                    break
                except StaleAlertError:  # reloaded (acked elsewhere?): decide again
                    if attempt == 2:
                        raise
                finally:
                    # back on the queue as now held: moved on, or still due (silenced, or
                    # its step failed)
                    for alert in due:
                        held = self._by_id.get(alert.alert_id)
                        if held is not None:
                            self._deadlines.watch(held)
        self._send_due(now)

    def _send_due(self, now: float) -> None:
        if not self.send_notifications:
            return
        rows = self.store.due_outbox(now, self.dispatcher.inflight(), 500)
        for batch in group_rows(rows):
            if not self.dispatcher.offer(batch):
                break

    def next_deadline(self) -> float | None:
        """The earliest escalation deadline (lets a live loop sleep until it)."""
        with self._lock:
            at = self._earliest_deadline()
            return at if np.isfinite(at) else None

    def _earliest_deadline(self) -> float:
        return self._deadlines.earliest(self._by_id)

    def close(self) -> None:
        """Stop the delivery workers and close the store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.outbox.confirm()  # the rest stay unpublished: sent again at the start
        self.dispatcher.close()
        self.store.close()
