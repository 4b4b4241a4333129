"""The findings half of AlertEngine: detector findings in, alerts opened, raised, cleared;
what silences and inhibiting alerts hold back, and opening it when they end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from alerts.lifecycle import Lifecycle, Step
from alerts.model import Alert
from alerts.noise import INHIBITED_BY, MERGED_INTO, inhibitor, merges
from detectors.base import Findings, take_findings
from ingest.devices import DeviceTable


class EngineFindings:
    """Mixed into AlertEngine; relies on its state and helpers."""

    devices: DeviceTable
    life: Lifecycle
    _open: dict[tuple[str, str], Alert]
    _held: dict[tuple[int, str], int]
    _noted: set[tuple[str, str, str]]
    _sev: dict[str, np.ndarray]
    _cond: dict[str, np.ndarray]
    _evidence: dict[str, dict[str, np.ndarray]]
    _arrays: Callable[[str], tuple[np.ndarray, np.ndarray]]
    _new_id: Callable[[str, str, float], str]

    def _finish(self, step: Step) -> None: ...
    def _index(self, alert: Alert) -> None: ...
    def _refresh_evidence(self, alert: Alert) -> None: ...
    def _onset(self, kind: str, row: int) -> Any: ...
    def _silenced(self, resident_id: str, device_id: str, kind: str, now: float
                  ) -> str | None: ...

    def _apply(self, f: Findings, now: float, step: Step) -> None:
        """A row may have several findings in one tick (a batch upload: a condition began
        and cleared): they are applied one occurrence at a time, in order, each against
        what the one before left (at once, the second was judged against the alert as it
        was before the tick, and dropped)."""
        rows = f.row
        if len(rows) > 1:
            order = np.argsort(rows, kind="stable")
            srt = rows[order]
            first = np.ones(len(srt), bool)
            first[1:] = srt[1:] != srt[:-1]
            if not first.all():
                pos = np.arange(len(srt))
                rank = pos - np.maximum.accumulate(np.where(first, pos, 0))
                for k in range(int(rank.max()) + 1):
                    self._apply_once(take_findings(f, np.sort(order[rank == k])), now, step)
                return
        self._apply_once(f, now, step)

    def _apply_once(self, f: Findings, now: float, step: Step) -> None:
        """`_apply` for findings of distinct rows."""
        sev_now, cond_now = self._arrays(f.kind)
        rows = f.row.astype(np.int64)
        sev = f.severity.astype(np.int8)
        active = f.active.astype(bool)
        cur, cond = sev_now[rows], cond_now[rows]
        cols = self._evidence[f.kind]
        values: dict[str, Any] = {"onset_ts": f.onset_ts}
        values.update(f.evidence)
        for key, value in values.items():  # latest evidence per row, vectorised
            col = cols.get(key)
            if col is None:
                col = cols[key] = np.full(len(self.devices), None, object)
            arr = np.asarray(value, dtype=object)
            if arr.shape == rows.shape:
                col[rows[active]] = arr[active]
        changed = active & ((cur == 0) | (sev > cur) | ~cond) | (~active & (cur > 0) & cond)
        if self._held:  # a held condition that clears is over: nothing to open later
            for i in np.flatnonzero(~active):
                self._held.pop((int(rows[i]), f.kind), None)
        for i in np.flatnonzero(changed):
            self._change(f.kind, int(rows[i]), int(sev[i]), bool(active[i]), now, step)

    def _change(self, kind: str, row: int, sev: int, active: bool, now: float,
                step: Step) -> None:
        resident_id = self.devices.resident_ids[row]
        alert = self._open.get((resident_id, kind))
        if alert is None:
            self._open_new(kind, row, sev, now, step)
            return
        self._refresh_evidence(alert)
        alert.updated_at = now
        if not active:
            alert.condition_active = False
            self._cond[kind][row] = False
            self.life.record(step, alert, "condition_cleared", "system", {})
            return
        detail: dict[str, Any] = {}
        if sev > alert.severity:
            detail = {"from": alert.severity_name}
            alert.severity = sev
            self._sev[kind][row] = sev
            if alert.state in ("open", "escalated"):
                # Contract: a higher severity restarts the timer at the new, shorter time.
                alert.tier_reached_at = now
                alert.deadline = now + self.life.ack_time(sev, alert.town_id)
        was_active = alert.condition_active
        alert.condition_active = True
        self._cond[kind][row] = True
        if detail:
            self.life.record(step, alert, "severity_raised", "system", detail)
        elif not was_active:
            self.life.record(step, alert, "condition_active", "system", {})

    def _note(self, step: Step, resident_id: str, kind: str, why: str, now: float,
              detail: dict[str, Any], alert_id: str | None = None) -> None:
        if (resident_id, kind, why) not in self._noted:
            self._noted.add((resident_id, kind, why))
            step.txn.audit.append((now, alert_id, resident_id, "system", why,
                                   {"kind": kind, **detail}))

    def _open_new(self, kind: str, row: int, sev: int, now: float, step: Step) -> None:
        resident_id, device_id = self.devices.resident_ids[row], self.devices.device_ids[row]
        silence = self._silenced(resident_id, device_id, kind, now)
        if silence is not None:
            self._note(step, resident_id, kind, "silenced", now, {"silence_id": silence})
            self._hold(row, kind, sev)
            return
        # only the kinds that could inhibit this one: a scan of every open alert per new
        # alert made opening alerts O(open alerts)
        active_kinds = {k for k in INHIBITED_BY.get(kind, ())
                        if (a := self._open.get((resident_id, k))) is not None
                        and a.condition_active}
        blocker = inhibitor(kind, active_kinds)
        if blocker is not None:
            self._note(step, resident_id, kind, "inhibited", now, {"by": blocker},
                       self._open[(resident_id, blocker)].alert_id)
            self._hold(row, kind, sev)
            return
        self._held.pop((row, kind), None)  # opened or merged below: no longer held
        host = self._open.get((resident_id, MERGED_INTO.get(kind, "")))
        onset = self._onset(kind, row)
        if host is not None and not merges(kind, onset, self._onset(host.kind, row)
                                           or host.evidence.get("onset_ts")):
            host = None  # long after the host's onset: a concern of its own
        if host is not None:
            if (resident_id, kind, "merged") not in self._noted:
                self._note(step, resident_id, kind, "merged", now, {"into": host.alert_id},
                           host.alert_id)
                self._refresh_evidence(host)
                host.evidence[f"{kind}_after"] = True
                host.evidence[f"{kind}_onset_ts"] = onset
                host.updated_at = now
                self.life.record(step, host, "updated", "system", {"merged": kind})
            return
        alert = Alert(
            alert_id=self._new_id(resident_id, kind, now), resident_id=resident_id,
            device_id=device_id, town_id=self.devices.town_ids[row], kind=kind, severity=sev,
            state="open", tier=1, opened_at=now, updated_at=now, condition_active=True,
            evidence={}, message="", deadline=None, tier_reached_at=now)
        alert.deadline = now + self.life.ack_time(sev, alert.town_id)
        self._refresh_evidence(alert)
        self._index(alert)
        self.life.open(step, alert, now)

    def _finish_releasing(self, step: Step, now: float) -> None:
        """`_finish` a step that may have ended silences, opening what they held back."""
        held = dict(self._held)
        self._release_held(now, step)
        try:
            self._finish(step)
        except Exception:
            self._held = held
            raise

    def _hold(self, row: int, kind: str, sev: int) -> None:
        self._held[(row, kind)] = max(sev, self._held.get((row, kind), 0))

    def _release_held(self, now: float, step: Step) -> None:
        """Open the alerts of held conditions whose silence or inhibitor has ended (each
        is held again while one still applies)."""
        for (row, kind), sev in list(self._held.items()):
            if (self.devices.resident_ids[row], kind) in self._open:
                del self._held[(row, kind)]  # its alert is open: the usual path from here
            else:
                self._open_new(kind, row, sev, now, step)

