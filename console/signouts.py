"""Sign-outs that outlive a process and reach every process sharing the console's files.

Sessions are signed cookies (console.auth): nothing about a session is stored, so a sign-out
must be. Kept in memory only, it was forgotten at a restart (the cookie was good again until
it expired) and unknown to the other processes of a district console (workers, gateways,
`carewatch console` instances). Each sign-out is one line appended to `signouts.log` next to
the users file: appends of a few dozen bytes are atomic, so concurrent writers lose nothing,
and readers re-read the file only when its size changes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class SignOuts:
    """Revoked session ids with their expiry, shared through an append-only file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._local: dict[str, float] = {}  # this process's own, also without a file
        self._shared: dict[str, float] = {}
        self._size = -1
        self._lock = threading.Lock()

    def add(self, session_id: str, expires: float) -> None:
        with self._lock:
            self._local[session_id] = expires
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{session_id} {expires:.0f}\n".encode())
        finally:
            os.close(fd)

    def revoked(self, session_id: str, now: float) -> bool:
        """Whether `session_id` was signed out (here or by any process sharing the file)."""
        with self._lock:
            if len(self._local) > 1000:  # expired sign-outs need no remembering
                self._local = {k: v for k, v in self._local.items() if v > now}
            expires = self._local.get(session_id)
            if expires is None:
                self._reload()
                expires = self._shared.get(session_id)
        return expires is not None and expires > now

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == self._size:
            return
        shared: dict[str, float] = {}
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            sid, _, expires = line.partition(" ")
            try:
                shared[sid] = float(expires)
            except ValueError:
                continue  # a torn last line from a writer that died mid-write
        self._shared, self._size = shared, size
