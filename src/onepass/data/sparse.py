"""A minimal row-sliceable CSR matrix for chunks of sparse records (NumPy only: scipy is not a core dependency).

Readers yield it as `Chunk.x`; batching slices and stacks rows, and hands the result to the algorithms as a
torch sparse CSR tensor, never a dense one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

# torch says so on the first sparse CSR tensor a process makes; the operations onepass uses are tested.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


@dataclass(frozen=True)
class CSR:
    """Rows of a sparse matrix: row r holds columns indices[indptr[r]:indptr[r+1]] with values data[...]."""

    indptr: np.ndarray   # int64, (n + 1,), starts at 0
    indices: np.ndarray  # int64, (nnz,), sorted and unique within a row
    data: np.ndarray     # float32, (nnz,)
    shape: tuple[int, int]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> "CSR":
        """Rows `rows` (a slice with step 1), sharing the arrays' memory."""
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("CSR rows can only be sliced with step 1")
        stop = max(start, stop)
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        return CSR(self.indptr[start:stop + 1] - a, self.indices[a:b], self.data[a:b], (stop - start, self.shape[1]))

    @staticmethod
    def vstack(parts: list["CSR"]) -> "CSR":
        if len(parts) == 1:
            return parts[0]
        ends = np.cumsum([0] + [len(p.data) for p in parts])
        indptr = np.concatenate([parts[0].indptr[:1]] + [p.indptr[1:] + e for p, e in zip(parts, ends)])
        return CSR(indptr, np.concatenate([p.indices for p in parts]), np.concatenate([p.data for p in parts]),
                   (sum(p.shape[0] for p in parts), parts[0].shape[1]))

    def to_torch(self) -> torch.Tensor:
        """A torch sparse CSR tensor (float32, int64 indices) sharing the arrays (no copy)."""
        return torch.sparse_csr_tensor(torch.from_numpy(np.ascontiguousarray(self.indptr)),
                                       torch.from_numpy(np.ascontiguousarray(self.indices)),
                                       torch.from_numpy(np.ascontiguousarray(self.data)), size=self.shape,
                                       check_invariants=False)  # the reader has checked them

    def toarray(self) -> np.ndarray:
        """Dense rows (for tests and small data only)."""
        out = np.zeros(self.shape, dtype=self.data.dtype)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        out[rows, self.indices] = self.data
        return out
