"""unrolled.cpu: glibc keeps freed large blocks, so big temporaries stop paying page faults."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from unrolled.cpu import keep_freed_memory
    assert keep_freed_memory()
z = torch.randn(10000, 500)  # 20 MB
z.abs(); z.abs()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    z.abs()  # a new 20 MB tensor each time, freed at once
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc")
def test_keep_freed_memory_removes_the_page_faults_of_large_temporaries():
    def faults(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        return float(out.stdout.strip())

    kept, system = faults("keep"), faults("system")
    assert kept < 100, kept  # the freed block is reused
    assert system > 10 * max(kept, 1), (system, kept)  # glibc's default unmaps it: thousands of faults
