"""LibSVM / SVMlight: records equal scikit-learn's reader, sparse batches never densified, exact resume, bad lines
named by file and line, PCA from LibSVM equal to PCA from the same data as CSV, and the command line end to end."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

import onepass.data.libsvm as libsvm_reader
from onepass import Batch, load_model, pca
from onepass.data import Stream
from onepass.data.sparse import CSR
from onepass.errors import DataError, UsageError
from onepass.progress import Progress
from onepass.train import train

from conftest import run_cli, write_csv

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
D = 40


def sparse_data(n: int, d: int = D, density: float = 0.1, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """Values that are exact in float32 (so text round trips are exact), some rows empty."""
    rng = np.random.default_rng(seed)
    x = sp.random(n, d, density=density, format="csr", random_state=seed, dtype=np.float64)
    x.data = np.round(x.data * 200 - 100, 2).astype(np.float32).astype(np.float64)
    x.data[x.data == 0] = 0.5
    return x, rng.integers(-1, 3, size=n).astype(np.float64)


def dump(path: Path, x, y, zero_based: bool = False, **kw) -> Path:
    """SVMlight's 1-based indices unless asked (scikit-learn's default is 0-based)."""
    dump_svmlight_file(x, y, str(path), zero_based=zero_based, **kw)
    return path


def read(path, n_features: int = D, batch: int = 7, **kw) -> tuple[list, np.ndarray, np.ndarray]:
    """The batches (checked sparse), and their features (dense, for comparison) and labels."""
    got = list(Stream(path, n_features=n_features, **kw).batches(batch))
    for b in got:
        assert b.x.layout == torch.sparse_csr and b.x.dtype == torch.float32  # never densified by the reader
    x = np.concatenate([b.x.to_dense().numpy() for b in got])
    return got, x, np.concatenate([b.y.numpy() for b in got])


@contextlib.contextmanager
def block_size(n: int):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(libsvm_reader, "BLOCK_SIZE", n)
        yield


# --------------------------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("zero_based", [False, True])
@pytest.mark.parametrize("qid", [False, True])
@pytest.mark.parametrize("blocks", [None, 97])
def test_records_equal_scikit_learns_reader(tmp_path, zero_based, qid, blocks):
    x, y = sparse_data(500)
    kw = {"query_id": np.arange(500) // 10} if qid else {}
    path = dump(tmp_path / "a.libsvm", x, y, zero_based=zero_based, **kw)
    want_x, want_y = load_svmlight_file(str(path), n_features=D, zero_based=zero_based)[:2]
    with block_size(blocks) if blocks else contextlib.nullcontext():
        batches, got_x, got_y = read(path, zero_based=zero_based)
    np.testing.assert_array_equal(got_x, want_x.toarray().astype(np.float32))
    np.testing.assert_array_equal(got_y, want_y.astype(np.float32))
    assert [len(b) for b in batches] == [7] * 71 + [3]
    assert batches[-1].position["records"] == 500


def test_a_wide_stream_keeps_its_nonzeros_only(tmp_path):
    x, y = sparse_data(300, d=100_000, density=0.001, seed=1)
    path = dump(tmp_path / "wide.svm", x, y)
    batches = list(Stream(path, n_features=100_000).batches(128))
    assert all(b.x.layout == torch.sparse_csr and b.x.shape[1] == 100_000 for b in batches)
    assert sum(b.x.values().numel() for b in batches) == x.nnz
    b0 = batches[0].x
    want = x[:128]
    np.testing.assert_array_equal(b0.crow_indices().numpy(), want.indptr)
    np.testing.assert_array_equal(b0.col_indices().numpy(), want.indices)
    np.testing.assert_array_equal(b0.values().numpy(), want.data.astype(np.float32))


def test_comments_blank_lines_tabs_crlf_qid_and_empty_records(tmp_path):
    text = (b"# a comment line\n\n"
            b"1 qid:3 1:0.5 4:2   # trailing comment\r\n"
            b"  -1\t2:1e-3\t\t3:-4  \n"
            b"\n"
            b"0\n"                       # a record with no features
            b"+2 qid:1 5:7")             # no final newline
    path = tmp_path / "b.svmlight"
    path.write_bytes(text)
    _, x, y = read(path, n_features=5, batch=2)
    want = np.zeros((4, 5), dtype=np.float32)
    want[0, [0, 3]] = [0.5, 2]
    want[1, [1, 2]] = [1e-3, -4]
    want[3, 4] = 7
    np.testing.assert_array_equal(x, want)
    np.testing.assert_array_equal(y, [1, -1, 0, 2])


@pytest.mark.parametrize("suffix,opener", [(".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open)])
def test_compressed_files_read_transparently(tmp_path, suffix, opener):
    x, y = sparse_data(200, seed=2)
    plain = dump(tmp_path / "c.libsvm", x, y)
    packed = tmp_path / f"c.libsvm{suffix}"
    with opener(packed, "wb") as f:
        f.write(plain.read_bytes())
    with block_size(101):
        np.testing.assert_array_equal(read(packed)[1], read(plain)[1])


def test_format_detected_from_the_name_or_given(tmp_path):
    x, y = sparse_data(20)
    for name in ("d.libsvm", "d.svm", "d.svmlight", "d.svm.gz"):
        path = tmp_path / name
        with (gzip.open(path, "wb") if name.endswith(".gz") else open(path, "wb")) as f:
            dump_svmlight_file(x, y, f, zero_based=False)
        assert Stream(path, n_features=D).format == "libsvm"
    other = dump(tmp_path / "d.txt", x, y)
    assert read(other, data_format="libsvm")[1].shape == (20, D)


def test_zero_based_files_need_the_option(tmp_path):
    x, y = sparse_data(50, seed=3)
    x = x.tolil()
    x[:, 0] = 0
    x[7, 0] = 1.5  # the only index 0, on line 8
    x = x.tocsr()
    x.eliminate_zeros()
    path = dump(tmp_path / "z.libsvm", x, y, zero_based=True)
    err = data_error(path, 8, lambda: read(path))
    assert "index 0" in str(err) and "--zero-based" in str(err)
    np.testing.assert_array_equal(read(path, zero_based=True)[1], x.toarray().astype(np.float32))


def test_the_number_of_features_is_required(tmp_path):
    path = dump(tmp_path / "e.libsvm", *sparse_data(5))
    with pytest.raises(UsageError, match="--feature-dim"):
        list(Stream(path).batches(2))
    with pytest.raises(UsageError, match="label"):
        list(Stream(path, n_features=D, label_column="last").batches(2))


def test_empty_file_is_a_data_error(tmp_path):
    path = tmp_path / "empty.libsvm"
    path.write_bytes(b"# nothing here\n\n")
    data_error(path, None, lambda: read(path))


# ---------------------------------------------------------------------------------------------- resume

@pytest.mark.parametrize("cut", [1, 4, 9, 30])
def test_resume_at_a_saved_position_gives_the_tail(tmp_path, cut):
    x, y = sparse_data(300, seed=4)
    path = dump(tmp_path / "r.libsvm", x, y, query_id=np.arange(300))
    with block_size(211):  # many blocks, cut anywhere inside them
        stream = Stream(path, n_features=D)
        whole = list(stream.batches(9))
        tail = list(stream.batches(9, start=whole[cut - 1].position))
    assert len(tail) == len(whole) - cut
    for a, b in zip(whole[cut:], tail):
        assert a.position["records"] == b.position["records"]
        np.testing.assert_array_equal(a.x.to_dense().numpy(), b.x.to_dense().numpy())
        np.testing.assert_array_equal(a.y.numpy(), b.y.numpy())


def test_errors_after_a_resume_name_the_right_line(tmp_path):
    lines = [f"1 {i % D + 1}:1" for i in range(100)] + ["1 3:x"]
    path = tmp_path / "late.libsvm"
    path.write_text("\n".join(lines) + "\n")
    with block_size(64):
        first = next(iter(Stream(path, n_features=D).batches(10)))
        data_error(path, 101, lambda: list(Stream(path, n_features=D).batches(10, start=first.position)))


# ------------------------------------------------------------------------------------------- bad lines

def data_error(path, line: int | None, fn) -> DataError:
    with pytest.raises(DataError) as e:
        fn()
    assert str(path) in str(e.value)
    if line is not None:
        assert e.value.line == line and str(e.value).startswith(f"{path}, line {line}: "), str(e.value)
    return e.value


BAD = {
    "index beyond the features": (b"1 3:1 41:2", "beyond the 40 features"),
    "index 0 in a 1-based file": (b"1 0:1", "index 0"),
    "negative index": (b"1 -2:1", "negative"),
    "index not a number": (b"1 a:1", "not a number"),
    "index not whole": (b"1 2.5:1", "not a whole number"),
    "value not a number": (b"1 2:abc", "not a number"),
    "value NaN": (b"1 2:nan", "NaN"),
    "value beyond float32": (b"1 2:1e39", "float32"),
    "value missing": (b"1 2:", "empty"),
    "index missing": (b"1 :3", "empty"),
    "unsorted indices": (b"1 5:1 3:1", "increase"),
    "duplicate index": (b"1 3:1 3:2", "increase"),
    "no colon": (b"1 3:1 4", "index:value"),
    "two colons": (b"1 3:1:2", "index:value"),
    "label missing": (b"3:1 4:2", "label"),
    "label not a number": (b"yes 3:1", "label"),
    "label infinite": (b"inf 3:1", "label"),
    "qid not first": (b"1 3:1 qid:2", "not a number"),
    "comma": (b"1 3:1,4:2", "index:value"),
    "bad utf-8": (b"1 3:\xff", "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("blocks", [None, 50])
def test_bad_lines_name_file_line_and_reason(tmp_path, case, blocks):
    bad, words = BAD[case]
    good = [b"1 1:1 2:2", b"# comment", b"-1 qid:4 40:3", b""] * 5
    path = tmp_path / "bad.libsvm"
    path.write_bytes(b"\n".join(good + [bad] + good) + b"\n")
    with block_size(blocks) if blocks else contextlib.nullcontext():
        err = data_error(path, len(good) + 1, lambda: read(path))
    assert words.lower() in str(err).lower(), str(err)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from([b"1", b" ", b":", b"2", b"\n", b"0", b"-", b".", b"e", b"#", b"x", b"qid:",
                                 b"\t", b"\r", b"40", b"41", b"3:1.5"]), max_size=60))
def test_fuzzed_bytes_give_records_or_a_data_error(tmp_path, parts):
    path = tmp_path / "fuzz.libsvm"
    data = b"".join(parts)
    path.write_bytes(data)
    try:
        _, x, y = read(path)
    except DataError:
        return
    # what was read must be what the slow line-by-line rules accept, value for value
    rows = [ln.split(b"#")[0].split() for ln in data.split(b"\n")]
    rows = [r for r in rows if r]
    assert len(y) == len(rows)
    for k, r in enumerate(rows):
        assert y[k] == np.float32(float(r[0]))
        pairs = [p for p in r[1:] if not p.startswith(b"qid:") or p is not r[1]]
        for p in pairs:
            i, v = p.split(b":")
            assert x[k, int(float(i)) - 1] == np.float32(float(v))


# ------------------------------------------------------------------------------------ training with PCA

@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_pca_from_libsvm_equals_pca_from_the_same_data_as_csv(tmp_path, mode):
    x, y = sparse_data(3000, seed=5)
    path = dump(tmp_path / "p.libsvm", x, y)
    csv = write_csv(tmp_path / "p.csv", x.toarray())
    hp = {"num_components": 5, "algorithm_mode": mode, "mini_batch_size": 256}
    sparse_run = train("pca", path, tmp_path / "sparse", hyperparameters={**hp, "feature_dim": D})
    dense_run = train("pca", csv, tmp_path / "dense", hyperparameters=hp)
    a, b = sparse_run.model, dense_run.model
    np.testing.assert_allclose(a.components.numpy(), b.components.numpy(), atol=1e-6)
    np.testing.assert_allclose(a.tensors["singular_values"].numpy(), b.tensors["singular_values"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(a.mean.numpy(), b.mean.numpy(), atol=1e-9)


def test_training_never_densifies_a_sparse_batch(tmp_path, monkeypatch):
    x, y = sparse_data(1000, seed=6)
    path = dump(tmp_path / "n.libsvm", x, y)

    to_dense = torch.Tensor.to_dense

    def refuse(self, *a, **k):  # the batch is (1000 records x 40); the modes may densify Gram matrices (40 x 40)
        if self.dim() == 2 and self.shape[1] == D and self.shape[0] != D:
            raise AssertionError("a sparse batch was densified")
        return to_dense(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "to_dense", refuse)
    for mode in ("regular", "randomized"):
        result = train("pca", path, tmp_path / mode, validation=path,
                       hyperparameters={"num_components": 3, "feature_dim": D, "algorithm_mode": mode})
        assert result.state.meta["records_seen"] == 1000


def test_validation_on_sparse_data_equals_dense(tmp_path):
    x, y = sparse_data(800, seed=10)
    model = train("pca", dump(tmp_path / "v.libsvm", x, y), tmp_path / "v",
                  hyperparameters={"num_components": 6, "feature_dim": D}).model
    sparse_batch = next(iter(Stream(tmp_path / "v.libsvm", n_features=D).batches(800)))
    got = pca.evaluate(model, sparse_batch)
    want = pca.evaluate(model, Batch(sparse_batch.x.to_dense()))
    assert got["count"] == want["count"] == 800
    assert got["ssd"] == pytest.approx(want["ssd"], rel=1e-9)


def test_an_algorithm_for_dense_data_only_refuses_a_sparse_source(tmp_path, monkeypatch):
    """Every algorithm today takes sparse batches (ACCEPTS_SPARSE); one that did not would be refused before
    reading, with nothing written."""
    from onepass.algorithms import kmeans
    path = dump(tmp_path / "k.libsvm", *sparse_data(50))
    monkeypatch.setattr(kmeans, "ACCEPTS_SPARSE", False)
    with pytest.raises(UsageError, match="kmeans takes dense data only"):
        train("kmeans", path, tmp_path / "km", hyperparameters={"k": 2, "feature_dim": D})
    assert not (tmp_path / "km").exists()


class _Crash(Progress):
    """Stops training (as a crash would) once `at` records are in."""

    def __init__(self, at: int):
        super().__init__(enabled=False)
        self.at = at

    def update(self, records, *args, **kw):
        if records >= self.at:
            raise RuntimeError("crash")


def test_training_resumed_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    x, y = sparse_data(2000, seed=7)
    path = dump(tmp_path / "t.libsvm", x, y, zero_based=True)
    hp = {"num_components": 4, "feature_dim": D, "mini_batch_size": 100, "algorithm_mode": "randomized"}
    with block_size(1000):
        full = train("pca", path, tmp_path / "full", hyperparameters=hp, zero_based=True)
        with pytest.raises(RuntimeError, match="crash"):  # the checkpoint after 700 records survives
            train("pca", path, tmp_path / "part", hyperparameters=hp, zero_based=True, checkpoint_every=700,
                  progress=_Crash(1000))
        resumed = train("pca", path, tmp_path / "part", resume=True)  # indexing and width from the checkpoint
    assert resumed.state.meta["records_seen"] == 2000
    for name, t in full.state.tensors.items():
        torch.testing.assert_close(resumed.state.tensors[name], t, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ command line

def test_command_line_train_and_predict(tmp_path):
    x, y = sparse_data(1500, seed=8)
    path = dump(tmp_path / "cli.libsvm", x, y)
    out = tmp_path / "run"
    r = run_cli("train", "pca", "--data", str(path), "--num-components", "3", "--feature-dim", str(D),
                "--algorithm-mode", "randomized", "--out", str(out), "--quiet", check=True)
    assert "trained pca on 1,500 records of 40 features" in r.stdout
    p = run_cli("predict", str(out), "--data", str(path), "--format", "csv", check=True)
    got = np.loadtxt(p.stdout.splitlines(), delimiter=",")
    model = load_model(out)
    want = model.transform(torch.tensor(x.toarray())).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # standard input with --data-format, 0-based
    zero = dump(tmp_path / "zero.txt", x, y, zero_based=True)
    with open(zero, "rb") as f:
        r = run_cli("train", "pca", "--data", "-", "--data-format", "libsvm", "--zero-based", "--num-components",
                    "3", "--feature-dim", str(D), "--out", str(tmp_path / "stdin"), "--quiet", stdin=f, check=True)
    assert "1,500 records" in r.stdout


def test_command_line_errors(tmp_path):
    path = dump(tmp_path / "err.libsvm", *sparse_data(30))
    r = run_cli("train", "pca", "--data", str(path), "--num-components", "3", "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "--feature-dim" in r.stderr
    r = run_cli("train", "pca", "--data", str(path), "--num-components", "3", "--feature-dim", "10",
                "--out", str(tmp_path / "b"))
    assert r.returncode == 3 and f"{path}, line " in r.stderr and "beyond the 10 features" in r.stderr
    r = run_cli("train", "kmeans", "--data", str(path), "--k", "2", "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and "--feature-dim" in r.stderr


def test_csr_slices_and_stacks_rows():
    x = sp.random(30, 8, density=0.3, format="csr", random_state=9, dtype=np.float32)
    c = CSR(x.indptr.astype(np.int64), x.indices.astype(np.int64), x.data, x.shape)
    parts = [c[0:7], c[7:7], c[7:20], c[20:]]
    assert [len(p) for p in parts] == [7, 0, 13, 10]
    np.testing.assert_array_equal(CSR.vstack(parts).toarray(), x.toarray())
    np.testing.assert_array_equal(c[3:9].to_torch().to_dense().numpy(), x[3:9].toarray())


def _number(rng) -> str:
    kind = rng.integers(6)
    if kind == 0:
        return str(rng.integers(-5, 6))
    if kind == 1:
        return f"{rng.normal() * 10.0 ** rng.integers(-8, 8):.{rng.integers(0, 20)}f}"
    if kind == 2:
        return f"{rng.normal():.{rng.integers(1, 17)}e}".replace("e+", "e" if rng.random() < 0.5 else "e+")
    if kind == 3:
        return repr(float(rng.normal() * 10.0 ** rng.integers(-300, 300)))
    if kind == 4:
        return ("+" if rng.random() < 0.5 else "-") + "0" * int(rng.integers(0, 3)) + str(rng.integers(0, 10 ** 9))
    return f"{rng.integers(0, 10 ** 6)}.{rng.integers(0, 10 ** 9):09d}{rng.integers(0, 10 ** 9)}"


def test_the_c_fast_path_reads_the_records_the_general_path_reads(monkeypatch):
    """Clean blocks of every number form (signs, leading zeros, 0-30 digits, exponents, float32 under- and
    overflow): the C fast path gives the same records bit for bit, or hands the block to the general path."""
    if libsvm_reader._fastsvm is None:
        pytest.skip("onepass was installed without its C extensions")
    rng = np.random.default_rng(11)
    fast_blocks = 0
    for _ in range(300):
        lines = []
        for _ in range(int(rng.integers(1, 6))):
            cols = np.sort(rng.choice(50, size=int(rng.integers(0, 6)), replace=False)) + 1
            lines.append(" ".join([_number(rng)] + [f"{c}:{_number(rng)}" for c in cols]))
        block = ("\n".join(lines) + ("\n" if rng.random() < 0.7 else "")).encode()
        fast = libsvm_reader._parse_clean(block, 50, False)
        with monkeypatch.context() as m:
            m.setattr(libsvm_reader, "_fastsvm", None)
            try:
                general = libsvm_reader._parse(block, "b", 1, 50, False)
            except DataError:
                general = None
        if fast is None:
            continue
        fast_blocks += 1
        assert general is not None, block
        for k in ("indptr", "indices", "data"):
            assert np.array_equal(getattr(fast[0], k).view(np.uint8), getattr(general[0], k).view(np.uint8)), block
        assert np.array_equal(fast[1].view(np.uint8), general[1].view(np.uint8)), block
    assert fast_blocks > 100
