"""In-memory sources: data a Python user already holds, read as a `Stream` reads files.

    Stream(X)                     # a NumPy array, a SciPy sparse matrix or a torch tensor (rows are records)
    Stream((X, y)) / Stream((X, y, w))
    Stream([X0, X1, ...])         # pieces: arrays, (X, y[, w]) tuples or `Batch`es, from a list or any iterable
    Stream(batch_generator())     # an iterator: read once, like standard input

A whole array is read in slices of rows, and a checkpoint's position is a row, so `--resume` continues at the exact
next record. A list (or any iterable whose `iter` starts afresh) is read piece by piece, and a position is the piece
and the records to skip in it: resume reads the pieces again and skips what was trained. An iterator can be read
once and cannot seek: `train` then says that the records read before the checkpoint are not read again, as it
does for standard input.

Labels: from a tuple's `y`, from a `Batch`'s `y`, or from a column of a dense X named by `label_column` (and
`weight_column`, `columns`), as for a NumPy file. Records are checked as a file's are: a value that is not finite
is an error naming the row (or left out and counted with on_bad_record="skip").
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ..errors import DataError, UsageError
from .chunks import Chunk, checked_rows, resolve_columns
from .sources import Input
from .sparse import CSR

SLICE_ROWS_BYTES = 1 << 24  # an array is cut into slices of about this many bytes of float32 features


def holds(source: Any) -> bool:
    """Whether `source` is data in memory rather than paths or URLs (a str, a path, or a list of those)."""
    if isinstance(source, (str, os.PathLike)):
        return False
    if isinstance(source, (list, tuple)) and all(isinstance(s, (str, os.PathLike)) for s in source):
        return False  # a list of paths (an empty list is refused by the path resolver, naming it)
    return True


@dataclass
class Source:
    """What an in-memory `Input` reads: one whole table (x, y, w), or pieces."""

    table: tuple[Any, Any, Any] | None
    pieces: Iterable | None
    name: str

    @property
    def seekable(self) -> bool:
        return self.table is not None or _restartable(self.pieces)

    rereadable = seekable


def as_input(source: Any) -> Input:
    """An `Input` for an in-memory source; refuses what cannot be read as records."""
    table = _table(source)
    if table is not None:
        x = table[0]
        name = f"<in-memory {type(x).__name__} of {x.shape[0]:,} x {x.shape[1]:,}>"
        if _is_sparse(x):  # sliced by rows: as a CSR once
            table = (_csr(x),) + table[1:]
        return Input(name, None, memory=Source(table, None, name))
    try:
        iter(source)
    except TypeError:
        raise UsageError(f"cannot read records from a {type(source).__name__}: give a path, a NumPy array, a SciPy "
                         "sparse matrix, a torch tensor, an (X, y) tuple, or an iterable of those or of Batches"
                         ) from None
    kind = "list" if _restartable(source) else "iterator"
    name = f"<in-memory {kind} of pieces>"
    return Input(name, None, memory=Source(None, source, name))


def first_is_sparse(inp: Input) -> bool | None:
    """Whether the source's records are sparse: a table's kind, or a restartable source's first piece (an
    iterator is not looked into: taken as dense, and a sparse piece in it is then refused)."""
    src: Source = inp.memory
    if src.table is not None:
        return _is_sparse(src.table[0])
    if not _restartable(src.pieces):
        return None
    for piece in src.pieces:
        return _is_sparse(_piece(piece)[0])
    return None


def read(inp: Input, file_index: int, *, label: str | int | None = None, start: int = 0,
         weight: str | int | None = None, columns: list[str | int] | None = None, bad=None,
         **_: Any) -> Iterator[Chunk]:
    """Chunks from row `start` (a table) or piece `start` (pieces) on; offsets count rows or pieces."""
    src: Source = inp.memory
    if src.table is not None:
        x, y, w = src.table
        step = max(1, SLICE_ROWS_BYTES // (4 * max(1, x.shape[1])))
        for r in range(start, x.shape[0], step):
            yield _chunk(inp.path, file_index, (x[r:r + step], _rows(y, r, step), _rows(w, r, step)), r, r,
                         min(1.0, (r + step) / x.shape[0]), label, weight, columns, bad)
        return
    pieces = iter(src.pieces)
    if start:
        if not _restartable(src.pieces):
            raise UsageError(f"{inp.path}: an iterator cannot go back to piece {start}")
        pieces = itertools.islice(pieces, start, None)
    row = 0
    for i, piece in enumerate(pieces, start):
        chunk = _chunk(inp.path, file_index, _piece(piece, i), i, row, 0.0, label, weight, columns, bad)
        row += len(chunk) + len(chunk.bad or ())
        yield chunk


def _chunk(name: str, file_index: int, table, offset: int, row: int, fraction: float, label, weight, columns,
           bad) -> Chunk:
    """One chunk of records (x, y, w), checked as a file's records are."""
    x, y, w = table
    if _is_sparse(x):
        if label not in (None, "none") or weight is not None or columns:
            raise UsageError(f"{name}: sparse records have no columns to take a label, a weight or features from; "
                             "give the labels as (X, y)")
        csr = _csr(x)
        y, w = _vector(y, len(csr), name, "labels"), _vector(w, len(csr), name, "weights")
        for v, what in ((csr.data, "value"), (y, "label"), (w, "weight")):
            if v is not None and not np.isfinite(v).all():
                raise DataError(f"a {what} is not finite", source=name, row=row, reason="not finite")
        return Chunk(csr, y, file_index, offset, 0, row, fraction, w, None)
    x = _dense(x, name)
    if label not in (None, "none") or weight is not None or columns:
        if y is not None or w is not None:
            raise UsageError(f"{name}: labels or weights were given both as arrays and as columns")
        y_col, w_col, x_cols = resolve_columns(label, weight, [str(i) for i in range(x.shape[1])], name, columns)
        y = x[:, y_col] if y_col is not None else None
        w = x[:, w_col] if w_col is not None else None
        x = np.ascontiguousarray(x[:, x_cols])
    y, w = _vector(y, len(x), name, "labels"), _vector(w, len(x), name, "weights")
    x, y, w, events = checked_rows(x, y, w, name, row, skip=bad is not None)
    return Chunk(x, y, file_index, offset, 0, row, fraction, w, events)


def _table(source: Any) -> tuple[Any, Any, Any] | None:
    """(x, y, w) when `source` is one whole table: an array-like, or a tuple of one with its labels (weights)."""
    if _is_matrix(source):
        return source, None, None
    if isinstance(source, tuple) and 2 <= len(source) <= 3 and _is_matrix(source[0]) \
            and not any(_is_matrix(v) for v in source[1:]):
        return (source + (None,))[:3]
    return None


def _piece(piece: Any, i: int | None = None) -> tuple[Any, Any, Any]:
    from .batches import Batch  # batches imports this module

    if isinstance(piece, Batch):
        return piece.x, piece.y, piece.w
    table = _table(piece)
    if table is None:
        raise UsageError(f"piece {i} of an in-memory source is a {type(piece).__name__}: expected an array, an "
                         "(X, y[, w]) tuple or a Batch")
    return table


def _is_matrix(v: Any) -> bool:
    return (isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim == 2) or _is_sparse(v)


def _is_sparse(v: Any) -> bool:
    if isinstance(v, CSR):
        return True
    if isinstance(v, torch.Tensor):
        return v.layout != torch.strided
    return type(v).__module__.startswith("scipy.sparse")


def _restartable(pieces: Iterable) -> bool:
    """Whether iterating `pieces` again starts from the beginning (a list, a tuple...; not an iterator)."""
    return iter(pieces) is not pieces


def _dense(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if x.dtype.kind not in "biuf":
        raise UsageError(f"{name}: expected numbers, found an array of {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _csr(x: Any) -> CSR:
    """A CSR of float32 values and int64 indices, sorted within rows, from SciPy or a torch sparse tensor."""
    if isinstance(x, CSR):
        return x
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to_sparse_csr()
        indptr, indices, data = x.crow_indices().numpy(), x.col_indices().numpy(), x.values().numpy()
        shape = tuple(x.shape)
    else:
        x = x.tocsr()
        x.sum_duplicates()  # also sorts the indices within rows
        indptr, indices, data, shape = x.indptr, x.indices, x.data, x.shape
    return CSR(indptr.astype(np.int64), indices.astype(np.int64), data.astype(np.float32), (int(shape[0]),
                                                                                          int(shape[1])))


def _vector(v: Any, n: int, name: str, what: str) -> np.ndarray | None:
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    v = np.asarray(v)
    if v.ndim != 1 or len(v) != n:
        raise UsageError(f"{name}: {what} have shape {v.shape}, expected ({n},) for {n} records")
    if v.dtype.kind not in "biuf":
        raise UsageError(f"{name}: {what} must be numbers (encode classes as 0..K-1), found {v.dtype}")
    return v.astype(np.float32)


def _rows(v: Any, start: int, step: int):
    return None if v is None else v[start:start + step]
