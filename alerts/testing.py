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
