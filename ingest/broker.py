"""Run a local Mosquitto as a child process (for `carewatch demo`, tests and benchmarks).

Every config written here raises Mosquitto's default `max_queued_messages 1000`, which
silently drops QoS 1 messages for a subscriber that falls 1,000 behind, and bounds memory
with `max_queued_bytes` instead.

Anonymous access: a `MosquittoProcess` with `auth` (a password file and an ACL file from
`carewatch devices provision`) refuses anonymous clients; `carewatch demo` runs that way.
Without `auth` the broker is anonymous and bound to loopback only: tests and benchmarks that
are not about security use it (docs/security.md). `tls` turns the listener into MQTT over TLS
(`mqtts://`), optionally requiring client certificates.
"""

from __future__ import annotations

import ctypes
import getpass
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class MosquittoNotFound(RuntimeError):
    pass


def find_mosquitto() -> str:
    for cand in MOSQUITTO_CANDIDATES:
        path = shutil.which(cand) or (cand if Path(cand).is_file() else None)
        if path:
            return path
    raise MosquittoNotFound(
        "Mosquitto is not installed. Install it with: sudo apt-get install mosquitto "
        "mosquitto-clients (or run `make demo` / `make test` as root, which does it)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive free ports (`carewatch run --workers N --http P`
    listens on P .. P + N). Drawn below Linux's ephemeral range (32768 up): a port there
    can be handed to any outgoing connection before a worker gets to listen on it."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


@dataclass(frozen=True)
class BrokerAuth:
    """Password file (`mosquitto_passwd` format) and ACL file: anonymous access off."""

    password_file: Path
    acl_file: Path


@dataclass(frozen=True)
class BrokerTls:
    """Server certificate for a TLS listener; `require_certificate` asks clients for theirs."""

    certfile: Path
    keyfile: Path
    cafile: Path
    require_certificate: bool = False


def auth_lines(auth: BrokerAuth | None) -> list[str]:
    if auth is None:
        return ["allow_anonymous true"]
    return [
        "allow_anonymous false",
        f"password_file {Path(auth.password_file).resolve()}",
        f"acl_file {Path(auth.acl_file).resolve()}",
    ]


def listener_lines(port: int, bind: str, tls: BrokerTls | None) -> list[str]:
    lines = [f"listener {port} {bind}"]
    if tls is not None:
        lines += [
            f"certfile {Path(tls.certfile).resolve()}",
            f"keyfile {Path(tls.keyfile).resolve()}",
            f"cafile {Path(tls.cafile).resolve()}",
            "tls_version tlsv1.2",
            f"require_certificate {'true' if tls.require_certificate else 'false'}",
        ]
    return lines


def broker_config(
    port: int,
    data_dir: Path,
    extra: str = "",
    auth: BrokerAuth | None = None,
    tls: BrokerTls | None = None,
    bind: str = "127.0.0.1",
    persistence: bool = True,
) -> str:
    """A complete mosquitto.conf. Anonymous only without `auth` (and then loopback only)."""
    if auth is None and bind not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("an anonymous broker may listen on loopback only; pass auth=")
    return "\n".join(
        [
            *listener_lines(port, bind, tls),
            # run as the invoking user: as root, Mosquitto would otherwise switch to the
            # `mosquitto` user and fail to write its persistence file in our directory
            f"user {getpass.getuser()}",
            *auth_lines(auth),
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {data_dir}/",
            "autosave_interval 1",
            "max_queued_messages 1000000",
            "max_queued_bytes 1073741824",
            "max_inflight_messages 1000",
            "persistent_client_expiration 7d",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "sys_interval 5",
            extra,
            "",
        ]
    )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent's starting thread ends (Linux
    PR_SET_PDEATHSIG), so a broker in its own process group never outlives its owner."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class MosquittoProcess:
    """A Mosquitto broker on a free loopback port; restartable on the same port."""

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        extra_conf: str = "",
        auth: BrokerAuth | None = None,
        tls: BrokerTls | None = None,
        persistence: bool = True,
        own_process_group: bool = False,
    ) -> None:
        """`persistence=False` only for benchmarks: saving a queue of a million messages
        every second would measure the disk, not the pipeline.

        `own_process_group=True` (the demo) keeps a terminal's Ctrl-C, sent to the whole
        foreground process group, from stopping the broker before its clients: a broker
        shutting down publishes the Last Will of every client still connected. The owner
        stops it last; it also gets SIGTERM if the thread that started it dies."""
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="carewatch-mosq-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.workdir / "mosquitto.conf"
        self.auth, self.tls = auth, tls
        self.conf_path.write_text(
            broker_config(
                self.port, self.workdir, extra_conf, auth=auth, tls=tls, persistence=persistence
            )
        )
        self.log_path = self.workdir / "mosquitto.log"
        self.own_process_group = own_process_group
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = find_mosquitto()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        own = self.own_process_group
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)], stdout=log, stderr=subprocess.STDOUT,
            process_group=0 if own else None, preexec_fn=_die_with_parent if own else None,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)  # polling for the port to open; bounded by the deadline
        raise RuntimeError(f"mosquitto did not open port {self.port} in {timeout_s} s")

    def wait_saved(self, after: float, timeout_s: float = 10.0) -> bool:
        """Wait until the broker has written its persistence file after wall time `after`.

        Mosquitto saves every `autosave_interval` (1 s here); a crash before that loses the
        sessions created since the last save, as it would in production.
        """
        db = self.workdir / "mosquitto.db"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if db.exists() and db.stat().st_mtime > after:
                return True
            time.sleep(0.05)  # polling a file's mtime; bounded by the deadline
        return False

    def stop(self, kill: bool = False) -> None:
        """Stop the broker (SIGTERM saves persistence; kill=True is an abrupt crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
