"""The supervisor's watch survives a restart the system refuses (the executable gone
mid-upgrade, out of processes): it tries again with backoff instead of ending, which left
the worker's towns unwatched for good."""

from __future__ import annotations

import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from carewatch.supervisor_http import workers_monitoring
from carewatch.workers import CRASH_LOOP_EXITS, Supervisor
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


class _Subscribed(BaseHTTPRequestHandler):
    """A worker's /readyz saying it is subscribed (the stand-in worker serves none)."""

    def do_GET(self) -> None:
        body = b'{"subscribed": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_crash_looping_worker_is_down_while_its_restarts_run(tmp_path: Path) -> None:
    """Each restart is up again within seconds, shorter than a page waits, so a look at one
    outage at a time never paged: the watch looks at the exits of the last minutes."""
    readyz = ThreadingHTTPServer(("127.0.0.1", 0), _Subscribed)
    server = threading.Thread(target=readyz.serve_forever, name="readyz")
    server.start()
    supervisor = Supervisor([[sys.executable, "-c", "import time; time.sleep(60)"]])
    child = supervisor.children[0]
    look = workers_monitoring(supervisor, "127.0.0.1", [readyz.server_address[1]],
                              [["gufu"]], {"gufu": "古符"})
    supervisor.start()
    try:
        wait_for(lambda: look()["state"] == "ok", 10, what="the worker up")
        for n in range(1, CRASH_LOOP_EXITS + 1):
            pid = supervisor.pids()[0]
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda n=n: child.restarts == n and supervisor.alive()[0], 30,
                     what=f"restart {n}")
            if n < CRASH_LOOP_EXITS:
                assert look()["state"] == "ok"  # a restart or two: the usual quick outage
        m = look()
        assert m["state"] == "down" and supervisor.alive()[0]
        assert "crash-looping: exited 3 times" in m["problems"][0]["detail"]
        assert m["problems"][0]["towns"] == ["古符"]
    finally:
        supervisor.stop()
        readyz.shutdown()
        readyz.server_close()
        server.join(5)
