"""Who sees what: a signed-in principal and the residents their tier covers.

Tier 1 (service staff): the residents assigned to them (`residents[].staff`).
Tier 2 (institution): residents of their institution (or, for residents with no
institution, those in the institution's towns). Tier 3 (town office): their town.
Tier 4 (district): everyone. A scope is a boolean mask over device rows, built once per
staff member, so filtering 100k residents is one NumPy indexing step.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from alerts.model import TIER_NAMES
from config.models import Config, Staff
from ingest.devices import DeviceTable


@dataclass(frozen=True)
class Principal:
    """The person (or system, via an API token) behind a request."""

    staff_id: str
    name: str
    tier: int
    town: str | None
    institution: str | None
    via: str = "session"  # "session" | "token"
    token_name: str | None = None
    csrf: str | None = None  # sessions only
    session_id: str | None = None

    @classmethod
    def of(cls, staff: Staff, **kw: object) -> Principal:
        return cls(staff.id, staff.name or staff.id, staff.tier, staff.town, staff.institution,
                   **kw)  # type: ignore[arg-type]

    @property
    def actor(self) -> str:
        """How the principal appears as `by` in alerts and the audit log."""
        if self.via == "session":
            return self.staff_id
        return f"{self.staff_id}/token:{self.token_name}"

    def public(self) -> dict[str, object]:
        return {"staff_id": self.staff_id, "name": self.name, "tier": self.tier,
                "tier_name": TIER_NAMES[self.tier], "town": self.town,
                "institution": self.institution, "via": self.via}


class Scopes:
    """Per-staff row masks over a DeviceTable."""

    def __init__(self, config: Config, devices: DeviceTable) -> None:
        res = config.residents
        self.n = len(devices)
        self.res_staff = np.array([r.staff or "" for r in res], dtype=object)
        self.res_inst = np.array([r.institution or "" for r in res], dtype=object)
        self.res_town = np.array(devices.town_ids, dtype=object)
        self.inst_towns = {i.id: set(i.towns) for i in config.institutions}
        self.devices = devices
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def mask(self, p: Principal) -> np.ndarray:
        """Read-only boolean mask of the rows `p` may see."""
        with self._lock:
            m = self._cache.get(p.staff_id)
            if m is None:
                m = self._build(p)
                m.flags.writeable = False
                self._cache[p.staff_id] = m
            return m

    def _build(self, p: Principal) -> np.ndarray:
        if p.tier == 4:
            return np.ones(self.n, bool)
        if p.tier == 3:
            return self.res_town == (p.town or "\0")
        if p.tier == 2:
            if not p.institution:
                return np.zeros(self.n, bool)
            towns = list(self.inst_towns.get(p.institution, ()))
            unassigned = (self.res_inst == "") & np.isin(self.res_town, towns)
            return (self.res_inst == p.institution) | unassigned
        return self.res_staff == p.staff_id

    def allows_row(self, p: Principal, row: int | None) -> bool:
        return row is not None and bool(self.mask(p)[row])

    def allows_resident(self, p: Principal, resident_id: str) -> bool:
        return self.allows_row(p, self.devices.row_of_resident.get(resident_id))

    def towns(self, p: Principal) -> list[str]:
        """Town ids with at least one resident in scope, registry order."""
        present = set(self.res_town[self.mask(p)].tolist())
        return [t for t in self.devices.towns if t in present]
