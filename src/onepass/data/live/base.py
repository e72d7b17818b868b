"""Reading a live stream: messages from a broker become chunks of records with exact positions.

Position. Each partition (a Kafka partition, a Kinesis shard; Redis and NATS streams are one partition) has its own
position, the broker's own id of the last message trained on: Kafka the next offset, Redis the last entry ID (and
the entry's index, for the loss check), NATS the last stream sequence, Kinesis the last sequence number as a string
(and `done` once a closed shard was read to its end). Where a message holds several records and a batch ended
inside it, `skip` counts the message's records already trained. The stream's position is every partition's:

    {"partitions": {"0": {"next": 118}, "1": {"next": 97, "skip": 2}}, "lost": {...}, "fields": [...]}

A chunk holds consecutive messages of one partition, and knows the stream's position before each of its records
(`Chunk.at`): every partition as left by the chunks before it, and its own partition moved to that record. So a
batch that ends anywhere says exactly which records were trained, whatever order the partitions' messages came in,
and a resumed run asks each partition for the messages after its position: none twice, none missed. Nothing is
committed on the broker: the checkpoint, written atomically with the model state, is the only record of progress.

Loss. A stream trimmed past a saved position (Kafka retention, Redis MAXLEN, a NATS limit or purge, Kinesis
retention) is found when the reader seeks there, and while it reads: the broker module counts the records lost
where it can (Kafka offsets, NATS sequences, Redis `entries-added`; Kinesis cannot count them). It is a DataError
naming the partition and the count, or with `allow_trimmed` a warning and a tally in the position (`lost`).

Quiet. When no record arrived for `QUIET_S`, the reader hands on an empty chunk: the records waiting are trained as
a smaller batch (so a slow stream's records do not wait for a full one), and the trainer gets to look at its clock
and at signals. A quiet stream never ends the read.

Bad records. Under on_bad_record="skip" the file readers leave bad lines out and say where they were; each is named
by its message (entry, offset, sequence number) and counted in the tally. A position inside a message always
carries `skip` (0 too), which tells a resumed reader that the message's bad lines before that record were counted.

Connections. A broker that goes away (a restart, a network blip) is asked again every POLL_S for RECONNECT_S, the
quiet chunks going on meanwhile, so a signal still stops training with a checkpoint; then a DataError.

Start. A partition without a saved position is read from its oldest record (`start_at="earliest"`, the default)
or from the records that come after the reader looked at it (`"latest"`: the broker's end at that moment, which the
position then holds, so a resumed run goes on from there); a saved position always wins.

Sharing. Under several processes (`Stream(shard=(rank, world))`, `train --nproc`), a Kafka partition or a Kinesis
shard is read by the process whose rank is its number modulo the processes (children of a split included), and each
process's checkpoint part holds its own partitions' positions: a resume on as many processes reads on exactly. A Redis
or NATS stream is one ordered sequence without partitions: it is refused (dividing it would need every process to
read every entry).

Formats. Records are parsed by the file readers (CSV, JSON lines, LibSVM: one record a line, any number of lines a
message; RecordIO-protobuf: any number of records a message), a poll's messages at a time, as one block.
"""

from __future__ import annotations

import bisect
import importlib
import re
import struct
import sys
import time
from typing import Any, Iterator

import numpy as np

from ...errors import DataError, UsageError
from ..chunks import Chunk, resolve_columns
from ..sources import Input
from . import SCHEMES

QUIET_S = 1.0  # no record for a second: train what waits; short enough for a slow stream, long enough that a busy
# broker's momentary empty poll (a fetch between two batches) does not cut a batch short
POLL_S = 0.25  # the longest a poll blocks: how soon the reader notices quiet and a closed consumer
RECONNECT_S = 60.0  # how long a reader whose broker went away keeps trying before it stops with a DataError (a
# broker's restart takes seconds; a run that stops still has its checkpoint, and --resume continues it)
MAX_MESSAGES = 10_000  # messages a poll asks for: Kinesis' GetRecords limit; bounds the reader's memory
LINE_FORMATS = ("csv", "jsonl", "libsvm")
FORMATS = LINE_FORMATS + ("recordio-protobuf",)
START_AT = ("earliest", "latest")
SHAREABLE = {"kafka": "partitions", "kinesis": "shards"}  # what each process takes its share of
_BLOCK = "<live>"  # the name a block of messages is parsed under (errors are renamed to the message)

Message = tuple[Any, bytes]  # (the broker's id of the message, its payload)


class Trimmed(Exception):
    """Records of a partition were deleted before they were read: `lost` of them (None: unknown)."""

    def __init__(self, partition: str, lost: int | None, detail: str):
        super().__init__(detail)
        self.partition, self.lost, self.detail = partition, lost, detail


class Broker:
    """What a broker module implements (redis_streams.py, jetstream.py, kafka.py, kinesis.py).

    `seek` places the reader after each partition's saved position (None or {}: the start of the partition) and
    returns what was trimmed past them; `poll` blocks up to `timeout` seconds and returns (partition, messages,
    done) for the partitions that had any (`done`: a closed shard was read to its end); `trimmed` lists the losses
    found while reading, which the reader takes and clears. `after` is a partition's position after a message,
    `where` names a message for errors ("partition 3 offset 1204")."""

    PARTITION = "partition"
    TRANSIENT: tuple[type[BaseException], ...] = ()  # the client's errors of a lost connection: retried

    def __init__(self, inp: Input, options: dict[str, Any]):
        self.inp, self.spec, self.options = inp, inp.live, options
        self.trimmed: list[Trimmed] = []
        self.latest = options.get("start_at") == "latest"
        self.shard: tuple[int, int] = options.get("shard") or (0, 1)  # (rank, processes)
        self.started: dict[str, dict] = {}  # seek: where partitions without a saved position start (at latest)

    def owns(self, number: int) -> bool:
        """Whether this process reads the partition or shard `number` (its number modulo the processes)."""
        rank, world = self.shard
        return number % world == rank

    def seek(self, positions: dict[str, dict]) -> list[Trimmed]:
        raise NotImplementedError

    def poll(self, timeout: float) -> list[tuple[str, list[Message], bool]]:
        raise NotImplementedError

    def after(self, partition: str, message_id: Any) -> dict[str, Any]:
        raise NotImplementedError

    def where(self, partition: str, message_id: Any) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


def server_url(url: str) -> str:
    """A broker's URL without the stream's name or options (client libraries read a path their own way)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"


def start_at(value: str | None) -> str:
    """`start_at` checked: "earliest" (the default) or "latest"."""
    value = value or "earliest"
    if value not in START_AT:
        raise UsageError(f"--start-at {value!r}: expected {' or '.join(START_AT)}")
    return value


def check_shareable(inputs: list[Input], world: int) -> None:
    """Refuse to share a stream without partitions (Redis, NATS) between `world` processes."""
    for inp in inputs:
        if inp.live is not None and inp.live.scheme not in SHAREABLE:
            raise UsageError(f"{inp.path}: a {inp.live.scheme}:// stream is one sequence of entries, read by one "
                             f"process; {world} processes can share the partitions of a Kafka topic or the shards of "
                             "a Kinesis stream")


def open_broker(inp: Input, options: dict[str, Any]) -> Broker:
    module, extra, _ = SCHEMES[inp.live.scheme]
    try:
        return importlib.import_module(f".{module}", __package__).open(inp, options)
    except ImportError as e:
        raise UsageError(f"{inp.path}: reading {inp.live.scheme}:// streams needs its client "
                         f"(pip install 'onepass[{extra}]'): {e}") from None


def read(inp: Input, file_index: int, data_format: str, *, start: dict[str, Any] | None = None,
         label: str | int | None = None, header: bool | None = None, weight: str | int | None = None,
         columns: list[str | int] | None = None, n_features: int | None = None, zero_based: bool = False,
         stream_field: str | None = None, allow_trimmed: bool = False, start_at: str = "earliest",
         shard: tuple[int, int] | None = None, stop=None, bad=None, **_: Any) -> Iterator[Chunk]:
    """Chunks of the live stream `inp` from the position `start` (a chunk's `at`; None: every partition's start),
    never ending (but once `stop`, a threading.Event, is set: the read-ahead thread's consumer is done); an empty
    chunk when the stream is quiet (see the module's docstring)."""
    if data_format not in FORMATS:
        raise UsageError(f"{inp.path}: a live stream's records are {', '.join(FORMATS)}, not {data_format}")
    if header:
        raise UsageError(f"{inp.path}: the records of a live stream have no header line (--csv-header)")
    start = dict(start or {})
    parts: dict[str, dict] = dict(start.get("partitions") or {})
    meta = {"lost": dict(start.get("lost") or {}), "fields": start.get("fields")}
    parser = _Parser(inp.path, data_format, label, weight, columns, n_features, zero_based, meta["fields"], bad)
    broker = open_broker(inp, {"stream_field": stream_field or "data", "start_at": start_at, "shard": shard})
    try:
        try:
            trims = broker.seek(parts)
        except broker.TRANSIENT as e:
            raise DataError(f"cannot reach the broker ({type(e).__name__}: {e})", source=inp.path,
                            reason="unreachable") from None
        _lost(inp.path, trims, meta, allow_trimmed)
        parts = {**broker.started, **parts}  # started at latest: held from the first batch on
        skips = {p: int(v["skip"]) for p, v in parts.items() if v and "skip" in v}
        last_record = time.monotonic()
        down: float | None = None  # since when the broker is unreachable
        while stop is None or not stop.is_set():
            try:
                fetched = broker.poll(POLL_S)
            except broker.TRANSIENT as e:  # retried; the quiet chunks below go on, so a signal still stops
                down, fetched = _down(inp.path, e, down), []
            else:
                if down is not None:
                    print(f"onepass: {inp.path}: connected again after {time.monotonic() - down:.1f} s",
                          file=sys.stderr)
                    down = None
            if broker.trimmed:
                _lost(inp.path, broker.trimmed, meta, allow_trimmed)
                broker.trimmed = []
            got = False
            for partition, messages, done in fetched:
                if messages:
                    chunk = parser.chunk(broker, partition, messages, skips.pop(partition, None), parts, meta,
                                         file_index)
                    parts = {**parts, partition: broker.after(partition, messages[-1][0])}
                    meta = {**meta, "fields": parser.fields}
                    if chunk is not None:
                        got = True
                        yield chunk
                if done:
                    parts = {**parts, partition: {**(parts.get(partition) or {}), "done": True}}
            now = time.monotonic()
            if got:
                last_record = now
            elif now - last_record >= QUIET_S:
                last_record = now
                yield Chunk(np.empty((0, 0), np.float32), None, file_index, 0, 0, 0, 0.0, quiet=True)
    finally:
        broker.close()


def _down(name: str, e: BaseException, since: float | None) -> float:
    """The connection is lost (a broker restarting): warn the first time, stop after RECONNECT_S; when it began."""
    now = time.monotonic()
    if since is None:
        print(f"onepass: warning: {name}: lost the connection ({type(e).__name__}: {e}); trying again for "
              f"{RECONNECT_S:g} s", file=sys.stderr)
        since = now
    elif now - since >= RECONNECT_S:
        raise DataError(f"lost the connection for {RECONNECT_S:g} s ({type(e).__name__}: {e}); the last checkpoint "
                        "holds the position: --resume continues it", source=name, reason="unreachable") from None
    time.sleep(POLL_S)
    return since


def _lost(name: str, trims: list[Trimmed], meta: dict[str, Any], allowed: bool) -> None:
    """Refuse a trimmed stream, naming what was lost; or, when allowed, warn and count it in the position."""
    if not trims:
        return
    text = "; ".join(f"{t.detail}: {'an unknown number of' if t.lost is None else f'{t.lost:,}'} records lost"
                     for t in trims)
    if not allowed:
        raise DataError(f"the stream was trimmed past the position to read from ({text}); continue from its "
                        "oldest record with --allow-trimmed", source=name, reason="trimmed")
    lost = dict(meta["lost"])
    for t in trims:
        lost[t.partition] = lost.get(t.partition, 0) + (t.lost or 0)
    meta["lost"] = lost
    print(f"onepass: warning: {name}: the stream was trimmed past the position to read from ({text}); "
          "reading on from its oldest record", file=sys.stderr)


class _Parser:
    """Messages to a chunk: the format's reader over one block of payloads, errors renamed to the message."""

    def __init__(self, name: str, data_format: str, label, weight, columns, n_features, zero_based,
                 fields: list | None, bad=None):
        self.name, self.format, self.bad = name, data_format, bad  # bad: on_bad_record="skip"
        self.label, self.weight, self.columns = label, weight, columns
        self.options = {"n_features": n_features, "zero_based": zero_based} if data_format == "libsvm" else {}
        # JSON lines: the fields taken are pinned by name from the stream's first record (and kept in the
        # position), so that a message whose first object lists its keys in another order reads alike
        self.fields = fields

    def chunk(self, broker: Broker, partition: str, messages: list[Message], skip: int | None,
              before: dict[str, dict], meta: dict[str, Any], file_index: int) -> Chunk | None:
        """The records of `messages` (consecutive, of one partition); `skip`: records of the first message trained
        before a resume (None: not resumed inside it)."""
        resumed, skip = skip is not None, skip or 0
        payloads = [p or b"" for _, p in messages]
        block = None
        if self.format == "recordio-protobuf":  # each padded to 4 bytes (a lone record's padding may be missing)
            payloads = [p + b"\0" * (-len(p) % 4) for p in payloads]
            counts = [_recordio_count(p) for p in payloads]
        else:
            block = b"\n".join(payloads) + b"\n"
            if block.count(b"\n") == len(payloads) and b"\n\n" not in block and block[:1] != b"\n":
                counts = [1] * len(payloads)  # one line a message, none empty (the common case): no loop over them
            else:
                payloads = [p if p.endswith(b"\n") or not p else p + b"\n" for p in payloads]
                counts, block = [_line_count(p) for p in payloads], None
        if not sum(counts) - skip:
            return None
        try:
            x, y, w, events = self._parse(block if block is not None else b"".join(payloads))
        except DataError as e:
            raise self._renamed(e, broker, partition, messages, payloads, counts) from None
        if events:  # on_bad_record="skip": each message's good records, and the errors named by message
            payloads = [p if p.endswith(b"\n") or not p else p + b"\n" for p in payloads]
            lines = np.cumsum([p.count(b"\n") for p in payloads]).tolist()
            for k, e in events:
                counts[min(bisect.bisect_left(lines, e.line or 1), len(messages) - 1)] -= 1
            events = [(k, self._renamed(e, broker, partition, messages, payloads, counts)) for k, e in events]
        if len(x) != sum(counts):
            raise DataError(f"{broker.where(partition, messages[0][0])} to {broker.where(partition, messages[-1][0])}"
                            f": read {len(x)} records where the messages hold {sum(counts)} lines",
                            source=self.name, reason="parse error")
        if resumed:  # a batch ended inside the first message before the checkpoint
            x, y, w = x[skip:], None if y is None else y[skip:], None if w is None else w[skip:]
            counts = [counts[0] - skip] + counts[1:]
            # its bad records before the next good one were counted then (the batcher counts up to that record)
            events = [(k - skip, e) for k, e in events if k > skip]
        cum = np.concatenate([[0], np.cumsum(counts)]).tolist()
        ids = [m for m, _ in messages]
        prev = before.get(partition)
        fields = self.fields

        def at(s: int) -> dict[str, Any]:
            """The stream's position before record `s` of this chunk."""
            if s >= cum[-1]:
                pos = broker.after(partition, ids[-1])
            else:
                i = bisect.bisect_right(cum, s) - 1  # the message that holds record s
                k = s - cum[i] + (skip if i == 0 else 0)
                pos = dict(prev or {}) if i == 0 else broker.after(partition, ids[i - 1])
                pos["skip"] = k  # (0 too: the message's bad records before record s were counted, see chunk)
            return {"partitions": {**before, partition: pos}, "lost": meta["lost"], "fields": fields}

        return Chunk(x, y, file_index, 0, 0, 1, 0.0, w, events or None, at=at)

    def _parse(self, block: bytes):
        from .. import recordio
        if self.format == "recordio-protobuf":
            if self.columns or self.weight not in (None, "none"):
                raise UsageError("--columns, --weight-column: RecordIO-protobuf features are one tensor")
            x, y = recordio.decode(block, _BLOCK, self.options.get("n_features"), self.label)
            if not isinstance(x, np.ndarray):
                raise DataError("sparse RecordIO-protobuf records: a live stream reads dense records only",
                                source=self.name, reason="mixed kinds")
            return x, y, None, []
        from ..batches import READERS
        label, weight, columns = self.label, self.weight, self.columns
        if self.format == "jsonl":
            label, weight, columns = self._pinned(block)
        chunks = list(READERS[self.format](Input(_BLOCK, len(block), memory=block), 0, label=label, header=False,
                                           weight=weight, columns=columns, **self.options,
                                           **({"bad": self.bad} if self.bad is not None else {})))
        if not chunks:
            return np.empty((0, 0), np.float32), None, None, []
        events, before = [], 0
        for c in chunks:  # a block parsed as several chunks: number its bad records' places over the block
            events += [(k + before, e) for k, e in c.bad or ()]
            before += len(c)
        x = chunks[0].x if len(chunks) == 1 else np.concatenate([c.x for c in chunks])
        y = None if chunks[0].y is None else np.concatenate([c.y for c in chunks])
        w = None if chunks[0].w is None else np.concatenate([c.w for c in chunks])
        return x, y, w, events

    def _pinned(self, block: bytes):
        """JSON lines: (label, weight, feature fields) by name, fixed by the stream's first record."""
        if self.fields is None:
            from ..jsonl import parse_object
            first = next(line for line in block.split(b"\n") if line.strip())
            names = list(parse_object(first, _BLOCK, 1))
            y, w, xs = resolve_columns(self.label, self.weight, names, self.name, self.columns)
            self.fields = [names[y] if y is not None else None, names[w] if w is not None else None,
                           [names[i] for i in xs]]
        label, weight, columns = self.fields
        return label, weight, columns

    def _renamed(self, e: DataError, broker: Broker, partition: str, messages: list[Message],
                 payloads: list[bytes], counts: list[int]) -> DataError:
        """`e` (about a line or record of the block) about the message that holds it."""
        message = str(e).split(": ", 1)[1] if str(e).startswith(_BLOCK) else str(e)
        if self.format == "recordio-protobuf":
            found = re.match(r"record (\d+) \(byte offset \d+\): (.*)", message, re.S)
            if not found:
                return DataError(message, source=self.name, reason=e.reason)
            i = bisect.bisect_right(np.cumsum(counts).tolist(), int(found.group(1)) - 1)
            i = min(i, len(messages) - 1)
            return DataError(found.group(2), source=f"{self.name} {broker.where(partition, messages[i][0])}",
                             reason=e.reason)
        if e.line is None:
            return DataError(message, source=self.name, reason=e.reason)
        payloads = [p if p.endswith(b"\n") or not p else p + b"\n" for p in payloads]
        lines = np.cumsum([p.count(b"\n") for p in payloads]).tolist()
        i = min(bisect.bisect_left(lines, e.line), len(messages) - 1)  # line e.line (1-based) is in message i
        line = e.line - (lines[i - 1] if i else 0)
        return DataError(message, source=f"{self.name} {broker.where(partition, messages[i][0])}",
                         line=line if payloads[i].count(b"\n") > 1 else None, reason=e.reason)


def _line_count(payload: bytes) -> int:
    """Records in a line-format message: its lines that hold more than white space."""
    if payload.count(b"\n") <= 1:
        return 1 if payload.strip() else 0
    return sum(1 for line in payload.split(b"\n") if line.strip())


def _recordio_count(payload: bytes) -> int:
    """Records in a RecordIO message: frames that start a record (whole ones, and the first part of a split one)."""
    n, p = 0, 0
    while p + 8 <= len(payload):
        _, header = struct.unpack_from("<II", payload, p)
        length = header & ((1 << 29) - 1)
        n += (header >> 29) in (0, 1)
        p += 8 + length + (-length % 4)
    return n
