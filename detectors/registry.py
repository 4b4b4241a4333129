"""Every detector by name, and building them from a config with overrides resolved per row.

Overrides: `config.thresholds` (deployment), `towns[i].thresholds`, `residents[i].thresholds`,
each `{detector_name: {arg: value}}`, applied in that order. Adding a detector is one file
and one line in DETECTORS.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from config.loader import ConfigError, format_validation_error
from config.models import Config
from detectors.activity import Inactivity, NotWorn
from detectors.base import Detector
from detectors.baseline import BaselineDeviation
from detectors.bp import HypertensiveCrisis, Hypotension, link_bp
from detectors.device import DeviceOffline, LowBattery
from detectors.fall import Fall
from detectors.fused import link_sustained
from detectors.fused_awake import link_awake
from detectors.news2 import News2
from detectors.sustained import (
    Bradycardia,
    Bradypnoea,
    Fever,
    Hypothermia,
    Hypoxemia,
    Tachycardia,
    Tachypnoea,
)
from ingest.devices import DeviceTable

DETECTORS: dict[str, Any] = {
    "fall": Fall,
    "hypoxemia": Hypoxemia,
    "bradycardia": Bradycardia,
    "tachycardia": Tachycardia,
    "bradypnoea": Bradypnoea,
    "tachypnoea": Tachypnoea,
    "fever": Fever,
    "hypothermia": Hypothermia,
    "hypotension": Hypotension,
    "hypertensive_crisis": HypertensiveCrisis,
    "news2": News2,
    "baseline_deviation": BaselineDeviation,
    "inactivity": Inactivity,
    "not_worn": NotWorn,
    "device_offline": DeviceOffline,
    "low_battery": LowBattery,
}


def _layers(config: Config) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    out = [("thresholds", config.thresholds)]
    out += [(f"towns[{i}].thresholds", t.thresholds) for i, t in enumerate(config.towns)]
    out += [(f"residents[{i}].thresholds", r.thresholds) for i, r in enumerate(config.residents)]
    return out


def resolve_params(config: Config, devices: DeviceTable) -> dict[str, list[Any]]:
    """Per detector, one validated parameter model per row. Raises ConfigError listing every
    bad override as 'key.path: expected ...'."""
    problems: list[str] = []
    for where, layer in _layers(config):
        for name in layer:
            if name not in DETECTORS:
                problems.append(f"{where}.{name}: expected one of the detectors "
                                f"{', '.join(DETECTORS)}")
    if problems:
        raise ConfigError(config.source, problems)
    town_layer = {t.id: t.thresholds for t in config.towns}
    town_where = {t.id: f"towns[{i}].thresholds" for i, t in enumerate(config.towns)}
    out: dict[str, list[Any]] = {}
    for name, cls in DETECTORS.items():
        cache: dict[str, Any] = {}
        per_row: list[Any] = []
        for i, resident in enumerate(config.residents):
            merged: dict[str, Any] = {}
            sources: dict[str, str] = {}
            for where, layer in (("thresholds", config.thresholds),
                                 (town_where[resident.town], town_layer[resident.town]),
                                 (f"residents[{i}].thresholds", resident.thresholds)):
                for key, value in (layer.get(name) or {}).items():
                    merged[key] = value
                    sources[key] = f"{where}.{name}"
            key = repr(sorted(merged.items()))
            if key not in cache:
                try:
                    cache[key] = cls.Params.model_validate(merged)
                except ValidationError as exc:
                    for line in format_validation_error(exc):
                        arg = line.split(":", 1)[0].split(".")[0]
                        problems.append(f"{sources.get(arg, name)}.{line}")
                    cache[key] = None
            per_row.append(cache[key])
        out[name] = per_row
    if problems:
        raise ConfigError(config.source, sorted(set(problems)))
    return out


def build_detectors(config: Config, devices: DeviceTable | None = None) -> list[Detector]:
    """Every registered detector, configured for `devices` (default: from `config`)."""
    devices = devices or DeviceTable.from_config(config)
    params = resolve_params(config, devices)
    return link([cls(devices, params[name]) for name, cls in DETECTORS.items()])


def link(detectors: list[Detector]) -> list[Detector]:
    """Let detectors that share tick work do it once (the sustained rules, the awake-hours
    rules, the blood-pressure rules).

    Call before the first tick; findings are the same as unlinked, only faster."""
    link_sustained(list(detectors))
    link_awake(list(detectors))
    link_bp(list(detectors))
    return detectors


def all_kinds() -> tuple[str, ...]:
    return tuple(k for cls in DETECTORS.values() for k in cls.kinds)
