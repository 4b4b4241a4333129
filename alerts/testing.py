"""Helpers shared by the alert tests, the crash check and the benchmark (not used in production)."""

from __future__ import annotations

from typing import Any

import numpy as np

from config.models import Config
from detectors.base import Findings

T0 = 1764316800.0  # 2025-11-28 16:00 Asia/Shanghai (a Friday)


def minimal_config(residents: int = 3, **extra: Any) -> Config:
    """The contract's minimal registry (no staff, no rosters) plus `extra` top-level keys."""
    data: dict[str, Any] = {
        "timezone": "Asia/Shanghai",
        "towns": [{"id": "gufu", "name": "郭扶镇"}, {"id": "lishi"}],
        "residents": [{"id": f"r-{i + 1:04d}", "town": "gufu" if i % 2 == 0 else "lishi",
                       "device": f"dev-{i + 1:04d}"} for i in range(residents)],
    }
    data.update(extra)
    return Config.model_validate(data)


def finding(kind: str, rows: list[int], severity: int | list[int] = 4,
            active: bool | list[bool] = True, onset: float = T0,
            **evidence: list[Any]) -> Findings:
    """A Findings record for `rows` (scalars broadcast)."""
    n = len(rows)
    sev = [severity] * n if isinstance(severity, int) else severity
    act = [active] * n if isinstance(active, bool) else active
    return Findings(kind, np.array(rows, np.int32), np.array(sev, np.int8), np.array(act, bool),
                    np.full(n, onset, np.float64),
                    {k: np.asarray(v) for k, v in evidence.items()})


class Harness:
    """An engine on a SimClock with an in-memory publisher and a list of listener events."""

    def __init__(self, data_dir: Any, config: Config | None = None, start: float = T0,
                 **kwargs: Any) -> None:
        from alerts.engine import AlertEngine
        from carewatch.clock import SimClock
        from ingest.devices import DeviceTable
        from ingest.publish import ListPublisher

        self.config = config or minimal_config()
        self.clock = SimClock(start)
        self.publisher = ListPublisher()
        self.events: list[dict[str, Any]] = []
        self.engine = AlertEngine(self.config, DeviceTable.from_config(self.config), self.clock,
                                  self.publisher, data_dir, deterministic_ids=True, **kwargs)
        self.engine.add_listener(self.events.append)

    def run_until(self, t: float, step: float = 1.0) -> None:
        """Tick every `step` seconds of simulated time up to `t`."""
        while self.clock.now() + step <= t:
            self.clock.advance(step)
            self.engine.tick(self.clock.now())

    def findings(self, *fs: Findings) -> None:
        self.engine.on_findings(list(fs), self.clock.now())

    def kinds_of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    def close(self) -> None:
        self.engine.close()
