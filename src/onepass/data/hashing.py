"""Categorical columns without a vocabulary pass: each (column, value) pair hashed into a fixed number of slots.

The hash.  MurmurHash3 x86_32 (Appleby's reference `MurmurHash3_x86_32`, as scikit-learn's `murmurhash3_32` and the
`mmh3` package compute it, unsigned) of the UTF-8 bytes of ``column + "\\x00" + value`` with seed `SEED` = 0. For
example ``murmur3_32(b"site\\x00a.com")``; ``murmur3_32(b"hello") == 0x248BFA47`` (seed 0). Any language that has
MurmurHash3 reproduces the features:

    slot = n_numeric + murmur3_32(utf8(column + "\\0" + value), seed=0) % (feature_dim - n_numeric)

Layout.  A record of m numeric feature columns and some categorical columns becomes a sparse row of `feature_dim`
(the algorithm's hyperparameter) features: the numeric columns keep indices 0..m-1, in the order they are read
(`columns`, or the file's order), with their values; each categorical column adds a 1 at its value's slot in
m..feature_dim-1. Two columns of one record landing on the same slot add up (2). `column` is the column's name as
given (``--categorical-columns user,item``); a column given by index is named by that index (``"3"``).

Values.  Text as it stands (CSV: the field with the spaces and tabs around it trimmed); an integer as its decimal
digits (``7``, JSON ``7`` and Parquet int64 7 all give ``"7"``); a float as Python's shortest repr (``2.5``); a
boolean as ``true`` / ``false``; a missing value (an empty CSV field, JSON null, SQL NULL, Parquet null) as the
empty string: "missing" is a category of its own. A JSON object or list, bytes or a date is refused, naming the
source and the record. Store ids as text or integers: a float column written ``7.0`` in one file and ``7`` in
another hashes apart.

Collisions.  Counted in bounded memory, one int64 a slot (`SlotTally`): the hash of the first key seen in a slot
(its full 32 bits, where the slot keeps log2(slots) of them); a key of another hash landing there marks the slot
collided. So `collided` counts the slots that at least two different keys share and `occupied` the slots used: both
depend on the set of keys only, not on their order or repetition, so a second epoch or a resumed run (which may
see a few records again) counts the same. Keys that differ but agree in all 32 bits (one pair in 2^32 / slots)
are not seen.

Speed.  The hash runs in C (_murmur.c) over a column's values as one Arrow string array, with no Python object
per key; where the extension was not built, vectorised in NumPy (the same values, about 50 x slower). The rows are
built without a sort of the batch, and the collision tally in O(keys). benchmarks/RESULTS_CATEGORICAL.md (2 shared,
loaded cores): 10^6 click records with 3 categorical columns read at 114,000 records/s from CSV, 163,000 from
Parquet, 77,000 from JSON lines, against 822,000 for the same CSV with integer ids read as numbers (the C parser's
fast path; text fields go through pyarrow's); scikit-learn's FeatureHasher hashes the same values, already in
memory, at 92,000 records/s.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, UsageError
from .sparse import CSR

try:  # the C hash (_murmur.c); without it the NumPy one below, the same values
    from . import _murmur
except ImportError:  # pragma: no cover - a build without a C compiler
    _murmur = None

SEED = 0
_C1, _C2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)
_EMPTY, _COLLIDED = -1, -2  # SlotTally's marks; any other value is the 32-bit hash of the slot's first key


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _mix(k: np.ndarray) -> np.ndarray:
    return _rotl(k * _C1, 15) * _C2


def murmur3_32(keys: Sequence[bytes] | bytes, seed: int = SEED) -> np.ndarray | int:
    """MurmurHash3 x86_32 of each key (unsigned, uint32); of one `bytes`, an int."""
    if isinstance(keys, bytes):
        return int(murmur3_32([keys], seed)[0])
    n = len(keys)
    out = np.empty(n, dtype=np.uint32)
    if n == 0:
        return out
    lens = np.fromiter(map(len, keys), dtype=np.int64, count=n)
    # by groups of keys of a similar length (rounded up to 16 bytes), so that the padded matrix stays small
    group = (lens + 15) // 16
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        out[rows] = _hash_group([keys[r] for r in rows], lens[rows], int(g) * 16 + 4, seed)
    return out


def _hash_group(keys: list[bytes], lens: np.ndarray, width: int, seed: int) -> np.ndarray:
    n = len(keys)
    buf = np.zeros((n, width), dtype=np.uint8)  # zero-padded: the tail word of a key is its last bytes, then zeros
    flat = np.frombuffer(b"".join(keys), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    rows = np.repeat(np.arange(n), lens)
    buf[rows, np.arange(len(flat)) - np.repeat(starts, lens)] = flat
    words = buf.view("<u4").astype(np.uint32)
    h = np.full(n, seed & 0xFFFFFFFF, dtype=np.uint32)
    blocks = lens // 4
    with np.errstate(over="ignore"):
        for j in range(int(blocks.max(initial=0))):
            mixed = _rotl(h ^ _mix(words[:, j]), 13) * np.uint32(5) + np.uint32(0xE6546B64)
            h = np.where(j < blocks, mixed, h)
        tail = words[np.arange(n), blocks]
        h = np.where(lens % 4 != 0, h ^ _mix(tail), h)
        h ^= lens.astype(np.uint32)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h


def hash_column(name: str, values: np.ndarray | Any, trim: bool = False) -> np.ndarray:
    """murmur3_32 of ``name + "\\x00" + value`` for each value (text: an object array or a pyarrow string array),
    by the C extension (_murmur.c) where it was built, else by NumPy."""
    prefix = f"{name}\x00".encode("utf-8", "surrogatepass")
    import pyarrow as pa  # (loaded already by every reader)

    arr = None
    if _murmur is not None:
        try:
            arr = values if isinstance(values, pa.Array) else pa.array(values, type=pa.string())
        except (pa.ArrowException, UnicodeError):  # text that is not UTF-8 (a lone surrogate from JSON)
            pass
    if arr is None:
        texts = values.to_pylist() if hasattr(values, "to_pylist") else values
        return murmur3_32([prefix + (v.strip(" \t") if trim else v).encode("utf-8", "surrogatepass") for v in texts])
    arr = arr.cast(pa.string()) if arr.type != pa.string() else arr
    _, offsets, data = arr.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int32, count=arr.offset + len(arr) + 1)[arr.offset:]
    out = np.empty(len(arr), dtype=np.uint32)
    _murmur.hash_values(prefix, b"" if data is None else data, offsets, len(arr), out, SEED, trim)
    return out


def text_of(value: Any) -> str | None:
    """A categorical value's text (see the module docstring), or None for a value that cannot be one."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return "" if f != f else repr(f)  # NaN (pandas' missing value) is missing
    return None


def bad_value(column: str, value: Any, source: str, **where: Any) -> DataError:
    """The error of a categorical value that is neither text nor a number (`where`: line= or row=)."""
    kind = {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)
    return DataError(f"categorical column {column!r} holds {kind} ({str(value)[:40]}), not text or a number",
                     source=source, reason="bad categorical", **where)


class Hashing:
    """How a stream's categorical columns become features: `names` (as given), hashed into `n_features` slots
    after the numeric columns."""

    def __init__(self, columns: Sequence[str | int], n_features: int | None):
        names = [str(c) for c in columns]
        if len(set(names)) != len(names) or not all(names):
            raise UsageError(f"--categorical-columns {','.join(names)}: each column once, none empty")
        self.columns, self.names = list(columns), names
        self.n_features = None if n_features is None else int(n_features)  # a Stream's own may come from train()
        self.tally = SlotTally()
        self.layout: dict[str, list[str]] | None = None  # the first input's: numeric columns, fields in file order
        self.numeric: list[str] | None = None  # set from a model: the numeric columns to read (predict, evaluate)

    def __iter__(self):
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def heard(self, numeric: list[str], fields: list[str]) -> None:
        """What a reader found: the numeric feature columns' names (in x's order) and the feature fields of a
        record in the input's order (numeric and categorical), which a served CSV request follows."""
        if self.layout is None:
            self.layout = {"numeric": list(numeric), "fields": list(fields)}

    def features(self, x: np.ndarray, cats, source: str, count: bool = True, trim: bool = False) -> CSR:
        """Numeric columns x (n, m) and categorical values `cats` (text: an object array (n, c), or a list of c
        columns, pyarrow string arrays or object arrays) as sparse rows of `n_features`; `trim`: leave out spaces
        and tabs around each value first (CSV fields)."""
        columns = list(cats.T) if isinstance(cats, np.ndarray) else list(cats)
        if self.n_features is None:
            raise UsageError("--categorical-columns hashes values into feature_dim slots: give feature_dim "
                             "(e.g. --feature-dim 1048576; more slots, fewer collisions)")
        n, m = x.shape
        c = len(columns)
        slots = self.n_features - m
        if slots < 1:
            raise UsageError(f"{source}: feature_dim = {self.n_features} leaves no slot for the categorical columns "
                             f"after the {m} numeric ones")
        h = np.empty((n, c), dtype=np.int64)
        for j, name in enumerate(self.names):
            h[:, j] = hash_column(name, columns[j], trim)
        at = h % slots
        if count:  # (a served request is not counted)
            self.tally.add(at.ravel(), h.ravel(), slots)
        # Each row: its non-zero numeric columns (indices < m), then its slots in order, a slot that two of its
        # columns share once with their count: sorted and unique, CSR's contract, without a sort of the batch.
        cat = np.sort(at + m, axis=1)
        first = np.ones((n, c), dtype=bool)
        first[:, 1:] = cat[:, 1:] != cat[:, :-1]
        starts = np.flatnonzero(first.ravel())  # a run of equal slots never crosses rows: each row starts one
        counts = np.zeros((n, c), dtype=np.float32)
        counts.ravel()[starts] = np.diff(np.append(starts, n * c))
        nonzero = x != 0
        keep = np.concatenate([nonzero, first], axis=1)
        cols = np.concatenate([np.broadcast_to(np.arange(m, dtype=np.int64), (n, m)), cat], axis=1)[keep]
        data = np.concatenate([x.astype(np.float32, copy=False), counts], axis=1)[keep]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(keep.sum(axis=1), out=indptr[1:])
        return CSR(indptr, cols, data, (n, self.n_features))

    def model_meta(self) -> dict[str, Any]:
        """What a model keeps so that predict, evaluate and serve hash alike."""
        return {"categorical_columns": self.columns, "categorical_layout": self.layout}

    def to_meta(self) -> dict[str, Any]:
        return {"categorical_columns": self.columns, "hash": "murmur3_x86_32", "seed": SEED, "layout": self.layout,
                **self.tally.to_meta()}


SLOTS_TENSOR = "categorical_slots"  # a state's tensor of the slots' fingerprints (SlotTally.table)


def keep_in_model(model, state_meta: dict[str, Any]):
    """`model` (finalized from a state trained on hashed categorical columns) with what predict, evaluate and serve
    need to hash alike: the columns and the layout, from the state's meta."""
    c = state_meta.get("categorical")
    if c:
        model.meta.update(categorical_columns=c["categorical_columns"], categorical_layout=c.get("layout"))
    return model


def merged(out, a, b):
    """`out`, the merge of states a and b, with their collision tallies merged: both states' slots, a slot
    collided where either's was or their first keys differ (the counts the union of their keys gives)."""
    ta, tb = a.tensors.get(SLOTS_TENSOR), b.tensors.get(SLOTS_TENSOR)
    if ta is None or tb is None or ta.shape != tb.shape:
        return out
    ta, tb = ta.cpu().numpy(), tb.cpu().numpy()
    t = np.where(ta == _EMPTY, tb, np.where((tb == _EMPTY) | (ta == tb), ta, _COLLIDED))
    import torch  # (the states' own)

    out.tensors[SLOTS_TENSOR] = torch.from_numpy(t)
    out.meta["categorical"] = {**a.meta["categorical"], "occupied_slots": int((t != _EMPTY).sum()),
                               "collided_slots": int((t == _COLLIDED).sum())}
    return out


class SlotTally:
    """Per-slot fingerprints of the first key seen (see "Collisions" in the module docstring); thread-safe: the
    reader thread adds, the trainer takes snapshots."""

    def __init__(self):
        self.table: np.ndarray | None = None
        self.lock = threading.Lock()

    def add(self, slots: np.ndarray, hashes: np.ndarray, size: int) -> None:
        """Note keys (their slots and 32-bit hashes), in O(keys), no sort: an empty slot takes one of the hashes
        that land on it, then every hash that differs from its slot's marks the slot collided."""
        with self.lock:
            if self.table is None or len(self.table) != size:
                self.table = np.full(size, _EMPTY, dtype=np.int64)
            t = self.table
            empty = t[slots] == _EMPTY
            t[slots[empty]] = hashes[empty]
            now = t[slots]
            t[slots[(now != hashes) & (now != _COLLIDED)]] = _COLLIDED

    def restore(self, table: np.ndarray | None) -> None:
        with self.lock:
            self.table = None if table is None else np.array(table, dtype=np.int64)

    def snapshot(self) -> np.ndarray | None:
        with self.lock:
            return None if self.table is None else self.table.copy()

    def to_meta(self) -> dict[str, int]:
        t = self.snapshot()
        if t is None:
            return {"slots": 0, "occupied_slots": 0, "collided_slots": 0}
        return {"slots": len(t), "occupied_slots": int((t != _EMPTY).sum()), "collided_slots": int((t == _COLLIDED).sum())}


def summary(meta: dict[str, Any]) -> str:
    """A line for the user: how the categorical columns filled their slots."""
    used, coll, slots = meta["occupied_slots"], meta["collided_slots"], meta["slots"]
    share = f" ({coll / used:.2%} of those used)" if used else ""
    return (f"categorical columns {','.join(map(str, meta['categorical_columns']))}: {used:,} of {slots:,} hash slots "
            f"used, {coll:,} shared by two or more values{share}")


def arrow_texts(columns: dict[int, Any], names: list[str], source: str, row: int,
                events: list | None = None) -> list:
    """The text of columnar categorical values (Parquet, Arrow, JSON lines: `columns` maps a column's index to its
    pyarrow array, whose first value is row `row`) as a list of pyarrow string arrays, less the rows that `events`
    (a reader's bad records, as (good rows before it, error)) left out."""
    import pyarrow as pa  # (the readers that call this have it loaded already)

    out = []
    for i, col in columns.items():
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        t = col.type
        if pa.types.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t):
            out.append(col.cast(pa.string()).fill_null(""))
        elif pa.types.is_floating(t) or pa.types.is_boolean(t):
            out.append(pa.array([text_of(v) for v in col.to_pylist()], pa.string()))
        else:
            first = next((r for r in range(len(col)) if col[r].is_valid), 0)
            raise bad_value(names[i], col[first].as_py(), source, row=row + first)
    if events:  # the rows the reader left out: event k (in order) is the row after k good rows and k earlier events
        keep = np.ones(len(out[0]), dtype=bool)
        keep[[good + k for k, (good, _) in enumerate(events)]] = False
        out = [c.filter(pa.array(keep)) for c in out]
    return out
