"""Serve the console with uvicorn on a thread (for `carewatch run` and `carewatch demo`)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI

from console.context import Ctx
from console.settings import ConsoleSettings


class ConsoleServer:
    """`start()` returns once listening (port 0 picks a free one); `stop()` joins."""

    def __init__(self, app: FastAPI, host: str, port: int,
                 lifespan: Literal["on", "off"] = "off") -> None:
        """`lifespan="on"` runs the app's lifespan (start-up and shutdown) on the server's
        loop (the district console opens and closes its worker client there)."""
        self.app = app
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan=lifespan,
                                access_log=False, timeout_graceful_shutdown=3,
                                ws="none", loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="console-http")
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # surfaced by start()
            self.error = exc

    def start(self, timeout_s: float = 10.0) -> None:
        self.thread.start()
        # uvicorn offers no start event; poll its flag (bounded) until it listens or fails
        pause = threading.Event()
        for _ in range(int(timeout_s / 0.02)):
            if self.server.started or not self.thread.is_alive():
                break
            pause.wait(0.02)
        if not self.server.started:
            self.stop()
            raise RuntimeError(f"console HTTP server did not start: {self.error!r}")

    @property
    def address(self) -> tuple[str, int]:
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    def stop(self) -> None:
        ctx: Ctx | None = getattr(self.app.state, "ctx", None)
        if ctx is not None:
            ctx.live.close()  # end the event streams so shutdown need not wait for them
        close_streams = getattr(self.app.state, "close_streams", None)
        if close_streams is not None:
            close_streams()  # the district console's merged streams, likewise
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)


def for_service(service: Any, http: tuple[str, int],
                settings: ConsoleSettings | None = None) -> ConsoleServer | None:
    """The console for a Service (None when its pipeline has no AlertEngine: then the
    service serves bare /metrics). Reads of state go through `service.submit`."""
    from alerts.engine import AlertEngine
    from console.app import create_app
    from console.backend import ConsoleBackend

    if not isinstance(service.pipeline.alerts, AlertEngine):
        return None
    try:
        backend = ConsoleBackend.from_pipeline(service.pipeline, service.data_dir,
                                               submit=service.submit, ready=service.ready,
                                               monitoring=service.monitoring)
        app = create_app(backend, settings, routines=getattr(service, "routines", None))
        return ConsoleServer(app, http[0], http[1])
    except BaseException:
        service._close_pipeline()  # the service will not exist to close what it opened
        raise
