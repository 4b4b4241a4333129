"""Escalation deadlines of the open alerts, earliest first.

A tick asks for the alerts due by `now`; scanning every open alert for that made each tick
O(open alerts), and a day of unacknowledged alerts (a replay, a district at night) has
thousands. Here a tick costs O(due · log n).

A heap with lazy deletion: an alert is (re)queued whenever its deadline may have changed,
and an entry counts only while it still matches the alert as currently held (same
deadline, still waiting for an acknowledgement). Stale entries are dropped as they surface.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

from alerts.model import Alert

WAITING = ("open", "escalated")  # states whose deadline runs


class Deadlines:
    """Deadlines of alerts held in a `{alert_id: Alert}` mapping owned by the caller."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._queued: dict[str, float] = {}  # alert_id -> deadline of its newest live entry

    def __len__(self) -> int:
        return len(self._heap)

    def watch(self, alert: Alert) -> None:
        """Queue `alert`'s deadline (call after any change that may have moved it)."""
        d = alert.deadline
        if d is None or self._queued.get(alert.alert_id) == d:
            return
        self._queued[alert.alert_id] = d
        heapq.heappush(self._heap, (d, alert.alert_id))

    def pop_due(self, now: float, held: Mapping[str, Alert]) -> list[Alert]:
        """The held alerts waiting past their deadline by `now`, each once, taken off the
        queue (`watch` them again after handling, whatever the outcome)."""
        due: dict[str, Alert] = {}
        while self._heap and self._heap[0][0] <= now:
            d, alert_id = heapq.heappop(self._heap)
            if self._queued.get(alert_id) == d:
                del self._queued[alert_id]
            alert = held.get(alert_id)
            if alert is not None and alert.deadline == d and alert.state in WAITING:
                due[alert_id] = alert
        return list(due.values())

    def earliest(self, held: Mapping[str, Alert]) -> float:
        """The earliest deadline among the held waiting alerts (inf: none)."""
        while self._heap:
            d, alert_id = self._heap[0]
            alert = held.get(alert_id)
            if alert is not None and alert.deadline == d and alert.state in WAITING:
                return d
            heapq.heappop(self._heap)
            if self._queued.get(alert_id) == d:
                del self._queued[alert_id]
        return math.inf
