"""Raw text as bag-of-words: documents read from a text column (CSV, JSON lines, Parquet, a SQL query) or from plain
text files (one document a line), tokenized, and counted over a vocabulary built in bounded memory from the head of
the stream.

Tokens.  Lowercased, then the words of two or more letters or digits (scikit-learn's CountVectorizer pattern,
``\\b\\w\\w+\\b``, Unicode-aware), less the English stop words of `stopwords.py` and tokens of digits only.

Vocabulary.  Document frequencies over the first `documents` documents are counted by a Misra-Gries summary of
`capacity` counters (Misra & Gries 1982): a word of the head is counted on its own counter; a new word when all are
taken decrements every counter by one and drops those at zero. Every word in more than H / (capacity + 1) of the H
head documents survives, each count is at most H / (capacity + 1) below the truth, and the memory is `capacity`
words, whatever the stream. The vocabulary is then the `size` most frequent words whose counted document frequency
is at least `min_df` and at most `max_df` of H, most frequent first (ties by the word), so that the same head gives
the same vocabulary. capacity = SKETCH_FACTOR x size.

Counting.  Each document becomes a sparse row of counts over the vocabulary; tokens outside it are counted
(`tokens`, `oov_tokens` in every batch's position, so a resumed run goes on counting and the state reports them).
Positions are a file and the documents of it already read: a resumed run reads that file again from its start and
skips them (text readers have no restart offsets).
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import DataError, UsageError
from . import sql
from .batches import Batch, Examples, Stream
from .opening import open_input, random_access
from .sparse import CSR
from .stopwords import ENGLISH

TOKEN = re.compile(r"(?u)\b\w\w+\b")
TEXT_FORMATS = ("csv", "jsonl", "parquet", "text", "sql")
SKETCH_FACTOR = 10    # Misra-Gries counters per vocabulary word: words in more than 1/(10 size) of the head survive
CSV_BLOCK = 1 << 20   # bytes per CSV block (pyarrow's streaming reader)


def tokenize(text: str) -> list[str]:
    """The document's tokens, in order."""
    return [t for t in TOKEN.findall(text.lower()) if t not in ENGLISH and not t.isdigit()]


class MisraGries:
    """Approximate counts of the most frequent items in `capacity` counters (see the module docstring)."""

    def __init__(self, capacity: int):
        self.capacity, self.counts, self.n = capacity, {}, 0

    def add(self, items: set[str]) -> None:
        self.n += 1
        for w in items:
            if w in self.counts:
                self.counts[w] += 1
            elif len(self.counts) < self.capacity:
                self.counts[w] = 1
            else:  # decrement all: amortized O(1), each decrement pays for an earlier increment
                self.counts = {k: c - 1 for k, c in self.counts.items() if c > 1}

    def vocabulary(self, size: int, min_df: int, max_df: float) -> list[str]:
        most = max_df * self.n
        kept = [(c, w) for w, c in self.counts.items() if min_df <= c <= most]
        return [w for c, w in sorted(kept, key=lambda cw: (-cw[0], cw[1]))[:size]]


def documents(stream: Stream, column: str | int | None, start: dict[str, Any] | None = None
              ) -> Iterator[tuple[str, int, int]]:
    """(text, file index, documents of that file read so far) for every document of the stream, from `start`."""
    if stream.format not in TEXT_FORMATS:
        raise UsageError(f"--text-column: {stream.format} input holds no text (text formats: "
                         f"{', '.join(TEXT_FORMATS)})")
    if stream.stride is not None:
        raise UsageError("raw text cannot be shared out record by record between processes; give one file per "
                         "process")
    if stream.format != "text" and column is None:
        raise UsageError(f"{stream.name}: name the column that holds the documents (--text-column NAME)")
    first = int(start["file"]) if start else 0
    for i in range(first, len(stream.inputs)):
        skip = int(start.get("skip", 0)) if start and i == first else 0
        k = 0
        for text in _READERS[stream.format](stream.inputs[i], column, stream.header):
            k += 1
            if k > skip:
                yield text, i, k


def _where(fmt: str, k: int) -> dict[str, int]:
    return {"line": k} if fmt in ("text", "jsonl") else {"row": k}


def _text_lines(inp, column, header) -> Iterator[str]:
    f = open_input(inp)
    try:
        for k, raw in enumerate(f, 1):
            try:
                yield raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start} of the line)", source=inp.path, line=k,
                                reason="bad utf-8") from None
    finally:
        if inp.path != "-":
            f.close()


def _jsonl(inp, column, header) -> Iterator[str]:
    for k, line in enumerate(_text_lines(inp, column, header), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"not JSON ({e.msg})", source=inp.path, line=k, reason="bad json") from None
        yield _checked_text(record.get(column) if isinstance(record, dict) else None, column, inp.path, line=k)


def _checked_text(value: Any, column, source: str, **where: int) -> str:
    if not isinstance(value, str):
        raise DataError(f"field {column!r} is {'missing' if value is None else type(value).__name__}, not text",
                        source=source, reason="not text", **where)
    return value


def _columns(names: list[str], column, source: str) -> str:
    if isinstance(column, int) or (isinstance(column, str) and column.isdigit() and column not in names):
        if not 0 <= int(column) < len(names):
            raise UsageError(f"--text-column {column}: {source} has {len(names)} columns")
        return names[int(column)]
    if column not in names:
        raise UsageError(f"--text-column {column!r}: no such column in {source}; columns: {', '.join(names[:20])}")
    return column


def _csv(inp, column, header) -> Iterator[str]:
    f = open_input(inp)
    try:
        options = pacsv.ReadOptions(block_size=CSV_BLOCK, autogenerate_column_names=header is False)
        try:
            reader = pacsv.open_csv(f, read_options=options, convert_options=pacsv.ConvertOptions(
                column_types={}, strings_can_be_null=False))
            name = _columns(reader.schema.names, column, inp.path)
            row = 0
            for rb in reader:
                values = rb.column(name).cast(pa.string()).to_pylist()
                for value in values:
                    row += 1
                    yield _checked_text(value, column, inp.path, row=row)
        except pa.ArrowInvalid as e:
            raise DataError(f"not readable as CSV ({e})", source=inp.path, reason="bad csv") from None
    finally:
        if inp.path != "-":
            f.close()


def _parquet(inp, column, header) -> Iterator[str]:
    pf = pq.ParquetFile(random_access(inp))
    name = _columns(pf.schema_arrow.names, column, inp.path)
    row = 0
    for rb in pf.iter_batches(batch_size=1 << 14, columns=[name]):
        for value in rb.column(0).to_pylist():
            row += 1
            yield _checked_text(value, column, inp.path, row=row)


def _sql(inp, column, header) -> Iterator[str]:
    """The text column of a query's rows (data/sql.py), fetched in batches; row 1 is the first."""
    with sql.query_rows(inp) as (names, fetches):
        j = names.index(_columns(list(names), column, inp.path))
        row = 0
        for rows in fetches:
            if not rows:
                break
            for values in rows:
                row += 1
                yield _checked_text(values[j], column, inp.path, row=row)


_READERS = {"text": _text_lines, "jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "sql": _sql}


def build_vocabulary(stream: Stream, column, size: int, head: int, min_df: int, max_df: float) -> list[str]:
    """The vocabulary of the first `head` documents (see the module docstring)."""
    sketch = MisraGries(SKETCH_FACTOR * size)
    for n, (text, _, _) in enumerate(documents(stream, column)):
        if n >= head:
            break
        sketch.add(set(tokenize(text)))
    words = sketch.vocabulary(size, min_df, max_df)
    if not words:
        raise UsageError(f"{stream.name}: no word of the first {sketch.n:,} documents is in at least min_df = "
                         f"{min_df} and at most max_df = {max_df} of them: no vocabulary")
    return words


class TextExamples(Examples):
    """A stream's documents as sparse rows of word counts over `vocabulary` (a list, or a function giving it when
    the first batch is asked for: the trainer's validation stream waits for the training stream's vocabulary)."""

    def __init__(self, stream: Stream, column, vocabulary):
        super().__init__(stream)
        self.column, self._vocabulary = column, vocabulary

    @property
    def sparse(self) -> bool:
        return True

    @property
    def seekable(self) -> bool:
        return self.stream.seekable

    def batches(self, batch_size: int, start: dict[str, Any] | None = None, prefetch: int = 2) -> Iterator[Batch]:
        words = self._vocabulary() if callable(self._vocabulary) else self._vocabulary
        index = {w: i for i, w in enumerate(words)}
        records = int(start.get("records", 0)) if start else 0
        tokens = int(start.get("tokens", 0)) if start else 0
        oov = int(start.get("oov_tokens", 0)) if start else 0
        rows: list[np.ndarray] = []
        last = (0, 0)
        for text, i, k in documents(self.stream, self.column, start):
            toks = tokenize(text)
            ids = np.fromiter((index.get(t, -1) for t in toks), dtype=np.int64, count=len(toks))
            tokens, oov = tokens + len(toks), oov + int((ids < 0).sum())
            rows.append(ids[ids >= 0])
            last = (i, k)
            if len(rows) == batch_size:
                records += len(rows)
                yield self._batch(rows, len(words), last, records, tokens, oov)
                rows = []
        if rows:
            records += len(rows)
            yield self._batch(rows, len(words), last, records, tokens, oov)

    def _batch(self, rows: list[np.ndarray], V: int, last: tuple[int, int], records: int, tokens: int,
               oov: int) -> Batch:
        indptr, indices, data = [0], [], []
        for ids in rows:
            cols, counts = np.unique(ids, return_counts=True)
            indices.append(cols)
            data.append(counts.astype(np.float32))
            indptr.append(indptr[-1] + len(cols))
        x = CSR(np.asarray(indptr, np.int64), np.concatenate(indices) if indices else np.zeros(0, np.int64),
                np.concatenate(data) if data else np.zeros(0, np.float32), (len(rows), V)).to_torch()
        position = {"file": last[0], "path": self.stream.inputs[last[0]].path, "skip": last[1], "records": records,
                    "tokens": tokens, "oov_tokens": oov}
        return Batch(x, None, position)
