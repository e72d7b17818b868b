"""The trainer's shape: data options on `Stream`, data in memory as a source, an algorithm's own examples, and
imports that run one way (command line -> trainer / distributed glue -> algorithms -> data)."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import onepass
from onepass import Batch, Stream, State, algorithms, testing as T
from onepass.algorithms import kmeans
from onepass.data import Examples
from onepass.errors import UsageError
from onepass.progress import Progress
from onepass.train import train

from conftest import write_csv

KM = {"k": 3, "extra_center_factor": 2}


def _same_state(a: State, b: State, atol: float = 0.0) -> None:
    assert a.tensors.keys() == b.tensors.keys()
    for name in a.tensors:
        if atol:
            assert torch.allclose(a.tensors[name], b.tensors[name], atol=atol), name
        else:
            assert torch.equal(a.tensors[name], b.tensors[name]), name


class _CrashAt(Progress):
    """A crash (as kill -9 would leave things: the last checkpoint and nothing after it) once `records` are seen."""

    def __init__(self, records: int):
        super().__init__(enabled=False)
        self.at = records

    def update(self, records, *args):
        if records >= self.at:
            raise KeyboardInterrupt
        super().update(records, *args)


def test_a_stream_carries_its_options_and_a_path_with_options_trains_alike(tmp_path):
    x = T.gaussian_mixture(2000, 0)
    path = write_csv(tmp_path / "x.csv", np.column_stack([np.arange(len(x)), x]))  # an id column first
    features = list(range(1, x.shape[1] + 1))
    by_stream = train("kmeans", Stream(path, columns=features), tmp_path / "a", hyperparameters=KM)
    by_options = train("kmeans", path, tmp_path / "b", hyperparameters=KM, columns=features)
    _same_state(by_stream.state, by_options.state)
    assert by_stream.state.meta["n_features"] == x.shape[1]
    with pytest.raises(UsageError, match="give its options"):
        train("kmeans", Stream(path), tmp_path / "c", hyperparameters=KM, columns=[1])
    with pytest.raises(TypeError, match="neither the trainer's nor a Stream's"):
        train("kmeans", path, tmp_path / "d", hyperparameters=KM, colums=[1])


def test_arrays_train_as_the_same_records_in_a_file(tmp_path):
    x = T.gaussian_mixture(3000, 1)
    from_file = train("kmeans", write_csv(tmp_path / "x.csv", x), tmp_path / "f", hyperparameters=KM,
                      mini_batch_size=500)
    from_array = train("kmeans", x, tmp_path / "a", hyperparameters=KM, mini_batch_size=500)
    from_pieces = train("kmeans", [x[:1234], x[1234:]], tmp_path / "p", hyperparameters=KM, mini_batch_size=500)
    from_tensor = train("kmeans", torch.from_numpy(x), tmp_path / "t", hyperparameters=KM, mini_batch_size=500)
    _same_state(from_file.state, from_array.state, atol=1e-4)  # the file holds the values as decimal text
    for other in (from_pieces, from_tensor):
        _same_state(from_array.state, other.state)


def test_labels_in_memory_come_as_x_y_and_validate_on_x_y(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0, 0.5, 0.0]) > 0).astype(np.float32)
    result = train("linear_learner", (x, y), tmp_path / "ll", validation=(x[:1000], y[:1000]),
                   hyperparameters={"predictor_type": "binary_classifier"}, epochs=2)
    assert result.state.meta["records_seen"] == 8000
    assert result.metrics["validation:binary_classification_accuracy"] > 0.9
    # the same records, the label as the first column of a file: the same model
    path = write_csv(tmp_path / "xy.csv", np.column_stack([y, x]))
    from_file = train("linear_learner", path, tmp_path / "f", validation=path,
                      hyperparameters={"predictor_type": "binary_classifier"}, epochs=2)
    assert from_file.state.meta["records_seen"] == 8000


def test_sparse_matrices_and_batches_in_memory_train_like_libsvm(tmp_path):
    rng = np.random.default_rng(2)
    dense = (rng.random((600, 30)) < 0.1) * rng.normal(size=(600, 30))
    hp = {"num_components": 3}
    a = train("pca", sp.csr_matrix(dense.astype(np.float32)), tmp_path / "a", hyperparameters=hp, mini_batch_size=100)
    batches = [Batch(torch.from_numpy(dense[i:i + 250].astype(np.float32)).to_sparse_csr())
               for i in range(0, 600, 250)]
    b = train("pca", batches, tmp_path / "b", hyperparameters=hp, mini_batch_size=100)
    c = train("pca", dense.astype(np.float32), tmp_path / "c", hyperparameters=hp, mini_batch_size=100)
    for other in (b, c):
        for name in a.state.tensors:
            assert torch.allclose(a.state.tensors[name], other.state.tensors[name], atol=1e-4), name


def test_resume_from_an_array_equals_an_uninterrupted_run(tmp_path):
    x = T.gaussian_mixture(5000, 3)
    whole = train("kmeans", x, tmp_path / "whole", hyperparameters=KM, mini_batch_size=300, threads=1)

    with pytest.raises(KeyboardInterrupt):
        train("kmeans", x, tmp_path / "part", hyperparameters=KM, mini_batch_size=300, threads=1,
              checkpoint_every=900, checkpoint_seconds=None, progress=_CrashAt(2700))
    resumed = train("kmeans", x, tmp_path / "part", resume=True, threads=1)
    _same_state(whole.state, resumed.state)


def test_an_iterator_is_read_once(tmp_path):
    x = T.gaussian_mixture(1000, 4)
    with pytest.raises(UsageError, match="can be read once"):
        train("kmeans", iter([x]), tmp_path / "it", hyperparameters=KM, epochs=2)
    result = train("kmeans", (piece for piece in [x[:400], x[400:]]), tmp_path / "one", hyperparameters=KM)
    assert result.state.meta["records_seen"] == 1000


class _Pairs(Examples):
    """Two consecutive records, side by side, make one example (as series windows will)."""

    def batches(self, batch_size, start=None, prefetch=2):
        for batch in self.stream.batches(2 * batch_size, start=start, prefetch=prefetch):
            yield Batch(batch.x.reshape(len(batch) // 2, -1), None, batch.position, batch.fraction)


def _pairs_algorithm() -> types.ModuleType:
    algo = types.ModuleType("pairs_kmeans")
    algo.__dict__.update({k: v for k, v in vars(kmeans).items() if not k.startswith("__")})
    algo.examples = lambda stream, hp: _Pairs(stream)
    return algo


def test_an_algorithm_makes_its_own_examples_and_resumes_on_them(tmp_path, monkeypatch):
    monkeypatch.setitem(algorithms.ALGORITHMS, "pairs_kmeans", _pairs_algorithm())
    x = T.gaussian_mixture(4000, 5)[:, :2]
    data = write_csv(tmp_path / "x.csv", x)
    pairs = train("pairs_kmeans", data, tmp_path / "pairs", hyperparameters=KM, mini_batch_size=200, threads=1)
    by_hand = train("kmeans", write_csv(tmp_path / "pairs.csv", x.reshape(2000, 4)), tmp_path / "hand",
                    hyperparameters=KM, mini_batch_size=200, threads=1)
    assert pairs.state.meta["n_features"] == 4 and pairs.state.meta["records_seen"] == 2000
    _same_state(pairs.state, by_hand.state)

    with pytest.raises(KeyboardInterrupt):
        train("pairs_kmeans", data, tmp_path / "part", hyperparameters=KM, mini_batch_size=200, threads=1,
              checkpoint_every=400, checkpoint_seconds=None, progress=_CrashAt(1200))
    resumed = train("pairs_kmeans", data, tmp_path / "part", resume=True, threads=1)
    _same_state(pairs.state, resumed.state)


def _imports(module: Path) -> set[str]:
    """The onepass modules `module` imports, at its top or inside functions."""
    package = "onepass." + ".".join(module.relative_to(Path(onepass.__file__).parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.rstrip(".").split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
            found.update(n for n in names if n.startswith("onepass"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("onepass"))
    return found


def test_the_trainer_and_the_distributed_glue_never_import_the_command_line():
    root = Path(onepass.__file__).parent
    for name in ("train.py", "distributed.py"):
        assert not any(i.startswith("onepass.cli") for i in _imports(root / name)), name
    for module in (root / "algorithms").glob("*.py"):
        assert not any(i.startswith(("onepass.cli", "onepass.train", "onepass.distributed"))
                       for i in _imports(module)), module.name
