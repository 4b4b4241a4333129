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

from alerts.model import SEVERITY_CODES
from alerts.routing import Router
from carewatch.clock import Clock
from config.models import Config, Resident
from ingest.devices import DeviceTable
from ingest.publish import Publisher
from ingest.state import StateStore
from routines import hazards, lifecycle
from routines.alertdata import AlertData
from routines.checks import check_tasks
from routines.hazards import HazardAlerts
from routines.model import Task, TaskError, TaskInputError, TaskNotFoundError
from routines.openview import OpenTasks
from routines.schedule import KINDS, Issue, first_issue, issues_between, merged_rules, task_id
from routines.store import SqliteTaskStore, StaleTaskError, TaskStore, TaskTxn

log = logging.getLogger(__name__)
Listener = Callable[[dict[str, Any]], None]
T = TypeVar("T")
# residents per daily-check call on the pipeline thread: bounds how long telemetry waits
CHECK_CHUNK = 1000


def task_topic(town_id: str, resident_id: str) -> str:
    return f"carewatch/v1/{town_id}/tasks/{resident_id}"


_OFF = "off"  # `_due_issues`: a rule switched off, to be remembered as such

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
        self._view = OpenTasks(self.store, self.settings.max_tier, self._by_town)
        self._next_issue: dict[tuple[str, str], float] = {}  # in memory only: a hint
        self._hazards = HazardAlerts(self.store, alerts, self._by_town,
                                     shared=self._view.shared is not None)
        self._scheduler: Any = None
        # runs fn where the state store and alert engine live: fn -> Future (Service.submit,
        # which runs fn at once when called from that thread); None: on the calling thread
        self.runner: Callable[[Callable[[], Any]], Future[Any]] | None = None
        self._stopping = threading.Event()

    # ---- bookkeeping -------------------------------------------------------------------
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

    # ---- the decision step ------------------------------------------------------------
    def tick(self, now: float) -> list[dict[str, Any]]:
        """Issue every task due to exist by `now`; apply every escalation and miss due by
        `now`. Returns the events announced (also to listeners).

        Three steps, so that issuing thousands of tasks never stalls the pipeline: decide
        what is due (under the lock), build the tasks and run their daily checks (without
        the lock; only the check reads the state store, in chunks on its owner thread),
        then store and announce (under the lock). A concurrent tick skips what an earlier
        one is building: the in-memory next-issue hint moves in the first step.

        On a shared store the first step also takes in what other instances wrote (their new,
        changed and closed tasks), and a step whose commit is refused because another
        instance changed one of its tasks first is decided again, once, from the stored
        state: every escalation and miss is stored and announced by exactly one instance."""
        if not self.settings.enabled:
            return []
        with self._lock:
            self._view.refresh()
            due = self._due_issues(now)
            pending = self._hazards.claim(now)
        if pending:  # outside the lock: the alert engine is called on its own thread
            self._hazards.raise_pending(pending, now, self.on_state_thread, self._lock)
        news: list[Task] = []
        try:
            for town, kind, issues, _stored in due:
                rule = getattr(self.rules[town], kind)
                for issue in issues:
                    news.extend(self._issue(town, issue, rule.escalate_after_h * 3600.0))
            with self._lock:
                meta: dict[str, Any] = {}
                for town, kind, issues, stored in due:
                    if stored is _OFF:  # see `_due_issues`
                        meta[f"off:{kind}:{town}"] = True
                    elif issues or stored is None:
                        meta[f"wm:{kind}:{town}"] = now
                        if stored is None:  # a first start, or on again after being off
                            meta[f"off:{kind}:{town}"] = False
                docs = self._store_step(now, news, meta)
        except BaseException:
            with self._lock:  # not stored after all: the next tick reads the watermarks again
                for town, kind, _issues, _stored in due:
                    self._next_issue.pop((kind, town), None)
            raise
        self._announce(docs)
        return docs

    def _due_issues(self, now: float) -> list[tuple[str, str, list[Issue], Any]]:
        """(town, kind, issues, stored watermark) for each schedule with something to do."""
        due: list[tuple[str, str, list[Issue], Any]] = []
        for town in self._by_town:
            for kind in KINDS:
                key = (kind, town)
                if now < self._next_issue.get(key, -np.inf):
                    continue  # the common case: nothing to issue, no store access
                rule = getattr(self.rules[town], kind)
                off = bool(self.store.meta(f"off:{kind}:{town}"))
                if not rule.enabled:
                    # remembered as off: switched on again later, it starts afresh like a
                    # first start (its watermark stays where it was switched off, and
                    # every period since would be issued at once, and missed)
                    if not off:
                        due.append((town, kind, [], _OFF))
                    self._next_issue[key] = float(np.inf)
                    continue
                stored = None if off else self.store.meta(f"wm:{kind}:{town}")
                if stored is None:  # first start: nothing is issued from before it
                    first = first_issue(kind, rule, self.tz, now)
                    issues = [first] if first is not None else []
                else:  # restart or wake-up: all that fell due since, at its own times
                    issues = issues_between(kind, rule, self.tz, float(stored), now)
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

    def _store_step(self, now: float, news: list[Task], meta: dict[str, Any]
                    ) -> list[dict[str, Any]]:
        """Store the new tasks, the watermarks and every escalation or miss due by `now`;
        the events. A commit refused for a task another instance changed first is retried
        once from the stored tasks (that instance stored what it decided for them)."""
        try:
            return self._store_once(now, news, meta)
        except StaleTaskError as err:
            self._view.reload(err.task_ids)
        return self._store_once(now, news, meta)

    def _store_once(self, now: float, news: list[Task], meta: dict[str, Any]
                    ) -> list[dict[str, Any]]:
        txn = TaskTxn(meta=dict(meta))
        for t in news:
            txn.log.append((t.issued_at, t.task_id, "system", "created",
                            {"owner": t.owner, "due_at": t.due_at}))
            if t.state == "done":
                txn.log.append((t.issued_at, t.task_id, "system", "completed",
                                {"state": "done", "outcome": "ok", "tier": 1}))
        changed: dict[str, Task] = {}
        # New tasks issued long ago (after downtime) may already be overdue or missed.
        txn.new = [self._advance(t, now, txn, changed) for t in news]
        popped = self._view.pop_due(now)
        for _at, tid in popped:
            held = self._view.tasks.get(tid)
            if held is not None and tid not in changed:
                self._advance(held, now, txn, changed)
        new_ids = {n.task_id for n in news}
        txn.changed = [t for tid, t in changed.items() if tid not in new_ids]
        try:
            inserted = set(self.store.commit(txn)) if txn else set()
        except BaseException:
            self._view.restore(popped)  # nothing changed: the same deadlines are still due
            raise
        docs = [t.event("created") for t in txn.new if t.task_id in inserted]
        for t in txn.new:
            if t.task_id in inserted and t.is_open:
                self._view.put(t)
        for t in txn.changed:
            if t.is_open:
                self._view.put(t)
            else:
                self._view.drop(t.task_id)
        if self._view.shared is not None:  # stored first by another instance: as stored
            self._view.reload(tid for tid in new_ids if tid not in inserted)
        for ts, tid, _actor, action, detail in txn.log:
            if action in ("escalated", "missed") and (tid in inserted or tid not in new_ids):
                docs.append(changed[tid].event(action, **{**detail, "at": ts}))
        return docs

    def _advance(self, t: Task, now: float, txn: TaskTxn, changed: dict[str, Task]) -> Task:
        """`t` with every change due by `now` applied: a changed copy (recorded in `changed`,
        its log lines in `txn`), or `t` itself when nothing is due. `t` is never changed:
        held tasks stay as stored until the commit succeeds."""
        at = t.next_deadline(self.settings.max_tier)
        if at is None or at > now:
            return t
        # A copy with its own lists (the life cycle appends and reassigns, never edits an
        # entry); `__dict__` carries a shared store's row version. copy.copy is 4x slower.
        work = object.__new__(Task)
        work.__dict__.update(t.__dict__)
        work.on_duty, work.escalations = list(t.on_duty), list(t.escalations)
        steps = lifecycle.advance(work, now, self.router, self.settings.max_tier)
        for step_at, action, detail in steps:
            txn.log.append((step_at, t.task_id, "system", action, detail))
        if not steps:
            return t
        changed[t.task_id] = work
        return work

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
            check_tasks(self, tasks, issue.issued_at, CHECK_CHUNK)
        return tasks

    def on_state_thread(self, fn: Callable[[], T]) -> T:
        """Run `fn` where the state store and the alert engine live (see `runner`)."""
        if self.runner is None:
            return fn()
        return cast(T, self.runner(fn).result(timeout=120))

    # ---- people ------------------------------------------------------------------------
    def complete(self, task_id: str, *, by: str, now: float, outcome: str = "ok",
                 notes: str = "", hazard: str | None = None,
                 hazard_severity: str = "high") -> Task:
        """Record a task as done (or late) with feedback; a hazard opens an alert, once the
        completion is stored (routines/hazards.py)."""
        # the task's state as of `now` (it may have been missed); outside the lock, as a
        # tick may wait for the pipeline thread, which may be waiting for the lock
        self.tick(now)
        with self._lock:
            t = self._commit_completion(task_id, by=by, now=now, outcome=outcome, notes=notes,
                                        hazard=hazard, hazard_severity=hazard_severity)
            if t.hazard and self.alerts is not None:
                t = self._hazards.raise_for(t, by=by, severity=hazard_severity, now=now)
            doc = t.event("completed", by=by)
        self._announce([doc])
        return t

    def _commit_completion(self, task_id: str, *, by: str, now: float, outcome: str,
                           notes: str, hazard: str | None, hazard_severity: str) -> Task:
        # A copy is completed; the view takes it only once stored. A shared store refuses a
        # copy another instance changed first: read it again and decide once more (the life
        # cycle then says "already done", or completes the task as escalated meanwhile).
        for attempt in (0, 1):
            held = self._view.tasks.get(task_id)
            t = copy.deepcopy(held) if held is not None else self.store.get(task_id)
            if t is None:
                raise TaskNotFoundError(f"no task {task_id}")
            at, action, detail = lifecycle.complete(t, by=by, now=now, outcome=outcome,
                                                    notes=notes, hazard=hazard)
            txn = TaskTxn(changed=[t], log=[(at, t.task_id, by, action, detail)])
            if t.hazard and self.alerts is not None:
                if hazard_severity not in SEVERITY_CODES:
                    raise TaskInputError(
                        f"hazard_severity must be one of {list(SEVERITY_CODES)}")
                if t.resident_id not in self.devices.row_of_resident:
                    raise TaskError(f"no alert can be raised for resident {t.resident_id}")
                txn.meta[hazards.marker_key(t.task_id)] = hazards.marker(
                    t, by=by, severity=hazard_severity, now=now)
            try:
                self.store.commit(txn)
            except StaleTaskError as err:
                self._view.reload(err.task_ids)
                if attempt:
                    raise
                continue
            self._view.drop(t.task_id)
            return t
        raise AssertionError("unreachable")

    # ---- queries -----------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        t = self.store.get(task_id)
        if t is None:
            raise TaskNotFoundError(f"no task {task_id}")
        return t

    def open_tasks(self) -> list[Task]:
        with self._lock:
            return sorted((copy.deepcopy(t) for t in self._view.tasks.values()),
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
            first = self._view.next_deadline()
            times = [first] if first is not None else []
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


__all__ = ["Routines", "TaskError", "TaskInputError", "TaskNotFoundError", "task_topic"]
