"""Fixed-size mini-batches from any source, read ahead in a background thread, with exact resume positions.

A batch's `position` says where the record after it lies (input, restart offset, records to skip), so a
checkpoint taken after any batch resumes at the exact next record, and the batches that follow are the same
ones an uninterrupted run would have seen: batching depends only on the sequence of records.
"""

from __future__ import annotations

import functools
import queue
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import DataError, UsageError
from . import arrow, csv, jsonl, libsvm, npy, npz, parquet
from . import sql
from . import recordio
from . import memory
from .live import base as live
from .bad_records import BadRecords, resolve as resolve_bad_records
from .chunks import Chunk
from .hashing import Hashing
from .series import SeriesRecord, read_series
from .sources import Input, detect_format, resolve
from .sparse import CSR

READERS = {"csv": csv.read, "parquet": parquet.read, "npy": npy.read, "libsvm": libsvm.read, "jsonl": jsonl.read,
           "arrow": arrow.read, "npz": npz.read}
READERS["sql"] = sql.read  # query sources: Stream(url, query=...)
READERS["recordio-protobuf"] = recordio.read
READERS["memory"] = memory.read  # NumPy, SciPy sparse and torch data in memory (memory.py)


def _text_only(inp: Input, *args: Any, **kwargs: Any):
    raise UsageError(f"{inp.path}: plain text (--data-format text) is read by an algorithm that makes examples of "
                     "text (ntm), not as rows of numbers")


READERS["text"] = _text_only  # documents, one a line: data/text.py reads them
SPARSE_FORMATS = ("libsvm",)  # their batches' x is a torch sparse CSR tensor
# formats whose files may be dense or sparse: their first record tells (True, False, or None: cannot look ahead)
EITHER_FORMATS = {"recordio-protobuf": recordio.first_is_sparse, "memory": memory.first_is_sparse}
# formats whose readers take `columns` (feature columns by name or index)
COLUMN_FORMATS: tuple[str, ...] = ("csv", "parquet", "npy", "jsonl", "arrow", "npz", "memory")
# formats whose readers can skip bad records (on_bad_record="skip"; they take `bad`)
SKIP_FORMATS: tuple[str, ...] = ("csv", "parquet", "npy", "libsvm", "jsonl", "arrow", "npz", "sql", "memory")
# formats whose readers take `categorical` (columns hashed into features: hashing.py)
CATEGORICAL_FORMATS: tuple[str, ...] = ("csv", "parquet", "jsonl", "arrow", "sql")


@dataclass
class Batch:
    """One mini-batch: features (n, d) float32, dense or sparse CSR (sparse formats), optional labels (n,) and
    weights (n,), and where the stream stands after it."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    position: dict[str, Any] = field(default_factory=dict)
    fraction: float | None = None  # share of the epoch read, when the size is known
    w: torch.Tensor | None = None  # per-record weights; None means every record weighs 1
    bad: dict[str, Any] | None = None  # on_bad_record="skip": the stream's bad-record tally after this batch
    ids: np.ndarray | None = None  # Stream(id_column=...): each record's id, as text

    def __len__(self) -> int:
        return self.x.shape[0]


class Stream:
    """A data source opened for reading: `Stream("data/*.csv").batches(5000)`.

    source:       a path, glob, folder, ``-`` (stdin), a FIFO, a SageMaker pipe-mode channel (its FIFOs ``NAME_0``,
                  ``NAME_1``... one per call of `batches`), an fsspec URL (``s3://...``, may hold a glob or name a
                  prefix), a database URL with `query`, or a list of those; or data in memory: a NumPy array, a SciPy
                  sparse matrix, a torch tensor, an (X, y[, w]) tuple, or an iterable of those or of `Batch`es
                  (memory.py).
    storage_options: fsspec options for URLs (credentials, endpoint_url...); never saved in a checkpoint.
    query:        a SQL query; `source` is then a database URL (``sqlite:///file.db``, ``postgresql://...``).
    data_format:  ``csv``, ``parquet``, ``npy``, ``libsvm``, ``jsonl``, ``arrow``, ``npz`` or ``recordio-protobuf``;
                  detected from the file names when None.
    label_column: None for unsupervised data; ``first``, ``last``, an index or a column name otherwise.
    header:       CSV only: True, False, or None to detect a header line.
    weight_column: None, or the column (index or name) holding each record's weight (dense formats with columns).
    columns:      the feature columns (names or indices) to read, in this order; None reads every column that is
                  not the label or the weight.
    n_features:   LibSVM only (required there): the batches' width.
    zero_based:   LibSVM only: feature indices start at 0 (default: at 1, as SVMlight's).
    shard:        (rank, world_size): read only this worker's share, so that N workers read every record once:
                  whole files when there are at least N (balanced by size), else every N-th record.
    on_bad_record: ``fail`` (a bad record raises a DataError naming it) or ``skip`` (bad records are left out and
                  counted in `bad`, see bad_records.py); max_bad_fraction: with skip, the largest share of bad
                  records allowed (default 0.01) before a DataError stops reading.
    id_column:    CSV only: a column (name or index) whose text goes with each record (`Batch.ids`), so that
                  predictions can be joined back to their records; not a feature unless `columns` names it.
    text_column:  the column (name or index) of CSV, JSON lines or Parquet records that holds raw text, for an
                  algorithm that makes examples of text (the topic model; data/text.py); plain text files, one
                  document a line, are ``data_format="text"``.
    stream_field: a live Redis stream: the entry's field that holds the record (default ``data``).
    allow_trimmed: a live stream trimmed past the position to read from (retention, MAXLEN) goes on from its oldest
                  record with a warning and the loss counted, instead of a DataError (data/live/base.py).
    start_at:     a live stream read afresh: from its oldest record ("earliest", the default) or only the records
                  that come after the reader started ("latest"); a saved position (`start`, --resume) always wins.
    categorical_columns: columns (names or indices) whose values are hashed into `n_features` (the algorithm's
                  feature_dim) slots after the numeric columns, without a vocabulary (hashing.py: the hash, the
                  layout, the collision count in `hashing.tally`); the batches are then sparse. CSV, Parquet, Arrow,
                  JSON lines and SQL.
    """

    def __init__(self, source, data_format: str | None = None, label_column: str | int | None = None,
                 header: bool | None = None, n_features: int | None = None, zero_based: bool | None = None,
                 weight_column: str | int | None = None, columns: list[str | int] | None = None,
                 shard: tuple[int, int] | None = None, storage_options: dict[str, Any] | None = None,
                 query: str | None = None, on_bad_record: str | None = None,
                 max_bad_fraction: float | None = None, id_column: str | int | None = None,
                 text_column: str | int | None = None, stream_field: str | None = None,
                 allow_trimmed: bool | None = None, start_at: str | None = None,
                 categorical_columns: list[str | int] | None = None):
        # what the stream was made from: `replace` makes another with some of it changed (the trainer's shard,
        # a LibSVM width from the algorithm's feature_dim, what a checkpoint says on --resume)
        self.spec: dict[str, Any] = dict(
            source=source, data_format=data_format, label_column=label_column, header=header, n_features=n_features,
            zero_based=zero_based, weight_column=weight_column, columns=columns, shard=shard,
            storage_options=storage_options, query=query, on_bad_record=on_bad_record,
            max_bad_fraction=max_bad_fraction, id_column=id_column, text_column=text_column,
            stream_field=stream_field, allow_trimmed=allow_trimmed, start_at=start_at,
            categorical_columns=categorical_columns)
        self.source = source
        self.text_column = text_column
        if memory.holds(source):  # arrays, tensors, (X, y) or an iterable of them or of Batches
            if query is not None or data_format not in (None, "memory"):
                raise UsageError("an in-memory source takes neither --query nor --data-format")
            self.inputs: list[Input] = [memory.as_input(source)]
            self.format = "memory"
        else:
            self.inputs = resolve(source, storage_options, query)
            self.format = "sql" if query is not None else detect_format(self.inputs, data_format)
        self._channels: list[Input] | None = None  # pipe mode: the channels, whose pass n is FIFO NAME_n
        self._passes = 0
        self.all_inputs = self.inputs  # before sharding (workers check they all found the same)
        self.stride: tuple[int, int] | None = None  # (rank, world_size) when records are shared out by stride
        self.live_options: dict[str, Any] = {"stream_field": stream_field, "allow_trimmed": bool(allow_trimmed),
                                             "start_at": live.start_at(start_at), "shard": None}
        if shard is not None:
            self._shard(*shard)
        self.label_column = label_column
        self.header = header
        self.headers: dict[str, tuple[bool, list[str]]] = {}  # CSV, header None: what each file's line 1 was taken as
        self.hashing: Hashing | None = None
        if categorical_columns:
            if self.live:
                raise UsageError("--categorical-columns: a live stream's records are not hashed yet; read files, "
                                 "a query or standard input")
            if self.format not in CATEGORICAL_FORMATS:
                raise UsageError(f"--categorical-columns: {self.format} input has no columns to hash (formats that "
                                 f"can: {', '.join(CATEGORICAL_FORMATS)})")
            self.hashing = Hashing(list(categorical_columns), n_features)
        self.options = {"n_features": n_features, "zero_based": bool(zero_based)} \
            if self.sparse and self.hashing is None else {}
        if self.hashing is not None:
            self.options["categorical"] = self.hashing  # its columns; it hears the layout the reader finds
        if weight_column is not None and weight_column != "none":
            if self.format in SPARSE_FORMATS:
                raise UsageError(f"--weight-column: {self.format} records have no columns to take a weight from")
            self.options["weight"] = weight_column
        if columns:
            if self.format not in COLUMN_FORMATS:
                raise UsageError(f"--columns: {self.format} input cannot choose columns "
                                 f"(formats that can: {', '.join(COLUMN_FORMATS)})")
            self.options["columns"] = list(columns)
        if id_column is not None:
            if self.format != "csv":
                raise UsageError(f"--id-column: {self.format} input cannot carry an id column yet (CSV can)")
            self.options["keep"] = id_column
        policy, fraction = resolve_bad_records(on_bad_record, max_bad_fraction)
        self.bad: BadRecords | None = None  # the tally under skip; None under fail (readers raise)
        if policy == "skip":
            if self.format not in SKIP_FORMATS:
                raise UsageError(f"--on-bad-record skip: {self.format} input can only fail at a bad record "
                                 f"(formats that can skip: {', '.join(SKIP_FORMATS)})")
            self.bad = BadRecords(fraction, self.name)

    def replace(self, **changes: Any) -> "Stream":
        """The same stream with some of its options changed (`Stream`'s arguments), read afresh."""
        unknown = set(changes) - set(self.spec)
        if unknown:
            raise TypeError(f"Stream has no option {', '.join(sorted(unknown))}")
        return Stream(**{**self.spec, **changes})

    def _shard(self, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise UsageError(f"shard ({rank}, {world}): the rank must lie in 0..{world - 1}")
        if world == 1:
            return
        if self.live:  # each process reads its own partitions or shards (data/live/base.py: Sharing)
            live.check_shareable(self.inputs, world)
            self.live_options["shard"] = (rank, world)
            return
        if any(i.path == "-" for i in self.inputs):
            raise UsageError(f"standard input cannot be shared out between {world} processes; give files")
        if len(self.inputs) >= world:
            self.inputs = [self.inputs[i] for i in shard_files([i.size or 0 for i in self.inputs], world)[rank]]
        else:
            self.stride = (rank, world)

    @functools.cached_property
    def sparse(self) -> bool:
        """Whether batches hold sparse CSR features (checked before reading, by algorithms that need dense): by the
        format, or for one that may be either by a look at the first record; a source that cannot be looked at
        (a FIFO) is taken as dense, and a sparse record in it is then refused (see _rebatch)."""
        peek = EITHER_FORMATS.get(self.format)
        if self.hashing is not None:  # hashed categorical columns: sparse rows of feature_dim
            return True
        if self.live:  # nothing to look at before the first message: dense, and a sparse record is refused
            return self.format in SPARSE_FORMATS
        return self.format in SPARSE_FORMATS or bool(peek and self.inputs and peek(self.inputs[0]))

    @property
    def name(self) -> str:
        if self.inputs and (self.inputs[0].query is not None or self.inputs[0].memory is not None):
            return self.inputs[0].path  # the database URL with its password masked; what data a memory source holds
        return str(self.source) if not isinstance(self.source, (list, tuple)) else ",".join(map(str, self.source))

    @property
    def seekable(self) -> bool:
        return all(i.seekable for i in self.inputs)

    @property
    def live(self) -> bool:
        """A live stream (Redis, NATS, Kafka, Kinesis: data/live), which never ends."""
        return any(i.live is not None for i in self.inputs)

    @property
    def piped(self) -> bool:
        """SageMaker pipe mode: every pass reads a new FIFO."""
        return any(i.pipe for i in (self._channels or self.inputs))

    @property
    def rereadable(self) -> bool:
        """Whether another epoch can read the source again (not stdin or a lone FIFO)."""
        return all(i.rereadable for i in (self._channels or self.inputs))

    @property
    def total_bytes(self) -> int | None:
        sizes = [i.size for i in self.inputs]
        return None if None in sizes or not self.seekable else sum(sizes)

    def chunks(self, start: dict[str, Any] | None = None) -> Iterator[Chunk]:
        read = READERS[self.format]
        first = 0 if not start else int(start["file"])
        if start and first < len(self.inputs) and start.get("path") not in (None, self.inputs[first].path):
            raise UsageError(f"the source changed since the checkpoint: input {first} was {start['path']!r}, "
                             f"now {self.inputs[first].path!r}; resume needs the same inputs")
        for i in range(first, len(self.inputs)):
            at = start if (start and i == first) else None
            extra = {"bad": self.bad} if self.bad is not None else {}
            if self.inputs[i].live is not None:  # a position per partition, not an offset (data/live/base.py)
                yield from live.read(self.inputs[i], i, self.format, start=at["offset"] if at else None,
                                     label=self.label_column, header=self.header, **self.options,
                                     **self.live_options, **extra)
                continue
            if self.format == "csv":
                extra["on_header"] = self._heard_header
            chunks = read(self.inputs[i], i, label=self.label_column, header=self.header,
                          start=int(at["offset"]) if at else 0,
                          line=int(at.get("offset_line", 1)) if at else 1, **self.options, **extra)
            if self.hashing is None:
                yield from chunks
                continue
            for ch in chunks:  # the categorical values hashed into features, with the numeric columns
                yield ch if ch.quiet else replace(ch, x=self.hashing.features(
                    ch.x, ch.cats, self.inputs[i].path, trim=self.format == "csv"), cats=None)

    def _heard_header(self, name: str, has_header: bool, fields: list[str]) -> None:
        self.headers[name] = (has_header, [f.strip() for f in fields])

    @property
    def header_note(self) -> str | None:
        """What `header=None` decided about the CSV files read so far, in a line for the user (None if nothing)."""
        if not self.headers:
            return None
        parts = []
        for decided in (True, False):
            names = [n for n, (h, _) in self.headers.items() if h == decided]
            if not names:
                continue
            where = names[0] if len(names) == 1 else f"{len(names)} files ({names[0]}, ...)"
            if decided:
                fields = self.headers[names[0]][1]
                shown = ", ".join(fields[:6]) + (", ..." if len(fields) > 6 else "")
                parts.append(f"line 1 of {where} read as column names ({shown}); --csv-header false reads it as a "
                             "record")
            else:
                parts.append(f"no header in {where} (line 1 holds a number or a missing value: read as a record); "
                             "--csv-header true reads it as column names")
        return "; ".join(parts)

    def series(self, start: dict[str, Any] | None = None, horizon: int = 0,
               on_bad: Callable[[DataError], None] | None = None) -> Iterator[SeriesRecord]:
        """The stream's records as DeepAR's series (JSON lines: `series.read_series`), one a record, from `start` (a
        record's `position` or `next_position`); for algorithms that cut their examples from series. `on_bad` takes
        each bad record's error instead of raising it (the caller counts it in `bad`, knowing what it re-reads)."""
        if self.format != "jsonl":
            raise UsageError(f"{self.name}: series records are JSON lines ({{\"start\": ..., \"target\": [...]}}), "
                             f"not {self.format}")
        self._next_pass()  # fewer files than processes: each takes every world-th line (stride)
        return read_series(self.inputs, start=start, horizon=horizon, on_bad=on_bad, stride=self.stride)

    def batches(self, batch_size: int, start: dict[str, Any] | None = None,
                prefetch: int = 2) -> Iterator[Batch]:
        """Batches of exactly `batch_size` records (the last may be smaller), from `start` when given."""
        if batch_size < 1:
            raise UsageError(f"--mini-batch-size must be at least 1, got {batch_size}")
        self._next_pass()
        stop = threading.Event()
        if self.live:  # a live reader blocks on its broker: told to stop, it returns within a poll (data/live)
            self.live_options["stop"] = stop
        it = self._rebatch(batch_size, start)
        return _prefetch(it, prefetch, stop) if prefetch > 0 else it

    def _next_pass(self) -> None:
        """Pipe mode: each call of `batches` reads the channel's next FIFO (NAME_0, NAME_1, ...), as SageMaker makes
        one per pass. Passes are counted, not epochs: a restarted job's FIFOs start again at NAME_0."""
        if self._channels is None:
            if not any(i.pipe for i in self.inputs):
                return
            self._channels = self.inputs
        self.inputs = [i.in_pass(self._passes) for i in self._channels]
        self._passes += 1

    def _rebatch(self, batch_size: int, start: dict[str, Any] | None) -> Iterator[Batch]:
        skip = int(start.get("skip", 0)) if start else 0
        records = int(start.get("records", 0)) if start else 0
        # by stride: `index` counts every record of the source (all ranks'), to pick this rank's
        index = int(start["index"]) - skip if start and self.stride else 0
        sizes = [i.size or 0 for i in self.inputs]
        total = self.total_bytes
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        ws: list[np.ndarray] = []
        ids: list[np.ndarray] = []
        have, dim = 0, None
        tally = self.bad
        # bad records met after the current restart offset (counted or left out as counted before the start)
        drop = int(start.get("bad_skip", 0)) if start and tally is not None else 0
        where, at_offset = ((start["file"], start["offset"]) if start else None), 0
        for ch in self.chunks(start):
            if (ch.file, ch.offset) != where:
                where, at_offset = (ch.file, ch.offset), 0
            events, ei = ch.bad or (), 0

            def count(upto: int) -> None:
                """Count the chunk's bad records before its good record `upto` (in chunk order)."""
                nonlocal ei, drop, at_offset
                while ei < len(events) and events[ei][0] <= upto:
                    if drop:
                        drop -= 1
                    elif not self.stride or (at + events[ei][0]) % self.stride[1] == self.stride[0]:
                        tally.add(events[ei][1])  # by stride: the rank of the next record counts it
                    ei, at_offset = ei + 1, at_offset + 1

            if ch.quiet:  # a live stream without news: train what waits, or let the trainer look at its clock
                if have:
                    records += have
                    yield self._batch(xs, ys, ws, last, len(last), records, sizes, total)
                    xs, ys, ws, have = [], [], [], 0
                else:
                    yield Batch(torch.empty((0, dim or 0)))
                continue
            last = ch
            if not len(ch):  # every record of it was bad
                at = index
                count(0)
                continue
            if dim is None:
                dim = ch.x.shape[1]
            elif ch.x.shape[1] != dim:
                raise DataError(f"has {ch.x.shape[1]} feature columns where earlier data had {dim}",
                                source=self.inputs[ch.file].path, reason="wrong field count")
            if isinstance(ch.x, CSR) != self.sparse:
                raise DataError(f"{'sparse' if self.sparse else 'dense'} data was expected (from the first input, "
                                f"or dense where the first record could not be read ahead) but this is "
                                f"{'dense' if self.sparse else 'sparse'}", source=self.inputs[ch.file].path,
                                reason="mixed kinds")
            s = min(skip, len(ch))
            skip -= s
            # part: this rank's records of ch, whose record i is ch's record first + i step
            part, first, step, at = ch, 0, 1, index
            if self.stride:
                rank, step = self.stride
                first, index = s + (rank - at - s) % step, index + len(ch)
                part, s = _every(ch, first, step), 0
            while s < len(part):
                take = min(batch_size - have, len(part) - s)
                xs.append(part.x[s:s + take])
                if part.y is not None:
                    ys.append(part.y[s:s + take])
                if part.w is not None:
                    ws.append(part.w[s:s + take])
                if part.ids is not None:
                    ids.append(part.ids[s:s + take])
                s, have = s + take, have + take
                if have == batch_size:
                    records += have
                    nxt = min(first + s * step, len(ch))
                    bad = None
                    if tally is not None:
                        count(nxt)
                        tally.records += have
                        tally.check()
                        bad = {**tally.to_meta(), "bad_skip": at_offset}
                    yield self._batch(xs, ys, ws, ch, nxt, records, sizes, total, at, bad, ids)
                    xs, ys, ws, ids, have = [], [], [], [], 0
            if tally is not None:
                count(len(ch))
        if have:
            records += have
            bad = None
            if tally is not None:
                tally.records += have
                bad = {**tally.to_meta(), "bad_skip": at_offset}
            yield self._batch(xs, ys, ws, ch, len(ch), records, sizes, total, at, bad, ids)
        if tally is not None:
            tally.check(at_end=True)

    def _batch(self, xs, ys, ws, ch: Chunk, s: int, records: int, sizes, total, at: int = 0,
               bad: dict[str, Any] | None = None, ids: list[np.ndarray] | None = None) -> Batch:
        """A batch of the records in xs, ys, ws; the next record is record `s` of `ch`, whose first is number `at`
        of the source (counted for stride sharding only)."""
        if isinstance(xs[0], CSR):
            x = CSR.vstack(xs).to_torch()  # never densified
        else:
            x = torch.from_numpy(xs[0] if len(xs) == 1 else np.concatenate(xs))
        y = (torch.from_numpy(ys[0] if len(ys) == 1 else np.concatenate(ys))) if ys else None
        w = (torch.from_numpy(ws[0] if len(ws) == 1 else np.concatenate(ws))) if ws else None
        # offset_line: the line (CSV) at `offset`, so that errors after a resume name the right lines
        position = {"file": ch.file, "path": self.inputs[ch.file].path, "offset": ch.offset,
                    "skip": ch.base + s, "line": ch.line + s, "offset_line": ch.line, "records": records}
        if self.stride:
            position["index"] = at + s
        if bad is not None:  # the skipped records after `offset` already counted (a resumed run leaves them out)
            position["bad_skip"] = bad.pop("bad_skip")
        if ch.at is not None:  # a live stream: every partition's position before the next record, which says
            position.update(offset=ch.at(s), skip=0, bad_skip=0)  # which bad records were counted (live/base.py)
        fraction = (sum(sizes[:ch.file]) + ch.fraction * sizes[ch.file]) / total if total else None
        return Batch(x, y, position, fraction, w, bad, np.concatenate(ids) if ids else None)


class Examples:
    """Examples an algorithm makes from a stream's records (algorithms/base.py, "How records become examples"):
    a subclass overrides `batches`; everything else (name, format, sparse, bad, seekable, rereadable, piped,
    inputs...) is the stream's."""

    def __init__(self, stream: Stream):
        self.stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def batches(self, batch_size: int, start: dict[str, Any] | None = None, prefetch: int = 2) -> Iterator[Batch]:
        raise NotImplementedError


def shard_files(sizes: list[int], world: int) -> list[list[int]]:
    """Files per rank, balanced by bytes: largest first to the least loaded rank (ties: the lower rank); each
    rank's files stay in source order. Equal sizes give file i to rank i mod N."""
    load, out = [0] * world, [[] for _ in range(world)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        load[r] += sizes[i]
        out[r].append(i)
    return [sorted(files) for files in out]


def _every(ch: Chunk, first: int, step: int) -> Chunk:
    """Records first, first + step, ... of `ch` (copied: stride sharding keeps one in `step`)."""
    if isinstance(ch.x, CSR):
        rows = np.arange(first, len(ch), step)
        lengths = np.diff(ch.x.indptr)[rows]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        at = np.repeat(ch.x.indptr[rows] - indptr[:-1], lengths) + np.arange(indptr[-1])
        x = CSR(indptr, ch.x.indices[at], ch.x.data[at], (len(rows), ch.x.shape[1]))
    else:
        x = np.ascontiguousarray(ch.x[first::step])
    pick = (lambda a: None if a is None else np.ascontiguousarray(a[first::step]))
    return replace(ch, x=x, y=pick(ch.y), w=pick(ch.w), ids=None if ch.ids is None else ch.ids[first::step])


_END = object()


def _prefetch(it: Iterator[Batch], depth: int, stop: threading.Event | None = None) -> Iterator[Batch]:
    """Run `it` in a daemon thread, `depth` batches ahead; errors surface in the consumer, in order.

    When the consumer stops early the reader thread ends too (closing `it` and its files), even if it was
    blocked handing over a batch, the end of the stream or an error.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = stop or threading.Event()  # set when the consumer is done (`it` may look at it too)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for item in it:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    t = threading.Thread(target=work, name="onepass-reader", daemon=True)
    t.start()
    try:
        while True:
            # A timed wait: a signal (SIGTERM, Ctrl-C) may land on the reader's thread, and Python runs its handler
            # only when the main thread wakes; an untimed wait on a quiet input would never wake to stop.
            try:
                item = q.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # Wait for the reader to leave pyarrow's and torch's native code: a thread still inside them when the
        # interpreter exits aborts the process ("terminate called without an active exception"). Not for long:
        # when the consumer stops early (a signal, an error) the reader may be waiting on an input that never
        # ends (a pipe, a live stream), and a thread blocked in a plain read is harmless at exit.
        t.join(timeout=5)
