"""LibSVM / SVMlight text, streamed in blocks cut at line ends and parsed a whole block at a time.

    <label> [qid:<n>] <index>:<value> <index>:<value> ...   [# comment]

Rules (a streaming reader cannot look at the whole file first, so nothing is guessed):
- Indices are 1-based, SVMlight's rule, unless ``zero_based=True``. Index 0 in a 1-based stream is an error naming
  the line (scikit-learn's ``zero_based="auto"`` decides from the whole file; a stream cannot).
- The number of features is given (``n_features``; the trainer passes the algorithm's ``feature_dim``): every
  batch has that width from the first record on, and an index beyond it is an error naming the line and index.
- Indices increase along a line (sorted, no duplicates), as scikit-learn's reader requires.
- The label is always the first field and becomes the batch's labels; ``qid:N`` right after it is accepted and
  dropped; ``#`` starts a comment; blank lines are skipped. Spaces and tabs separate fields.

The fast path never loops over tokens in Python: byte translations and regular expressions normalise the block,
NumPy checks its structure (after a space a colon, after a colon a space or a line end), pyarrow parses every token
as one float64 column, and NumPy cuts that into labels, indices and values. Only a block that fails a check is read
again line by line, to name the first bad line and the reason. Blocks carry byte offsets and line numbers, so resume
is exact, as for CSV; compressed files (.gz, .bz2, .xz) are read through the CSV reader's helpers.
"""

from __future__ import annotations

import re
import sys
from typing import BinaryIO, Iterator, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..errors import DataError, UsageError
from .chunks import Chunk
from .csv import _READ_ERRORS, _Broken, _broken, _field_problem, _open, _read, newlines
from .sources import Input
from .sparse import CSR

try:  # the fast path for clean blocks (_fastsvm.c); without it every block takes the NumPy/pyarrow path
    from . import _fastsvm
except ImportError:  # pragma: no cover - depends on the build
    _fastsvm = None

BLOCK_SIZE = 1 << 22  # 4 MiB, as CSV

_WHITESPACE = bytes.maketrans(b"\t\r\v\f", b"    ")  # the ASCII whitespace bytes.split() knows, but \n
_TO_TOKENS = bytes.maketrans(b" :", b"\n\n")       # one token per line: a one-column CSV for pyarrow
_COMMENT = re.compile(rb"#[^\n]*")
_SPACES = re.compile(rb"  +")
_LINE_EDGES = re.compile(rb" *\n *")
_QID = re.compile(rb"(?m)^([^ \n]+) qid:[0-9]+(?=[ \n])")
_BLANK_LINES = re.compile(rb"\n\n+")
_QID_TEXT = re.compile(r"qid:[0-9]+")
_SPACE, _COLON, _NEWLINE = ord(" "), ord(":"), ord("\n")
_TOKEN_OPTIONS = (pacsv.ReadOptions(column_names=["v"], use_threads=True, block_size=1 << 20),
                  pacsv.ParseOptions(delimiter=",", quote_char=False, ignore_empty_lines=False),
                  pacsv.ConvertOptions(column_types={"v": pa.float64()}))


def read(inp: Input, file_index: int, *, label: str | int | None = None, header: bool | None = None,
         start: int = 0, line: int = 1, block_size: int | None = None, n_features: int | None = None,
         zero_based: bool = False, bad=None) -> Iterator[Chunk]:
    """Yield chunks (x a CSR of width `n_features`, y the labels) from byte offset `start`, whose line is `line`.
    `bad` (on_bad_record="skip"): bad lines are left out and attached to the chunks (bad_records.py)."""
    if n_features is None:
        raise UsageError("LibSVM data needs the number of features, which a stream cannot know before its end: "
                         "give --feature-dim N (Python: feature_dim=N, or Stream(..., n_features=N))")
    if label not in (None, "none", "first", 0, "0"):
        raise UsageError(f"--label-column {label}: a LibSVM line's label is always its first field")
    block_size = block_size or BLOCK_SIZE
    name = inp.path if inp.path != "-" else "<stdin>"
    f = None
    try:
        f = _open(inp)
        if start:
            f.seek(start)
        seen = False
        for offset, first_line, block in _blocks(f, name, start, line, block_size):
            events = None
            try:
                parsed = _parse(block, name, first_line, n_features, zero_based)
            except DataError:
                if bad is None:
                    raise
                parsed, events = _salvage(block, name, first_line, n_features, zero_based)
            if parsed is not None or events:
                seen = True
                done = min(1.0, (offset + len(block)) / inp.size) if inp.size else 0.0
                if parsed is None:  # every record of the block was bad
                    parsed = (CSR(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
                                  (0, n_features)), np.zeros(0, np.float32))
                yield Chunk(parsed[0], parsed[1], file_index, offset, 0, first_line, done, None, events)
        if not seen and start == 0:
            raise DataError("file is empty: no records", source=name, reason="empty")
    except _READ_ERRORS as e:  # opening or seeking
        raise _broken(e, name, line) from None
    finally:
        if f is not None and f is not sys.stdin.buffer:
            f.close()


def _blocks(f: BinaryIO, name: str, offset: int, line: int, block_size: int) -> Iterator[tuple[int, int, bytes]]:
    """(byte offset, line number, bytes) of blocks of whole lines; the last may lack its final newline."""
    carry = b""
    while True:
        try:  # a line longer than a block: read as much again, so that long lines cost linear time
            data = _read(f, max(block_size, len(carry)))
        except _Broken as b:
            raise _broken(b.error, name, line + carry.count(b"\n") + b.data.count(b"\n")) from None
        buf = carry + data if carry else data
        if data:
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            block, carry = buf[:cut + 1], buf[cut + 1:]
        else:
            block, carry = buf, b""
        if block:
            yield offset, line, block
            offset += len(block)
            line += newlines(block)
        if not data:
            return


def _normalise(block: bytes) -> bytes:
    """The block's records as `label idx:val idx:val\\n` lines: no comments, qid, blank lines or extra spaces."""
    text = _COMMENT.sub(b"", block).translate(_WHITESPACE) + b"\n"
    text = _LINE_EDGES.sub(b"\n", _SPACES.sub(b" ", text)).lstrip(b" ")
    return _BLANK_LINES.sub(b"\n", _QID.sub(rb"\1", text)).lstrip(b"\n")


def _separators(text: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Positions and values of the space, colon and newline bytes of `text`."""
    arr = np.frombuffer(text, np.uint8)
    pos = np.flatnonzero((arr == _SPACE) | (arr == _COLON) | (arr == _NEWLINE))
    return pos, arr[pos]


def _parse_clean(block: bytes, n_features: int, zero_based: bool) -> tuple[CSR, np.ndarray] | None:
    """The records of a clean block by the C fast path (_fastsvm.c), or None for the general path below: the same
    records, bit for bit (tested). On the 10^6-wide benchmark stream, 20 entries a record: 3.4 x the general
    path's speed (one thread)."""
    if _fastsvm is None:
        return None
    lines, colons = _fastsvm.sizes(block)
    lines += 1  # a last line without its line end
    indptr, index = np.empty(lines + 1, np.int64), np.empty(colons, np.int64)
    values, labels = np.empty(colons, np.float32), np.empty(lines, np.float32)
    n = _fastsvm.parse(block, n_features, zero_based, indptr, index, values, labels)
    if n <= 0:
        return None
    nnz = int(indptr[n])
    return CSR(indptr[:n + 1], index[:nnz], values[:nnz], (n, n_features)), labels[:n]


def _parse(block: bytes, name: str, first_line: int, n_features: int,
           zero_based: bool) -> tuple[CSR, np.ndarray] | None:
    """The block's records, or None when it holds none; any problem goes to _diagnose."""
    clean = _parse_clean(block, n_features, zero_based)
    if clean is not None:
        return clean
    text = block.translate(_WHITESPACE)
    if not text.endswith(b"\n"):
        text += b"\n"
    pos, seps = _separators(text)
    # A clean block (the usual case) needs no normalising: no comment or qid (one-byte searches are the cheap
    # ones), no separator first and no two side by side (blank lines, runs of spaces, spaces at line ends).
    if b"#" in block or b"q" in block or pos[0] == 0 or np.any(pos[1:] - pos[:-1] == 1):
        text = _normalise(block)
        if not text:
            return None
        pos, seps = _separators(text)
    fail = lambda why: _diagnose(block, name, first_line, n_features, zero_based, why)  # noqa: E731
    prev = np.empty_like(seps)
    prev[0], prev[1:] = _NEWLINE, seps[:-1]
    # after a space comes a colon (the index's end); after a colon or a line end, a space or a line end
    if not np.array_equal(prev == _SPACE, seps == _COLON):
        fail("a field is not index:value")
    line_ends = seps == _NEWLINE
    indptr = np.zeros(1 + int(np.count_nonzero(line_ends)), dtype=np.int64)
    indptr[1:] = np.cumsum(seps == _COLON)[line_ends]
    n, nnz = len(indptr) - 1, int(indptr[-1])
    try:
        column = pacsv.read_csv(pa.py_buffer(text.translate(_TO_TOKENS)), *_TOKEN_OPTIONS).column(0)
    except pa.ArrowException as e:
        fail(str(e))
    if column.null_count or len(column) != n + 2 * nnz:
        fail("a field is empty or not a number")
    tokens = column.to_numpy()
    at_label = np.arange(n) + 2 * indptr[:-1]  # row r starts after r labels and 2 indptr[r] index/value tokens
    is_pair = np.ones(len(tokens), dtype=bool)
    is_pair[at_label] = False
    pairs = tokens[is_pair]
    with np.errstate(invalid="ignore", over="ignore"):
        raw_index = pairs[0::2]
        index = raw_index.astype(np.int64)
        values, labels = pairs[1::2].astype(np.float32), tokens[at_label].astype(np.float32)
    if not zero_based:
        index -= 1
    if not (np.array_equal(index + (not zero_based), raw_index) and (nnz == 0 or (index.min() >= 0 and
                                                                                 index.max() < n_features))):
        fail("a feature index is not a whole number in range")
    if nnz > 1:
        rising = np.diff(index) > 0
        rising[indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < nnz)] - 1] = True  # across lines: any order
        if not rising.all():
            fail("feature indices do not increase along a line")
    if not (np.isfinite(values).all() and np.isfinite(labels).all()):
        fail("a value is not finite")
    return CSR(indptr, index, values, (n, n_features)), labels


def _diagnose(block: bytes, name: str, first_line: int, n_features: int, zero_based: bool, why: str) -> NoReturn:
    """Raise a DataError naming the first bad line of a block the fast path refused, and why."""
    for k, raw in enumerate(block.split(b"\n")):
        problem = _line_problem(raw, n_features, zero_based)
        if problem:
            raise DataError(problem[0], source=name, line=first_line + k, reason=problem[1])
    last = first_line + block.count(b"\n")
    raise DataError(f"cannot parse lines {first_line}-{last}: {why}", source=name, reason="parse error")


def _salvage(block: bytes, name: str, first_line: int, n_features: int, zero_based: bool):
    """Under on_bad_record="skip", a block the fast path refused: its good lines parsed by the fast path (bad ones
    blanked, so that line numbers stay) or None, and its bad lines as (k, DataError), k good records before each."""
    lines, events, good = block.split(b"\n"), [], 0
    for k, raw in enumerate(lines):
        problem = _line_problem(raw, n_features, zero_based)
        if problem:
            events.append((good, DataError(problem[0], source=name, line=first_line + k, reason=problem[1])))
            lines[k] = b""
        elif raw.split(b"#", 1)[0].split():
            good += 1
    if not events:  # the fast path refused what the line-by-line pass takes: refuse the block, naming why
        _parse(block, name, first_line, n_features, zero_based)
    return _parse(b"\n".join(lines), name, first_line, n_features, zero_based), events


def _line_problem(raw: bytes, n_features: int, zero_based: bool) -> tuple[str, str] | None:
    """(message, reason) for the first problem of one line, None if it is a good record or holds none."""
    fields = raw.split(b"#", 1)[0].split()
    if not fields:
        return None
    try:
        words = [w.decode("utf-8") for w in fields]
    except UnicodeDecodeError:
        return "invalid UTF-8", "bad utf-8"
    problem = _field_problem(words[0])
    if problem:
        return f"the label {problem[0]} (a line starts with its label)", problem[1]
    pairs = words[2:] if len(words) > 1 and _QID_TEXT.fullmatch(words[1]) else words[1:]
    last = -1
    for word in pairs:
        if word.count(":") != 1:
            return f"expected index:value, found {word[:40]!r}", "parse error"
        text, value = word.split(":")
        problem = _field_problem(text)
        if problem:
            return f"feature index {problem[0]}", "bad index"
        number = float(text)
        if not number.is_integer():
            return f"feature index {text} is not a whole number", "bad index"
        index = int(number) - (not zero_based)
        if index < 0:
            if not zero_based and number == 0:
                return ("feature index 0 in a 1-based file (SVMlight numbers features from 1; for 0-based data "
                        "pass --zero-based, in Python zero_based=True)"), "bad index"
            return f"feature index {text} is negative", "bad index"
        if index >= n_features:
            top = n_features - 1 if zero_based else n_features
            return (f"feature index {text} is beyond the {n_features:,} features (the largest allowed is {top}; "
                    "set --feature-dim)"), "index out of range"
        if index <= last:
            return f"feature indices must increase along a line: {text} comes after {last + (not zero_based)}", \
                "unsorted index"
        last = index
        problem = _field_problem(value)
        if problem:
            return f"the value of feature {text} {problem[0]}", problem[1]
    return None
