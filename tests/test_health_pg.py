"""Health on the PostgreSQL alert store: readiness, the monitoring state and /metrics ask the
shared store, not a SQLite file that PostgreSQL deployments never write (before, a stopped
PostgreSQL left /readyz saying the store was writable)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from carewatch.clock import WallClock
from carewatch.service import Service
from carewatch.store_probe import PgProbe
from config.models import BrokerSettings
from ingest.broker import MosquittoProcess
from tests.ingest_harness import Client, small_config, wait_for

if TYPE_CHECKING:
    from tests.pg_fixture import PgServer

pytest_plugins = ["tests.pg_fixture"]


def _codes(service: Service) -> list[str]:
    return [p["code"] for p in service.monitoring()["problems"]]


def test_store_health_follows_postgresql(mosquitto: MosquittoProcess, pg_server: PgServer,
                                         pg_dsn: str, tmp_path: Path) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(pg_dsn)
    config = small_config(residents=2, storage={"alerts_backend": "postgresql",
                                                "postgresql": {"dsn_file": str(dsn_file)}})
    service = Service(config, broker=BrokerSettings(url=mosquitto.url, client_id="cw-hpg"),
                      data_dir=tmp_path / "data")
    service.health.cache_s = 0.0
    service.start()
    dev = Client(mosquitto.port, "dev-hpg")
    try:
        assert isinstance(service.health.store, PgProbe)
        wait_for(lambda: service.monitoring()["state"] == "ok", 15, "monitoring ok")
        assert service.health.ready()["store_writable"] is True

        # an alert stored in PostgreSQL shows in /metrics' open-alert gauge
        r = config.residents[0]
        dev.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                    {"ts": WallClock().now(), "fall": True, "worn": True}).wait_for_publish(5)
        gauge = 'carewatch_alerts_open{severity="critical",state="open",tier="1"} 1.0'
        wait_for(lambda: gauge in _scrape(service), 15, "the fall in the open-alert gauge")

        # a database that refuses writes (as a standby, or read-only for maintenance)
        name = pg_dsn.rsplit("dbname=", 1)[1].split()[0]
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        wait_for(lambda: "store_unwritable" in _codes(service), 10, "read-only seen")
        assert service.monitoring()["state"] == "down"
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        wait_for(lambda: service.monitoring()["state"] == "ok", 10, "writable again")

        # the server stopped: not writable, and said so; back once it is
        pg_server.stop()
        try:
            assert service.health.ready()["store_writable"] is False
            assert "store_unwritable" in _codes(service)
        finally:
            pg_server.start()
        wait_for(lambda: service.health.ready()["store_writable"] is True, 15, "server back")
    finally:
        dev.close()
        service.stop()


def _scrape(service: Service) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    service.health.register(registry)
    return generate_latest(registry).decode()
