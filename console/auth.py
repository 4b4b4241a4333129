"""Sign-in, sessions, CSRF and API tokens.

Sessions are signed cookies (itsdangerous) carrying the staff id, a session id, a CSRF
token and an expiry on the wall clock; nothing is stored server-side except sign-outs
(`console.signouts`: a file beside the users file, so a restart or another process of the
same console knows them too). Every state-changing request made with a session must send the
session's CSRF token in `X-CSRF-Token`; requests with `Authorization: Bearer <token>`
carry no cookie and so need none.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from itsdangerous import BadSignature, URLSafeSerializer

from carewatch.clock import Clock
from config.models import Staff
from console.errors import ApiError
from console.scope import Principal
from console.signouts import SignOuts
from console.users import UserStore

COOKIE = "cw_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass
class Session:
    staff_id: str
    session_id: str
    csrf: str
    expires: float


class LockedOut(Exception):
    """Too many failed sign-ins for this staff id lately."""


class Auth:
    """Issues and checks sessions and tokens; rate-limits failed sign-ins per staff id."""

    def __init__(self, users: UserStore, key: bytes, ttl_s: float, clock: Clock,
                 max_failures: int = 5, lockout_s: float = 300.0, secure: bool = False,
                 signouts: SignOuts | None = None) -> None:
        """`signouts`: where sign-outs are kept (default: `signouts.log` beside the users
        file, shared by every process that reads that file)."""
        self.users, self.ttl_s, self.clock = users, ttl_s, clock
        self.signer = URLSafeSerializer(key, salt="carewatch-console-session")
        self.max_failures, self.lockout_s, self.secure = max_failures, lockout_s, secure
        self._failures: dict[str, list[float]] = {}
        self.signouts = signouts or SignOuts(users.path.parent / "signouts.log")
        self._lock = threading.Lock()

    # ---- sign-in ----------------------------------------------------------------------
    def sign_in(self, staff_id: str, password: str) -> Staff | None:
        """The staff member, or None for a wrong id or password; `LockedOut` past the
        limit. The attempt counts as failed before the (slow) password check and is taken
        back if it succeeds: counted after, a burst of concurrent attempts all passed the
        limit check while the first ones were still being verified."""
        now = self.clock.now()
        with self._lock:
            recent = [t for t in self._failures.get(staff_id, []) if now - t < self.lockout_s]
            if len(recent) >= self.max_failures:
                self._failures[staff_id] = recent
                raise LockedOut(staff_id)
            self._failures[staff_id] = [*recent, now]
        staff = self.users.verify(staff_id, password)
        if staff is not None:
            with self._lock:
                self._failures.pop(staff_id, None)
        return staff

    def issue(self, staff_id: str) -> tuple[str, Session]:
        s = Session(staff_id, secrets.token_urlsafe(12), secrets.token_urlsafe(24),
                    self.clock.now() + self.ttl_s)
        cookie = self.signer.dumps({"u": s.staff_id, "s": s.session_id, "c": s.csrf,
                                    "e": s.expires})
        return cookie, s

    def revoke(self, session: Session) -> None:
        self.signouts.add(session.session_id, session.expires)

    def parse(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            data: Any = self.signer.loads(cookie)
            s = Session(str(data["u"]), str(data["s"]), str(data["c"]), float(data["e"]))
        except (BadSignature, KeyError, TypeError, ValueError):
            return None
        now = self.clock.now()
        if s.expires <= now or self.signouts.revoked(s.session_id, now):
            return None
        return s

    # ---- per request ------------------------------------------------------------------
    def principal(self, request: Request) -> Principal | None:
        """Who makes this request (bearer token first, then the session cookie)."""
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer":
                return None
            found = self.users.check_token(token.strip())
            if found is None:
                return None
            staff, name = found
            return Principal.of(staff, via="token", token_name=name)
        s = self.parse(request.cookies.get(COOKIE))
        if s is None:
            return None
        member = self.users.staff.get(s.staff_id)
        if member is None:  # removed from the registry since signing in
            return None
        return Principal.of(member, csrf=s.csrf, session_id=s.session_id)

    def require(self, request: Request) -> Principal:
        p = self.principal(request)
        if p is None:
            raise HTTPException(401, "sign in first (or send Authorization: Bearer <token>)")
        return p

    def require_csrf(self, request: Request) -> Principal:
        """For state-changing requests: a session must present its CSRF token."""
        p = self.require(request)
        if p.via == "session":
            sent = request.headers.get(CSRF_HEADER, "")
            # compared as bytes: str comparison raises (a 500) on a non-ASCII header
            if not sent or not secrets.compare_digest(sent.encode(), (p.csrf or "").encode()):
                raise ApiError(403, "csrf", "missing or wrong CSRF token")
        return p


def reader(request: Request) -> Principal:
    """FastAPI dependency: the signed-in principal (the app's `state.auth` decides)."""
    auth: Auth = request.app.state.auth
    return auth.require(request)


def actor(request: Request) -> Principal:
    """FastAPI dependency for state-changing requests: also checks the CSRF token."""
    auth: Auth = request.app.state.auth
    return auth.require_csrf(request)


# Module level: with postponed annotations FastAPI resolves these names from the module.
Reader = Annotated[Principal, Depends(reader)]
Actor = Annotated[Principal, Depends(actor)]
