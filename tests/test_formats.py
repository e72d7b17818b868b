"""JSON lines, Arrow IPC and .npz inputs, feature columns chosen by name or index, and DeepAR series records.

Every tabular format is checked against the same records written as CSV: the same batches (features, labels,
weights), the same batches after an exact resume from a mid-file position, and errors that name the file and the
line (text formats) or row (binary formats).
"""

from __future__ import annotations

import bz2
import datetime
import gzip
import io
import json
import lzma
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import onepass.data.arrow as arrow_reader
import onepass.data.csv as csv_reader
import onepass.data.jsonl as jsonl_reader
import onepass.data.npz as npz_reader
from onepass.data import Stream
from onepass.data.series import SeriesRecord, read_series
from onepass.errors import DataError, UsageError

from conftest import run_cli
from test_data import data_error, write

NAMES = ["a", "b", "c", "lab", "wt"]


def records(seed: int = 0, n: int = 61) -> np.ndarray:
    """Columns a, b, c, lab, wt; values k/8, exact in float32 and in every text form, weights not negative."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-8000, 8000, size=(n, 5)) / 8
    data[:, 4] = np.abs(data[:, 4])
    return data


def write_as(fmt: str, path: Path, data: np.ndarray) -> Path:
    """The records in format `fmt` (named columns NAMES; .npz: x = a, b, c and arrays lab, wt)."""
    cols = {n: data[:, i] for i, n in enumerate(NAMES)}
    if fmt == "csv":
        write(path, (",".join(NAMES) + "\n" + "".join(",".join(repr(float(v)) for v in r) + "\n" for r in data)).encode())
    elif fmt == "jsonl":
        write(path, "".join(json.dumps(dict(zip(NAMES, map(float, r)))) + "\n" for r in data).encode())
    elif fmt == "parquet":
        pq.write_table(pa.table(cols), path, row_group_size=13)
    elif fmt == "arrow":  # the file format, in record batches of 11 rows
        with pa.ipc.new_file(path, pa.table(cols).schema) as w:
            w.write_table(pa.table(cols), max_chunksize=11)
    elif fmt == "arrows":  # the stream format
        with pa.ipc.new_stream(path, pa.table(cols).schema) as w:
            w.write_table(pa.table(cols), max_chunksize=11)
    elif fmt in ("npz", "npz-compressed"):
        save = np.savez_compressed if fmt == "npz-compressed" else np.savez
        save(path, x=data[:, :3], lab=data[:, 3], wt=data[:, 4])
    return path


SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet", "arrow": ".arrow", "arrows": ".arrows",
          "npz": ".npz", "npz-compressed": ".npz"}
FORMATS = ["jsonl", "arrow", "arrows", "npz", "npz-compressed", "parquet"]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Many chunks from small files: CSV and JSON lines blocks of ~100 bytes, Arrow slices of 4 rows, .npz slices of 5."""
    monkeypatch.setattr(jsonl_reader, "BLOCK_SIZE", 100)
    monkeypatch.setattr(csv_reader, "BLOCK_SIZE", 100)
    monkeypatch.setattr(arrow_reader, "SLICE_ROWS", 4)
    monkeypatch.setattr(npz_reader, "SLICE_BYTES", 5 * 3 * 8)


def batches(path, n: int = 7, start=None, **kw) -> list[tuple]:
    """(x, y, w, position) of every batch."""
    out = []
    for b in Stream(path, **kw).batches(n, start=start, prefetch=0):
        out.append((b.x.numpy(), None if b.y is None else b.y.numpy(), None if b.w is None else b.w.numpy(),
                    dict(b.position)))
    return out


def assert_same(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        for a, b in zip(g[:3], w[:3]):
            if b is None:
                assert a is None
            else:
                assert a.dtype == np.float32
                np.testing.assert_array_equal(a, b, err_msg=f"batch {k}")
        assert g[3]["records"] == w[3]["records"]


def supervised(fmt: str) -> dict:
    return {"label_column": "lab", "weight_column": "wt"}


# ------------------------------------------------------------------------------------------- same as CSV, resume


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_gives_the_batches_csv_gives(tmp_path, fmt):
    data = records()
    want = batches(write_as("csv", tmp_path / "d.csv", data), **supervised("csv"))
    path = write_as(fmt, tmp_path / f"d{SUFFIX[fmt]}", data)
    assert_same(batches(path, **supervised(fmt)), want)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in want]), data[:, :3].astype(np.float32))
    # unsupervised: every feature (.npz: the array x), no label, no weight
    got = batches(path)
    assert got[0][1] is None and got[0][2] is None
    expect = data[:, :3] if fmt.startswith("npz") else data
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), expect.astype(np.float32))


@pytest.mark.parametrize("fmt", FORMATS + ["csv"])
def test_resume_from_every_position_gives_the_remaining_batches(tmp_path, fmt):
    path = write_as(fmt, tmp_path / f"d{SUFFIX[fmt]}", records(1, 47))
    full = batches(path, 5, **supervised(fmt))
    for k in range(len(full) - 1):
        rest = batches(path, 5, start=full[k][3], **supervised(fmt))
        assert_same(rest, full[k + 1:])
        assert [b[3]["records"] for b in rest] == [b[3]["records"] for b in full[k + 1:]]
    positions = [(b[3]["offset"], b[3]["skip"]) for b in full]
    assert len(set(p[0] for p in positions)) > 2, positions  # the file was read in many pieces


def test_arrow_positions_are_record_batch_and_rows_into_it(tmp_path):
    path = write_as("arrow", tmp_path / "d.arrow", records(2, 30))  # record batches of 11, 11, 8 rows
    got = [(b[3]["offset"], b[3]["skip"]) for b in batches(path, 5)]
    # a batch ends after records 5, 10, 15, ... : record batch index, rows of it read (slices of 4 rows)
    assert got == [(0, 5), (0, 10), (1, 4), (1, 9), (2, 3), (2, 8)]


def test_compressed_inputs(tmp_path):
    data = records(3, 40)
    want = batches(write_as("csv", tmp_path / "d.csv", data), label_column="lab")
    text = write_as("jsonl", tmp_path / "d.jsonl", data).read_bytes()
    for ext, compress in ((".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)):
        assert_same(batches(write(tmp_path / f"d.jsonl{ext}", compress(text)), label_column="lab"), want)
    for fmt in ("arrow", "arrows"):  # a compressed file-format file is read front to back, as a stream
        raw = write_as(fmt, tmp_path / f"d{SUFFIX[fmt]}", data).read_bytes()
        assert_same(batches(write(tmp_path / f"z{SUFFIX[fmt]}.gz", gzip.compress(raw)), label_column="lab"), want)
    # resuming a compressed JSON lines file: from its restart offset (decompressing up to it)
    path = tmp_path / "d.jsonl.gz"
    full = batches(path, 5, label_column="lab")
    assert_same(batches(path, 5, start=full[3][3], label_column="lab"), full[4:])


def test_feather_file_and_stdin_stream(tmp_path, monkeypatch):
    data = records(4, 20)
    want = batches(write_as("csv", tmp_path / "d.csv", data), label_column="lab")
    feather.write_feather(pa.table({n: data[:, i] for i, n in enumerate(NAMES)}), tmp_path / "d.feather",
                          chunksize=6)
    assert_same(batches(tmp_path / "d.feather", label_column="lab"), want)
    raw = write_as("arrows", tmp_path / "d.arrows", data).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(raw))))
    assert_same(batches("-", data_format="arrow", label_column="lab"), want)


# ------------------------------------------------------------------------------------------- columns


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "arrow"])
def test_columns_by_name_and_index_in_their_order(tmp_path, fmt):
    data = records(5, 25)
    path = write_as(fmt, tmp_path / f"d{SUFFIX[fmt]}", data)
    for columns in (["c", "a"], [2, 0], ["c", 0]):
        got = batches(path, columns=columns, label_column="lab")
        np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), data[:, [2, 0]].astype(np.float32))
        np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), data[:, 3].astype(np.float32))
    with pytest.raises(UsageError, match="no such column"):
        batches(path, columns=["a", "nope"])
    with pytest.raises(UsageError, match="which is the label"):
        batches(path, columns=["a", "lab"], label_column="lab")
    with pytest.raises(UsageError, match="twice"):
        batches(path, columns=["a", 0])


@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_columns_by_index_in_numpy_files(tmp_path, fmt):
    data = records(6, 25)
    path = tmp_path / f"d.{fmt}"
    (np.save if fmt == "npy" else np.savez)(path, data)
    got = batches(path, columns=[2, 0], label_column="last")
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), data[:, [2, 0]].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), data[:, 4].astype(np.float32))


def test_columns_not_taken_need_not_be_numbers(tmp_path):
    csv = write(tmp_path / "d.csv", b"id,a,b\nx1,1,2\nx2,3,4\n")
    assert batches(csv, columns=["b", "a"])[0][0].tolist() == [[2, 1], [4, 3]]
    bad = write(tmp_path / "e.csv", b"id,a,b\nx1,1,2\nx2,3,z\n")
    err = data_error(bad, 3, lambda: batches(bad, columns=["b", "a"]))
    assert err.reason == "not a number" and "field 3" in str(err)
    js = write(tmp_path / "d.jsonl", b'{"id":"x1","a":1,"b":2}\n{"id":[1,{}],"a":3,"b":4,"more":"ok"}\n')
    assert batches(js, columns=["b", "a"])[0][0].tolist() == [[2, 1], [4, 3]]
    data_error(js, 1, lambda: batches(js))  # without columns every field of the first record is a feature
    table = pa.table({"id": ["x1", "x2"], "a": [1.0, 3.0], "b": [2, 4]})
    pq.write_table(table, tmp_path / "d.parquet")
    assert batches(tmp_path / "d.parquet", columns=["b", "a"])[0][0].tolist() == [[2, 1], [4, 3]]
    with pytest.raises(DataError, match="'id' is string, not numeric"):
        batches(tmp_path / "d.parquet")


def test_columns_refused_by_formats_without_columns(tmp_path):
    path = write(tmp_path / "d.libsvm", b"1 1:2\n")
    with pytest.raises(UsageError, match="cannot choose columns"):
        Stream(path, n_features=2, columns=["a"])


# ------------------------------------------------------------------------------------------- JSON lines


def test_jsonl_fields_in_first_record_order_blank_lines_and_crlf(tmp_path):
    path = write(tmp_path / "d.ndjson", b'\n{"z": 1, "a": 2.5, "y": 0}\r\n\n   \n{"a": 4, "z": -3, "y": 1}\r\n'
                 b'  {"y": 1, "a": 1e3, "z": 0}')
    got = batches(path, label_column="y")
    assert got[0][0].tolist() == [[1, 2.5], [-3, 4], [0, 1000]] and got[0][1].tolist() == [0, 1, 1]
    assert Stream(write(tmp_path / "d.json", path.read_bytes())).format == "jsonl"
    doc = write(tmp_path / "doc.json", b'[{"a": 1},\n {"a": 2}]\n')
    assert "one object a line" in str(data_error(doc, 1, lambda: batches(doc)))
    pretty = write(tmp_path / "pretty.json", b'{\n  "a": 1\n}\n')
    assert "one object a line" in str(data_error(pretty, 1, lambda: batches(pretty)))


def test_jsonl_long_lines_and_many_fields(tmp_path):
    names = [f"f{i}" for i in range(300)]  # lines of ~3 KB: longer than a block (100 bytes here)
    rows = np.arange(300 * 9, dtype=np.float64).reshape(9, 300)
    path = write(tmp_path / "d.jsonl", "".join(json.dumps(dict(zip(names, r))) + "\n" for r in rows).encode())
    x = np.concatenate([b[0] for b in batches(path, 4)])
    np.testing.assert_array_equal(x, rows.astype(np.float32))


def test_jsonl_line_longer_than_pyarrow_sub_block(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl_reader, "_PARSE_BLOCK", 64)
    monkeypatch.setattr(jsonl_reader, "BLOCK_SIZE", 1 << 20)
    path = write(tmp_path / "d.jsonl", b'{"a": 1, "pad": "' + b"x" * 500 + b'"}\n{"a": 2, "pad": "y"}\n')
    assert batches(path, columns=["a"])[0][0].tolist() == [[1], [2]]


GOOD = b'{"a": 1, "b": 2, "lab": 0}\n'
BAD_JSONL = [
    (b'{"a": 1, "b": "2", "lab": 0}', "not a number", "'b' is not a number"),
    (b'{"a": 1, "b": true, "lab": 0}', "not a number", "'b' is not a number"),
    (b'{"a": 1, "b": [2], "lab": 0}', "not a number", "'b' is not a number"),
    (b'{"a": 1, "lab": 0}', "missing value", "'b' is missing"),
    (b'{"a": 1, "b": null, "lab": 0}', "missing value", "'b' is null"),
    (b'{"a": 1, "b": 2}', "missing value", "'lab' is missing"),
    (b'{"a": 1, "b": NaN, "lab": 0}', "not finite", "NaN and infinity"),
    (b'{"a": 1, "b": 2, "lab": Infinity}', "not finite", "NaN and infinity"),
    (b'{"a": 1, "b": 1e39, "lab": 0}', "not finite", "beyond the float32 range"),
    (b'{"a": 1, "b": 1e400, "lab": 0}', "not finite", "NaN and infinity"),
    (b'{"a": 1, "b": 2, "lab": 0, "c": 5}', "unknown field", "unknown field 'c'"),
    (b'{"a": 1, "b": 2, "b": 3, "lab": 0}', "parse error", "'b' appears twice"),
    (b'{"a": 1, "b": 2, "lab": 0}{"a": 1, "b": 2, "lab": 0}', "parse error", "not valid JSON"),
    (b'{"a": 1, "b": 2,\n"lab": 0}', "parse error", "not valid JSON"),
    (b'{"a": 1, "b": 2, "lab": 0', "parse error", "not valid JSON"),
    (b'[1, 2, 0]', "parse error", "expected a JSON object"),
    (b'{"a": 1, "b": "\xff", "lab": 0}', "bad utf-8", "invalid UTF-8"),
]


@pytest.mark.parametrize("bad,reason,words", BAD_JSONL, ids=[r for _, r, _ in BAD_JSONL])
def test_jsonl_bad_record_names_file_and_line(tmp_path, bad, reason, words):
    path = write(tmp_path / "d.jsonl", GOOD * 7 + bad + b"\n" + GOOD * 3)
    err = data_error(path, 8, lambda: batches(path, label_column="lab"))
    assert err.reason == reason and words in str(err), str(err)
    gz = write(tmp_path / "d.jsonl.gz", gzip.compress(path.read_bytes()))
    assert data_error(gz, 8, lambda: batches(gz, label_column="lab")).reason == reason


def test_jsonl_bad_weight_names_its_line(tmp_path):
    path = write(tmp_path / "d.jsonl", b'{"a": 1, "w": 1}\n\n{"a": 2, "w": -1}\n')
    assert data_error(path, 3, lambda: batches(path, weight_column="w")).reason == "bad weight"
    path = write(tmp_path / "e.jsonl", b'{"a": 1, "w": 1}\n\n{"a": 2, "w": NaN}\n')
    assert data_error(path, 3, lambda: batches(path, weight_column="w")).reason == "bad weight"


def test_jsonl_empty_and_featureless_files(tmp_path):
    assert data_error(write(tmp_path / "e.jsonl", b"\n\n"), None, lambda: batches(tmp_path / "e.jsonl")
                      ).reason == "empty"
    path = write(tmp_path / "f.jsonl", b'{"lab": 1}\n')
    assert data_error(path, 1, lambda: batches(path, label_column="lab")).reason == "no features"


# ------------------------------------------------------------------------------------------- Arrow IPC


def test_arrow_bad_input_names_file_and_row(tmp_path):
    cols = {"a": pa.array([1.0, 2.0, None, 4.0]), "b": pa.array([1, 2, 3, 4])}
    pa.feather.write_feather(pa.table(cols), tmp_path / "n.arrow", chunksize=2)
    err = data_error(tmp_path / "n.arrow", None, lambda: batches(tmp_path / "n.arrow"))
    assert err.row == 2 and err.reason == "missing value" and "row 2" in str(err)
    pa.feather.write_feather(pa.table({"a": [1.0, 2.0, 3.0, math.inf]}), tmp_path / "i.arrow", chunksize=2)
    assert data_error(tmp_path / "i.arrow", None, lambda: batches(tmp_path / "i.arrow")).row == 3
    pa.feather.write_feather(pa.table({"a": [1.0], "s": ["x"]}), tmp_path / "s.arrow")
    with pytest.raises(DataError, match="'s' is string, not numeric"):
        batches(tmp_path / "s.arrow")
    assert batches(tmp_path / "s.arrow", columns=["a"])[0][0].tolist() == [[1.0]]
    raw = write_as("arrows", tmp_path / "t.arrows", records(7, 40)).read_bytes()
    cut = write(tmp_path / "cut.arrows", raw[:len(raw) // 2])
    err = data_error(cut, None, lambda: batches(cut))
    assert err.reason == "bad arrow" and err.row is not None and err.row > 0
    junk = write(tmp_path / "junk.arrow", b"not arrow at all")
    assert data_error(junk, None, lambda: batches(junk)).reason == "bad arrow"
    v1 = write(tmp_path / "v1.feather", b"FEA1" + b"\0" * 40)
    with pytest.raises(DataError, match="Feather version 1"):
        batches(v1)
    empty = tmp_path / "empty.arrow"
    with pa.ipc.new_file(empty, pa.schema([("a", pa.float64())])):
        pass
    assert data_error(empty, None, lambda: batches(empty)).reason == "empty"


# ------------------------------------------------------------------------------------------- .npz


def test_npz_arrays_by_name_and_label_as_a_column(tmp_path):
    data = records(8, 30)
    np.savez(tmp_path / "d.npz", X=data[:, :3], y=data[:, 3])
    unsup = batches(tmp_path / "d.npz")
    assert unsup[0][1] is None  # y is there, but only taken when asked for
    got = batches(tmp_path / "d.npz", label_column="y")
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), data[:, 3].astype(np.float32))
    np.savez(tmp_path / "one.npz", data)  # the only array (arr_0): the features; the label a column of it
    got = batches(tmp_path / "one.npz", label_column="first")
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), data[:, 1:].astype(np.float32))
    with pytest.raises(UsageError, match="no such array"):
        batches(tmp_path / "d.npz", label_column="labels")


def test_npz_stored_members_are_memory_mapped_and_fortran_order_works(tmp_path):
    data = records(9, 30)
    np.savez(tmp_path / "d.npz", x=data[:, :3], lab=data[:, 3], wt=data[:, 4])
    with zipfile.ZipFile(tmp_path / "d.npz") as zf, npz_reader.zipfile.ZipFile(tmp_path / "d.npz") as z2:
        arr = npz_reader._Array(z2, zf.getinfo("x.npy"), "d.npz")
        assert isinstance(arr._map, np.memmap)
        arr.close()
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "f.npz", x=np.asfortranarray(data[:, :3]), lab=data[:, 3].astype(">f8"))
        got = batches(tmp_path / "f.npz", label_column="lab")
        np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), data[:, :3].astype(np.float32))
        np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), data[:, 3].astype(np.float32))


def test_npz_bad_input(tmp_path):
    data = records(10, 20)
    bad = data[:, :3].copy()
    bad[13, 1] = np.nan
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "n.npz", x=bad)
        err = data_error(tmp_path / "n.npz", None, lambda: batches(tmp_path / "n.npz"))
        assert err.row == 13 and err.reason == "not finite"
    np.savez(tmp_path / "w.npz", x=data[:, :3], wt=-data[:, 4] - 1)
    assert data_error(tmp_path / "w.npz", None, lambda: batches(tmp_path / "w.npz", weight_column="wt")).row == 0
    np.savez(tmp_path / "len.npz", x=data[:, :3], y=data[:5, 3])
    with pytest.raises(DataError, match="expected 20 numbers"):
        batches(tmp_path / "len.npz", label_column="y")
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="never done"):
        batches(tmp_path / "o.npz")
    np.savez(tmp_path / "none.npz", a=data, b=data)
    with pytest.raises(DataError, match="no array 'x'"):
        batches(tmp_path / "none.npz")
    raw = (tmp_path / "n.npz").read_bytes()
    cut = write(tmp_path / "cut.npz", raw[:len(raw) // 2])
    assert data_error(cut, None, lambda: batches(cut)).reason == "bad npz"
    gz = write(tmp_path / "c.npz.gz", gzip.compress(raw))
    with pytest.raises(DataError, match="random access"):
        batches(gz, data_format="npz")


# ------------------------------------------------------------------------------------------- CLI


def test_cli_kmeans_on_jsonl_and_pca_on_arrow(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [10, 10, 10], [-10, 10, 0]], dtype=float)
    x = centres[rng.integers(0, 3, 600)] + rng.normal(size=(600, 3))
    js = write(tmp_path / "x.jsonl", "".join(json.dumps({"id": f"s{i}", "p": r[0], "q": r[1], "r": r[2]}) + "\n"
                                             for i, r in enumerate(x)).encode())
    proc = run_cli("train", "kmeans", "--data", str(js), "--columns", "p,q,r", "--k", "3", "--out",
                   str(tmp_path / "km"), "--quiet", check=True)
    assert "trained kmeans on 600 records of 3 features" in proc.stdout
    with pytest.raises(DataError, match="line 1: field 'id' is not a number"):  # without --columns
        batches(js)
    arrow = tmp_path / "x.arrow"
    feather.write_feather(pa.table({"p": x[:, 0], "q": x[:, 1], "r": x[:, 2]}), arrow, chunksize=100)
    proc = run_cli("train", "pca", "--data", str(arrow), "--num-components", "2", "--out", str(tmp_path / "pca"),
                   "--quiet", check=True)
    assert "600" in proc.stdout and (tmp_path / "pca" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------- DeepAR series


def series_line(start="2020-01-01 00:00:00", target=(1.0, "NaN", 3.0), **more) -> bytes:
    return json.dumps({"start": start, "target": list(target), **more}).encode() + b"\n"


def test_series_records_are_parsed_and_validated(tmp_path):
    path = write(tmp_path / "s.jsonl",
                 series_line(cat=[0, 2], dynamic_feat=[[1, 2, 3], [0.5, 0.5, 0.5]], item_id="a")
                 + b"\n" + series_line("2021-06-01", [None, 4, 5e-3, -2], cat=[1, 0],
                                        dynamic_feat=[[0, 0, 0, 0], [1, 1, 1, 1]]))
    first, second = read_series(path)
    assert isinstance(first, SeriesRecord)
    assert first.start == datetime.datetime(2020, 1, 1) and second.start == datetime.datetime(2021, 6, 1)
    assert first.target.dtype == np.float32 and np.isnan(first.target[1]) and first.target[2] == 3
    assert np.isnan(second.target[0]) and second.target[1:].tolist() == [4, np.float32(5e-3), -2]
    assert first.cat.tolist() == [0, 2] and first.cat.dtype == np.int64
    assert first.dynamic_feat.shape == (2, 3) and second.dynamic_feat.shape == (2, 4)
    assert (first.line, second.line, first.offset, second.offset) == (1, 3, 0, first.end + 1)
    bare = write(tmp_path / "b.jsonl", series_line(target=[1, 2]))
    (rec,) = read_series(bare)
    assert rec.cat.shape == (0,) and rec.dynamic_feat.shape == (0, 2)
    (rec,) = read_series(write(tmp_path / "h.jsonl", series_line(target=[1], dynamic_feat=[[1, 2, 3]])), horizon=2)
    assert rec.dynamic_feat.shape == (1, 3)


def test_series_resume_from_any_record_across_files_and_compressed(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    lines = [series_line(f"2020-01-{1 + i % 28:02d} 00:00:00", rng.integers(0, 9, 1 + i % 7).tolist(), cat=[i % 3])
             for i in range(40)]
    write(tmp_path / "in" / "a.jsonl", b"".join(lines[:25]))
    write(tmp_path / "in" / "b.jsonl.gz", gzip.compress(b"".join(lines[25:])))
    full = list(read_series(tmp_path / "in", block_size=64))
    assert len(full) == 40 and [r.file for r in full] == [0] * 25 + [1] * 15
    for k in (0, 7, 24, 30, 39):
        rest = list(read_series(tmp_path / "in", start=full[k].next_position, block_size=64))
        assert [(r.path, r.offset, r.line) for r in rest] == [(r.path, r.offset, r.line) for r in full[k + 1:]]
        assert all(np.array_equal(a.target, b.target) for a, b in zip(rest, full[k + 1:]))
        again = list(read_series(tmp_path / "in", start=full[k].position))
        assert again[0].offset == full[k].offset and len(again) == 40 - k
    with pytest.raises(UsageError, match="source changed"):
        list(read_series(tmp_path / "in" / "b.jsonl.gz", start=full[3].position))


BAD_SERIES = [
    (b'{"target": [1]}', "missing value", "'start' is missing"),
    (b'{"start": "2020-01-01"}', "missing value", "'target' is missing"),
    (b'{"start": "yesterday", "target": [1]}', "bad start", "not a date"),
    (b'{"start": 20200101, "target": [1]}', "bad start", "not a date"),
    (b'{"start": "2020-01-01 00:00:00+02:00", "target": [1]}', "bad start", "time zone"),
    (b'{"start": "2020-01-01", "target": []}', "empty target", "target is empty"),
    (b'{"start": "2020-01-01", "target": 3}', "not a number", "not an array"),
    (b'{"start": "2020-01-01", "target": [1, "x"]}', "not a number", "target[1] is not a number"),
    (b'{"start": "2020-01-01", "target": [1, true]}', "not a number", "target[1] is not a number"),
    (b'{"start": "2020-01-01", "target": [1, Infinity]}', "not finite", "target[1] is inf"),
    (b'{"start": "2020-01-01", "target": [1, 1e39]}', "not finite", "beyond the float32 range"),
    (b'{"start": "2020-01-01", "target": [1], "cat": [0, -1]}', "bad cat", "cat[1]"),
    (b'{"start": "2020-01-01", "target": [1], "cat": [0, 1.5]}', "bad cat", "cat[1]"),
    (b'{"start": "2020-01-01", "target": [1], "cat": 2}', "bad cat", "not an array"),
    (b'{"start": "2020-01-01", "target": [1], "cat": [0, 0, 0]}', "wrong field count", "first record has 2"),
    (b'{"start": "2020-01-01", "target": [1, 2], "cat": [0, 1], "dynamic_feat": [[1]]}', "wrong length",
     "dynamic_feat[0] has 1 values where target has 2"),
    (b'{"start": "2020-01-01", "target": [1], "cat": [0, 1], "dynamic_feat": [[null]]}', "missing value",
     "dynamic_feat[0][0] is missing"),
    (b'{"start": "2020-01-01", "target": [1], "cat": [0, 1], "dynamic_feat": [["NaN"]]}', "missing value",
     "dynamic_feat[0][0] is missing"),
    (b'{"start": "2020-01-01", "target": [1], "cat": [0, 1], "dynamic_feat": [[NaN]]}', "not finite",
     "dynamic_feat[0][0] is NaN"),
    (b'{"start": "2020-01-01", "target": [1], "cat": [0, 1], "dynamic_feat": [1]}', "not a number",
     "not an array of arrays"),
    (b'{"start": "2020-01-01", "target": [1], "cat": [0, 1], "dynamic_feat": [[1], [2]]}', "wrong field count",
     "first record has 1"),
    (b'{"start": "2020-01-01", "target": [1]', "parse error", "not valid JSON"),
    (b'["2020-01-01", [1]]', "parse error", "expected a JSON object"),
    (b'{"start": "2020-01-01", "target": [1], "x": "\xff"}', "bad utf-8", "invalid UTF-8"),
]


@pytest.mark.parametrize("bad,reason,words", BAD_SERIES, ids=[f"{i}-{r}" for i, (_, r, _) in enumerate(BAD_SERIES)])
def test_series_bad_record_names_file_and_line(tmp_path, bad, reason, words):
    good = series_line(cat=[0, 1], dynamic_feat=[[1, 2, 3]])
    path = write(tmp_path / "s.jsonl", good * 3 + b"\n" + bad + b"\n" + good)
    with pytest.raises(DataError) as e:
        list(read_series(path, block_size=50))
    assert e.value.line == 5 and e.value.reason == reason and words in str(e.value), str(e.value)
    assert str(e.value).startswith(f"{path}, line 5: ")
    gz = write(tmp_path / "s.jsonl.gz", gzip.compress(path.read_bytes()))
    with pytest.raises(DataError, match=f"{gz}, line 5: "):
        list(read_series(gz))


# ------------------------------------------------------------------------------------------- damaged bytes


def mutations(raw: bytes, seed: int, n: int = 25):
    """Copies of `raw` with a few bytes changed, a piece cut out or the end cut off."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        b = bytearray(raw)
        kind = rng.integers(3)
        if kind == 0:
            for i in rng.integers(0, len(b), rng.integers(1, 4)):
                b[i] = int(rng.integers(256))
        elif kind == 1:
            i = int(rng.integers(len(b)))
            del b[i:i + int(rng.integers(1, 20))]
        else:
            del b[int(rng.integers(1, len(b))):]
        yield bytes(b)


@pytest.mark.parametrize("fmt", ["jsonl", "arrow", "arrows", "npz", "npz-compressed", "series"])
def test_damaged_input_gives_records_or_a_data_error(tmp_path, fmt):
    """The only outcomes for damaged bytes: records of the right shape, or a DataError naming the file."""
    if fmt == "series":
        raw = b"".join(series_line(target=[1, 2, i], cat=[i % 2]) for i in range(12))
    else:
        raw = write_as(fmt, tmp_path / f"good{SUFFIX[fmt]}", records(11, 30)).read_bytes()
    for k, data in enumerate(mutations(raw, seed=len(fmt))):
        path = write(tmp_path / f"m{k}{SUFFIX.get(fmt, '.jsonl')}", data)
        try:
            if fmt == "series":
                got = list(read_series(path))
                assert all(r.target.shape == (3,) for r in got)
            else:
                for x, *_ in batches(path):
                    assert x.dtype == np.float32 and x.shape[1] in (3, 5) and np.isfinite(x).all()
        except DataError as e:
            assert str(path) in str(e)


def test_errors_after_a_resume_name_the_right_line(tmp_path):
    path = write(tmp_path / "d.jsonl", GOOD * 30 + b'{"a": 1, "b": "x", "lab": 0}\n')
    full = []
    with pytest.raises(DataError):
        for b in Stream(path, label_column="lab").batches(4, prefetch=0):
            full.append(dict(b.position))
    err = data_error(path, 31, lambda: batches(path, 4, start=full[3], label_column="lab"))
    assert err.reason == "not a number"
