"""The InfluxDB 2 history sink, on influxdb-client's batching write API.

Samples go: pipeline -> bounded row queue (base) -> this sink's thread, which encodes line
protocol and cuts it into request bodies of `batch_size` lines (at least every
`flush_interval_ms`) -> influxdb-client's batching `WriteApi`, which posts them (gzip),
retrying 429 and 5xx with exponential backoff and honouring `Retry-After`.

Each body is handed to the WriteApi as one record, so its rx pipeline is configured with
`batch_size=1`: batching per line inside rx costs far more CPU per point than encoding it.
What the library gives up on is not lost at once: a retryable failure (5xx, 429,
connection refused) is kept and resubmitted with our own backoff, a 413 is split in
halves, and only permanent answers (400 bad data, 401, 403, 404, 422) drop the body,
counted in `dropped_failed`/`failed_batches`. Rows in flight or kept for retry are
bounded by `queue_max`; past that the front queue fills and new samples are dropped and
counted, so a dead server never costs unbounded memory nor stalls the pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, cast

from influxdb_client import InfluxDBClient, WriteOptions, WritePrecision
from influxdb_client.client.write_api import WriteApi, WriteType
from influxdb_client.rest import ApiException
from reactivex.scheduler import ThreadPoolScheduler

from config.models import InfluxSinkSettings
from config.secrets import read_secret_file
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns
from ingest.sinks.base import BackgroundSink, StatValue
from ingest.sinks.lineproto import encode_lines, tag_prefixes

log = logging.getLogger(__name__)

PERMANENT = {400, 401, 403, 404, 422}


def read_token(path: str | None) -> str | None:
    """The API token from `token_file` (surrounding whitespace stripped), or None; a
    missing or empty file is a `SecretFileError` naming the setting."""
    if not path:
        return None
    return read_secret_file(path, "storage.influxdb.token_file")


class InfluxSink(BackgroundSink):
    """Writes samples to InfluxDB 2 (`/api/v2/write`). Starts on construction."""

    name = "influxdb"

    def __init__(
        self,
        settings: InfluxSinkSettings,
        devices: DeviceTable,
        *,
        token: str | None = None,
        precision: str = "ms",
        retry_interval_ms: int = 1000,
        max_retry_delay_ms: int = 8_000,
        max_retry_time_ms: int = 15_000,
        resubmit_min_s: float = 1.0,
        resubmit_max_s: float = 60.0,
        close_wait_s: float = 5.0,
    ) -> None:
        if precision not in ("s", "ms"):
            raise ValueError("precision must be 's' or 'ms'")
        super().__init__(queue_max=settings.queue_max, batch_max=settings.batch_size,
                         linger_s=0.0)
        self.settings = settings
        self.precision = precision
        # WritePrecision's members are plain strings; the client's stubs want the class
        self._wp = cast(WritePrecision, WritePrecision.S if precision == "s" else WritePrecision.MS)
        self._prefixes = tag_prefixes(devices)
        self._limit = settings.queue_max  # rows in flight + kept for retry
        self._lock = threading.Lock()
        self._inflight = 0
        self._retry: deque[tuple[float, bytes, int]] = deque()  # (due, body, lines)
        self._retry_rows = 0
        self._resubmit_min, self._resubmit_max = resubmit_min_s, resubmit_max_s
        self._backoff = resubmit_min_s
        self._close_wait_s = close_wait_s
        self.close_timeout_s = close_wait_s + 5.0
        self._pending: list[bytes] = []
        self._pending_since = 0.0
        self._scheduler = ThreadPoolScheduler(max_workers=1)
        self._client = InfluxDBClient(
            url=settings.url,
            token=(token if token is not None else read_token(settings.token_file)) or "",
            org=settings.org, timeout=settings.timeout_ms, enable_gzip=settings.gzip)
        options = WriteOptions(
            write_type=WriteType.batching, batch_size=1, flush_interval=settings.flush_interval_ms,
            retry_interval=retry_interval_ms, max_retries=settings.max_retries,
            max_retry_delay=max_retry_delay_ms, max_retry_time=max_retry_time_ms,
            exponential_base=2, max_close_wait=int(close_wait_s * 500),
            write_scheduler=self._scheduler)
        self._write_api: WriteApi = self._client.write_api(
            write_options=options, success_callback=self._on_success,
            error_callback=self._on_error, retry_callback=self._on_retry)
        self.start()

    # ---- callbacks (influxdb-client's threads) ---------------------------------------
    @staticmethod
    def _lines(data: Any) -> int:
        body = data if isinstance(data, bytes) else str(data).encode()
        return body.count(b"\n") + 1

    def _on_success(self, conf: tuple[str, str, str], data: Any) -> None:
        n = self._lines(data)
        with self._lock:
            self._inflight -= n
            self._backoff = self._resubmit_min
        self._release(n, written=True)
        self._clear_error()

    def _on_retry(self, conf: tuple[str, str, str], data: Any, exc: Exception) -> None:
        self._count("retries")
        self._note_error(f"retrying: {_describe(exc)}")

    def _on_error(self, conf: tuple[str, str, str], data: Any, exc: Exception) -> None:
        body = data if isinstance(data, bytes) else str(data).encode()
        n = self._lines(body)
        self._count("failed_batches")
        self._note_error(_describe(exc))
        status = exc.status if isinstance(exc, ApiException) else None
        with self._lock:
            self._inflight -= n
            if status == 413 and n > 1:
                # too large for this server: resubmit in halves right away
                lines = body.split(b"\n")
                half = len(lines) // 2
                now = time.monotonic()
                for part in (lines[:half], lines[half:]):
                    self._retry.append((now, b"\n".join(part), len(part)))
                self._retry_rows += n
                return
            if status in PERMANENT or status == 413:
                permanent = True
            else:
                permanent = False
                self._retry.append((time.monotonic() + self._backoff, body, n))
                self._retry_rows += n
                self._backoff = min(self._resubmit_max, self._backoff * 2)
        if permanent:
            log.error("influxdb rejected %d samples for good: %s", n, _describe(exc))
            self._release(n, written=False)
        with self._cond:
            self._cond.notify_all()

    # ---- worker thread ---------------------------------------------------------------
    def _accepting(self) -> bool:
        return self._inflight + self._retry_rows + len(self._pending) < self._limit

    def _extra_stats(self) -> dict[str, StatValue]:
        return {"in_flight": self._inflight, "retry_waiting": self._retry_rows}

    def _process(self, batch: SampleColumns) -> None:
        lines = encode_lines(batch, self._prefixes, self.precision)
        empty = len(batch) - len(lines)
        if empty:  # no field to write (a heartbeat): nothing to store, and nothing lost
            self._release(empty, written=False, counted_as="skipped_empty")
        if lines and not self._pending:
            self._pending_since = time.monotonic()
        self._pending.extend(lines)
        self._submit(force=False)

    def _maintain(self) -> None:
        self._submit(force=self._flushing > 0 or self._stopping)
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._retry or self._retry[0][0] > now:
                    break
                _, body, n = self._retry.popleft()
                self._retry_rows -= n
                self._inflight += n
            self._count("retries")
            self._write_api.write(self.settings.bucket, self.settings.org, record=body,
                                  write_precision=self._wp)

    def _submit(self, force: bool) -> None:
        size = self.settings.batch_size
        due = time.monotonic() - self._pending_since >= self.settings.flush_interval_ms / 1000
        while self._pending and (len(self._pending) >= size or force or due):
            chunk, self._pending = self._pending[:size], self._pending[size:]
            with self._lock:
                self._inflight += len(chunk)
            self._write_api.write(self.settings.bucket, self.settings.org,
                                  record=b"\n".join(chunk), write_precision=self._wp)
            self._pending_since = time.monotonic()

    def _finish(self) -> None:
        self._submit(force=True)
        # half of close_wait_s here, the other half inside WriteApi.close()
        deadline = time.monotonic() + self._close_wait_s / 2
        with self._cond:  # let in-flight requests finish; kept-for-retry bodies are given up
            while self._inflight > 0 and time.monotonic() < deadline:
                self._cond.wait(0.05)
        stuck = self._inflight > 0
        if stuck:
            log.warning("influxdb sink closing with %d samples still in flight (server down?)",
                        self._inflight)
        try:
            self._write_api.close()
        finally:
            self._client.close()
            # a request still retrying inside urllib3 ends by itself within max_retry_time
            self._scheduler.executor.shutdown(wait=not stuck, cancel_futures=True)
        with self._lock:
            self._retry.clear()
            self._retry_rows = 0


class _OncePer(logging.Filter):
    """Passes one record per `every_s` per logger: an outage must not flood the log."""

    def __init__(self, every_s: float = 10.0) -> None:
        super().__init__()
        self._every = every_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last.get(record.name, -float("inf")) < self._every:
            return False
        self._last[record.name] = now
        return True


_QUIET = _OncePer()
for _name in ("influxdb_client.client.write.retry", "influxdb_client.client.write_api"):
    # the client logs every retry and failed batch; the sink counts them in stats()
    logging.getLogger(_name).addFilter(_QUIET)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}: {(exc.body or '')[:200]!s}"
    return f"{type(exc).__name__}: {exc}"[:300]
