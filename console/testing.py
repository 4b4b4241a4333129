"""Helpers for the console tests and the render benchmark (not used in production)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from alerts.engine import AlertEngine
from carewatch.app import build_pipeline
from carewatch.clock import Clock, SimClock
from config.generate import demo_registry
from config.models import Config
from console.app import create_app
from console.backend import ConsoleBackend
from console.settings import ConsoleSettings
from console.users import UserStore

T0 = 1764316800.0  # 2025-11-28 16:00 Asia/Shanghai


def password_of(staff_id: str) -> str:
    return f"pw-{staff_id}-long-enough"


def console_config(residents: int = 60, towns: int = 5, seed: int = 1) -> Config:
    """A demo-shaped registry (institutions, staff of every tier) with resident names."""
    data = demo_registry(residents, seed=seed, towns=towns)
    for i, r in enumerate(data["residents"]):
        r["name"] = f"居民{i + 1:04d}"
    data["residents"][0]["conditions"] = ["copd"]
    return Config.model_validate(data)


def staff_of_each_tier(config: Config) -> dict[int, str]:
    """One staff id per tier, all covering residents[0] (its carer, desk, town, district)."""
    r0 = config.residents[0]
    desk = next(s.id for s in config.staff if s.tier == 2 and s.institution == r0.institution)
    town = next(s.id for s in config.staff if s.tier == 3 and s.town == r0.town)
    assert r0.staff is not None
    return {1: r0.staff, 2: desk, 3: town, 4: "district-centre"}


_HASHES: dict[str, str] = {}  # argon2 costs ~0.1-0.4 s a hash: hash each test password once


def set_passwords(path: Path, config: Config, staff_ids: list[str]) -> UserStore:
    store = UserStore(path, config)
    for sid in staff_ids:
        if sid not in _HASHES:
            _HASHES[sid] = store.hasher.hash(password_of(sid))
        store.set_password_hash(sid, _HASHES[sid])
    return store


class Harness:
    """A pipeline on a SimClock (no MQTT) with the console app over it."""

    def __init__(self, tmp: Path, config: Config | None = None,
                 settings: ConsoleSettings | None = None, clock: Clock | None = None,
                 with_sink: bool = False) -> None:
        from ingest.publish import ListPublisher

        self.config = config or console_config()
        self.clock = clock or SimClock(T0)
        self.tmp = tmp
        self.pipeline, self._close = build_pipeline(self.config, self.clock, ListPublisher(),
                                                    data_dir=tmp, with_sink=with_sink)
        assert isinstance(self.pipeline.alerts, AlertEngine)
        self.engine: AlertEngine = self.pipeline.alerts
        self.tiers = staff_of_each_tier(self.config)
        self.users = set_passwords(tmp / "users.json", self.config, list(self.tiers.values()))
        self.backend = ConsoleBackend.from_pipeline(self.pipeline, tmp)
        self.settings = settings or ConsoleSettings()
        self.app = create_app(self.backend, self.settings)

    def publish(self, row: int, **sample: Any) -> None:
        """One vitals message from the device of `row`, handled at once."""
        r = self.config.residents[row]
        now = self.clock.now()
        body = {"ts": now, **sample}
        self.pipeline.handle([(f"carewatch/v1/{r.town}/{r.device}/vitals", orjson.dumps(body),
                               now)])

    def tick(self, advance: float = 1.0) -> None:
        assert isinstance(self.clock, SimClock)
        self.clock.advance(advance)
        self.pipeline.tick(self.clock.now())

    def close(self) -> None:
        self._close()
