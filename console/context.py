"""Everything one console app holds: backend, auth, scopes, names, the live broadcaster."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from console.auth import Auth
from console.backend import ConsoleBackend
from console.live import Broadcaster
from console.scope import Scopes
from console.settings import ConsoleSettings
from console.users import UserStore
from console.views import Names, alert_row, search_texts

log = logging.getLogger(__name__)


@dataclass
class Ctx:
    backend: ConsoleBackend
    settings: ConsoleSettings
    users: UserStore
    auth: Auth
    scopes: Scopes
    names: Names
    live: Broadcaster
    search_text: np.ndarray  # per row: "id name device town-id town-name", lower case

    @classmethod
    def build(cls, backend: ConsoleBackend, settings: ConsoleSettings, users: UserStore,
              auth: Auth) -> Ctx:
        names = Names(backend.config)
        text = search_texts(backend.config, names)
        return cls(backend, settings, users, auth, Scopes(backend.config, backend.devices),
                   names, Broadcaster(settings.sse_queue_max), text)

    def search_mask(self, q: str) -> np.ndarray:
        """Rows whose id, name, device or town contains `q` (lower case)."""
        if not len(self.search_text):
            return np.zeros(0, bool)
        return np.char.find(self.search_text, q) >= 0

    def on_event(self, doc: dict[str, Any]) -> None:
        """AlertEngine listener (engine thread, engine lock held): enrich once, fan out."""
        source: Any = doc
        if doc.get("state") != "resolved":
            try:  # the live record adds the deadline the contract event does not carry
                source = self.backend.alerts.get_alert(doc["alert_id"])
            except LookupError:
                source = doc
        row = alert_row(source, self.names, self.backend.clock.now())
        row["event"] = doc.get("event")
        self.live.publish(row, self.backend.devices.row_of_resident.get(doc["resident_id"]))
