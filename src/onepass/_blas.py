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
"""

from __future__ import annotations

import numpy as np
import torch

_pools: list | None = None  # threadpoolctl's controllers of NumPy's OpenBLAS, found at first use; [] when none


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
    held = [(pool, n) for pool in _openblas_pools() if (n := pool.get_num_threads()) != 1]
    for pool, _ in held:
        pool.set_num_threads(1)
    try:
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))
    finally:
        for pool, n in held:
            pool.set_num_threads(n)
