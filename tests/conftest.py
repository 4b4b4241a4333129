"""Shared fixtures: a real Mosquitto on a free loopback port, and test hygiene checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.broker import MosquittoProcess
from tests.district_harness import district  # noqa: F401  (a fixture: run --workers 2)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A running broker; `.stop()` / `.start()` restart it on the same port and data."""
    broker = MosquittoProcess(workdir=tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(autouse=True)
def no_lingering_threads() -> Iterator[None]:
    """Fail a test that leaves threads running (paho loops, writers, timers)."""
    before = set(threading.enumerate())
    yield
    deadline = 5.0
    leftover = []
    for t in threading.enumerate():
        if t in before or not t.is_alive() or (t.daemon and t.name.startswith("asyncio_")):
            continue
        t.join(timeout=deadline)
        if t.is_alive():
            leftover.append(t.name)
    assert not leftover, f"threads left running after the test: {leftover}"


@pytest.fixture(autouse=True)
def fail_on_thread_exceptions() -> Iterator[None]:
    """An exception swallowed by a callback on another thread fails the test."""
    errors: list[str] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        errors.append(
            f"{args.thread.name if args.thread else '?'}: "
            f"{args.exc_type.__name__}: {args.exc_value}"
        )
        previous(args)

    threading.excepthook = hook
    yield
    threading.excepthook = previous
    assert not errors, f"exceptions raised on other threads: {errors}"


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright (closed after the test)."""
    from playwright.sync_api import sync_playwright

    from tests.browser_harness import ARGS, CHROMIUM

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()
