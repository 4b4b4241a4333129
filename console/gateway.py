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

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from carewatch.clock import WallClock
from config.models import ID_PATTERN, Config
from console.app import STATIC, _Headers
from console.auth import COOKIE, Auth
from console.federation import (
    Owners,
    WorkerDown,
    WorkerLink,
    merge_alerts,
    merge_health,
    merge_list,
    merge_residents,
    merge_tasks,
)
from console.gateway_stream import StreamHub
from console.scope import Principal, Scopes
from console.settings import ConsoleSettings
from console.users import UserStore, secret_key
from console.views import Names
from ingest.devices import DeviceTable
from routines.district import district_history, empty_history
from routines.web import LABEL, my_scope_doc, report_for, report_page

FORWARD = ("cookie", "authorization", "x-csrf-token", "content-type", "accept-language")
PAGES = {"/": "board.html", "/residents": "residents.html"}
ROUTINE_PAGES = {"/tasks": "tasks.html", "/reports": "reports.html"}
Routes = dict[str, Callable[[], tuple[int, bytes, str]]]
# ids go into the workers' URLs: only the characters ids may have
Id = Annotated[str, PathParam(pattern=ID_PATTERN)]
TaskId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_:.-]{1,200}$")]


class Gateway:
    """State shared by the gateway's routes: the partition, auth, the worker client."""

    def __init__(self, config: Config, workers: list[WorkerLink], data_dir: Path,
                 settings: ConsoleSettings, timeout_s: float) -> None:
        self.config, self.workers, self.data_dir = config, workers, data_dir
        self.settings, self.timeout_s = settings, timeout_s
        self.clock = WallClock()
        self.owners = Owners(config, workers)
        self.devices = DeviceTable.from_config(config)
        self.scopes = Scopes(config, self.devices)
        self.names = Names(config)
        users = UserStore(settings.users_file or data_dir / "users.json", config)
        self.auth = Auth(users, secret_key(settings.secret_file or data_dir / "console.secret"),
                         settings.session_ttl_s, settings.auth_clock,
                         settings.login_max_failures, settings.login_lockout_s,
                         settings.cookie_secure)
        self.alert_owner: dict[str, int] = {}  # alert id -> worker, learnt from answers
        self.client: httpx.AsyncClient | None = None
        self.hub: StreamHub | None = None

    # ---- asking workers -----------------------------------------------------------------
    async def ask(self, w: WorkerLink, request: Request, method: str, path: str,
                  params: dict[str, Any] | None = None, body: bytes | None = None
                  ) -> httpx.Response | WorkerDown:
        assert self.client is not None
        headers = {k: v for k in FORWARD if (v := request.headers.get(k)) is not None}
        try:
            return await self.client.request(method, w.url + path, params=params,
                                             content=body, headers=headers)
        except httpx.HTTPError as exc:
            return WorkerDown(w.index, w.towns, f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def ask_all(self, request: Request, path: str, params: dict[str, Any] | None = None
                      ) -> tuple[list[dict[str, Any]], list[WorkerDown]]:
        """Every worker's JSON answer to GET `path`; a 4xx is the request's own fault and
        is answered as is; workers that fail otherwise are listed as down."""
        got = await asyncio.gather(*(self.ask(w, request, "GET", path, params)
                                     for w in self.workers))
        answers, down = [], []
        for w, r in zip(self.workers, got, strict=True):
            if isinstance(r, WorkerDown):
                down.append(r)
            elif r.status_code == 200:
                answers.append(r.json())
            elif 400 <= r.status_code < 500:
                raise HTTPException(r.status_code, _detail(r))
            else:
                down.append(WorkerDown(w.index, w.towns, f"HTTP {r.status_code}: {_detail(r)}"))
        return answers, down

    def learn(self, rows: list[dict[str, Any]]) -> None:
        """Remember which worker holds each alert (for acting on it by id)."""
        for row in rows:
            k = self.owners.of_resident.get(str(row.get("resident_id")))
            if k is not None and "alert_id" in row:
                self.alert_owner[str(row["alert_id"])] = k
        if len(self.alert_owner) > 200_000:  # bounded: the oldest half goes
            for key in list(self.alert_owner)[:100_000]:
                del self.alert_owner[key]

    async def owner_of_alert(self, request: Request, alert_id: str) -> WorkerLink:
        k = self.alert_owner.get(alert_id)
        if k is not None:
            return self.owners.worker(k)
        # not seen yet (e.g. a page older than this gateway): ask every worker; only the
        # owner has it in scope (and only the owner audits the look)
        got = await asyncio.gather(*(self.ask(w, request, "GET", f"/api/alerts/{alert_id}")
                                     for w in self.workers))
        for r in got:
            if not isinstance(r, WorkerDown) and r.status_code == 200:
                self.learn([r.json()["alert"]])
                if alert_id in self.alert_owner:
                    return self.owners.worker(self.alert_owner[alert_id])
        if any(isinstance(r, WorkerDown) for r in got):
            raise HTTPException(503, f"alert {alert_id} not found on the workers answering; "
                                "a worker is down")
        raise HTTPException(404, f"no alert {alert_id}")

    def resident_owner(self, resident_id: str) -> WorkerLink:
        w = self.owners.for_resident(resident_id)
        if w is None:
            raise HTTPException(404, f"no resident {resident_id}")
        return w


def _reader(request: Request) -> Principal:
    gw: Gateway = request.app.state.gateway
    return gw.auth.require(request)


def _actor(request: Request) -> Principal:
    gw: Gateway = request.app.state.gateway
    return gw.auth.require_csrf(request)


# Module level: with postponed annotations FastAPI resolves these names from the module.
Reader = Annotated[Principal, Depends(_reader)]
Actor = Annotated[Principal, Depends(_actor)]


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text))
    except ValueError:
        return r.text


def relay(r: httpx.Response | WorkerDown, cookies: bool = False) -> Response:
    """A worker's answer as the gateway's (503 naming the worker when it did not answer)."""
    if isinstance(r, WorkerDown):
        return Response(orjson.dumps({"detail": f"worker {r.index} not answering: {r.reason}"}),
                        status_code=503, media_type="application/json")
    out = Response(r.content, status_code=r.status_code,
                   media_type=r.headers.get("content-type", "application/json"))
    if cookies:
        for value in r.headers.get_list("set-cookie"):
            out.headers.append("set-cookie", value)
    return out


def create_gateway(config: Config, workers: list[WorkerLink], data_dir: Path, *,
                   registry: CollectorRegistry, ready: Callable[[], dict[str, object]],
                   routes: Routes | None = None, settings: ConsoleSettings | None = None,
                   timeout_s: float = 10.0) -> FastAPI:
    """The district console plus the supervisor's own /healthz, /readyz, /metrics and
    `routes` (e.g. /workers)."""
    settings = settings or ConsoleSettings()
    gw = Gateway(config, workers, data_dir, settings, timeout_s)

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
    app.state.gateway = gw
    app.state.close_streams = lambda: None
    app.add_middleware(_Headers)

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

    for path, fn in (routes or {}).items():
        def answer(fn: Callable[[], tuple[int, bytes, str]] = fn) -> Response:
            code, body, ctype = fn()
            return Response(body, status_code=code, media_type=ctype)
        app.add_api_route(path, answer, methods=["GET"], include_in_schema=False)

    _pages(app, gw)
    app.include_router(_api(gw))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _pages(app: FastAPI, gw: Gateway) -> None:
    def page(name: str) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            if gw.auth.principal(request) is None:
                return RedirectResponse("/login", status_code=303)
            return FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})
        return serve

    pages = dict(PAGES)
    if gw.config.routines.enabled:
        pages.update(ROUTINE_PAGES)
    for path, name in pages.items():
        app.add_api_route(path, page(name), methods=["GET"], include_in_schema=False)

    @app.get("/login", include_in_schema=False)
    def login_page() -> Response:
        return FileResponse(STATIC / "login.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/residents/{resident_id}", include_in_schema=False)
    def resident_page(resident_id: str, request: Request) -> Response:
        p = gw.auth.principal(request)
        if p is None:
            return RedirectResponse("/login", status_code=303)
        if not re.fullmatch(ID_PATTERN.strip("^$"), resident_id) or \
                resident_id not in gw.devices.row_of_resident:
            return Response("no such resident", status_code=404, media_type="text/plain")
        if not gw.scopes.allows_resident(p, resident_id):
            return Response("outside your scope", status_code=403, media_type="text/plain")
        return FileResponse(STATIC / "resident.html", headers={"Cache-Control": "no-store"})


def _api(gw: Gateway) -> APIRouter:
    api = APIRouter(prefix="/api")

    # ---- session ------------------------------------------------------------------------
    @api.post("/login")
    async def login(request: Request) -> Response:
        body = await request.body()
        last: httpx.Response | WorkerDown | None = None
        for w in gw.workers:  # the first that answers signs in (and audits it)
            last = await gw.ask(w, request, "POST", "/api/login", body=body)
            if not isinstance(last, WorkerDown) and last.status_code < 500:
                break
        assert last is not None
        return relay(last, cookies=True)

    @api.post("/logout")
    async def logout(p: Actor, request: Request) -> Response:
        s = gw.auth.parse(request.cookies.get(COOKIE))
        if s is not None:
            gw.auth.revoke(s)  # here first: the pages and the forwarding stop at once
        await asyncio.gather(*(gw.ask(w, request, "POST", "/api/logout") for w in gw.workers))
        out = Response(b'{"ok": true}', media_type="application/json")
        out.delete_cookie(COOKIE, path="/")
        return out

    @api.get("/me")
    def me(p: Reader) -> dict[str, Any]:
        towns = gw.scopes.towns(p)
        return {"user": p.public(), "csrf": p.csrf, "now": gw.clock.now(),
                "timezone": gw.config.timezone,
                "features": {"routines": gw.config.routines.enabled},
                "residents_in_scope": int(gw.scopes.mask(p).sum()),
                "towns": [{"id": t, "name": gw.names.towns.get(t, t)} for t in towns],
                "workers": len(gw.workers)}

    @api.get("/health")
    async def health(p: Reader, request: Request) -> dict[str, Any]:
        answers, down = await gw.ask_all(request, "/api/health")
        return merge_health(answers, down, gw.clock.now())

    # ---- alerts -------------------------------------------------------------------------
    @api.get("/alerts")
    async def alerts(p: Reader, request: Request) -> dict[str, Any]:
        answers, down = await gw.ask_all(request, "/api/alerts", dict(request.query_params))
        out = merge_alerts(answers, gw.clock.now())
        gw.learn(out["alerts"])
        out["workers_down"] = [d.index for d in down]
        return out

    @api.get("/alerts/{alert_id}")
    async def alert(alert_id: Id, p: Reader, request: Request) -> Response:
        w = await gw.owner_of_alert(request, alert_id)
        return relay(await gw.ask(w, request, "GET", f"/api/alerts/{alert_id}"))

    @api.post("/alerts/{alert_id}/{action}")
    async def act(alert_id: Id, action: str, p: Actor, request: Request) -> Response:
        if action not in ("ack", "dispatch", "resolve"):
            raise HTTPException(404, "not found")
        w = await gw.owner_of_alert(request, alert_id)
        body = await request.body()
        return relay(await gw.ask(w, request, "POST", f"/api/alerts/{alert_id}/{action}",
                                  body=body))

    # ---- residents ----------------------------------------------------------------------
    @api.get("/residents")
    async def residents(p: Reader, request: Request,
                        limit: Annotated[int, Query(ge=1, le=20000)] = 5000,
                        offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        params = dict(request.query_params)
        params.update(offset="0", limit=str(min(20000, offset + limit)))
        answers, down = await gw.ask_all(request, "/api/residents", params)
        out = merge_residents(answers, gw.owners, offset, limit, gw.clock.now())
        out["workers_down"] = [d.index for d in down]
        return out

    @api.get("/residents/{resident_id}")
    async def resident(resident_id: Id, p: Reader, request: Request) -> Response:
        r = await gw.ask(gw.resident_owner(resident_id), request, "GET",
                         f"/api/residents/{resident_id}")
        if not isinstance(r, WorkerDown) and r.status_code == 200:
            gw.learn(r.json().get("alerts", []))
        return relay(r)

    @api.get("/residents/{resident_id}/series")
    async def series(resident_id: Id, p: Reader, request: Request) -> Response:
        return relay(await gw.ask(gw.resident_owner(resident_id), request, "GET",
                                  f"/api/residents/{resident_id}/series",
                                  dict(request.query_params)))

    # ---- silences -----------------------------------------------------------------------
    @api.get("/silences")
    async def silences(p: Reader, request: Request) -> dict[str, Any]:
        answers, _ = await gw.ask_all(request, "/api/silences")
        return merge_list(answers, "silences")

    @api.post("/silences")
    async def silence(p: Actor, request: Request) -> Response:
        body = await request.body()
        try:
            resident_id = str(orjson.loads(body).get("resident_id"))
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise HTTPException(422, "expected a JSON object with resident_id") from exc
        return relay(await gw.ask(gw.resident_owner(resident_id), request, "POST",
                                  "/api/silences", body=body))

    # ---- live ---------------------------------------------------------------------------
    @api.get("/stream")
    async def stream(p: Reader, request: Request) -> StreamingResponse:
        assert gw.hub is not None
        headers = {k: v for k in FORWARD if (v := request.headers.get(k)) is not None}
        return StreamingResponse(gw.hub.stream(headers, request.is_disconnected),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    if gw.config.routines.enabled:
        _routines_api(api, gw)
    return api


def _routines_api(api: APIRouter, gw: Gateway) -> None:
    def task_owner(task_id: str) -> WorkerLink:
        # task ids are "kind:resident:period" (routines.schedule.task_id)
        parts = task_id.split(":")
        return gw.resident_owner(parts[1] if len(parts) == 3 else "")

    @api.get("/routines/scope")
    def scope(p: Reader) -> dict[str, Any]:
        return my_scope_doc(gw.config, p)

    @api.get("/routines/tasks")
    async def tasks(p: Reader, request: Request) -> dict[str, Any]:
        answers, down = await gw.ask_all(request, "/api/routines/tasks",
                                         dict(request.query_params))
        out = merge_tasks(answers, gw.clock.now())
        out["workers_down"] = [d.index for d in down]
        return out

    @api.get("/routines/tasks/{task_id}")
    async def task(task_id: TaskId, p: Reader, request: Request) -> Response:
        return relay(await gw.ask(task_owner(task_id), request, "GET",
                                  f"/api/routines/tasks/{task_id}"))

    @api.post("/routines/tasks/{task_id}/complete")
    async def complete(task_id: TaskId, p: Actor, request: Request) -> Response:
        body = await request.body()
        return relay(await gw.ask(task_owner(task_id), request, "POST",
                                  f"/api/routines/tasks/{task_id}/complete", body=body))

    def report(p: Principal, label: str, town: str | None) -> dict[str, Any]:
        found = district_history(gw.config, gw.data_dir)
        tasks_h, alerts_h, closer = empty_history() if isinstance(found, str) else found
        try:
            return report_for(gw.config, tasks_h, alerts_h, p, label, town, gw.clock.now())
        finally:
            closer.close()

    @api.get("/routines/reports/{label}")
    def report_json(label: Annotated[str, PathParam(pattern=LABEL)], p: Reader,
                    town: str | None = None) -> dict[str, Any]:
        return report(p, label, town)

    @api.get("/routines/reports/{label}/html", response_class=HTMLResponse)
    def report_html(label: Annotated[str, PathParam(pattern=LABEL)], p: Reader,
                    town: str | None = None) -> HTMLResponse:
        return HTMLResponse(report_page(report(p, label, town), town))
