"""The detector protocol: pure, vectorised, no I/O.

A detector is a small class configured by constructor arguments (mirrored by a pydantic
model) with one method, `update(state, now) -> list[Findings]`, called once per pipeline
tick with the state of *all* devices. Time comes in as `now`; detectors never read a
clock, log, or touch MQTT, files or alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from ingest.devices import DeviceTable
from ingest.samples import SampleColumns
from ingest.state import StateStore

SEVERITY_CODES: dict[str, int] = {"low": 1, "medium": 2, "high": 3, "critical": 4}
SEVERITY_NAMES: dict[int, str] = {v: k for k, v in SEVERITY_CODES.items()}


@dataclass(frozen=True)
class TickState:
    """What one tick hands every detector.

    `new` holds the samples accepted since the previous tick, sorted by (row, ts); a sample
    may be older than one already seen for its device (late delivery). `state` holds the
    per-device scalars and rings (`store`, read only for detectors). `utc_offset_s` converts sample
    times to local wall-clock time for awake-hours rules.
    """

    new: SampleColumns
    store: StateStore
    devices: DeviceTable
    started_at: float  # pipeline start, for "never heard from" devices
    utc_offset_s: float = 8 * 3600.0
    # the pipeline's own broker link: when it was last lost, and last (re)gained (NaN:
    # never lost / never regained). While it is down the pipeline hears no device.
    link_lost_at: float = float("nan")
    link_back_at: float = float("nan")


@dataclass
class Findings:
    """Detector output for one kind: parallel arrays, one entry per (device row) finding.

    `active` True means the condition holds (opened, continuing with a higher severity, or
    still present); False means it cleared. `evidence` maps a name to an array (one value
    per finding) or to a list of values.
    """

    kind: str
    row: np.ndarray  # int32
    severity: np.ndarray  # int8, SEVERITY_CODES
    active: np.ndarray  # bool
    onset_ts: np.ndarray  # float64, sample ts at which the condition began
    evidence: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.row.shape[0])

    @classmethod
    def none(cls, kind: str) -> Findings:
        return cls(kind, np.zeros(0, np.int32), np.zeros(0, np.int8), np.zeros(0, bool),
                   np.zeros(0, np.float64), {})


class Detector(Protocol):
    """What the pipeline needs of a detector.

    Optional: a class attribute `urgent = True` makes the pipeline also run the detector
    between ticks, over just-arrived samples, when a device reports a fall; such a detector
    must ignore samples it has already judged (as `detectors.runs.Fresh` does), since the
    next tick hands them over again.

    Optional, for replay's spans (`carewatch.span`: several ticks judged in one call when
    that provably finds what ticking one at a time finds); a detector with neither keeps
    replay ticking one tick at a time:
    - `sample_driven = True`: findings depend only on the samples in `new` (their values and
      `ts`) and `utc_offset_s`, never on `now`, the store or the link, and every finding is
      about a row with a sample in `new`;
    - `quiet_until(state, new) -> float`: for work done against the clock: given the state
      after the last tick and samples `new` (one device each, not yet stored, no status
      messages) arriving over the next ticks, the time before which that work does nothing
      (-inf: it might now). Without `sample_driven` that means finding nothing at all. A
      detector may have both (baseline deviation: sample-driven scores, an hourly refit).
      Called before the span; `update` then runs once, at the span's last tick.

    Optional, for restarts: `resume(kind, rows, onset, severity)`, called before the first
    tick with the rows whose `kind` alert is open with its condition active (each one's
    onset and the alert's severity, 1-4): the detector holds those conditions active, so
    that it clears them when the data says so (`carewatch.app.resume_detectors`).
    """

    kinds: ClassVar[tuple[str, ...]]

    def update(self, state: TickState, now: float) -> list[Findings]:
        """Consume one tick, return findings (possibly empty) per kind."""
        ...


def evidence_at(findings: Findings, i: int) -> dict[str, Any]:
    """The evidence of finding `i` as plain JSON-ready Python values (NaN becomes None)."""
    out: dict[str, Any] = {}
    for key, values in findings.evidence.items():
        value = values[i]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float):
            value = None if value != value else round(value, 2)
        out[key] = value
    return out


def take_findings(findings: Findings, idx: np.ndarray) -> Findings:
    """The findings at positions `idx`, in that order (evidence lists included)."""
    evidence: dict[str, Any] = {}
    for key, values in findings.evidence.items():
        evidence[key] = (values[idx] if isinstance(values, np.ndarray)
                         else [values[i] for i in idx.tolist()])
    return Findings(findings.kind, findings.row[idx], findings.severity[idx],
                    findings.active[idx], findings.onset_ts[idx], evidence)


def concat_findings(kind: str, parts: list[Findings]) -> Findings:
    """One Findings from several of the same kind, in order (evidence keys must agree)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Findings.none(kind)
    if len(parts) == 1:
        return parts[0]
    keys = list(parts[0].evidence)
    evidence: dict[str, Any] = {}
    for key in keys:
        if all(isinstance(p.evidence[key], np.ndarray) for p in parts):
            evidence[key] = np.concatenate([p.evidence[key] for p in parts])
        else:
            evidence[key] = [v for p in parts for v in list(p.evidence[key])]
    return Findings(kind, np.concatenate([p.row for p in parts]),
                    np.concatenate([p.severity for p in parts]),
                    np.concatenate([p.active for p in parts]),
                    np.concatenate([p.onset_ts for p in parts]), evidence)
