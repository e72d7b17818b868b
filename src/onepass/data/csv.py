"""CSV, streamed in large blocks cut at line ends and parsed by pyarrow's multi-threaded parser.

Reading our own blocks (rather than pyarrow's streaming reader) gives every block a byte offset and a line number,
so that training resumes at the exact record after a crash and every error names its line. Parsing is pyarrow's;
only when it refuses a block does a slow line-by-line pass look for the exact line and reason.
"""

from __future__ import annotations

import bz2
import csv as _pycsv
import gzip
import io
import lzma
import sys
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..errors import DataError
from .chunks import Chunk, check_finite, resolve_label
from .sources import Input

BLOCK_SIZE = 1 << 22  # 4 MiB: big enough for pyarrow's threads, small enough that peak memory stays flat


def _open(inp: Input) -> BinaryIO:
    if inp.path == "-":
        return sys.stdin.buffer
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(inp.path[inp.path.rfind("."):], open)
    return opener(inp.path, "rb")


def _split(line: bytes, delimiter: str) -> list[str]:
    return next(_pycsv.reader([line.decode("utf-8", "replace").rstrip("\r\n")], delimiter=delimiter), [])


def _is_number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def read(inp: Input, file_index: int, *, label: str | int | None = None, header: bool | None = None,
         start: int = 0, line: int = 1, block_size: int = BLOCK_SIZE) -> Iterator[Chunk]:
    """Yield chunks of `inp` from byte offset `start` (0, or an offset that a chunk reported)."""
    delimiter = "\t" if inp.path.lower().removesuffix(".gz").endswith(".tsv") else ","
    name = inp.path if inp.path != "-" else "<stdin>"
    f = _open(inp)
    try:
        first, consumed, blanks = _read_first_line(f, name)
        fields = _split(first, delimiter)
        has_header = header if header is not None else not all(_is_number(v) for v in fields if v.strip())
        names = [v.strip() for v in fields] if has_header else [f"c{i}" for i in range(len(fields))]
        ncols = len(fields)
        y_col = resolve_label(label, names, name)
        x_cols = [i for i in range(ncols) if i != y_col]
        if start == 0:  # the records begin after the header, or with the line already read
            start, pending = (consumed, b"") if has_header else (consumed - len(first), first)
            line = blanks + (2 if has_header else 1)
        else:
            f.seek(start)
            pending = b""
        yield from _chunks(f, inp, name, file_index, start, line, pending, ncols, x_cols, y_col,
                           delimiter, block_size, has_header)
    except EOFError as e:  # a truncated gzip, bz2 or xz stream
        raise DataError(f"compressed stream ends early ({e})", source=name, reason="truncated") from None
    except (OSError, lzma.LZMAError) as e:
        if isinstance(e, FileNotFoundError):
            raise DataError("no such file", source=name) from None
        raise DataError(f"cannot read: {e}", source=name, reason="unreadable") from None
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _read_first_line(f: BinaryIO, name: str) -> tuple[bytes, int, int]:
    """The first non-blank line, the bytes read up to its end, and the blank lines before it."""
    first, consumed, blanks = f.readline(), 0, 0
    while first and not first.strip():  # leading blank lines carry nothing
        consumed, blanks = consumed + len(first), blanks + 1
        first = f.readline()
    if not first:
        raise DataError("file is empty: no records", source=name, reason="empty")
    return first, consumed + len(first), blanks


def _chunks(f, inp, name, file_index, offset, line, carry, ncols, x_cols, y_col, delimiter, block_size,
            has_header) -> Iterator[Chunk]:
    """Blocks of whole lines; `offset` is always the byte offset of `carry`'s first byte in the file."""
    column_names = [f"c{i}" for i in range(ncols)]
    read_opts = pacsv.ReadOptions(column_names=column_names, use_threads=True, block_size=1 << 20)
    parse_opts = pacsv.ParseOptions(delimiter=delimiter)
    convert_opts = pacsv.ConvertOptions(column_types={c: pa.float32() for c in column_names},
                                        strings_can_be_null=False, quoted_strings_can_be_null=False)
    seen_any = False
    while True:
        data = f.read(block_size)
        buf = carry + data if carry else data
        if not data:
            block, carry = buf, b""
        else:
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            block, carry = buf[:cut + 1], buf[cut + 1:]
        if not block.strip():
            if not data:
                break
            offset += len(block)
            line += block.count(b"\n")
            continue
        try:
            table = pacsv.read_csv(pa.py_buffer(block), read_options=read_opts, parse_options=parse_opts,
                                   convert_options=convert_opts)
        except pa.ArrowInvalid as e:
            _diagnose(block, line, ncols, delimiter, name, str(e))
        x, y = _to_numpy(table, x_cols, y_col)
        lines = lambda r, b=block, l0=line: _line_of_record(b, l0, r, delimiter)
        if np.isnan(x).any() or (y is not None and np.isnan(y).any()):
            _find_missing(block, line, delimiter, name)
        check_finite(x, name, line, unit="line", line_of=lines)
        if y is not None:
            check_finite(y[:, None], name, line, unit="line", line_of=lines)
        seen_any = True
        yield Chunk(x, y, file_index, offset, 0, line, (offset + len(block)) / inp.size if inp.size else 0.0)
        offset += len(block)
        line += block.count(b"\n")
        if not data:
            break
    if not seen_any and has_header:
        raise DataError("file has a header but no records", source=name, reason="empty")


def _to_numpy(table: pa.Table, x_cols: list[int], y_col: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.empty((table.num_rows, len(x_cols)), dtype=np.float32)
    for j, i in enumerate(x_cols):
        x[:, j] = table.column(i).to_numpy()
    y = np.array(table.column(y_col).to_numpy(), dtype=np.float32) if y_col is not None else None
    return x, y


def _rows(block: bytes, first_line: int, delimiter: str, name: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank record in a block, by Python's csv module: the slow path."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_line = first_line + block[:e.start].count(b"\n")
        column = e.start - block.rfind(b"\n", 0, e.start)
        raise DataError(f"invalid UTF-8 at byte {column} of the line",
                        source=name, line=bad_line, reason="bad utf-8") from None
    reader = _pycsv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = first_line
    for fields in reader:
        if fields and any(v.strip() for v in fields):
            yield start, fields
        start = first_line + reader.line_num


def _diagnose(block: bytes, first_line: int, ncols: int, delimiter: str, name: str, arrow_msg: str):
    for lineno, fields in _rows(block, first_line, delimiter, name):
        if len(fields) != ncols:
            raise DataError(f"expected {ncols} fields, found {len(fields)}", source=name, line=lineno,
                            reason="wrong field count")
        for j, v in enumerate(fields):
            if not v.strip():
                raise DataError(f"field {j + 1} is empty (missing value)", source=name, line=lineno,
                                reason="missing value")
            if not _is_number(v):
                raise DataError(f"field {j + 1} is not a number: {v[:40]!r}", source=name, line=lineno,
                                reason="not a number")
    last = first_line + block.count(b"\n")
    raise DataError(f"cannot parse lines {first_line}-{last}: {arrow_msg}", source=name, reason="parse error")


def _find_missing(block: bytes, first_line: int, delimiter: str, name: str) -> None:
    for lineno, fields in _rows(block, first_line, delimiter, name):
        for j, v in enumerate(fields):
            if not v.strip():
                raise DataError(f"field {j + 1} is empty (missing value)", source=name, line=lineno,
                                reason="missing value")
            if v.strip().lower() in ("nan", "-nan", "+nan"):
                raise DataError(f"field {j + 1} is NaN (not allowed)", source=name, line=lineno,
                                reason="not finite")


def _line_of_record(block: bytes, first_line: int, record: int, delimiter: str) -> int:
    for k, (lineno, _) in enumerate(_rows(block, first_line, delimiter, "")):
        if k == record:
            return lineno
    return first_line + record
