"""Live push: alert events to every connected board, as server-sent events.

The engine calls `publish` on whatever thread changed the alert (the pipeline thread, or a
request thread acting), inside its lock, so publishing never blocks: it hands the row to
each client's event loop with `call_soon_threadsafe`, into a bounded queue. A client that
falls behind loses events and gets one `resync` (the page then re-reads the board).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

CLOSE: dict[str, Any] = {"__close__": True}
RESYNC: dict[str, Any] = {"__resync__": True}


@dataclass(eq=False)
class Client:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]]
    mask: np.ndarray  # rows in scope
    lagged: bool = False
    dropped: int = field(default=0)

    def offer(self, item: dict[str, Any]) -> None:
        """Runs on the client's loop."""
        if item is CLOSE or item is RESYNC:
            if self.queue.full():
                self.queue.get_nowait()  # make room: closing matters more than one row
            self.queue.put_nowait(item)
            return
        if self.queue.full():
            self.dropped += 1
            self.lagged = True
            return
        self.queue.put_nowait(item)


class Broadcaster:
    """Fan-out of enriched alert rows to SSE clients, filtered by each client's scope."""

    def __init__(self, queue_max: int = 500) -> None:
        self.queue_max = queue_max
        self._clients: set[Client] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def subscribe(self, mask: np.ndarray) -> Client:
        client = Client(asyncio.get_running_loop(), asyncio.Queue(self.queue_max), mask)
        with self._lock:
            if self._closed:
                client.queue.put_nowait(CLOSE)
            else:
                self._clients.add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        with self._lock:
            self._clients.discard(client)

    def publish(self, row: dict[str, Any], device_row: int | None) -> None:
        """Offer a row to every client whose scope holds `device_row`. Never blocks."""
        with self._lock:
            targets = [c for c in self._clients
                       if device_row is not None and bool(c.mask[device_row])]
        for c in targets:
            try:
                c.loop.call_soon_threadsafe(c.offer, row)
            except RuntimeError:  # that client's loop is closed: it is going away
                self.unsubscribe(c)

    def close(self) -> None:
        """End every stream (server shutdown)."""
        with self._lock:
            self._closed = True
            clients = list(self._clients)
            self._clients.clear()
        for c in clients:
            with contextlib.suppress(RuntimeError):
                c.loop.call_soon_threadsafe(c.offer, CLOSE)

    async def stream(self, client: Client, keepalive_s: float,
                     disconnected: Callable[[], Any]) -> AsyncIterator[bytes]:
        """The text/event-stream body for one client."""
        try:
            yield b"retry: 5000\n: connected\n\n"
            while True:
                if client.lagged:
                    client.lagged = False
                    yield b"event: resync\ndata: {}\n\n"
                try:
                    item = await asyncio.wait_for(client.queue.get(), keepalive_s)
                except TimeoutError:
                    if await disconnected():
                        return
                    yield b": keepalive\n\n"
                    continue
                if item is CLOSE:
                    return
                if item is RESYNC:
                    yield b"event: resync\ndata: {}\n\n"
                    continue
                yield b"event: alert\ndata: " + orjson.dumps(item) + b"\n\n"
        finally:
            self.unsubscribe(client)
