"""Peak RSS of a block starts from the memory in use: pages earlier work freed are returned first."""

from __future__ import annotations

import sys

import psutil
import pytest

from longreach.measure import peak_rss, return_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and VmHWM are Linux's")
def test_a_block_after_freed_fragmented_heap_does_not_count_it():
    process = psutil.Process()
    kept, freed = [], []
    for _ in range(5000):  # 30 KB chunks (far under any mmap threshold) pinned apart by small live objects
        freed.append(bytearray(30_000))
        kept.append(bytearray(64))
    before = process.memory_info().rss
    del freed
    held = process.memory_info().rss
    assert held > before - 50 * 2**20, "glibc keeps the freed holes resident (the state the trim fixes)"
    with peak_rss() as peak:
        bytearray(10)
    assert peak.bytes < held - 100 * 2**20, f"peak {peak.mb:.0f} MiB counts the freed heap ({held / 2**20:.0f} MiB)"
    assert len(kept) == 5000


def test_returning_freed_memory_says_whether_it_could():
    assert return_freed_memory() is sys.platform.startswith("linux")
