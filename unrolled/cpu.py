"""Process-wide CPU settings for large batches (called by the command-line tool and the benchmarks).

A batch of 10,000 vectors of 500 float32 values is 20 MB. glibc serves blocks that large
with fresh memory mappings and unmaps them when they are freed, so each temporary tensor of
each layer pays about 5,000 page faults on first touch (measurements: docs/performance.md).
It is a hint to the allocator, not a guarantee: glibc's own dynamic threshold sometimes
keeps such blocks anyway, and a fault count taken in a small test process varied from run to
run in both settings, so it is measured by the benchmarks rather than asserted by a unit test.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_MAX_BYTES = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit systems


def keep_freed_memory(trim_bytes: int = 1 << 30) -> bool:
    """Let glibc keep freed blocks of up to 32 MB for reuse instead of returning them to the system.

    Raises the mmap threshold to its maximum and the heap-trim threshold to ``trim_bytes``;
    the process then keeps up to that much freed memory. Returns whether it applied (it is
    a no-op, returning False, where the C library is not glibc).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_MAX_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, trim_bytes))
