"""The whole district's history when `carewatch run --workers N` keeps one SQLite store per
worker (`DATA_DIR/worker-k/`): the reports read every worker's stores as one.

On PostgreSQL every worker writes the same database, so the one store is already the
district's. `district_history` picks whichever applies, read-only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from config.models import Config
from routines.alertdata import AlertData, AlertRecord
from routines.model import Task
from routines.reports import AlertHistory, TaskHistory

WORKER_DIR = re.compile(r"worker-(\d+)")


def worker_dirs(data_dir: Path) -> list[Path]:
    """`data_dir`'s worker-k directories, by k (none for a single-process deployment)."""
    if not data_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in data_dir.iterdir()
             if p.is_dir() and (m := WORKER_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


class UnionTasks:
    """Several task stores read as one (each worker owns distinct residents)."""

    def __init__(self, stores: list[Any]) -> None:
        self.stores = stores

    def tasks(self, **filters: Any) -> list[Task]:
        out = [t for s in self.stores for t in s.tasks(**filters)]
        out.sort(key=lambda t: (t.issued_at, t.task_id))  # as one store orders them
        return out

    def close(self) -> None:
        for s in self.stores:
            s.close()


class UnionAlerts:
    """Several alert stores' histories read as one."""

    def __init__(self, readers: list[AlertHistory]) -> None:
        self.readers = readers

    def opened_between(self, start: float, end: float) -> list[AlertRecord]:
        out = [r for d in self.readers for r in d.opened_between(start, end)]
        out.sort(key=lambda r: (r.alert.opened_at, r.alert.alert_id))  # as one store does
        return out


def worker_alert_data(config: Config, data_dir: Path, index: int) -> AlertData | None:
    """Worker `index`'s alert store read-only (on PostgreSQL, the shared one), or None when
    it is not on this machine. Callers keep only the alerts of that worker's residents."""
    if config.storage.alerts_backend == "postgresql":
        from alerts.store_pg_conn import dsn_from_settings
        from routines.alertdata_pg import PgAlertData

        return PgAlertData(dsn_from_settings(config.storage.postgresql))
    path = data_dir / f"worker-{index}" / config.alerts.db_file
    return AlertData(path) if path.exists() else None


def district_history(config: Config, data_dir: Path
                     ) -> tuple[TaskHistory, AlertHistory, Any] | str:
    """(tasks, alerts, closer) over the whole district, read-only, or why there are none:
    the PostgreSQL store; else the SQLite stores of `data_dir`'s worker-k directories (after
    `run --workers N`), or of `data_dir` itself when it has none. Call `closer.close()` when
    done."""
    if config.storage.alerts_backend == "postgresql":
        from alerts.store_pg_conn import dsn_from_settings
        from routines.alertdata_pg import PgAlertData
        from routines.store_pg import PgTaskStore

        dsn = dsn_from_settings(config.storage.postgresql)
        pg = PgTaskStore(dsn, readonly=True)
        if not pg.exists():
            pg.close()
            return "no routine tables in the PostgreSQL database (run the service first)"
        return pg, PgAlertData(dsn), pg
    from routines.store import SqliteTaskStore

    dirs = worker_dirs(data_dir) or [data_dir]
    task_dbs = [d / config.routines.db_file for d in dirs if (d / config.routines.db_file).exists()]
    if not task_dbs:
        where = f"{data_dir}/worker-*" if dirs != [data_dir] else data_dir
        return f"no routine store in {where} (run the service with routines first)"
    tasks = UnionTasks([SqliteTaskStore(p, readonly=True) for p in task_dbs])
    alerts = UnionAlerts([AlertData(d / config.alerts.db_file) for d in dirs])
    return tasks, alerts, tasks
