"""FastAPI routes for tasks and reports, for the console to mount.

    app.include_router(routines.web.router(routines, reader, actor))

`reader` / `actor` are the console's FastAPI dependencies returning the signed-in principal
(anything with `staff_id`, `tier`, `town`, `institution` and `actor`); `actor` also checks
CSRF. Scope follows the console's tiers: tier 1 sees the tasks it owns or is on duty for,
tier 2 its institution's, tier 3 its town's, tier 4 everything. Reports: tier 3 gets its
town's part, tier 4 the whole; tiers 1-2 get the towns their institution serves.

Options for the console: `deny_status` answers a request for something that exists outside
the principal's scope (404 by default: existence not revealed; the console uses 403 like
its other routes); `scope(p, task)` widens task scope (the console adds its own resident
scope); `call(fn)` runs a completion where the state store may be read (it can tick).
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from config.models import Config
from console.errors import ApiError
from routines.alertdata import AlertData
from routines.html import render_html
from routines.model import OUTCOMES, Task, TaskError, TaskInputError, TaskNotFoundError
from routines.reports import AlertHistory, TaskHistory, build_report
from routines.service import Routines

LABEL = r"^\d{4}-\d{2}(-\d{2})?$"


class CompleteIn(BaseModel):
    outcome: str = Field("ok", description=f"one of {OUTCOMES}")
    notes: str = Field(min_length=1, max_length=4000)
    hazard: str | None = Field(None, max_length=2000)
    hazard_severity: Literal["low", "medium", "high", "critical"] = "high"


def _in_scope(p: Any, t: Task) -> bool:
    tier = int(p.tier)
    if tier >= 4:
        return True
    if tier == 3:
        return p.town is not None and t.town_id == p.town
    if tier == 2:  # staff not yet linked to an institution see none, not the unlinked
        return p.institution is not None and t.institution_id == p.institution
    return t.owner == p.staff_id or p.staff_id in t.on_duty


def _report_towns(config: Config, p: Any) -> list[str] | None:
    """Towns whose report this principal may read (None: the whole district)."""
    tier = int(p.tier)
    if tier >= 4:
        return None
    if tier == 3:
        return [p.town] if p.town else []
    inst = {i.id: i.towns for i in config.institutions}
    return list(inst.get(p.institution or "", []))


def _institutions_in_scope(config: Config, p: Any) -> set[str] | None:
    """Institution ids whose tasks this principal may list (None: all)."""
    tier = int(p.tier)
    if tier >= 4:
        return None
    if tier == 3:
        served = {i.id for i in config.institutions if p.town in i.towns}
        return served | {r.institution for r in config.residents
                         if r.town == p.town and r.institution}
    return {p.institution} if p.institution else set()


def my_scope_doc(config: Config, p: Any) -> dict[str, Any]:
    """What this principal may filter by: report towns (and the district), institutions."""
    town_names = {t.id: t.name or t.id for t in config.towns}
    towns = _report_towns(config, p)
    insts = _institutions_in_scope(config, p)
    return {"district": towns is None,
            "towns": [{"id": t, "name": town_names.get(t, t)}
                      for t in (town_names if towns is None else towns)],
            "institutions": [{"id": i.id, "name": i.name or i.id} for i in config.institutions
                             if insts is None or i.id in insts]}


def report_for(config: Config, store: TaskHistory, data: AlertHistory, p: Any, label: str,
               town: str | None, now: float) -> dict[str, Any]:
    """The report `label` (a local day YYYY-MM-DD or month YYYY-MM) as principal `p` may
    read it: the district for tier 4, else only the towns in their scope; `town` narrows
    it to one town. HTTPException (403/404/422) otherwise."""
    kind = "day" if len(label) == 10 else "month"
    towns = _report_towns(config, p)
    if towns is not None and not towns:
        raise HTTPException(403, "no report in your scope")
    if town is not None:
        if town not in {t.id for t in config.towns}:
            raise HTTPException(404, f"no town {town}")
        if towns is not None and town not in towns:
            raise HTTPException(403, f"town {town} is outside your scope")
    keep = [town] if town is not None else towns  # None: the whole district
    try:
        return build_report(config, store, data, kind, label, now, towns=keep)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


def report_page(rep: dict[str, Any], town: str | None) -> str:
    """A report document as its HTML page (one town's when the district is not shown)."""
    if rep["district"] is None:
        town = town if town in rep["towns"] else next(iter(rep["towns"]))
    return render_html(rep, town)


def router(routines: Routines, reader: Callable[..., Any], actor: Callable[..., Any],
           alert_data: AlertData | None = None, *, deny_status: int = 404,
           scope: Callable[[Any, Task], bool] | None = None,
           call: Callable[[Callable[[], Task]], Task] | None = None) -> APIRouter:
    """Routes under /api/routines (JSON) and /api/routines/reports/... (HTML too)."""
    api = APIRouter(prefix="/api/routines", tags=["routines"])
    Reader = Annotated[Any, Depends(reader)]
    Actor = Annotated[Any, Depends(actor)]
    data = alert_data or routines.alert_data or AlertData(
        routines.config.storage.data_dir + "/" + routines.config.alerts.db_file)
    town_names = {t.id: t.name or t.id for t in routines.config.towns}
    inst_names = {i.id: i.name or i.id for i in routines.config.institutions}
    res_names = {r.id: r.name or r.id for r in routines.config.residents}
    staff_names = {s.id: s.name or s.id for s in routines.config.staff}

    def allowed(p: Any, t: Task) -> bool:
        return _in_scope(p, t) or (scope is not None and scope(p, t))

    def denied(what: str) -> HTTPException:
        if deny_status == 404:
            return HTTPException(404, f"no {what}")
        return HTTPException(deny_status, f"{what} is outside your scope")

    @api.get("/scope")
    def my_scope(p: Reader) -> dict[str, Any]:
        """What this principal may filter by: report towns (and the district), institutions."""
        return my_scope_doc(routines.config, p)

    def doc(t: Task, now: float) -> dict[str, Any]:
        out = t.to_doc()
        out["overdue"] = t.overdue(now)
        # names for the pages (ids stay the keys)
        out["resident_name"] = res_names.get(t.resident_id, t.resident_id)
        out["town_name"] = town_names.get(t.town_id, t.town_id)
        out["institution_name"] = inst_names.get(t.institution_id or "")
        out["owner_name"] = staff_names.get(t.owner or "")
        return out

    @api.get("/tasks")
    def tasks(p: Reader,
              view: Literal["mine", "overdue", "open", "institution"] = "mine",
              institution: str | None = None) -> dict[str, Any]:
        """My tasks today, overdue tasks, all open tasks, or one institution's. `mine` for a
        tier above `routines.max_tier` (by default the district) is empty by design and
        carries a `note` with the overdue count in scope."""
        now = routines.clock.now()
        if view == "mine":
            found = routines.my_tasks(p.staff_id, now)
        elif view == "overdue":
            found = routines.overdue(now)
        else:
            found = routines.open_tasks()
        if view == "institution" and institution is not None:
            if institution not in inst_names:
                raise HTTPException(404, f"no institution {institution}")
            insts = _institutions_in_scope(routines.config, p)
            if insts is not None and institution not in insts:
                raise denied(f"institution {institution}")
        found = [t for t in found if allowed(p, t)]
        if view == "institution" and institution is not None:
            found = [t for t in found if t.institution_id == institution]
        out: dict[str, Any] = {"now": now, "view": view, "tasks": [doc(t, now) for t in found]}
        max_tier = routines.settings.max_tier
        if view == "mine" and int(p.tier) > max_tier:
            # Tasks escalate no higher than max_tier, so this tier never answers for one: say
            # so (and how many are overdue in scope) rather than show a list that looks idle.
            out["note"] = {"reason": "above_max_tier", "max_tier": max_tier,
                           "overdue": sum(1 for t in routines.overdue(now) if allowed(p, t))}
        return out

    @api.get("/tasks/{task_id}")
    def task(task_id: str, p: Reader) -> dict[str, Any]:
        try:
            t = routines.get(task_id)
        except TaskNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        if not allowed(p, t):
            raise denied(f"task {task_id}")
        return {"task": doc(t, routines.clock.now()), "log": routines.log(task_id)}

    @api.post("/tasks/{task_id}/complete")
    def complete(task_id: str, body: CompleteIn, p: Actor) -> dict[str, Any]:
        try:
            t = routines.get(task_id)
            if not allowed(p, t):
                raise denied(f"task {task_id}")

            def finish() -> Task:
                return routines.complete(task_id, by=p.actor, now=routines.clock.now(),
                                         outcome=body.outcome, notes=body.notes,
                                         hazard=body.hazard,
                                         hazard_severity=body.hazard_severity)

            done = finish() if call is None else call(finish)
        except TaskNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except TaskInputError as exc:  # bad input, as an empty note is to the model: 422
            raise ApiError(422, exc.code, str(exc)) from exc
        except TaskError as exc:  # the task's state refuses it (already closed, missed)
            raise ApiError(409, exc.code, str(exc)) from exc
        return {"task": doc(done, routines.clock.now())}

    def _report(p: Any, label: str, town: str | None = None) -> dict[str, Any]:
        return report_for(routines.config, routines.store, data, p, label, town,
                          routines.clock.now())

    @api.get("/reports/{label}")
    def report_json(label: Annotated[str, PathParam(pattern=LABEL)], p: Reader,
                    town: str | None = None) -> dict[str, Any]:
        """The supervision report of a local day (YYYY-MM-DD) or month (YYYY-MM); `town`
        narrows it to one town's part."""
        return _report(p, label, town)

    @api.get("/reports/{label}/html", response_class=HTMLResponse)
    def report_html(label: Annotated[str, PathParam(pattern=LABEL)], p: Reader,
                    town: str | None = None) -> HTMLResponse:
        return HTMLResponse(report_page(_report(p, label, town), town))

    return api
