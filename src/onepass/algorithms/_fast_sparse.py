"""The linear learner's sparse scores and optimizer step through the C kernel `_sparsestep` (see its source).

Used for CSR batches on the CPU when the extension was built; `None` / False tell the caller to take its torch
path, which computes the same formulas (the two agree to float32 rounding; either is deterministic, so a resume is
exact on the machine that trained).
"""

from __future__ import annotations

import mmap
import weakref

import numpy as np
import torch

try:  # optional, like the CSV reader's _fastcsv: without a C compiler onepass installs without it
    from . import _sparsestep
except ImportError:  # pragma: no cover - depends on the build
    _sparsestep = None

KINDS = {"sgd": 0, "adam": 1, "rmsprop": 2}
# The kernel's scratch, kept between calls (fresh arrays each batch cost their page faults): per width, the
# column -> slot map (all zero between calls); the slots and gradient rows, grown to the largest batch.
_PLACE: dict[int, np.ndarray] = {}
_SCRATCH: dict[str, np.ndarray] = {}


def _scratch(name: str, size: int, dtype) -> np.ndarray:
    have = _SCRATCH.get(name)
    if have is None or have.size < size:
        have = _SCRATCH[name] = np.empty(max(size, 1), dtype=dtype)
    return have


# Rows of the (d, M C) weights and moments are read and written in random order, one TLB miss each on 4 KiB pages:
# on transparent huge pages the 10^6-wide stream's update ran 1.45 x faster (22,600 -> 32,600 records/s at 32
# models, the same loaded machine). Tensors from this size up are moved there once.
HUGE_PAGES_FROM = 64 << 20
_HUGE: set[int] = set()  # data pointers of the tensors already moved


def on_huge_pages(tensors: dict[str, torch.Tensor], names: tuple[str, ...]) -> None:
    """Move tensors[name] (in place in the dict, same values) to memory the kernel may back by huge pages.

    Linux only and only where transparent huge pages are on `madvise` or `always`; elsewhere a no-op copy."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return
    for k in names:
        t = tensors[k]
        if t.data_ptr() in _HUGE or t.nbytes < HUGE_PAGES_FROM or not available(t):
            continue
        buf = mmap.mmap(-1, t.nbytes)
        buf.madvise(mmap.MADV_HUGEPAGE)
        moved = torch.frombuffer(buf, dtype=t.dtype).view(t.shape)  # keeps `buf` alive
        moved.copy_(t)
        tensors[k] = moved
        _HUGE.add(moved.data_ptr())


_ONES: dict[int, tuple[weakref.ref, int, bool]] = {}  # id -> (the tensor, its version, all ones)


def all_ones(t: torch.Tensor) -> bool:
    """Whether every value of t is 1, remembered for this tensor object until it is written to (its version)."""
    seen = _ONES.get(id(t))
    if seen is None or seen[0]() is not t or seen[1] != t._version:
        if len(_ONES) > 64:  # states come and go (tests, merges): forget the dead ones
            for k in [k for k, v in _ONES.items() if v[0]() is None]:
                del _ONES[k]
        seen = _ONES[id(t)] = (weakref.ref(t), t._version, bool((t == 1).all()))
    return seen[2]


def available(*tensors: torch.Tensor) -> bool:
    return _sparsestep is not None and all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)


def _csr(xs: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    crow, col, val = xs.crow_indices(), xs.col_indices(), xs.values()
    if crow.dtype != torch.int64 or col.dtype != torch.int64 or val.dtype != torch.float32:
        return None
    return crow.contiguous().numpy(), col.contiguous().numpy(), val.contiguous().numpy()


def scores(xs: torch.Tensor, W: torch.Tensor) -> torch.Tensor | None:
    """X W for a CSR X, or None where the kernel cannot take it."""
    parts = _csr(xs) if available(W) else None
    if parts is None:
        return None
    n, d = xs.shape
    out = torch.empty(n, W.shape[1], dtype=torch.float32)
    _sparsestep.scores(*parts, W.numpy(), W.shape[1], n, len(parts[1]), d, out.numpy())
    return out


def step(xs: torch.Tensor, G: torch.Tensor, W: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor,
         lr: torch.Tensor, wd: torch.Tensor, l1: torch.Tensor, kinds: np.ndarray, momentum: float, b1: float,
         b2: float, step_number: int) -> bool:
    """One optimizer step, in place, of the rows of W, m1, m2 of the columns present in CSR `xs`, from the loss
    gradient G (n, MC) and per-column lr, wd, l1 and optimizer kind. False where the kernel cannot take it."""
    G, lr, wd, l1 = G.contiguous(), lr.contiguous(), wd.contiguous(), l1.contiguous()
    parts = _csr(xs) if available(G, W, m1, m2, lr, wd, l1) else None
    if parts is None:
        return False
    n, d = xs.shape
    nnz, mc = len(parts[1]), W.shape[1]
    place = _PLACE.get(d)
    if place is None:
        place = _PLACE.setdefault(d, np.zeros(d, dtype=np.int32))
    slots, gacc = _scratch("slots", nnz, np.int64), _scratch("gacc", nnz * mc, np.float32)
    _sparsestep.step(*parts, G.numpy(), W.numpy(), m1.numpy(), m2.numpy(), lr.numpy(), wd.numpy(), l1.numpy(),
                     kinds, place, slots, gacc, mc, n, nnz, d, momentum, b1, b2, 1 - b1 ** step_number,
                     1 - b2 ** step_number)
    return True
