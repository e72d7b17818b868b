"""What every format reader yields: contiguous runs of records with the place they came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from ..errors import DataError, UsageError
from .sparse import CSR


@dataclass
class Chunk:
    """Consecutive records of one input.

    x:        features, float32, shape (n, d): a dense array, or a CSR (sparse formats).
    y:        labels, float32, shape (n,), or None.
    file:     index of the input in the source's list.
    offset:   where reading can restart: a byte offset (CSV), a row group (Parquet) or a row (NumPy).
    base:     records between `offset` and this chunk's first record.
    line:     line number (CSV, 1-based) or row number (0-based) of the first record, for messages.
    fraction: share of the input read once this chunk is done (0..1), for the progress display.
    w:        per-record weights, float32, shape (n,), or None (every record weighs 1).
    bad:      under on_bad_record="skip": the records left out, as (k, DataError) with k good records of this
              chunk before each (see bad_records.py); `base` and `offset` count good records only.
    ids:      the text of an id column (CSV with `keep`), an object array of shape (n,), or None.
    at:       a live stream's chunk: the stream's position before its record s (`at(s)`), which replaces offset
              and base (data/live/base.py).
    quiet:    a live stream had no record for a while: an empty chunk, so that the records waiting are trained.
    cats:     the values of the categorical columns (`categorical`) as text: an object array (n, c), or a list of c
              columns (pyarrow string arrays or object arrays), which the stream hashes into features (hashing.py);
              None without categorical columns.
    """

    x: np.ndarray | CSR
    y: np.ndarray | None
    file: int
    offset: int
    base: int
    line: int
    fraction: float
    w: np.ndarray | None = None
    bad: list[tuple[int, DataError]] | None = None
    ids: np.ndarray | None = None
    at: Callable[[int], dict[str, Any]] | None = None
    quiet: bool = False
    cats: np.ndarray | None = None

    def __len__(self) -> int:
        return self.x.shape[0]


def resolve_label(label: str | int | None, names: list[str], source: str, option: str = "--label-column") -> int | None:
    """The index of the label column: None, 'none', 'first', 'last', an index, or a column name."""
    if label is None or label == "none":
        return None
    if label == "first":
        return 0
    if label == "last":
        return len(names) - 1
    if isinstance(label, int) or (isinstance(label, str) and label.lstrip("-").isdigit()):
        i = int(label)
        if not -len(names) <= i < len(names):
            raise UsageError(f"{option} {label}: {source} has only {len(names)} columns")
        return i % len(names)
    if label in names:
        return names.index(label)
    raise UsageError(f"{option} {label!r}: no such column in {source}; columns: {', '.join(names[:20])}"
                     + (" ..." if len(names) > 20 else ""))


def resolve_columns(label: str | int | None, weight: str | int | None, names: list[str], source: str,
                    columns: list[str | int] | None = None) -> tuple[int | None, int | None, list[int]]:
    """The label column, the weight column and the feature columns, by index: `columns` (names or indices, in
    that order) when given, else every column that is neither the label nor the weight."""
    y_col = resolve_label(label, names, source)
    w_col = resolve_label(weight, names, source, "--weight-column") if weight is not None else None
    if w_col is not None and w_col == y_col:
        raise UsageError(f"--weight-column and --label-column name the same column ({names[w_col]!r}) of {source}")
    if not columns:
        return y_col, w_col, [i for i in range(len(names)) if i not in (y_col, w_col)]
    x_cols: list[int] = []
    for c in columns:
        i = resolve_label(c, names, source, "--columns")
        if i is None:
            raise UsageError(f"--columns: {c!r} is not a column of {source}")
        if i in (y_col, w_col):
            raise UsageError(f"--columns names column {names[i]!r} of {source}, which is the "
                             f"{'label' if i == y_col else 'weight'}")
        if i in x_cols:
            raise UsageError(f"--columns names column {names[i]!r} of {source} twice")
        x_cols.append(i)
    return y_col, w_col, x_cols


def resolve_categorical(categorical: list[str | int] | None, names: list[str], source: str, x_cols: list[int],
                        y_col: int | None, w_col: int | None,
                        columns: list[str | int] | None = None) -> tuple[list[int], list[int]]:
    """The categorical columns by index (hashing.py), and the numeric feature columns without them. A categorical
    column that is not there, or is the label or the weight, or is named by `columns` too, is a usage error.
    `categorical` may be a stream's `Hashing`, which hears the numeric columns' names and the record's layout."""
    if not categorical:
        return [], x_cols
    cat_cols = []
    for c in categorical:
        i = resolve_label(c, names, source, "--categorical-columns")
        if i in (y_col, w_col):
            raise UsageError(f"--categorical-columns names column {names[i]!r} of {source}, which is the "
                             f"{'label' if i == y_col else 'weight'}")
        if columns and i in x_cols:
            raise UsageError(f"column {names[i]!r} of {source} is in both --columns (numeric) and "
                             "--categorical-columns")
        cat_cols.append(i)
    x_cols = [i for i in x_cols if i not in cat_cols]
    expected = getattr(categorical, "numeric", None)  # a model's numeric columns, when `columns` was not given
    if expected is not None and not columns:
        missing = [n for n in expected if n not in names]
        if missing:
            raise UsageError(f"{source} has no column {missing[0]!r}, a numeric feature column of the model")
        x_cols = [names.index(n) for n in expected]
    heard = getattr(categorical, "heard", None)  # the stream's Hashing keeps the layout, for predict and serve
    if heard is not None:
        heard([names[i] for i in x_cols], [names[i] for i in sorted(x_cols + cat_cols)])
    return cat_cols, x_cols


def check_weights(w: np.ndarray, source: str, first: int, *, unit: str = "row", line_of=None) -> None:
    """Weights are finite and not negative; name the first record whose weight is not."""
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        where = line_of(r) if line_of else first + r
        raise DataError(f"weight is {w[r]} (weights must be finite and not negative)", source=source,
                        **{unit: where}, reason="bad weight")


def check_finite(x: np.ndarray, source: str, first: int, *, unit: str = "row", line_of=None) -> None:
    """Refuse NaN and infinity, naming the first bad record and column."""
    if x.size and not np.isfinite(x).all():
        r, c = np.argwhere(~np.isfinite(x))[0]
        where = line_of(int(r)) if line_of else first + int(r)
        raise DataError(f"field {c + 1} is {x[r, c]} (NaN and infinity are not allowed)",
                        source=source, **{unit: where}, reason="not finite")


def check_numeric(schema: pa.Schema, used: list[int], source: str) -> None:
    """Refuse a column the reader would take (features, label, weight) that is not numeric, before reading."""
    for i in used:
        fld = schema.field(i)
        if not (pa.types.is_integer(fld.type) or pa.types.is_floating(fld.type) or pa.types.is_boolean(fld.type)):
            raise DataError(f"column {fld.name!r} is {fld.type}, not numeric", source=source, reason="not a number")


def check_rows(x: np.ndarray, y: np.ndarray | None, w: np.ndarray | None, source: str, row: int) -> None:
    """Refuse a value that is not finite (features, label) or a bad weight, naming the first row that holds one."""
    check_finite(x, source, row)
    if y is not None:
        check_finite(y[:, None], source, row)
    if w is not None:
        check_weights(w, source, row)


def checked_rows(x: np.ndarray, y: np.ndarray | None, w: np.ndarray | None, source: str, row: int, skip: bool,
                 known: dict[int, DataError] | None = None):
    """(x, y, w, bad): with `skip`, the rows `check_rows` would refuse are left out (see drop_bad_rows); without,
    the first of them is refused."""
    bad = None
    if skip:
        x, y, w, bad = drop_bad_rows(x, y, w, source, row, known)
    check_rows(x, y, w, source, row)
    return x, y, w, bad


def drop_bad_rows(x: np.ndarray, y: np.ndarray | None, w: np.ndarray | None, source: str, row: int,
                  known: dict[int, DataError] | None = None):
    """Under on_bad_record="skip": (x, y, w, bad) without the rows found bad already (`known`: row -> error, such
    as a missing value) or holding a value that is not finite or a bad weight; `bad` lists each as (good rows
    before it, DataError), with the message the fail policy gives. Cheap when every row is good."""
    with np.errstate(invalid="ignore"):
        wrong = ~np.isfinite(x).all(axis=1) if x.size else np.zeros(len(x), dtype=bool)
        if y is not None:
            wrong |= ~np.isfinite(y)
        if w is not None:
            wrong |= ~np.isfinite(w) | (w < 0)
    if known:
        wrong[list(known)] = True
    if not wrong.any():
        return x, y, w, None
    bad = []
    for k, r in enumerate(np.flatnonzero(wrong)):
        r = int(r)
        try:
            if known and r in known:
                raise known[r]
            check_rows(x[r:r + 1], None if y is None else y[r:r + 1], None if w is None else w[r:r + 1], source,
                       row + r)
        except DataError as e:
            bad.append((r - k, e))
    keep = ~wrong
    pick = (lambda a: None if a is None else a[keep])
    return x[keep], pick(y), pick(w), bad


def arrow_arrays(cols: dict[int, pa.Array], names: list[str], x_cols: list[int], y_col: int | None,
                 w_col: int | None, source: str, row: int, skip: bool = False):
    """Features, labels and weights of columnar records (Parquet, Arrow IPC) whose first is row `row`, checked:
    no missing value, finite features and labels, valid weights. `cols` maps a column's index to its values.
    With `skip` (on_bad_record="skip"), bad rows are left out instead: (x, y, w, bad) as drop_bad_rows gives."""
    if skip:
        nulls = {i: c.is_null().to_numpy(zero_copy_only=False) for i, c in cols.items() if c.null_count}
        known: dict[int, DataError] = {}
        for i in sorted(nulls, reverse=True):  # the first column missing a value names the row
            known.update({int(r): DataError(f"column {names[i]!r} is missing a value", source=source, row=row + int(r),
                                            reason="missing value") for r in np.flatnonzero(nulls[i])})
        x, y, w = _arrow_values({i: c.fill_null(0) if i in nulls else c for i, c in cols.items()},
                                x_cols, y_col, w_col)
        return drop_bad_rows(x, y, w, source, row, known)
    for i, c in cols.items():
        if c.null_count:
            r = int(np.flatnonzero(c.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"column {names[i]!r} is missing a value", source=source, row=row + r,
                            reason="missing value")
    x, y, w = _arrow_values(cols, x_cols, y_col, w_col)
    check_rows(x, y, w, source, row)
    return x, y, w


def _arrow_values(cols: dict[int, pa.Array], x_cols: list[int], y_col: int | None,
                  w_col: int | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    n = len(next(iter(cols.values())))
    x = np.empty((n, len(x_cols)), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused with its row
        for j, i in enumerate(x_cols):
            x[:, j] = cols[i].to_numpy(zero_copy_only=False)
        y = cols[y_col].to_numpy(zero_copy_only=False).astype(np.float32) if y_col is not None else None
        w = cols[w_col].to_numpy(zero_copy_only=False).astype(np.float32) if w_col is not None else None
    return x, y, w
