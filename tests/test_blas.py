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


def test_row_blocks_on_threads_give_the_blocks_and_results_of_one_thread():
    """Blocks shared out over threads: the same blocks, each once, the same products bit for bit, and NumPy's
    thread count given back; with several torch threads (or one block thread) they run in order here."""
    import threading

    from onepass.algorithms import kmeans as km

    g = torch.Generator().manual_seed(1)
    x = torch.randn(5000, 50, generator=g, dtype=torch.float64)
    C = torch.randn(2000, 50, generator=g, dtype=torch.float64)
    w = torch.rand(2000, generator=g, dtype=torch.float64) + 0.5
    threads, blocks = torch.get_num_threads(), _blas.set_block_threads(1)
    numpy_threads = [p.get_num_threads() for p in _blas._openblas_pools()]
    try:
        torch.set_num_threads(1)
        one = (*km._nearest(x, C), *km._ward_nearest(C, w))
        for n in (2, 3):
            _blas.set_block_threads(n)
            seen, workers = [], set()

            def work(s, e):
                seen.append((s, e))
                workers.add(threading.get_ident())

            _blas.row_blocks(1000, 64, work)
            assert sorted(seen) == [(s, min(1000, s + 64)) for s in range(0, 1000, 64)]
            assert 2 <= len(workers) <= n, "the blocks should be shared out over the threads"
            many = (*km._nearest(x, C), *km._ward_nearest(C, w))
            assert all(torch.equal(a, b) for a, b in zip(one, many))
            assert [p.get_num_threads() for p in _blas._openblas_pools()] == numpy_threads
        torch.set_num_threads(2)
        workers = set()
        _blas.row_blocks(1000, 64, lambda s, e: workers.add(threading.get_ident()))
        assert workers == {threading.get_ident()}  # torch's products on several threads: blocks in order
    finally:
        torch.set_num_threads(threads)
        _blas.set_block_threads(blocks)
