"""A real PostgreSQL server for tests: Debian's binaries, a throw-away cluster, loopback only.

Use from a test module with `pytest_plugins = ["tests.pg_fixture"]` (or import the fixtures).
`pg_server` (session): initdb into a temporary directory, `postgres` as a child process on a
free 127.0.0.1 port (as the unprivileged `postgres` user when the tests run as root), password
authentication over TCP, stopped (fast shutdown, waited for) at the end of the session.
`pg_dsn` (function): a fresh, empty database on that server for each test.
Tests are skipped with a clear reason when PostgreSQL or psycopg is not installed
(scripts/bootstrap.sh installs both).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "carewatch"
PG_PASSWORD = "test-" + uuid.uuid4().hex[:12]


def pg_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory with initdb and postgres, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A running server: connection facts and a way to restart it (keeps the data)."""

    host: str
    port: int
    user: str
    password: str
    datadir: Path
    bindir: Path
    run_as: str | None
    proc: subprocess.Popen[bytes] | None = None

    def dsn(self, dbname: str = "postgres") -> str:
        return (f"host={self.host} port={self.port} dbname={dbname} user={self.user} "
                f"password={self.password} connect_timeout=5")

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.datadir.parent / "postgres.log", "ab")  # noqa: SIM115 - child owns it
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             "-c", "fsync=off", "-c", "max_connections=60", "-c", "shared_buffers=32MB"],
            stdout=log, stderr=subprocess.STDOUT, user=self.run_as, group=self.run_as,
            process_group=0)
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}; see "
                                   f"{self.datadir.parent / 'postgres.log'}")
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # polling for readiness, not hiding a race

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT), waited for; SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)
        self.proc = None


def start_server() -> PgServer:
    """initdb + start; the caller stops it and removes `datadir.parent`."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (scripts/bootstrap.sh installs it)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (scripts/bootstrap.sh)")
    run_as = "postgres" if os.geteuid() == 0 else None
    # Not under pytest's tmp dir: that is private to root and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="carewatch-pg-"))
    datadir = root / "data"
    pwfile = root / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if run_as is not None:
        pw = pwd.getpwnam(run_as)
        os.chmod(root, 0o700)
        for p in (root, pwfile):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(datadir), "-U", PG_USER, "--pwfile", str(pwfile),
         "--auth-host=scram-sha-256", "--auth-local=reject", "-E", "UTF8", "--no-sync",
         "--locale=C"],
        check=True, capture_output=True, user=run_as, group=run_as)
    server = PgServer("127.0.0.1", _free_port(), PG_USER, PG_PASSWORD, datadir, bindir, run_as)
    try:
        server.start()
    except BaseException:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.datadir.parent, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh database for one test; dropped afterwards (its connections are ended first)."""
    import psycopg

    name = "cw_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.dsn(name)
    if pg_server.proc is None:  # a test stopped the server and did not restart it
        return
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
