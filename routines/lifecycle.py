"""Task changes as functions of (task, time, routing): escalation, missing, completion.

The same tier machinery as alerts: an overdue task moves from its owner (tier 1) to the
institution's duty desk (tier 2) at its due time, then on to the town office (tier 3) each
`escalate_after_h` it stays undone, up to `routines.max_tier`; a tier whose configured
people are all off duty is passed at once (alerts/routing.py decides who is on duty). An
open task is missed when its period closes (the next period's task is issued).
"""

from __future__ import annotations

import math
from typing import Any

from alerts.routing import Router
from routines.model import OUTCOMES, Task, TaskError, TaskInputError

Change = tuple[float, str, dict[str, Any]]  # at, action, detail


def escalate(task: Task, at: float, router: Router, max_tier: int, reason: str) -> list[Change]:
    """Move up one tier at time `at` (and on, past tiers with nobody on duty)."""
    out: list[Change] = []
    while task.tier < max_tier:
        task.tier += 1
        task.tier_reached_at = at
        duty = router.on_duty(task.resident_id, task.tier, at)
        task.on_duty = list(duty.staff)
        step = {"tier": task.tier, "at": at, "reason": reason, "on_duty": list(duty.staff)}
        if duty.empty:
            step["no_one_on_duty"] = True
        task.escalations.append(step)
        out.append((at, "escalated", dict(step)))
        if not duty.empty:
            break
        reason = "no_one_on_duty"
    return out


def advance(task: Task, now: float, router: Router, max_tier: int) -> list[Change]:
    """Every escalation and the miss due by `now`, at their own logical times."""
    out: list[Change] = []
    while task.state == "open":
        esc = task.escalation_deadline(max_tier)
        esc_at = math.inf if esc is None else esc
        if task.closes_at <= esc_at:
            if task.closes_at > now:
                break
            task.state = "missed"
            out.append((task.closes_at, "missed", {"tier": task.tier}))
            break
        if esc_at > now:
            break
        out.extend(escalate(task, esc_at, router, max_tier,
                            "overdue" if task.tier == 1 else "still_overdue"))
    return out


def complete(task: Task, *, by: str, now: float, outcome: str, notes: str,
             hazard: str | None = None) -> Change:
    """Record completion with feedback: done by the due time, late after it (period open)."""
    if not by:
        raise TaskInputError("`by` (who did it) is required")
    if outcome not in OUTCOMES:
        raise TaskInputError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    if not (notes or "").strip():
        raise TaskInputError(
            "completing a task needs a feedback note (what was found, what was done)",
            "notes_required")
    if hazard is not None and not hazard.strip():
        hazard = None
    if hazard is not None and outcome != "hazard_found":
        outcome = "hazard_found"
    if outcome == "hazard_found" and hazard is None:
        raise TaskInputError("outcome hazard_found needs a description of the hazard",
                             "hazard_required")
    if task.state == "missed" or (task.state == "open" and now >= task.closes_at):
        raise TaskError(f"task {task.task_id} was missed: its period closed", "task_missed")
    if task.state != "open":
        raise TaskError(f"task {task.task_id} is already {task.state}", "task_closed")
    task.state = "done" if now <= task.due_at else "late"
    task.completed_at, task.completed_by = now, by
    task.outcome, task.notes, task.hazard = outcome, notes.strip(), hazard
    detail: dict[str, Any] = {"state": task.state, "outcome": outcome, "tier": task.tier}
    if hazard:
        detail["hazard"] = hazard
    return (now, "completed", detail)
