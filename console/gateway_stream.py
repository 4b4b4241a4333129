"""The district console's live stream: every worker's `/api/stream` merged into one.

One task per worker reads its server-sent events and hands whole `alert` and `resync`
events to the browser's queue; comments and keepalives stay behind. When a worker's stream
breaks (the worker died and is being restarted) its task reconnects with backoff, and each
(re)connection sends the browser a `resync`: the board re-reads what it may have missed.
A browser that falls behind loses rows and gets one `resync`, as from a single console.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from console.federation import WorkerLink

RESYNC = b"event: resync\ndata: {}\n\n"
_CLOSE = b""  # queued to end a stream (server shutdown)


class StreamHub:
    """The open merged streams, so that shutdown can end them (`close`, any thread)."""

    def __init__(self, client: httpx.AsyncClient, workers: list[WorkerLink],
                 queue_max: int, keepalive_s: float,
                 on_row: Callable[[dict[str, Any]], None]) -> None:
        self.client, self.workers = client, workers
        self.queue_max, self.keepalive_s = queue_max, keepalive_s
        self.on_row = on_row  # sees every alert row (the gateway learns who owns it)
        self.retry_s = (0.5, 5.0)  # reconnect backoff: first, most
        self._open: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[bytes]]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            streams = list(self._open)
        for loop, queue in streams:
            with contextlib.suppress(RuntimeError):  # that loop is gone already
                loop.call_soon_threadsafe(_offer_close, queue)

    async def stream(self, headers: dict[str, str], disconnected: Callable[[], Any]
                     ) -> AsyncIterator[bytes]:
        """The text/event-stream body for one browser."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(self.queue_max)
        lagged = [False]
        key = (asyncio.get_running_loop(), queue)
        with self._lock:
            if self._closed:
                return
            self._open.add(key)
        pumps = [asyncio.create_task(self._pump(w, headers, queue, lagged))
                 for w in self.workers]
        try:
            yield b"retry: 5000\n: connected\n\n"
            while True:
                if lagged[0]:
                    lagged[0] = False
                    yield RESYNC
                try:
                    item = await asyncio.wait_for(queue.get(), self.keepalive_s)
                except TimeoutError:
                    if await disconnected():
                        return
                    yield b": keepalive\n\n"
                    continue
                if item == _CLOSE:
                    return
                yield item
        finally:
            with self._lock:
                self._open.discard(key)
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, worker: WorkerLink, headers: dict[str, str],
                    queue: asyncio.Queue[bytes], lagged: list[bool]) -> None:
        def put(item: bytes) -> None:
            if queue.full():
                lagged[0] = True  # the browser re-reads the board instead
                return
            queue.put_nowait(item)

        wait = self.retry_s[0]
        while True:
            try:
                async with self.client.stream(
                        "GET", f"{worker.url}/api/stream", headers=headers,
                        timeout=httpx.Timeout(5.0, read=None)) as resp:
                    if resp.status_code == 200:
                        wait = self.retry_s[0]
                        put(RESYNC)  # whatever happened before this connection: re-read
                        buf = b""
                        async for chunk in resp.aiter_bytes():
                            buf += chunk
                            *events, buf = buf.split(b"\n\n")
                            for event in events:
                                if event.startswith(b"event: alert\n"):
                                    self._seen(event)
                                    put(event + b"\n\n")
                                elif event.startswith(b"event: resync"):
                                    put(RESYNC)
            except httpx.HTTPError:
                pass  # the worker is down or restarting: try again below
            await asyncio.sleep(wait)
            wait = min(self.retry_s[1], wait * 2)

    def _seen(self, event: bytes) -> None:
        _, _, data = event.partition(b"\ndata: ")
        with contextlib.suppress(orjson.JSONDecodeError):
            row = orjson.loads(data)
            if isinstance(row, dict):
                self.on_row(row)


def _offer_close(queue: asyncio.Queue[bytes]) -> None:
    if queue.full():
        queue.get_nowait()  # closing matters more than one row
    queue.put_nowait(_CLOSE)
