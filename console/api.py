"""The JSON API under /api/: everything the pages show and do (OpenAPI at /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator

from alerts.model import MANUAL_KINDS, AlertNotFoundError, AlertTransitionError
from config.models import ID_PATTERN
from console.auth import COOKIE, Actor, LockedOut, Reader
from console.context import Ctx
from console.errors import ApiError
from console.scope import Principal
from console.views import (
    STATUSES,
    ResidentTable,
    alert_row,
    board_key,
    device_state,
    resident_facts,
    resident_silences,
    series_view,
    thresholds_for,
)
from detectors.registry import all_kinds

AlertId = Annotated[str, Path(pattern=ID_PATTERN, description="alert id")]
ResidentId = Annotated[str, Path(pattern=ID_PATTERN, description="resident id")]
SilenceId = Annotated[str, Path(pattern=ID_PATTERN, description="silence id")]
# Every kind an alert can have: what a silence may name. Checked against this list, not a
# pattern, so that a typo ("falll") is refused instead of muting nothing while the user
# believes falls are muted.
ALERT_KINDS: tuple[str, ...] = (*all_kinds(), *MANUAL_KINDS)


class LoginIn(BaseModel):
    staff_id: str = Field(pattern=ID_PATTERN)
    password: str = Field(min_length=1, max_length=1024)


class ResolveIn(BaseModel):
    note: str = Field(min_length=1, max_length=4000,
                      description="feedback: what was found, what was done (required)")

    @field_validator("note")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a feedback note is required")
        return v.strip()


class SilenceIn(BaseModel):
    resident_id: str = Field(pattern=ID_PATTERN)
    kind: str | None = Field(None, description="one alert kind to mute (default: all): "
                             + ", ".join(ALERT_KINDS))
    minutes: float = Field(gt=0, le=7 * 24 * 60)
    reason: str = Field(min_length=1, max_length=500)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str | None) -> str | None:
        if v is not None and v not in ALERT_KINDS:
            raise ValueError(f"unknown alert kind {v[:40]!r}; one of {', '.join(ALERT_KINDS)}")
        return v


def build_router(ctx: Ctx) -> APIRouter:
    """All /api routes over one console context."""
    api = APIRouter(prefix="/api")
    auth, backend, scopes, names = ctx.auth, ctx.backend, ctx.scopes, ctx.names

    def in_scope_alert(p: Principal, alert_id: str) -> Any:
        try:
            alert = backend.alerts.get_alert(alert_id)
        except AlertNotFoundError as exc:
            raise HTTPException(404, f"no alert {alert_id}") from exc
        if not scopes.allows_resident(p, alert.resident_id):
            raise HTTPException(403, "this alert is outside your scope")
        return alert

    def in_scope_row(p: Principal, resident_id: str) -> int:
        row = backend.devices.row_of_resident.get(resident_id)
        if row is None:
            raise HTTPException(404, f"no resident {resident_id}")
        if not scopes.allows_row(p, row):
            raise HTTPException(403, "this resident is outside your scope")
        return row

    # ---- session ------------------------------------------------------------------------
    @api.post("/login", summary="sign in; sets the session cookie, returns the CSRF token")
    def login(body: LoginIn, response: Response) -> dict[str, Any]:
        try:
            staff = auth.sign_in(body.staff_id, body.password)
        except LockedOut:
            raise HTTPException(429, "too many failed sign-ins; try again later") from None
        if staff is None:
            backend.audit(body.staff_id, "console_login_failed")
            raise ApiError(401, "login_failed", "wrong staff id or password")
        cookie, s = auth.issue(staff.id)
        response.set_cookie(COOKIE, cookie, max_age=int(auth.ttl_s), httponly=True,
                            samesite="strict", secure=auth.secure, path="/")
        backend.audit(staff.id, "console_login", detail={"session": s.session_id})
        p = Principal.of(staff, csrf=s.csrf)
        return {"user": p.public(), "csrf": s.csrf, "expires": s.expires}

    @api.post("/logout", summary="sign out (ends this session)")
    def logout(p: Actor, request: Request, response: Response) -> dict[str, bool]:
        s = auth.parse(request.cookies.get(COOKIE))
        if s is not None:
            auth.revoke(s)
        response.delete_cookie(COOKIE, path="/")
        backend.audit(p.actor, "console_logout")
        return {"ok": True}

    @api.get("/me", summary="who is signed in, their scope, and the CSRF token")
    def me(p: Reader, request: Request) -> dict[str, Any]:
        towns = scopes.towns(p)
        return {"user": p.public(), "csrf": p.csrf, "now": backend.clock.now(),
                "timezone": backend.config.timezone,
                "features": {"routines": getattr(request.app.state, "routines", None)
                             is not None},
                "residents_in_scope": int(scopes.mask(p).sum()),
                "towns": [{"id": t, "name": names.towns.get(t, t)} for t in towns]}

    @api.get("/health", summary="whether residents are being monitored right now: state ok, "
             "degraded or down, and the problems (every page shows them in a banner)")
    def health(p: Reader) -> dict[str, Any]:
        return backend.monitoring()

    # ---- alerts -------------------------------------------------------------------------
    @api.get("/alerts", summary="open alerts in scope, most urgent first")
    def alerts(p: Reader, include_acknowledged: bool = True) -> dict[str, Any]:
        now = backend.clock.now()
        mask = scopes.mask(p)
        rows = []
        for a in backend.alerts.open_alerts():
            r = backend.devices.row_of_resident.get(a.resident_id)
            if r is None or not mask[r]:
                continue
            if not include_acknowledged and a.state not in ("open", "escalated"):
                continue
            rows.append(alert_row(a, names, now))
        rows.sort(key=board_key)
        return {"now": now, "alerts": rows}

    @api.get("/alerts/{alert_id}", summary="one alert with its events and audit trail")
    def alert(alert_id: AlertId, p: Reader) -> dict[str, Any]:
        a = in_scope_alert(p, alert_id)
        backend.audit(p.actor, "console_view", resident_id=a.resident_id, alert_id=alert_id,
                      detail={"what": "alert"})
        return {"alert": alert_row(a, names, backend.clock.now()),
                "audit": backend.alerts.audit(alert_id)}

    def act(p: Principal, alert_id: str, action: str, note: str | None = None) -> dict[str, Any]:
        in_scope_alert(p, alert_id)
        now = backend.clock.now()
        eng = backend.alerts
        try:
            if action == "ack":
                a = eng.ack_alert(alert_id, p.actor, now)
            elif action == "dispatch":
                a = eng.dispatch_alert(alert_id, p.actor, now)
            else:
                a = eng.resolve_alert(alert_id, p.actor, now, note or "")
        except AlertTransitionError as exc:
            # e.g. someone else acknowledged or resolved it first
            raise ApiError(409, "alert_changed", str(exc)) from exc
        except AlertNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"alert": alert_row(a, names, now)}

    @api.post("/alerts/{alert_id}/ack", summary="acknowledge (stops escalation)")
    def ack(alert_id: AlertId, p: Actor) -> dict[str, Any]:
        return act(p, alert_id, "ack")

    @api.post("/alerts/{alert_id}/dispatch", summary="someone is on the way")
    def dispatch(alert_id: AlertId, p: Actor) -> dict[str, Any]:
        return act(p, alert_id, "dispatch")

    @api.post("/alerts/{alert_id}/resolve", summary="close with a feedback note")
    def resolve(alert_id: AlertId, body: ResolveIn, p: Actor) -> dict[str, Any]:
        return act(p, alert_id, "resolve", body.note)

    # ---- residents ----------------------------------------------------------------------
    @api.get("/residents", summary="residents in scope with a status at a glance")
    def residents(
        p: Reader,
        town: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        status: Literal["alert", "offline", "not_worn", "low_battery", "normal"] | None = None,
        q: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=20000)] = 5000,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        table = ResidentTable(backend, backend.alerts.open_alerts())
        mask = scopes.mask(p).copy()
        counts = {s: int(((table.status == i) & mask).sum()) for i, s in enumerate(STATUSES)}
        if town is not None:
            mask &= scopes.res_town == town
        if status is not None:
            mask &= table.status == STATUSES.index(status)
        if q:
            mask &= ctx.search_mask(q.strip().lower())
        rows = np.flatnonzero(mask)
        # alerts first, then worst severity, then registry order
        order = np.lexsort((rows, -table.open_sev[rows], table.status[rows]))
        rows = rows[order]
        page = rows[offset:offset + limit]
        backend.audit(p.actor, "console_list", detail={
            "town": town, "status": status, "q": q, "offset": offset, "returned": len(page)})
        return {"now": table.snap.now, "total": len(rows), "counts": counts,
                "residents": table.rows(page, names)}

    @api.get("/residents/{resident_id}", summary="one resident's record (audited)")
    def resident(resident_id: ResidentId, p: Reader) -> dict[str, Any]:
        row = in_scope_row(p, resident_id)
        res = names.residents[resident_id]
        snap = backend.snapshot()
        history = backend.alerts.alert_history(resident_id)
        open_now = {a.alert_id: a for a in backend.alerts.open_alerts()
                    if a.resident_id == resident_id}
        now = backend.clock.now()
        alerts_out = []
        for a in reversed(history[-100:]):
            current = open_now.get(a.alert_id, a)
            alerts_out.append({**alert_row(current, names, now),
                               "audit": backend.alerts.audit(a.alert_id)})
        backend.audit(p.actor, "console_view", resident_id=resident_id,
                      detail={"what": "record"})
        return {
            "now": now,
            "resident": resident_facts(res, names),
            "device": device_state(snap, row),
            "thresholds": thresholds_for(backend.config, resident_id),
            "alerts": alerts_out,
            "silences": resident_silences(backend.alerts.silences(), res.id, res.device, now),
        }

    @api.get("/residents/{resident_id}/series", summary="per-minute vitals for the charts")
    def series(resident_id: ResidentId, p: Reader,
               hours: Annotated[float, Query(gt=0, le=24)] = 24.0) -> dict[str, Any]:
        row = in_scope_row(p, resident_id)
        backend.audit(p.actor, "console_view", resident_id=resident_id,
                      detail={"what": "series", "hours": hours})
        return series_view(backend, row, hours, backend.alerts.alert_history(resident_id))

    # ---- silences -----------------------------------------------------------------------
    @api.get("/silences", summary="active silences in scope")
    def silences(p: Reader) -> dict[str, Any]:
        out = [s for s in backend.alerts.silences()
               if s.get("resident_id") and scopes.allows_resident(p, s["resident_id"])]
        return {"silences": out}

    @api.post("/silences", summary="mute a resident (optionally one kind) for a while")
    def silence(body: SilenceIn, p: Actor) -> dict[str, Any]:
        in_scope_row(p, body.resident_id)
        now = backend.clock.now()
        try:
            s = backend.alerts.silence(by=p.actor, reason=body.reason, now=now,
                                       until=now + body.minutes * 60.0,
                                       resident_id=body.resident_id, kind=body.kind)
        except AlertTransitionError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"silence": s}

    @api.delete("/silences/{silence_id}", summary="end a silence early (audited)")
    def unsilence(silence_id: SilenceId, p: Actor) -> dict[str, Any]:
        s = next((x for x in backend.alerts.silences() if x["silence_id"] == silence_id), None)
        if s is None:
            raise HTTPException(404, f"no active silence {silence_id}")
        devices = backend.devices
        row = (devices.row_of_resident.get(s["resident_id"]) if s.get("resident_id")
               else devices.row_of_device.get(s.get("device_id") or ""))
        if row is None or not scopes.allows_row(p, row):
            raise HTTPException(403, "this silence is outside your scope")
        now = backend.clock.now()
        try:
            backend.alerts.unsilence(silence_id, p.actor, now)
        except AlertNotFoundError as exc:  # it expired or was ended meanwhile
            raise HTTPException(404, str(exc)) from exc
        return {"silence": {**s, "active": False, "ended_at": now, "ended_by": p.actor}}

    # ---- live ---------------------------------------------------------------------------
    @api.get("/stream", summary="server-sent events: `alert` rows, `resync` when behind")
    async def stream(request: Request, p: Reader) -> StreamingResponse:
        client = ctx.live.subscribe(scopes.mask(p))
        return StreamingResponse(
            ctx.live.stream(client, ctx.settings.sse_keepalive_s, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return api
