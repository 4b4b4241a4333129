"""A real PostgreSQL server for tests: Debian's binaries, a throw-away cluster, loopback only.

Use from a test module with `pytest_plugins = ["tests.pg_fixture"]` (or import the fixtures).
`pg_server` (session): `alerts.pg_local.start_server()` (initdb into a temporary directory,
`postgres` as a child process on a free 127.0.0.1 port, fsync off), stopped (fast shutdown,
waited for) at the end of the session. `pg_dsn` (function): a fresh, empty database on that
server for each test. Tests are skipped with a clear reason when PostgreSQL or psycopg is
not installed (scripts/bootstrap.sh installs both).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alerts.pg_local import PgServer, PgUnavailable, start_server

__all__ = ["PgServer", "pg_dsn", "pg_server"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = start_server()
    except PgUnavailable as e:
        pytest.skip(str(e))
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh database for one test; dropped afterwards (its connections are ended first)."""
    name = pg_server.create_database()
    yield pg_server.dsn(name)
    if pg_server.proc is None:  # a test stopped the server and did not restart it
        return
    pg_server.drop_database(name)
