"""Detector parameters: a pydantic model per detector, resolved per row where residents differ."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from ingest.devices import DeviceTable


class DetectorParams(BaseModel):
    """Base of every detector's parameter model: unknown keys are refused, and so are NaN
    and infinities (a `.nan` threshold compares False with everything: the rule would
    never fire, silently)."""

    # validate_default: a threshold set alone is checked against the others' defaults
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              validate_default=True)


P = TypeVar("P", bound=DetectorParams)


class ParamTable(Generic[P]):
    """Each numeric or flag field as a scalar when all rows agree, else a per-row array.

    Built from one model (every row alike) or one model per row (overrides resolved by the
    registry); distinct models are usually few, so building stays cheap at 100k rows.
    """

    def __init__(self, model: type[P], params: P | Sequence[P] | None, n: int) -> None:
        self.model = model
        if params is None:
            params = model()
        if isinstance(params, DetectorParams):
            self.base: P = params
            self.per_row: list[P] | None = None
        else:
            if len(params) != n:
                raise ValueError(f"{model.__name__}: {len(params)} parameter sets for {n} rows")
            self.per_row = list(params)
            self.base = self.per_row[0] if self.per_row else model()
        self._values: dict[str, Any] = {}
        for name in model.model_fields:
            self._values[name] = self._resolve(name)

    def _resolve(self, name: str) -> Any:
        base = getattr(self.base, name)
        if self.per_row is None or len({id(p) for p in self.per_row}) == 1:
            return base
        raw = [getattr(p, name) for p in self.per_row]
        if isinstance(base, bool):  # flags per row too, not the first row's for all
            return base if all(v == base for v in raw) else np.array(raw, bool)
        if base is not None and not isinstance(base, int | float):
            return base
        if all(v is None for v in raw):
            return None
        # optional numbers (`float | None`): None is NaN where some rows set a value
        values = np.array([np.nan if v is None else float(v) for v in raw], np.float64)
        return float(values[0]) if np.all(values == values[0]) else values

    def __getitem__(self, name: str) -> Any:
        """Scalar or per-row array (numbers, flags; an optional number is NaN on rows that
        leave it unset, None when every row does); the base value for other types."""
        return self._values[name]

    def at(self, name: str, rows: np.ndarray) -> Any:
        """The value for `rows`: a scalar, or an array aligned with `rows`."""
        v = self._values[name]
        return v[rows] if isinstance(v, np.ndarray) else v

    def models(self) -> list[P]:
        """One model per row (for config round-trips)."""
        return self.per_row if self.per_row is not None else [self.base]


def copd_mask(devices: DeviceTable | int) -> np.ndarray:
    """Rows whose resident has the `copd` condition (none for a bare device count)."""
    if isinstance(devices, int):
        return np.zeros(devices, bool)
    return devices.has_condition("copd")


def n_rows(devices: DeviceTable | int) -> int:
    return devices if isinstance(devices, int) else len(devices)
