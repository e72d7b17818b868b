"""CSV, streamed in large blocks cut at line ends, parsed on a few threads, one block a thread.

Reading our own blocks (rather than pyarrow's streaming reader) gives every block a byte offset and a line number,
so that training resumes at the exact record after a crash and every error names its line. A block of plain decimal
numbers is parsed by the C fast path (`_fastcsv.c`, about 3 x pyarrow's speed a thread, pyarrow's float32 values);
any other block, or every block where the extension was not built, by pyarrow. Only when pyarrow refuses a block,
or a value in it is missing or not finite, does a slow line-by-line pass look for the exact line and reason. Line
numbers count ``\\n`` characters, as editors and ``wc -l`` do.
"""

from __future__ import annotations

import csv as _pycsv
import io
import lzma
import re
import sys
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..errors import DataError
from .chunks import Chunk, check_weights, resolve_categorical, resolve_columns, resolve_label
from .opening import COMPRESSED, open_input
from .sources import Input

try:  # the fast path for plain numbers (_fastcsv.c); without it every block is parsed by pyarrow
    from . import _fastcsv
except ImportError:  # pragma: no cover - a build without a C compiler
    _fastcsv = None

BLOCK_SIZE = 1 << 22  # 4 MiB: big enough for pyarrow's threads, small enough that peak memory stays flat

_BOM = b"\xef\xbb\xbf"
# What a broken input raises while it is read: a truncated compressed stream (EOFError), corrupt compressed data
# (zlib.error, LZMAError, BadGzipFile, OSError), or an I/O error.
_READ_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)
# The numbers pyarrow's float conversion accepts, once spaces and tabs around them are trimmed (ASCII digits only).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INFINITY = re.compile(r"[+-]?inf(?:inity)?", re.ASCII | re.IGNORECASE)
_NAN = re.compile(r"[+-]?nan\b.*", re.ASCII | re.IGNORECASE)
_CONTENT = re.compile(rb"[^\r\n]")  # a block holds a record iff it holds a byte other than line ends
_EMPTY = object()  # a block of empty lines: nothing to parse
_SURROGATE = re.compile("[\udc80-\udcff]")  # bad UTF-8 bytes, decoded with errors="surrogateescape"


def _open(inp: Input) -> BinaryIO:
    return open_input(inp)


class _Broken(Exception):
    """The input could not be read past some point; `data` holds the bytes read before it."""

    def __init__(self, data: bytes, error: BaseException):
        super().__init__(str(error))
        self.data, self.error = data, error


def _broken(error: BaseException, name: str, line: int | None) -> DataError:
    if isinstance(error, EOFError):
        return DataError(f"compressed stream ends early ({error})", source=name, line=line, reason="truncated")
    if isinstance(error, FileNotFoundError):
        return DataError("no such file", source=name)
    return DataError(f"cannot read: {error}", source=name, line=line, reason="unreadable")


def _read(f: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes, fewer only at the end; a read that fails raises _Broken with the bytes read before it."""
    parts, got = [], 0
    while got < n:
        try:
            part = f.read1(n - got)
        except _READ_ERRORS as e:
            raise _Broken(b"".join(parts), e) from None
        if not part:
            break
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def newlines(buf: bytes, end: int | None = None) -> int:
    """How many ``\\n`` bytes `buf[:end]` holds. NumPy counts them in 0.2 ms per 4 MiB block, bytes.count in 1 ms:
    a tenth of the reader's serial time on a large file."""
    return int(np.count_nonzero(np.frombuffer(buf, np.uint8, count=len(buf) if end is None else end) == 10))


def line_blocks(f: BinaryIO, name: str, offset: int, line: int, carry: bytes,
                block_size: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(buf, end, offset, line): `buf[:end]` is a block of whole lines (the last may lack its ``\\n`` at the end of
    the input), `offset` its byte offset in the input and `line` its first line's number. `carry` holds the bytes
    already read at `offset`. A line longer than a block makes the next read as long again (linear time)."""
    while True:
        try:
            data = _read(f, max(block_size, len(carry)))
        except _Broken as b:  # name the line the readable data ends in
            raise _broken(b.error, name, line + carry.count(b"\n") + b.data.count(b"\n")) from None
        buf = carry + data if carry else data
        end = len(buf) if not data else buf.rfind(b"\n") + 1
        if end == 0:
            if not data:
                return
            carry = buf
            continue
        yield buf, end, offset, line
        carry = buf[end:]
        offset += end
        line += newlines(buf, end)
        if not data:
            return


def utf8_line(line: bytes, name: str, lineno: int) -> str:
    """A line's text; bad UTF-8 is a DataError naming the line and the byte."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"invalid UTF-8 at byte {e.start + 1} of the line", source=name, line=lineno,
                        reason="bad utf-8") from None


def _split(line: bytes, delimiter: str, name: str, lineno: int) -> list[str]:
    """The fields of the first record of `line`."""
    text = utf8_line(line, name, lineno)
    try:
        return next((r for r in _pycsv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if r), [])
    except _pycsv.Error as e:
        raise DataError(f"cannot split the line into fields ({e})", source=name, line=lineno,
                        reason="parse error") from None


# Words that stand for a missing or undefined value: a record may hold them (and is then refused or skipped as
# bad), so a line holding one is no evidence of a header.
_MISSING_WORDS = frozenset({"na", "n/a", "nan", "null", "none", "nil", "?", "-", "--", ".", "inf", "+inf", "-inf",
                            "infinity", "+infinity", "-infinity", "#n/a", "missing"})


def _is_name(field: str) -> bool:
    """Whether a field can only be a column name: text that is neither a number nor a missing-value word."""
    s = field.strip(" \t")
    if not s or s.lower() in _MISSING_WORDS:
        return False
    try:
        float(s)
        return False
    except ValueError:
        return True


def looks_like_header(fields: list[str]) -> bool:
    """The header rule of `--csv-header auto`: a first line is column names only when no record could hold it:
    every field a name (a blank one allowed, as pandas writes for its index), at least one of them. A field that
    is a number or a missing-value word (NA, nan, null, ?) makes the line a record, which is then read, or refused
    naming line 1 if a taken column holds no number: never dropped silently (a header rule of "any field not a
    number" ate the record `1,NA,3`, and every first record of a file with a text id column)."""
    names = [v.strip(" \t") for v in fields]
    return any(names) and all(_is_name(v) for v in names if v)


def read(inp: Input, file_index: int, *, label: str | int | None = None, header: bool | None = None,
         start: int = 0, line: int = 1, block_size: int | None = None,
         weight: str | int | None = None, columns: list[str | int] | None = None, bad=None,
         on_header=None, keep: str | int | None = None,
         categorical: list[str | int] | None = None) -> Iterator[Chunk]:
    """Yield chunks of `inp` from byte offset `start` (0, or an offset that a chunk reported, whose line is `line`).
    Columns not taken (not in `columns`, nor the label or weight) must be there but need not be numbers.
    `bad` (on_bad_record="skip"): bad records are left out and attached to the chunks (bad_records.py).
    `header` None detects a header line (`looks_like_header`); `on_header(name, has_header, fields)`, when given,
    hears what was decided, so that the command line can say it. `keep`: a column (name or index) whose text goes
    with each record as its id (`Chunk.ids`, for `predict --id-column`), and is not a feature unless `columns`
    names it. `categorical`: columns whose text (trimmed of spaces and tabs) goes with each record as `Chunk.cats`,
    to be hashed (hashing.py), and are not numeric features."""
    block_size = block_size or BLOCK_SIZE  # read at call time, so that tests can shrink it
    lower = inp.path.lower()
    for ext in COMPRESSED:
        lower = lower.removesuffix(ext)
    delimiter = "\t" if lower.endswith(".tsv") else ","
    name = inp.path if inp.path != "-" else "<stdin>"
    f = None
    try:
        f = _open(inp)
        first, consumed, blanks = _read_first_line(f, name)
        fields = _split(first, delimiter, name, blanks + 1)
        has_header = header if header is not None else looks_like_header(fields)
        if on_header is not None and header is None:
            on_header(name, has_header, fields)
        if has_header and len(fields) and b"\r" in first.rstrip(b"\r\n"):
            # a lone carriage return ends a record: the header line would swallow the records after it
            raise DataError("the header line holds a carriage return; end lines with \\n or \\r\\n",
                            source=name, line=blanks + 1, reason="parse error")
        names = [v.strip() for v in fields] if has_header else [f"c{i}" for i in range(len(fields))]
        ncols = len(fields)
        y_col, w_col, x_cols = resolve_columns(label, weight, names, name, columns)
        k_col = resolve_label(keep, names, name, "--id-column") if keep is not None else None
        if k_col is not None and not columns:
            x_cols = [c for c in x_cols if c != k_col]
        cat_cols, x_cols = resolve_categorical(categorical, names, name, x_cols, y_col, w_col, columns)
        if not x_cols and not cat_cols:
            raise DataError(f"no feature columns: every column ({', '.join(map(repr, names))}) is the label or "
                            "the weight", source=name, line=blanks + 1, reason="no features")
        if start == 0:  # the records begin after the header, or with the line already read
            start, pending = (consumed, b"") if has_header else (consumed - len(first), first)
            line = blanks + (2 if has_header else 1)
        else:
            try:
                f.seek(start)
            except _READ_ERRORS as e:
                raise _broken(e, name, line) from None
            pending = b""
        try:
            yield from _chunks(f, inp, name, file_index, start, line, pending, ncols, x_cols, y_col, w_col,
                               delimiter, block_size, has_header, bad, k_col, cat_cols)
        except DataError as e:
            if header is None and not has_header and e.line == blanks + 1 and e.reason == "not a number" and any(
                    _is_name(v) for v in fields):
                e.args = (f"{e} (if line {e.line} holds column names, say --csv-header true)",)
            raise
    except _READ_ERRORS as e:  # opening the input
        raise _broken(e, name, None) from None
    finally:
        if f is not None and f is not sys.stdin.buffer:
            f.close()


def _read_first_line(f: BinaryIO, name: str) -> tuple[bytes, int, int]:
    """The first non-blank line (without a UTF-8 byte-order mark), the bytes read up to its end, and the blank
    lines before it."""
    consumed, blanks, last = 0, 0, b"\n"
    while True:
        try:
            first = f.readline()
        except _READ_ERRORS as e:
            raise _broken(e, name, blanks + 1) from None
        if consumed == 0 and blanks == 0 and first.startswith(_BOM):
            first, consumed = first[len(_BOM):], len(_BOM)
        if not first or first.strip(b"\r\n"):
            break
        consumed, blanks, last = consumed + len(first), blanks + 1, first  # leading empty lines carry nothing
    if not first:  # (the last blank line may lack its \n)
        raise DataError("file is empty: no records", source=name, line=blanks + 1 - (not last.endswith(b"\n")),
                        reason="empty")
    return first, consumed + len(first), blanks


def _chunks(f, inp, name, file_index, offset, line, carry, ncols, x_cols, y_col, w_col, delimiter, block_size,
            has_header, bad=None, k_col=None, cat_cols=()) -> Iterator[Chunk]:
    """Blocks of whole lines; `offset` is always the byte offset of `carry`'s first byte in the file, `line` its
    line number.

    Blocks are parsed in parallel, one block a thread, on pyarrow's number of CPUs (`--threads`), a few blocks
    ahead of the one being handed out, in order. Parsing each block on its own thread, rather than each block on
    all threads, leaves no thread waiting at the end of a block: on 2 cores the 10^6 x 100 file streams in
    2.6-2.7 s instead of 2.8-2.9 s (each block parsed by two threads in turn), faster than pyarrow reads it whole."""
    column_names = [f"c{i}" for i in range(ncols)]
    used = sorted({*x_cols, *(c for c in (y_col, w_col) if c is not None)})  # the others are not converted
    # text columns: an id column's (first, when there is one) and the categorical columns', not converted
    texts = ([] if k_col is None else [k_col]) + list(cat_cols)
    kept = sorted(set(texts) - set(used))
    options = dict(column_names=column_names, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                   convert_options=pacsv.ConvertOptions(
                       column_types={**{column_names[i]: pa.float32() for i in used},
                                     **{column_names[i]: pa.string() for i in kept}},
                       include_columns=[column_names[i] for i in sorted(used + kept)],
                       strings_can_be_null=False, quoted_strings_can_be_null=False),
                   fast=_fast_targets(ncols, x_cols, y_col, w_col) if not texts else None, delimiter=delimiter,
                   keep=texts)
    workers = pa.cpu_count()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="onepass-csv") if workers > 1 else None
    blocks = line_blocks(f, name, offset, line, carry, block_size)
    ahead: deque = deque()  # (buf, end, offset, line, parsed: Future | tuple | None) in the file's order

    def read_ahead() -> None:
        try:
            item = next(blocks, None)
        except DataError as e:  # a read error: raised once the blocks before it are handed out
            ahead.append(e)
            return
        if item is None:
            ahead.append(None)
            return
        buf, end, _, _ = item
        block = memoryview(buf)[:end]  # a view: no copy of the megabytes it holds
        if not _CONTENT.search(block):  # empty lines only (a line of spaces is a record with an empty field)
            parsed = _EMPTY
        elif buf.startswith(_BOM):
            parsed = None  # the slow path: pyarrow would skip a byte-order mark at the start of any block
        elif pool is not None:
            parsed = pool.submit(_parse, block, x_cols, y_col, w_col, options)
        else:
            parsed = _parse(block, x_cols, y_col, w_col, options)
        ahead.append((*item, parsed))

    seen_any, end_line = False, line
    try:
        for _ in range(workers + 1):
            read_ahead()
        while True:
            item = ahead.popleft()
            if isinstance(item, DataError):
                raise item
            if item is None:
                break
            read_ahead()
            buf, end, offset, line, parsed = item
            block = memoryview(buf)[:end]
            if parsed is _EMPTY:
                end_line = line + buf.count(b"\n", 0, end)
                continue

            def slow(message: str):
                """The line-by-line pass: under fail, raise naming the first bad record; under skip, the good
                ones."""
                if bad is None:
                    _diagnose(bytes(block), line, ncols, delimiter, name, message, used)
                return _salvage(bytes(block), line, ncols, delimiter, name, message, used, x_cols, y_col, w_col,
                                texts)

            if parsed is None:
                x, y, w, ids, events = slow("byte-order mark inside the file")
            else:
                values, problem = parsed.result() if pool is not None else parsed
                events = None
                if problem is not None:
                    x, y, w, ids, events = slow(problem)
                else:
                    x, y, w, ids = values
                    if w is not None and bad is None:
                        check_weights(w, name, line, unit="line",
                                      line_of=lambda r: _line_of_record(bytes(block), line, r, delimiter))
                    elif w is not None and not (w >= 0).all():
                        x, y, w, ids, events = slow("a weight is negative")
            seen_any = True
            cats = None
            if cat_cols:  # ids holds the text columns: the id column's first, then the categorical ones
                cats = ids[len(texts) - len(cat_cols):]  # as written: hashing trims spaces and tabs
            if k_col is not None:
                ids = ids[0] if isinstance(ids[0], np.ndarray) else np.asarray(
                    ids[0].to_numpy(zero_copy_only=False), dtype=object)
            else:
                ids = None
            yield Chunk(x, y, file_index, offset, 0, line, (offset + end) / inp.size if inp.size else 0.0, w,
                        events, ids, cats=cats)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if not seen_any and has_header:
        raise DataError("file has a header but no records", source=name, line=end_line, reason="empty")


def _fast_targets(ncols: int, x_cols: list[int], y_col: int | None, w_col: int | None) -> bytes | None:
    """Where each column goes in _fastcsv.parse_block (its place in x, -1 label, -2 weight, -3 not taken), or None
    when the fast path does not apply (no compiled module; a column taken twice)."""
    if _fastcsv is None or len(set(x_cols)) != len(x_cols):
        return None
    targets = np.full(ncols, -3, dtype=np.int32)
    targets[x_cols] = np.arange(len(x_cols), dtype=np.int32)
    if y_col is not None:
        targets[y_col] = -1
    if w_col is not None:
        targets[w_col] = -2
    return targets.tobytes()


def _parse(block, x_cols: list[int], y_col: int | None, w_col: int | None, options: dict):
    """The parse of one block and the cheap checks: ((x, y, w), None), or (None, why the slow line-by-line pass
    must look at the block). Plain numbers go through _fastcsv (3 x pyarrow's speed a thread, the same float32
    values), any other block through pyarrow. Runs on a worker thread: pure, no state shared."""
    if options["fast"] is not None:
        capacity = newlines(block) + 1
        x = np.empty((capacity, len(x_cols)), dtype=np.float32)
        y = np.empty(capacity, dtype=np.float32) if y_col is not None else None
        w = np.empty(capacity, dtype=np.float32) if w_col is not None else None
        n = _fastcsv.parse_block(block, options["fast"], options["delimiter"], x, len(x_cols), y, w, capacity)
        if n >= 0:  # every value finite (it refuses the others)
            return (x[:n], None if y is None else y[:n], None if w is None else w[:n], None), None
    # the whole block as pyarrow's one block: its blocks must hold whole lines, and ours may be longer than any size
    read = pacsv.ReadOptions(column_names=options["column_names"], use_threads=False,
                             block_size=max(len(block) + 1, 1 << 20))
    try:
        table = pacsv.read_csv(pa.py_buffer(block), read_options=read, parse_options=options["parse_options"],
                               convert_options=options["convert_options"])
    except pa.ArrowException as e:
        return None, str(e)
    x, y = _to_numpy(table, x_cols, y_col)
    w = np.array(table.column(f"c{w_col}").to_numpy(), dtype=np.float32) if w_col is not None else None
    if not np.isfinite(x).all() or (y is not None and not np.isfinite(y).all()) or (
            w is not None and not np.isfinite(w).all()):
        return None, "a value is missing or not finite"
    ids = _texts(table, options["keep"])
    return (x, y, w, ids), None


def _texts(table: pa.Table, cols: list[int]) -> list[pa.Array] | None:
    """The text of columns `cols` of every record, one pyarrow string array a column; None for no columns."""
    if not cols:
        return None
    return [table.column(f"c{k}").cast(pa.string()).combine_chunks() for k in cols]


def _to_numpy(table: pa.Table, x_cols: list[int], y_col: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    # Arrow's own row-major copy, a record batch at a time (a missing value becomes NaN, which the caller
    # refuses): twice as fast as copying column by column into a NumPy matrix. By name: the table holds the
    # columns taken only.
    if not x_cols:  # categorical columns only
        parts = [np.empty((table.num_rows, 0), dtype=np.float32)]
    else:
        parts = [np.asarray(b.to_tensor(row_major=True, null_to_nan=True))
                 for b in table.select([f"c{i}" for i in x_cols]).to_batches()]
    x = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty((0, len(x_cols)), np.float32)
    y = np.array(table.column(f"c{y_col}").to_numpy(), dtype=np.float32) if y_col is not None else None
    return x, y


def _line_of_record(block: bytes, first_line: int, index: int, delimiter: str) -> int:
    """The line number of the block's record number `index` (0-based): the slow path, for messages only."""
    for i, (lineno, _) in enumerate(_rows(block, first_line, delimiter, "")):
        if i == index:
            return lineno
    return first_line


def _rows(block: bytes, first_line: int, delimiter: str, name: str,
          lenient: bool = False) -> Iterator[tuple[int, list[str] | DataError]]:
    """(line number, fields) of every non-empty record in a block, by Python's csv module: the slow path.
    `lenient` (skipping bad records): bad UTF-8 is decoded as surrogates and a record the csv module cannot split
    comes as its DataError, so that reading goes on."""
    try:
        text = block.decode("utf-8", "surrogateescape" if lenient else "strict")
    except UnicodeDecodeError as e:
        bad_line = first_line + block[:e.start].count(b"\n")
        column = e.start - block.rfind(b"\n", 0, e.start)
        raise DataError(f"invalid UTF-8 at byte {column} of the line",
                        source=name, line=bad_line, reason="bad utf-8") from None
    newlines = 0  # in the lines handed to the csv reader so far

    def lines():
        nonlocal newlines
        for ln in io.StringIO(text, newline=""):  # records end at \n, \r\n or \r, as in pyarrow
            newlines += ln.count("\n")
            yield ln

    reader = _pycsv.reader(lines(), delimiter=delimiter)
    while True:
        lineno = first_line + newlines  # the reader pulls one record's lines at a time
        try:
            fields = next(reader)
        except StopIteration:
            return
        except _pycsv.Error as e:
            error = DataError(f"cannot split the line into fields ({e})", source=name, line=lineno,
                              reason="parse error")
            if not lenient:
                raise error from None
            yield lineno, error
            continue
        if fields:  # an empty line; a line of spaces is a record
            yield lineno, fields


def _field_problem(v: str) -> tuple[str, str] | None:
    """Why pyarrow would refuse a field, or read it as a value that is not a finite float32; None if it is fine."""
    s = v.strip(" \t")
    if not s:
        return "is empty (missing value)", "missing value"
    if _NUMBER.fullmatch(s):
        with np.errstate(over="ignore"):
            value = np.float32(float(s))
        if np.isinf(value):
            return f"is {value} (NaN and infinity are not allowed): {s[:40]} is beyond the float32 range", \
                "not finite"
        return None
    if _INFINITY.fullmatch(s):
        return f"is {'-' if s.startswith('-') else ''}inf (NaN and infinity are not allowed)", "not finite"
    if _NAN.fullmatch(s):
        return "is NaN (not allowed)", "not finite"
    return f"is not a number: {v[:40]!r}", "not a number"


def _diagnose(block: bytes, first_line: int, ncols: int, delimiter: str, name: str, arrow_msg: str,
              used: list[int] | None = None):
    """Raise a DataError naming the first bad record of a block that pyarrow refused or read as non-finite
    (checking the values of the `used` columns only, when given)."""
    taken = set(range(ncols) if used is None else used)
    for lineno, fields in _rows(block, first_line, delimiter, name):
        if len(fields) != ncols:
            raise DataError(f"expected {ncols} fields, found {len(fields)}", source=name, line=lineno,
                            reason="wrong field count")
        for j, v in enumerate(fields):
            problem = _field_problem(v) if j in taken else None
            if problem:
                raise DataError(f"field {j + 1} {problem[0]}", source=name, line=lineno, reason=problem[1])
    last = first_line + block.count(b"\n")
    raise DataError(f"cannot parse lines {first_line}-{last}: {arrow_msg}", source=name, reason="parse error")


def _salvage(block: bytes, first_line: int, ncols: int, delimiter: str, name: str, arrow_msg: str, used: list[int],
             x_cols: list[int], y_col: int | None, w_col: int | None, texts: list[int] = ()):
    """Under on_bad_record="skip", a block the fast path refused: (x, y, w, ids, bad) of its good records, converted
    by pyarrow's own string-to-float32 cast (the values the fast path gives), the text of their `texts` (or None),
    and its bad records as (k, DataError), k good records before each. A block whose records all pass here is
    refused as a whole, as _diagnose does."""
    records: list[tuple[int, list[str] | DataError]] = []
    for lineno, fields in _rows(block, first_line, delimiter, name, lenient=True):
        if not isinstance(fields, DataError):
            fields = _record_error(fields, lineno, ncols, used, name) or fields
        records.append((lineno, fields))
    ok = [i for i, (_, f) in enumerate(records) if not isinstance(f, DataError)]
    try:
        cols = {j: pa.array([records[i][1][j].strip(" \t") for i in ok], pa.string()).cast(pa.float32())
                .to_numpy(zero_copy_only=False) for j in used}
    except pa.ArrowException as e:
        last = first_line + block.count(b"\n")
        raise DataError(f"cannot parse lines {first_line}-{last}: {e}", source=name, reason="parse error") from None
    keep = np.ones(len(ok), dtype=bool)
    if w_col is not None:
        for r in np.flatnonzero(cols[w_col] < 0):
            lineno = records[ok[r]][0]
            records[ok[r]] = (lineno, DataError(f"weight is {cols[w_col][r]} (weights must be finite and not "
                                                "negative)", source=name, line=lineno, reason="bad weight"))
            keep[r] = False
    if len(ok) == len(records) and keep.all():
        last = first_line + block.count(b"\n")
        raise DataError(f"cannot parse lines {first_line}-{last}: {arrow_msg}", source=name, reason="parse error")
    events, good = [], 0
    for _, f in records:
        if isinstance(f, DataError):
            events.append((good, f))
        else:
            good += 1
    x = np.empty((int(keep.sum()), len(x_cols)), dtype=np.float32)
    for j, i in enumerate(x_cols):
        x[:, j] = cols[i][keep]
    y = cols[y_col][keep].astype(np.float32) if y_col is not None else None
    w = cols[w_col][keep].astype(np.float32) if w_col is not None else None
    ids = None  # the text columns, one object array each
    if texts:
        ids = [np.array([records[i][1][k] for i in ok], dtype=object)[keep] for k in texts]
    return x, y, w, ids, events


def _record_error(fields: list[str], lineno: int, ncols: int, used: list[int], name: str) -> DataError | None:
    """What is wrong with one record (the checks of _diagnose, and bad UTF-8), or None."""
    if len(fields) != ncols:
        return DataError(f"expected {ncols} fields, found {len(fields)}", source=name, line=lineno,
                         reason="wrong field count")
    for j, v in enumerate(fields):
        if _SURROGATE.search(v):
            return DataError(f"invalid UTF-8 in field {j + 1}", source=name, line=lineno, reason="bad utf-8")
    for j in used:
        problem = _field_problem(fields[j])
        if problem:
            return DataError(f"field {j + 1} {problem[0]}", source=name, line=lineno, reason=problem[1])
    return None
