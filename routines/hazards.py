"""Hazard alerts of completed tasks: raised only for a completion that was stored.

A completion with a hazard is committed first, together with a *pending alert* marker in
the task store's meta (`hazard_alert:<task_id>`: what `raise_manual` needs). Then, under the
same routines lock, the alert is raised and a second commit records its id on the task (log
action `alert_opened`) and deletes the marker. So a completion the store refused (another
instance completed the task first) opens no alert, and a stored one always leads to its
alert: if the process stops, or the alert engine fails, between the two commits, the marker
stays and a later tick raises the alert and records it (at least once: a marker older than
`GRACE_S`, so that another instance does not take one still being handled; an alert raised
twice for the same resident while the first is open updates that one, as `raise_manual`
merges reports of one kind).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from typing import Any

from alerts.model import HAZARD_KIND
from routines.model import Task
from routines.store import StaleTaskError, TaskStore, TaskTxn

log = logging.getLogger(__name__)
PREFIX = "hazard_alert:"
GRACE_S = 60.0  # a marker younger than this may still be in its completer's hands


def marker_key(task_id: str) -> str:
    return PREFIX + task_id


def marker(task: Task, *, by: str, severity: str, now: float) -> dict[str, Any]:
    """The pending alert of a completion with a hazard."""
    return {"task_id": task.task_id, "kind": task.kind, "resident_id": task.resident_id,
            "town_id": task.town_id, "severity": severity, "by": by,
            "note": task.hazard, "at": now}


def raise_alert(alerts: Any, pending: dict[str, Any], now: float) -> str:
    """Open (or update) the resident's hazard alert; its id."""
    alert = alerts.raise_manual(
        pending["resident_id"], kind=HAZARD_KIND, severity=pending["severity"],
        by=pending["by"], note=pending["note"], now=now,
        evidence={"task_id": pending["task_id"], "routine": pending["kind"]})
    return str(alert.alert_id)


def record(store: TaskStore, task: Task | None, task_id: str, alert_id: str, actor: str,
           at: float) -> Task | None:
    """Store `alert_id` on the task (`task`: the copy last committed, or None to read it)
    and delete its marker; a stale copy is read again once. Returns the task as stored (None:
    no such task). A task that already has an alert keeps it; the marker goes all the same."""
    key = marker_key(task_id)
    for attempt in (0, 1):
        if task is None:
            task = store.get(task_id)
        if task is None or task.alert_id is not None:
            store.commit(TaskTxn(unset=[key]))
            return task
        task.alert_id = alert_id
        try:
            store.commit(TaskTxn(changed=[task], unset=[key], log=[
                (at, task_id, actor, "alert_opened", {"alert_id": alert_id})]))
            return task
        except StaleTaskError:
            if attempt:
                raise
            task = None
    raise AssertionError("unreachable")


class HazardAlerts:
    """The hazard alerts of one `Routines` instance: raised after each completion, and the
    pending ones (a failure, a stop) raised by later ticks. The caller holds its lock for
    `raise_for` and `claim`; `raise_pending` runs outside it and takes it to record."""

    def __init__(self, store: TaskStore, alerts: Any, towns: Collection[str],
                 *, shared: bool) -> None:
        self.store, self.alerts, self.towns, self.shared = store, alerts, set(towns), shared
        # look for markers at the first tick, after a failure, and on every tick of a
        # shared store (another instance may have stopped between its two commits)
        self.due = True
        self._claimed: set[str] = set()

    def raise_for(self, task: Task, *, by: str, severity: str, now: float) -> Task:
        """Raise the stored completion's alert and record its id; the task as stored. A
        failure is logged: the completion stands and its marker has a later tick retry."""
        try:
            alert_id = raise_alert(self.alerts, marker(task, by=by, severity=severity,
                                                       now=now), now)
        except Exception:
            log.exception("task %s: hazard alert not raised; a later tick retries",
                          task.task_id)
            self.due = True
            return task
        try:
            return record(self.store, task, task.task_id, alert_id, by, now) or task
        except Exception:
            log.exception("task %s: alert %s not recorded; a later tick retries",
                          task.task_id, alert_id)
            self.due = True
            task.alert_id = alert_id
            return task

    def claim(self, now: float) -> list[dict[str, Any]]:
        """Pending alerts to raise now: markers of this instance's towns older than
        `GRACE_S` and not already being raised by another tick of this instance."""
        if self.alerts is None or not (self.due or self.shared):
            return []
        self.due = False
        out = []
        for pending in self.store.meta_prefix(PREFIX).values():
            tid = pending["task_id"]
            if tid in self._claimed or pending["town_id"] not in self.towns:
                continue
            if now - float(pending["at"]) < GRACE_S:
                self.due = True  # look again later
                continue
            self._claimed.add(tid)
            out.append(pending)
        return out

    def raise_pending(self, claimed: list[dict[str, Any]], now: float,
                      on_state_thread: Callable[[Callable[[], str]], str],
                      lock: threading.RLock) -> None:
        """Raise claimed alerts (through `on_state_thread`) and record them (under `lock`)."""
        for pending in claimed:
            tid = pending["task_id"]

            def raise_one(p: dict[str, Any] = pending) -> str:
                return raise_alert(self.alerts, p, now)

            try:
                alert_id = on_state_thread(raise_one)
                with lock:
                    record(self.store, None, tid, alert_id, "system", now)
            except Exception:
                log.exception("task %s: pending hazard alert failed; a later tick retries", tid)
                with lock:
                    self.due = True
            finally:
                with lock:
                    self._claimed.discard(tid)
