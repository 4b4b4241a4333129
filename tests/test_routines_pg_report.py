"""`carewatch report` reads the configured stores: with storage.alerts_backend: postgresql,
the routine tasks and the alert history in PostgreSQL (as the console's report pages do)."""

from __future__ import annotations

from pathlib import Path

import orjson
import psycopg
import pytest
import yaml

from carewatch.cli import main
from carewatch.clock import SimClock
from config.models import Config
from routines.alertdata_pg import PgAlertData
from routines.reports import build_report
from routines.store_pg import PgTaskStore
from tests.routines_helpers import local, make_routines, registry, run_until

pytest_plugins = ["tests.pg_fixture"]


def _pg_registry(dsn: str, tmp_path: Path) -> tuple[Config, Path]:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(dsn)
    config = registry(storage={"alerts_backend": "postgresql",
                               "postgresql": {"dsn_file": str(dsn_file)}})
    reg = tmp_path / "reg.yaml"
    reg.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
    return config, reg


def test_report_command_reads_the_postgresql_stores(pg_dsn: str, tmp_path: Path) -> None:
    config, reg = _pg_registry(pg_dsn, tmp_path)
    clock = SimClock(local(2026, 11, 1))
    routines, engine = make_routines(config, clock, tmp_path / "run", alerts=True)
    assert engine is not None and isinstance(routines.store, PgTaskStore)
    try:
        routines.tick(clock.now())
        run_until(routines, clock, local(2026, 11, 3, 10))
        routines.complete("weekly_call:r-1:2026-W45", by="s1", now=clock.now(), notes="fine")
        t = clock.now()
        engine.raise_manual("r-3", kind="k1", severity="high", by="test", note="case", now=t)
        for dt in range(0, 1201, 60):
            clock.set(t + dt)
            engine.tick(t + dt)
        run_until(routines, clock, local(2026, 11, 9, 10))
    finally:
        routines.close()
        engine.close()
    out = tmp_path / "out.json"
    empty = tmp_path / "no-data"  # nothing embedded: --data-dir plays no part
    assert main(["report", "--month", "2026-11", "--config", str(reg), "--data-dir",
                 str(empty), "--json", str(out), "--as-of", str(clock.now())]) == 0
    store = PgTaskStore(pg_dsn, readonly=True)
    try:
        direct = build_report(config, store, PgAlertData(pg_dsn), "month", "2026-11",
                              clock.now())
    finally:
        store.close()
    doc = orjson.loads(out.read_bytes())
    assert doc == orjson.loads(orjson.dumps(direct))
    assert doc["district"]["alerts"]["total"] == 1
    assert doc["district"]["routines"]["by_kind"]["weekly_call"]["done"] == 1
    assert not empty.exists()


def test_report_command_on_a_database_without_routines_creates_nothing(
        pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _config, reg = _pg_registry(pg_dsn, tmp_path)
    assert main(["report", "--day", "2026-11-03", "--config", str(reg),
                 "--json", str(tmp_path / "r.json")]) == 1
    assert "no routine tables" in capsys.readouterr().err
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT to_regclass('routine_tasks')").fetchone()
    assert row == (None,)
