"""The routines ("four ones") in the console: /api/routines and the 任务 / 报告 pages.

`mount_routines(app, ctx, routines)` includes `routines.web.router` with the console's own
principal dependencies (so sessions, bearer tokens and CSRF behave as on every other
route), answers 403 for anything outside the principal's scope, and serves the pages
`/tasks` and `/reports`. A task is in scope when the routines' tier rule says so (its owner
or the staff on duty for it, its institution, its town, everyone) or when its resident is
in the principal's console scope, so whoever sees a resident on the board sees their
routines too. Completing a task runs on the pipeline thread (`backend.call`): it may tick
the routines, and a tick's daily checks read the state store, which only that thread may.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from console.auth import actor, reader
from console.context import Ctx
from console.pages import ROUTINE_PAGES, add_signed_in_pages
from console.scope import Principal
from routines.model import Task
from routines.service import Routines
from routines.web import router


def mount_routines(app: FastAPI, ctx: Ctx, routines: Routines) -> None:
    """Add /api/routines/... and the tasks and reports pages to the console app."""

    def resident_in_scope(p: Any, task: Task) -> bool:
        return isinstance(p, Principal) and ctx.scopes.allows_resident(p, task.resident_id)

    app.include_router(router(routines, reader, actor, deny_status=403,
                              scope=resident_in_scope, call=ctx.backend.call))
    app.state.routines = routines

    add_signed_in_pages(app, ctx.auth, ROUTINE_PAGES)
