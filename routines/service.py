"""Routines: the "four ones" scheduler. Issues tasks, runs daily checks, escalates, records.

Decisions are one function of (stored state, now): `tick(now)` creates every task whose
issue instant lies between the stored watermark and `now`, then applies every escalation
and miss due by `now`, in one store transaction. Replay and tests call `tick` on their
simulated clock; `start()` lets an APScheduler BackgroundScheduler wake it on the live
clock (every `routines.poll_s`, and exactly at the next issue or deadline). Nothing about
the schedule lives in APScheduler, so a restart rebuilds from the store and neither skips
nor repeats a routine.
"""

from __future__ import annotations

import copy
import heapq
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from alerts.model import UNACKED, Alert
from alerts.routing import Router
from carewatch.clock import Clock
from config.models import Config, Resident
from ingest.devices import DeviceTable
from ingest.publish import Publisher
from ingest.state import StateStore
from routines import lifecycle
from routines.alertdata import AlertData
from routines.checks import daily_checks
from routines.model import Task, TaskError, TaskNotFoundError
from routines.schedule import KINDS, Issue, current_issue, issues_between, merged_rules, task_id
from routines.store import SqliteTaskStore, TaskStore, TaskTxn

log = logging.getLogger(__name__)
Listener = Callable[[dict[str, Any]], None]
T = TypeVar("T")
# residents per daily-check call on the pipeline thread: bounds how long telemetry waits
CHECK_CHUNK = 1000


def task_topic(town_id: str, resident_id: str) -> str:
    return f"carewatch/v1/{town_id}/tasks/{resident_id}"


class Routines:
    """Routine tasks for every resident. Thread-safe: one lock serialises every change."""

    def __init__(self, config: Config, devices: DeviceTable, clock: Clock,
                 store_dir: Path | str, alerts: Any = None, state: StateStore | None = None,
                 *, store: TaskStore | None = None, publisher: Publisher | None = None,
                 alert_data: AlertData | None = None) -> None:
        self.config, self.devices, self.clock = config, devices, clock
        self.alerts, self.state, self.publisher = alerts, state, publisher
        self.settings = config.routines
        if store is None and config.storage.alerts_backend == "postgresql":
            from routines.store_pg import open_pg_task_store  # psycopg only when it is used

            store = open_pg_task_store(config.storage.postgresql)
        self.store: TaskStore = store or SqliteTaskStore(
            Path(store_dir) / self.settings.db_file, config.alerts.sqlite_synchronous)
        if alert_data is None and alerts is not None:
            from routines.alertdata import alert_data_for  # the alert store's own reader

            alert_data = alert_data_for(alerts.store)
        self.alert_data = alert_data
        self.tz = ZoneInfo(config.timezone)
        self.router = Router(config)
        self.rules = {t.id: merged_rules(config, t.id) for t in config.towns}
        self._by_town: dict[str, list[Resident]] = defaultdict(list)
        for r in config.residents:
            self._by_town[r.town].append(r)
        inst_of_town: dict[str, str] = {}
        for inst in config.institutions:
            for town in inst.towns:
                inst_of_town.setdefault(town, inst.id)
        self._institution = {r.id: r.institution or inst_of_town.get(r.town)
                             for r in config.residents}
        # Data missing from before this process started is not the resident's fault.
        self.monitoring_since = clock.now()
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._open: dict[str, Task] = {t.task_id: t for t in self.store.open_tasks()}
        self._heap: list[tuple[float, str]] = []
        for t in self._open.values():
            self._push(t)
        self._next_issue: dict[tuple[str, str], float] = {}  # in memory only: a hint
        self._scheduler: Any = None
        # runs fn where the state store and alert engine live: fn -> Future (Service.submit,
        # which runs fn at once when called from that thread); None: on the calling thread
        self.runner: Callable[[Callable[[], Any]], Future[Any]] | None = None
        self._stopping = threading.Event()

    # ---- bookkeeping -------------------------------------------------------------------
    def _push(self, task: Task) -> None:
        at = task.next_deadline(self.settings.max_tier)
        if at is not None:
            heapq.heappush(self._heap, (at, task.task_id))

    def add_listener(self, fn: Listener) -> None:
        """Call `fn(event)` for every stored task change (created, escalated, completed...)."""
        with self._lock:
            self._listeners.append(fn)

    def _announce(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            if self.publisher is not None:
                self.publisher.publish(task_topic(doc["town_id"], doc["resident_id"]),
                                       orjson.dumps(doc), 1, False)
            for fn in self._listeners:
                try:
                    fn(doc)
                except Exception:  # a broken listener must not stop the scheduler
                    log.exception("routine listener %r failed", fn)

    def _first_watermark(self, kind: str, town: str, now: float) -> float:
        # First start: the running week's and month's tasks are issued now; daily checks
        # start with the next one (there is no monitored day behind them yet).
        if kind == "daily_check":
            return now
        cur = current_issue(kind, getattr(self.rules[town], kind), self.tz, now)
        return cur.issued_at - 1e-3 if cur is not None else now

    # ---- the decision step ------------------------------------------------------------
    def tick(self, now: float) -> list[dict[str, Any]]:
        """Issue every task due to exist by `now`; apply every escalation and miss due by
        `now`. Returns the events announced (also to listeners).

        Three steps, so that issuing thousands of tasks never stalls the pipeline: decide
        what is due (under the lock), build the tasks and run their daily checks (without
        the lock; only the check reads the state store, in chunks on its owner thread),
        then store and announce (under the lock). A concurrent tick skips what an earlier
        one is building: the in-memory next-issue hint moves in the first step."""
        if not self.settings.enabled:
            return []
        with self._lock:
            due = self._due_issues(now)
        news: list[Task] = []
        try:
            for town, kind, issues, _stored in due:
                rule = getattr(self.rules[town], kind)
                for issue in issues:
                    news.extend(self._issue(town, issue, rule.escalate_after_h * 3600.0))
        except BaseException:
            with self._lock:  # not issued after all: the next tick tries again
                for town, kind, _issues, _stored in due:
                    self._next_issue.pop((kind, town), None)
            raise
        with self._lock:
            txn = TaskTxn()
            for town, kind, issues, stored in due:
                if issues or stored is None:
                    txn.meta[f"wm:{kind}:{town}"] = now
            docs = self._store_step(now, news, txn)
        self._announce(docs)
        return docs

    def _due_issues(self, now: float) -> list[tuple[str, str, list[Issue], Any]]:
        """(town, kind, issues, stored watermark) for each schedule with something to do."""
        due = []
        for town in self._by_town:
            for kind in KINDS:
                key = (kind, town)
                if now < self._next_issue.get(key, -np.inf):
                    continue  # the common case: nothing to issue, no store access
                stored = self.store.meta(f"wm:{kind}:{town}")
                wm = float(stored) if stored is not None else self._first_watermark(
                    kind, town, now)
                rule = getattr(self.rules[town], kind)
                issues = issues_between(kind, rule, self.tz, wm, now)
                if issues or stored is None:
                    due.append((town, kind, issues, stored))
                self._next_issue[key] = self._next_issue_at(kind, rule, now)
        return due

    def _next_issue_at(self, kind: str, rule: Any, now: float) -> float:
        # a month's window first (every routine recurs within it), a year's if disabled
        for horizon_days in (35.0, 400.0):
            upcoming = issues_between(kind, rule, self.tz, now, now + horizon_days * 86400.0)
            if upcoming:
                return upcoming[0].issued_at
        return float(np.inf)

    def _store_step(self, now: float, news: list[Task], txn: TaskTxn) -> list[dict[str, Any]]:
        """Store the new tasks and every escalation or miss due by `now`; the events."""
        for t in news:
            txn.new.append(t)
            txn.log.append((t.issued_at, t.task_id, "system", "created",
                            {"owner": t.owner, "due_at": t.due_at}))
            if t.state == "done":
                txn.log.append((t.issued_at, t.task_id, "system", "completed",
                                {"state": "done", "outcome": "ok", "tier": 1}))
        changed: dict[str, Task] = {}
        # New tasks issued long ago (after downtime) may already be overdue or missed.
        for t in news:
            self._advance(t, now, txn, changed)
        while self._heap and self._heap[0][0] <= now:
            _at, tid = heapq.heappop(self._heap)
            pending = self._open.get(tid)
            if pending is not None and tid not in changed:
                self._advance(pending, now, txn, changed)
        new_ids = {n.task_id for n in news}
        txn.changed = [t for tid, t in changed.items() if tid not in new_ids]
        inserted = set(self.store.commit(txn)) if txn else set()
        docs: list[dict[str, Any]] = []
        for t in news:
            if t.task_id in inserted:
                docs.append(t.event("created"))
        for t in news:
            if t.task_id in inserted and t.state == "open":
                self._open[t.task_id] = t
                self._push(t)
        for t in txn.changed:
            if t.state != "open":
                self._open.pop(t.task_id, None)
            else:
                self._push(t)
        for ts, tid, _actor, action, detail in txn.log:
            if action in ("escalated", "missed") and (tid in inserted or tid not in new_ids):
                src = changed.get(tid) or self._open.get(tid)
                if src is not None:
                    docs.append(src.event(action, **{**detail, "at": ts}))
        return docs

    def _advance(self, t: Task, now: float, txn: TaskTxn, changed: dict[str, Task]) -> None:
        steps = lifecycle.advance(t, now, self.router, self.settings.max_tier)
        for at, action, detail in steps:
            txn.log.append((at, t.task_id, "system", action, detail))
        if steps:
            changed[t.task_id] = t

    def _issue(self, town: str, issue: Issue, escalate_after_s: float) -> list[Task]:
        residents = self._by_town[town]
        tasks = []
        for r in residents:
            duty = self.router.on_duty(r.id, 1, issue.issued_at)
            owner = r.staff or (duty.staff[0] if duty.staff else None)
            tasks.append(Task(
                task_id=task_id(issue.kind, r.id, issue.period), kind=issue.kind,
                resident_id=r.id, town_id=town, institution_id=self._institution[r.id],
                owner=owner, period=issue.period, issued_at=issue.issued_at,
                due_at=issue.due_at, closes_at=issue.closes_at,
                escalate_after_s=escalate_after_s, tier_reached_at=issue.issued_at,
                on_duty=list(duty.staff), created_at=self.clock.now()))
        if issue.kind == "daily_check" and tasks:
            self._run_checks(tasks, issue.issued_at)
        return tasks

    def _run_checks(self, tasks: list[Task], window_end: float) -> None:
        window_start = window_end - 86400.0
        by_res: dict[str, list[Alert]] = defaultdict(list)
        if self.alert_data is not None:
            for rec in self.alert_data.opened_between(window_start, window_end):
                by_res[rec.alert.resident_id].append(rec.alert)

        def unacked_now() -> dict[str, int]:
            counts: dict[str, int] = defaultdict(int)
            if self.alerts is not None:
                for a in self.alerts.open_alerts():
                    if a.state in UNACKED and a.opened_at < window_end:
                        counts[a.resident_id] += 1
            return counts

        unacked = self._on_state_thread(unacked_now)
        for lo in range(0, len(tasks), CHECK_CHUNK):
            part = tasks[lo:lo + CHECK_CHUNK]
            rows = np.array([self.devices.row_of_resident[t.resident_id] for t in part],
                            np.int64)
            alerts = [by_res[t.resident_id] for t in part]
            counts = [unacked[t.resident_id] for t in part]

            def check(rows: np.ndarray = rows, alerts: list[list[Alert]] = alerts,
                      counts: list[int] = counts) -> list[dict[str, Any]]:
                return daily_checks(self.state, rows, window_end, self.monitoring_since,
                                    alerts, counts, self.settings.daily_check)

            # one chunk per call: the pipeline handles telemetry between chunks
            for t, res in zip(part, self._on_state_thread(check), strict=True):
                t.check = res
                if res["status"] == "ok":  # nothing to review: the check closes itself
                    t.state, t.completed_at, t.completed_by = "done", window_end, "system"
                    t.outcome, t.notes = "ok", "automatic: every figure within its threshold"

    def _on_state_thread(self, fn: Callable[[], T]) -> T:
        """Run `fn` where the state store and the alert engine live (see `runner`)."""
        if self.runner is None:
            return fn()
        return cast(T, self.runner(fn).result(timeout=120))

    # ---- people ------------------------------------------------------------------------
    def complete(self, task_id: str, *, by: str, now: float, outcome: str = "ok",
                 notes: str = "", hazard: str | None = None,
                 hazard_severity: str = "high") -> Task:
        """Record a task as done (or late) with feedback; a hazard opens an alert."""
        # the task's state as of `now` (it may have been missed); outside the lock, as a
        # tick may wait for the pipeline thread, which may be waiting for the lock
        self.tick(now)
        with self._lock:
            t = self._open.get(task_id) or self.store.get(task_id)
            if t is None:
                raise TaskNotFoundError(f"no task {task_id}")
            t = copy.deepcopy(t)
            at, action, detail = lifecycle.complete(t, by=by, now=now, outcome=outcome,
                                                    notes=notes, hazard=hazard)
            if t.hazard and self.alerts is not None:
                alert = self.alerts.raise_manual(
                    t.resident_id, kind="hazard", severity=hazard_severity, by=by,
                    note=t.hazard, now=now, evidence={"task_id": t.task_id, "routine": t.kind})
                t.alert_id = alert.alert_id
                detail["alert_id"] = alert.alert_id
            self.store.commit(TaskTxn(changed=[t], log=[(at, t.task_id, by, action, detail)]))
            self._open.pop(t.task_id, None)
            doc = t.event("completed", by=by)
        self._announce([doc])
        return t

    # ---- queries -----------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        t = self.store.get(task_id)
        if t is None:
            raise TaskNotFoundError(f"no task {task_id}")
        return t

    def open_tasks(self) -> list[Task]:
        with self._lock:
            return sorted((copy.deepcopy(t) for t in self._open.values()),
                          key=lambda t: (t.due_at, t.task_id))

    def overdue(self, now: float) -> list[Task]:
        return [t for t in self.open_tasks() if t.overdue(now)]

    def my_tasks(self, staff_id: str, now: float) -> list[Task]:
        """Open tasks this person answers for now: owned (still theirs to do when escalated),
        or on duty at the task's tier."""
        return [t for t in self.open_tasks() if t.issued_at <= now
                and (t.owner == staff_id or staff_id in t.on_duty)]

    def tasks(self, **filters: Any) -> list[Task]:
        """Stored tasks (see TaskStore.tasks for the filters)."""
        return self.store.tasks(**filters)

    def log(self, task_id: str | None = None) -> list[dict[str, Any]]:
        return self.store.log(task_id)

    def next_wake(self, now: float) -> float | None:
        """The next instant at which `tick` would change something."""
        with self._lock:
            times = [self._heap[0][0]] if self._heap else []
            times.extend(t for t in self._next_issue.values() if t > now and np.isfinite(t))
            return min(times) if times else None

    # ---- live clock --------------------------------------------------------------------
    def start(self) -> None:
        """Wake `tick` on the live clock with APScheduler (interval + exact next wake)."""
        from apscheduler.schedulers.background import BackgroundScheduler

        if self._scheduler is not None or not self.settings.enabled:
            return
        sched = BackgroundScheduler(timezone=self.tz, daemon=True)
        sched.add_job(self._wake, "interval", seconds=self.settings.poll_s, id="routines-poll",
                      next_run_time=datetime.now(self.tz), coalesce=True, max_instances=1,
                      misfire_grace_time=None)
        self._scheduler = sched
        self._stopping.clear()
        sched.start()

    def _wake(self) -> None:
        # Never calls back into the scheduler: shutdown(wait=True) holds its job-store lock
        # while waiting for running jobs, so a job that adds jobs could deadlock it.
        try:
            now = self.clock.now()
            self.tick(now)
            nxt = self.next_wake(now)
            # The next issue or deadline falls before the next poll: meet it exactly.
            if (nxt is not None and nxt - now < self.settings.poll_s
                    and not self.clock.wait(nxt - now, self._stopping)):
                self.tick(self.clock.now())
        except Exception:  # keep the scheduler alive; the next wake retries
            log.exception("routine tick failed")

    def stop(self) -> None:
        """Stop the live scheduler and wait for a running tick to end."""
        sched, self._scheduler = self._scheduler, None
        if sched is not None:
            self._stopping.set()
            sched.shutdown(wait=True)

    def close(self) -> None:
        """Stop and close the task store."""
        self.stop()
        self.store.close()


__all__ = ["Routines", "TaskError", "TaskNotFoundError", "task_topic"]
