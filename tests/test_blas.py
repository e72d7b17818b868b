"""onepass._blas: CPU products through NumPy's BLAS while torch runs one thread, torch's otherwise."""

import torch

from onepass import _blas


def test_products_agree_with_torch_and_repeat_exactly():
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    numpy_threads = [p.get_num_threads() for p in _blas._openblas_pools()]
    try:
        for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
            a = torch.randn(300, 51, generator=g, dtype=dtype)
            b = torch.randn(200, 51, generator=g, dtype=dtype)
            torch.set_num_threads(1)
            got = _blas.matmul(a, b.T)  # a transposed view, as the k-means search passes it
            assert got.dtype == dtype and got.shape == (300, 200)
            assert torch.allclose(got, a @ b.T, rtol=tol, atol=tol * 51)
            assert torch.equal(got, _blas.matmul(a, b.T))  # the same product twice: the same bits
            assert [p.get_num_threads() for p in _blas._openblas_pools()] == numpy_threads  # given back
            torch.set_num_threads(2)
            assert torch.equal(_blas.matmul(a, b.T), a @ b.T)  # several torch threads: torch's own product
    finally:
        torch.set_num_threads(threads)
