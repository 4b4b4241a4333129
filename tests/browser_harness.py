"""Headless Debian Chromium for browser tests (Playwright with `executable_path`; no download)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# no background networking: this machine's closed network refuses those connections
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian chromium (scripts/bootstrap.sh --with-browser)")


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` on a real uvicorn server on a free loopback port, for a browser: its base URL."""
    from console.server import ConsoleServer

    server = ConsoleServer(app, "127.0.0.1", 0)
    server.start()
    try:
        yield "http://{}:{}".format(*server.address)
    finally:
        server.stop()
