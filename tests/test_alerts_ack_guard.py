"""An acknowledgement time that is not positive never reaches the escalation loop.

Config load refuses it (tests/test_config.py); these build the config unchecked, as code
could, to pin the lifecycle's own guard: 0 divided by zero at tier 4 on every tick, a
negative time looped for ever in `Lifecycle.due`, NaN never escalated at all."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from alerts.model import DEFAULT_ACK_TIMEOUT_S, SEVERITY_CODES
from alerts.testing import T0, Harness, finding, minimal_config
from config.models import Config


def unchecked_town_ack(seconds: float) -> Config:
    """Town gufu (resident r-0001) with critical: `seconds`, validation skipped."""
    cfg = minimal_config()
    town = cfg.towns[0].model_copy(update={"ack_timeout_s": {"critical": seconds}})
    return cfg.model_copy(update={"towns": [town, *cfg.towns[1:]]})


@pytest.mark.parametrize("seconds", [0.0, -10.0, math.nan])
def test_unusable_time_falls_back_to_the_contract_default(tmp_path: Path,
                                                          seconds: float) -> None:
    h = Harness(tmp_path, unchecked_town_ack(seconds))
    try:
        critical = SEVERITY_CODES["critical"]
        assert h.engine.life.ack_time(critical, "gufu") == DEFAULT_ACK_TIMEOUT_S["critical"]
    finally:
        h.close()


def test_zero_time_ticks_and_escalates_on_the_default(tmp_path: Path) -> None:
    h = Harness(tmp_path, unchecked_town_ack(0.0))
    try:
        h.findings(finding("fall", [0], 4))
        h.engine.tick(T0 + 1)  # raised ZeroDivisionError, tier 1 to 4 at once
        assert [(e["event"], e["tier"]) for e in h.events] == [("opened", 1)]
        h.engine.tick(T0 + DEFAULT_ACK_TIMEOUT_S["critical"])
        assert [(e["event"], e["tier"]) for e in h.events] == [("opened", 1), ("escalated", 2)]
    finally:
        h.close()
