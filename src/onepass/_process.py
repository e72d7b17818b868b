"""Process-wide settings that the command line applies for long streaming runs.

Two costs showed up when parsing threads and compute threads share a few cores (measured on 2 cores,
k-means with K = 2000 summary centres, 10^6 records):

- OpenMP workers that spin while they wait steal the cores from the CSV parser: with torch's default wait
  policy a run took 1.5x to 10x longer. `OMP_WAIT_POLICY=PASSIVE` must be set before torch loads, so
  `onepass/__init__.py` sets it (unless the user has).
- glibc returns freed blocks of a few MiB to the system and faults them in again on the next batch: a
  quarter of the run's time was system time. `tune_allocator` keeps them (a bounded amount: the arena may
  hold up to `trim` bytes that are free).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator(mmap_threshold: int = 32 << 20, trim: int = 256 << 20) -> bool:
    """Serve blocks up to `mmap_threshold` bytes from the heap and keep up to `trim` free bytes in it.

    Returns whether the settings took effect (glibc only; a no-op elsewhere).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
