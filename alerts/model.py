"""The alert record, its life-cycle table and the contract's alert event."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITY_NAMES: dict[int, str] = {1: "low", 2: "medium", 3: "high", 4: "critical"}
SEVERITY_CODES: dict[str, int] = {v: k for k, v in SEVERITY_NAMES.items()}
TIER_NAMES: dict[int, str] = {1: "service_staff", 2: "institution", 3: "town", 4: "district"}
DEFAULT_ACK_TIMEOUT_S: dict[str, float] = {
    "critical": 120.0, "high": 300.0, "medium": 900.0, "low": 3600.0,
}
STATES = ("open", "escalated", "acknowledged", "dispatched", "resolved")
UNACKED = frozenset({"open", "escalated"})
# Kinds a person reports rather than a detector finds (AlertEngine.raise_manual): a hazard
# found on a routine home inspection. With every detector's `kinds` these are all the kinds
# an alert can have (what a silence may name).
HAZARD_KIND = "hazard"
MANUAL_KINDS: tuple[str, ...] = (HAZARD_KIND,)

# Allowed transitions: state -> {action: next state}. "escalate" is the system's own action;
# dispatching an unacknowledged alert acknowledges it implicitly (someone is on the way).
TRANSITIONS: dict[str, dict[str, str]] = {
    "open": {"escalate": "escalated", "ack": "acknowledged", "dispatch": "dispatched",
             "resolve": "resolved"},
    "escalated": {"escalate": "escalated", "ack": "acknowledged", "dispatch": "dispatched",
                  "resolve": "resolved"},
    "acknowledged": {"dispatch": "dispatched", "resolve": "resolved"},
    "dispatched": {"resolve": "resolved"},
    "resolved": {},
}
# Event names (the `event` field added to each contract alert event).
EVENT_OF_ACTION = {"escalate": "escalated", "ack": "acknowledged", "dispatch": "dispatched",
                   "resolve": "resolved"}


class AlertTransitionError(ValueError):
    """A requested change the life cycle does not allow (the message says why)."""


class AlertNotFoundError(LookupError):
    """No such alert (or no open alert of that resident and kind)."""


def next_state(state: str, action: str, note: str | None = None) -> str:
    """The state after `action`, or AlertTransitionError naming the reason."""
    if action == "resolve" and not (note or "").strip():
        raise AlertTransitionError(
            "resolving needs a feedback note (what was found, what was done)")
    allowed = TRANSITIONS.get(state)
    if allowed is None:
        raise AlertTransitionError(f"unknown state {state!r}")
    if action not in allowed:
        if state == "resolved":
            raise AlertTransitionError(f"cannot {action} a resolved alert")
        if state == EVENT_OF_ACTION.get(action):
            raise AlertTransitionError(f"alert is already {state}")
        raise AlertTransitionError(f"cannot {action} an alert in state {state!r}")
    return allowed[action]


@dataclass
class Alert:
    """One alert. `deadline` is when the current tier's acknowledgement time runs out
    (escalation, or re-notification at tier 4); None once acknowledged."""

    alert_id: str
    resident_id: str
    device_id: str
    town_id: str
    kind: str
    severity: int
    state: str
    tier: int
    opened_at: float
    updated_at: float
    condition_active: bool
    evidence: dict[str, Any]
    message: str
    deadline: float | None
    tier_reached_at: float
    renotified: int = 0
    acked_by: str | None = None
    acked_at: float | None = None
    dispatched_by: str | None = None
    dispatched_at: float | None = None
    resolved_by: str | None = None
    resolved_at: float | None = None
    note: str | None = None
    on_duty: list[str] = field(default_factory=list)

    @property
    def severity_name(self) -> str:
        return SEVERITY_NAMES[self.severity]

    @property
    def is_open(self) -> bool:
        return self.state != "resolved"

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Alert:
        return cls(**doc)

    def event(self, event: str, **extra: Any) -> dict[str, Any]:
        """The contract alert event for this alert now, plus `event` and any extra fields."""
        out: dict[str, Any] = {
            "alert_id": self.alert_id, "resident_id": self.resident_id,
            "device_id": self.device_id, "town_id": self.town_id, "kind": self.kind,
            "severity": self.severity_name, "state": self.state, "tier": self.tier,
            "tier_name": TIER_NAMES[self.tier], "opened_at": self.opened_at,
            "updated_at": self.updated_at, "condition_active": self.condition_active,
            # a copy: the alert's evidence changes later, an event must not
            "evidence": dict(self.evidence), "message": self.message, "event": event,
        }
        if self.acked_by is not None:
            out["acked_by"] = self.acked_by
        if self.dispatched_by is not None:
            out["dispatched_by"] = self.dispatched_by
        if self.resolved_by is not None:
            out["resolved_by"] = self.resolved_by
            out["note"] = self.note
        out.update(extra)
        return out


def json_scalar(value: Any) -> Any:
    """A NumPy or Python scalar as plain JSON (NaN -> None, floats rounded for stable output)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, 3)
    if isinstance(value, list | tuple):
        return [json_scalar(v) for v in value]
    return value


def default_message(kind: str, severity: str, evidence: dict[str, Any]) -> str:
    """Fallback message when no message function is given."""
    shown = ", ".join(f"{k}={v}" for k, v in evidence.items() if k != "onset_ts")
    return f"{kind.replace('_', ' ')} ({severity})" + (f": {shown}" if shown else "")
