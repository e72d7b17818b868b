"""Random and mutated bytes through every parser (issue 3, "Bad input"): the only outcomes are correct records or a
DataError, never a hang, a crash (any other exception) or a silent wrong value.

Each format starts from a small valid file written by onepass, pyarrow or NumPy; hypothesis then flips, sets,
inserts, deletes and duplicates bytes or cuts the file short (`test_damaged_bytes`), rewrites it in another valid
form that must give the very same values (`test_valid_rewrites_give_the_same_values`), or mixes garbage lines into it
and reads it with ``on_bad_record="skip"`` (`test_skip_*`). Where a reference decoder exists (Python's csv/json and
float, NumPy, pyarrow, gzip/zstandard) and accepts the damaged bytes, onepass's records must equal its decode.

Every read runs in a thread joined with a time limit, so a hang fails the example instead of the whole run. Seeds are
fixed (derandomize) and the example counts bounded: the file takes well under a minute. ONEPASS_FUZZ_SCALE=10 runs
ten times the examples; ONEPASS_FUZZ_RANDOM=1 with ``pytest --hypothesis-seed=N`` explores other seeds.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import math
import os
import re
import threading
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import event as _event
from hypothesis import strategies as st

import onepass.data.csv as csv_reader
import onepass.data.jsonl as jsonl_reader
import onepass.data.libsvm as libsvm_reader
from onepass.data import Stream
from onepass.data.recordio import write_recordio
from onepass.errors import DataError, UsageError

from test_data import reference_parse

SCALE = float(os.environ.get("ONEPASS_FUZZ_SCALE", 1))
FIXED = not os.environ.get("ONEPASS_FUZZ_RANDOM")  # set it (with pytest --hypothesis-seed=N) to explore other seeds
TIME_LIMIT = 20.0  # seconds one read may take before it counts as a hang (generous: CI machines are busy)


def event(what: str) -> None:
    """hypothesis' statistics (`pytest --hypothesis-show-statistics`), where a test is running."""
    try:
        _event(what)
    except Exception:  # outside a hypothesis test
        pass


def fuzz_settings(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=FIXED, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


# ------------------------------------------------------------------------------------------------ valid files

N, D, NF = 12, 3, 8  # records, dense columns, LibSVM / sparse RecordIO features
NAMES = ["a", "b", "c"]


def base_rows() -> np.ndarray:
    """Values k/8: exact in float32 and in every text form."""
    rng = np.random.default_rng(7)
    return (rng.integers(-800, 800, size=(N, D)) / 8).astype(np.float64)


def base_sparse() -> tuple[np.ndarray, np.ndarray]:
    """(dense view (N, NF) of sparse rows, one row empty, labels 0/1)."""
    rng = np.random.default_rng(8)
    x = (rng.integers(-80, 80, size=(N, NF)) / 8) * (rng.random((N, NF)) < 0.3)
    x[4] = 0
    return x, (np.arange(N) % 2).astype(np.float64)


def text_number(v: float, style: int = 0) -> str:
    """`v` written in one of several forms that all read back as the same float32."""
    v = float(v)
    if style == 1:
        return f"{v:.6e}"
    if style == 2:
        return f"{v:.4f}"
    if style == 3:
        return ("+" if v >= 0 else "") + repr(v)
    if style == 4 and v.is_integer():
        return str(int(v))
    return repr(v)


def csv_text(rows: np.ndarray, styles=None, newline: str = "\n") -> bytes:
    styles = styles if styles is not None else np.zeros(rows.shape, dtype=int)
    return "".join(",".join(text_number(v, s) for v, s in zip(r, st_)) + newline
                   for r, st_ in zip(rows, styles)).encode()


def libsvm_lines(x: np.ndarray, y: np.ndarray, styles=None) -> list[str]:
    out = []
    for i, (row, label) in enumerate(zip(x, y)):
        s = 0 if styles is None else styles[i]
        pairs = [f"{j + 1}:{text_number(v, s)}" for j, v in enumerate(row) if v != 0]
        out.append(" ".join([text_number(label, 4 if s == 0 else s), *pairs]))
    return out


def jsonl_text(rows: np.ndarray) -> bytes:
    return "".join(json.dumps(dict(zip(NAMES, map(float, r)))) + "\n" for r in rows).encode()


def parquet_bytes(rows: np.ndarray, row_group_size: int = 5, compression: str = "snappy",
                  dtype=np.float64) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({n: rows[:, i].astype(dtype) for i, n in enumerate(NAMES)}), out,
                   row_group_size=row_group_size, compression=compression)
    return out.getvalue()


def arrow_bytes(rows: np.ndarray, chunk: int = 5, stream: bool = False, dtype=np.float64) -> bytes:
    table = pa.table({n: rows[:, i].astype(dtype) for i, n in enumerate(NAMES)})
    out = io.BytesIO()
    with (pa.ipc.new_stream if stream else pa.ipc.new_file)(out, table.schema) as w:
        w.write_table(table, max_chunksize=chunk)
    return out.getvalue()


def npy_bytes(rows: np.ndarray, dtype=np.float32, fortran: bool = False) -> bytes:
    out = io.BytesIO()
    a = rows.astype(dtype)
    np.save(out, np.asfortranarray(a) if fortran else a)
    return out.getvalue()


def npz_bytes(rows: np.ndarray, compressed: bool = False, dtype=np.float32) -> bytes:
    out = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(out, x=rows.astype(dtype))
    return out.getvalue()


def recordio_bytes(x: np.ndarray, y: np.ndarray | None, sparse: bool, dtype=np.float32) -> bytes:
    out = io.BytesIO()
    write_recordio(out, x.astype(dtype), y, sparse=sparse)
    return out.getvalue()


def zstd_bytes(raw: bytes, level: int = 3, frames: int = 1) -> bytes:
    cut = [len(raw) * k // frames for k in range(frames + 1)]
    return b"".join(zstandard.ZstdCompressor(level=level, write_checksum=True).compress(raw[a:b])
                    for a, b in zip(cut, cut[1:]))


def gzip_bytes(raw: bytes, level: int = 6, members: int = 1) -> bytes:
    cut = [len(raw) * k // members for k in range(members + 1)]
    return b"".join(gzip.compress(raw[a:b], compresslevel=level, mtime=0) for a, b in zip(cut, cut[1:]))


# format -> (file suffix, Stream keyword arguments)
FORMATS = {
    "csv": (".csv", {"data_format": "csv", "header": False}),
    "csv.gz": (".csv.gz", {"header": False}),
    "csv.zst": (".csv.zst", {"header": False}),
    "libsvm": (".svm", {"data_format": "libsvm", "n_features": NF}),
    "jsonl": (".jsonl", {"data_format": "jsonl"}),
    "parquet": (".parquet", {"data_format": "parquet"}),
    "arrow": (".arrow", {"data_format": "arrow"}),
    "arrows": (".arrows", {"data_format": "arrow"}),
    "npy": (".npy", {"data_format": "npy"}),
    "npz": (".npz", {"data_format": "npz"}),
    "recordio": (".rec", {"data_format": "recordio-protobuf", "label_column": "values"}),
    "recordio-sparse": (".rec", {"data_format": "recordio-protobuf", "label_column": "values", "n_features": NF}),
}
TEXT = ("csv", "csv.gz", "csv.zst", "libsvm", "jsonl")


@functools.lru_cache(maxsize=None)
def base_file(fmt: str) -> bytes:
    rows = base_rows()
    xs, ys = base_sparse()
    return {
        "csv": lambda: csv_text(rows),
        "csv.gz": lambda: gzip_bytes(csv_text(rows)),
        "csv.zst": lambda: zstd_bytes(csv_text(rows)),
        "libsvm": lambda: ("\n".join(libsvm_lines(xs, ys)) + "\n").encode(),
        "jsonl": lambda: jsonl_text(rows),
        "parquet": lambda: parquet_bytes(rows),
        "arrow": lambda: arrow_bytes(rows),
        "arrows": lambda: arrow_bytes(rows, stream=True),
        "npy": lambda: npy_bytes(rows),
        "npz": lambda: npz_bytes(rows),
        "recordio": lambda: recordio_bytes(rows, np.arange(N, dtype=np.float32), sparse=False),
        "recordio-sparse": lambda: recordio_bytes(xs, ys.astype(np.float32), sparse=True),
    }[fmt]()


def expected(fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The records (dense view) and labels every valid form of the base file must give."""
    if fmt == "libsvm" or fmt == "recordio-sparse":
        x, y = base_sparse()
        return x.astype(np.float32), y.astype(np.float32)
    y = np.arange(N, dtype=np.float32) if fmt == "recordio" else None
    return base_rows().astype(np.float32), y


# ------------------------------------------------------------------------------------------------ reading

class Hang(AssertionError):
    pass


def read(path: Path, fmt: str, batch: int = 5, prefetch: int = 0, **extra):
    """Every record of the file through Stream.batches: (x dense float32, y or None, the skip tally), or the
    exception raised, in a thread given TIME_LIMIT seconds (a hang fails)."""
    kw = {**FORMATS[fmt][1], **extra}
    out: dict = {}

    def work():
        try:
            xs, ys = [], []
            stream = Stream(path, **kw)
            for b in stream.batches(batch, prefetch=prefetch):
                x = b.x.to_dense() if b.x.layout == torch.sparse_csr else b.x
                assert x.dtype == torch.float32, x.dtype
                assert not xs or len(xs[-1]) == batch, "a batch of fewer records than asked before the last"
                assert 1 <= len(b) <= batch
                xs.append(x.numpy().copy())
                ys.append(None if b.y is None else b.y.numpy().copy())
            # skip: the stream's tally once the pass is over (bad lines after the last batch count too)
            bad = None if stream.bad is None else stream.bad.to_meta()
            out["result"] = (np.concatenate(xs) if xs else None,
                             None if not ys or ys[0] is None else np.concatenate(ys), bad)
        except BaseException as e:  # judged by the caller
            out["error"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(TIME_LIMIT)
    if t.is_alive():
        raise Hang(f"{fmt}: reading {path} took more than {TIME_LIMIT:g} s")
    if "error" in out:
        return out["error"]
    return out["result"]


def judge(result, path: Path, allowed=(DataError,)):
    """Records (x, y, bad), or None when the read ended in an allowed error (which must name the file); any other
    exception fails the example as a crash."""
    if isinstance(result, BaseException):
        if isinstance(result, allowed):
            if isinstance(result, DataError):
                assert str(path) in str(result) or result.source is not None, f"error without its source: {result}"
            event(f"{type(result).__name__} ({getattr(result, 'reason', '')})")
            return None
        raise AssertionError(f"crash: {type(result).__name__}: {result}") from result
    event("records")
    x, y, bad = result
    if x is not None:
        assert x.dtype == np.float32 and x.ndim == 2
        assert np.isfinite(x).all(), "a value that is not finite reached a batch"
    if y is not None:
        assert np.isfinite(y).all(), "a label that is not finite reached a batch"
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def write(workdir: Path, fmt: str, data: bytes, tag: str = "m") -> Path:
    p = workdir / f"{tag}-{fmt.replace('.', '_')}{FORMATS[fmt][0]}"
    p.write_bytes(data)
    return p


# ------------------------------------------------------------------------------------------------ mutations

ALL_OPS = ("flip", "set", "insert", "delete", "duplicate", "truncate")


@st.composite
def mutated(draw, raw: bytes, ops: tuple[str, ...] = ALL_OPS) -> bytes:
    """`raw` with 1 to 4 damages: bytes flipped or set, random bytes inserted, a piece deleted, a piece duplicated
    somewhere else, or the end cut off."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(ops))
        last = max(0, len(data) - 1)  # half the time near the start, where the headers and magic numbers are
        at = draw(st.one_of(st.integers(0, min(last, 127)), st.integers(0, last)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "duplicate":
            piece = bytes(data[at:at + draw(st.integers(1, 64))])
            to = draw(st.integers(0, len(data)))
            data[to:to] = piece
        elif op == "truncate":
            del data[at:]
    return bytes(data)


# tokens that parsers of text tend to get wrong, put in place of a field (CSV), a token (LibSVM) or a value (JSON)
TOKENS = {
    "csv": [b"", b" ", b"nan", b"-inf", b"Infinity", b"1e39", b"-3.5e38", b"1e-50", b"0x10", b"1_0", b"\xd9\xa1",
            b"+.5", b"5.", b".", b"-", b"1e", b"1,2", b'"1"', b'"1', b"\t7\t", b"\x00", b"\xef\xbb\xbf1", b"9" * 400],
    "libsvm": [b"nan", b"1e400", b"0:1", b"-1:1", b"1.5:1", b"1e0:1", b"9" * 30 + b":1", b"qid:7", b"qid:x", b"#",
               b"3:", b":3", b"3::1", b"1:1:1", b"\x0b", b"\x0c", b"\x00", b"2:nan", b"2:1e39", b"2:0x1", b"+1"],
    "jsonl": [b"NaN", b"-Infinity", b"1e400", b"-1e39", b"9" * 5000, b"[" * 5000 + b"]" * 5000, b"true", b"null",
              b'"1.5"', b"{}", b"[1]", b'{"a": 1}', b"1.", b"01", b"0x1", b'"\\ud800"', b"\xff", b"1 2", b""],
}


@st.composite
def with_tokens(draw, fmt: str) -> bytes:
    """The base text with 1 to 3 of its fields, tokens or values (or JSON field names) replaced by TOKENS."""
    base = base_file(fmt).split(b"\n")
    lines = list(base)
    fields = {}  # JSON lines: line -> [name, value] pairs as text (the base line's, then as replaced)
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.integers(0, len(lines) - 2))
        token = draw(st.sampled_from(TOKENS[fmt]))
        if fmt == "csv":
            words = lines[k].split(b",")
            words[draw(st.integers(0, len(words) - 1))] = token
            lines[k] = b",".join(words)
        elif fmt == "libsvm":
            words = lines[k].split(b" ")
            words[draw(st.integers(0, len(words) - 1))] = token
            lines[k] = b" ".join(words)
        else:
            pairs = fields.setdefault(k, [[json.dumps(n).encode(), json.dumps(v).encode()]
                                          for n, v in json.loads(base[k]).items()])
            # the token as a field's name (its value kept) or as its value
            pairs[draw(st.integers(0, len(pairs) - 1))][int(not draw(st.booleans()))] = token
            lines[k] = b"{" + b", ".join(n + b": " + v for n, v in pairs) + b"}"
    return b"\n".join(lines)


def fuzz_input(fmt: str):
    """Mutations of the base file: any kind, or bytes changed in place (a binary file keeps its layout, so the
    damage reaches the values and the fields inside it); for text also tokens that parsers get wrong and bytes that
    owe nothing to the base file."""
    raw = base_file(fmt)
    kinds = [mutated(raw), mutated(raw, ("flip", "set"))]
    if fmt in TOKENS:
        kinds += [with_tokens(fmt), with_tokens(fmt), st.binary(max_size=64)]  # tokens: twice the weight
    return st.one_of(*kinds)


def decompress(fmt: str, data: bytes) -> bytes | None:
    """The text inside a compressed CSV, or None where the decompressor refuses the bytes (truncated, corrupt)."""
    try:
        if fmt == "csv.gz":
            return gzip.decompress(data)
        if fmt == "csv.zst":
            out, rest = [], data
            while rest:
                d = zstandard.ZstdDecompressor().decompressobj()
                out.append(d.decompress(rest))
                if not d.eof:
                    return None
                rest = d.unused_data
            return b"".join(out)
    except (OSError, EOFError, zstandard.ZstdError, ValueError):
        return None
    return data


def lines_of(text: bytes) -> list[bytes]:
    return re.split(rb"\r\n|\r|\n", text)


# --- reference decoders: (x, y) when they accept the whole file, None otherwise

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def finite32(v: float) -> bool:
    with np.errstate(over="ignore"):
        return math.isfinite(v) and bool(np.isfinite(np.float32(v)))


def libsvm_line(raw: bytes) -> tuple | None | bool:
    """One LibSVM line by SVMlight's rules: (label, dense row), False for a blank line, None for a bad one."""
    fields = raw.split(b"#", 1)[0].split()
    if not fields:
        return False
    try:
        words = [w.decode("ascii") for w in fields]
    except UnicodeDecodeError:
        return None
    if not _NUMBER.fullmatch(words[0]) or not finite32(float(words[0])):
        return None
    pairs = words[2:] if len(words) > 1 and re.fullmatch(r"qid:[0-9]+", words[1]) else words[1:]
    row, last = np.zeros(NF, dtype=np.float32), -1
    for w in pairs:
        if w.count(":") != 1:
            return None
        i, v = w.split(":")
        if not _NUMBER.fullmatch(i) or not _NUMBER.fullmatch(v) or not float(i).is_integer():
            return None
        index = int(float(i)) - 1
        if not last < index < NF or not finite32(float(v)):
            return None
        row[index], last = np.float32(float(v)), index
    return np.float32(float(words[0])), row


def _no_repeats(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("repeated key")
    return dict(pairs)


def jsonl_line(raw: bytes, names: list[str] | None) -> np.ndarray | None | bool:
    """One JSON lines record: its values in `names` order, False for a blank line, None for a bad one."""
    if not raw.strip(b" \t\r\n"):
        return False
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_repeats)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict) or (names is not None and set(obj) != set(names)):
        return None
    values = []
    for k in (names or list(obj)):
        v = obj[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        try:
            f = float(v)
        except OverflowError:
            return None
        if not finite32(f):
            return None
        values.append(np.float32(f))
    return np.array(values, dtype=np.float32)


def jsonl_names(text: bytes) -> list[str] | None:
    for raw in text.split(b"\n"):
        if raw.strip(b" \t\r\n"):
            try:
                obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_repeats)
            except (ValueError, UnicodeDecodeError, RecursionError):
                return None
            return list(obj) if isinstance(obj, dict) else None
    return None


def reference(fmt: str, data: bytes) -> tuple[np.ndarray, np.ndarray | None] | None:
    """What an independent decoder makes of the whole file: (x, y), or None where it refuses it (or has no say)."""
    try:
        if fmt in ("csv", "csv.gz", "csv.zst"):
            text = decompress(fmt, data)
            if text is None:
                return None
            ref, _ = reference_parse(text)
            return None if ref is None else (ref, None)
        if fmt == "libsvm":
            rows = [libsvm_line(raw) for raw in data.split(b"\n")]
            if any(r is None for r in rows):
                return None
            good = [r for r in rows if r is not False]
            if not good:
                return None
            return np.stack([r[1] for r in good]), np.array([r[0] for r in good], dtype=np.float32)
        if fmt == "jsonl":
            names = jsonl_names(data)
            if names is None:
                return None
            rows = [jsonl_line(raw, names) for raw in data.split(b"\n")]
            if any(r is None for r in rows) or not any(r is not False for r in rows):
                return None
            return np.stack([r for r in rows if r is not False]), None
        if fmt == "npy":
            a = np.load(io.BytesIO(data), allow_pickle=False)
            return _numeric_2d(a)
        if fmt == "npz":
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                if list(z.files) != ["x"]:
                    return None
                return _numeric_2d(z["x"])
        if fmt == "parquet":
            return _table(pq.read_table(io.BytesIO(data)))
        if fmt in ("arrow", "arrows"):
            reader = (pa.ipc.open_stream if fmt == "arrows" else pa.ipc.open_file)(pa.BufferReader(data))
            table = reader.read_all()
            for rb in table.to_batches():
                rb.validate(full=True)
            return _table(table)
    except Exception:  # the reference refuses the bytes, whatever its way of saying so
        return None
    return None  # RecordIO-protobuf: no independent decoder here (tests/test_recordio.py checks it by hand)


def _numeric_2d(a: np.ndarray):
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.dtype.kind not in "biuf" or a.shape[0] == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        x = a.astype(np.float32)
    return (x, None) if np.isfinite(x).all() else None


def _table(table: pa.Table):
    if table.num_rows == 0 or table.num_columns == 0:
        return None
    cols = []
    for c in table.columns:
        if not (pa.types.is_floating(c.type) or pa.types.is_integer(c.type) or pa.types.is_boolean(c.type)):
            return None
        if c.null_count:
            return None
        cols.append(c.to_numpy(zero_copy_only=False).astype(np.float32))
    x = np.stack(cols, axis=1)
    return (x, None) if np.isfinite(x).all() else None


def record_bound(fmt: str, data: bytes) -> int | None:
    """The most records the bytes can hold: one a line (text), one a RecordIO frame, else unknown."""
    if fmt in ("csv", "libsvm", "jsonl"):
        return len(lines_of(data))
    if fmt in ("csv.gz", "csv.zst"):
        text = decompress(fmt, data)
        return None if text is None else len(lines_of(text))
    if fmt.startswith("recordio"):
        return data.count(bytes.fromhex("0a23d7ce"))  # the little-endian magic number starts every frame
    return None


def width(fmt: str) -> int | None:
    """The batches' width where the reader is told it; elsewhere damaged bytes may well describe other columns."""
    return NF if fmt in ("libsvm", "recordio-sparse") else None


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of a few lines, so that damage falls at block edges and in later blocks too."""
    monkeypatch.setattr(csv_reader, "BLOCK_SIZE", 64)
    monkeypatch.setattr(jsonl_reader, "BLOCK_SIZE", 96)
    monkeypatch.setattr(libsvm_reader, "BLOCK_SIZE", 64)


# ------------------------------------------------------------------------------------------------ the tests

def test_the_base_files_read_as_written(workdir):
    for fmt in FORMATS:
        path = write(workdir, fmt, base_file(fmt), "base")
        got = judge(read(path, fmt), path, allowed=())
        x, y = expected(fmt)
        np.testing.assert_array_equal(got[0], x, err_msg=fmt)
        if y is not None:
            np.testing.assert_array_equal(got[1], y, err_msg=fmt)
        ref = reference(fmt, base_file(fmt))
        if ref is not None:
            np.testing.assert_array_equal(ref[0], x, err_msg=f"{fmt} reference")


@pytest.mark.parametrize("fmt", list(FORMATS))
@given(data=st.data(), batch=st.integers(1, 7), prefetch=st.sampled_from([0, 2]))
@fuzz_settings(150)
def test_damaged_bytes(workdir, fmt, data, batch, prefetch):
    """Records that are right (equal to the reference decode where one accepts the bytes) or a DataError."""
    raw = data.draw(fuzz_input(fmt), label="bytes")
    path = write(workdir, fmt, raw)
    got = judge(read(path, fmt, batch=batch, prefetch=prefetch), path)
    if got is None:
        return
    x, y, _ = got
    assert x is not None, "no records and no error"
    bound = record_bound(fmt, raw)
    if bound is not None:
        assert len(x) <= bound, f"{len(x)} records from bytes that hold at most {bound}"
    if width(fmt) is not None:
        assert x.shape[1] == width(fmt)
    ref = reference(fmt, raw)
    if fmt in ("csv", "csv.gz", "csv.zst", "libsvm", "jsonl"):
        # text: every byte is checked by the reference; what it refuses must not come out as records
        assert ref is not None, f"read {len(x)} records from bytes the reference refuses"
    if ref is not None:
        event("records equal to the reference")
        np.testing.assert_array_equal(x, ref[0])
        if ref[1] is not None:
            np.testing.assert_array_equal(y, ref[1])


# --- rewrites that keep a file valid and its values the same

@st.composite
def valid_rewrite(draw, fmt: str) -> bytes:
    rows = base_rows()
    xs, ys = base_sparse()
    if fmt in ("csv", "csv.gz", "csv.zst"):
        styles = draw(st.lists(st.integers(0, 4), min_size=N * D, max_size=N * D))
        newline = draw(st.sampled_from(["\n", "\r\n"]))
        text = csv_text(rows, np.array(styles).reshape(N, D), newline)
        lines = text.split(newline.encode())[:-1]
        for _ in range(draw(st.integers(0, 3))):  # blank lines anywhere
            lines.insert(draw(st.integers(0, len(lines))), b"")
        text = newline.encode().join(lines) + (newline.encode() if draw(st.booleans()) else b"")
        if draw(st.booleans()):
            text = b"\xef\xbb\xbf" + text  # a byte order mark
        if fmt == "csv.gz":
            return gzip_bytes(text, draw(st.integers(1, 9)), draw(st.integers(1, 4)))
        if fmt == "csv.zst":
            return zstd_bytes(text, draw(st.integers(1, 19)), draw(st.integers(1, 4)))
        return text
    if fmt == "libsvm":
        styles = draw(st.lists(st.integers(0, 4), min_size=N, max_size=N))
        out = []
        for k, line in enumerate(libsvm_lines(xs, ys, styles)):
            sep = draw(st.sampled_from([" ", "  ", "\t", " \t "]))
            words = line.split(" ")
            if draw(st.booleans()):
                words.insert(1, f"qid:{k}")
            line = sep.join(words)
            if draw(st.booleans()):
                line += draw(st.sampled_from([" ", "\t", "\r"]))
            if draw(st.booleans()):
                line += " # a comment: 1:2 x"
            out.append(line)
            if draw(st.integers(0, 5)) == 0:
                out.append(draw(st.sampled_from(["", "# only a comment", "   "])))
        return ("\n".join(out) + "\n").encode()
    if fmt == "jsonl":
        out = []
        for r in rows:
            keys = list(NAMES)
            if out and draw(st.booleans()):  # later records may give the fields in another order
                keys = draw(st.permutations(keys))
            sep = draw(st.sampled_from([(", ", ": "), (",", ":"), (" ,  ", " :\t")]))
            body = sep[0].join(f'"{k}"{sep[1]}{text_number(r[NAMES.index(k)], draw(st.sampled_from([0, 1, 2, 4])))}'
                               for k in keys)
            before, after = draw(st.sampled_from(["", " ", "\t"])), draw(st.sampled_from(["", " ", "\r"]))
            out.append(before + "{" + body + "}" + after)
            if draw(st.integers(0, 5)) == 0:
                out.append(draw(st.sampled_from(["", "  "])))
        return ("\n".join(out) + "\n").encode()
    if fmt == "parquet":
        return parquet_bytes(rows, draw(st.integers(1, N)), draw(st.sampled_from(["none", "snappy", "zstd", "gzip"])),
                             draw(st.sampled_from([np.float32, np.float64])))
    floats = st.sampled_from([np.float32, np.float64])
    if fmt in ("arrow", "arrows"):
        return arrow_bytes(rows, draw(st.integers(1, N)), fmt == "arrows", draw(floats))
    if fmt == "npy":
        return npy_bytes(rows, draw(st.sampled_from([np.float32, np.float64, ">f8", "<f4"])), draw(st.booleans()))
    if fmt == "npz":
        return npz_bytes(rows, draw(st.booleans()), draw(floats))
    if fmt == "recordio":
        return recordio_bytes(rows, np.arange(N, dtype=np.float32), False, draw(floats))
    if fmt == "recordio-sparse":
        return recordio_bytes(xs, ys.astype(np.float32), True, draw(floats))
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", list(FORMATS))
@given(data=st.data(), batch=st.integers(1, 13))
@fuzz_settings(15)
def test_valid_rewrites_give_the_same_values(workdir, fmt, data, batch):
    raw = data.draw(valid_rewrite(fmt), label="bytes")
    path = write(workdir, fmt, raw, "valid")
    got = judge(read(path, fmt, batch=batch), path, allowed=())
    x, y = expected(fmt)
    np.testing.assert_array_equal(got[0], x)
    if y is not None:
        np.testing.assert_array_equal(got[1], y)


# --- on_bad_record="skip"

@st.composite
def with_garbage_lines(draw, fmt: str) -> tuple[bytes, int]:
    """The base text with lines of garbage (starting with `x`, without quotes, comments or line ends: never a
    record) inserted between its lines; and how many."""
    text = base_file(fmt) if fmt not in ("csv.gz", "csv.zst") else base_file("csv")
    lines = text.split(b"\n")[:-1]
    n = draw(st.integers(1, 5))
    for _ in range(n):
        junk = draw(st.binary(max_size=12).map(lambda b: bytes(c for c in b if c not in b"\n\r\"#")))
        # CSV and JSON lines: the first line sets the columns or fields, so it stays
        lines.insert(draw(st.integers(0 if fmt == "libsvm" else 1, len(lines))), b"x" + junk)
    out = b"\n".join(lines) + b"\n"
    if fmt == "csv.gz":
        out = gzip_bytes(out)
    elif fmt == "csv.zst":
        out = zstd_bytes(out)
    return out, n


@pytest.mark.parametrize("fmt", TEXT)
@given(data=st.data(), batch=st.integers(1, 7))
@fuzz_settings(25)
def test_skip_leaves_out_exactly_the_garbage_lines(workdir, fmt, data, batch):
    raw, n = data.draw(with_garbage_lines(fmt), label="bytes")
    path = write(workdir, fmt, raw, "garbage")
    got = judge(read(path, fmt, batch=batch, on_bad_record="skip", max_bad_fraction=1.0), path, allowed=())
    x, y = expected(fmt)
    np.testing.assert_array_equal(got[0], x)
    if y is not None:
        np.testing.assert_array_equal(got[1], y)
    assert got[2]["skipped"] == n and got[2]["records"] == len(x), got[2]


def strict_lines(fmt: str, data: bytes) -> list[tuple[np.ndarray, float | None]] | None:
    """The records a strict reader accepts line by line (each line alone), in order; None: no say."""
    text = decompress(fmt, data) if fmt in ("csv.gz", "csv.zst") else data
    if text is None:
        return None
    out = []
    if fmt.startswith("csv"):
        for k, raw in enumerate(lines_of(text)):
            if k == 0:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            ref, _ = reference_parse(raw + b"\n")
            if ref is not None and len(ref) == 1:
                out.append((ref[0], None))
    elif fmt == "libsvm":
        for raw in text.split(b"\n"):
            r = libsvm_line(raw)
            if r:
                out.append((r[1], r[0]))
    elif fmt == "jsonl":
        names = jsonl_names(text)
        if names is None:
            return None
        for raw in text.split(b"\n"):
            r = jsonl_line(raw, names)
            if r is not None and r is not False:
                out.append((r, None))
    return out


@pytest.mark.parametrize("fmt", [*TEXT, "parquet", "arrow", "npy"])
@given(data=st.data(), batch=st.integers(1, 7))
@fuzz_settings(60)
def test_skip_gives_only_records_a_strict_reader_accepts(workdir, fmt, data, batch):
    """Damaged bytes under skip: records or a DataError (damage that is no bad record, such as a broken frame, still
    stops the read); the records are some of those a strict reader accepts line by line (text), in file order, or,
    for columnar files a reference reads, exactly its rows without nulls and non-finite values."""
    raw = data.draw(fuzz_input(fmt), label="bytes")
    path = write(workdir, fmt, raw, "skip")
    result = read(path, fmt, batch=batch, on_bad_record="skip", max_bad_fraction=1.0)
    got = judge(result, path)
    if got is None:
        if fmt in TEXT and result.reason not in ("unreadable", "truncated", "empty"):
            # a bad line is skipped, except the first one, which sets the columns (CSV) or fields (JSON lines)
            text = decompress(fmt, raw)
            if fmt == "jsonl":  # lines end at \n; lines of white space are skipped
                first = next(k for k, line in enumerate(text.split(b"\n"), 1) if line.strip())
            else:  # CSV: lines end at \n, \r\n or \r; only empty lines are skipped
                first = next(k for k, line in enumerate(lines_of(text), 1) if line)
            assert fmt != "libsvm" and result.line == first, f"skip stopped at a bad line: {result}"
        return
    x, y, bad = got
    assert bad is not None and bad["records"] == (0 if x is None else len(x))
    if x is None:  # every record was bad: no batch, no error (max_bad_fraction=1.0)
        assert bad["skipped"] > 0
        return
    if fmt in TEXT:
        accepted = strict_lines(fmt, raw)
        if accepted is None:
            return
        k = 0
        for i in range(len(x)):  # x is a subsequence of the accepted lines
            while k < len(accepted) and not (accepted[k][0].shape == x[i].shape and
                                             np.array_equal(accepted[k][0], x[i]) and
                                             (y is None or accepted[k][1] == y[i])):
                k += 1
            assert k < len(accepted), f"record {i} ({x[i]}) is no line a strict reader accepts, in order"
            k += 1
    else:
        ref = _skip_reference(fmt, raw)
        if ref is not None:
            np.testing.assert_array_equal(x, ref)


def _skip_reference(fmt: str, data: bytes) -> np.ndarray | None:
    """The rows of a columnar file that have no null and no non-finite value, as float32; None: the reference
    refuses the file."""
    try:
        if fmt == "npy":
            a = np.load(io.BytesIO(data), allow_pickle=False)
            a = a[:, None] if a.ndim == 1 else a
            if a.ndim != 2 or a.dtype.kind not in "biuf":
                return None
            with np.errstate(over="ignore", invalid="ignore"):
                x = a.astype(np.float32)
            return x[np.isfinite(x).all(axis=1)]
        if fmt == "parquet":
            table = pq.read_table(io.BytesIO(data))
        else:
            table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
            for rb in table.to_batches():
                rb.validate(full=True)
        cols = []
        for c in table.columns:
            if not (pa.types.is_floating(c.type) or pa.types.is_integer(c.type)):
                return None
            v = c.to_numpy(zero_copy_only=False).astype(np.float64)
            cols.append(np.where(c.is_null().to_numpy(zero_copy_only=False), np.nan, v).astype(np.float32))
        x = np.stack(cols, axis=1)
        return x[np.isfinite(x).all(axis=1)]
    except Exception:
        return None


def test_recordio_refuses_skip_as_documented(workdir):
    path = write(workdir, "recordio", base_file("recordio"), "skip")
    with pytest.raises(UsageError, match="can only fail"):
        Stream(path, data_format="recordio-protobuf", on_bad_record="skip")


def test_npz_entries_damaged_inside_the_zip(workdir):
    """Damage inside a stored (not compressed) member's array bytes and header, behind a valid zip directory."""
    raw = npz_bytes(base_rows())
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        member = z.read("x.npy")
    for cut in (10, 60, 80, len(member) - 5):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("x.npy", member[:cut])
        path = write(workdir, "npz", out.getvalue(), f"cut{cut}")
        assert judge(read(path, "npz"), path) is None


@pytest.mark.parametrize("fmt", ["npy", "npz"])
@pytest.mark.parametrize("damage", [(b"'shape': (", b"'shape': )"), (b", 'shape'", b",B'shape'")])
def test_a_damaged_header_literal_is_a_data_error(workdir, fmt, damage):
    """Found by test_damaged_bytes: one byte of the .npy header changed made NumPy's header parser raise
    tokenize.TokenError (``'shape': )12, 3)``) or TypeError (a bytes key, ``B'shape'``, sorted with str keys),
    which escaped the .npy and .npz readers as crashes."""
    member = npy_bytes(base_rows()).replace(*damage)
    assert member != npy_bytes(base_rows())
    if fmt == "npz":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("x.npy", member)
        member = out.getvalue()
    path = write(workdir, fmt, member, "literal")
    with pytest.raises(DataError, match="not a readable|unreadable|npz|npy"):
        for _ in Stream(path).batches(5, prefetch=0):
            pass


@pytest.mark.parametrize("line, words", [
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b', "b": 1, "c": 2}', "nested too deeply"),
    (b'{"a": ' + b"9" * 5000 + b', "b": 1, "c": 2}', "digits"),
    (b'{"\\ud800": 1, "b": 1, "c": 2}', "not valid Unicode"),
])
@pytest.mark.parametrize("where", ["first", "later"])
def test_json_lines_that_python_cannot_decode_are_data_errors(workdir, line, words, where):
    """Found with TOKENS: JSON nested deeper than Python's recursion limit (RecursionError), an integer of more
    digits than Python converts (ValueError) and a field name holding a lone surrogate escape (UnicodeEncodeError in
    pyarrow's schema) escaped the JSON lines reader as crashes; skip left the line out only where it was no first."""
    good = base_file("jsonl")
    data = line + b"\n" + good if where == "first" else good + line + b"\n" + good
    path = write(workdir, "jsonl", data, f"json-{where}")
    result = read(path, "jsonl")
    assert isinstance(result, DataError) and words in str(result), result
    assert result.line == (1 if where == "first" else N + 1)
    skipped = read(path, "jsonl", on_bad_record="skip", max_bad_fraction=1.0)
    if where == "first":  # the first line names the fields: it cannot be skipped
        assert isinstance(skipped, DataError) and words in str(skipped), skipped
    else:
        np.testing.assert_array_equal(skipped[0], np.concatenate([expected("jsonl")[0]] * 2))
        assert skipped[2]["skipped"] == 1


def test_npy_without_columns_is_refused_as_npz_is(workdir):
    """Found while fuzzing: a (12, 0) .npy array gave 12 records of no features (.npz refused the same array)."""
    for fmt in ("npy", "npz"):
        data = npy_bytes(np.zeros((12, 0))) if fmt == "npy" else npz_bytes(np.zeros((12, 0)))
        path = write(workdir, fmt, data, "nocolumns")
        result = read(path, fmt)
        assert isinstance(result, DataError) and "no feature columns" in str(result), (fmt, result)
