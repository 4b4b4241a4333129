"""The people-facing half of AlertEngine: acknowledge, dispatch, resolve, silence, queries,
MQTT alert commands, and what a restarted pipeline's detectors resume from."""

from __future__ import annotations

import copy
import logging
import threading
import uuid
from typing import Any

import numpy as np
import orjson

from alerts.commands import Command, CommandError, parse_command, result_topic
from alerts.lifecycle import Lifecycle, Step
from alerts.model import (
    EVENT_OF_ACTION,
    HAZARD_KIND,
    Alert,
    AlertNotFoundError,
    AlertTransitionError,
    next_state,
)
from alerts.store import AlertStore
from alerts.store_pg_base import StaleAlertError
from config.models import Config
from ingest.devices import DeviceTable
from ingest.publish import Publisher

log = logging.getLogger("alerts.engine")


class EngineApi:
    """Mixed into AlertEngine; relies on its state and helpers."""

    store: AlertStore
    devices: DeviceTable
    life: Lifecycle
    _lock: threading.RLock
    _open: dict[tuple[str, str], Alert]
    _by_id: dict[str, Alert]
    _silences: dict[str, dict[str, Any]]
    _counter: int
    _nonces: dict[str, float]
    deterministic_ids: bool
    config: Config
    command_secret: bytes | None

    def _finish(self, step: Step) -> None: ...
    def _finish_releasing(self, step: Step, now: float) -> None: ...
    def _unindex(self, alert: Alert) -> None: ...
    def _refresh_evidence(self, alert: Alert) -> None: ...
    def _index(self, alert: Alert) -> None: ...
    def _new_id(self, resident_id: str, kind: str, now: float) -> str:
        raise NotImplementedError

    @property
    def publisher(self) -> Publisher:
        raise NotImplementedError

    # ---- lookups -----------------------------------------------------------------------
    def _find(self, resident_id: str, kind: str) -> Alert:
        alert = self._open.get((resident_id, kind))
        if alert is None:
            raise AlertNotFoundError(f"no open {kind} alert for resident {resident_id}")
        return alert

    def _get(self, alert_id: str) -> Alert:
        alert = self._by_id.get(alert_id)
        if alert is not None:
            return alert
        stored = self.store.get_alert(alert_id)
        if stored is None:
            raise AlertNotFoundError(f"no alert {alert_id}")
        return stored  # resolved: every transition from it is refused with a clear error

    # ---- transitions -------------------------------------------------------------------
    def _transition(self, alert: Alert, action: str, by: str, now: float,
                    note: str | None = None) -> Alert:
        with self._lock:
            for _ in range(2):
                try:
                    return self._transition_once(alert, action, by, now, note)
                except StaleAlertError:
                    # Someone else changed it first (a shared store): decide again on the
                    # stored alert, so the loser of a race gets e.g. "already acknowledged".
                    alert = self._get(alert.alert_id)
            return self._transition_once(alert, action, by, now, note)

    def _transition_once(self, alert: Alert, action: str, by: str, now: float,
                         note: str | None) -> Alert:
        with self._lock:
            if not by:
                raise AlertTransitionError("`by` (who acts) is required")
            state = next_state(alert.state, action, note)
            self._refresh_evidence(alert)
            step = Step()
            alert.state, alert.updated_at = state, now
            if action in ("ack", "dispatch") and alert.acked_by is None:
                alert.acked_by, alert.acked_at = by, now
            if action == "dispatch":
                alert.dispatched_by, alert.dispatched_at = by, now
            if action == "resolve":
                alert.resolved_by, alert.resolved_at, alert.note = by, now, (note or "").strip()
                if alert.acked_by is None:
                    alert.acked_by, alert.acked_at = by, now
            alert.deadline = None  # acknowledged in any form: escalation stops
            detail: dict[str, Any] = {"tier": alert.tier}
            if note:
                detail["note"] = alert.note if action == "resolve" else note
            self.life.record(step, alert, EVENT_OF_ACTION[action], by, detail)
            if action == "resolve":
                self._unindex(alert)
            self._finish(step)
            return copy.deepcopy(alert)

    def ack(self, resident_id: str, kind: str, by: str, now: float) -> Alert:
        """Acknowledge the open alert of this resident and kind (stops escalation)."""
        with self._lock:
            return self._transition(self._find(resident_id, kind), "ack", by, now)

    def ack_alert(self, alert_id: str, by: str, now: float) -> Alert:
        with self._lock:
            return self._transition(self._get(alert_id), "ack", by, now)

    def dispatch(self, resident_id: str, kind: str, by: str, now: float) -> Alert:
        """Someone is on the way (acknowledges too, if not yet acknowledged)."""
        with self._lock:
            return self._transition(self._find(resident_id, kind), "dispatch", by, now)

    def dispatch_alert(self, alert_id: str, by: str, now: float) -> Alert:
        with self._lock:
            return self._transition(self._get(alert_id), "dispatch", by, now)

    def resolve(self, resident_id: str, kind: str, by: str, now: float, note: str) -> Alert:
        """Close the alert with a feedback note (what was found, what was done); required."""
        with self._lock:
            return self._transition(self._find(resident_id, kind), "resolve", by, now, note)

    def resolve_alert(self, alert_id: str, by: str, now: float, note: str) -> Alert:
        with self._lock:
            return self._transition(self._get(alert_id), "resolve", by, now, note)

    def raise_manual(self, resident_id: str, *, kind: str = HAZARD_KIND, severity: str = "high",
                     by: str, note: str, now: float,
                     evidence: dict[str, Any] | None = None) -> Alert:
        """Open an alert reported by a person (e.g. a hazard found on a home inspection).

        It then lives like any alert (tiers, escalation, ack, resolve). While an alert of the
        same kind is open for the resident, it updates that one instead (higher severity
        restarts its timer, as for detector findings)."""
        from alerts.model import SEVERITY_CODES

        if severity not in SEVERITY_CODES:
            raise AlertTransitionError(f"severity must be one of {list(SEVERITY_CODES)}")
        if not by or not (note or "").strip():
            raise AlertTransitionError("a reported alert needs `by` and a note")
        row = self.devices.row_of_resident.get(resident_id)
        if row is None:
            raise AlertNotFoundError(f"unknown resident {resident_id}")
        sev = SEVERITY_CODES[severity]
        ev = {**(evidence or {}), "reported_by": by, "note": note.strip()}
        with self._lock:
            step = Step()
            alert = self._open.get((resident_id, kind))
            if alert is not None:
                alert.evidence.update(ev)
                alert.updated_at = now
                detail: dict[str, Any] = {"reported_by": by}
                if sev > alert.severity:
                    detail["from"] = alert.severity_name
                    alert.severity = sev
                    if alert.state in ("open", "escalated"):
                        alert.tier_reached_at = now
                        alert.deadline = now + self.life.ack_time(sev, alert.town_id)
                self.life.record(step, alert, "updated", by, detail)
            else:
                alert = Alert(
                    alert_id=self._new_id(resident_id, kind, now), resident_id=resident_id,
                    device_id=self.devices.device_ids[row], town_id=self.devices.town_ids[row],
                    kind=kind, severity=sev, state="open", tier=1, opened_at=now,
                    updated_at=now, condition_active=True, evidence=ev, message="",
                    deadline=now + self.life.ack_time(sev, self.devices.town_ids[row]),
                    tier_reached_at=now)
                self._index(alert)
                self.life.open(step, alert, now)
            self._finish(step)
            return copy.deepcopy(alert)

    # ---- silences ----------------------------------------------------------------------
    def silence(self, *, by: str, reason: str, until: float, now: float,
                resident_id: str | None = None, device_id: str | None = None,
                kind: str | None = None) -> dict[str, Any]:
        """Mute a resident or device (optionally one kind) until `until`: matching findings
        open no alert and matching open alerts neither escalate nor notify. Audited."""
        if not reason.strip():
            raise AlertTransitionError("a silence needs a reason")
        if resident_id is None and device_id is None:
            raise AlertTransitionError("a silence needs a resident_id or a device_id")
        if resident_id is not None and resident_id not in self.devices.row_of_resident:
            raise AlertNotFoundError(f"unknown resident {resident_id}")
        if device_id is not None and device_id not in self.devices.row_of_device:
            raise AlertNotFoundError(f"unknown device {device_id}")
        if until <= now:
            raise AlertTransitionError("a silence must end in the future")
        with self._lock:
            self._counter += 1
            # random where several engines share a store, or a district console lists the
            # silences of several workers: a counter would repeat across them
            sid = (f"si-{self._counter:08d}" if self.deterministic_ids
                   else f"si-{uuid.uuid4().hex[:16]}")
            s: dict[str, Any] = {"silence_id": sid, "resident_id": resident_id,
                 "device_id": device_id, "kind": kind, "starts_at": now, "until": until,
                 "reason": reason.strip(), "by": by, "created_at": now, "active": True}
            step = Step()
            step.txn.silences.append(s)
            step.txn.audit.append((now, None, resident_id, by, "silenced", dict(s)))
            self._finish(step)
            self._silences[sid] = s  # only once stored (a shared store may refuse the id)
            return dict(s)

    def unsilence(self, silence_id: str, by: str, now: float) -> None:
        """End a silence early (audited)."""
        with self._lock:
            s = self._silences.pop(silence_id, None)
            if s is None:
                raise AlertNotFoundError(f"no active silence {silence_id}")
            step = Step()
            step.txn.silences.append({**s, "active": False, "ended_at": now, "ended_by": by})
            step.txn.audit.append((now, None, s.get("resident_id"), by, "unsilenced",
                                   {"silence_id": silence_id}))
            self._finish_releasing(step, now)

    def silences(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(s) for s in self._silences.values()]

    # ---- queries -----------------------------------------------------------------------
    def open_alerts(self) -> list[Alert]:
        """Unresolved alerts, oldest first (copies)."""
        with self._lock:
            out = []
            for alert in sorted(self._by_id.values(), key=lambda a: (a.opened_at, a.alert_id)):
                self._refresh_evidence(alert)
                out.append(copy.deepcopy(alert))
            return out

    def get_alert(self, alert_id: str) -> Alert:
        with self._lock:
            return copy.deepcopy(self._get(alert_id))

    def alert_history(self, resident_id: str) -> list[Alert]:
        """Every alert of a resident, resolved ones included, oldest first."""
        return self.store.history(resident_id)

    def audit(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        """The append-only audit log (of one alert, or all)."""
        return self.store.audit(alert_id)

    def events(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        """Stored contract events (of one alert, or all), in order."""
        return self.store.events(alert_id)

    def active_conditions(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows with an open `kind` alert whose condition is active, each condition's onset
        (NaN: unknown) and the alert's severity (1-4): what a restarted detector resumes
        from (`Detector.resume`)."""
        with self._lock:
            rows, onsets, severities = [], [], []
            for (resident_id, k), alert in self._open.items():
                row = self.devices.row_of_resident.get(resident_id)
                if k != kind or row is None or not alert.condition_active:
                    continue
                onset = alert.evidence.get("onset_ts")
                rows.append(row)
                onsets.append(float(onset) if isinstance(onset, float | int) else np.nan)
                severities.append(alert.severity)
            return (np.asarray(rows, np.int64), np.asarray(onsets, np.float64),
                    np.asarray(severities, np.int8))

    # ---- commands ----------------------------------------------------------------------
    def apply_command(self, cmd: Command, now: float) -> Alert:
        """Carry out an authenticated MQTT command (see alerts/commands.py)."""
        with self._lock:
            # A nonce is accepted once within the signature's validity window (replays,
            # including QoS 1 redeliveries, are refused).
            horizon = now - 2 * self.config.alerts.command_max_skew_s
            self._nonces = {n: t for n, t in self._nonces.items() if t >= horizon}
            if cmd.nonce in self._nonces:
                raise AlertTransitionError(f"command nonce {cmd.nonce} already used")
            if cmd.alert_id is not None:
                alert = self._get(cmd.alert_id)
            else:
                alert = self._find(cmd.resident_id or "", cmd.kind or "")
            if alert.town_id != cmd.town_id:
                raise AlertNotFoundError(f"alert {alert.alert_id} is not in town {cmd.town_id}")
            self._nonces[cmd.nonce] = now
            return self._transition(alert, cmd.action, cmd.by, now, cmd.note)

    def handle_command_message(self, topic: str, payload: bytes, now: float) -> dict[str, Any]:
        """Parse, authenticate and apply one message from `carewatch/v1/+/cmd/alerts`, and
        publish the result on the town's result topic (docs/alert-commands.md)."""
        parsed = parse_command(topic, payload, self.command_secret, now,
                               self.config.alerts.command_max_skew_s)
        result: dict[str, Any]
        if isinstance(parsed, CommandError):
            result = {"request_id": parsed.request_id, "ok": False, "reason": parsed.reason,
                      "detail": parsed.detail}
        else:
            try:
                alert = self.apply_command(parsed, now)
                result = {"request_id": parsed.request_id, "ok": True,
                          "alert_id": alert.alert_id, "state": alert.state}
            except AlertNotFoundError as exc:
                result = {"request_id": parsed.request_id, "ok": False, "reason": "not_found",
                          "detail": str(exc)}
            except AlertTransitionError as exc:
                result = {"request_id": parsed.request_id, "ok": False,
                          "reason": "transition", "detail": str(exc)}
        if not (isinstance(parsed, CommandError) and parsed.reason == "topic"):
            town = topic.split("/")[2]
            self.publisher.publish(result_topic(town), orjson.dumps(result), 1, False)
        if not result["ok"]:
            log.warning("alert command refused on %s: %s", topic, result)
        return result
