"""Parquet, read one row group at a time in bounded slices."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError
from .chunks import Chunk, arrow_arrays, check_numeric, resolve_categorical, resolve_columns
from .hashing import arrow_texts
from .opening import random_access
from .sources import Input

SLICE_ROWS = 1 << 16


def read(inp: Input, file_index: int, *, label: str | int | None = None, header: bool | None = None,
         start: int = 0, line: int = 0, block_size: int | None = None,
         weight: str | int | None = None, columns: list[str | int] | None = None, bad=None,
         categorical: list[str | int] | None = None) -> Iterator[Chunk]:
    """Yield chunks from row group `start` on; a chunk's offset is its row group, its base the rows before it
    (the good ones: with `bad`, on_bad_record="skip", rows holding a null or a value that is not finite are left
    out and attached to the chunk). Only the columns taken (features, label, weight, `categorical`: their text in
    `Chunk.cats`, hashing.py) are read."""
    try:
        pf = pq.ParquetFile(random_access(inp))  # a URL: an fsspec file, read by ranges
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"not a readable Parquet file ({e})", source=inp.path, reason="bad parquet") from None
    names = pf.schema_arrow.names
    y_col, w_col, x_cols = resolve_columns(label, weight, names, inp.path, columns)
    cat_cols, x_cols = resolve_categorical(categorical, names, inp.path, x_cols, y_col, w_col, columns)
    used = sorted({*x_cols, *(c for c in (y_col, w_col) if c is not None)})
    check_numeric(pf.schema_arrow, used, inp.path)
    meta = pf.metadata
    if meta.num_rows == 0:
        raise DataError("file is empty: no records", source=inp.path, reason="empty")
    row = sum(meta.row_group(g).num_rows for g in range(start))
    for g in range(start, meta.num_row_groups):
        base = raw = 0  # good rows, all rows of the group before the slice
        try:
            batches = pf.iter_batches(batch_size=SLICE_ROWS, row_groups=[g], columns=[names[i] for i in sorted({*used, *cat_cols})],
                                      use_threads=True)
            for rb in batches:
                cols = {i: rb.column(names[i]) for i in used}
                x, y, w, *events = arrow_arrays(cols, names, x_cols, y_col, w_col, inp.path, row + raw,
                                                bad is not None)
                cats = arrow_texts({i: rb.column(names[i]) for i in cat_cols}, names, inp.path, row + raw,
                                   *events) if cat_cols else None
                yield Chunk(x, y, file_index, g, base, row + raw, (g + 1) / meta.num_row_groups, w, *events,
                            cats=cats)
                base, raw = base + len(x), raw + rb.num_rows
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"row group {g} is unreadable ({e})", source=inp.path, reason="bad parquet") from None
        row += meta.row_group(g).num_rows
