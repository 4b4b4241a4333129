"""Starting and stopping `carewatch run --workers N` (and other CLI processes) in tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

WORKER_STARTED = re.compile(r"carewatch: worker (\d+) started \(pid (\d+)\)")


def start_supervisor(argv: list[str], workers: int) -> tuple[subprocess.Popen[str], dict[int, int]]:
    """Start a supervisor and read its output until every worker has started: (process,
    worker index -> pid). Stops it again if it exits before that."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids: dict[int, int] = {}
    try:
        while len(pids) < workers:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line, "supervisor exited early"
            if m := WORKER_STARTED.match(line):
                pids[int(m.group(1))] = int(m.group(2))
    except BaseException:
        stop_process(proc)
        raise
    return proc, pids


def stop_process(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, wait up to 30 s (then SIGKILL), close its output; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    return proc.returncode


def gone(pid: int) -> bool:
    """The process has exited (a zombie, reparented and not yet reaped, counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def process_report(pids: dict[int, int], proc: subprocess.Popen[str] | None = None) -> str:
    """For a failure message: each pid's state and its threads' kernel wait channels, and
    what the supervisor's pipe (which its workers share) holds unread."""
    lines = []
    for k, pid in sorted(pids.items()):
        base = Path(f"/proc/{pid}")
        try:
            state = next(x for x in (base / "status").read_text().splitlines()
                         if x.startswith("State:"))
            waits = sorted({(t / "wchan").read_text() for t in (base / "task").iterdir()})
        except (FileNotFoundError, StopIteration):
            lines.append(f"worker {k} (pid {pid}): gone")
            continue
        lines.append(f"worker {k} (pid {pid}): {state}; waiting in {', '.join(waits)}")
    if proc is not None and proc.stdout is not None and not proc.stdout.closed:
        os.set_blocking(proc.stdout.fileno(), False)
        try:
            tail = proc.stdout.read() or ""
        except (OSError, TypeError):
            tail = ""
        lines.append("output:\n" + tail[-4000:])
    return "\n".join(lines)
