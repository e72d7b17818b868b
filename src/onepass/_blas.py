"""Matrix products on the CPU through NumPy's BLAS (OpenBLAS in NumPy's wheels) rather than torch's (MKL).

Measured on the benchmarks' 2-core AMD EPYC (AVX-512), one thread, float32: 5,000 x 50 records against 2,000
centres in 11.3 ms with NumPy against 26.3 ms with torch; 5,000 x 74 against 2,000 in 17 ms against 30 ms;
against 200 centres 1.0 ms against 1.5 ms. MKL is known to take slow paths on CPUs not made by Intel, and the
k-means update is mostly these products. The choice is fixed (not measured at run time), so that a run and its
resumption multiply alike, bit for bit.

Only while torch computes on one thread (the command line's CSV runs, `--threads 1`): NumPy's BLAS keeps a thread
pool of its own, whose spinning threads and torch's took the cores from each other (the k = 100 update of 10^6
records: 24 s instead of 5.8 s on 2 cores). It is held at one thread for each product, through threadpoolctl when
it is installed, and given back its own count after it (half a microsecond each way), so that the caller's NumPy
keeps its threads; with more torch threads the products stay torch's.

`row_blocks` shares a search's row blocks out over threads of our own (the trainer allows as many as --threads
while the CSV parser holds torch to one: the parser needs its core only part of the time). Each block is the
same product either way, so results do not depend on it. The k = 100 search of a 5,000-record batch against
2,000 centres: 10.4 -> 6.3 ms, the Ward search 7 -> 4 ms; 10^6 records x 50 at k = 100 end to end 6.1 -> 5.1 s.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

_pools: list | None = None  # threadpoolctl's controllers of NumPy's OpenBLAS, found at first use; [] when none
_held = threading.local()   # .on: this thread's products already run with OpenBLAS held at one thread
_block_threads = 1          # threads that `row_blocks` may use (the trainer sets it: `set_block_threads`)
_executor: ThreadPoolExecutor | None = None
_executor_workers = 0


def _openblas_pools() -> list:
    global _pools
    if _pools is None:
        try:
            from threadpoolctl import ThreadpoolController
            _pools = [pool for pool in ThreadpoolController().select(user_api="blas").lib_controllers
                      if pool.internal_api == "openblas"]
        except Exception:  # not installed, or a library it cannot drive: the BLAS keeps its own count
            _pools = []
    return _pools


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for 2-d tensors of one dtype; on the CPU with one torch thread by NumPy's BLAS on one thread (a
    transposed view costs no copy)."""
    if (a.device.type != "cpu" or b.device.type != "cpu" or a.requires_grad or b.requires_grad
            or torch.get_num_threads() != 1):
        return a @ b
    with _one_blas_thread():
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """NumPy's OpenBLAS at one thread inside, its own count given back after; nothing to do where this thread
    already holds it (inside `row_blocks`)."""
    if getattr(_held, "on", False):
        yield
        return
    held = [(pool, n) for pool in _openblas_pools() if (n := pool.get_num_threads()) != 1]
    for pool, _ in held:
        pool.set_num_threads(1)
    _held.on = True
    try:
        yield
    finally:
        _held.on = False
        for pool, n in held:
            pool.set_num_threads(n)


def set_block_threads(n: int) -> int:
    """Let `row_blocks` spread its blocks over n threads; returns the count before. The trainer sets it while
    torch computes on one thread beside a CSV parser, which needs its core only part of the time."""
    global _block_threads
    before, _block_threads = _block_threads, max(1, int(n))
    return before


def row_blocks(n: int, size: int, work: Callable[[int, int], None]) -> None:
    """work(start, stop) for the blocks [0, size), [size, 2 size), ... of n rows. With `set_block_threads` above
    one, while the products are NumPy's (one torch thread, CPU), the blocks are dealt in contiguous runs to that
    many threads (this one and helpers). The blocks are the same either way, and each call must write only its
    own rows, so the result does not depend on the threads (a block's product does depend on its bounds)."""
    blocks = [(s, min(n, s + size)) for s in range(0, n, size)]
    parts = min(_block_threads, len(blocks)) if torch.get_num_threads() == 1 else 1
    if parts <= 1:
        for s, e in blocks:
            work(s, e)
        return
    global _executor, _executor_workers
    if _executor is None or _executor_workers != parts - 1:
        _executor, _executor_workers = ThreadPoolExecutor(parts - 1, thread_name_prefix="onepass-blas"), parts - 1
    runs = [blocks[len(blocks) * p // parts:len(blocks) * (p + 1) // parts] for p in range(parts)]

    def helper(run: list[tuple[int, int]]) -> None:
        _held.on = True  # the calling thread holds OpenBLAS at one thread for the whole call
        try:
            for s, e in run:
                work(s, e)
        finally:
            _held.on = False

    with _one_blas_thread():
        futures = [_executor.submit(helper, run) for run in runs[1:]]
        for s, e in runs[0]:
            work(s, e)
        for f in futures:
            f.result()
