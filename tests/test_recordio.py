"""RecordIO-protobuf (sagemaker-algorithms.md section 6): hand-built byte vectors, round trips, resume, errors, CLI."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import record_class
import torch

from onepass.cli import main as cli_main
from onepass.data import recordio
from onepass.data.batches import Stream
from onepass.data.sources import Input
from onepass.data.sparse import CSR
from onepass.errors import DataError, UsageError

MAGIC = "0a23d7ce"
VALUES = "0a0676616c756573"  # map key "values": field 1, length 6

# The specification's verified example: features [1.5, 2.0], label 1.0 (Float32), 44-byte payload, no padding.
SPEC = MAGIC + "2c000000" + "0a16" + VALUES + "120c120a0a080000c03f00000040" + "1212" + VALUES + "120812060a040000803f"
# Float64 features [1.0, -2.0], no label: value field 3 (0x1a); 32 bytes, no padding.
FLOAT64 = MAGIC + "20000000" + "0a1e" + VALUES + "1214" + "1a12" + "0a10" + "000000000000f03f" + "00000000000000c0"
# Int32 features [3, -1, 300] (varints; -1 sign-extended to 10 bytes), Int32 label 7: value field 7 (0x3a);
# 46 bytes, padded with 2 zero bytes.
INT32 = (MAGIC + "2e000000" + "0a1b" + VALUES + "1211" + "3a0f" + "0a0d" + "03" + "ffffffffffffffffff01" + "ac02"
         + "120f" + VALUES + "1205" + "3a03" + "0a0107" + "0000")
# Sparse Float32: values [0.5, 2.0] at keys [1, 200], shape [300], label 0.0; 53 bytes, 3 bytes of padding.
SPARSE = (MAGIC + "35000000" + "0a1f" + VALUES + "1215" + "1213" + "0a080000003f00000040" + "120301c801" + "1a02ac02"
          + "1212" + VALUES + "120812060a0400000000" + "000000")
# An all-zero sparse row as SageMaker writes it: only shape [300]; label 1.0; 38 bytes, 2 bytes of padding.
EMPTY_ROW = (MAGIC + "26000000" + "0a10" + VALUES + "1206" + "12041a02ac02" + "1212" + VALUES + "120812060a040000803f"
             + "0000")
# The spec example with both features equal to the magic number's bytes (at aligned payload offsets 16 and 20),
# split as dmlc's writer splits it: start part (cflag 1, 16 bytes), middle part (cflag 2, 0 bytes), end part
# (cflag 3, 20 bytes); the 4 magic bytes at each cut are left out and put back by the reader.
MULTIPART = (MAGIC + "10000020" + "0a16" + VALUES + "120c120a0a08"
             + MAGIC + "00000040"
             + MAGIC + "14000060" + "1212" + VALUES + "120812060a040000803f")
MAGIC_FLOAT = np.frombuffer(bytes.fromhex(MAGIC), "<f4")[0]


def _file(tmp_path: Path, hexes: str | list[str], name: str = "data.rec") -> Input:
    path = tmp_path / name
    path.write_bytes(b"".join(bytes.fromhex(h) for h in ([hexes] if isinstance(hexes, str) else hexes)))
    return Input(str(path), path.stat().st_size)


def _read(inp: Input, **kw) -> tuple[np.ndarray | CSR, np.ndarray | None, list]:
    chunks = list(recordio.read(inp, 0, **kw))
    xs = [c.x for c in chunks]
    x = CSR.vstack(xs) if isinstance(xs[0], CSR) else np.concatenate(xs)
    y = np.concatenate([c.y for c in chunks]) if chunks[0].y is not None else None
    return x, y, chunks


def test_spec_example_reads_and_is_written_byte_for_byte(tmp_path):
    x, y, chunks = _read(_file(tmp_path, SPEC), label="values")
    assert x.dtype == np.float32 and x.tolist() == [[1.5, 2.0]] and y.tolist() == [1.0]
    assert (chunks[0].offset, chunks[0].line) == (0, 1)
    out = io.BytesIO()
    assert recordio.write_recordio(out, np.array([[1.5, 2.0]], np.float32), np.array([1.0], np.float32)) == 1
    assert out.getvalue() == bytes.fromhex(SPEC)


def test_float64_int32_and_padding(tmp_path):
    x, y, _ = _read(_file(tmp_path, FLOAT64))
    assert x.dtype == np.float32 and x.tolist() == [[1.0, -2.0]] and y is None
    x, y, _ = _read(_file(tmp_path, [INT32, INT32]), label="values")  # the padding is skipped
    assert x.tolist() == [[3, -1, 300]] * 2 and y.tolist() == [7, 7]
    out = io.BytesIO()
    recordio.write_recordio(out, np.array([[1.0, -2.0]]))  # float64 -> Float64Tensor
    assert out.getvalue() == bytes.fromhex(FLOAT64)
    out = io.BytesIO()
    recordio.write_recordio(out, np.array([[3, -1, 300]]), np.array([7]))  # integers -> Int32Tensor
    assert out.getvalue() == bytes.fromhex(INT32)


def test_sparse_records_and_an_empty_row(tmp_path):
    inp = _file(tmp_path, [SPARSE, EMPTY_ROW, SPARSE])
    assert recordio.first_is_sparse(inp) is True
    x, y, _ = _read(inp, label="values")
    assert isinstance(x, CSR) and x.shape == (3, 300)
    assert x.indptr.tolist() == [0, 2, 2, 4] and x.indices.tolist() == [1, 200, 1, 200]
    assert x.data.tolist() == [0.5, 2.0, 0.5, 2.0] and y.tolist() == [0.0, 1.0, 0.0]
    out = io.BytesIO()
    recordio.write_recordio(out, CSR(np.array([0, 2, 2]), np.array([1, 200]), np.array([0.5, 2.0], np.float32),
                                     (2, 300)), np.array([0.0, 1.0], np.float32))
    assert out.getvalue() == bytes.fromhex(SPARSE + EMPTY_ROW)
    assert recordio.first_is_sparse(_file(tmp_path, SPEC, "dense.rec")) is False


def test_multipart_record(tmp_path):
    x, y, chunks = _read(_file(tmp_path, [SPEC, MULTIPART, SPEC]), label="values")
    assert np.array_equal(x, np.array([[1.5, 2.0], [MAGIC_FLOAT, MAGIC_FLOAT], [1.5, 2.0]], np.float32))
    assert y.tolist() == [1.0, 1.0, 1.0]
    # resume at the record after the multi-part one: its byte offset
    after = len(bytes.fromhex(SPEC + MULTIPART))
    x2, _, _ = _read(_file(tmp_path, [SPEC, MULTIPART, SPEC]), start=after, line=3)
    assert x2.tolist() == [[1.5, 2.0]]


def test_block_of_many_records_with_odd_ones(tmp_path):
    """A block laid out like its first record is read at once; records written another way (field order, an
    extra field, Float64) among them still read right."""
    odd = (MAGIC + "2c000000" + "1212" + VALUES + "120812060a040000803f" + "0a16" + VALUES
           + "120c120a0a080000c03f00000040")  # label before features
    extra = MAGIC + "34000000" + bytes.fromhex(SPEC)[8:].hex() + "1a06" + "757365722d31"  # uid "user-1" (+ 8 bytes)
    parts = [SPEC] * 20 + [odd] + [SPEC] * 10 + [extra, FLOAT64] + [SPEC] * 5  # FLOAT64 has no label
    x, y, _ = _read(_file(tmp_path, parts))
    assert x.shape == (len(parts), 2)
    expected = np.array([[1.0, -2.0] if p.startswith(MAGIC + "20000000") else [1.5, 2.0] for p in parts])
    assert np.array_equal(x, expected) and y is None
    x, y, _ = _read(_file(tmp_path, [SPEC] * 20 + [odd, extra] + [SPEC] * 3), label="values")
    assert np.all(x == [1.5, 2.0]) and np.all(y == 1.0)
    shaped = (MAGIC + "2f000000" + "0a19" + VALUES + "120f" + "120d" + "0a080000c03f00000040" + "1a0102"
              + "1212" + VALUES + "120812060a040000803f" + "00")  # dense, with shape [2]
    x, y, _ = _read(_file(tmp_path, [shaped] * 12 + [SPEC] + [shaped] * 12), label="values")
    assert np.all(x == [1.5, 2.0]) and np.all(y == 1.0)
    wrong = shaped.replace("1a0102", "1a0103")  # shape [3] for 2 values
    with pytest.raises(DataError, match="record 13 .*shape"):
        _read(_file(tmp_path, [shaped] * 12 + [wrong]))
    parts = [SPARSE] * 20 + [EMPTY_ROW] + [SPARSE] * 10  # sparse records walked at once, the empty row alone
    x, y, _ = _read(_file(tmp_path, parts), label="values")
    assert np.array_equal(np.diff(x.indptr), [0 if p == EMPTY_ROW else 2 for p in parts])
    assert x.indices.tolist() == [1, 200] * 30 and y.tolist() == [1.0 if p == EMPTY_ROW else 0.0 for p in parts]


def test_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64, np.int64):
        x = (rng.normal(size=(1000, 7)) * 100).astype(dtype)
        y = rng.integers(0, 3, 1000).astype(dtype)
        path = tmp_path / f"d_{np.dtype(dtype).name}.rec"
        recordio.write_recordio(path, x, y)
        got_x, got_y, _ = _read(Input(str(path), path.stat().st_size), label="values", block_size=4096)
        assert np.array_equal(got_x, x.astype(np.float32)) and np.array_equal(got_y, y.astype(np.float32))
    dense = np.where(rng.random((500, 40)) < 0.1, rng.normal(size=(500, 40)), 0).astype(np.float32)
    dense[7] = 0  # an empty row
    import scipy.sparse as sp
    for i, x in enumerate((sp.csr_matrix(dense), torch.from_numpy(dense).to_sparse_csr(),
                           torch.from_numpy(dense).to_sparse(), dense)):
        path = tmp_path / f"s{i}.rec.gz"  # compressed on the way out and in
        recordio.write_recordio(path, x, sparse=True)
        got, _, _ = _read(Input(str(path), None), block_size=4096)
        assert isinstance(got, CSR) and np.array_equal(got.toarray(), dense)
    path = tmp_path / "densified.rec"
    recordio.write_recordio(path, sp.csr_matrix(dense), sparse=False)
    assert np.array_equal(_read(Input(str(path), path.stat().st_size))[0], dense)


def test_exact_resume_from_a_mid_file_offset(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 5)).astype(np.float32)
    path = tmp_path / "r.rec"
    recordio.write_recordio(path, x, np.arange(3000, dtype=np.float32))
    inp = Input(str(path), path.stat().st_size)
    chunks = list(recordio.read(inp, 0, label="values", block_size=10_000))
    assert len(chunks) > 5 and chunks[0].line == 1
    mid = chunks[3]
    rest = np.concatenate([c.x for c in recordio.read(inp, 0, label="values", start=mid.offset, line=mid.line,
                                                      block_size=10_000)])
    assert np.array_equal(rest, x[mid.line - 1:])
    stream = Stream(str(path), label_column="values")
    batches = list(stream.batches(700, prefetch=0))
    resumed = list(stream.batches(700, start=batches[1].position, prefetch=0))
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(batches[2:], resumed))


def _error(tmp_path: Path, data: bytes, **kw) -> str:
    path = tmp_path / "bad.rec"
    path.write_bytes(data)
    with pytest.raises(DataError) as e:
        _read(Input(str(path), len(data)), **kw)
    return str(e.value)


def test_errors_name_file_record_and_byte_offset(tmp_path):
    good = bytes.fromhex(SPEC) * 3
    record = 52  # bytes per framed SPEC record
    msg = _error(tmp_path, good[:2 * record] + b"\0\0\0\0" + good[2 * record + 4:])
    assert all(s in msg for s in ("bad.rec", "record 3", f"byte offset {2 * record}", "magic"))
    msg = _error(tmp_path, good[:-5])
    assert "bad.rec" in msg and "record 3" in msg and f"byte offset {2 * record}" in msg and "truncated" in msg
    broken = bytearray(good)
    broken[record + 8] = 0x0B  # record 2's first tag: field 1 with wire type 3 (a group)
    msg = _error(tmp_path, bytes(broken))
    assert "record 2" in msg and f"byte offset {record}" in msg and "wire type 3" in msg
    three = MAGIC + "30000000" + "0a1a" + VALUES + "1210120e0a0c0000c03f000000400000803f" + "1212" + VALUES \
        + "120812060a040000803f"  # three features where the first record had two
    msg = _error(tmp_path, good + bytes.fromhex(three), label="values")
    assert "record 4" in msg and f"byte offset {3 * record}" in msg and "3 feature values" in msg
    nan = bytearray(good)
    nan[2 * record + 8 + 16:2 * record + 8 + 20] = struct.pack("<f", float("nan"))
    msg = _error(tmp_path, bytes(nan))
    assert "record 3" in msg and f"byte offset {2 * record}" in msg and "nan" in msg
    msg = _error(tmp_path, good + bytes.fromhex(SPARSE))
    assert "record 4" in msg and "sparse features in a file whose first record is dense" in msg
    msg = _error(tmp_path, bytes.fromhex(FLOAT64), label="values")
    assert "record 1" in msg and "byte offset 0" in msg and "no label 'values'" in msg
    assert "middle" in _error(tmp_path, good + bytes.fromhex(MULTIPART)[24:])
    msg = _error(tmp_path, bytes.fromhex(SPARSE), n_features=100)
    assert "record 1" in msg and "300" in msg and "feature_dim" in msg
    assert "empty" in _error(tmp_path, b"")


def test_damaged_bytes_give_a_data_error_or_records(tmp_path):
    """Random byte changes, cuts and insertions: the reader yields records or raises DataError, nothing else."""
    rng = np.random.default_rng(4)
    bases = []
    for sparse in (False, True):
        for dtype in (np.float32, np.float64, np.int64):
            x = (rng.normal(size=(20, 5)) * 10).astype(dtype)
            x[rng.random(x.shape) < 0.5] = 0
            out = io.BytesIO()
            recordio.write_recordio(out, x, np.arange(20), sparse=sparse)
            bases.append(out.getvalue())
    path = tmp_path / "fuzz.rec"
    for t in range(300):
        data = bytearray(bases[t % len(bases)])
        for _ in range(rng.integers(1, 4)):
            at, op = int(rng.integers(len(data))), rng.integers(3)
            if op == 0:
                data[at] = int(rng.integers(256))
            elif op == 1:
                del data[at:at + int(rng.integers(1, 9))]
            else:
                data[at:at] = rng.integers(0, 256, int(rng.integers(1, 5)), dtype=np.uint8).tobytes()
        path.write_bytes(data)
        for label in (None, "values"):
            try:
                for _ in recordio.read(Input(str(path), len(data)), 0, label=label, block_size=256):
                    pass
            except DataError:
                pass


def test_stream_kind_peek_and_refusal_by_an_algorithm_for_dense_data_only(tmp_path):
    from types import SimpleNamespace

    from onepass import algorithms
    from onepass.train import check_sparse
    sparse = _file(tmp_path, [SPARSE, EMPTY_ROW], "s.rec")
    stream = Stream(sparse.path)
    assert stream.format == "recordio-protobuf" and stream.sparse
    check_sparse(algorithms.get("kmeans"), stream)  # k-means takes sparse batches
    with pytest.raises(UsageError, match="dense_only takes dense data only"):
        check_sparse(SimpleNamespace(NAME="dense_only"), stream)
    assert not Stream(_file(tmp_path, SPEC, "d.rec").path).sparse
    both = tmp_path / "both"
    both.mkdir()
    _file(both, SPEC, "a.rec")
    recordio.write_recordio(both / "b.rec", CSR(np.array([0, 1]), np.array([1]), np.ones(1, np.float32), (1, 2)))
    with pytest.raises(DataError, match="b.rec.*sparse"):
        list(Stream(str(both)).batches(10, prefetch=0))
    with pytest.raises(UsageError, match="weight"):
        list(Stream(sparse.path, weight_column="w").batches(10, prefetch=0))


def test_cli_convert_then_k_means_equals_csv(tmp_path, capsys):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(c, 0.5, size=(400, 4)) for c in (-4, 0, 4)]).astype(np.float32)
    rng.shuffle(x)
    csv = tmp_path / "x.csv"
    np.savetxt(csv, np.column_stack([np.arange(len(x)) % 3, x]), delimiter=",", fmt="%.9g")
    rec = tmp_path / "x.rec"
    assert cli_main(["convert", "--data", str(csv), "--to", "recordio-protobuf", "--out", str(rec),
                     "--label-column", "first"]) == 0
    got_x, got_y, _ = _read(Input(str(rec), rec.stat().st_size), label="values")
    assert np.array_equal(got_x, x) and np.array_equal(got_y, np.arange(len(x)) % 3)
    runs = {}
    for name, data in (("csv", csv), ("rec", rec)):
        assert cli_main(["train", "kmeans", "--data", str(data), "--out", str(tmp_path / name), "--k", "3",
                         "--feature-dim", "4", "--label-column", "first", "--quiet", "--mini-batch-size", "100"]) == 0
        from safetensors.numpy import load_file
        runs[name] = load_file(tmp_path / name / "model.safetensors")
    assert runs["csv"].keys() == runs["rec"].keys()
    assert all(np.array_equal(runs["csv"][k], runs["rec"][k]) for k in runs["csv"])
    capsys.readouterr()
    assert cli_main(["predict", str(tmp_path / "rec"), "--data", str(rec), "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(x)


def test_writer_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="Int32"):
        recordio.write_recordio(io.BytesIO(), np.array([[2**40]]))
    with pytest.raises(ValueError, match="2-D"):
        recordio.write_recordio(io.BytesIO(), np.zeros(3))
    with pytest.raises(ValueError, match="one label per row"):
        recordio.write_recordio(io.BytesIO(), np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(UsageError, match="zstd"):
        recordio.write_recordio(tmp_path / "x.rec.zst", np.zeros((3, 2)))
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_bytes_match_the_protobuf_package():
    """When the protobuf package is installed (it is not a dependency), it parses what onepass writes."""
    pytest.importorskip("google.protobuf.descriptor_pb2")
    Record = record_class()
    rng = np.random.default_rng(3)
    dense = np.where(rng.random((50, 300)) < 0.05, rng.normal(size=(50, 300)), 0).astype(np.float32)
    for x, sparse in ((dense, False), (dense, True), (dense.astype(np.float64), False)):
        out = io.BytesIO()
        recordio.write_recordio(out, x, np.arange(50), sparse=sparse)
        data, p = out.getvalue(), 0
        for i in range(50):
            _, n = struct.unpack_from("<II", data, p)
            rec = Record.FromString(data[p + 8:p + 8 + n])
            t = rec.features["values"].WhichOneof("value")
            tensor = getattr(rec.features["values"], t)
            row = np.zeros(300)
            row[list(tensor.keys) if sparse else slice(None)] = list(tensor.values)
            assert np.array_equal(row, x[i]) and list(rec.label["values"].int32_tensor.values) == [i]
            assert (list(tensor.shape) == [300]) == sparse
            expected = Record()  # what SageMaker's writer does with this row
            ev = getattr(expected.features["values"], t)
            if sparse:
                nz = np.flatnonzero(x[i])
                ev.values.extend(x[i][nz].tolist())
                ev.keys.extend(nz.tolist())
                ev.shape.append(300)
            else:
                ev.values.extend(x[i].tolist())
            expected.label["values"].int32_tensor.values.append(i)
            assert expected.SerializeToString() == data[p + 8:p + 8 + n]
            p += 8 + ((n + 3) & ~3)
