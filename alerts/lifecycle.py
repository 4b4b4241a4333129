"""The decision core: alert changes as functions of (alert, time, routing), recorded in a Txn.

Nothing here publishes or sends: each change adds the alert row, its contract event, an
audit entry and any notices to the step's `Txn`; the engine commits the Txn and only then
publishes. Escalation deadlines are data on the alert; `due_changes` is one function of
(alert, now), so the wall clock (`run`) and a simulated clock (`replay`) behave the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alerts.delivery import notice
from alerts.model import DEFAULT_ACK_TIMEOUT_S, SEVERITY_NAMES, Alert
from alerts.routing import Router
from alerts.store import OutboxRow, Txn
from config.models import Config


def alert_topic(town_id: str, resident_id: str) -> str:
    return f"carewatch/v1/{town_id}/alerts/{resident_id}"


@dataclass
class Step:
    """One engine step: the Txn to commit and the events to announce after it."""

    txn: Txn = field(default_factory=Txn)
    announce: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # topic, event


class Lifecycle:
    """Timings, routing and notices for alert changes."""

    def __init__(self, config: Config, router: Router,
                 message_for: Callable[[str, str, dict[str, Any]], str]) -> None:
        self.config, self.router, self.message_for = config, router, message_for
        self._town_ack = {t.id: dict(t.ack_timeout_s) for t in config.towns}
        self.group_wait_s = config.alerts.group_wait_s
        self.integrations = list(config.alerts.webhooks)

    def ack_time(self, severity: int, town_id: str) -> float:
        """Acknowledgement time per tier (town setting > deployment setting > contract)."""
        name = SEVERITY_NAMES[severity]
        town = self._town_ack.get(town_id, {})
        seconds = float(town.get(name, self.config.ack_timeout_s.get(
            name, DEFAULT_ACK_TIMEOUT_S[name])))
        # Refused at config load; a config built unchecked must still never make `due` loop
        # for ever or `renotify` divide by zero (NaN fails this test too).
        return seconds if seconds > 0 else DEFAULT_ACK_TIMEOUT_S[name]

    def record(self, step: Step, alert: Alert, event: str, actor: str, detail: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
        """Add the alert row, its event and an audit entry to the step."""
        alert.message = self.message_for(alert.kind, alert.severity_name, alert.evidence)
        doc = alert.event(event, **extra)
        topic = alert_topic(alert.town_id, alert.resident_id)
        step.txn.alerts.append(alert)
        step.txn.events.append((alert.alert_id, topic, doc))
        step.txn.audit.append((alert.updated_at, alert.alert_id, alert.resident_id, actor, event,
                               detail))
        step.announce.append((topic, doc))
        return doc

    def notify(self, step: Step, alert: Alert, reason: str, doc: dict[str, Any],
               now: float) -> None:
        """Queue notices to whoever is on duty at the alert's tier, and to integrations."""
        recipients = [*self.router.webhooks(tuple(alert.on_duty)),
                      *(("integration", url) for url in self.integrations)]
        for recipient, url in recipients:
            key = f"{alert.alert_id}|{reason}|{alert.tier}|{alert.renotified}|{recipient}|{url}"
            step.txn.outbox.append(OutboxRow(
                dedup_key=key, channel="webhook", target=url,
                group_key=f"{url}|{recipient}|{alert.resident_id}",
                payload=notice(reason, recipient, doc), created_at=now,
                due_at=now + self.group_wait_s))

    def route(self, step: Step, alert: Alert, at: float, now: float) -> bool:
        """Set who is on duty at the alert's tier; audit an empty tier. True if it is empty."""
        duty = self.router.on_duty(alert.resident_id, alert.tier, at)
        alert.on_duty = list(duty.staff)
        if duty.empty:
            step.txn.audit.append((at, alert.alert_id, alert.resident_id, "system",
                                   "no_one_on_duty", {"tier": alert.tier}))
        return duty.empty

    def open(self, step: Step, alert: Alert, now: float) -> None:
        """A new alert at tier 1; escalates at once past tiers with nobody on duty."""
        empty = self.route(step, alert, now, now)
        doc = self.record(step, alert, "opened", "system", {"severity": alert.severity_name},
                          **({"no_one_on_duty": True} if empty else {}))
        self.notify(step, alert, "opened", doc, now)
        if empty:
            self.escalate(step, alert, now, now, "no_one_on_duty")

    def escalate(self, step: Step, alert: Alert, at: float, now: float, reason: str) -> None:
        """Move up one tier at logical time `at` (and on, while tiers are empty)."""
        while alert.tier < 4:
            alert.tier += 1
            alert.state = "escalated"
            alert.tier_reached_at = alert.updated_at = at
            alert.deadline = at + self.ack_time(alert.severity, alert.town_id)
            empty = self.route(step, alert, at, now)
            extra: dict[str, Any] = {"escalation_reason": reason}
            if empty:
                extra["no_one_on_duty"] = True
            doc = self.record(step, alert, "escalated", "system",
                              {"tier": alert.tier, "reason": reason}, **extra)
            self.notify(step, alert, "escalated", doc, now)
            if not empty:
                return
            reason = "no_one_on_duty"

    def renotify(self, step: Step, alert: Alert, now: float) -> None:
        """Tier 4, still unacknowledged: notify again (a notice, not a new event)."""
        assert alert.deadline is not None
        period = self.ack_time(alert.severity, alert.town_id)
        # After an outage, one notice for all missed periods, then back on the grid.
        missed = math.floor((now - alert.deadline) / period) + 1
        alert.deadline += missed * period
        alert.renotified += 1
        self.route(step, alert, now, now)
        doc = alert.event("renotified")
        step.txn.alerts.append(alert)
        step.txn.audit.append((now, alert.alert_id, alert.resident_id, "system", "renotified",
                               {"tier": alert.tier, "count": alert.renotified,
                                "on_duty": alert.on_duty}))
        self.notify(step, alert, "renotified", doc, now)

    def due(self, step: Step, alert: Alert, now: float) -> None:
        """Apply every escalation or re-notification due by `now` (deadlines as data)."""
        while alert.deadline is not None and alert.deadline <= now and alert.state in (
                "open", "escalated"):
            if alert.tier < 4:
                self.escalate(step, alert, alert.deadline, now, "ack_timeout")
            else:
                self.renotify(step, alert, now)
