"""Console users: argon2 password hashes and API tokens in `<data_dir>/users.json`.

Users are the registry's staff (`config.staff`); a password set with
`carewatch users set-password` wins over `Staff.password_hash` from the registry. API tokens
(`carewatch users add-token`) act with their staff member's scope; only a SHA-256 of each
token is stored (tokens are 256-bit random, so a slow hash adds nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from config.models import Config, Staff
from config.secrets import SecretFileError

WEAK_PASSWORDS = frozenset({
    "admin", "administrator", "password", "passw0rd", "carewatch", "changeme", "123456",
    "12345678", "1234567890", "qwerty", "letmein", "demo", "secret", "root",
})
MIN_PASSWORD_LEN = 10
TOKEN_PREFIX = "cw_"


class UsersError(ValueError):
    """A refused password, an unknown staff id or a bad users file."""


def password_problem(staff_id: str, password: str) -> str | None:
    """Why a password is refused, or None."""
    if len(password) < MIN_PASSWORD_LEN:
        return f"at least {MIN_PASSWORD_LEN} characters"
    low = password.lower()
    if low in WEAK_PASSWORDS or low == staff_id.lower() or low.startswith("demo-"):
        return "a default or guessable password"
    return None


class UserStore:
    """The users file, re-read when it changes on disk (a password set while running)."""

    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        self.staff: dict[str, Staff] = {s.id: s for s in config.staff}
        self.hasher = PasswordHasher()
        self._dummy: str | None = None  # hashed on first use: verifying unknown ids costs the same
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._doc: dict[str, Any] = {"version": 1, "users": {}, "tokens": {}}

    # ---- file -------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime
            except FileNotFoundError:
                return self._doc
            if mtime != self._mtime:
                try:
                    doc = orjson.loads(self.path.read_bytes())
                except orjson.JSONDecodeError as exc:
                    raise UsersError(f"{self.path}: not valid JSON ({exc})") from exc
                doc.setdefault("users", {})
                doc.setdefault("tokens", {})
                self._doc, self._mtime = doc, mtime
            return self._doc

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.path)
        with self._lock:
            self._doc, self._mtime = doc, None

    # ---- passwords --------------------------------------------------------------------
    def set_password(self, staff_id: str, password: str, *, demo: bool = False,
                     now: float = 0.0) -> None:
        """Hash and store a password (refuses weak ones unless `demo`)."""
        if staff_id not in self.staff:
            raise UsersError(f"unknown staff id {staff_id!r} (not in the registry's staff)")
        if not demo:
            problem = password_problem(staff_id, password)
            if problem:
                raise UsersError(f"password refused: {problem}")
        self.set_password_hash(staff_id, self.hasher.hash(password), demo=demo, now=now)

    def set_password_hash(self, staff_id: str, password_hash: str, *, demo: bool = False,
                          now: float = 0.0) -> None:
        """Store an argon2 hash made elsewhere (an import, or a test's cached hash)."""
        if staff_id not in self.staff:
            raise UsersError(f"unknown staff id {staff_id!r} (not in the registry's staff)")
        if not password_hash.startswith("$argon2"):
            raise UsersError("not an argon2 hash")
        doc = dict(self._load())
        users = dict(doc["users"])
        users[staff_id] = {"password_hash": password_hash, "demo": demo, "updated_at": now}
        doc["users"] = users
        self._save(doc)

    def has_password(self, staff_id: str) -> bool:
        entry = self._load()["users"].get(staff_id)
        staff = self.staff.get(staff_id)
        return bool(entry) or bool(staff and staff.password_hash)

    def verify(self, staff_id: str, password: str) -> Staff | None:
        """The staff member if the password matches (constant work for unknown ids)."""
        staff = self.staff.get(staff_id)
        entry = self._load()["users"].get(staff_id) or {}
        stored = entry.get("password_hash") or (staff.password_hash if staff else None)
        if not stored and self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_hex(8))
        ok: bool
        try:
            ok = self.hasher.verify(stored or self._dummy or "", password)
        except (VerificationError, InvalidHashError):
            ok = False
        return staff if ok and stored and staff else None

    def demo_users(self) -> list[str]:
        return sorted(k for k, v in self._load()["users"].items() if v.get("demo"))

    # ---- tokens -----------------------------------------------------------------------
    def add_token(self, staff_id: str, name: str, now: float = 0.0) -> str:
        """A new API token for `staff_id`; the token itself is returned once, never stored."""
        if staff_id not in self.staff:
            raise UsersError(f"unknown staff id {staff_id!r} (not in the registry's staff)")
        if not name.strip():
            raise UsersError("a token needs a name (which system uses it)")
        tid = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        doc = dict(self._load())
        tokens = dict(doc["tokens"])
        tokens[tid] = {"staff": staff_id, "name": name.strip(), "created_at": now,
                       "sha256": hashlib.sha256(secret.encode()).hexdigest()}
        doc["tokens"] = tokens
        self._save(doc)
        return f"{TOKEN_PREFIX}{tid}.{secret}"

    def revoke_token(self, tid: str) -> bool:
        doc = dict(self._load())
        tokens = dict(doc["tokens"])
        if tokens.pop(tid, None) is None:
            return False
        doc["tokens"] = tokens
        self._save(doc)
        return True

    def check_token(self, token: str) -> tuple[Staff, str] | None:
        """(staff, token name) for a valid token, else None."""
        if not token.startswith(TOKEN_PREFIX) or "." not in token:
            return None
        tid, _, secret = token[len(TOKEN_PREFIX):].partition(".")
        entry = self._load()["tokens"].get(tid)
        if not entry:
            return None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if not hmac.compare_digest(digest, str(entry.get("sha256", ""))):
            return None
        staff = self.staff.get(str(entry.get("staff")))
        return (staff, str(entry.get("name", tid))) if staff else None

    def tokens(self) -> list[dict[str, Any]]:
        return [{"id": k, "staff": v["staff"], "name": v["name"], "created_at": v["created_at"]}
                for k, v in sorted(self._load()["tokens"].items())]


DEMO_ROLES = ("district-centre", "town-", "desk-", "carer-")


def ensure_demo_users(store: UserStore) -> list[tuple[str, str]]:
    """Demo passwords for one staff member of each tier: [(staff id, password)]."""
    picked: list[str] = []
    for prefix in DEMO_ROLES:
        for sid in store.staff:
            if sid.startswith(prefix):
                picked.append(sid)
                break
    out = []
    existing = set(store.demo_users())
    for sid in picked:
        password = f"demo-{sid}"
        if sid not in existing:
            store.set_password(sid, password, demo=True)
        out.append((sid, password))
    return out


KEY_BYTES = 32


def secret_key(path: Path) -> bytes:
    """The session-signing key, created (0600) on first use. It appears whole or not at
    all (written to a temporary file, then linked into place, which fails if another
    process got there first): created in place, a crash or a full disk mid-write left an
    empty key, and anyone can sign with an empty key. A short key is refused."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:  # another process created it first: theirs
                key = path.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
    if len(key) < KEY_BYTES:
        raise SecretFileError(f"{path}: the console's session key is {len(key)} bytes, expected "
                         f"at least {KEY_BYTES}; delete the file to have a new one made "
                         "(signed-in users will have to sign in again)")
    return key
