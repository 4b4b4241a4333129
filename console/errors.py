"""Error answers of the console's API: `{"detail": <English words>, "code": <name>}`.

The pages show an error in the user's language by its `code` (common.js, `e_<code>` in
the zh / en tables) and fall back to `detail` for a code they do not know. A route raises
`ApiError(status, code, detail)` where the reason is more precise than its status (e.g.
`alert_changed`: someone else acted on the alert first); any other HTTPException gets its
status's code (`STATUS_CODES`), and a request the schema refuses gets `invalid` (422, with
`detail` the list of what was wrong, as FastAPI gives it).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "not_allowed", 409: "conflict", 422: "invalid", 429: "locked_out",
                503: "unavailable", 504: "timeout"}


class ApiError(HTTPException):
    """An HTTP error with a `code` naming the reason (the pages word it)."""

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(status_code, detail)
        self.code = code


def code_of(exc: StarletteHTTPException) -> str:
    """The code of `exc`: its own, else its status's."""
    own = getattr(exc, "code", None)
    return own if isinstance(own, str) else STATUS_CODES.get(exc.status_code, "error")


def error_response(status: int, code: str, detail: object,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": jsonable_encoder(detail), "code": code},
                        status_code=status, headers=headers)


def add_error_codes(app: FastAPI) -> None:
    """Answer every HTTP and validation error of `app` with a `code`."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (204, 304) or exc.status_code < 200:  # no body allowed
            return Response(status_code=exc.status_code, headers=exc.headers)
        return error_response(exc.status_code, code_of(exc), exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(422, "invalid", exc.errors())
