"""NumPy ``.npy`` files, memory-mapped and read in row slices (never loaded whole, never unpickled)."""

from __future__ import annotations

import tokenize
from typing import Iterator

import numpy as np

from ..errors import DataError
from .chunks import Chunk, checked_rows, resolve_columns
from .sources import Input

SLICE_BYTES = 1 << 24


def read(inp: Input, file_index: int, *, label: str | int | None = None, header: bool | None = None,
         start: int = 0, line: int = 0, block_size: int | None = None,
         weight: str | int | None = None, columns: list[str | int] | None = None, bad=None) -> Iterator[Chunk]:
    """Yield chunks from row `start` on; a chunk's offset is its first row. Columns are chosen by index. `bad`
    (on_bad_record="skip"): rows holding a value that is not finite are left out and attached to the chunks."""
    try:
        arr = np.load(inp.path, mmap_mode="r", allow_pickle=False)
    # SyntaxError, TokenError, TypeError: NumPy parses the header as a Python literal (then sorts its keys); a
    # damaged one can raise them
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError, TypeError) as e:
        raise DataError(f"not a readable .npy file ({e})", source=inp.path, reason="bad npy") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise DataError(f"expected a 2-D numeric array, found shape {arr.shape} of {arr.dtype}",
                        source=inp.path, reason="bad npy")
    if arr.shape[0] == 0:
        raise DataError("file is empty: no records", source=inp.path, reason="empty")
    y_col, w_col, x_cols = resolve_columns(label, weight, [str(i) for i in range(arr.shape[1])], inp.path, columns)
    if not x_cols:  # as .npz: records without features are refused, not handed on as empty rows
        raise DataError(f"no feature columns: the array has {arr.shape[1]} column(s), none of them a feature",
                        source=inp.path, reason="no features")
    everything = x_cols == list(range(arr.shape[1]))
    step = max(1, SLICE_BYTES // max(1, arr.shape[1] * arr.itemsize))
    for r in range(start, arr.shape[0], step):
        block = np.asarray(arr[r:r + step])
        # always a copy: a view of the read-only memory map would make read-only (crashing on in-place use) batches
        x = np.array(block if everything else block[:, x_cols], dtype=np.float32, order="C", copy=True)
        y = block[:, y_col].astype(np.float32) if y_col is not None else None
        w = block[:, w_col].astype(np.float32) if w_col is not None else None
        x, y, w, events = checked_rows(x, y, w, inp.path, r, skip=bad is not None)
        yield Chunk(x, y, file_index, r, 0, r, min(1.0, (r + step) / arr.shape[0]), w, events)
