"""The data layer: formats, sources, mini-batches, exact resume, bad input and the background read-ahead.

Every test reads files the way a user would (`Stream(...).batches(n)`) and checks what a user would see: the
records and their values, the batch sizes, the positions a checkpoint stores, and the DataError a bad file gives
(the file's path and the exact 1-based line).
"""

from __future__ import annotations

import bz2
import contextlib
import csv as pycsv
from fractions import Fraction
import gzip
import io
import json
import lzma
import math
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import onepass.data.csv as csv_reader
import onepass.data.npy as npy_reader
import onepass.data.parquet as parquet_reader
from onepass.data import Stream
from onepass.data import batches as batches_module
from onepass.errors import DataError, UsageError

FAST = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------------- helpers


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def csv_bytes(x: np.ndarray, header: list[str] | None = None, fmt: str = "%.6g") -> bytes:
    out = io.StringIO()
    if header:
        out.write(",".join(header) + "\n")
    np.savetxt(out, x, delimiter=",", fmt=fmt)
    return out.getvalue().encode()


def table(seed: int, n: int, d: int) -> np.ndarray:
    """Values that survive a round trip through "%.6g" text exactly (as float32)."""
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(size=(n, d)) * 100, 3)


def collect(stream: Stream, n: int, **kw) -> list[tuple[np.ndarray, np.ndarray | None, dict]]:
    return [(b.x.numpy().copy(), None if b.y is None else b.y.numpy().copy(), dict(b.position))
            for b in stream.batches(n, **kw)]


def whole(stream: Stream, n: int = 7, **kw) -> tuple[np.ndarray, np.ndarray | None]:
    got = collect(stream, n, **kw)
    x = np.concatenate([g[0] for g in got])
    y = None if got[0][1] is None else np.concatenate([g[1] for g in got])
    return x, y


def same_batches(a, b) -> None:
    assert len(a) == len(b), f"{len(a)} batches != {len(b)}"
    for k, ((xa, ya, pa_), (xb, yb, pb)) in enumerate(zip(a, b)):
        assert xa.dtype == xb.dtype == np.float32
        np.testing.assert_array_equal(xa, xb, err_msg=f"batch {k}")
        if ya is None:
            assert yb is None
        else:
            np.testing.assert_array_equal(ya, yb, err_msg=f"batch {k} labels")
        # where the stream stands; the restart offset itself may differ (a resumed CSV reads other blocks)
        assert (pa_["file"], pa_["path"], pa_["records"]) == (pb["file"], pb["path"], pb["records"]), \
            f"batch {k}: position {pa_} != {pb}"


def data_error(path, line: int | None, fn) -> DataError:
    """Run fn, expect a DataError that names `path` and (when given) exactly `line`."""
    with pytest.raises(DataError) as e:
        fn()
    err = e.value
    assert str(path) in str(err)
    if line is not None:
        assert err.line == line, str(err)
        assert str(err).startswith(f"{path}, line {line}: "), str(err)
    return err


def read_all(path, n: int = 3, prefetch: int = 2, **kw):
    return collect(Stream(path, **kw), n, prefetch=prefetch)


@contextlib.contextmanager
def block_size(n: int):
    """Cut CSV files into blocks of about n bytes, so that a small file spans many blocks."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(csv_reader, "BLOCK_SIZE", n)
        yield


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail instead of hanging."""
    def alarm(*_):
        raise TimeoutError(f"took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def readers_alive() -> int:
    return sum(t.name == "onepass-reader" and t.is_alive() for t in threading.enumerate())


# ---------------------------------------------------------------------------------------------------- formats


def test_csv_unsupervised_batches_equal_numpy(tmp_path):
    x = table(0, 53, 4)
    p = write(tmp_path / "x.csv", csv_bytes(x))
    got = collect(Stream(p), 10)
    assert [len(g[0]) for g in got] == [10, 10, 10, 10, 10, 3]
    assert all(g[1] is None for g in got)
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]),
                                  np.loadtxt(p, delimiter=",", dtype=np.float32, ndmin=2))


@pytest.mark.parametrize("label, y_index", [("first", 0), ("last", 3), (1, 1), ("2", 2), (-1, 3), ("b", 1)])
def test_csv_label_column(tmp_path, label, y_index):
    x = table(1, 20, 4)
    p = write(tmp_path / "x.csv", csv_bytes(x, header=["a", "b", "c", "d"]))
    gx, gy = whole(Stream(p, label_column=label))
    ref = np.loadtxt(p, delimiter=",", dtype=np.float32, skiprows=1)
    np.testing.assert_array_equal(gy, ref[:, y_index])
    np.testing.assert_array_equal(gx, np.delete(ref, y_index, axis=1))


def test_csv_label_column_unknown_is_refused(tmp_path):
    p = write(tmp_path / "x.csv", csv_bytes(table(1, 5, 3), header=["a", "b", "c"]))
    with pytest.raises(UsageError, match="'z'"):
        whole(Stream(p, label_column="z"))
    with pytest.raises(UsageError):
        whole(Stream(p, label_column=3))


def test_csv_with_only_a_label_column_is_refused(tmp_path):
    p = write(tmp_path / "y.csv", b"1\n2\n3\n")
    with pytest.raises(DataError, match="no feature columns"):
        whole(Stream(p, label_column="first"))


def test_csv_header_detected_or_not(tmp_path):
    x = table(2, 6, 3)
    with_header = write(tmp_path / "h.csv", csv_bytes(x, header=["a", "b", "c"]))
    without = write(tmp_path / "n.csv", csv_bytes(x))
    np.testing.assert_array_equal(whole(Stream(with_header))[0], x.astype(np.float32))
    np.testing.assert_array_equal(whole(Stream(without))[0], x.astype(np.float32))  # first line is a record
    # forced: a numeric first line skipped as a header, a text header refused as a record
    np.testing.assert_array_equal(whole(Stream(without, header=True))[0], x[1:].astype(np.float32))
    data_error(with_header, 1, lambda: whole(Stream(with_header, header=False)))


def test_csv_blank_lines_crlf_quotes_tsv_and_byte_order_mark(tmp_path):
    expect = np.array([[1, 2], [3, 4], [5.5, -6e-3]], dtype=np.float32)
    p = write(tmp_path / "a.csv", b'\xef\xbb\xbf\r\n1,2\r\n\r\n"3", 4 \r\n5.5,-6e-3')  # BOM, no header
    np.testing.assert_array_equal(whole(Stream(p))[0], expect)
    p = write(tmp_path / "b.csv", b"\xef\xbb\xbfa,b\n1,2\n3,4\n5.5,-6e-3\n")  # BOM before a header
    gx, gy = whole(Stream(p, label_column="a"))
    np.testing.assert_array_equal(gy, expect[:, 0])
    p = write(tmp_path / "c.tsv", b"a\tb\n1\t2\n3\t4\n5.5\t-6e-3\n")
    np.testing.assert_array_equal(whole(Stream(p))[0], expect)


@pytest.mark.parametrize("suffix, compress", [(".csv.gz", gzip.compress), (".csv.bz2", bz2.compress),
                                              (".csv.xz", lzma.compress), (".CSV.GZ", gzip.compress)])
def test_compressed_csv_read_transparently(tmp_path, suffix, compress):
    x = table(3, 40, 3)
    p = write(tmp_path / f"x{suffix}", compress(csv_bytes(x, header=["a", "b", "c"])))
    gx, gy = whole(Stream(p, label_column="last"))
    np.testing.assert_array_equal(gx, x[:, :2].astype(np.float32))
    np.testing.assert_array_equal(gy, x[:, 2].astype(np.float32))


def test_parquet_batches_equal_the_table(tmp_path):
    rng = np.random.default_rng(4)
    n = 250
    t = pa.table({"f": rng.normal(size=n), "i": rng.integers(-5, 5, n).astype(np.int32),
                  "b": rng.random(n) < 0.5, "label": rng.integers(0, 3, n)})
    p = tmp_path / "x.parquet"
    pq.write_table(t, p, row_group_size=60)
    assert pq.ParquetFile(p).metadata.num_row_groups == 5
    got = collect(Stream(p, label_column="label"), 32)
    assert [len(g[0]) for g in got] == [32] * 7 + [26]
    gx = np.concatenate([g[0] for g in got])
    gy = np.concatenate([g[1] for g in got])
    ref = np.stack([t["f"].to_numpy(), t["i"].to_numpy(), t["b"].to_numpy(zero_copy_only=False)], axis=1)
    np.testing.assert_array_equal(gx, ref.astype(np.float32))
    np.testing.assert_array_equal(gy, t["label"].to_numpy().astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16])
def test_npy_batches_equal_the_array(tmp_path, dtype):
    a = (table(5, 45, 3) * 10).astype(dtype)
    p = tmp_path / "x.npy"
    np.save(p, a)
    got = collect(Stream(p), 20)
    assert [len(g[0]) for g in got] == [20, 20, 5]
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), a.astype(np.float32))
    gx, gy = whole(Stream(p, label_column="last"))
    np.testing.assert_array_equal(gx, a[:, :2].astype(np.float32))
    np.testing.assert_array_equal(gy, a[:, 2].astype(np.float32))
    np.save(p, a[:, 0])  # a 1-D array is one feature column
    np.testing.assert_array_equal(whole(Stream(p))[0], a[:, :1].astype(np.float32))


def test_npy_batches_can_be_changed_in_place(tmp_path):
    """A batch of a float32 .npy file is the user's to change: not a view of the read-only memory map (which
    crashed the process on `x.mul_(2)`), and changing it leaves the file alone."""
    p = tmp_path / "x.npy"
    a = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.save(p, a)
    code = ("import sys\nfrom onepass.data import Stream\n"
            "b = next(iter(Stream(sys.argv[1]).batches(4, prefetch=0)))\n"
            "b.x.mul_(2)\nprint(b.x.sum().item())\n")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.split()[-1]) == 2 * a[:4].sum()
    assert "not writable" not in r.stderr
    np.testing.assert_array_equal(np.load(p), a)


# ---------------------------------------------------------------------------------------------------- sources


def test_glob_is_sorted_and_batches_span_files(tmp_path):
    parts = {"b.csv": table(6, 7, 2), "a.csv": table(7, 5, 2), "c.csv": table(8, 4, 2)}
    for name, x in parts.items():
        write(tmp_path / name, csv_bytes(x, header=["u", "v"]))
    s = Stream(str(tmp_path / "*.csv"))
    assert [Path(i.path).name for i in s.inputs] == ["a.csv", "b.csv", "c.csv"]
    got = collect(s, 6)
    assert [len(g[0]) for g in got] == [6, 6, 4]
    assert [g[2]["file"] for g in got] == [1, 1, 2]  # the first batch ends in b.csv, the second at its end
    ref = np.concatenate([parts["a.csv"], parts["b.csv"], parts["c.csv"]]).astype(np.float32)
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), ref)


def test_folder_reads_every_file_sorted_skipping_hidden_and_underscore(tmp_path):
    x = {name: table(i, 3, 2) for i, name in enumerate(["b.csv", "a.csv", "sub/c.csv", "sub/a.csv"])}
    for name, v in x.items():
        write(tmp_path / name, csv_bytes(v))
    for junk in [".hidden.csv", "_SUCCESS", "_tmp/d.csv", ".cache/e.csv", "sub/.f.csv", "sub/_g.csv"]:
        write(tmp_path / junk, b"not,numbers\nat,all\n")
    s = Stream(tmp_path)
    rel = [str(Path(i.path).relative_to(tmp_path)) for i in s.inputs]
    assert rel == ["a.csv", "b.csv", "sub/a.csv", "sub/c.csv"]
    assert Stream(str(tmp_path)).inputs == s.inputs  # the same order every time
    ref = np.concatenate([x[r] for r in rel]).astype(np.float32)
    np.testing.assert_array_equal(whole(s, 5)[0], ref)


def test_missing_sources_are_data_errors(tmp_path):
    data_error(tmp_path / "nope.csv", None, lambda: Stream(tmp_path / "nope.csv"))
    data_error(tmp_path / "*.csv", None, lambda: Stream(str(tmp_path / "*.csv")))
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / "_SUCCESS", b"")
    data_error(tmp_path / "empty", None, lambda: Stream(tmp_path / "empty"))
    p = write(tmp_path / "gone.csv", b"1,2\n")
    s = Stream(p)
    p.unlink()  # removed after the source was resolved
    data_error(p, None, lambda: whole(s))


def test_unknown_format_names_the_file(tmp_path):
    write(tmp_path / "a.csv.bz2", bz2.compress(b"1,2\n"))
    write(tmp_path / "b.md", b"notes\n")
    with pytest.raises(UsageError, match="b.md"):
        Stream(tmp_path)


def test_stdin(tmp_path):
    x = table(9, 30, 3)
    data = csv_bytes(x, header=["a", "b", "y"])
    code = ("import json, sys\nfrom onepass.data import Stream\n"
            "s = Stream('-', label_column='y')\n"
            "bs = list(s.batches(8))\n"
            "print(json.dumps({'sizes': [len(b) for b in bs], 'x': [b.x.tolist() for b in bs],"
            " 'y': [b.y.tolist() for b in bs], 'seekable': s.seekable}))\n")
    r = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    out = json.loads(r.stdout)
    assert out["sizes"] == [8, 8, 8, 6] and out["seekable"] is False
    np.testing.assert_array_equal(np.concatenate([np.array(b, dtype=np.float32) for b in out["x"]]),
                                  x[:, :2].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([np.array(b, dtype=np.float32) for b in out["y"]]),
                                  x[:, 2].astype(np.float32))


# ---------------------------------------------------------------------------------------------------- batches


@given(n_records=st.integers(1, 60), batch=st.integers(1, 70))
@settings(deadline=None, max_examples=30)
def test_batches_have_the_asked_size_and_the_last_is_smaller(tmp_path_factory, n_records, batch):
    p = tmp_path_factory.getbasetemp() / "sizes.npy"
    np.save(p, np.arange(n_records * 2, dtype=np.float64).reshape(n_records, 2))
    sizes = [len(b) for b in Stream(p).batches(batch)]
    full, rest = divmod(n_records, batch)
    assert sizes == [batch] * full + ([rest] if rest else [])


def test_batch_size_below_one_is_refused(tmp_path):
    p = write(tmp_path / "x.csv", b"1\n")
    with pytest.raises(UsageError):
        Stream(p).batches(0)


# ---------------------------------------------------------------------------------------------------- exact resume


def check_resume(make_stream, n: int, cuts: list[int]) -> None:
    """Resuming at batch k's position gives exactly the batches after k of the uninterrupted run; so does resuming
    again from a position of the resumed run (a second crash)."""
    full = collect(make_stream(), n)
    for k in cuts:
        k %= len(full)
        # a position survives a JSON round trip, as in a checkpoint file
        resumed = collect(make_stream(), n, start=json.loads(json.dumps(full[k][2])))
        same_batches(resumed, full[k + 1:])
        if resumed:
            j = (k * 7919) % len(resumed)
            same_batches(collect(make_stream(), n, start=resumed[j][2]), full[k + 1 + j + 1:])


@pytest.fixture(scope="module")
def resume_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(10)
    lines = [b"a,b,label"]
    for i in range(300):
        if rng.random() < 0.05:
            lines.append(b"")  # blank lines inside the data
        lines.append(b"%.6g,%.6g,%d" % (rng.normal(), rng.normal(), i % 3))
    csv_path = write(d / "x.csv", b"\r\n".join(lines) + b"\r\n")
    for k in range(3):
        write(d / "glob" / f"part-{k}.csv", csv_bytes(table(20 + k, [50, 1, 77][k], 2), header=["u", "v"]))
    pq_path = d / "x.parquet"
    pq.write_table(pa.table({"u": rng.normal(size=400), "v": rng.normal(size=400),
                             "label": rng.integers(0, 4, 400)}), pq_path, row_group_size=90)
    npy_path = d / "x.npy"
    np.save(npy_path, rng.normal(size=(230, 3)))
    return {"csv": csv_path, "glob": str(d / "glob" / "*.csv"), "parquet": pq_path, "npy": npy_path}


@given(n=st.integers(1, 80), cuts=st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=3))
@FAST
def test_resume_csv_spanning_many_blocks(resume_files, n, cuts):
    with block_size(200):
        assert len(list(Stream(resume_files["csv"]).chunks())) > 20
        check_resume(lambda: Stream(resume_files["csv"], label_column="label"), n, cuts)


@given(n=st.integers(1, 80), cuts=st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=3))
@FAST
def test_resume_glob_of_csv_files(resume_files, n, cuts):
    with block_size(64):
        check_resume(lambda: Stream(resume_files["glob"]), n, cuts)


@given(n=st.integers(1, 120), cuts=st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=3))
@FAST
def test_resume_parquet_several_row_groups_and_slices(resume_files, n, cuts):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parquet_reader, "SLICE_ROWS", 25)  # several slices per row group
        check_resume(lambda: Stream(resume_files["parquet"], label_column="label"), n, cuts)


@given(n=st.integers(1, 80), cuts=st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=3))
@FAST
def test_resume_npy(resume_files, n, cuts):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(npy_reader, "SLICE_BYTES", 24 * 17)  # 17 rows a slice
        check_resume(lambda: Stream(resume_files["npy"], label_column="first"), n, cuts)


def test_resume_at_the_end_gives_nothing(resume_files):
    for key in ("csv", "parquet", "npy", "glob"):
        last = collect(Stream(resume_files[key]), 64)[-1][2]
        assert collect(Stream(resume_files[key]), 64, start=last) == []


def test_errors_after_a_resume_name_the_right_line(tmp_path):
    good = b"".join(b"%d,%d\n" % (i, -i) for i in range(60))
    p = write(tmp_path / "x.csv", b"a,b\n" + good + b"7,oops\n")  # the bad record is on line 62
    with block_size(100):
        positions = []
        err = data_error(p, 62, lambda: [positions.append(b.position) for b in Stream(p).batches(5)])
        assert "oops" in str(err)
        mid = [q for q in positions if q["offset"] > 0 and q["skip"] > 0]
        assert mid
        for q in mid:
            data_error(p, 62, lambda: list(Stream(p).batches(5, start=q)))


def test_resume_refuses_a_changed_source(resume_files, tmp_path):
    pos = collect(Stream(resume_files["glob"]), 10)[0][2]
    other = write(tmp_path / "part-0.csv", b"1,2\n")
    with pytest.raises(UsageError):
        list(Stream(other).batches(10, start=pos))


# ---------------------------------------------------------------------------------------------------- bad input

GOOD = b"".join(b"%d.5,%d\n" % (i, i) for i in range(30))  # 30 lines

BAD_CSV = {
    # name: (bytes, line named, reason)
    "too few fields": (b"1,2\n3,4\n5\n6,7\n", 3, "wrong field count"),
    "too many fields": (b"a,b\n1,2\n3,4,5\n", 3, "wrong field count"),
    "not a number": (b"a,b\n1,2\n3,x\n", 3, "not a number"),
    "underscore digits": (b"1,2\n1_0,4\n", 2, "not a number"),
    "vertical tab": (b"1,2\n\x0b3,4\n", 2, "not a number"),
    "NaN": (b"1,2\n3,NaN\n", 2, "not finite"),
    "nan": (b"1,2\nnan,4\n", 2, "not finite"),
    "NA marker": (b"1,2\nNA,4\n", 2, "not a number"),
    "inf": (b"1,2\n3,inf\n", 2, "not finite"),
    "-Infinity": (b"1,2\n3,4\n-Infinity,5\n", 3, "not finite"),
    "beyond float32": (b"1,2\n3,1e39\n", 2, "not finite"),
    "empty field": (b"1,2\n,4\n", 2, "missing value"),
    "empty last field": (b"1,2\n3,\n", 2, "missing value"),
    "quoted empty field": (b'1,2\n3,""\n', 2, "missing value"),
    "spaces-only line": (b"1,2\n   \n3,4\n", 2, "wrong field count"),
    "empty file": (b"", 1, "empty"),
    "blank lines only": (b"\n\r\n", 3, "empty"),
    "header only": (b"a,b\n", 2, "empty"),
    "header only, no newline": (b"a,b", 2, "empty"),
    "invalid UTF-8": (b"1,2\n3,4\xff\n", 2, "bad utf-8"),
    "invalid UTF-8 in the header": (b"a\xe9,b\n1,2\n", 1, "bad utf-8"),
    "blank lines before": (b"1,2\n\n\n3,x\n", 4, "not a number"),
    "CRLF": (b"a,b\r\n1,2\r\n3,x\r\n", 3, "not a number"),
    "lone CR": (b"1,2\r3,4\n5,x\n", 2, "not a number"),
    "quoted newline": (b'1,2\n"3\n",4\n', 2, None),
    "huge field": (b"1,2\n" + b"9" * 200_000 + b",1\n", 2, "parse error"),
    "late bad record": (GOOD + b"1.5,\n", 31, "missing value"),
    "late NaN after good blocks": (GOOD + GOOD + b"nan,1\n" + GOOD, 61, "not finite"),
    "inf then a worse line": (b"1,2\ninf,4\n5,x\n", 2, "not finite"),
    "byte-order mark inside": (GOOD + b"\xef\xbb\xbf1,2\n", 31, "not a number"),
}


@pytest.mark.parametrize("blocks", [None, 7], ids=["one-block", "7-byte-blocks"])
@pytest.mark.parametrize("case", list(BAD_CSV))
def test_bad_csv_names_file_and_line(tmp_path, case, blocks):
    data, line, reason = BAD_CSV[case]
    p = write(tmp_path / "bad.csv", data)
    with block_size(blocks or csv_reader.BLOCK_SIZE):
        err = data_error(p, line, lambda: read_all(p))
    if reason:
        assert err.reason == reason, str(err)


def test_bad_label_value_names_the_line(tmp_path):
    p = write(tmp_path / "x.csv", b"a,y\n1,2\n3,nan\n")
    data_error(p, 3, lambda: read_all(p, label_column="y"))


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)])
def test_truncated_compressed_csv_names_the_line_it_ends_in(tmp_path, suffix, compress):
    text = b"".join(b"%d,%d\n" % (i, i * 7) for i in range(30_000))
    cut = compress(text)[: len(compress(text)) // 2]
    readable = zlib.decompressobj(31).decompress(cut) if suffix == ".gz" else None  # what gzip can still give
    p = write(tmp_path / f"x.csv{suffix}", cut)
    err = data_error(p, None, lambda: read_all(p, 1000))
    assert err.reason == "truncated"
    if readable is not None:
        assert err.line == readable.count(b"\n") + 1


def test_corrupt_gzip_is_a_data_error(tmp_path):
    raw = bytearray(gzip.compress(b"".join(b"%d,%d\n" % (i, i) for i in range(20_000))))
    raw[117] ^= 0x55  # deflate data that zlib refuses ("invalid distance too far back")
    p = write(tmp_path / "x.csv.gz", bytes(raw))
    data_error(p, None, lambda: read_all(p, 1000))


def test_feature_count_changing_between_files_names_the_file(tmp_path):
    write(tmp_path / "a.csv", b"1,2\n3,4\n")
    b = write(tmp_path / "b.csv", b"1,2,3\n4,5,6\n")
    err = data_error(b, None, lambda: read_all(str(tmp_path / "*.csv")))
    assert str(tmp_path / "a.csv") not in str(err)


def test_parquet_string_column_is_refused(tmp_path):
    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "name": ["x", "y"]}), p)
    err = data_error(p, None, lambda: read_all(p))
    assert "'name'" in str(err)


def test_parquet_missing_and_non_finite_values(tmp_path):
    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, None], "b": [1, 2, 3]}), p)
    assert data_error(p, None, lambda: read_all(p)).row == 2
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "y": [1.0, float("nan"), 0.0]}), p)
    assert data_error(p, None, lambda: read_all(p, label_column="y")).row == 1  # a NaN label too
    write(p, b"PAR1 not really")
    data_error(p, None, lambda: read_all(p))


@pytest.mark.parametrize("array", [np.zeros((2, 3, 4)), np.zeros(()), np.array([["a", "b"]]),
                                   np.zeros(3, dtype=[("a", "f4"), ("b", "f4")]), np.zeros((0, 3))],
                         ids=["3-D", "0-D", "strings", "structured", "no rows"])
def test_npy_of_the_wrong_shape_or_type_is_refused(tmp_path, array):
    p = tmp_path / "x.npy"
    np.save(p, array)
    data_error(p, None, lambda: read_all(p))


def test_npy_non_finite_values_and_labels(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.array([[1, 2], [3, 4], [np.inf, 5]]))
    assert data_error(p, None, lambda: read_all(p)).row == 2
    np.save(p, np.array([[1, 2], [3, np.nan]]))
    assert data_error(p, None, lambda: read_all(p, label_column="last")).row == 1


# ---------------------------------------------------------------------------------------------------- fuzzing

FLOATS = st.one_of(st.integers(-10 ** 6, 10 ** 6).map(str),
                   st.floats(-1e6, 1e6, allow_nan=False, width=32).map(lambda v: f"{v:.6g}"),
                   st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr))
CHUNKS = [b"0", b"1", b"9", b"-", b"+", b".", b"e", b"E", b",", b"\n", b"\r\n", b"\r", b" ", b"\t", b'"', b"nan",
          b"inf", b"NA", b"\x00", b"\xff", b"\xc3\xa9", b"\xef\xbb\xbf", b"_", b"x"]


@st.composite
def mutated_csv(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    ncols = draw(st.integers(1, 4))
    rows = draw(st.lists(st.lists(FLOATS, min_size=ncols, max_size=ncols), min_size=1, max_size=15))
    data = bytearray("".join(",".join(r) + "\n" for r in rows).encode())
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        at = draw(st.integers(0, len(data)))
        piece = draw(st.one_of(st.sampled_from(CHUNKS), st.binary(min_size=1, max_size=3)))
        if op == "insert":
            data[at:at] = piece
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 4))]
        elif op == "replace":
            data[at:at + len(piece)] = piece
        else:
            del data[at:]
    return bytes(data)


def _float32(text: str) -> np.float32:
    """The float32 nearest the decimal `text` (ties to even). Rounding through a double first is wrong for a
    decimal within a double's precision of a midpoint between two float32s, e.g. 10.9999899864196777."""
    x = np.float32(float(text))
    if not np.isfinite(x) or not 1e-37 < abs(x) < 1e38 or len(text) > 64:  # (an exponent of 10^9 digits would
        return x  # make Fraction build that number; no near-tie to worry about out there)
    try:
        exact = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):  # forms Fraction does not read: the double's rounding
        return x
    near = [x, np.nextafter(x, np.float32(-np.inf)), np.nextafter(x, np.float32(np.inf))]
    return min((v for v in near if np.isfinite(v)),
               key=lambda v: (abs(Fraction(float(v)) - exact), int(v.view(np.uint32)) & 1))


def reference_parse(data: bytes) -> tuple[np.ndarray | None, int | None]:
    """Python's csv and float: (records, None) when the bytes are a valid numeric CSV, else (None, first bad
    line or None). Line numbers count \\n."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, data[:e.start].count(b"\n") + 1
    text = text.removeprefix("\ufeff")
    rows, ncols, newlines = [], None, 0

    def lines():
        nonlocal newlines
        for ln in io.StringIO(text, newline=""):
            newlines += ln.count("\n")
            yield ln

    reader = pycsv.reader(lines())
    while True:
        line = 1 + newlines
        try:
            fields = next(reader)
        except StopIteration:
            break
        except pycsv.Error:
            return None, line
        if not fields:
            continue
        ncols = ncols or len(fields)
        if len(fields) != ncols:
            return None, line
        try:
            with np.errstate(over="ignore"):
                values = [_float32(v) for v in fields]
        except ValueError:
            return None, line
        if not all(math.isfinite(v) for v in values):
            return None, line
        rows.append(values)
    if not rows:
        return None, 1 + newlines
    return np.array(rows, dtype=np.float32), None


@given(data=mutated_csv(), blocks=st.sampled_from([None, 1, 5, 16, 64]), batch=st.integers(1, 9))
@settings(max_examples=int(os.environ.get("ONEPASS_FUZZ_EXAMPLES", 1000)), deadline=3000,
          suppress_health_check=[HealthCheck.too_slow])
def test_fuzzed_csv_gives_the_right_records_or_a_data_error(tmp_path_factory, data, blocks, batch):
    p = tmp_path_factory.getbasetemp() / "fuzz.csv"
    p.write_bytes(data)
    ref, bad_line = reference_parse(data)
    with block_size(blocks or csv_reader.BLOCK_SIZE), time_limit(10):
        try:
            got = collect(Stream(p, header=False), batch, prefetch=0)
        except DataError as e:
            event(f"DataError ({e.reason})" + (", reference agrees" if ref is None else ", reference reads it"))
            assert str(p) in str(e)
            assert e.line is not None, str(e)
            if bad_line is not None:
                assert e.line <= bad_line, f"{e} (the reference finds line {bad_line} bad)"
            return
    event("records read")
    assert ref is not None, f"read {sum(len(g[0]) for g in got)} records from bytes the reference refuses"
    assert [len(g[0]) for g in got] == [min(batch, len(ref) - k) for k in range(0, len(ref), batch)]
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), ref)


# ---------------------------------------------------------------------------------------------------- read-ahead


def test_reader_error_surfaces_in_the_consumer_after_the_good_batches(tmp_path):
    good = b"".join(b"%d,%d\n" % (i, i) for i in range(100))
    p = write(tmp_path / "x.csv", good + b"1,zz\n" + good)
    seen = []
    with block_size(50), time_limit(10):
        err = data_error(p, 101, lambda: [seen.append(len(b)) for b in Stream(p).batches(10, prefetch=3)])
    assert "zz" in str(err)
    assert 0 < sum(seen) <= 100 and all(s == 10 for s in seen)


def test_any_reader_exception_reaches_the_consumer(tmp_path, monkeypatch):
    p = write(tmp_path / "x.csv", b"".join(b"%d\n" % i for i in range(50)))
    real = batches_module.READERS["csv"]

    def failing(*a, **kw):
        yield from real(*a, **kw)
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(batches_module.READERS, "csv", failing)
    seen = []
    with time_limit(10), pytest.raises(RuntimeError, match="disk on fire"):
        for b in Stream(p).batches(7, prefetch=2):
            seen.append(len(b))
    assert seen == [7] * 7  # the batches before the error, the last partial one never built


@pytest.mark.parametrize("n_batches", [3, 4, 50])
def test_stopping_early_does_not_hang_or_leak_the_reader(tmp_path, n_batches):
    p = write(tmp_path / "x.csv", b"".join(b"%d\n" % i for i in range(n_batches)))
    before = readers_alive()
    with time_limit(10):
        it = Stream(p).batches(1, prefetch=2)
        assert len(next(it)) == 1
        time.sleep(0.3)  # the reader fills the queue, then waits to hand over the rest or the end
        it.close()
    deadline = time.monotonic() + 5
    while readers_alive() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert readers_alive() == before


def test_stopping_early_on_a_large_stream_is_quick(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.zeros((200_000, 4), dtype=np.float32))
    start = time.monotonic()
    with time_limit(10):
        for k, b in enumerate(Stream(p).batches(100, prefetch=4)):
            if k == 3:
                break
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("fmt", ["csv", "npy", "parquet"])
def test_weight_column_gives_batch_weights_and_refuses_negative(tmp_path, fmt):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.random.default_rng(0).random((10, 4)).astype(np.float32)
    x[:, 3] = np.arange(10)
    path = tmp_path / f"a.{fmt}"
    if fmt == "csv":
        np.savetxt(path, x, delimiter=",", header="y,a,b,w", comments="")
    elif fmt == "npy":
        np.save(path, x)
    else:
        pq.write_table(pa.table({n: x[:, i] for i, n in enumerate("yabw")}), path)
    w = "w" if fmt != "npy" else 3
    b = next(Stream(path, label_column="first", weight_column=w).batches(100))
    assert b.x.shape == (10, 2) and np.allclose(b.x.numpy(), x[:, 1:3])
    assert np.allclose(b.w.numpy(), np.arange(10)) and np.allclose(b.y.numpy(), x[:, 0])
    assert next(Stream(path, label_column="first").batches(100)).w is None
    x[6, 3] = -1
    path.unlink()
    if fmt == "csv":
        np.savetxt(path, x, delimiter=",", header="y,a,b,w", comments="")
    elif fmt == "npy":
        np.save(path, x)
    else:
        pq.write_table(pa.table({n: x[:, i] for i, n in enumerate("yabw")}), path)
    with pytest.raises(DataError, match="weight is -1.0") as e:
        next(Stream(path, label_column="first", weight_column=w).batches(100))
    assert ("line 8" if fmt == "csv" else "row 6") in str(e.value)
    with pytest.raises(UsageError, match="same column"):
        next(Stream(path, label_column="first", weight_column=0 if fmt == "npy" else "y").batches(100))
