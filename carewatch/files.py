"""Files that hold residents' data are private to the service's user."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def private_db(path: Path) -> Path:
    """Create `path`'s directory (0700 when made) and the file itself (0600 when made)
    before a database opens it. SQLite creates its file, and the -wal and -shm beside it
    with the same mode, under the umask: usually readable by every local user, and these
    hold health data."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # an existing database keeps the mode it has (an operator may have chosen it)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return path
