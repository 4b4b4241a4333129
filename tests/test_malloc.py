"""`carewatch.malloc.keep_heap_pages`: freed tick temporaries stay in the heap.

Each case runs in a fresh interpreter, since the setting is process-wide and for good."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, resource, sys
import numpy as np
from carewatch.malloc import keep_heap_pages
applied = keep_heap_pages() if sys.argv[1] == "on" else None
np.ones((5, 10_000)).sum()  # first use maps the heap either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # a tick's worth of 400 KB temporaries, freed each time
    x = np.ones((5, 10_000)); y = x * 2.0; del x, y
print(json.dumps({"applied": applied, "faults": resource.getrusage(
    resource.RUSAGE_SELF).ru_minflt - before, "again": keep_heap_pages()}))
"""


def _probe(mode: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          timeout=60, check=True)
    out: dict[str, object] = json.loads(done.stdout)
    return out


def test_kept_heap_pages_spare_the_page_faults_of_every_big_temporary() -> None:
    off, on = _probe("off"), _probe("on")
    assert on["applied"] is True  # glibc on Linux: the machines CareWatch runs on
    assert on["again"] is True  # idempotent: the first answer stands
    # without it each 400 KB array is a new mapping: ~100 pages faulted per array
    assert int(str(off["faults"])) > 50 * 100
    assert int(str(on["faults"])) < int(str(off["faults"])) // 20


def test_the_cli_keeps_heap_pages_in_every_process() -> None:
    code = ("from carewatch import cli, malloc\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(malloc._applied)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip().splitlines()[-1] == "True"
