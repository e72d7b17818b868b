"""JSON lines: one flat object of named numbers a line, parsed by pyarrow's JSON reader in blocks cut at line ends.

As for CSV, reading our own blocks gives every chunk a byte offset and a line number, so training resumes at the exact
record and errors name their line; only when pyarrow refuses a block, or a value in it is missing or not finite,
does a slow line-by-line pass (Python's json module) look for the exact line and reason.

Fields: the feature fields are `columns` (names or indices into the first record's fields, in that order) when
given, else every field of the first record that is neither the label nor the weight, in the first record's order.
Every record must hold every field taken, as a number. A field the first record does not have is an error when
`columns` is not given (it would be data silently dropped, or a misspelt name); with `columns`, fields not taken
are ignored, whatever they hold.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from ..errors import DataError
from .chunks import Chunk, check_weights, resolve_categorical, resolve_columns
from .hashing import arrow_texts, bad_value, text_of
from .csv import _READ_ERRORS, _broken, _read_first_line, line_blocks, newlines, utf8_line
from .opening import open_input
from .sources import Input

BLOCK_SIZE = 1 << 22  # 4 MiB, as CSV: big enough for pyarrow's threads, small enough that memory stays flat
_PARSE_BLOCK = 1 << 20  # pyarrow's own sub-blocks (parsed in parallel); a longer line makes it retry with more
_TEXT = re.compile(rb"\S")  # a block holds a record iff it holds a byte other than white space


def parse_object(text: bytes, name: str, lineno: int, hint: str = "") -> dict:
    """One line as a JSON object, refusing bad UTF-8, bad JSON, repeated keys and values that are not objects
    (`hint` ends the message of the last two)."""
    try:
        record = json.loads(utf8_line(text, name, lineno), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg} at character {e.colno}{hint}", source=name, line=lineno,
                        reason="parse error") from None
    except _RepeatedKey as e:
        raise DataError(f"field {e.args[0]!r} appears twice", source=name, line=lineno, reason="parse error") from None
    except RecursionError:  # Python's decoder recurses into nested arrays and objects
        raise DataError(f"not valid JSON: nested too deeply{hint}", source=name, line=lineno,
                        reason="parse error") from None
    except ValueError as e:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise DataError(f"not readable JSON: {e}", source=name, line=lineno, reason="parse error") from None
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object ({{...}}) on each line, found {type(record).__name__}{hint}",
                        source=name, line=lineno, reason="parse error")
    for key in record:  # a \ud800 escape decodes to a lone surrogate, which no UTF-8 text (nor pyarrow) can hold
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"field name {key!r} is not valid Unicode (a lone surrogate escape)", source=name,
                            line=lineno, reason="bad utf-8") from None
    return record


class _RepeatedKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _RepeatedKey(k)
            seen.add(k)
    return d


def read(inp: Input, file_index: int, *, label: str | int | None = None, header: bool | None = None,
         start: int = 0, line: int = 1, block_size: int | None = None, weight: str | int | None = None,
         columns: list[str | int] | None = None, bad=None,
         categorical: list[str | int] | None = None) -> Iterator[Chunk]:
    """Yield chunks of `inp` from byte offset `start` (0, or an offset that a chunk reported, whose line is `line`).
    `bad` (on_bad_record="skip"): bad lines are left out and attached to the chunks (bad_records.py).
    `categorical`: fields whose values (text or numbers) go with each record as `Chunk.cats`, to be hashed
    (hashing.py): parsed by pyarrow where a block holds one kind (all text, all numbers), else by Python's json
    module (mixed kinds, nulls, an object or a list, which it names)."""
    block_size = block_size or BLOCK_SIZE  # read at call time, so that tests can shrink it
    name = inp.path if inp.path != "-" else "<stdin>"
    f = None
    try:
        f = open_input(inp)
        first, consumed, blanks = _read_first_line(f, name)
        while not first.strip():  # lines of white space before the first record (_read_first_line skips empty ones)
            blanks += 1
            first, more, extra = _read_first_line(f, name)
            consumed, blanks = consumed + more, blanks + extra
        # the first line says what the format is: a .json file may hold one document rather than lines
        names = list(parse_object(first, name, blanks + 1, hint=" (JSON lines: one object a line; a JSON array or "
                                  "a document over several lines is not read)"))
        y_col, w_col, x_cols = resolve_columns(label, weight, names, name, columns)
        cat_cols, x_cols = resolve_categorical(categorical, names, name, x_cols, y_col, w_col, columns)
        if not x_cols and not cat_cols:
            raise DataError(f"no feature fields: every field ({', '.join(map(repr, names))}) is the label or the "
                            "weight", source=name, line=blanks + 1, reason="no features")
        if start == 0:
            start, pending, line = consumed - len(first), first, blanks + 1
        else:
            try:
                f.seek(start)
            except _READ_ERRORS as e:
                raise _broken(e, name, line) from None
            pending = b""
        taken = _Fields(names, x_cols, y_col, w_col, strict=not columns, categorical=[names[i] for i in cat_cols])
        for buf, end, offset, at in line_blocks(f, name, start, line, pending, block_size):
            if not _TEXT.search(buf, 0, end):
                continue
            events = None
            try:
                x, y, w = taken.arrays(buf, end, at, name)
            except DataError as e:
                if bad is None:
                    raise
                x, y, w, events = taken.salvage(bytes(memoryview(buf)[:end]), at, name, e)
            cats = taken.parsed_categorical(name) if cat_cols and events is None else None
            if cat_cols and cats is None:  # mixed kinds, a null, an object or a list, or bad lines: by Python
                x, y, w, events, cats = taken.categorical(bytes(memoryview(buf)[:end]), at, name, x, y, w, events,
                                                          bad is not None)
            fraction = min(1.0, (offset + end) / inp.size) if inp.size else 0.0
            yield Chunk(x, y, file_index, offset, 0, at, fraction, w, events, cats=cats)
    except _READ_ERRORS as e:  # opening the input
        raise _broken(e, name, None) from None
    finally:
        if f is not None and f is not sys.stdin.buffer:
            f.close()


class _Fields:
    """The fields taken from each record, and how to parse a block of records into arrays."""

    def __init__(self, names: list[str], x_cols: list[int], y_col: int | None, w_col: int | None, strict: bool,
                 categorical: list[str] = ()):
        self.x = [names[i] for i in x_cols]
        self.y = names[y_col] if y_col is not None else None
        self.w = names[w_col] if w_col is not None else None
        self.used = [*self.x, *(n for n in (self.y, self.w) if n is not None)]
        self.known = set(names) if strict else None  # strict: a field the first record lacks is an error
        self.cats = list(categorical)
        schema = pa.schema([(n, pa.float32()) for n in self.used])
        # categorical fields (text or numbers) are not in pyarrow's schema: it infers their type in each block
        # (`categorical` takes them when that is text or numbers, else reads the block's lines by Python)
        self.parse = pajson.ParseOptions(explicit_schema=schema,
                                         unexpected_field_behavior="infer" if self.cats else
                                         "error" if strict else "ignore")
        self.numeric_only = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        self.table: pa.Table | None = None  # the last block's, for its categorical fields

    def arrays(self, buf: bytes, end: int, first_line: int,
               name: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        block = memoryview(buf)[:end]
        table = None
        try:
            table = self._read(block, _PARSE_BLOCK)
        except pa.ArrowException as e:
            if "straddle" in str(e):  # a line longer than pyarrow's sub-block: parse the block as one
                try:
                    table = self._read(block, end + 1)
                except pa.ArrowException as e2:
                    message = str(e2)
            else:
                message = str(e)
        if table is None:
            self.diagnose(bytes(block), first_line, name, message)
        rows = table.num_rows
        # pyarrow also takes two objects on a line, or one over several lines. Cheap counts catch that: a line
        # that starts with "{" and a line that is not empty per record (almost always). Where either count does
        # not match, the slow pass counts exactly and names the line that is not one object.
        lines = newlines(buf, end) + (buf[end - 1:end] != b"\n")
        empty = buf.count(b"\n\n", 0, end) + (buf[:1] == b"\n")
        if buf.count(b"\n{", 0, end) + (buf[:1] == b"{") != rows or lines - empty != rows:
            if self.diagnose(bytes(block), first_line, name, None) != rows:
                last = first_line + buf.count(b"\n", 0, end)
                raise DataError(f"pyarrow read {rows} records from lines {first_line}-{last}, which hold a "
                                "different number", source=name, line=first_line, reason="parse error")
        self.table = table
        if self.cats and self.known is not None and not set(table.column_names) <= self.known:
            self.diagnose(bytes(block), first_line, name, None)  # a field the first record lacks: named
        cols = {n: table.column(n).to_numpy() for n in self.used}
        if any(table.column(n).null_count for n in self.used) or not all(
                np.isfinite(c).all() for n, c in cols.items() if n != self.w):
            self.diagnose(bytes(block), first_line, name, "a value is missing or not finite")
        x = np.empty((rows, len(self.x)), dtype=np.float32)
        for j, n in enumerate(self.x):
            x[:, j] = cols[n]
        y = np.array(cols[self.y], dtype=np.float32) if self.y is not None else None
        w = np.array(cols[self.w], dtype=np.float32) if self.w is not None else None
        if w is not None:
            check_weights(w, name, first_line, unit="line",
                          line_of=lambda r: self.record_lines(bytes(block), first_line, name)[r])
        return x, y, w

    def _read(self, block: memoryview, sub_block: int) -> pa.Table:
        read = pajson.ReadOptions(use_threads=True, block_size=sub_block)
        try:
            return pajson.read_json(pa.py_buffer(block), read_options=read, parse_options=self.parse)
        except pa.ArrowException as e:
            if not self.cats or "straddle" in str(e):
                raise
            # categorical fields of mixed kinds (text here, a number or an object there): the numbers by pyarrow,
            # the categorical fields by Python (`categorical`)
            return pajson.read_json(pa.py_buffer(block), read_options=read, parse_options=self.numeric_only)

    def salvage(self, block: bytes, first_line: int, name: str, error: DataError):
        """Under on_bad_record="skip", a block the fast path refused: (x, y, w, bad) of its good lines, parsed by the
        fast path again with the bad lines blanked (line numbers stay), and its bad lines as (k, DataError), k good
        records before each. `error` (the fast path's) is raised when no single line is to blame."""
        lines, events, good = block.split(b"\n"), [], 0
        for i, text in enumerate(lines):
            if not text.strip():
                continue
            try:
                self.diagnose(text, first_line + i, name, None)
                if self.w is not None and json.loads(text)[self.w] < 0:
                    raise DataError(f"weight is {json.loads(text)[self.w]} (weights must be finite and not negative)",
                                    source=name, line=first_line + i, reason="bad weight")
                good += 1
            except DataError as e:
                events.append((good, e))
                lines[i] = b""
        if not events:
            raise error
        if not good:
            empty = np.empty(0, dtype=np.float32)
            return (np.empty((0, len(self.x)), dtype=np.float32), None if self.y is None else empty,
                    None if self.w is None else empty, events)
        kept = b"\n".join(lines)
        return (*self.arrays(kept, len(kept), first_line, name), events)

    def parsed_categorical(self, name: str) -> np.ndarray | None:
        """The categorical fields' text from pyarrow's parse of the last block, when every one of them came as text
        or numbers and none is null (a null may be a missing field, which the slow path names); else None."""
        t, self.table = self.table, None
        if t is None or any(n not in t.column_names or t.column(n).null_count for n in self.cats):
            return None
        cols = {}
        for n in self.cats:
            col = t.column(n).combine_chunks()
            kind = col.type
            if not (pa.types.is_string(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)
                    or pa.types.is_boolean(kind)):
                return None
            cols[len(cols)] = col
        return arrow_texts(cols, list(self.cats), name, 0)

    def categorical(self, block: bytes, first_line: int, name: str, x: np.ndarray, y, w, events, skip: bool):
        """(x, y, w, events, cats): the categorical fields' text of the block's records (those `events` did not
        leave out) by Python's json module; a record lacking one, or holding an object or a list there, is refused
        naming its line, or under `skip` left out of x, y, w too and counted."""
        dropped = {e.line for _, e in events or ()}
        cats, lines, wrong = [], [], []
        for i, text in enumerate(block.split(b"\n")):
            lineno = first_line + i
            if not text.strip() or lineno in dropped:
                continue
            record = parse_object(text, name, lineno)
            row = []
            for n in self.cats:
                value = text_of(record[n]) if n in record else None
                if value is None:
                    error = DataError(f"categorical field {n!r} is missing", source=name, line=lineno,
                                      reason="missing value") if n not in record else \
                        bad_value(n, record[n], source=name, line=lineno)
                    if not skip:
                        raise error
                    wrong.append((len(cats), error))
                    break
                row.append(value)
            else:
                cats.append(row)
                lines.append(lineno)
                continue
            cats.append(None)
            lines.append(lineno)
        if wrong:  # under skip: these records leave x, y, w too, and join the events in line order
            keep = np.ones(len(cats), dtype=bool)
            keep[[r for r, _ in wrong]] = False
            x, y, w = x[keep], None if y is None else y[keep], None if w is None else w[keep]
            kept_lines = np.asarray(lines)[keep]
            errors = sorted([e for _, e in events or ()] + [e for _, e in wrong], key=lambda e: e.line)
            events = [(int(np.searchsorted(kept_lines, e.line)), e) for e in errors]
            cats = [c for c in cats if c is not None]
        out = np.empty((len(cats), len(self.cats)), dtype=object)
        out[:] = cats if cats else np.empty((0, len(self.cats)), dtype=object)
        return x, y, w, events, out

    def record_lines(self, block: bytes, first_line: int, name: str) -> list[int]:
        """The line number of each record in a block (the slow path, for messages)."""
        return [first_line + i for i, text in enumerate(block.split(b"\n")) if text.strip()]

    def diagnose(self, block: bytes, first_line: int, name: str, arrow_msg: str | None) -> int:
        """Raise a DataError naming the first bad line of a block; when every line is good, return the number of
        records (if `arrow_msg` is None, else raise an error quoting it: pyarrow refused what Python accepts)."""
        count = 0
        for i, text in enumerate(block.split(b"\n")):
            if not text.strip():
                continue
            lineno = first_line + i
            record = parse_object(text, name, lineno)
            for n in self.used:
                if n not in record:
                    raise DataError(f"field {n!r} is missing", source=name, line=lineno, reason="missing value")
                problem = _value_problem(record[n])
                if problem:
                    raise DataError(f"field {n!r} {problem[0]}", source=name, line=lineno, reason=problem[1])
            if self.known is not None:
                extra = next((k for k in record if k not in self.known), None)
                if extra is not None:
                    raise DataError(f"unknown field {extra!r} (the first record has no such field; choose the "
                                    "fields to read with --columns to ignore the others)", source=name, line=lineno,
                                    reason="unknown field")
            count += 1
        if arrow_msg is not None:
            last = first_line + block.count(b"\n")
            raise DataError(f"cannot parse lines {first_line}-{last}: {arrow_msg}", source=name, line=first_line,
                            reason="parse error")
        return count


def _value_problem(v: object) -> tuple[str, str] | None:
    """Why a field's value is not a finite float32 number; None if it is one."""
    if v is None:
        return "is null (missing value)", "missing value"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"is not a number: {json.dumps(v)[:40]}", "not a number"
    try:
        value = float(v)
    except OverflowError:  # an integer beyond any float
        return f"is inf (NaN and infinity are not allowed): {str(v)[:40]} is beyond the float32 range", "not finite"
    if not np.isfinite(value):
        return f"is {value} (NaN and infinity are not allowed)", "not finite"
    with np.errstate(over="ignore"):
        if not np.isfinite(np.float32(value)):
            return f"is inf (NaN and infinity are not allowed): {value} is beyond the float32 range", "not finite"
    return None
