"""A local stand-in for InfluxDB 2's write endpoint, for testing the InfluxDB sink.

InfluxDB 2 cannot be installed on this machine, so this server implements the documented
`POST /api/v2/write` contract instead: `Authorization: Token <token>` (401 otherwise),
`org`/`orgID` and `bucket` query parameters (400 if missing, 404 if unknown), `precision`
(ns, us, ms, s; 400 otherwise), `Content-Encoding: gzip`, a body size limit (413), strict
line-protocol parsing (400 with an InfluxDB-style JSON error naming the first bad line;
the whole batch is rejected, as InfluxDB OSS 2 documents), field type conflicts across
writes (422), and 204 on success. Tests can script answers (5xx, 429 with Retry-After,
413, ...) that are returned before normal processing. Parsed points are recorded.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PRECISION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_FLOAT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INT = re.compile(r"^[+-]?\d+i$")
_UINT = re.compile(r"^\d+u$")
_TS = re.compile(r"^-?\d+$")
_TRUE = {"t", "T", "true", "True", "TRUE"}
_FALSE = {"f", "F", "false", "False", "FALSE"}


class LineProtocolError(ValueError):
    def __init__(self, line_no: int, line: str, reason: str) -> None:
        super().__init__(f"unable to parse '{line}': {reason}")
        self.line_no, self.line, self.reason = line_no, line, reason


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | bool | str]
    time_ns: int | None


def _scan(s: str, i: int, stops: str) -> tuple[str, int]:
    """Read an escaped token up to an unescaped char in `stops`; returns (text, index)."""
    out = []
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in stops + "\\":
            out.append(s[i + 1])
            i += 2
            continue
        if c in stops:
            break
        out.append(c)
        i += 1
    return "".join(out), i


def _field_value(raw: str) -> float | int | bool:
    if _INT.match(raw):
        v = int(raw[:-1])
        if not -(2**63) <= v < 2**63:
            raise ValueError(f"integer value out of range: {raw}")
        return v
    if _UINT.match(raw):
        v = int(raw[:-1])
        if v >= 2**64:
            raise ValueError(f"unsigned value out of range: {raw}")
        return v
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if _FLOAT.match(raw):
        return float(raw)
    raise ValueError(f"invalid field value {raw!r}")


def parse_line(line: str, precision: str = "ns") -> Point:
    """One line of line protocol; raises ValueError with the reason."""
    i = 0
    measurement, i = _scan(line, i, ", ")
    if not measurement:
        raise ValueError("missing measurement")
    tags: dict[str, str] = {}
    while i < len(line) and line[i] == ",":
        key, i = _scan(line, i + 1, ",= ")
        if i >= len(line) or line[i] != "=" or not key:
            raise ValueError("missing tag key" if not key else "missing tag value")
        value, i = _scan(line, i + 1, ",= ")
        if not value or (i < len(line) and line[i] == "="):
            raise ValueError(f"invalid tag value for {key!r}")
        tags[key] = value
    if i >= len(line) or line[i] != " ":
        raise ValueError("missing fields")
    i += 1
    fields: dict[str, float | int | bool | str] = {}
    while True:
        key, i = _scan(line, i, ",= ")
        if not key or i >= len(line) or line[i] != "=":
            raise ValueError("missing field key" if not key else f"missing field value for {key!r}")
        i += 1
        if i < len(line) and line[i] == '"':
            j, buf = i + 1, []
            while j < len(line) and line[j] != '"':
                if line[j] == "\\" and j + 1 < len(line) and line[j + 1] in '"\\':
                    j += 1
                buf.append(line[j])
                j += 1
            if j >= len(line):
                raise ValueError(f"unterminated string for field {key!r}")
            fields[key] = "".join(buf)
            i = j + 1
        else:
            j = i
            while j < len(line) and line[j] not in ", ":
                j += 1
            raw = line[i:j]
            if not raw:
                raise ValueError(f"missing field value for {key!r}")
            fields[key] = _field_value(raw)
            i = j
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        break
    time_ns = None
    if i < len(line):
        stamp = line[i + 1:]
        if line[i] != " " or not _TS.match(stamp):
            raise ValueError(f"bad timestamp {stamp!r}")
        time_ns = int(stamp) * PRECISION_NS[precision]
        if not -(2**63) <= time_ns < 2**63:
            raise ValueError("timestamp out of range")
    return Point(measurement, tags, fields, time_ns)


def parse_line_protocol(body: str, precision: str = "ns") -> list[Point]:
    """Every point in a body; comment and blank lines are skipped."""
    points = []
    for n, line in enumerate(body.split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            points.append(parse_line(line, precision))
        except ValueError as exc:
            raise LineProtocolError(n, line, str(exc)) from None
    return points


@dataclass
class Scripted:
    status: int
    retry_after: float | None = None
    body: dict[str, Any] | None = None


@dataclass
class RequestRecord:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    gzip: bool
    body_bytes: int
    status: int = 0
    at: float = field(default_factory=time.monotonic)


class FakeInflux:
    """The server. Use as a context manager, or call start()/stop()."""

    def __init__(self, token: str = "test-token", org: str = "carewatch",
                 buckets: tuple[str, ...] = ("vitals",), max_body_bytes: int = 25 * 1024 * 1024,
                 port: int = 0) -> None:
        self.token, self.org, self.buckets = token, org, set(buckets)
        self.org_id = "0000000000000001"
        self.max_body_bytes = max_body_bytes
        self.points: list[Point] = []
        self.requests: list[RequestRecord] = []
        self._script: deque[Scripted] = deque()
        self._types: dict[tuple[str, str], type] = {}
        self._cond = threading.Condition()
        self._conns: set[socket.socket] = set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        # non-daemon handler threads, joined by server_close() once their sockets are shut
        self._httpd.daemon_threads = False
        self._httpd.block_on_close = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeInflux:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        with self._cond:
            conns = list(self._conns)
        for sock in conns:  # wake handlers idling on keep-alive connections
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeInflux:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, status: int, times: int = 1, retry_after: float | None = None,
               body: dict[str, Any] | None = None) -> None:
        """Answer the next `times` write requests with `status` (before any other check)."""
        with self._cond:
            self._script.extend(Scripted(status, retry_after, body) for _ in range(times))

    def wait_for(self, predicate: Callable[[FakeInflux], bool], timeout: float = 10.0) -> bool:
        """Wait until `predicate(self)` holds (checked after each request)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def statuses(self) -> list[int]:
        with self._cond:
            return [r.status for r in self.requests]

    # ---- request handling ------------------------------------------------------------
    def _answer(self, rec: RequestRecord, body: bytes) -> tuple[int, dict[str, Any] | None,
                                                                  dict[str, str]]:
        with self._cond:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            headers = {}
            if scripted.retry_after is not None:
                headers["Retry-After"] = f"{scripted.retry_after:g}"
            default = {"code": "internal error" if scripted.status >= 500 else "too many requests",
                       "message": f"scripted answer {scripted.status}"}
            return scripted.status, scripted.body or default, headers
        if rec.path != "/api/v2/write":
            return 404, {"code": "not found", "message": "path not found"}, {}
        auth = rec.headers.get("authorization", "")
        if not auth.startswith("Token ") or auth[6:] != self.token:
            return 401, {"code": "unauthorized", "message": "unauthorized access"}, {}
        org = rec.query.get("org") or rec.query.get("orgID")
        if not org:
            return 400, {"code": "invalid", "message": "Please provide either orgID or org"}, {}
        if org not in (self.org, self.org_id):
            return 404, {"code": "not found", "message": f'organization name "{org}" not found'}, {}
        bucket = rec.query.get("bucket")
        if not bucket:
            return 400, {"code": "invalid", "message": "Please provide bucket"}, {}
        if bucket not in self.buckets:
            return 404, {"code": "not found", "message": f'bucket "{bucket}" not found'}, {}
        precision = rec.query.get("precision", "ns")
        if precision not in PRECISION_NS:
            return 400, {"code": "invalid", "message": f"invalid precision {precision!r}"}, {}
        if rec.gzip:
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                return 400, {"code": "invalid", "message": "gzip: invalid header"}, {}
        if len(body) > self.max_body_bytes:
            return 413, {"code": "request too large", "message": "unable to read data: too large",
                         "maxLength": self.max_body_bytes}, {}
        try:
            points = parse_line_protocol(body.decode("utf-8"), precision)
        except UnicodeDecodeError:
            return 400, {"code": "invalid", "message": "body is not UTF-8"}, {}
        except LineProtocolError as exc:
            return 400, {"code": "invalid", "message": str(exc), "line": exc.line_no}, {}
        with self._cond:
            for p in points:
                for k, v in p.fields.items():
                    known = self._types.get((p.measurement, k))
                    if known is not None and known is not type(v):
                        return 422, {"code": "unprocessable entity",
                                     "message": f"failure writing points to database: partial "
                                     f"write: field type conflict: input field \"{k}\" on "
                                     f"measurement \"{p.measurement}\" is type "
                                     f"{type(v).__name__}, already exists as type "
                                     f"{known.__name__}"}, {}
            for p in points:
                for k, v in p.fields.items():
                    self._types[(p.measurement, k)] = type(v)
            self.points.extend(points)
        return 204, None, {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10.0

            def setup(self) -> None:
                super().setup()
                with server._cond:
                    server._conns.add(self.connection)

            def finish(self) -> None:
                with server._cond:
                    server._conns.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                if urlsplit(self.path).path in ("/health", "/ping"):
                    self._send(200, {"name": "influxdb", "status": "pass"}, {})
                else:
                    self._send(404, {"code": "not found", "message": "path not found"}, {})

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                rec = RequestRecord(parts.path, query, headers,
                                    headers.get("content-encoding", "") == "gzip", len(body))
                status, payload, extra = server._answer(rec, body)
                rec.status = status
                with server._cond:
                    server.requests.append(rec)
                self._send(status, payload, extra)
                with server._cond:
                    server._cond.notify_all()

            def _send(self, status: int, payload: dict[str, Any] | None,
                      extra: dict[str, str]) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                if data:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

        return Handler
