"""Streaming building blocks shared by detectors, vectorised over devices.

A tick's new samples are sorted by (row, ts). Detectors walk them by *rank within device*
(the k-th new sample of every device at once), so each step is a NumPy operation over
distinct rows and a device's samples are still seen in time order. Live ticks have ranks
1..10; replay batches up to 600.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from detectors.base import Findings, TickState, concat_findings

_rank_cache: list[Any] = [None, None]
# Durations are whole seconds in the contract; sample times carry float error and device
# clock drift (a 60 s reading cadence drifting 30 ppm spans 599.98 s in 10 readings), so
# a span within half a second of a duration counts as reaching it.
EPS = 0.5


def rank_groups(rows: np.ndarray, cache: bool = True) -> list[np.ndarray]:
    """Index arrays, one per rank: group k holds the k-th sample of every device that has one.

    `rows` must be sorted. The result for the tick's array is cached (every detector asks);
    `cache=False` for another array, so as not to evict it.
    """
    if cache and _rank_cache[0] is rows:
        return list(_rank_cache[1])
    n = len(rows)
    if n == 0:
        groups: list[np.ndarray] = []
    else:
        first = np.empty(n, bool)  # first sample of its device
        first[0] = True
        np.not_equal(rows[1:], rows[:-1], out=first[1:])
        if first.all():
            groups = [np.arange(n)]
        else:
            pos = np.arange(n)
            rank = pos - np.maximum.accumulate(np.where(first, pos, 0))
            order = np.argsort(rank, kind="stable")
            bounds = np.cumsum(np.bincount(rank)).tolist()
            groups = [order[lo:hi] for lo, hi in zip([0, *bounds[:-1]], bounds, strict=True)]
    if cache:
        _rank_cache[0], _rank_cache[1] = rows, groups
    return list(groups)


class Fresh:
    """Drops late samples: anything not newer than the last one processed for its device.
    `step` takes distinct rows (one rank group's)."""

    def __init__(self, n: int) -> None:
        self.last_ts = np.full(n, -np.inf, np.float64)

    def step(self, r: np.ndarray, t: np.ndarray) -> np.ndarray:
        if len(r) == len(self.last_ts):  # distinct rows, all of them: in place, no gathers
            ok = t > self.last_ts
            np.copyto(self.last_ts, t, where=ok)
            return ok
        ok = t > self.last_ts[r]
        self.last_ts[r[ok]] = t[ok]
        return ok


class Runs:
    """Runs of qualifying samples per device, on sample time.

    A run survives gaps up to `max_gap` s between qualifying samples and up to `max_stray`
    non-qualifying samples in a row. Only included samples are passed in: excluded ones
    neither extend nor break a run.
    """

    def __init__(self, n: int, max_stray: int = 1) -> None:
        self.start = np.full(n, np.nan, np.float64)
        self.last = np.full(n, np.nan, np.float64)
        self.miss = np.zeros(n, np.int32)
        self.max_stray = max_stray

    def step(self, r: np.ndarray, t: np.ndarray, q: np.ndarray, max_gap: Any,
             breaks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Advance rows `r`; returns their new (start, last). A row with `breaks` ends its
        run after this sample (as `reset` would)."""
        start, last, miss = self.start.take(r), self.last.take(r), self.miss.take(r)
        gapped = (t - last) > max_gap + EPS  # NaN compares False without a warning
        miss += 1
        miss *= ~q  # strays in a row: 0 after a qualifying sample
        # a qualifying sample starts a run when none is going or after a gap; a stray one
        # ends it after a gap or too many strays in a row
        begin = gapped | (start != start)
        begin &= q
        end = gapped | (miss > self.max_stray)
        end &= ~q
        if breaks is not None:
            end |= breaks
            miss *= ~breaks
        # begin and q are mixed masks: a masked copy mispredicts (2x a `where`)
        start = np.where(begin, t, start)
        if end.any():
            start = np.where(end, np.nan, start)
        last = np.where(q, t, last)
        self.start[r], self.last[r], self.miss[r] = start, last, miss
        return start, last

    def reset(self, r: np.ndarray) -> None:
        self.start[r] = np.nan
        self.miss[r] = 0


class Emitter:
    """Collects findings of one kind over a tick's rank steps, in time order per device."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.parts: list[Findings] = []

    def add(self, mask: np.ndarray, rows: np.ndarray, severity: Any, active: bool,
            onset: np.ndarray, evidence: dict[str, Any]) -> None:
        if not mask.any():
            return
        k = int(mask.sum())
        ev = {key: _pick(value, mask, k) for key, value in evidence.items()}
        self.parts.append(Findings(
            self.kind, rows[mask].astype(np.int32),
            _pick(severity, mask, k).astype(np.int8), np.full(k, active, bool),
            _pick(onset, mask, k).astype(np.float64), ev))

    def build(self) -> list[Findings]:
        return [concat_findings(self.kind, self.parts)] if self.parts else []


def _sub(value: Any, mask: np.ndarray) -> Any:
    """`value[mask]` for per-sample arrays; scalars pass through."""
    if isinstance(value, np.ndarray) and value.shape == mask.shape:
        return value[mask]
    return value


def _pick(value: Any, mask: np.ndarray, k: int) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.shape == mask.shape:
        return value[mask]
    return np.full(k, value)


class Episodes:
    """Per-device condition state: severity from sustained runs, clearing with hysteresis.

    Level j is met when its run has lasted `durs[j]`; the episode's severity is the highest
    met level. A finding is emitted when a device becomes active, when its severity rises,
    and when it clears: `clear` samples held for `clear_s` s (0 = at once).
    """

    def __init__(self, kind: str, n: int, severities: tuple[int, ...],
                 extreme: str | None = None, max_stray: int = 1) -> None:
        if any(b <= a for a, b in itertools.pairwise(severities)):
            raise ValueError("episode severities must rise with the level")
        self.kind = kind
        self.severities = severities
        self.runs = [Runs(n, max_stray) for _ in severities]
        self.sev = np.zeros(n, np.int8)
        self.onset = np.full(n, np.nan, np.float64)
        self.ext = np.full(n, np.nan, np.float64)
        self.cstart = np.full(n, np.nan, np.float64)
        self.extreme = extreme
        # a level-0 run going or the condition active: the rows whose samples `step` needs
        # even when they do not qualify (callers test this before handing samples over)
        self.busy = np.zeros(n, bool)

    def resume(self, r: np.ndarray, onset: np.ndarray, sev: Any) -> None:
        """Hold rows `r` active at severity `sev` since `onset`, with no run going (after a
        restart: the conditions of open alerts), so that they clear as usual."""
        r = np.asarray(r, np.intp)
        self.sev[r] = sev
        self.onset[r] = onset
        self.busy[r] = True
        self.ext[r] = np.nan
        self.cstart[r] = np.nan

    @staticmethod
    def _step_some(run: Runs, start: np.ndarray, some: np.ndarray, r: np.ndarray,
                   t: np.ndarray, q: np.ndarray, max_gap: Any, breaks: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """`run.step` on rows `r[some]` only; full-length (start, last), where the other rows
        (idle: `start` NaN) keep NaN."""
        gap = max_gap.take(some) if isinstance(max_gap, np.ndarray) else max_gap
        s_some, l_some = run.step(r.take(some), t.take(some), q.take(some), gap,
                                  None if breaks is None else breaks.take(some))
        start = start.copy()
        start[some] = s_some
        last = np.full(len(r), np.nan)
        last[some] = l_some
        return start, last

    def step(self, out: Emitter, r: np.ndarray, t: np.ndarray, qs: list[np.ndarray],
             durs: list[Any], clear: np.ndarray, clear_s: Any, max_gap: Any,
             value: np.ndarray | None = None, ext_key: str = "value",
             evidence: dict[str, Any] | None = None, breaks: np.ndarray | None = None,
             thresholds: list[Any] | None = None, severities: list[Any] | None = None) -> None:
        """Process one included sample for each row in `r` (distinct rows).

        `thresholds` (one per level) adds evidence `threshold`: that of the current level.
        `severities` (one per level, scalars or per-sample int8 arrays, rising with the
        level where a level can be met) overrides the constructor's.
        """
        if len(r) == 0:
            return
        r = r.astype(np.intp, copy=False)  # take() with native indices: ~2x a fancy gather
        # Only rows with something going on need the full step: a qualifying sample, a run
        # in progress or an active condition (level 0 is the loosest, so it covers the rest).
        sev = self.sev.take(r)
        live = qs[0] | self.busy.take(r)
        if not live.all():
            if not live.any():
                return
            r, t, sev = r[live], t[live], sev[live]
            qs = [q[live] for q in qs]
            durs = [_sub(d, live) for d in durs]
            clear, clear_s, max_gap = clear[live], _sub(clear_s, live), _sub(max_gap, live)
            value = None if value is None else value[live]
            evidence = None if evidence is None else {k: _sub(v, live)
                                                       for k, v in evidence.items()}
            breaks = None if breaks is None else breaks[live]
            thresholds = None if thresholds is None else [_sub(x, live) for x in thresholds]
            severities = None if severities is None else [_sub(x, live) for x in severities]
        levels = self.severities if severities is None else severities
        # A higher level's rows with no qualifying sample and no run going are idle: their
        # step would only count strays, which matter to nothing until a run starts again.
        # Such a level steps only its other rows (usually none or a few).
        # A break (e.g. outside awake hours) ends every level's run after its sample; an
        # idle level's rows have no run to end.
        if breaks is not None and not breaks.any():
            breaks = None
        spans: list[tuple[np.ndarray, np.ndarray] | None] = []
        for i, (run, q) in enumerate(zip(self.runs, qs, strict=True)):
            if i:
                old = run.start.take(r)
                go = q | (old == old)
                if not go.all():
                    if not go.any():
                        spans.append(None)
                        continue
                    spans.append(self._step_some(run, old, np.flatnonzero(go), r, t, q,
                                                 max_gap, breaks))
                    continue
            spans.append(run.step(r, t, q, max_gap, breaks))
        # the highest level whose run has lasted its duration (NaN: no run, compares False)
        cand: Any = 0
        for sp, dur, s in zip(spans, durs, levels, strict=True):
            if sp is not None:
                met = (sp[1] - sp[0]) >= dur - EPS
                if met.any():
                    cand = np.where(met, s, cand)  # severities rise with the level
        start0 = spans[0][0] if spans[0] is not None else self.runs[0].start.take(r)
        rise = cand > sev
        rising = bool(rise.any())
        if value is not None and self.extreme is not None:
            ext = self.ext.take(r)
            inside = qs[0] | (sev > 0)
            pick = np.fmin if self.extreme == "min" else np.fmax
            base = np.where((sev == 0) & (start0 == t), np.nan, ext)
            self.ext[r] = np.where(inside, pick(base, value), ext)
        if rising:
            # onset: the earliest start among the levels' runs
            first: Any = np.nan
            for sp in spans:
                if sp is not None:
                    first = np.fmin(first, sp[0])
            onset = np.where(rise & (sev == 0), first, self.onset.take(r))
            self.onset[r] = onset
            sev_now = np.where(rise, cand, sev).astype(np.int8)
            self.sev[r] = sev_now
        else:
            sev_now = sev
        # clearing: clear samples held for clear_s while active
        active = sev_now > 0
        self.busy[r] = active | (start0 == start0)
        if not active.any():
            return
        if not rising:
            onset = self.onset.take(r)
        cs = self.cstart.take(r)
        cs = np.where(clear & active, np.where(cs != cs, t, cs), np.nan)
        self.cstart[r] = cs
        cleared = active & ~rise & ((t - cs) >= clear_s - EPS)
        if not (rising or cleared.any()):
            return
        ev: dict[str, Any] = {"duration_s": t - onset}
        if self.extreme is not None:
            ev[ext_key] = self.ext.take(r)
        if evidence:
            ev.update(evidence)
        if thresholds is not None:
            level = np.full(len(r), np.nan)
            for thr, s in zip(thresholds, levels, strict=True):
                level = np.where(sev_now == s, thr, level)
            ev["threshold"] = level
        out.add(rise, r, sev_now, True, onset, ev)
        if cleared.any():
            out.add(cleared, r, sev_now, False, onset, ev)
            cr = r[cleared]
            self.sev[cr] = 0
            self.busy[cr] = False
            self.onset[cr] = np.nan
            self.ext[cr] = np.nan
            self.cstart[cr] = np.nan
            for run in self.runs:
                run.reset(cr)


class TickGroup(ABC):
    """Tick work shared by some member detectors (one per rule and config name): each
    member's `update` asks its group, the first asking runs the whole tick (`_run`, findings
    by `id(member)`), and every member takes its own. An unlinked rule is a group of one."""

    members: list[Any]
    _new: Any = None  # the tick's samples the findings belong to
    _now = float("nan")
    _out: dict[int, list[Findings]]

    def __init__(self, members: list[Any]) -> None:
        self.members = members

    def take(self, member: object, state: TickState, now: float) -> list[Findings]:
        """`member`'s findings for this tick (the first member asking runs the tick)."""
        if state.new is not self._new or now != self._now:
            self._new, self._now = state.new, now
            self._out = self._run(state)
        return self._out.pop(id(member), [])

    @abstractmethod
    def _run(self, state: TickState) -> dict[int, list[Findings]]:
        """The whole tick's findings, by `id(member)`."""

    @classmethod
    def link(cls, detectors: list[Any], member_type: type, what: str) -> None:
        """Put every `member_type` detector in `detectors` into one shared group of this
        class (before any tick)."""
        members: list[Any] = [d for d in detectors if isinstance(d, member_type)]
        if len(members) < 2:
            return
        if any(m._group._new is not None for m in members):
            raise ValueError(f"link {what} before their first tick")
        cls(members)


class MemberBank(TickGroup):
    """A group of rules sharing one `Episodes` bank: member j's device row r is bank row
    j * n + r (`detectors.fused.SustainedGroup`, `detectors.fused_awake.AwakeGroup`)."""

    members: list[Any]
    n: int
    bank: Episodes

    def resume_member(self, member: object, rows: np.ndarray, onset: np.ndarray,
                      sev: Any) -> None:
        """`Episodes.resume` for one member's rows (after a restart)."""
        j = next(i for i, m in enumerate(self.members) if m is member)
        self.bank.resume(j * self.n + np.asarray(rows, np.intp), onset, sev)
