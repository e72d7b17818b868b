"""What every format reader yields: contiguous runs of records with the place they came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """

    x: np.ndarray | CSR
    y: np.ndarray | None
    file: int
    offset: int
    base: int
    line: int
    fraction: float

    def __len__(self) -> int:
        return self.x.shape[0]


def resolve_label(label: str | int | None, names: list[str], source: str) -> int | None:
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
            raise UsageError(f"--label-column {label}: {source} has only {len(names)} columns")
        return i % len(names)
    if label in names:
        return names.index(label)
    raise UsageError(f"--label-column {label!r}: no such column in {source}; columns: {', '.join(names[:20])}"
                     + (" ..." if len(names) > 20 else ""))


def check_finite(x: np.ndarray, source: str, first: int, *, unit: str = "row", line_of=None) -> None:
    """Refuse NaN and infinity, naming the first bad record and column."""
    if x.size and not np.isfinite(x).all():
        r, c = np.argwhere(~np.isfinite(x))[0]
        where = line_of(int(r)) if line_of else first + int(r)
        raise DataError(f"field {c + 1} is {x[r, c]} (NaN and infinity are not allowed)",
                        source=source, **{unit: where}, reason="not finite")
