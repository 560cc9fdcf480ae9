"""Fault injection for the kill tests: a child process that dies at the k-th write of unrolled.io."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from unrolled import io


def killed_at(k: int, fn: Callable[[], object]) -> int:
    """Run ``fn()`` in a forked child that dies (``os._exit``, no cleanup) at fault point ``k`` of
    :mod:`unrolled.io`; returns its exit code (75: it died there; 0: ``fn`` finished before)."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            seen = [0]

            def hook(where: str) -> None:
                seen[0] += 1
                if seen[0] == k:
                    os._exit(75)

            io._fault_hook = hook
            sys.stderr = sys.stdout = open(os.devnull, "w")
            fn()
        finally:
            os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
