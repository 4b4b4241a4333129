"""The district console's /api: each route asks the owner or every worker
(`console.federation` merges the lists); reports are read here from every worker's stores."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from console.auth import COOKIE, Actor, Reader
from console.errors import ApiError
from console.federation import (
    UNMONITORED,
    WorkerDown,
    WorkerLink,
    merge_alerts,
    merge_health,
    merge_list,
    merge_residents,
    merge_tasks,
    stale_record,
    stale_series,
    unmonitored_rows,
)
from console.gateway_state import FORWARD, Gateway, Id, TaskId, log, relay
from console.scope import Principal
from console.views import resident_facts, thresholds_for
from routines.district import district_history
from routines.web import LABEL, my_scope_doc, report_for, report_page


def api_router(gw: Gateway) -> APIRouter:
    """Every /api route of the district console over `gw`."""
    api = APIRouter(prefix="/api")

    # ---- session ------------------------------------------------------------------------
    @api.post("/login")
    async def login(request: Request) -> Response:
        body = await request.body()
        last: httpx.Response | WorkerDown | None = None
        # the first that answers signs in (and audits it); workers found silent go last
        for w in sorted(gw.workers, key=lambda w: w.index in gw.down_since):
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
        answers, down = await gw.ask_each(request, "/api/health", timeout_s=gw.health_timeout_s)
        return merge_health(answers, down, gw.clock.now(), gw.names.towns)

    # ---- alerts -------------------------------------------------------------------------
    @api.get("/alerts")
    async def alerts(p: Reader, request: Request, include_acknowledged: bool = True
                     ) -> dict[str, Any]:
        answers, down = await gw.ask_each(request, "/api/alerts", dict(request.query_params))
        await gw.recall_open_alerts(down)
        for k, doc in answers.items():  # a district answer with acks is the worker's whole set
            gw.learn(doc["alerts"], whole=k if p.tier == 4 and include_acknowledged else None)
        # a worker that does not answer still has its open alerts: show them as last seen,
        # marked stale (the health banner names the worker's towns)
        rows = [{"alerts": gw.last_known(d.index, p, include_acknowledged)} for d in down]
        out = merge_alerts([*answers.values(), *rows], gw.clock.now())
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
                        offset: Annotated[int, Query(ge=0)] = 0,
                        town: str | None = None, status: str | None = None,
                        q: Annotated[str | None, Query(max_length=100)] = None
                        ) -> dict[str, Any]:
        params = dict(request.query_params)
        params.update(offset="0", limit=str(min(20000, offset + limit)))
        only_unmonitored = status == UNMONITORED  # a status only the gateway knows
        if only_unmonitored:
            params.pop("status")
            params["limit"] = "1"  # their counts, and whether they answer
        answers, down = await gw.ask_all(request, "/api/residents", params)
        await gw.recall_open_alerts(down)
        if only_unmonitored:
            for doc in answers:
                doc["residents"], doc["total"] = [], 0
        # the residents of a worker that does not answer are listed, as not monitored
        ids = gw.residents_of([d.index for d in down], p, town, q)
        if status is None or only_unmonitored:
            seen = [a for d in down for a in gw.last_known(d.index, p, True)]
            answers.append({"residents": unmonitored_rows(gw.config, gw.names.towns, ids, seen),
                            "total": len(ids)})
        out = merge_residents(answers, gw.owners, offset, limit, gw.clock.now())
        out["counts"][UNMONITORED] = len(gw.residents_of([d.index for d in down], p))
        out["workers_down"] = [d.index for d in down]
        return out

    # A resident whose worker does not answer still has a record: who they are and who
    # looks after them (what staff need to send someone round), the last record and charts
    # this console relayed, and the alerts as last seen, all marked stale.
    @api.get("/residents/{resident_id}")
    async def resident(resident_id: Id, p: Reader, request: Request) -> Response:
        w = gw.resident_owner(resident_id)
        r = await gw.ask(w, request, "GET", f"/api/residents/{resident_id}",
                         timeout_s=gw.timeout_for(w))
        down = gw.down(w, r)
        if down is not None:
            await gw.recall_open_alerts([down])
        if down is None:
            assert isinstance(r, httpx.Response)
            if r.status_code == 200:
                gw.learn(r.json().get("alerts", []))
                gw.recall.keep(("record", resident_id), r.content, gw.clock.now())
            return relay(r)
        gw.check_scope(p, resident_id)
        log.info("%s viewed the stale record of %s (worker %d not answering)",
                 p.actor, resident_id, w.index)
        last = [a for a in gw.last_known(w.index, p, True) if a["resident_id"] == resident_id]
        return _json(stale_record(resident_facts(gw.names.residents[resident_id], gw.names),
                                  thresholds_for(gw.config, resident_id),
                                  gw.recall.get(("record", resident_id)), last, down,
                                  gw.clock.now()))

    @api.get("/residents/{resident_id}/series")
    async def series(resident_id: Id, p: Reader, request: Request) -> Response:
        w = gw.resident_owner(resident_id)
        params = dict(request.query_params)
        r = await gw.ask(w, request, "GET", f"/api/residents/{resident_id}/series", params,
                         timeout_s=gw.timeout_for(w))
        key = ("series", resident_id, tuple(sorted(params.items())))
        down = gw.down(w, r)
        if down is None:
            assert isinstance(r, httpx.Response)
            if r.status_code == 200:
                gw.recall.keep(key, r.content, gw.clock.now())
            return relay(r)
        gw.check_scope(p, resident_id)
        return _json(stale_series(gw.recall.get(key), down, gw.clock.now()))

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

    @api.delete("/silences/{silence_id}")
    async def unsilence(silence_id: Id, p: Actor, request: Request) -> Response:
        # silence ids name no resident: every worker is asked, only the owner has it
        got = await asyncio.gather(*(gw.ask(w, request, "DELETE", f"/api/silences/{silence_id}")
                                     for w in gw.workers))
        answers = [r for r in got if not isinstance(r, WorkerDown) and r.status_code < 500]
        for code in (200, 403):
            hit = next((r for r in answers if r.status_code == code), None)
            if hit is not None:
                return relay(hit)
        down = next((r for w, r in zip(gw.workers, got, strict=True) if gw.down(w, r)), None)
        if down is not None:  # it may be that worker's: not "no such silence"
            return relay(down)
        return relay(answers[0])

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


def _json(doc: dict[str, Any]) -> Response:
    return Response(orjson.dumps(doc), media_type="application/json")


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
        if isinstance(found, str):  # e.g. a console on another machine than SQLite stores
            raise ApiError(409, "no_report", f"no report here: {found}")
        tasks_h, alerts_h, closer = found
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
