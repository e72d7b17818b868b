"""Arrow IPC (Feather v2): the file format, memory-mapped and read by record batch where the input is a local file,
and the stream format, read batch after batch from anything (standard input, a compressed file).

A chunk's offset is its record batch's index, its base the rows before it in that batch: a batch larger than
SLICE_ROWS is handed on in slices (zero-copy views of the mapped file), so memory stays bounded however the file was
written. Columns are chosen as in Parquet: label, weight and features by name or index.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO, Iterator

import pyarrow as pa
import pyarrow.ipc as ipc

from ..errors import DataError
from .chunks import Chunk, arrow_arrays, check_numeric, resolve_categorical, resolve_columns
from .hashing import arrow_texts
from .csv import _READ_ERRORS as READ_ERRORS
from .opening import open_input
from .sources import Input

SLICE_ROWS = 1 << 16
_MAGIC = b"ARROW1"  # the file format starts with it and 2 bytes of padding; the stream format follows them
# MemoryError: a damaged length in a stream read through Python (stdin, compressed) asks for an absurd buffer
_READ_ERRORS = (*READ_ERRORS, pa.ArrowException, UnicodeDecodeError, MemoryError)


def read(inp: Input, file_index: int, *, label: str | int | None = None, header: bool | None = None,
         start: int = 0, line: int = 0, block_size: int | None = None, weight: str | int | None = None,
         columns: list[str | int] | None = None, bad=None,
         categorical: list[str | int] | None = None) -> Iterator[Chunk]:
    """Yield chunks from record batch `start` on. `bad` (on_bad_record="skip"): rows holding a null or a value that
    is not finite are left out and attached to the chunks; a chunk's base counts the good rows before it."""
    name = inp.path if inp.path != "-" else "<stdin>"
    f = None
    try:
        f = open_input(inp)
        head = f.peek(8)[:8] if hasattr(f, "peek") else b""
        if head.startswith(b"FEA1"):
            raise DataError("a Feather version 1 file: write it again as Feather version 2 (Arrow IPC), for "
                            "example with pyarrow.feather.write_feather", source=name, reason="bad arrow")
        if inp.seekable and os.path.isfile(inp.path):  # a local file: mapped, zero-copy, lengths checked by pyarrow
            f.close()
            f = pa.memory_map(inp.path)
        if head.startswith(_MAGIC) and isinstance(f, pa.MemoryMappedFile):  # random access by record batch
            reader = ipc.open_file(f)
            count = reader.num_record_batches
            batches = ((g, reader.get_batch(g), (g + 1) / count) for g in range(count))
        else:
            if head.startswith(_MAGIC):  # a file read front to back: its stream follows the magic
                f.read(8)
            reader = ipc.open_stream(f)
            batches = ((g, rb, _fraction(f, inp)) for g, rb in enumerate(reader))
        names = reader.schema.names
        y_col, w_col, x_cols = resolve_columns(label, weight, names, name, columns)
        cat_cols, x_cols = resolve_categorical(categorical, names, name, x_cols, y_col, w_col, columns)
        used = sorted({*x_cols, *(c for c in (y_col, w_col) if c is not None)})
        check_numeric(reader.schema, used, name)
        yield from _chunks(batches, names, used, x_cols, y_col, w_col, name, file_index, start, bad is not None,
                           cat_cols)
    except _READ_ERRORS as e:
        raise DataError(f"not a readable Arrow IPC file or stream ({e})", source=name, reason="bad arrow") from None
    finally:
        if f is not None and f is not sys.stdin.buffer:
            f.close()


def _chunks(batches: Iterator[tuple[int, pa.RecordBatch, float]], names: list[str], used: list[int],
            x_cols: list[int], y_col: int | None, w_col: int | None, name: str, file_index: int,
            start: int, skip: bool = False, cat_cols: list[int] = ()) -> Iterator[Chunk]:
    row, g = 0, -1
    while True:
        try:
            g, rb, fraction = next(batches)
        except StopIteration:
            break
        except _READ_ERRORS as e:
            raise DataError(f"record batch {g + 1} is unreadable ({e})", source=name, row=row,
                            reason="bad arrow") from None
        if g >= start:
            try:  # a damaged file must not reach NumPy as arrays whose buffers are too short
                rb.validate(full=True)
            except _READ_ERRORS as e:
                raise DataError(f"record batch {g} is damaged ({e})", source=name, row=row, reason="bad arrow") from None
            good = 0  # rows handed on from this batch (all of them, unless `skip` left bad ones out)
            for base in range(0, rb.num_rows, SLICE_ROWS):
                part = rb.slice(base, SLICE_ROWS)
                x, y, w, *events = arrow_arrays({i: part.column(i) for i in used}, names, x_cols, y_col, w_col,
                                                name, row + base, skip)
                cats = arrow_texts({i: part.column(i) for i in cat_cols}, names, name, row + base,
                                   *events) if cat_cols else None
                yield Chunk(x, y, file_index, g, good, row + base, fraction, w, *events, cats=cats)
                good += len(x)
        row += rb.num_rows
    if row == 0:
        raise DataError("file is empty: no records", source=name, reason="empty")


def _fraction(f: BinaryIO, inp: Input) -> float:
    """How far into the input a stream reader stands (the compressed size stands in for a compressed input's)."""
    try:
        return min(1.0, f.tell() / inp.size) if inp.size else 0.0
    except (OSError, ValueError):
        return 0.0
