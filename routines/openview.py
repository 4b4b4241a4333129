"""The open tasks one `Routines` instance acts on: the tasks by id and a heap of their next
deadlines (escalation or miss). Not thread-safe: the service's lock guards it.

On SQLite the instance is the only writer, so the view is exact once loaded. On a shared
store (PostgreSQL) other instances insert, escalate, complete and miss tasks too: `refresh`
takes in every task of this instance's towns written since the last look (the store's
change cursor; a cheap indexed query returning ids and versions, then the changed tasks
only), and `reload` replaces the copies a commit was refused for. The view only ever holds
tasks as stored: the service changes copies and puts them here once their commit succeeded.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable

from routines.model import Task
from routines.store import SharedTaskStore, TaskStore


class OpenTasks:
    """Open tasks by id, with their next deadlines on a heap (stale entries are skipped by
    the reader: a popped id that is gone, or no longer due, changes nothing)."""

    def __init__(self, store: TaskStore, max_tier: int, towns: Collection[str]) -> None:
        self.store = store
        self.max_tier = max_tier
        self.shared: SharedTaskStore | None = (store if isinstance(store, SharedTaskStore)
                                               else None)
        self.towns = sorted(towns)
        self._towns = set(towns)
        self.tasks: dict[str, Task] = {}
        self.heap: list[tuple[float, str]] = []
        self.cursor = 0
        if self.shared is not None:
            # Taken before the read: whatever is written meanwhile comes with the next refresh.
            # Only this instance's towns: workers sharing a database split the towns.
            self.cursor = self.shared.cursor()
            loaded = self.shared.open_tasks_in(self.towns)
        else:
            loaded = store.open_tasks()
        for t in loaded:
            self.put(t)

    def push(self, task: Task) -> None:
        at = task.next_deadline(self.max_tier)
        if at is not None:
            heapq.heappush(self.heap, (at, task.task_id))

    def put(self, task: Task) -> None:
        """Hold `task` (as stored) and schedule its next deadline."""
        self.tasks[task.task_id] = task
        self.push(task)

    def drop(self, task_id: str) -> None:
        self.tasks.pop(task_id, None)

    def pop_due(self, now: float) -> list[tuple[float, str]]:
        """Heap entries due by `now`, removed (give them back with `restore` if the step
        that took them is not stored)."""
        out = []
        while self.heap and self.heap[0][0] <= now:
            out.append(heapq.heappop(self.heap))
        return out

    def restore(self, entries: Iterable[tuple[float, str]]) -> None:
        for entry in entries:
            heapq.heappush(self.heap, entry)

    def next_deadline(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def reload(self, task_ids: Iterable[str]) -> None:
        """Replace these tasks by their stored state: open ones (of this instance's towns)
        are held and scheduled again, closed or unknown ones dropped."""
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return
        if self.shared is not None:
            found = {t.task_id: t for t in self.shared.get_many(ids)}
        else:
            found = {tid: t for tid in ids if (t := self.store.get(tid)) is not None}
        for tid in ids:
            t = found.get(tid)
            if t is not None and t.is_open and (self.shared is None or t.town_id in self._towns):
                self.put(t)
            else:
                self.drop(tid)

    def refresh(self) -> None:
        """Shared store: take in what other instances wrote since the last refresh."""
        shared = self.shared
        if shared is None:
            return
        rows, self.cursor = shared.changes_since(self.cursor, self.towns)
        stale = []
        for tid, state, version in rows:
            held = self.tasks.get(tid)
            if state != "open":
                self.drop(tid)
            elif held is None or shared.version_of(held) != version:
                stale.append(tid)  # inserted or changed elsewhere (our own writes match)
        self.reload(stale)
