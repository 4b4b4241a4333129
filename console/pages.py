"""The console's pages (static files whose scripts call the API) behind sign-in: the same for
a worker's console and the district console (console.gateway)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from config.models import ID_PATTERN
from console.auth import Auth
from console.scope import Scopes

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"/": "board.html", "/residents": "residents.html"}
ROUTINE_PAGES = {"/tasks": "tasks.html", "/reports": "reports.html"}  # with routines only


def add_signed_in_pages(app: FastAPI, auth: Auth, pages: dict[str, str]) -> None:
    """Each of `pages` (path -> file): served to a signed-in principal, else to /login."""

    def page(name: str) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            if auth.principal(request) is None:
                return RedirectResponse("/login", status_code=303)
            return FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})
        return serve

    for path, name in pages.items():
        app.add_api_route(path, page(name), methods=["GET"], include_in_schema=False)


def add_pages(app: FastAPI, auth: Auth, scopes: Scopes) -> None:
    """The sign-in page, the board and resident list, and a resident's page (404 for a
    resident not among `scopes`' devices, 403 outside the principal's scope)."""

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/login", include_in_schema=False)
    def login_page() -> Response:
        return FileResponse(STATIC / "login.html")

    add_signed_in_pages(app, auth, PAGES)

    @app.get("/residents/{resident_id}", include_in_schema=False)
    def resident_page(resident_id: str, request: Request) -> Response:
        p = auth.principal(request)
        if p is None:
            return RedirectResponse("/login", status_code=303)
        if not re.fullmatch(ID_PATTERN.strip("^$"), resident_id) or \
                resident_id not in scopes.devices.row_of_resident:
            return Response("no such resident", status_code=404, media_type="text/plain")
        if not scopes.allows_resident(p, resident_id):
            return Response("outside your scope", status_code=403, media_type="text/plain")
        return FileResponse(STATIC / "resident.html", headers={"Cache-Control": "no-store"})
