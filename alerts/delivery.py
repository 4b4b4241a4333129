"""Notification stages after the outbox: group → send → retry, off the pipeline thread.

Dedup is the outbox's unique key (alerts/store.py); group wait is the outbox's `due_at` (a
group goes out when its earliest notice is due); this module holds the rest, each stage a
small function or class testable alone:

- `group_rows`: due outbox rows → one batch per group (recipient × resident);
- `webhook_body` / `sign`: the JSON body and its HMAC-SHA256 signature;
- `post_webhook`: one HTTP attempt, classified sent / retry (5xx, 408, 429, timeouts,
  connection errors, replies that are not HTTP) / failed (other 4xx, a bad URL: permanent);
- `backoff`: capped exponential backoff with jitter;
- `Dispatcher`: a bounded queue and worker threads; every attempt is recorded in the store
  (a `started` row before the request, the outcome after), so a crash mid-send leaves a record.
  Retry or give up is decided per notice from its own attempts, so a notice grouped with an
  older one keeps its full allowance; an unexpected error counts as a retry, never as nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import os
import queue
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson

from alerts.store import AlertStore, OutboxRow
from carewatch.clock import Clock
from config.secrets import read_secret_file
from config.urls import webhook_url_problem

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-CareWatch-Signature"
TIMESTAMP_HEADER = "X-CareWatch-Timestamp"


def group_rows(rows: list[OutboxRow]) -> list[list[OutboxRow]]:
    """Rows sharing a group key become one batch, in first-seen order."""
    groups: dict[str, list[OutboxRow]] = {}
    for row in rows:
        groups.setdefault(row.group_key, []).append(row)
    return list(groups.values())


def webhook_body(batch: list[OutboxRow]) -> bytes:
    """One JSON document for a batch: every notice in it, oldest first."""
    first = batch[0].payload
    doc = {"carewatch": "v1", "recipient": first.get("recipient"),
           "resident_id": first.get("resident_id"),
           "notifications": [r.payload for r in batch]}
    return orjson.dumps(doc)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def load_secret(path: str | None, env: str | None, what: str = "secret file"
                ) -> bytes | None:
    """A shared secret from a file (stripped; missing or empty: `SecretFileError` naming
    `what`) or else an environment variable."""
    if path:
        return read_secret_file(path, what).encode()
    value = os.environ.get(env or "", "").strip()
    return value.encode() if value else None


def classify(status: int | None) -> str:
    """Outcome of an HTTP status (None: no response, e.g. timeout or refused)."""
    if status is None or status >= 500 or status in (408, 425, 429):
        return "retry"
    if 200 <= status < 300:
        return "sent"
    return "failed"


def post_webhook(url: str, body: bytes, secret: bytes | None, timestamp: str,
                 timeout: float) -> tuple[str, int | None, str]:
    """POST once; return (outcome, HTTP status or None, error text)."""
    # Checked at config load too; here so that no URL can raise out of a send.
    problem = webhook_url_problem(url)
    if problem is not None:
        return "failed", None, f"bad webhook URL {url!r}: expected {problem}"
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
               "User-Agent": "carewatch-alerts/1"}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = int(resp.status)
            return classify(status), status, ""
    except urllib.error.HTTPError as exc:
        return classify(exc.code), exc.code, f"HTTP {exc.code}"
    except http.client.InvalidURL as exc:  # an HTTPException, but no retry will fix it
        return "failed", None, f"bad webhook URL {url!r}: {exc}"
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
        # HTTPException: a reply that is not HTTP (a TLS port, a broken proxy) may be fixed
        reason = getattr(exc, "reason", exc)
        return "retry", None, f"{type(exc).__name__}: {reason}"


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay before retry `attempt` (1-based): min(cap, base·2^(n-1)), jittered to 50–100 %."""
    ceiling = min(cap, base * (2.0 ** max(0, attempt - 1)))
    return ceiling * (0.5 + 0.5 * rng.random())


Sender = Callable[[str, bytes, bytes | None, str, float], tuple[str, int | None, str]]


class Dispatcher:
    """Sends due batches on worker threads; the caller (the engine's tick) never waits."""

    def __init__(self, store: AlertStore, clock: Clock, *, secret: bytes | None,
                 timeout_s: float, retry_base_s: float, retry_cap_s: float, max_attempts: int,
                 workers: int = 2, queue_max: int = 1000, sender: Sender = post_webhook,
                 seed: int | None = None) -> None:
        self.store, self.clock, self.secret = store, clock, secret
        self.timeout_s, self.base, self.cap = timeout_s, retry_base_s, retry_cap_s
        self.max_attempts, self.sender = max_attempts, sender
        self._rng = random.Random(seed)
        self._queue: queue.Queue[list[OutboxRow] | None] = queue.Queue(maxsize=queue_max)
        self._inflight: set[int] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._threads = [threading.Thread(target=self._work, name=f"alerts-send-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def inflight(self) -> set[int]:
        with self._lock:
            return set(self._inflight)

    def offer(self, batch: list[OutboxRow]) -> bool:
        """Queue a batch unless the queue is full (it stays due in the store for the next tick)."""
        ids = [r.outbox_id for r in batch]
        with self._lock:
            if any(i in self._inflight for i in ids):
                return False
            self._inflight.update(ids)
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            with self._lock:
                self._inflight.difference_update(ids)
            return False
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is queued or in flight (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._inflight, timeout)

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            ids = [r.outbox_id for r in batch]
            try:
                self._send(batch, ids)
            except Exception as exc:  # a broken store or sender must not kill the worker
                log.exception("alert delivery failed unexpectedly")
                # Still an attempt: counted and backed off, so it is given up in the end
                # rather than tried again every tick for ever.
                try:
                    self._record(batch, "retry", None, f"{type(exc).__name__}: {exc}")
                except Exception:
                    log.exception("alert delivery outcome not recorded")
            finally:
                with self._idle:
                    self._inflight.difference_update(ids)
                    self._idle.notify_all()

    def _send(self, batch: list[OutboxRow], ids: list[int]) -> None:
        body = webhook_body(batch)
        stamp = f"{self.clock.now():.3f}"
        self.store.record_attempt(ids, self.clock.now(), "started", None, "", None)
        outcome, status, error = self.sender(batch[0].target, body, self.secret, stamp,
                                             self.timeout_s)
        self._record(batch, outcome, status, error)

    def _record(self, batch: list[OutboxRow], outcome: str, status: int | None,
                error: str) -> None:
        """Store one attempt's outcome; a retry is given up, or backed off, row by row."""
        now = self.clock.now()
        results: dict[tuple[str, str, float | None], list[int]] = {}
        with self._lock:  # the rng is shared by the workers
            delays: dict[int, float] = {}  # one draw per attempt number keeps equals together
            for row in batch:
                attempt = row.attempts + 1
                result: tuple[str, str, float | None] = (outcome, error, None)
                if outcome == "retry" and attempt >= self.max_attempts:
                    result = ("failed", f"{error} (gave up after {attempt} attempts)", None)
                elif outcome == "retry":
                    if attempt not in delays:
                        delays[attempt] = backoff(attempt, self.base, self.cap, self._rng)
                    result = ("retry", error, now + delays[attempt])
                results.setdefault(result, []).append(row.outbox_id)
        for (row_outcome, row_error, next_at), ids in results.items():
            if row_outcome != "sent":
                log.warning("webhook %s: %s %s", batch[0].target, row_outcome, row_error)
            self.store.record_attempt(ids, now, row_outcome, status, row_error, next_at)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers after the batches already queued; join them."""
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout)


def notice(reason: str, recipient: str, event: dict[str, Any]) -> dict[str, Any]:
    """One notification payload (an element of the webhook body's `notifications`)."""
    return {"reason": reason, "recipient": recipient, "resident_id": event["resident_id"],
            "alert": event}
