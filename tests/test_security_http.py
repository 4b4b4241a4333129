"""Every HTTP endpoint refuses anonymous access, except the operational probes and sign-in.

Routes are enumerated from the apps themselves, so a route added later is covered too.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from carewatch.http import MetricsServer

# reachable without signing in: probes for orchestrators and Prometheus, and the sign-in
# itself. /metrics carries counts only (no ids, no health values): docs/security.md.
PUBLIC = {"/healthz", "/readyz", "/metrics", "/login", "/api/login", "/favicon.ico",
          "/static", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect",
          "/api/docs"}  # the API reference page: no data


def test_metrics_server_serves_only_probes(tmp_path: Path) -> None:
    server = MetricsServer("127.0.0.1", 0, CollectorRegistry(), lambda: {"ok": True})
    server.start()
    try:
        base = f"http://127.0.0.1:{server.address[1]}"
        for path in ("/", "/api/alerts", "/admin", "/metrics/../etc/passwd"):
            assert httpx.get(base + path, timeout=5).status_code == 404
        assert httpx.post(base + "/metrics", timeout=5).status_code in (404, 405, 501)
    finally:
        server.stop()


@pytest.fixture
def console_app(tmp_path: Path) -> Iterator[Any]:
    pytest.importorskip("console.testing")
    from console.testing import Harness

    h = Harness(tmp_path)
    try:
        yield h.app
    finally:
        h.close()


def _routes(app: Any) -> set[tuple[str, str]]:
    """(path, method) of every route: the app's own routes and its OpenAPI paths (which
    include routers, however they are attached)."""
    out = set()
    for route in app.routes:
        for m in getattr(route, "methods", None) or ():
            out.add((str(route.path), str(m)))
    for path, ops in app.openapi().get("paths", {}).items():
        for m in ops:
            out.add((str(path), m.upper()))
    return out


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_console_route_refuses_anonymous_access(console_app: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    checked = 0
    with TestClient(console_app) as client:
        for path, method in sorted(_routes(console_app)):
            if method in ("HEAD", "OPTIONS") or any(
                    path == p or path.startswith(p + "/") for p in PUBLIC):
                continue
            r = client.request(method, _concrete(path), follow_redirects=False, json={},
                               headers={"Accept": "application/json"})
            refused = r.status_code in (401, 403) or (
                r.status_code in (302, 303, 307) and "/login" in r.headers.get("location", ""))
            assert refused, f"{method} {path} answered {r.status_code} to anonymous"
            checked += 1
    assert checked >= 10, f"only {checked} protected routes found: enumeration broken?"
