"""Ground truth: each injected event as the alert(s) the contract's default rules should raise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from simulators.events import (
    BANDS,
    DETERIORATION,
    DETERIORATION_SPO2,
    EVENT_KINDS,
    LWT_AFTER_S,
    Event,
    _first_k,
)
from simulators.news2 import news2_parts, news2_severity
from simulators.physiology import Physiology

NEWS2_HOLD_S = 300.0


def _ts(phys: Physiology, row: int, k: int) -> float:
    """Device ts of sample k of `row` (the drifting clock the rules measure on)."""
    p = phys.pop
    true = phys.t0 + p.phase[row] + k * phys.interval_s
    return round(float(true + p.clock_offset_s[row] + p.drift[row] * (true - phys.t0)), 2)


def _baseline(phys: Physiology, row: int) -> dict[str, float]:
    p = phys.pop
    return {"hr": float(p.hr0[row]), "spo2": float(p.spo2_0[row]), "rr": float(p.rr0[row]),
            "temp_c": float(p.temp0[row]), "sbp": float(p.sbp0[row])}


def _news2_at(values: dict[str, float], copd: bool) -> str | None:
    return news2_severity(news2_parts(values["hr"], values["spo2"], values["rr"],
                                      values["temp_c"], values["sbp"], copd))


def truth_for(ev: Event, phys: Physiology) -> list[dict[str, Any]]:
    """The truth records of one event (primary first)."""
    row, dt = ev.row, phys.interval_s
    rid = phys.pop.resident_ids[row]
    copd = bool(phys.pop.copd[row])
    kf = _first_k(phys, row, ev.start)
    ke = _first_k(phys, row, ev.end)
    k_start = kf
    if ev.kind in ("fever", "hypothermia"):  # first temperature reading of the window
        every = max(1, round(60.0 / dt))
        k_start = -(-kf // every) * every
    elif ev.kind == "inactivity":
        k_start = kf + 1
    truth_kind = EVENT_KINDS[ev.kind][1]
    extra = {"event": ev.kind, "source": ev.source}
    if ev.kind == "deterioration":
        base = _baseline(phys, row)
        plateau = {**{n: (lo + hi) / 2 for n, (lo, hi) in DETERIORATION.items()},
                   "spo2": sum(DETERIORATION_SPO2[copd]) / 2}
        onset, worst = None, None
        for f in np.linspace(0, 1, 201):
            vals = {n: base[n] + f * (plateau[n] - base[n]) for n in base}
            sev = _news2_at(vals, copd)
            if sev and onset is None:
                onset = f
            worst = sev or worst
        if onset is None or worst is None:
            return []
        t_on = ev.start + onset * 0.7 * ev.duration
        k_start = _first_k(phys, row, t_on)
        # ramp_start: the physiology starts to change here; with the samples' scatter the
        # measured score can reach a band before the ramp's mean does (`start`)
        return [{"resident_id": rid, "kind": "news2", "start": _ts(phys, row, k_start),
                 "end": _ts(phys, row, ke), "severity": worst, "primary": True,
                 "ramp_start": _ts(phys, row, kf), **extra}]
    out = [{"resident_id": rid, "kind": truth_kind, "start": _ts(phys, row, k_start),
            "end": _ts(phys, row, ke), "severity": ev.sev, "primary": True, **extra}]
    bands = BANDS.get((ev.kind, ev.sev, copd)) or BANDS.get((ev.kind, ev.sev, False))
    if bands and ev.duration >= NEWS2_HOLD_S + 60:
        vals = {**_baseline(phys, row), **{n: (lo + hi) / 2 for n, (lo, hi) in bands.items()}}
        sev = _news2_at(vals, copd)
        if sev:
            out.append({**out[0], "kind": "news2", "severity": sev, "primary": False})
    return out


def truth_records(events: list[Event], phys: Physiology) -> list[dict[str, Any]]:
    recs = [r for ev in events for r in truth_for(ev, phys)]
    return sorted(recs, key=lambda r: (r["start"], r["resident_id"], r["kind"]))


def write_truth(path: str | Path, records: list[dict[str, Any]]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        for rec in records:
            f.write(orjson.dumps(rec) + b"\n")


StatusChange = tuple[float, int, dict[str, Any]]


def offline_status(events: list[Event], phys: Physiology) -> list[StatusChange]:
    """(true time, row, status payload): the Last Will when the broker notices the silence,
    and the device's own retained `online` when it reconnects."""
    out: list[StatusChange] = []
    p, dt = phys.pop, phys.interval_s
    for ev in events:
        if ev.kind != "device_offline":
            continue
        kf = _first_k(phys, ev.row, ev.start)
        last_sent = phys.t0 + p.phase[ev.row] + (kf - 1) * dt
        out.append((float(last_sent + LWT_AFTER_S), ev.row, {"online": False}))
        ke = _first_k(phys, ev.row, ev.end)
        out.append((float(phys.t0 + p.phase[ev.row] + ke * dt - 0.5), ev.row,
                    {"online": True, "ts": _ts(phys, ev.row, ke) - 0.5}))
    return sorted(out, key=lambda x: x[0])
