"""Pydantic models for the registry file (contract format) and the deployment settings.

The contract's minimal registry (timezone, towns, residents) is a complete, valid config:
every other key has a default. Unknown keys are refused so that a typo never silently
falls back to a default.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from config.routine_settings import RoutineSettings
from config.strict import HHMM_PATTERN, Strict
from config.urls import WebhookUrl

log = logging.getLogger(__name__)

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
KNOWN_CONDITIONS = frozenset(
    {"copd", "hypertension", "atrial_fibrillation", "heart_failure", "diabetes", "dementia"}
)
SEVERITIES = ("low", "medium", "high", "critical")
def _severity_seconds(value: dict[str, float]) -> dict[str, float]:
    """Acknowledgement times: severity names only, each a finite number of seconds > 0 (0
    divided by zero at tier 4, a negative one looped for ever, NaN never escalated)."""
    for key, seconds in value.items():
        if key not in SEVERITIES:
            raise ValueError(f"keys must be severities {SEVERITIES}, got {key!r}")
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"{key}: a positive number of seconds, got {seconds}")
    return value


# Deployment-wide and per town, checked alike (an unchecked town value of 0 crashed every tick).
AckTimes = Annotated[dict[str, float], AfterValidator(_severity_seconds)]


class Town(Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    thresholds: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-town detector overrides: {detector: {arg: value}}"
    )
    ack_timeout_s: AckTimes = Field(
        default_factory=dict, description="per-town acknowledgement times by severity"
    )


class Institution(Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    towns: list[str] = Field(default_factory=list)


class Staff(Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    tier: Literal[1, 2, 3, 4]
    town: str | None = None
    institution: str | None = None
    phone: str | None = None
    webhook: WebhookUrl | None = None
    password_hash: str | None = None


class Shift(Strict):
    """Who is on duty from `start` to `end` (local time, HH:MM; end < start crosses midnight)."""

    staff: list[str] = Field(min_length=1)
    start: str = Field("00:00", pattern=HHMM_PATTERN)
    end: str = Field("24:00", pattern=HHMM_PATTERN)
    days: list[int] = Field(
        default_factory=list,
        description="ISO weekdays 1=Mon..7=Sun on which the shift starts; empty = every day",
    )

    @field_validator("days")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        for d in value:
            if not 1 <= d <= 7:
                raise ValueError(f"ISO weekdays 1..7, got {d}")
        return value

    @model_validator(mode="after")
    def _some_time(self) -> Shift:
        if self.start == self.end:  # (routing reads it as no time at all: nobody on duty)
            raise ValueError(f"a shift that covers some time: start {self.start} and end "
                             f"{self.end} cover none (00:00 to 24:00 is the whole day)")
        return self


class Roster(Strict):
    """On-call shifts for one tier, optionally scoped to a town or an institution."""

    tier: Literal[1, 2, 3, 4]
    town: str | None = None
    institution: str | None = None
    shifts: list[Shift] = Field(default_factory=list)


class AlertSettings(Strict):
    """Alert store, notification channels and the command topic."""

    db_file: str = Field("alerts.db", description="SQLite file inside storage.data_dir")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    group_wait_s: float = Field(
        5.0, ge=0, description="notices to one recipient on one resident in this window go as one"
    )
    webhooks: list[WebhookUrl] = Field(
        default_factory=list, description="integration endpoints sent every notification"
    )
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_secret_file: str | None = None
    webhook_secret_env: str = "CAREWATCH_WEBHOOK_SECRET"
    retry_base_s: float = Field(2.0, gt=0)
    retry_cap_s: float = Field(300.0, gt=0)
    retry_max_attempts: int = Field(10, ge=1)
    workers: int = Field(2, ge=1, le=32)
    queue_max: int = Field(1000, ge=10)
    monitoring_notify_after_s: float = Field(
        60.0, ge=0, description="monitoring down this long pages the webhooks and tier-4 staff")
    monitoring_repeat_s: float = Field(900.0, gt=0, description="and again this often")
    heartbeat_s: float = Field(
        300.0, ge=0, description="a heartbeat to the integration webhooks this often (0: none)")
    command_secret_file: str | None = None
    command_secret_env: str = "CAREWATCH_COMMAND_SECRET"
    command_max_skew_s: float = Field(300.0, gt=0)


class Resident(Strict):
    id: str = Field(pattern=ID_PATTERN)
    town: str = Field(pattern=ID_PATTERN)
    device: str = Field(pattern=ID_PATTERN)
    name: str = ""
    conditions: list[str] = Field(default_factory=list)
    institution: str | None = None
    staff: str | None = None
    thresholds: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-resident detector overrides"
    )


class TlsSettings(Strict):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = Field(False, description="skip server hostname check (testing only)")


class BrokerSettings(Strict):
    url: str = Field("mqtt://127.0.0.1:1883", pattern=r"^mqtts?://[^/:]+(:\d{1,5})?/?$")
    username: str | None = None
    password_file: str | None = None
    client_id: str = Field("carewatch-pipeline", pattern=ID_PATTERN)
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(30, ge=5, le=3600)
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, description="MQTT 5 session expiry")
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    tls: TlsSettings = Field(default_factory=TlsSettings)


class SqliteSinkSettings(Strict):
    path: str = "var/history.db"
    retention_days: float = Field(30, gt=0, description="raw samples kept this long")
    aggregate_retention_days: float = Field(400, gt=0, description="per-minute aggregates")
    batch_max: int = Field(20_000, ge=1)
    queue_max: int = Field(200_000, ge=1000)


class InfluxSinkSettings(Strict):
    url: str = "http://127.0.0.1:8086"
    org: str = "carewatch"
    bucket: str = "vitals"
    token_file: str | None = None
    batch_size: int = Field(5000, ge=1)
    flush_interval_ms: int = Field(1000, ge=10)
    queue_max: int = Field(200_000, ge=1000)
    max_retries: int = Field(5, ge=0)
    timeout_ms: int = Field(10_000, ge=100)
    gzip: bool = True


class PostgresSettings(Strict):
    """The shared alert, audit and routine task store on PostgreSQL
    (storage.alerts_backend: postgresql)."""

    dsn_file: str | None = Field(
        None, description="file holding a libpq connection string; wins over the fields below"
    )
    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    dbname: str = "carewatch"
    user: str = "carewatch"
    password_file: str | None = None
    connect_timeout_s: float = Field(10.0, gt=0)
    claim_lease_s: float = Field(
        60.0, gt=0, description="a notice claimed by an instance that stops is re-sent after this"
    )


class StorageSettings(Strict):
    sink: Literal["sqlite", "influxdb", "none"] = "sqlite"
    data_dir: str = Field("var", description="alerts store, audit log and session state")
    alerts_backend: Literal["sqlite", "postgresql"] = Field(
        "sqlite", description="where alerts, audit, outbox and routine tasks live; postgresql "
        "to share them between instances"
    )
    postgresql: PostgresSettings = Field(default_factory=PostgresSettings)
    sqlite: SqliteSinkSettings = Field(default_factory=SqliteSinkSettings)
    influxdb: InfluxSinkSettings = Field(default_factory=InfluxSinkSettings)


class StateSettings(Strict):
    raw_ring_samples: int = Field(64, ge=8, description="full-resolution samples kept per device")
    minute_ring_minutes: int = Field(1440, ge=60, description="per-minute history per device")


class PipelineSettings(Strict):
    tick_s: float = Field(1.0, gt=0, le=60)
    queue_max: int = Field(100_000, ge=100, description="bounded hand-off from the MQTT thread")
    batch_max: int = Field(20_000, ge=1, description="messages decoded per pipeline step")
    batch_max_bytes: int = Field(
        512 * 1024,
        ge=1024,
        description="payload bytes decoded per pipeline step (at least one message): while a "
        "backlog of large batches drains, a step stays short and small and ticks run on time "
        "(20,000 minute batches are 1.2 M samples, seconds and ~150 MB in one step)",
    )
    ack_after_handling: bool = Field(
        True,
        description="PUBACK a QoS 1 message only once the pipeline has handled it (and, for a "
        "fall, once its alert is stored), so a crash loses nothing the broker forgot",
    )
    linger_ms: float = Field(
        25.0,
        ge=0,
        le=1000,
        description="after the first message arrives, wait this long for more so that "
        "decoding runs on batches (per-call NumPy overhead dominates tiny batches)",
    )
    linger_enough_messages: int = Field(
        1000,
        ge=1,
        description="stop lingering as soon as this many messages wait: under load a step "
        "starts as soon as it is full, not a whole linger after its first message",
    )
    gil_switch_interval_ms: float = Field(
        1.0,
        gt=0,
        le=100,
        description="how long a Python thread may hold the interpreter while another waits "
        "(sys.setswitchinterval; CPython's default is 5 ms): shorter lets the MQTT thread "
        "take a fall off the socket while a tick runs, for the same throughput",
    )
    future_tolerance_s: float = Field(300.0, ge=0)
    max_message_bytes: int = Field(64 * 1024, ge=1024)
    max_batch_samples: int = Field(600, ge=1)


class HttpSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class Config(Strict):
    """One deployment: the registry plus optional settings."""

    # the file it was read from (`config.loader`), for errors found after loading
    _source: str = PrivateAttr("<config>")
    timezone: str = "Asia/Shanghai"
    towns: list[Town]
    residents: list[Resident]
    institutions: list[Institution] = Field(default_factory=list)
    staff: list[Staff] = Field(default_factory=list)
    rosters: list[Roster] = Field(default_factory=list)
    thresholds: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="deployment-wide detector overrides"
    )
    ack_timeout_s: AckTimes = Field(default_factory=dict)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    routines: RoutineSettings = Field(default_factory=RoutineSettings)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"an IANA time zone name such as Asia/Shanghai, got {value!r}"
            ) from exc
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        town_ids = [t.id for t in self.towns]
        _unique("towns", town_ids)
        _unique("residents", [r.id for r in self.residents])
        _unique("residents (device)", [r.device for r in self.residents])
        _unique("institutions", [i.id for i in self.institutions])
        _unique("staff", [s.id for s in self.staff])
        towns = set(town_ids)
        institutions = {i.id for i in self.institutions}
        serves = {i.id: set(i.towns) for i in self.institutions}
        staff = {s.id for s in self.staff}
        tier_of = {s.id: s.tier for s in self.staff}
        for i, r in enumerate(self.residents):
            if r.town not in towns:
                raise ValueError(f"residents[{i}].town: one of the towns' ids, got {r.town!r}")
            if r.institution is not None and r.institution not in institutions:
                raise ValueError(
                    f"residents[{i}].institution: one of the institutions' ids, "
                    f"got {r.institution!r}"
                )
            if r.institution is not None and r.town not in serves[r.institution]:
                # tier 2 of the resident's alerts and tasks would have nobody: skipped
                raise ValueError(
                    f"residents[{i}].institution: one serving the resident's town "
                    f"{r.town!r}, got {r.institution!r} (its towns: "
                    f"{sorted(serves[r.institution])})")
            if r.staff is not None and r.staff not in staff:
                raise ValueError(f"residents[{i}].staff: one of the staff ids, got {r.staff!r}")
            if r.staff is not None and tier_of[r.staff] != 1:
                raise ValueError(
                    f"residents[{i}].staff: a tier-1 (服务人员) staff id, the resident's "
                    f"carer, got {r.staff!r} of tier {tier_of[r.staff]}")
        for i, s in enumerate(self.staff):
            if s.town is not None and s.town not in towns:
                raise ValueError(f"staff[{i}].town: one of the towns' ids, got {s.town!r}")
            if s.institution is not None and s.institution not in institutions:
                raise ValueError(
                    f"staff[{i}].institution: one of the institutions' ids, got {s.institution!r}"
                )
        for i, roster in enumerate(self.rosters):
            if roster.town is not None and roster.town not in towns:
                raise ValueError(f"rosters[{i}].town: one of the towns' ids, got {roster.town!r}")
            if roster.institution is not None and roster.institution not in institutions:
                raise ValueError(
                    f"rosters[{i}].institution: one of the institutions' ids, "
                    f"got {roster.institution!r}"
                )
            for j, shift in enumerate(roster.shifts):
                for sid in shift.staff:
                    if sid not in staff:
                        raise ValueError(
                            f"rosters[{i}].shifts[{j}].staff: unknown staff id {sid!r}"
                        )
                    if tier_of[sid] != roster.tier:
                        raise ValueError(
                            f"rosters[{i}].shifts[{j}].staff: staff of the roster's tier "
                            f"{roster.tier}, got {sid!r} of tier {tier_of[sid]}")
        for town in self.routines.towns:
            if town not in towns:
                raise ValueError(f"routines.towns: unknown town {town!r}")
        for i, inst in enumerate(self.institutions):
            for town in inst.towns:
                if town not in towns:
                    raise ValueError(f"institutions[{i}].towns: unknown town {town!r}")
        return self

    @property
    def source(self) -> str:
        """The file this config was read from ("<config>" when built otherwise)."""
        return self._source

    def unknown_conditions(self) -> list[tuple[str, str]]:
        """(resident id, condition) pairs that no detector knows; kept, but worth a warning."""
        return [
            (r.id, c) for r in self.residents for c in r.conditions if c not in KNOWN_CONDITIONS
        ]

    def town_names(self) -> dict[str, str]:
        return {t.id: t.name or t.id for t in self.towns}


def _unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for value in ids:
        if value in seen:
            raise ValueError(f"{what}: ids must be unique, {value!r} appears twice")
        seen.add(value)
