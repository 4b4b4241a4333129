"""Keep freed NumPy buffers in the C heap instead of giving them back to the kernel.

A detector tick allocates and frees dozens of temporaries of 10-400 KB (an array per
operation over 10,000 devices). Above glibc's mmap threshold each one is a fresh mapping:
the kernel zero-fills it page by page on first touch and unmaps it on free, every tick.
Raising the mmap and trim thresholds lets malloc reuse the same heap pages tick after tick
(measured in docs/benchmarks.md). The heap still shrinks past `trim_bytes` of free top
memory, so a burst does not pin its peak forever.

Only glibc has `mallopt`; elsewhere (musl, macOS) this does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at 32 MiB on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): the
# largest tick temporary (100,000 devices x 5 vitals x 8 bytes = 4 MB) stays below it
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024

_applied: bool | None = None


def keep_heap_pages(mmap_bytes: int = MMAP_THRESHOLD_BYTES,
                    trim_bytes: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Set glibc's mmap and trim thresholds for this process (once; later calls return the
    first result). True when glibc accepted both."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_bytes))
    return _applied
