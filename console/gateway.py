"""`create_gateway(...)`: one district console on the supervisor's address for
`carewatch run --workers N`.

On-call staff open one address and see every town: the same pages as a worker's console,
over an API that asks the workers (`console.federation` says whom, and how answers merge).
Sign-in is shared: the workers and the gateway read one users file and one session key
(`DATA_DIR/users.json`, `DATA_DIR/console.secret`), so a session cookie from any of them is
good at all of them; the gateway checks it before forwarding, and each worker checks it
again (and the CSRF token) and writes the audit entry in its own store. Sign-in itself is
forwarded to the first worker that answers (its failure counts and audit). Reports are read
here, from every worker's stores (`routines.district`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from config.models import Config
from console.app import _Headers, add_ops_routes
from console.errors import add_error_codes
from console.federation import WorkerLink
from console.gateway_api import api_router
from console.gateway_state import Gateway
from console.gateway_stream import StreamHub
from console.pages import ROUTINE_PAGES, STATIC, add_pages, add_signed_in_pages
from console.settings import ConsoleSettings

Routes = dict[str, Callable[[], tuple[int, bytes, str]]]


def create_gateway(config: Config, workers: list[WorkerLink], data_dir: Path, *,
                   registry: CollectorRegistry, ready: Callable[[], dict[str, object]],
                   routes: Routes | None = None, settings: ConsoleSettings | None = None,
                   timeout_s: float = 5.0, health_timeout_s: float = 3.0) -> FastAPI:
    """The district console plus the supervisor's own /healthz, /readyz, /metrics and
    `routes` (e.g. /workers)."""
    settings = settings or ConsoleSettings()
    gw = Gateway(config, workers, data_dir, settings, timeout_s, health_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.client = httpx.AsyncClient(timeout=timeout_s)
        gw.hub = StreamHub(gw.client, workers, settings.sse_queue_max, settings.sse_keepalive_s,
                           lambda row: gw.learn([row]))
        app.state.close_streams = gw.hub.close
        try:
            yield
        finally:
            gw.hub.close()
            await gw.client.aclose()

    app = FastAPI(title="CareWatch district console", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.auth = gw.auth  # console.auth.reader / actor
    app.state.close_streams = lambda: None
    app.add_middleware(_Headers)
    add_error_codes(app)

    add_ops_routes(app, registry, ready)

    for path, fn in (routes or {}).items():
        def answer(fn: Callable[[], tuple[int, bytes, str]] = fn) -> Response:
            code, body, ctype = fn()
            return Response(body, status_code=code, media_type=ctype)
        app.add_api_route(path, answer, methods=["GET"], include_in_schema=False)

    _pages(app, gw)
    app.include_router(api_router(gw))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _pages(app: FastAPI, gw: Gateway) -> None:
    add_pages(app, gw.auth, gw.scopes)
    if gw.config.routines.enabled:
        add_signed_in_pages(app, gw.auth, ROUTINE_PAGES)
