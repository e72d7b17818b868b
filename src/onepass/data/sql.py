"""SQL query sources: `--data URL --query 'SELECT ...'`, fetched in batches of rows, never whole.

SQLite URLs (``sqlite:///relative.db``, ``sqlite:////absolute.db``) use the standard library's sqlite3, whose
cursor steps through the result as it is fetched: no extra dependency. Every other database URL goes through
SQLAlchemy (``pip install 'onepass[sql]'`` plus the database's driver, e.g. psycopg for PostgreSQL) with
``stream_results``, a server-side cursor where the driver has one, so the server sends rows as they are read.

The query chooses the columns: the label and weight columns are taken by name (``--label-column``,
``--weight-column``), every other column is a feature. A NULL or a value that is not a number (text, a date) is a
DataError naming the column and the query's row (1 is the first). A query cannot seek: a resumed run reads what
the query returns now (the trainer warns), and each epoch runs the query again.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, unquote

import numpy as np

from ..errors import DataError, UsageError
from .chunks import Chunk, checked_rows, resolve_categorical, resolve_columns
from .hashing import bad_value, text_of
from .sources import Input

FETCH_ROWS = 10_000  # rows per fetch: the size of a round trip, and of a chunk
_NUMBERS = (int, float, bool, Decimal, np.number, np.bool_)


def read(inp: Input, file_index: int, *, label: str | int | None = None, header: bool | None = None,
         start: int = 0, line: int = 0, block_size: int | None = None,
         weight: str | int | None = None, bad=None,
         categorical: list[str | int] | None = None) -> Iterator[Chunk]:
    """Yield chunks of the query's rows; a chunk's base is the rows before it (the query cannot restart midway).
    `bad` (on_bad_record="skip"): rows holding a NULL, a value that is not a number or not finite are left out and
    attached to the chunks; base then counts the good rows. `categorical`: columns whose values (text or numbers;
    NULL is the empty text) go with each row as `Chunk.cats`, to be hashed (hashing.py)."""
    with query_rows(inp) as (names, fetches):
        y_col, w_col, x_cols = resolve_columns(label, weight, names, inp.path)
        cat_cols, x_cols = resolve_categorical(categorical, names, inp.path, x_cols, y_col, w_col)
        if not x_cols and not cat_cols:
            raise DataError("the query returns no feature columns (only the label or the weight)", source=inp.path,
                            reason="no features")
        row = base = 0
        for rows in fetches:
            if not rows:
                break
            known: dict[int, DataError] | None = {} if bad is not None else None
            values = _numbers(rows, names, inp.path, row + 1, known, set(cat_cols))
            cats = _texts(rows, cat_cols, names, inp.path, row + 1, known) if cat_cols else None
            x = np.ascontiguousarray(values[:, x_cols], dtype=np.float32)
            y = values[:, y_col].astype(np.float32) if y_col is not None else None
            w = values[:, w_col].astype(np.float32) if w_col is not None else None
            x, y, w, events = checked_rows(x, y, w, inp.path, row + 1, skip=bad is not None, known=known)
            if events and cats is not None:  # the rows left out: event k is the row after k good ones and k events
                keep = np.ones(len(cats), dtype=bool)
                keep[[good + k for k, (good, _) in enumerate(events)]] = False
                cats = cats[keep]
            yield Chunk(x, y, file_index, 0, base, row + 1, 0.0, w, events, cats=cats)
            row, base = row + len(rows), base + len(x)
        if row == 0:
            raise DataError("the query returned no rows", source=inp.path, reason="empty")


def _texts(rows: list, cat_cols: list[int], names: list[str], source: str, first: int,
           known: dict[int, DataError] | None = None) -> np.ndarray:
    """The categorical columns' text (hashing.text_of); a value of another kind (bytes, a date) raises, naming
    column and row (or, given `known`, is noted there by row, the row to be left out)."""
    out = np.empty((len(rows), len(cat_cols)), dtype=object)
    for r, values in enumerate(rows):
        for j, i in enumerate(cat_cols):
            text = text_of(values[i])
            if text is None:
                error = bad_value(names[i], values[i], source, row=first + r)
                if known is None:
                    raise error
                known.setdefault(r, error)
                text = ""
            out[r, j] = text
    return out


def _numbers(rows: list, names: list[str], source: str, first: int,
             known: dict[int, DataError] | None = None, text: set[int] = frozenset()) -> np.ndarray:
    """The rows as a float64 matrix; a NULL or a value that is not a number raises, naming column and row (or,
    given `known`, is noted there by row and read as 0, the row to be left out)."""
    try:
        arr = np.array(rows)  # numeric rows convert at C speed; NULLs, text and dates give another kind
    except ValueError:
        arr = np.empty(0, dtype=object)
    if arr.ndim == 2 and arr.dtype.kind in "biuf":
        return arr.astype(np.float64, copy=False)
    out = np.empty((len(rows), len(names)), dtype=np.float64)
    for j, column in enumerate(zip(*rows)):
        if j in text:  # categorical: not converted (left at 0, not taken)
            out[:, j] = 0.0
            continue
        for r, v in enumerate(column):
            if not isinstance(v, _NUMBERS):
                if v is None:
                    error = DataError(f"column {names[j]!r} is NULL (missing value)", source=source, row=first + r,
                                      reason="missing value")
                else:
                    error = DataError(f"column {names[j]!r} is {type(v).__name__} {str(v)[:40]!r}, not a number",
                                      source=source, row=first + r, reason="not a number")
                if known is None:
                    raise error
                known.setdefault(r, error)
        out[:, j] = np.array([float(v) if isinstance(v, _NUMBERS) else 0.0 for v in column], dtype=np.float64)
    return out


@contextmanager
def query_rows(inp: Input):
    """(column names, an iterator of row lists) for the query of `inp`; the connection closes on exit."""
    url = inp.connect or inp.path
    if url.lower().startswith("sqlite://"):
        with _sqlite(url, inp) as result:
            yield result
    else:
        with _sqlalchemy(url, inp) as result:
            yield result


@contextmanager
def _sqlite(url: str, inp: Input):
    path = unquote(url.split("://", 1)[1].split("?", 1)[0])
    path = path[1:] if path.startswith("/") else path  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db
    if path in ("", ":memory:"):
        raise UsageError(f"{inp.path}: an in-memory SQLite database holds no data; name a file: sqlite:///file.db")
    if not Path(path).is_file():
        raise DataError("no such SQLite database file", source=inp.path, reason="missing")
    try:  # read-only: a query source never changes the database
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as e:
        raise DataError(f"cannot open the database ({e})", source=inp.path, reason="unreadable") from None
    try:
        try:
            cur = conn.execute(inp.query)
        except sqlite3.Error as e:
            raise DataError(f"the query failed ({e}): {inp.query}", source=inp.path, reason="query failed") from None
        if cur.description is None:
            raise UsageError(f"{inp.path}: the query returns no rows (not a SELECT?): {inp.query}")
        names = [d[0] for d in cur.description]

        def fetches() -> Iterator[list]:
            while True:
                try:
                    rows = cur.fetchmany(FETCH_ROWS)
                except sqlite3.Error as e:
                    raise DataError(f"the query failed while fetching ({e})", source=inp.path,
                                    reason="query failed") from None
                yield rows
                if not rows:
                    return
        yield names, fetches()
    finally:
        conn.close()


@contextmanager
def _sqlalchemy(url: str, inp: Input):
    try:
        import sqlalchemy
        from sqlalchemy import exc
    except ImportError:
        raise UsageError(f"{inp.path}: database URLs other than sqlite:// need SQLAlchemy and the database's "
                         "driver: pip install 'onepass[sql]' (and e.g. psycopg for PostgreSQL)") from None

    def failed(e: Exception, what: str) -> DataError:
        cause = getattr(e, "orig", None) or e
        return DataError(f"{what} ({type(cause).__name__}: {str(cause).strip()})", source=inp.path,
                         reason="query failed")

    try:
        engine = sqlalchemy.create_engine(url)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as e:
        raise UsageError(f"{inp.path}: not a database URL SQLAlchemy can use ({e})") from None
    try:
        try:
            conn = engine.connect()
        except exc.SQLAlchemyError as e:
            raise failed(e, "cannot connect") from None
        with conn:
            try:  # stream_results: a server-side cursor where the driver has one; yield_per: rows per fetch
                result = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS).exec_driver_sql(
                    inp.query.replace("%", "%%") if _pyformat(engine) else inp.query)
            except exc.SQLAlchemyError as e:
                raise failed(e, f"the query failed: {inp.query}") from None
            if not result.returns_rows:
                raise UsageError(f"{inp.path}: the query returns no rows (not a SELECT?): {inp.query}")
            names = list(result.keys())

            def fetches() -> Iterator[list]:
                try:
                    for part in result.partitions():
                        yield [tuple(r) for r in part]
                except exc.SQLAlchemyError as e:
                    raise failed(e, "the query failed while fetching") from None
            yield names, fetches()
    finally:
        engine.dispose()


def _pyformat(engine: Any) -> bool:
    """Whether the driver reads % as a parameter marker (psycopg, MySQL drivers): a literal % is then doubled."""
    return engine.dialect.paramstyle in ("format", "pyformat")
