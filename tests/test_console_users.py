"""The console's session-signing key: made whole or not at all, and never short (anyone
can sign sessions with an empty key: a full disk mid-write used to leave one)."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from config.secrets import SecretFileError
from console.users import KEY_BYTES, secret_key


def test_the_key_is_made_once_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "console" / "console.secret"
    with ThreadPoolExecutor(8) as pool:  # processes starting together: one key for all
        keys = set(pool.map(lambda _: secret_key(path), range(16)))
    assert len(keys) == 1 and len(next(iter(keys))) == KEY_BYTES
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["console.secret"]  # no leftovers
    assert secret_key(path) == keys.pop()


@pytest.mark.parametrize("content", [b"", b"short"])
def test_an_empty_or_short_key_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "console.secret"
    path.write_bytes(content)
    with pytest.raises(SecretFileError, match="delete the file"):
        secret_key(path)
