"""Mosquitto password-file hashes (`$7$`: PBKDF2-HMAC-SHA512), as `mosquitto_passwd` writes.

Format of one line: `user:$7$<iterations>$<base64 salt>$<base64 hash>`; Mosquitto 2.0 uses
a 12-byte salt, 101 iterations and a 64-byte derived key. Implemented here so provisioning
does not need the `mosquitto_passwd` binary; tests check the result against the real broker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

ITERATIONS = 101
SALT_BYTES = 12
KEY_BYTES = 64


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The `$7$...` hash of `password` (a fresh random salt unless one is given)."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, KEY_BYTES)
    return (
        f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    )


def verify_password(password: str, hashed: str) -> bool:
    """True if `password` matches a `$7$` hash (constant-time comparison)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        want = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, len(want))
    return hmac.compare_digest(got, want)


def new_password(nbytes: int = 24) -> str:
    """A random password (URL-safe text, `nbytes` of entropy)."""
    return secrets.token_urlsafe(nbytes)


def passwd_line(username: str, password: str) -> str:
    if ":" in username or "\n" in username:
        raise ValueError("a Mosquitto user name may not contain ':' or a newline")
    return f"{username}:{hash_password(password)}"
