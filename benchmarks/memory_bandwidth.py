"""This machine's memory bandwidth as the wide sparse stream uses it, one thread (prints JSON).

- stream: a copy of a 512 MiB array (bytes read + written per second), the most the memory gives;
- rows: random 128-byte rows gathered from a 10^6 x 32 float32 table (122 MiB), the linear learner's access at 32
  models: each row is a cache and TLB miss, so this, not the stream figure, bounds a wide sparse update;
- lines: random 4-byte values from a 10^6-long float32 array, one 64-byte cache line each (one model, and
  Vowpal Wabbit's weights).
"""

from __future__ import annotations

import json
import time

import numpy as np


def _best(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def measure() -> dict[str, float]:
    a = np.ones(64 << 20, np.float64)
    b = np.empty_like(a)
    stream = 2 * a.nbytes / _best(lambda: np.copyto(b, a), 5)
    rng = np.random.default_rng(0)
    idx = rng.permutation(1_000_000)
    table, vector = np.ones((1_000_000, 32), np.float32), np.ones(1_000_000, np.float32)
    rows = len(idx) / _best(lambda: np.take(table, idx, axis=0), 3)
    lines = len(idx) / _best(lambda: np.take(vector, idx), 3)
    return {"stream_bytes_per_s": stream, "random_128b_rows_per_s": rows, "random_lines_per_s": lines}


if __name__ == "__main__":
    print(json.dumps(measure()))
