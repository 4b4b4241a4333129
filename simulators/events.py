"""Injected events: what each does to a resident's samples, and the ground truth it produces.

An event is shaped so that the contract's default rule for its kind fires (worn, at rest
where the rule asks for it, held well past the rule's duration) and nothing else fires
except the NEWS2 co-alert that its parameter implies; that co-alert is written to the
truth file too, with `"primary": false`. Truth `start` and `end` are device `ts` values:
the first sample on which the condition holds, and the first sample on which it no
longer does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulators.physiology import (
    BENIGN_HR,
    BENIGN_RR,
    BENIGN_SPO2,
    BENIGN_SPO2_COPD,
    Chunk,
    Physiology,
)

# event kind -> (default duration s, truth kind, default severity)
EVENT_KINDS: dict[str, tuple[float, str, str]] = {
    "fall": (600, "fall", "critical"),
    "hypoxemia": (360, "hypoxemia", "high"),
    "bradycardia": (360, "bradycardia", "high"),
    "tachycardia": (480, "tachycardia", "high"),
    "tachypnoea": (480, "tachypnoea", "high"),
    "bradypnoea": (300, "bradypnoea", "high"),
    "fever": (3600, "fever", "medium"),
    "hypothermia": (3600, "hypothermia", "medium"),
    "hypotension": (5400, "hypotension", "high"),
    "hypertensive_crisis": (5400, "hypertensive_crisis", "high"),
    "deterioration": (6 * 3600, "news2", "high"),
    "inactivity": (4 * 3600, "inactivity", "high"),
    "not_worn": (3600, "not_worn", "medium"),
    "device_offline": (1800, "device_offline", "medium"),
    "low_battery": (3600, "low_battery", "low"),
}
AWAKE_ONLY = frozenset({"inactivity", "not_worn"})  # rules that count only 07:00-21:00 local
REST_KINDS = frozenset({"hypoxemia", "bradycardia", "tachycardia", "tachypnoea", "bradypnoea"})

# (kind, severity, copd) -> {field: (low, high)}: values drawn uniformly inside the band.
BANDS: dict[tuple[str, str, bool], dict[str, tuple[float, float]]] = {
    ("hypoxemia", "high", False): {"spo2": (86, 90)},
    ("hypoxemia", "critical", False): {"spo2": (79, 85)},
    ("hypoxemia", "high", True): {"spo2": (81, 84)},
    ("hypoxemia", "critical", True): {"spo2": (74, 80)},
    ("bradycardia", "high", False): {"hr": (32, 40)},
    ("tachycardia", "high", False): {"hr": (132, 146)},
    ("tachycardia", "critical", False): {"hr": (152, 166)},
    ("tachypnoea", "high", False): {"rr": (26, 32)},
    ("bradypnoea", "high", False): {"rr": (5, 8)},
    ("fever", "medium", False): {"temp_c": (38.3, 39.0)},
    ("hypothermia", "medium", False): {"temp_c": (34.2, 34.9)},
    ("hypotension", "high", False): {"sbp": (80, 89), "dbp": (45, 58)},
    ("hypertensive_crisis", "high", False): {"sbp": (185, 205), "dbp": (104, 124)},
}
# Gradual deterioration: plateau values scoring NEWS2 >= 7 with no single parameter at 3
# and no single-parameter rule met (RR < 25, HR < 130, SpO2 > 90, SBP > 90, temp < 38).
DETERIORATION = {"hr": (111.0, 125.0), "rr": (21.0, 24.0), "sbp": (93.0, 100.0),
                 "temp_c": (37.5, 37.9)}
DETERIORATION_SPO2 = {False: (92.0, 93.0), True: (86.0, 87.0)}
EVENT_BP_EVERY_S = 300.0  # devices measure blood pressure more often when readings are abnormal
LOW_BATTERY_LEAD_S = 4 * 3600.0
LWT_AFTER_S = 90.0  # broker notices a silent connection after 1.5 x keepalive (60 s)


@dataclass(frozen=True)
class Event:
    """One injected event on resident `row`, from true time `start` for `duration` s."""

    row: int
    kind: str
    start: float
    duration: float
    severity: str = ""
    flag: bool = True  # fall: whether the device's own fall detector fires
    source: str = "scenario"

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def window_start(self) -> float:
        return self.start - (LOW_BATTERY_LEAD_S if self.kind == "low_battery" else 0.0)

    @property
    def sev(self) -> str:
        return self.severity or EVENT_KINDS[self.kind][2]


def make_event(row: int, kind: str, start: float, duration: float | None = None,
               severity: str | None = None, flag: bool | None = None,
               source: str = "scenario") -> Event:
    """Validated constructor (raises ValueError naming the problem)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}; one of {sorted(EVENT_KINDS)}")
    dur = float(duration if duration is not None else EVENT_KINDS[kind][0])
    if dur <= 0:
        raise ValueError(f"{kind}: duration must be positive")
    sev = severity or EVENT_KINDS[kind][2]
    if kind in {"hypoxemia", "tachycardia"} and sev not in {"high", "critical"}:
        raise ValueError(f"{kind}: severity high or critical, got {sev!r}")
    if kind not in {"hypoxemia", "tachycardia"} and sev != EVENT_KINDS[kind][2]:
        raise ValueError(f"{kind}: severity is always {EVENT_KINDS[kind][2]}")
    return Event(row, kind, float(start), dur, sev, True if flag is None else bool(flag), source)


@dataclass
class EventSet:
    """The events of one run, sorted by start, with per-event generator seeds."""

    events: list[Event]
    seed: int
    _starts: np.ndarray = field(init=False)
    _ends: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.events = sorted(self.events, key=lambda e: (e.start, e.row, e.kind))
        self._starts = np.array([e.window_start for e in self.events], float)
        self._ends = np.array([e.end for e in self.events], float)

    def overlapping(self, t_lo: float, t_hi: float) -> list[int]:
        hit = (self._starts < t_hi) & (self._ends > t_lo)
        return [int(i) for i in np.flatnonzero(hit)]


def random_events(phys: Physiology, rate_per_day: float, hours: float, seed: int,
                  existing: list[Event] | None = None) -> list[Event]:
    """Poisson-many events per resident-day, kinds weighted, never overlapping per resident."""
    rng = np.random.default_rng([seed, 505])
    pop, t0 = phys.pop, phys.t0
    n_events = int(rng.poisson(rate_per_day * pop.n * hours / 24.0))
    kinds = list(EVENT_KINDS)
    weights = np.array([3, 2, 1, 1, 1, 0.5, 1, 0.5, 1, 1, 0.5, 1, 1, 1.5, 1], float)
    busy: dict[int, list[tuple[float, float]]] = {}
    for e in existing or []:
        busy.setdefault(e.row, []).append((e.window_start, e.end))
    out: list[Event] = []
    for _ in range(n_events):
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        row = int(rng.integers(pop.n))
        dur = EVENT_KINDS[kind][0] * float(rng.uniform(0.8, 1.5))
        if kind in AWAKE_ONLY:
            dur = min(dur, 4.5 * 3600) if kind == "inactivity" else dur
            day0 = np.floor((t0 + phys.utc_offset_s) / 86400.0)
            days = max(1, int(np.ceil(hours / 24.0)) + 1)
            local = (day0 + rng.integers(days)) * 86400.0 + rng.uniform(8 * 3600, 20.5 * 3600 - dur)
            start = local - phys.utc_offset_s
        else:
            start = t0 + rng.uniform(600.0, max(601.0, hours * 3600 - dur - 600))
        if start < t0 + 600 or start + dur > t0 + hours * 3600 - 60:
            continue
        two = kind in {"hypoxemia", "tachycardia"}
        sev = str(rng.choice(["high", "critical"])) if two else None
        ev = make_event(row, kind, start, dur, sev, bool(rng.random() < 0.6), source="random")
        margin = 1800.0
        if any(ev.window_start - margin < e and s < ev.end + margin for s, e in busy.get(row, [])):
            continue
        busy.setdefault(row, []).append((ev.window_start, ev.end))
        out.append(ev)
    return out


# ---------------------------------------------------------------- applying to samples


def apply_events(chunk: Chunk, phys: Physiology, events: EventSet) -> None:
    """Overwrite the chunk's samples where events are under way (in place)."""
    t_lo, t_hi = float(chunk.true_t.min()), float(chunk.true_t.max()) + 1e-6
    for i in events.overlapping(t_lo, t_hi):
        ev = events.events[i]
        tt = chunk.true_t[ev.row]
        idx = np.flatnonzero((tt >= ev.window_start) & (tt < ev.end))
        if idx.size:
            rng = np.random.default_rng([events.seed, 404, i, chunk.k0])
            _apply_one(chunk, phys, ev, idx, rng)


def _first_k(phys: Physiology, row: int, t: float) -> int:
    """Index of the first sample of `row` taken at or after true time t."""
    return int(np.ceil((t - phys.t0 - phys.pop.phase[row]) / phys.interval_s - 1e-9))


def _rest_fill(c: Chunk, phys: Physiology, r: int, idx: np.ndarray, k: np.ndarray,
               rng: np.random.Generator, act: tuple[float, float] = (0.025, 0.08)) -> None:
    """Worn, transmitting, at rest, with resting vitals (overrides off-wrist, gaps, walks)."""
    p, n = phys.pop, idx.size
    c.worn[r, idx] = True
    c.sent[r, idx] = True
    c.activity[r, idx] = rng.uniform(*act, n)
    c.hr[r, idx] = np.clip(p.hr0[r] + rng.normal(0, 2, n), *BENIGN_HR)
    lo, hi = BENIGN_SPO2_COPD if p.copd[r] else BENIGN_SPO2
    c.spo2[r, idx] = np.clip(p.spo2_0[r] + rng.normal(0, 0.6, n), lo, hi)
    c.rr[r, idx] = np.clip(p.rr0[r] + rng.normal(0, 0.8, n), *BENIGN_RR)
    temp_on = k % max(1, round(60.0 / phys.interval_s)) == 0
    c.temp_c[r, idx] = np.where(temp_on, p.temp0[r] + rng.normal(0, 0.06, n), np.nan)


def _apply_one(c: Chunk, phys: Physiology, ev: Event, idx: np.ndarray,
               rng: np.random.Generator) -> None:
    r, n = ev.row, idx.size
    k = c.k0 + idx
    kf = _first_k(phys, r, ev.start)
    copd = bool(phys.pop.copd[r])
    if ev.kind == "device_offline":
        c.sent[r, idx] = False
    elif ev.kind == "not_worn":
        c.sent[r, idx] = True
        c.worn[r, idx] = False
        c.activity[r, idx] = 0.0
        for name in ("hr", "spo2", "rr", "temp_c", "sbp", "dbp"):
            getattr(c, name)[r, idx] = np.nan
    elif ev.kind == "low_battery":
        tt = c.true_t[r, idx]
        pre = 100.0 - 84.0 * (tt - ev.window_start) / LOW_BATTERY_LEAD_S
        post = 15.0 - 10.0 * (tt - ev.start) / ev.duration
        ramp = np.where(tt < ev.start, pre, post)
        c.battery[r, idx] = np.floor(np.minimum(c.battery[r, idx], ramp))
    elif ev.kind == "fall":
        _rest_fill(c, phys, r, idx, k, rng, act=(0.0, 0.02))
        impact = k == kf
        c.activity[r, idx[impact]] = rng.uniform(3.0, 6.0, int(impact.sum()))
        c.fall[r, idx[impact]] = ev.flag
        c.hr[r, idx] += 8.0
    elif ev.kind == "inactivity":
        _rest_fill(c, phys, r, idx, k, rng, act=(0.0, 0.015))
        c.activity[r, idx[k == kf]] = 0.3  # got up once, then stopped moving
    elif ev.kind == "deterioration":
        _rest_fill(c, phys, r, idx, k, rng, act=(0.03, 0.1))
        f = np.clip((c.true_t[r, idx] - ev.start) / (0.7 * ev.duration), 0.0, 1.0)
        for name, (lo, hi) in {**DETERIORATION, "spo2": DETERIORATION_SPO2[copd]}.items():
            col = getattr(c, name)
            target = rng.uniform(lo, hi, n)
            if name == "sbp":  # blood pressure: fewer readings, every 10 min while unwell
                bp_on = (k - kf) % max(1, round(600.0 / phys.interval_s)) == 0
                val = (1 - f) * phys.pop.sbp0[r] + f * target
                col[r, idx] = np.where(bp_on, np.maximum(val, lo), np.nan)
                c.dbp[r, idx] = np.where(bp_on, phys.pop.dbp0[r] - 12.0 * f, np.nan)
                continue
            val = (1 - f) * col[r, idx] + f * target
            # bound from the side that would meet another rule (fever, tachy-, hypoxemia)
            col[r, idx] = np.maximum(val, lo) if name == "spo2" else np.minimum(val, hi)
    else:
        bands = BANDS.get((ev.kind, ev.sev, copd)) or BANDS[(ev.kind, ev.sev, False)]
        if ev.kind in REST_KINDS:
            _rest_fill(c, phys, r, idx, k, rng)
        else:
            _rest_fill(c, phys, r, idx, k, rng, act=(0.03, 0.3))
        bp_on = (k - kf) % max(1, round(EVENT_BP_EVERY_S / phys.interval_s)) == 0
        for name, (lo, hi) in bands.items():
            col = getattr(c, name)
            vals = rng.uniform(lo, hi, n)
            if name == "temp_c":
                col[r, idx] = np.where(np.isnan(col[r, idx]), np.nan, vals)
            elif name in ("sbp", "dbp"):
                col[r, idx] = np.where(bp_on, vals, np.nan)
            else:
                col[r, idx] = vals
