"""Scenario files (YAML): residents' scripted events and run defaults.

```yaml
residents: 50          # optional defaults for options not given on the command line
hours: 24
seed: 7
interval_s: 10
random_events: 0.5     # per resident-day
events:
  - {resident: r-0001, kind: fall, at: +1m, duration: 10m, flag: false}
  - {resident: r-0002, kind: hypoxemia, at: "08:30", severity: critical}
  - {resident: r-0003, kind: fever, at: "d2 14:00", duration: 2h}
```
`at`: seconds after the start (number), an offset such as `+90s`, `+2m`, `+1h30m`, `+1d`,
a local time `HH:MM` (its first occurrence at or after the start) or `dN HH:MM` (local
day N of the run, d1 = the start's day). `duration` takes the same units without `+`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simulators.events import Event, make_event

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DUR = re.compile(r"^(?:(\d+(?:\.\d+)?)([smhd]))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_CLOCK = re.compile(r"^(?:d(\d+)\s+)?(\d{1,2}):(\d{2})$")
RUN_KEYS = ("residents", "hours", "seed", "interval_s", "random_events", "batch")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the entry."""


def parse_duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lstrip("+")
    if not _DUR.match(text):
        raise ValueError(f"a duration like 90, 90s, 5m, 1h30m or 1d, got {value!r}")
    return float(sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))


def parse_at(value: Any, t0: float, utc_offset_s: float) -> float:
    """Absolute epoch seconds of `at` for a run starting at t0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return t0 + float(value)
    text = str(value).strip()
    if text.startswith("+"):
        return t0 + parse_duration(text)
    m = _CLOCK.match(text)
    if not m:
        raise ValueError(f"a time like 120, +2m, 08:30 or 'd2 08:30', got {value!r}")
    day_n, hh, mm = m.groups()
    local0 = t0 + utc_offset_s
    midnight = local0 - (local0 % 86400)
    tod = int(hh) * 3600 + int(mm) * 60
    if day_n is not None:
        local = midnight + (int(day_n) - 1) * 86400 + tod
    else:
        local = midnight + tod
        if local < local0:
            local += 86400
    return local - utc_offset_s


@dataclass
class Scenario:
    """Run defaults and the event entries (resolved against a registry and start later)."""

    run: dict[str, Any] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    source: str = "<scenario>"

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ScenarioError(f"{path}: cannot be read: {exc}") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<scenario>") -> Scenario:
        if not isinstance(data, dict):
            raise ScenarioError(f"{source}: expected a mapping")
        unknown = set(data) - {*RUN_KEYS, "events", "description"}
        if unknown:
            raise ScenarioError(f"{source}: unknown keys {sorted(unknown)}")
        events = data.get("events") or []
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise ScenarioError(f"{source}: events: a list of mappings")
        return cls({k: data[k] for k in RUN_KEYS if k in data}, events, source)

    def events(self, resident_rows: dict[str, int], t0: float, utc_offset_s: float) -> list[Event]:
        out = []
        for i, e in enumerate(self.entries):
            where = f"{self.source}: events[{i}]"
            extra = set(e) - {"resident", "kind", "at", "duration", "severity", "flag"}
            if extra:
                raise ScenarioError(f"{where}: unknown keys {sorted(extra)}")
            rid = str(e.get("resident", ""))
            if rid not in resident_rows:
                raise ScenarioError(f"{where}.resident: a resident of the registry, got {rid!r}")
            try:
                start = parse_at(e.get("at", 0), t0, utc_offset_s)
                dur = parse_duration(e["duration"]) if "duration" in e else None
                out.append(make_event(resident_rows[rid], str(e.get("kind")), start, dur,
                                      e.get("severity"), e.get("flag")))
            except (ValueError, KeyError) as exc:
                raise ScenarioError(f"{where}: {exc}") from None
        return out
