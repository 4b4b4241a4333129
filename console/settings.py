"""Console settings: what `create_app` needs beyond the backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from carewatch.clock import Clock, WallClock


@dataclass(frozen=True)
class ConsoleSettings:
    """Defaults suit `carewatch run`; `carewatch demo` sets `demo=True`."""

    demo: bool = False
    session_ttl_s: float = 12 * 3600.0  # one night shift
    users_file: Path | None = None  # default: <data_dir>/users.json
    secret_file: Path | None = None  # default: <data_dir>/console.secret
    cookie_secure: bool = False  # set True behind TLS
    sse_queue_max: int = 500  # per client; a slower client gets a `resync` instead
    sse_keepalive_s: float = 15.0
    history_db: Path | None = None  # SQLite history for charts beyond the in-memory ring
    login_max_failures: int = 5
    login_lockout_s: float = 300.0
    # Sessions expire on real time, whatever clock drives the pipeline (replay, tests).
    auth_clock: Clock = field(default_factory=WallClock)
