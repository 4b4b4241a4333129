"""The daily monitoring check ("monitor every day"): data completeness, worn time, offline
periods and the day's alerts per resident, and a status (ok / attention / action_needed).

Completeness is measured at the StateStore's minute resolution: a minute counts as received
when any sample of the device landed in it. Expected minutes are the window's minutes during
which the service was running (`monitoring_since`), so a fresh start is not reported as a
day of missing data. Vectorised over residents in chunks (the minute ring is (rows, 1440)).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from alerts.model import SEVERITY_CODES, UNACKED, Alert
from config.routine_settings import DailyCheckThresholds
from ingest.samples import VITALS
from ingest.state import StateStore
from routines.model import Task

if TYPE_CHECKING:
    from routines.service import Routines

CHUNK_ROWS = 4096


@dataclass(frozen=True)
class Coverage:
    """Per-row data coverage over a window (arrays over the rows asked for)."""

    expected_min: int
    received_min: np.ndarray  # int
    worn_min: np.ndarray  # int
    known_worn_min: np.ndarray  # int (minutes with a worn flag)
    offline_periods: np.ndarray  # int
    offline_min: np.ndarray  # int
    longest_offline_min: np.ndarray  # int


def _runs(missing: np.ndarray, min_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: number, total length and longest of runs of True at least `min_len` long."""
    n, k = missing.shape
    padded = np.zeros((n, k + 2), np.int8)
    padded[:, 1:-1] = missing
    d = np.diff(padded, axis=1)
    sr, sc = np.nonzero(d == 1)
    _er, ec = np.nonzero(d == -1)  # row-major order: the i-th end closes the i-th start
    length = ec - sc
    keep = length >= min_len
    rows, length = sr[keep], length[keep]
    count = np.bincount(rows, minlength=n)
    total = np.bincount(rows, weights=length, minlength=n).astype(np.int64)
    longest = np.zeros(n, np.int64)
    np.maximum.at(longest, rows, length)
    return count, total, longest


def coverage(state: StateStore, rows: np.ndarray, window_end: float, window_s: float,
             monitoring_since: float, offline_gap_min: int) -> Coverage:
    """Coverage of `rows` over [window_end - window_s, window_end)."""
    k = min(round(window_s / 60.0), state.minute_capacity)
    rows = np.asarray(rows, np.int64)
    n = len(rows)
    out = {name: np.zeros(n, np.int64) for name in
           ("received", "worn", "known", "periods", "offline", "longest")}
    expected_cols = np.zeros(k, bool)
    for lo in range(0, n, CHUNK_ROWS):
        part = rows[lo:lo + CHUNK_ROWS]
        ms = state.minute_series(part, now=window_end - 1.0, minutes=k)
        expected_cols = ms.minute_start >= np.floor(monitoring_since / 60.0) * 60.0
        present = ms.worn != -1
        present |= ms.fall
        for v in VITALS:
            present |= ~np.isnan(ms.values[v])
        present &= expected_cols[None, :]
        sl = slice(lo, lo + len(part))
        out["received"][sl] = present.sum(axis=1)
        out["worn"][sl] = ((ms.worn == 1) & expected_cols[None, :]).sum(axis=1)
        out["known"][sl] = ((ms.worn != -1) & expected_cols[None, :]).sum(axis=1)
        missing = ~present & expected_cols[None, :]
        c, t, g = _runs(missing, offline_gap_min)
        out["periods"][sl], out["offline"][sl], out["longest"][sl] = c, t, g
    return Coverage(int(expected_cols.sum()), out["received"], out["worn"], out["known"],
                    out["periods"], out["offline"], out["longest"])


def _status(completeness: float | None, worn_share: float | None, longest_offline: int,
            alerts: list[Alert], unacked: int, th: DailyCheckThresholds) -> tuple[str, list[str]]:
    action: list[str] = []
    attention: list[str] = []
    if completeness is None:
        attention.append("not_monitored")  # the service was not running in the window
    elif completeness < th.action_completeness:
        action.append("low_completeness")
    elif completeness < th.ok_completeness:
        attention.append("incomplete_data")
    if worn_share is not None and worn_share < th.ok_worn:
        attention.append("not_worn")
    if longest_offline >= th.long_offline_min:
        attention.append("long_offline")
    if any(a.severity >= SEVERITY_CODES["high"] for a in alerts):
        action.append("serious_alert")
    elif alerts:
        attention.append("alerts")
    if unacked:
        action.append("unacknowledged_alert")
    if action:
        return "action_needed", action + attention
    return ("attention" if attention else "ok"), attention


def daily_checks(state: StateStore | None, rows: np.ndarray, window_end: float,
                 monitoring_since: float, alerts_of_row: list[list[Alert]],
                 unacked_of_row: list[int], th: DailyCheckThresholds,
                 window_s: float = 86400.0) -> list[dict[str, Any]]:
    """One check result per row: the figures, the day's alerts and the status."""
    n = len(rows)
    if state is None:
        cov = None
    else:
        cov = coverage(state, rows, window_end, window_s, monitoring_since, th.offline_gap_min)
    results: list[dict[str, Any]] = []
    for i in range(n):  # per resident only to build the result documents, once a day
        expected = cov.expected_min if cov is not None else 0
        received = int(cov.received_min[i]) if cov is not None else 0
        known = int(cov.known_worn_min[i]) if cov is not None else 0
        worn = int(cov.worn_min[i]) if cov is not None else 0
        completeness = received / expected if expected else None
        worn_share = worn / known if known else None
        longest = int(cov.longest_offline_min[i]) if cov is not None else 0
        alerts = alerts_of_row[i]
        status, reasons = _status(completeness, worn_share, longest, alerts, unacked_of_row[i],
                                  th)
        results.append({
            "window_start": window_end - window_s, "window_end": window_end,
            "expected_min": expected, "received_min": received,
            "completeness": None if completeness is None else round(completeness, 4),
            "worn_min": worn, "worn_share": None if worn_share is None else round(worn_share, 4),
            "offline_periods": int(cov.offline_periods[i]) if cov is not None else 0,
            "offline_min": int(cov.offline_min[i]) if cov is not None else 0,
            "longest_offline_min": longest,
            "alerts": len(alerts),
            "alerts_by_kind": dict(Counter(a.kind for a in alerts)),
            "alert_ids": [a.alert_id for a in alerts],
            "unacknowledged": unacked_of_row[i],
            "status": status, "reasons": reasons,
        })
    return results


def check_tasks(r: Routines, tasks: list[Task], window_end: float, chunk: int) -> None:
    """Run the daily checks of new `daily_check` tasks (in place), `chunk` residents per
    call on the state store's thread; an `ok` check completes its task (`by: system`)."""
    window_start = window_end - 86400.0
    by_res: dict[str, list[Alert]] = defaultdict(list)
    if r.alert_data is not None:
        for rec in r.alert_data.opened_between(window_start, window_end):
            by_res[rec.alert.resident_id].append(rec.alert)

    def unacked_now() -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        if r.alerts is not None:
            for a in r.alerts.open_alerts():
                if a.state in UNACKED and a.opened_at < window_end:
                    counts[a.resident_id] += 1
        return counts

    unacked = r.on_state_thread(unacked_now)
    for lo in range(0, len(tasks), chunk):
        part = tasks[lo:lo + chunk]
        rows = np.array([r.devices.row_of_resident[t.resident_id] for t in part],
                        np.int64)
        alerts = [by_res[t.resident_id] for t in part]
        counts = [unacked[t.resident_id] for t in part]

        def check(rows: np.ndarray = rows, alerts: list[list[Alert]] = alerts,
                  counts: list[int] = counts) -> list[dict[str, Any]]:
            return daily_checks(r.state, rows, window_end, r.monitoring_since,
                                alerts, counts, r.settings.daily_check)

        # one chunk per call: the pipeline handles telemetry between chunks
        for t, res in zip(part, r.on_state_thread(check), strict=True):
            t.check = res
            if res["status"] == "ok":  # nothing to review: the check closes itself
                t.state, t.completed_at, t.completed_by = "done", window_end, "system"
                t.outcome, t.notes = "ok", "automatic: every figure within its threshold"
