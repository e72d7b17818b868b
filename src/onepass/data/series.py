"""DeepAR's time series records, read from JSON lines and kept as records (one series each), not as tensors.

A record is ``{"start": "2020-01-01 00:00:00", "target": [1.0, "NaN", 3.0], "cat": [0, 2], "dynamic_feat": [[...]]}``
(SageMaker's DeepAR format). Series have different lengths, so an algorithm samples windows from them; this module only
reads and validates them, one `SeriesRecord` a line, each with where it lies in its input, so that a reader stopped
after any record resumes at the next (`read_series(source, start=record.next_position)`).

Validation, with errors naming the file and line:
- ``start``: a date or date and time (ISO 8601, ``YYYY-MM-DD HH:MM:SS`` as DeepAR writes it) without a time zone.
- ``target``: a non-empty array of numbers; ``null`` and ``"NaN"`` (any case) mark missing values, read as NaN, as
  DeepAR does. Infinity and values beyond float32 are refused.
- ``cat`` (optional): an array of integer codes, not negative.
- ``dynamic_feat`` (optional): an array of arrays of numbers, each as long as ``target`` (plus `horizon`, the
  prediction length, for records to forecast from); no missing values, as DeepAR requires.
- every record has as many ``cat`` codes and ``dynamic_feat`` rows as the first record (DeepAR learns one embedding
  per code position and one weight per feature).
Other fields (an ``id``, say) are ignored.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import DataError, UsageError
from .csv import _READ_ERRORS, _broken, line_blocks
from .jsonl import BLOCK_SIZE, parse_object
from .opening import open_input
from .sources import Input, resolve


@dataclass(frozen=True)
class SeriesRecord:
    """One series and where it lies: input `file` (index in the source's list, `path`), the byte `offset` of its line
    and the `end` of it, its 1-based `line`."""

    start: datetime.datetime
    target: np.ndarray  # float32, (T,), NaN where a value is missing
    cat: np.ndarray  # int64, (C,); C may be 0
    dynamic_feat: np.ndarray  # float32, (F, T + horizon); F may be 0
    file: int
    path: str
    offset: int
    end: int
    line: int

    @property
    def position(self) -> dict[str, Any]:
        """Where this record begins: resuming there reads it again."""
        return {"file": self.file, "path": self.path, "offset": self.offset, "line": self.line}

    @property
    def next_position(self) -> dict[str, Any]:
        """Where the record after it begins: a checkpoint taken after this record resumes there."""
        return {"file": self.file, "path": self.path, "offset": self.end, "line": self.line + 1}


def read_series(source: str | os.PathLike | list, *, start: dict[str, Any] | None = None, horizon: int = 0,
                block_size: int | None = None, on_bad: Callable[[DataError], None] | None = None,
                stride: tuple[int, int] | None = None) -> Iterator[SeriesRecord]:
    """The validated series records of `source` (a path, glob, folder, ``-`` or a list; JSON lines, compressed or
    not; or a list of resolved `Input`s, as a `Stream` holds them), from `start` (a record's `position` or
    `next_position`) when given. A bad record raises its DataError, or with `on_bad` is handed to it and left out.
    `stride` (rank, world): only the lines n of each file with (n - 1) % world == rank, the others not even parsed
    (processes sharing fewer files than they are: each reads, and answers for, its own lines)."""
    if horizon < 0:
        raise UsageError(f"horizon must be 0 or more, got {horizon}")
    inputs = list(source) if isinstance(source, list) and source and all(isinstance(i, Input) for i in source) \
        else resolve(source)
    first = int(start["file"]) if start else 0
    if start and first < len(inputs) and start.get("path") not in (None, inputs[first].path):
        raise UsageError(f"the source changed: input {first} was {start['path']!r}, now {inputs[first].path!r}; "
                         "resuming needs the same inputs")
    shape: dict[str, int] = {}  # the first record's numbers of cat codes and dynamic features
    for i in range(first, len(inputs)):
        at = start if (start and i == first) else None
        yield from _read(inputs[i], i, int(at["offset"]) if at else 0, int(at.get("line", 1)) if at else 1,
                         horizon, block_size or BLOCK_SIZE, shape, on_bad, stride)


def _read(inp: Input, file_index: int, offset: int, line: int, horizon: int, block_size: int,
          shape: dict[str, int], on_bad: Callable[[DataError], None] | None,
          stride: tuple[int, int] | None = None) -> Iterator[SeriesRecord]:
    name = inp.path if inp.path != "-" else "<stdin>"
    f = None
    try:
        f = open_input(inp)
        if offset:
            try:
                f.seek(offset)
            except _READ_ERRORS as e:
                raise DataError(f"cannot resume at byte {offset} ({e})", source=name, line=line,
                                reason="unseekable") from None
        for buf, end, at, first_line in line_blocks(f, name, offset, line, b"", block_size):
            pos = 0
            lineno = first_line
            while pos < end:
                stop = buf.find(b"\n", pos, end)
                stop = end if stop < 0 else stop + 1
                text = buf[pos:stop]
                if text.strip() and (stride is None or (lineno - 1) % stride[1] == stride[0]):
                    if pos == 0 and at == 0 and text.startswith(b"\xef\xbb\xbf"):
                        text = text[3:]  # a UTF-8 byte-order mark
                    try:
                        rec = _record(parse_object(text, name, lineno), name, lineno, horizon, shape,
                                      file_index, inp.path, at + pos, at + stop)
                    except DataError as e:
                        if on_bad is None:
                            raise
                        on_bad(e)
                    else:
                        yield rec
                pos, lineno = stop, lineno + 1
    except _READ_ERRORS as e:
        raise _broken(e, name, None) from None
    finally:
        if f is not None and f is not sys.stdin.buffer:
            f.close()


def from_dict(rec: dict, line: int, name: str = "<records>", horizon: int = 0,
              shape: dict[str, int] | None = None) -> SeriesRecord:
    """A record held in memory (a dict as a JSON line holds it), validated as a line is; errors name `name` and
    `line`, which also stands for its place (windows are drawn by it). `shape`: the first record's field counts, shared
    by the records of one source."""
    return _record(rec, name, line, horizon, {} if shape is None else shape, 0, name, line, line + 1)


def _record(rec: dict, name: str, line: int, horizon: int, shape: dict[str, int], file_index: int, path: str,
            offset: int, end: int) -> SeriesRecord:
    def bad(message: str, reason: str) -> DataError:
        return DataError(message, source=name, line=line, reason=reason)

    for key in ("start", "target"):
        if key not in rec:
            raise bad(f"field {key!r} is missing", "missing value")
    start = _timestamp(rec["start"], bad)
    target = _numbers(rec["target"], "target", bad, missing_ok=True)
    if target.size == 0:
        raise bad("target is empty: a series needs at least one value", "empty target")
    cat = _codes(rec.get("cat", []), bad)
    feats = rec.get("dynamic_feat", [])
    if not isinstance(feats, list) or not all(isinstance(r, list) for r in feats):
        raise bad("dynamic_feat is not an array of arrays", "not a number")
    dynamic = np.empty((len(feats), target.size + horizon), dtype=np.float32)
    for k, row in enumerate(feats):
        values = _numbers(row, f"dynamic_feat[{k}]", bad, missing_ok=False)
        if values.size != target.size + horizon:
            raise bad(f"dynamic_feat[{k}] has {values.size} values where target has {target.size}"
                      + (f" (plus the horizon {horizon})" if horizon else ""), "wrong length")
        dynamic[k] = values
    for key, n in (("cat", cat.size), ("dynamic_feat", len(feats))):
        want = shape.setdefault(key, n)
        if n != want:
            raise bad(f"{key} has {n} entries where the first record has {want}", "wrong field count")
    return SeriesRecord(start, target, cat, dynamic, file_index, path, offset, end, line)


def _timestamp(value: object, bad) -> datetime.datetime:
    if not isinstance(value, str):
        raise bad(f"start is not a date and time: {value!r}", "bad start")
    try:
        t = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise bad(f"start is not a date and time (YYYY-MM-DD HH:MM:SS): {value[:40]!r}", "bad start") from None
    if t.tzinfo is not None:
        raise bad(f"start has a time zone ({value[:40]!r}); DeepAR's start has none", "bad start")
    return t


def _numbers(values: object, key: str, bad, missing_ok: bool) -> np.ndarray:
    """A JSON array of numbers as float32; null and "NaN" as NaN when `missing_ok`; infinity never."""
    if not isinstance(values, list):
        raise bad(f"{key} is not an array of numbers", "not a number")
    arr = None
    if all(type(v) is float or type(v) is int for v in values):  # the fast path; bool is not int here
        try:
            arr = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond any float: the slow path names it
            pass
    if arr is None:
        arr = np.empty(len(values), dtype=np.float64)
        for j, v in enumerate(values):
            if v is None or (isinstance(v, str) and v.strip().lower() == "nan"):
                if not missing_ok:
                    raise bad(f"{key}[{j}] is missing ({json_text(v)}); missing values are not allowed here",
                              "missing value")
                arr[j] = np.nan
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad(f"{key}[{j}] is not a number: {json_text(v)}", "not a number")
            else:
                try:
                    arr[j] = float(v)
                except OverflowError:
                    arr[j] = np.inf
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if np.isinf(out).any():
        j = int(np.flatnonzero(np.isinf(out))[0])
        beyond = "" if np.isinf(arr[j]) else f": {arr[j]} is beyond the float32 range"
        raise bad(f"{key}[{j}] is {'-' if arr[j] < 0 else ''}inf (infinity is not allowed){beyond}", "not finite")
    if not missing_ok and np.isnan(out).any():  # a NaN token (JSON has none; Python's reader takes it)
        j = int(np.flatnonzero(np.isnan(out))[0])
        raise bad(f"{key}[{j}] is NaN; missing values are not allowed here", "not finite")
    return out


def _codes(values: object, bad) -> np.ndarray:
    if not isinstance(values, list):
        raise bad(f"cat is not an array of integer codes: {json_text(values)}", "bad cat")
    for j, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 63:
            raise bad(f"cat[{j}] is not a category code (an integer, 0 or more): {json_text(v)}", "bad cat")
    return np.array(values, dtype=np.int64)


def json_text(v: object) -> str:
    """A value as it was written, shortened, for messages."""
    return json.dumps(v)[:40]
