"""The databases that hold residents' data are created private to the service's user
(they were readable by every local user under the usual umask)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from alerts.store import SqliteAlertStore
from carewatch.files import private_db


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_databases_are_created_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual one: files world-readable unless made otherwise
    try:
        store = SqliteAlertStore(tmp_path / "var" / "alerts.db")
        store.close()
        assert mode(tmp_path / "var") == 0o700 and mode(tmp_path / "var" / "alerts.db") == 0o600
        shared = tmp_path / "shared.db"
        shared.touch(mode=0o640)  # made by an operator: left as it is
        private_db(shared)
        assert mode(shared) == 0o640
    finally:
        os.umask(old)
