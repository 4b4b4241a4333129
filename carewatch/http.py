"""A small HTTP server for /metrics (Prometheus), /healthz and /readyz.

The console (when enabled) mounts the same handlers; this server keeps `run` observable
with nothing else running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class MetricsServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], dict[str, object]],
        routes: dict[str, Callable[[], tuple[int, bytes, str]]] | None = None,
    ) -> None:
        """`routes`: more GET paths, each answering (status, body, content type)."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._send(200, b'{"status": "ok"}', "application/json")
                elif self.path == "/readyz":
                    checks = outer.ready()
                    ok = all(bool(v) for v in checks.values())
                    self._send(
                        200 if ok else 503,
                        orjson.dumps({"ready": ok, **checks}),
                        "application/json",
                    )
                elif self.path in outer.routes:
                    self._send(*outer.routes[self.path]())
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # access logs would carry nothing useful; errors surface as codes

        self.registry = registry
        self.ready = ready
        self.routes = routes or {}
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-http")

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
