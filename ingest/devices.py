"""The registry as arrays: device id -> state row, and each row's town, resident, conditions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.models import Config


@dataclass(frozen=True)
class DeviceTable:
    """Rows are assigned in registry order; row i is `residents[i]`."""

    device_ids: tuple[str, ...]
    resident_ids: tuple[str, ...]
    town_ids: tuple[str, ...]  # per row
    row_of_device: dict[str, int]
    row_of_resident: dict[str, int]
    towns: tuple[str, ...]  # distinct town ids, registry order
    town_index: np.ndarray  # int16 per row, index into `towns`
    conditions: tuple[frozenset[str], ...]  # per row

    @classmethod
    def from_config(cls, config: Config) -> DeviceTable:
        towns = tuple(t.id for t in config.towns)
        tix = {t: i for i, t in enumerate(towns)}
        res = config.residents
        return cls(
            device_ids=tuple(r.device for r in res),
            resident_ids=tuple(r.id for r in res),
            town_ids=tuple(r.town for r in res),
            row_of_device={r.device: i for i, r in enumerate(res)},
            row_of_resident={r.id: i for i, r in enumerate(res)},
            towns=towns,
            town_index=np.array([tix[r.town] for r in res], np.int16),
            conditions=tuple(frozenset(r.conditions) for r in res),
        )

    def __len__(self) -> int:
        return len(self.device_ids)

    def has_condition(self, condition: str) -> np.ndarray:
        """Boolean mask over rows."""
        return np.array([condition in c for c in self.conditions], bool)
