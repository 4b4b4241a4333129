"""The supervisor's watch survives a restart the system refuses (the executable gone
mid-upgrade, out of processes): it tries again with backoff instead of ending, which left
the worker's towns unwatched for good."""

from __future__ import annotations

import sys
from pathlib import Path

from carewatch.workers import Supervisor
from tests.ingest_harness import wait_for


def test_a_restart_the_system_refuses_is_tried_again(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.write_text("")
    good = [sys.executable, "-c", f"open({str(runs)!r}, 'a').write('x')"]  # exits at once
    supervisor = Supervisor([good])
    child = supervisor.children[0]
    supervisor.start()
    try:
        child.argv = [str(tmp_path / "python-being-upgraded"), *good[1:]]
        wait_for(lambda: child.spawn_failures >= 1, timeout_s=30, what="a refused restart")
        assert supervisor._thread.is_alive()  # still watching
        child.argv = good
        wait_for(lambda: len(runs.read_text()) >= 2, timeout_s=60,
                 what="the worker started again once it could be")
        assert child.restarts >= 1
    finally:
        supervisor.stop()
