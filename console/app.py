"""`create_app(backend, settings)`: the console's FastAPI application."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.api import build_router
from console.auth import Auth
from console.backend import REQUEST_DEADLINE, BackendUnavailable, ConsoleBackend, PastDeadline
from console.context import Ctx
from console.errors import add_error_codes, error_response
from console.federation import DEADLINE_HEADER
from console.pages import STATIC, add_pages
from console.settings import ConsoleSettings
from console.users import UserStore, secret_key

log = logging.getLogger(__name__)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")


class ConsoleStartError(RuntimeError):
    """The console refuses to start (e.g. demo passwords outside demo mode)."""


class _Headers:
    """Security headers on every response (plain ASGI: leaves event streams unbuffered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CSP)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("X-Frame-Options", "DENY")
                if api:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Deadline:
    """Refuses (504) a request whose deadline header has passed (`DEADLINE_HEADER`, sent by
    the district console with the actions it forwards): by then the console has told staff
    the action was not done, so a worker that was hung must not do it on resuming."""

    _NAME = DEADLINE_HEADER.lower().encode()

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = next((v for k, v in scope["headers"] if k == self._NAME), None)
            if raw is not None:
                deadline = _epoch(raw)
                if time.time() > deadline:
                    log.warning("refused %s %s: it arrived after its deadline",
                                scope["method"], scope["path"])
                    await _late(scope, receive, send)
                    return
                # work handed to the pipeline thread is refused there too once it passes
                token = REQUEST_DEADLINE.set(deadline)
                try:
                    await self.app(scope, receive, send)
                finally:
                    REQUEST_DEADLINE.reset(token)
                return
        await self.app(scope, receive, send)


async def _late(scope: Scope, receive: Receive, send: Send) -> None:
    late = error_response(504, "past_deadline",
                          "this request arrived after its deadline and was not carried out")
    await late(scope, receive, send)


def _epoch(raw: bytes) -> float:
    try:
        value = float(raw)
    except ValueError:
        return math.inf  # not a time: no deadline
    return value if math.isfinite(value) else math.inf


def add_ops_routes(app: FastAPI, registry: CollectorRegistry,
                   ready: Callable[[], dict[str, object]]) -> None:
    """/metrics, /healthz and /readyz (same semantics as carewatch/http.py)."""

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return Response(b'{"status": "ok"}', media_type="application/json")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        checks = ready()
        ok = all(bool(v) for v in checks.values())
        return Response(orjson.dumps({"ready": ok, **checks}), status_code=200 if ok else 503,
                        media_type="application/json")


def create_app(backend: ConsoleBackend, settings: ConsoleSettings | None = None,
               routines: Any = None) -> FastAPI:
    """The console: pages, /api, live events, /metrics, /healthz, /readyz; with `routines`
    (a `routines.service.Routines`) also /api/routines and the tasks and reports pages."""
    settings = settings or ConsoleSettings()
    if settings.history_db is not None:
        backend.history_db = settings.history_db
    users = UserStore(settings.users_file or backend.data_dir / "users.json", backend.config)
    demo_users = users.demo_users()
    if demo_users and not settings.demo:
        raise ConsoleStartError(
            f"{users.path} holds demo passwords ({', '.join(demo_users)}); outside demo mode "
            "set real ones with `carewatch users set-password` (or use another data dir)")
    if not backend.config.staff:
        log.warning("console: the registry has no staff, so nobody can sign in and alerts "
                    "notify no one (they are still published over MQTT); add `staff:` to it")
    elif not settings.demo and not any(users.has_password(s) for s in users.staff):
        log.warning("console: no staff member has a password yet; set one with "
                    "`carewatch users set-password --config REG --staff ID`")
    auth = Auth(users, secret_key(settings.secret_file or backend.data_dir / "console.secret"),
                settings.session_ttl_s, settings.auth_clock, settings.login_max_failures,
                settings.login_lockout_s, settings.cookie_secure)
    ctx = Ctx.build(backend, settings, users, auth)
    backend.alerts.add_listener(ctx.on_event)

    app = FastAPI(title="CareWatch console", version="1",
                  description="Monitoring-centre console: alerts, residents, charts. "
                  "Authenticate with the session cookie (pages) or `Authorization: Bearer`.",
                  docs_url="/api/docs", redoc_url=None)
    app.state.ctx = ctx
    app.state.auth = auth  # console.auth.reader / actor
    app.add_middleware(_Deadline)
    app.add_middleware(_Headers)
    app.include_router(build_router(ctx))
    app.state.routines = None
    if routines is not None:
        from console.routines_mount import mount_routines

        mount_routines(app, ctx, routines)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    add_error_codes(app)

    @app.exception_handler(BackendUnavailable)
    async def _unavailable(request: Request, exc: BackendUnavailable) -> JSONResponse:
        return error_response(503, "unavailable", f"pipeline unavailable: {exc}")

    @app.exception_handler(PastDeadline)
    async def _past(request: Request, exc: PastDeadline) -> JSONResponse:
        log.warning("refused %s %s: %s", request.method, request.url.path, exc)
        return error_response(504, "past_deadline", f"{exc}; it was not carried out")

    add_ops_routes(app, backend.registry, backend.ready)

    add_pages(app, auth, ctx.scopes)
    return app
