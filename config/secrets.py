"""Secret files named in the config (shared secrets, tokens): read at start-up, where a
missing, unreadable or empty one is an error naming the setting, not a traceback or an
empty key (HMAC with an empty key lets anyone sign)."""

from __future__ import annotations

from pathlib import Path


class SecretFileError(ValueError):
    """A configured secret file that is missing, unreadable or empty."""


def read_secret_file(path: str, what: str) -> str:
    """The file's text, surrounding whitespace stripped; `what` names the setting."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError) as exc:
        raise SecretFileError(f"{what}: cannot read {path}: {exc}") from exc
    if not value:
        raise SecretFileError(f"{what}: {path} is empty; expected the secret")
    return value
