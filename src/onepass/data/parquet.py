"""Parquet, read one row group at a time in bounded slices."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError
from .chunks import Chunk, check_finite, check_weights, resolve_columns
from .opening import random_access
from .sources import Input

SLICE_ROWS = 1 << 16


def read(inp: Input, file_index: int, *, label: str | int | None = None, header: bool | None = None,
         start: int = 0, line: int = 0, block_size: int | None = None,
         weight: str | int | None = None) -> Iterator[Chunk]:
    """Yield chunks from row group `start` on; a chunk's offset is its row group, its base the rows before it."""
    try:
        pf = pq.ParquetFile(random_access(inp))  # a URL: an fsspec file, read by ranges
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"not a readable Parquet file ({e})", source=inp.path, reason="bad parquet") from None
    names = pf.schema_arrow.names
    y_col, w_col, x_cols = resolve_columns(label, weight, names, inp.path)
    for i, fld in enumerate(pf.schema_arrow):
        if not (pa.types.is_integer(fld.type) or pa.types.is_floating(fld.type) or pa.types.is_boolean(fld.type)):
            raise DataError(f"column {fld.name!r} is {fld.type}, not numeric", source=inp.path,
                            reason="not a number")
    meta = pf.metadata
    if meta.num_rows == 0:
        raise DataError("file is empty: no records", source=inp.path, reason="empty")
    row = sum(meta.row_group(g).num_rows for g in range(start))
    for g in range(start, meta.num_row_groups):
        base = 0
        try:
            batches = pf.iter_batches(batch_size=SLICE_ROWS, row_groups=[g], use_threads=True)
            for rb in batches:
                cols = [rb.column(i) for i in range(rb.num_columns)]
                for i, c in enumerate(cols):
                    if c.null_count:
                        r = int(np.flatnonzero(c.is_null().to_numpy(zero_copy_only=False))[0])
                        raise DataError(f"column {names[i]!r} is missing a value", source=inp.path,
                                        row=row + base + r, reason="missing value")
                x = np.empty((rb.num_rows, len(x_cols)), dtype=np.float32)
                for j, i in enumerate(x_cols):
                    x[:, j] = cols[i].to_numpy(zero_copy_only=False)
                y = cols[y_col].to_numpy(zero_copy_only=False).astype(np.float32) if y_col is not None else None
                w = cols[w_col].to_numpy(zero_copy_only=False).astype(np.float32) if w_col is not None else None
                check_finite(x, inp.path, row + base)
                if y is not None:
                    check_finite(y[:, None], inp.path, row + base)
                if w is not None:
                    check_weights(w, inp.path, row + base)
                yield Chunk(x, y, file_index, g, base, row + base, (g + 1) / meta.num_row_groups, w)
                base += rb.num_rows
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"row group {g} is unreadable ({e})", source=inp.path, reason="bad parquet") from None
        row += meta.row_group(g).num_rows
