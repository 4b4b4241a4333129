"""Vectorised physiology of older adults: baselines, circadian rhythm, activity, artefacts.

Everything is computed as (residents, samples) arrays, one chunk of time at a time, from a
seeded `np.random.Generator`. Daily routines (wake/bed times, meals, walks, chores, naps,
off-wrist moments, charging) are drawn per resident per local day from a generator seeded by
(seed, day), so a day looks the same however the run is chunked. Benign values are clipped
inside the contract's default rules, so that only injected events meet a rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
from scipy.signal import lfilter

from config.models import Config

DAY = 86400.0

# Benign bounds: stay clear of every default rule (see CONTRACT.md, "Kinds and default rules").
BENIGN_ACTIVITY_MAX = 2.0  # < 2.5 g impact threshold of the fall rule
BENIGN_HR = (46.0, 118.0)  # bradycardia <= 40, tachycardia >= 130 at rest
BENIGN_SPO2 = (92.0, 100.0)  # hypoxemia <= 90 (copd: <= 84)
BENIGN_SPO2_COPD = (87.0, 94.0)
BENIGN_RR = (10.0, 22.0)  # bradypnoea <= 8, tachypnoea >= 25
BENIGN_TEMP = (35.7, 37.6)  # fever >= 38.0, hypothermia <= 35.0
BENIGN_SBP = (96.0, 172.0)  # hypotension <= 90, crisis >= 180
BENIGN_DBP = (52.0, 108.0)  # crisis >= 120
BATTERY_FLOOR = 25.0  # low battery <= 15

_MINUTES = np.arange(1440, dtype=np.float64) * 60.0


def _circ(peak_h: float) -> np.ndarray:
    """A 24 h cosine peaking at `peak_h` local time, tabulated per minute of the day."""
    return np.cos(2 * np.pi * (_MINUTES - peak_h * 3600) / DAY).astype(np.float32)


_CIRC_HR, _CIRC_TEMP, _CIRC_BP = _circ(16.0), _circ(17.0), _circ(10.0)


@dataclass
class Population:
    """Per-resident constants (arrays of length n) drawn once from the seed."""

    resident_ids: list[str]
    device_ids: list[str]
    towns: list[str]
    copd: np.ndarray
    hypertension: np.ndarray
    af: np.ndarray
    hr0: np.ndarray
    spo2_0: np.ndarray
    rr0: np.ndarray
    temp0: np.ndarray
    sbp0: np.ndarray
    dbp0: np.ndarray
    wake_s: np.ndarray  # usual wake time, seconds after local midnight
    bed_s: np.ndarray
    phase: np.ndarray  # sampling phase within the interval, s
    clock_offset_s: np.ndarray  # device clock error at start
    drift: np.ndarray  # device clock drift, s per s (ppm * 1e-6)
    seq0: np.ndarray
    battery0: np.ndarray
    drain_per_h: np.ndarray
    bp_every_s: np.ndarray  # blood-pressure cadence per resident

    @property
    def n(self) -> int:
        return len(self.resident_ids)

    @classmethod
    def from_config(cls, config: Config, seed: int, interval_s: float) -> Population:
        rng = np.random.default_rng([seed, 101])
        res = config.residents
        n = len(res)

        def has(cond: str) -> np.ndarray:
            return np.array([cond in r.conditions for r in res], bool)

        copd, htn, af = has("copd"), has("hypertension"), has("atrial_fibrillation")
        drifting = rng.random(n) < 0.3  # some devices keep poor time
        return cls(
            resident_ids=[r.id for r in res],
            device_ids=[r.device for r in res],
            towns=[r.town for r in res],
            copd=copd, hypertension=htn, af=af,
            hr0=np.clip(rng.normal(71, 7, n) + 6 * af, 56, 92),
            spo2_0=np.where(copd, np.clip(rng.normal(90.5, 0.8, n), 89, 92),
                            np.clip(rng.normal(96.2, 1.0, n), 94.5, 98.5)),
            rr0=np.clip(rng.normal(16, 1.5, n) + 3 * copd, 12.5, 20.5),
            temp0=np.clip(rng.normal(36.5, 0.15, n), 36.1, 36.9),
            sbp0=np.where(htn, rng.normal(148, 7, n), rng.normal(126, 8, n)),
            dbp0=np.where(htn, rng.normal(86, 5, n), rng.normal(74, 5, n)),
            wake_s=np.clip(rng.normal(6.5 * 3600, 1200, n), 5.5 * 3600, 7.4 * 3600),
            bed_s=np.clip(rng.normal(22.0 * 3600, 1500, n), 21.0 * 3600, 23.3 * 3600),
            phase=rng.random(n) * interval_s,
            clock_offset_s=np.where(drifting, rng.normal(0, 2.0, n), 0.0),
            drift=np.where(drifting, rng.normal(0, 30e-6, n), 0.0),
            seq0=rng.integers(0, 100_000, n),
            battery0=rng.uniform(55, 100, n),
            drain_per_h=rng.uniform(2.0, 2.8, n),
            bp_every_s=rng.choice([900.0, 1800.0, 3600.0], n, p=[0.2, 0.5, 0.3]),
        )


@dataclass
class DayPlan:
    """One local day's routine for every resident; bout arrays are (slots, residents)."""

    wake: np.ndarray  # local-day seconds
    bed: np.ndarray
    bout_start: np.ndarray  # NaN = no bout in this slot
    bout_end: np.ndarray
    bout_level: np.ndarray  # activity, g
    off_start: np.ndarray  # off-wrist (short, benign) and charging, worn false
    off_end: np.ndarray
    charge_start: np.ndarray
    charge_end: np.ndarray
    gap_start: np.ndarray  # radio gaps: nothing sent, < 10 min
    gap_end: np.ndarray


def day_plan(pop: Population, seed: int, day: int) -> DayPlan:
    """The routine of local day `day` (days since the epoch in local time)."""
    rng = np.random.default_rng([seed, 202, day])
    n = pop.n
    wake = pop.wake_s + rng.normal(0, 900, n)
    bed = np.maximum(pop.bed_s + rng.normal(0, 900, n), 21.2 * 3600)
    starts, ends, levels = [], [], []
    for meal_h in (7.6, 12.0, 18.0):  # meal preparation and eating: light activity
        s = np.maximum(meal_h * 3600 + rng.normal(0, 1200, n), wake + 600)
        starts.append(s)
        ends.append(s + rng.uniform(1200, 2700, n))
        levels.append(rng.uniform(0.15, 0.35, n))
    for _ in range(2):  # walks, most people most days
        walk = rng.random(n) < 0.65
        s = rng.uniform(8.5 * 3600, 17.5 * 3600, n)
        starts.append(np.where(walk, s, np.nan))
        ends.append(s + rng.uniform(900, 2700, n))
        levels.append(rng.uniform(0.5, 1.2, n))
    for _ in range(3):  # chores
        s = rng.uniform(8.0 * 3600, 19.5 * 3600, n)
        starts.append(np.where(rng.random(n) < 0.7, s, np.nan))
        ends.append(s + rng.uniform(600, 2400, n))
        levels.append(rng.uniform(0.25, 0.6, n))
    nap = rng.random(n) < 0.5  # an after-lunch nap: very still, < 3 h
    s = 13.0 * 3600 + rng.normal(0, 900, n)
    starts.append(np.where(nap, s, np.nan))
    ends.append(s + rng.uniform(1200, 4800, n))
    levels.append(np.full(n, 0.004))
    off = rng.random(n) < 0.35  # a short off-wrist moment (washing), < 30 min
    off_s = rng.uniform(8 * 3600, 20 * 3600, n)
    charge_s = 21.0 * 3600 + rng.uniform(300, 1500, n)  # after awake hours end
    gap = rng.random(n) < 0.4
    gap_s = rng.uniform(0, DAY - 600, n)
    return DayPlan(
        wake=wake, bed=bed,
        bout_start=np.array(starts), bout_end=np.array(ends), bout_level=np.array(levels),
        off_start=np.where(off, off_s, np.nan), off_end=off_s + rng.uniform(300, 1200, n),
        charge_start=charge_s, charge_end=charge_s + rng.uniform(1800, 3000, n),
        gap_start=np.where(gap, gap_s, np.nan), gap_end=gap_s + rng.uniform(30, 240, n),
    )


@dataclass
class Chunk:
    """Samples k0..k1-1 of every resident. Floats are NaN when not measured."""

    k0: int
    true_t: np.ndarray  # (R, T) float64: when the sample was taken (true time)
    ts: np.ndarray  # device time (drifting clock)
    seq: np.ndarray  # int64
    hr: np.ndarray
    spo2: np.ndarray
    rr: np.ndarray
    temp_c: np.ndarray
    sbp: np.ndarray
    dbp: np.ndarray
    activity: np.ndarray
    fall: np.ndarray  # bool
    worn: np.ndarray  # bool
    battery: np.ndarray  # float, whole percent
    sent: np.ndarray  # bool: the sample reaches the broker
    delay: np.ndarray  # network delay, s
    tod: np.ndarray  # local seconds of day
    local_day: np.ndarray  # int

    @property
    def shape(self) -> tuple[int, int]:
        n, m = self.true_t.shape
        return int(n), int(m)


@dataclass
class Physiology:
    """Generates chunks in time order, carrying slow state (drifts, battery) across chunks."""

    pop: Population
    seed: int
    t0: float
    interval_s: float
    utc_offset_s: float
    _plans: dict[int, DayPlan] = field(default_factory=dict)
    _ou: dict[str, np.ndarray] = field(default_factory=dict)
    _battery: np.ndarray | None = None

    @classmethod
    def create(cls, config: Config, seed: int, t0: float, interval_s: float) -> Physiology:
        pop = Population.from_config(config, seed, interval_s)
        offset = ZoneInfo(config.timezone).utcoffset(datetime.fromtimestamp(t0, UTC))
        return cls(pop=pop, seed=seed, t0=t0, interval_s=interval_s,
                   utc_offset_s=offset.total_seconds() if offset else 0.0)

    def plan(self, day: int) -> DayPlan:
        if day not in self._plans:
            if len(self._plans) > 8:
                self._plans.pop(min(self._plans))
            self._plans[day] = day_plan(self.pop, self.seed, day)
        return self._plans[day]

    def _ou_step(self, name: str, rng: np.random.Generator, shape: tuple[int, int],
                 tau_s: float, sd: float) -> np.ndarray:
        """An Ornstein-Uhlenbeck drift continuing from the previous chunk."""
        a = float(np.exp(-self.interval_s / tau_s))
        prev = self._ou.get(name)
        if prev is None:
            prev = rng.normal(0, sd, shape[0])
        e = rng.standard_normal(shape, dtype=np.float32)
        zi = (a * prev)[:, None].astype(np.float32)
        b_coef = np.array([sd * np.sqrt(1 - a * a)], np.float32)
        y, _ = lfilter(b_coef, np.array([1.0, -a], np.float32), e, axis=1, zi=zi)
        self._ou[name] = y[:, -1].astype(np.float64)
        return y.astype(np.float32, copy=False)

    def chunk(self, k0: int, k1: int) -> Chunk:
        """Samples with index k0 <= k < k1; call in increasing order."""
        pop, dt = self.pop, self.interval_s
        rng = np.random.default_rng([self.seed, 303, k0])
        n, m = pop.n, k1 - k0
        f32 = np.float32
        kk = np.arange(k0, k1)[None, :]
        true_t = self.t0 + pop.phase[:, None] + kk * dt
        local = true_t + self.utc_offset_s
        local_day = np.floor(local / DAY).astype(np.int64)
        tod = (local - local_day * DAY).astype(f32)
        asleep = np.zeros((n, m), bool)
        level = np.zeros((n, m), f32)  # activity of the routine bout under way, 0 = none
        worn = np.ones((n, m), bool)
        charging = np.zeros((n, m), bool)
        sent = rng.random((n, m), dtype=f32) > 0.002  # lost messages
        for day in range(int(local_day.min()), int(local_day.max()) + 1):
            p = self.plan(day)
            on = local_day == day
            asleep |= on & ((tod < p.wake[:, None]) | (tod >= p.bed[:, None]))
            for s, e, lv in zip(p.bout_start, p.bout_end, p.bout_level, strict=True):
                inside = on & (tod >= s[:, None]) & (tod < e[:, None])
                np.copyto(level, lv[:, None].astype(f32), where=inside)
            worn &= ~(on & (tod >= p.off_start[:, None]) & (tod < p.off_end[:, None]))
            charging |= on & (tod >= p.charge_start[:, None]) & (tod < p.charge_end[:, None])
            sent &= ~(on & (tod >= p.gap_start[:, None]) & (tod < p.gap_end[:, None]))
        z = rng.standard_normal((n, m), dtype=f32)
        activity = np.exp(np.log(f32(0.07)) + f32(0.55) * z)  # pottering about
        bout = level > 0
        np.copyto(activity, level * np.exp(f32(0.35) * z[:, ::-1]), where=bout)
        still = asleep & ~bout  # a nap is a bout of level 0.004
        turns = rng.random((n, m), dtype=f32)
        np.copyto(activity, np.where(turns < 0.015, turns * 20 + 0.05, f32(0.004)), where=still)
        worn &= ~charging
        np.minimum(activity, f32(BENIGN_ACTIVITY_MAX), out=activity)
        activity *= worn
        act = np.minimum(activity, f32(1.5))
        minute = (tod // 60).astype(np.intp) % 1440
        sl = asleep.astype(f32)

        def noise(sd: float | np.ndarray) -> np.ndarray:
            return rng.standard_normal((n, m), dtype=f32) * np.asarray(sd, f32)

        hr_sd = np.where(pop.af, 7.0, 1.6)[:, None]
        hr = (pop.hr0[:, None].astype(f32) + 3.0 * _CIRC_HR[minute] - 8.0 * sl + 26.0 * act
              + self._ou_step("hr", rng, (n, m), 1800, 2.5) + noise(hr_sd))
        np.clip(hr, *BENIGN_HR, out=hr)
        spo2 = (pop.spo2_0[:, None].astype(f32) - 0.6 * sl
                + self._ou_step("spo2", rng, (n, m), 3600, 0.5) + noise(0.6))
        lo = np.where(pop.copd, BENIGN_SPO2_COPD[0], BENIGN_SPO2[0])[:, None]
        hi = np.where(pop.copd, BENIGN_SPO2_COPD[1], BENIGN_SPO2[1])[:, None]
        spo2 = np.clip(spo2, lo, hi).astype(f32)
        rr = pop.rr0[:, None].astype(f32) - 1.8 * sl + 3.0 * act + noise(0.8)
        np.clip(rr, *BENIGN_RR, out=rr)
        # optical sensors mis-read during motion; the rules exclude moving samples
        u = rng.random((n, m), dtype=f32)
        art = (activity > 0.4) & (u < 0.15)
        hr += art * (20 + 170 * u)
        spo2 -= art * (4 + 50 * u)
        temp = (pop.temp0[:, None].astype(f32) + 0.25 * _CIRC_TEMP[minute] - 0.15 * sl
                + self._ou_step("temp", rng, (n, m), 7200, 0.1) + noise(0.06))
        np.clip(temp, *BENIGN_TEMP, out=temp)
        temp[:, (kk[0] % max(1, round(60.0 / dt))) != 0] = np.nan
        bp_circ = _CIRC_BP[minute]  # morning surge
        bp_drift = self._ou_step("bp", rng, (n, m), 4 * 3600, 5.0)
        sbp = pop.sbp0[:, None].astype(f32) + 6 * bp_circ - 9 * sl + 8 * act + bp_drift + noise(5)
        dbp = pop.dbp0[:, None].astype(f32) + 3 * bp_circ - 5 * sl + 0.5 * bp_drift + noise(3.5)
        bp_k = np.maximum(1, np.round(pop.bp_every_s / dt)).astype(np.int64)[:, None]
        bp_off = (kk % bp_k) != (pop.seq0[:, None] % bp_k)
        np.clip(sbp, *BENIGN_SBP, out=sbp)
        np.clip(dbp, *BENIGN_DBP, out=dbp)
        sbp[bp_off] = np.nan
        dbp[bp_off] = np.nan
        off = ~worn  # off the wrist: the optical sensors read nothing
        for arr in (hr, spo2, rr, temp, sbp, dbp):
            arr[off] = np.nan
        battery = self._battery_run(charging)
        skew = pop.clock_offset_s[:, None] + pop.drift[:, None] * (true_t - self.t0)
        delay = f32(0.03) + np.minimum(rng.exponential(0.12, (n, m)).astype(f32), f32(2.4))
        return Chunk(
            k0=k0, true_t=true_t, ts=true_t + skew, seq=pop.seq0[:, None] + kk,
            hr=hr, spo2=spo2, rr=rr, temp_c=temp, sbp=sbp, dbp=dbp, activity=activity,
            fall=np.zeros((n, m), bool), worn=worn, battery=battery, sent=sent,
            delay=delay, tod=tod, local_day=local_day,
        )

    def _battery_run(self, charging: np.ndarray) -> np.ndarray:
        """Battery drains while worn and refills on the charger; saturating, so stepped."""
        b = self.pop.battery0.copy() if self._battery is None else self._battery
        drain = self.pop.drain_per_h * self.interval_s / 3600.0
        fill = 70.0 * self.interval_s / 3600.0
        # Between charger events the level is linear; charging is rare, so step only where
        # some resident is charging and use cumulative sums over the plain stretches.
        out = np.empty(charging.shape, np.float32)
        any_charge: np.ndarray = np.asarray(charging.any(axis=0))
        j, m = 0, charging.shape[1]
        while j < m:
            if any_charge[j]:
                b = np.where(charging[:, j], np.minimum(100.0, b + fill),
                             np.maximum(BATTERY_FLOOR, b - drain))
                out[:, j] = b
                j += 1
                continue
            e = j + int(np.argmax(any_charge[j:])) if any_charge[j:].any() else m
            steps = np.arange(1, e - j + 1)
            out[:, j:e] = np.maximum(BATTERY_FLOOR, b[:, None] - drain[:, None] * steps)
            b = out[:, e - 1].astype(np.float64)
            j = e
        self._battery = b
        return np.floor(out)
