"""A throw-away local PostgreSQL cluster: Debian's binaries, loopback only.

For the tests (`tests/pg_fixture.py`) and the store benchmark (`alerts/bench_store.py`), as
`ingest.broker.MosquittoProcess` is for Mosquitto; a deployment points `storage.postgresql`
at its own server instead. `start_server()` runs initdb into a temporary directory and
`postgres` as a child process on a free 127.0.0.1 port (as the unprivileged `postgres`
user when run as root), with password authentication over TCP.
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
from dataclasses import dataclass, field
from pathlib import Path

PG_USER = "carewatch"


class PgUnavailable(RuntimeError):
    """PostgreSQL's server binaries or psycopg are not installed (scripts/bootstrap.sh)."""


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
    """A running server: connection facts and a way to restart it (keeps the data).

    `durable=False` (tests) turns fsync off: fast, and a machine crash may lose commits;
    a benchmark of commit rates keeps PostgreSQL's durable defaults."""

    host: str
    port: int
    user: str
    password: str
    datadir: Path
    bindir: Path
    run_as: str | None
    durable: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def dsn(self, dbname: str = "postgres") -> str:
        return (f"host={self.host} port={self.port} dbname={dbname} user={self.user} "
                f"password={self.password} connect_timeout=5")

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.datadir.parent / "postgres.log", "ab")  # noqa: SIM115 - child owns it
        settings = ["-c", "max_connections=60", "-c", "shared_buffers=32MB"]
        if not self.durable:
            settings += ["-c", "fsync=off"]
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", *settings],
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

    def create_database(self) -> str:
        """A fresh, empty database; its name (`dsn(name)` connects to it)."""
        import psycopg

        name = "cw_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database made by `create_database` (its connections are ended first)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def start_server(durable: bool = False) -> PgServer:
    """initdb + start; the caller calls `remove()` (or `stop()` and removes
    `datadir.parent`). Raises `PgUnavailable` when PostgreSQL or psycopg is missing."""
    bindir = pg_bindir()
    if bindir is None:
        raise PgUnavailable("PostgreSQL is not installed (scripts/bootstrap.sh installs it)")
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        raise PgUnavailable("psycopg is not installed (scripts/bootstrap.sh)") from e
    run_as = "postgres" if os.geteuid() == 0 else None
    # Not under a private tmp dir of root's: the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="carewatch-pg-"))
    datadir = root / "data"
    pwfile = root / "pw"
    password = "local-" + uuid.uuid4().hex[:12]
    pwfile.write_text(password + "\n")
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
    server = PgServer("127.0.0.1", _free_port(), PG_USER, password, datadir, bindir, run_as,
                      durable=durable)
    try:
        server.start()
    except BaseException:
        server.remove()
        raise
    return server
