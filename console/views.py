"""JSON views: board rows, residents at a glance, one resident's record and charts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from alerts.model import SEVERITY_CODES, TIER_NAMES, Alert
from alerts.noise import silence_covers
from config.models import Config, Resident
from console.backend import ConsoleBackend, Snapshot
from console.words import evidence_zh
from ingest.samples import VITALS
from ingest.state import offline_by_status

STATUSES = ("alert", "offline", "not_worn", "low_battery", "normal")
OFFLINE_AFTER_S = 600.0  # contract: no message for 10 min
LOW_BATTERY_PCT = 15.0


def _f(x: Any) -> float | None:
    """A finite float or None (JSON has no NaN)."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


class Names:
    """Registry look-ups the views need (built once)."""

    def __init__(self, config: Config) -> None:
        self.towns = config.town_names()
        self.residents = {r.id: r for r in config.residents}
        self.staff = {s.id: s.name or s.id for s in config.staff}
        self.institutions = {i.id: i.name or i.id for i in config.institutions}


def search_texts(config: Config, names: Names) -> np.ndarray:
    """Per resident (registry order): "id name device town-id town-name", lower case, for
    the resident list's search."""
    return np.array([
        f"{r.id} {r.name} {r.device} {r.town} {names.towns.get(r.town, '')}".lower()
        for r in config.residents], dtype=str)


def alert_row(alert: Alert | dict[str, Any], names: Names, now: float) -> dict[str, Any]:
    """One alert as the board shows it (from an Alert or a contract event)."""
    doc = alert.to_doc() if isinstance(alert, Alert) else dict(alert)
    sev = doc["severity"]
    code = sev if isinstance(sev, int) else SEVERITY_CODES.get(str(sev), 0)
    res = names.residents.get(doc["resident_id"])
    evidence = doc.get("evidence") or {}
    state = doc["state"]
    return {
        "alert_id": doc["alert_id"], "resident_id": doc["resident_id"],
        "resident_name": (res.name if res else "") or doc["resident_id"],
        "device_id": doc.get("device_id"), "town_id": doc.get("town_id"),
        "town_name": names.towns.get(doc.get("town_id") or "", doc.get("town_id")),
        "kind": doc["kind"], "severity": {1: "low", 2: "medium", 3: "high", 4: "critical"}.get(
            code, str(sev)), "severity_code": code, "state": state, "tier": doc["tier"],
        "tier_name": TIER_NAMES.get(int(doc["tier"]), ""), "opened_at": doc["opened_at"],
        "updated_at": doc.get("updated_at"), "tier_reached_at": doc.get("tier_reached_at"),
        "deadline": doc.get("deadline") if state in ("open", "escalated") else None,
        "condition_active": doc.get("condition_active"), "evidence": evidence,
        "message": doc.get("message", ""), "message_zh": evidence_zh(doc["kind"], evidence),
        "acked_by": doc.get("acked_by"), "acked_at": doc.get("acked_at"),
        "dispatched_by": doc.get("dispatched_by"), "resolved_by": doc.get("resolved_by"),
        "resolved_at": doc.get("resolved_at"), "note": doc.get("note"),
        "on_duty": doc.get("on_duty") or [], "now": now,
    }


def board_key(row: dict[str, Any]) -> tuple[int, int, float, str]:
    """Most urgent first: unacknowledged, then severity, then longest waiting."""
    unacked = 0 if row["state"] in ("open", "escalated") else 1
    return unacked, -int(row["severity_code"]), float(row["opened_at"]), row["alert_id"]


def online_now(snap: Snapshot) -> np.ndarray:
    """Per row, 1 online, 0 offline, -1 unknown, as the status topic says, except that
    data received after an offline status overrides it (`offline_by_status`, as the
    device-offline rule judges): a retained Last Will outlives the outage it reported."""
    overridden = (snap.online == 0) & ~offline_by_status(snap.online, snap.status_ts,
                                                         snap.last_received)
    return np.where(overridden, np.int8(1), snap.online)


def status_columns(snap: Snapshot, open_sev: np.ndarray, open_device: np.ndarray
                   ) -> np.ndarray:
    """Per row, an index into STATUSES (vectorised over every device).

    `open_device` bits: 1 a device-offline alert whose condition holds, 2 not-worn,
    4 low-battery."""
    since = np.where(np.isnan(snap.last_received), snap.started_at, snap.last_received)
    online = online_now(snap)
    offline = (online == 0) | ((snap.now - since >= OFFLINE_AFTER_S) & (online != 1))
    offline |= (open_device & 1) > 0
    not_worn = (snap.worn == 0) | ((open_device & 2) > 0)
    low = (snap.battery <= LOW_BATTERY_PCT) | ((open_device & 4) > 0)
    out = np.full(len(snap.worn), STATUSES.index("normal"), np.int8)
    out[low] = STATUSES.index("low_battery")
    out[not_worn] = STATUSES.index("not_worn")
    out[offline] = STATUSES.index("offline")
    out[open_sev > 0] = STATUSES.index("alert")
    return out


DEVICE_BITS = {"device_offline": 1, "not_worn": 2, "low_battery": 4}


class ResidentTable:
    """Every resident's status now (arrays over device rows), for filtering and paging."""

    def __init__(self, backend: ConsoleBackend, alerts: list[Alert]) -> None:
        self.snap = snap = backend.snapshot()
        n = len(backend.devices)
        self.open_sev = np.zeros(n, np.int8)
        self.open_n = np.zeros(n, np.int32)
        open_device = np.zeros(n, np.int8)
        row_of = backend.devices.row_of_resident
        for a in alerts:  # open alerts only: hundreds, not one per device
            r = row_of.get(a.resident_id)
            if r is None:
                continue
            self.open_n[r] += 1
            if a.kind in DEVICE_BITS:
                # the status is the device's now: a cleared condition awaiting its
                # feedback note is on the board, not a state of the device
                if a.condition_active:
                    open_device[r] |= DEVICE_BITS[a.kind]
            else:
                self.open_sev[r] = max(self.open_sev[r], a.severity)
        self.status = status_columns(snap, self.open_sev, open_device)
        self.config = backend.config
        # muted now (a silence of the resident or their device): a few, not one per device
        self.muted = np.zeros(n, bool)
        devices = backend.devices
        for s in backend.alerts.silences():
            r = (row_of.get(s["resident_id"]) if s.get("resident_id")
                 else devices.row_of_device.get(s.get("device_id") or ""))
            if r is not None and silence_covers(s, devices.resident_ids[r],
                                                devices.device_ids[r], snap.now):
                self.muted[r] = True

    def rows(self, rows: np.ndarray, names: Names) -> list[dict[str, Any]]:
        snap, cfg = self.snap, self.config.residents
        hr, spo2, online = snap.latest["hr"], snap.latest["spo2"], online_now(snap)
        out = []
        for r in rows.tolist():
            res = cfg[r]
            out.append({
                "resident_id": res.id, "name": res.name or res.id, "town_id": res.town,
                "town_name": names.towns.get(res.town, res.town), "device_id": res.device,
                "status": STATUSES[self.status[r]], "open_alerts": int(self.open_n[r]),
                "worst_severity": int(self.open_sev[r]), "last_seen": _f(snap.last_received[r]),
                "battery": _f(snap.battery[r]), "worn": int(snap.worn[r]),
                "online": int(online[r]), "hr": _f(hr[r]), "spo2": _f(spo2[r]),
                "staff": res.staff, "conditions": list(res.conditions),
                "muted": bool(self.muted[r]),
            })
        return out


def thresholds_for(config: Config, resident_id: str) -> dict[str, dict[str, Any]]:
    """Each detector's effective parameters for one resident (overrides applied)."""
    from detectors.registry import DETECTORS

    res = next(r for r in config.residents if r.id == resident_id)
    town = next((t for t in config.towns if t.id == res.town), None)
    out: dict[str, dict[str, Any]] = {}
    for name, cls in DETECTORS.items():
        merged: dict[str, Any] = {}
        for layer in (config.thresholds, town.thresholds if town else {}, res.thresholds):
            merged.update(layer.get(name) or {})
        try:
            out[name] = cls.Params.model_validate(merged).model_dump(mode="json")
        except Exception:  # validated at start; a bad override shows as what was given
            out[name] = merged
    return out


def resident_silences(silences: list[dict[str, Any]], resident_id: str, device_id: str,
                      now: float) -> list[dict[str, Any]]:
    """The silences muting this resident now (theirs, or their device's), ending first.

    `kind` None mutes every kind. Filtered on `until` too: the engine drops an expired
    silence only at its next tick."""
    out = [{"silence_id": s["silence_id"], "kind": s.get("kind"),
            "device_id": s.get("device_id"), "by": s.get("by"), "reason": s.get("reason"),
            "starts_at": s["starts_at"], "until": s["until"]}
           for s in silences if silence_covers(s, resident_id, device_id, now)]
    return sorted(out, key=lambda s: (s["until"], s["silence_id"]))


def resident_facts(res: Resident, names: Names) -> dict[str, Any]:
    """A resident record's registry part (who they are, who looks after them)."""
    return {"resident_id": res.id, "name": res.name or res.id, "town_id": res.town,
            "town_name": names.towns.get(res.town, res.town),
            "device_id": res.device, "conditions": list(res.conditions),
            "institution": res.institution,
            "institution_name": names.institutions.get(res.institution or ""),
            "staff": res.staff, "staff_name": names.staff.get(res.staff or "")}


def device_state(snap: Snapshot, row: int) -> dict[str, Any]:
    return {
        "last_seen": _f(snap.last_received[row]), "last_sample_ts": _f(snap.last_ts[row]),
        "worn": int(snap.worn[row]), "battery": _f(snap.battery[row]),
        "online": int(online_now(snap)[row]),
        "latest": {v: {"value": _f(snap.latest[v][row]), "ts": _f(snap.latest_ts[v][row])}
                   for v in VITALS},
    }


def series_view(backend: ConsoleBackend, row: int, hours: float,
                alerts: list[Alert]) -> dict[str, Any]:
    """Per-minute series of every vital over the last `hours`, with alert markers.

    The in-memory minute ring is the source; minutes it lacks (after a restart, or beyond
    the ring) are filled from the SQLite history when there is one."""
    minutes = max(1, int(hours * 60))
    ms = backend.minute_series(row, minutes)
    values = {v: ms.values[v][0].astype(np.float64) for v in VITALS}
    ts = ms.minute_start
    if backend.history_db is not None and backend.history_db.exists():
        _fill_from_history(backend, row, ts, values)
    lo, hi = float(ts[0]), float(ts[-1]) + 60.0
    markers = [{"ts": a.opened_at, "kind": a.kind, "severity": a.severity_name,
                "alert_id": a.alert_id, "state": a.state}
               for a in alerts if lo <= a.opened_at < hi]
    out: dict[str, Any] = {"ts": ts.tolist(), "alerts": markers, "now": backend.clock.now()}
    for v, x in values.items():
        out[v] = [None if not math.isfinite(y) else round(y, 2) for y in x.tolist()]
    return out


def _fill_from_history(backend: ConsoleBackend, row: int, ts: np.ndarray,
                       values: dict[str, np.ndarray]) -> None:
    from ingest.sinks.sqlite import SqliteHistory

    assert backend.history_db is not None
    missing = np.zeros(len(ts), bool)
    for x in values.values():
        missing |= np.isnan(x)
    if not missing.any():
        return
    hist = SqliteHistory(backend.history_db).series(
        backend.devices.device_ids[row], float(ts[0]), float(ts[-1]) + 60.0, "minute")
    if not hist["ts"]:
        return
    idx = ((np.asarray(hist["ts"], np.float64) - ts[0]) // 60).astype(np.int64)
    ok = (idx >= 0) & (idx < len(ts))
    for v, x in values.items():
        col = np.asarray([np.nan if y is None else y for y in hist[v]], np.float64)
        sel = ok & ~np.isnan(col)
        tgt = idx[sel]
        fill = np.isnan(x[tgt])
        x[tgt[fill]] = col[sel][fill]
