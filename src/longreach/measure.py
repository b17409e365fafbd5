"""Honest measurements: wall time, the peak resident memory of a block of code and, on a GPU, the peak memory
torch allocated there.

Peak RSS uses Linux's resettable high-water mark (``/proc/self/clear_refs`` then ``VmHWM``); where that
is unavailable it samples RSS from a background thread every few milliseconds (a lower bound). Before a block starts,
the C allocator hands the pages it holds free back to the system (glibc's ``malloc_trim``), so a block's peak starts
from the memory in use, not from what earlier blocks freed: in one process reading InfiniRetri cells of growing
length, the heap kept by earlier cells made the 64K cell's peak 2426 MiB; a fresh process read it in 1451 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

_STATUS = "/proc/self/status"


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> ctypes._CFuncPtr | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> bool:
    """Give the allocator's free pages back to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)  # 1: pages were returned, 0: none were free; either way the heap holds only what is in use
    return True


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _high_water_mark_bytes() -> int:
    with open(_STATUS) as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("VmHWM not found")


def peak_rss_so_far() -> int:
    """This process's peak resident set size in bytes since it started or the last ``peak_rss`` block began (Linux's
    ``VmHWM``); the current RSS where that is unavailable."""
    try:
        return _high_water_mark_bytes()
    except OSError:
        return psutil.Process().memory_info().rss


@dataclass
class Peak:
    """Filled in when the ``peak_rss`` block exits."""

    bytes: int = 0

    @property
    def mb(self) -> float:
        return self.bytes / 2**20


@contextmanager
def peak_rss() -> Iterator[Peak]:
    """Peak resident set size of this process during the block (free allocator pages returned first)."""
    peak = Peak()
    return_freed_memory()
    if _reset_high_water_mark():
        try:
            yield peak
        finally:
            peak.bytes = _high_water_mark_bytes()
        return
    process, stop = psutil.Process(), threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.bytes = max(peak.bytes, process.memory_info().rss)
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()
        peak.bytes = max(peak.bytes, process.memory_info().rss)


@contextmanager
def peak_gpu(device: str) -> Iterator[Peak]:
    """Peak memory allocated by torch on ``device`` (``cuda[:N]``) during the block; stays 0 on ``cpu``."""
    peak = Peak()
    if not device.startswith("cuda"):
        yield peak
        return
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield peak
    finally:
        torch.cuda.synchronize(device)
        peak.bytes = torch.cuda.max_memory_allocated(device)


class Stopwatch:
    """``with Stopwatch() as watch: ...`` then ``watch.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
