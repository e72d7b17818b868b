"""Conformance checks every algorithm must pass: the promises of DESIGN.md, written once.

Like scikit-learn's `check_estimator`, they ship with the library so that a new algorithm (or a user's own)
is held to the same contract:

>>> from onepass.testing import CASES, check_all
>>> check_all(CASES["kmeans"], n=4000)  # doctest: +SKIP

Each check raises AssertionError with a message saying which promise broke.
"""

from __future__ import annotations

import functools

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

import numpy as np
import torch

from . import _files, algorithms
from .algorithms.base import Model
from .data.batches import Batch
from .errors import IncompatibleStateError, StateFileError
from .state import State


@dataclass
class Case:
    """How to exercise one algorithm.

    make_data:       (n, seed) -> float32 array of n records (features, then the label if supervised).
    quality:         (model, data) -> a loss on data, lower is better.
    merge_tolerance: relative loss increase allowed for merge(half, half) over the whole; 0 means exact.
    label_column:    None (unsupervised) or "last": the data's last column is the label.
    blobs_args:      `onepass datasets blobs` options giving a stream this case can train on (memory test; they
                     come after `--d 20`, which they may override); None
                     when its records are not rows.
    dataset:         the generated stream of `onepass datasets` for the memory test.
    records:         stream length of the merge check (SGD models need enough steps per half to converge).
    check_records:   stream length of the resume and finalize checks.
    make_batches:    (data, batch_size) -> the algorithm's batches of `data`, when its examples are not the rows
                     themselves (DeepAR: each row a series, batch_size series a batch of their windows).
    write_data:      (path stem, data) -> a file of `data` the command line trains on; None: CSV.
    cli_records:     records of that file in the command-line checks.
    predicts_rows:   whether the model's `predict` takes rows of `data` (a forecaster takes series).
    drift:           (n, seed) -> records of another distribution than make_data's, for continuing a state on
                     drifted data (`--init-from`); drift_hyperparameters are given to both runs.
    drift_reference: what the continued model's loss on the new data is held to: "fresh" (a run on the new data
                     alone: models that forget, by SGD or a half-life) or "whole" (one run over the old data then
                     the new: sums that keep everything by design), within drift_tolerance.
    sparse:          batches reach the algorithm as sparse CSR tensors (the data is written as LibSVM for the CLI).
    """

    algorithm: str
    hyperparameters: dict[str, Any]
    make_data: Callable[[int, int], np.ndarray]
    quality: Callable[[Model, np.ndarray], float]
    merge_tolerance: float
    batch_size: int = 500
    choices: list[dict[str, Any]] = field(default_factory=list)
    label_column: str | None = None
    blobs_args: tuple[str, ...] | None = ("--no-label",)
    records: int = 4000
    drift: Callable[[int, int], np.ndarray] | None = None
    drift_hyperparameters: dict[str, Any] = field(default_factory=dict)
    drift_reference: str = "fresh"
    drift_tolerance: float = 0.1
    sparse: bool = False
    dataset: str = "blobs"
    check_records: int = 4000
    make_batches: Callable[[np.ndarray, int], Iterable[Batch]] | None = None
    write_data: Callable[[Path, np.ndarray], Path] | None = None
    cli_records: int = 120_000
    predicts_rows: bool = True

    @property
    def algo(self):
        return algorithms.get(self.algorithm)


def batches(data: np.ndarray, size: int, labelled: bool = False, sparse: bool = False):
    for s in range(0, len(data), size):
        part = torch.tensor(data[s:s + size])
        x, y = (part[:, :-1].contiguous(), part[:, -1].contiguous()) if labelled else (part, None)
        yield Batch(x.to_sparse_csr() if sparse else x, y)


def write_libsvm(data: np.ndarray, f: TextIO) -> None:
    """Unlabelled records as LibSVM lines (1-based, label 0): how a sparse case reaches the command line."""
    for row in data:
        f.write("0 " + " ".join(f"{j + 1}:{row[j]:.9g}" for j in np.flatnonzero(row)) + "\n")


def fit(case: Case, data: np.ndarray, state: State | None = None, seed: int = 0,
        device: str | torch.device = "cpu") -> State:
    """Train `case` on `data` in its batch size, the state on `device` (batches stay on the CPU, as a reader's)."""
    algo = case.algo
    made = case.make_batches(data, case.batch_size) if case.make_batches else \
        batches(data, case.batch_size, labelled=case.label_column is not None, sparse=case.sparse)
    for b in made:
        if state is None:
            state = algo.init(case.hyperparameters, b.x.shape[1], seed, device)
        state = algo.update(state, b)
    return state


def assert_states_equal(a: State, b: State, what: str, rtol: float = 0.0) -> None:
    """Same algorithm, tensors and metadata: bit for bit, or (rtol > 0) floats within rtol of each other."""
    assert a.algorithm == b.algorithm, f"{what}: algorithms differ"
    assert a.tensors.keys() == b.tensors.keys(), f"{what}: tensor names differ"
    for k in a.tensors:
        ta, tb = a.tensors[k].cpu(), b.tensors[k].cpu()
        if rtol and ta.is_floating_point():
            assert torch.allclose(ta.double(), tb.double(), rtol=rtol, atol=rtol), f"{what}: tensor {k!r} differs"
        else:
            assert torch.equal(ta, tb), f"{what}: tensor {k!r} differs"
    ma = {k: v for k, v in a.meta.items() if k not in ("position", "run")}
    mb = {k: v for k, v in b.meta.items() if k not in ("position", "run")}
    assert ma == mb, f"{what}: metadata differs: {ma} vs {mb}"


def check_resume_equals_uninterrupted(case: Case, n: int | None = None, device: str | torch.device = "cpu",
                                      rtol: float = 0.0) -> None:
    """Save after any batch, load, continue: the same state, bit for bit, as never stopping.

    On a GPU, sums that use atomic adds may round in another order from run to run: pass rtol there."""
    n = n or case.check_records
    data = case.make_data(n, 1)
    whole = fit(case, data, device=device)
    cut = (n // case.batch_size // 2) * case.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        first = fit(case, data[:cut], device=device)
        first.save(Path(tmp) / "s.safetensors")
        resumed = fit(case, data[cut:], state=State.load(Path(tmp) / "s.safetensors").to(device))
    assert_states_equal(whole, resumed, "resume after a checkpoint", rtol)


def check_merge_matches_whole(case: Case, n: int | None = None, device: str | torch.device = "cpu",
                              other_device: str | torch.device | None = None) -> None:
    """merge(state of first half, state of second half) is as good as the state of the whole.

    other_device: where the second half trains (a state from a GPU merged into one from the CPU, say)."""
    n = n or case.records
    data = case.make_data(n, 2)
    whole_state = fit(case, data, device=device)
    whole = case.algo.finalize(whole_state)
    half = n // 2
    merged_state = case.algo.merge(fit(case, data[:half], seed=1, device=device),
                                   fit(case, data[half:], seed=2, device=other_device or device))
    assert merged_state.meta["records_seen"] == whole_state.meta["records_seen"], "merge lost count of records"
    merged = case.algo.finalize(merged_state)
    q_whole, q_merged = case.quality(whole.to("cpu"), data), case.quality(merged.to("cpu"), data)
    if case.merge_tolerance == 0:
        assert q_merged == q_whole, f"merge should be exact: {q_merged} vs {q_whole}"
    else:
        assert q_merged <= q_whole * (1 + case.merge_tolerance), (
            f"merge of halves loses {q_merged / q_whole - 1:.2%} > {case.merge_tolerance:.0%}")


def check_merge_refuses_incompatible(case: Case, other_hyperparameters: dict[str, Any]) -> None:
    data = case.make_data(1000, 3)
    a = fit(case, data)
    b = case.algo.init({**case.hyperparameters, **other_hyperparameters}, data.shape[1], 0)
    try:
        case.algo.merge(a, b)
    except IncompatibleStateError:
        return
    raise AssertionError(f"merge with {other_hyperparameters} should be refused")


def check_finalize_repeatable(case: Case, n: int | None = None, device: str | torch.device = "cpu") -> None:
    """finalize gives the same model twice and leaves the state untouched, for every choice."""
    state = fit(case, case.make_data(n or min(case.check_records, 3000), 4), device=device)
    before = state.copy()
    for choice in [{}] + case.choices:
        m1, m2 = case.algo.finalize(state, **choice), case.algo.finalize(state, **choice)
        for k in m1.tensors:
            assert torch.equal(m1.tensors[k], m2.tensors[k]), f"finalize({choice}) is not repeatable ({k})"
    assert_states_equal(before, state, "finalize changed the state")


def check_state_file_roundtrip_and_damage(case: Case) -> None:
    """A saved state loads identically; a damaged, truncated or foreign file is refused whole."""
    state = fit(case, case.make_data(1000, 5))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.safetensors"
        state.save(path)
        assert_states_equal(state, State.load(path), "save/load")
        blob = path.read_bytes()
        damaged = {
            "truncated": blob[: len(blob) // 2],
            "flipped byte": blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:],
            "empty": b"",
            "random": np.random.default_rng(0).bytes(4096),
        }
        for what, bad in damaged.items():
            p = Path(tmp) / f"{what}.safetensors"
            p.write_bytes(bad)
            try:
                State.load(p)
            except StateFileError:
                continue
            raise AssertionError(f"a {what} state file was loaded")
        _files.write_file(Path(tmp) / "newer.safetensors", {"kind": "state", "format_version": 99}, {})
        try:
            State.load(Path(tmp) / "newer.safetensors")
        except StateFileError as e:
            assert "newer" in str(e), str(e)
        else:
            raise AssertionError("a state from a newer format version was loaded")


def check_continuing_learns_the_new_data(case: Case, n: int | None = None) -> None:
    """A state continued on drifted data (the trainer's `--init-from`) learns it: the continued model does on the
    new data as well as the case's reference (a fresh run on the new data, or one run over old then new), and
    clearly better than the old model; its earlier best models, validation figures and early stopping are
    history, not competitors."""
    from .train import train  # the trainer's own --init-from path (imported here: the trainer imports this layer)

    assert case.drift is not None, f"{case.algorithm}: the case has no drifted data"
    n = n or case.check_records
    old, new, new_test = case.make_data(n, 21), case.drift(n, 22), case.drift(n, 23)
    hp = {**case.hyperparameters, **case.drift_hyperparameters}
    options: dict[str, Any] = dict(hyperparameters=hp, mini_batch_size=case.batch_size, device="cpu", seed=0,
                                   label_column=case.label_column, progress=_Quiet())
    with tempfile.TemporaryDirectory() as tmp:
        def csv(name: str, data: np.ndarray) -> str:
            if case.write_data is not None:  # records that are not rows (series): the case's own file
                return str(case.write_data(Path(tmp) / name.removesuffix(".csv"), data))
            np.savetxt(Path(tmp) / name, data, delimiter=",", fmt="%.7g")
            return str(Path(tmp) / name)

        a, b = csv("old.csv", old), csv("new.csv", new)
        first = train(case.algorithm, a, Path(tmp) / "old", **options).model
        continued = train(case.algorithm, b, Path(tmp) / "continued", init_from=Path(tmp) / "old", **options).model
        if case.drift_reference == "fresh":
            reference = train(case.algorithm, b, Path(tmp) / "fresh", **options).model
        else:
            reference = train(case.algorithm, csv("both.csv", np.concatenate([old, new])), Path(tmp) / "whole",
                              **options).model
    q_old, q_cont, q_ref = (case.quality(m.to("cpu"), new_test) for m in (first, continued, reference))
    assert q_cont <= q_ref * (1 + case.drift_tolerance) + 1e-12, (
        f"{case.algorithm}: continued on new data, loss {q_cont:.6g} on it against {q_ref:.6g} for the "
        f"{case.drift_reference} run (more than {case.drift_tolerance:.0%} worse): the continuation did not learn it")
    assert q_cont < q_old, (f"{case.algorithm}: the continued model ({q_cont:.6g}) is no better on the new data "
                            f"than the old one ({q_old:.6g})")


class _Quiet:
    """A progress display that shows nothing (the check's runs are silent)."""

    def update(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


def check_all(case: Case, n: int | None = None) -> None:
    check_resume_equals_uninterrupted(case, n)
    check_merge_matches_whole(case, n)
    check_finalize_repeatable(case, n)
    check_state_file_roundtrip_and_damage(case)
    if case.drift is not None:
        check_continuing_learns_the_new_data(case, n)


# ------------------------------------------------------------------------------------- the cases

def gaussian_mixture(n: int, seed: int, d: int = 8, k: int = 6) -> np.ndarray:
    rng = np.random.default_rng(1000 + d * 10 + k)  # the same centres for every seed: one distribution
    centers = rng.normal(scale=6.0, size=(k, d))
    rng = np.random.default_rng(seed)
    return (centers[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(np.float32)


def shifted_mixture(n: int, seed: int) -> np.ndarray:
    """`gaussian_mixture`'s records with every centre moved (another layout of the same clusters, 4 deviations
    away): new data that moves the centres."""
    x = gaussian_mixture(n, seed)
    return x + np.float32(4.0) * np.sign(np.arange(x.shape[1]) % 2 - 0.5).astype(np.float32)


def sparse_mixture(n: int, seed: int, d: int = 300, k: int = 6, nnz: int = 12, layout: int = 0) -> np.ndarray:
    """Sparse records: each cluster has its own `nnz` columns of a d-wide space (wider than k-means'
    DENSE_WIDTH, so batches stay sparse), values around 4 with unit noise, and 1 in 10 of them left out."""
    rng = np.random.default_rng(4000 + d * 10 + k + 7919 * layout)  # the same columns and centres for every seed
    cols, centers = rng.integers(0, d, size=(k, nnz)), rng.normal(4.0, 2.0, size=(k, nnz))
    rng = np.random.default_rng(seed)
    label = rng.integers(0, k, n)
    out = np.zeros((n, d), dtype=np.float32)
    values = (centers[label] + rng.standard_normal((n, nnz))) * (rng.random((n, nnz)) > 0.1)
    np.put_along_axis(out, cols[label], values.astype(np.float32), axis=1)
    return out


def moved_sparse_mixture(n: int, seed: int) -> np.ndarray:
    """`sparse_mixture` with other columns and centres: new sparse data that moves the centres."""
    return sparse_mixture(n, seed, layout=1)


def kmeans_cost(model: Model, data: np.ndarray) -> float:
    d = model.predict(torch.tensor(data))["distance_to_cluster"].double()
    return float((d * d).sum())


def decaying_spectrum(n: int, seed: int, d: int = 12) -> np.ndarray:
    """Correlated Gaussian records whose covariance has distinct, decaying eigenvalues (4^2 ... 0.3^2)."""
    rng = np.random.default_rng(2000 + d)  # the same axes and offset for every seed: one distribution
    axes = np.linalg.qr(rng.normal(size=(d, d)))[0]
    offset = rng.normal(scale=3.0, size=d)
    rng = np.random.default_rng(seed)
    return (offset + (rng.standard_normal((n, d)) * np.linspace(4.0, 0.3, d)) @ axes.T).astype(np.float32)


def rotated_spectrum(n: int, seed: int, d: int = 12) -> np.ndarray:
    """Records whose covariance differs from `decaying_spectrum`'s: the deviations in reverse order, so the new
    data's leading axes are the old data's trailing ones."""
    rng = np.random.default_rng(2000 + d)
    axes = np.linalg.qr(rng.normal(size=(d, d)))[0]
    offset = rng.normal(scale=3.0, size=d)
    rng = np.random.default_rng(seed)
    return (offset + (rng.standard_normal((n, d)) * np.linspace(0.3, 4.0, d)) @ axes.T).astype(np.float32)


def pca_loss(model: Model, data: np.ndarray) -> float:
    """Squared reconstruction error of data from the model's components."""
    x = torch.tensor(data, dtype=torch.float64)
    r = x - model.inverse_transform(model.transform(x))
    return float((r * r).sum())


def linear_classes(n: int, seed: int, d: int = 10) -> np.ndarray:
    """Features, then a 0/1 label from a fixed noisy linear rule (about 8 % of labels flipped by the noise)."""
    w = np.random.default_rng(3000 + d).normal(size=d)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d) + 1.0
    y = (x @ w - w.sum() + rng.normal(scale=1.0, size=n) > 0)
    return np.column_stack([x, y]).astype(np.float32)


def flipped_classes(n: int, seed: int, d: int = 10) -> np.ndarray:
    """`linear_classes` with every label flipped: the same records, the opposite rule."""
    data = linear_classes(n, seed, d)
    data[:, -1] = 1 - data[:, -1]
    return data


def logistic_loss(model: Model, data: np.ndarray) -> float:
    s = model.decision_function(torch.tensor(data[:, :-1])).double()
    y = torch.tensor(data[:, -1], dtype=torch.float64)
    return float((torch.nn.functional.softplus(s) - y * s).mean())


def pairwise_classes(n: int, seed: int, fields: tuple[int, ...] = (12, 12, 6), k: int = 3,
                     hidden: int = 0) -> np.ndarray:
    """One-hot categorical fields, then a 0/1 label from fixed pairwise interactions of their values (a hidden
    factorization machine with k factors and small linear effects, plus noise): what a linear model cannot fit.
    `hidden` picks another hidden model (drifted data)."""
    rng = np.random.default_rng(4000 + sum(fields) + k + 1000 * hidden)  # the same hidden model for every seed
    d = sum(fields)
    V, w = rng.normal(size=(d, k)), rng.normal(scale=0.3, size=d)
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, f, n) + o for f, o in zip(fields, np.cumsum((0,) + fields[:-1]))], 1)
    x = np.zeros((n, d), np.float32)
    np.put_along_axis(x, idx, 1.0, 1)
    s = w[idx].sum(1) + sum((V[idx[:, i]] * V[idx[:, j]]).sum(1)
                            for i in range(len(fields)) for j in range(i + 1, len(fields)))
    y = s + rng.normal(scale=0.5, size=n) > 0
    return np.column_stack([x, y]).astype(np.float32)


def topic_documents(n: int, seed: int, d: int = 40, k: int = 4) -> np.ndarray:
    """Word counts of n documents of 60 words from k known topics over d words (datasets.topics)."""
    from .datasets import topics
    return np.concatenate(list(topics(n, d, k, seed)))


def perplexity(model: Model, data: np.ndarray) -> float:
    """A topic model's perplexity (from its bound) on documents."""
    algo = algorithms.get(model.algorithm)
    return algo.metrics(model, algo.evaluate(model, Batch(torch.tensor(data))))["perplexity"]


def reversed_topic_documents(n: int, seed: int) -> np.ndarray:
    """`topic_documents` over the vocabulary in reverse order: the same story with other topics (drifted data)."""
    return np.ascontiguousarray(topic_documents(n, seed)[:, ::-1])


def seasonal_series(n: int, seed: int, length: int = 48, period: int = 12) -> np.ndarray:
    """n monthly series as rows: an id (the series' line), then `length` values of level + amplitude x sin(season)
    + noise (a tenth of the amplitude), levels and amplitudes drawn per series; the same family for every seed."""
    rng = np.random.default_rng(seed)
    level, amp, phase = rng.uniform(5, 50, n), rng.uniform(1, 10, n), rng.uniform(0, 2 * np.pi, n)
    t = np.arange(length)
    y = level[:, None] + amp[:, None] * np.sin(2 * np.pi * t / period + phase[:, None])
    y += rng.normal(size=y.shape) * 0.1 * amp[:, None]
    return np.column_stack([np.arange(1, n + 1) + 100_000 * seed, y]).astype(np.float32)


def series_records(data: np.ndarray, horizon: int = 0) -> list[dict[str, Any]]:
    """Rows of `seasonal_series` as SageMaker's series records, without their last `horizon` points."""
    stop = data.shape[1] - horizon
    return [{"start": "2000-01-01", "target": row[1:stop].tolist(), "cat": [int(row[0]) % 3]} for row in data]


def _series_batches(data: np.ndarray, size: int) -> Iterable[Batch]:
    from .algorithms import deepar
    from .data.series import from_dict

    shape: dict[str, int] = {}
    records = [from_dict(r, int(row[0]), "<rows>", shape=shape)  # windows are drawn by the id: the same in any cut
               for r, row in zip(series_records(data), data)]
    return deepar.batches_of(records, CASES["deepar"].hyperparameters, size)


def _write_series(path: Path, data: np.ndarray) -> Path:
    import json

    path = path.with_suffix(".jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in series_records(data)))
    return path


def forecast_error(model: Model, data: np.ndarray) -> float:
    """Mean absolute error of the mean forecast of each series' last prediction_length points."""
    P = model.meta["hyperparameters"]["prediction_length"]
    forecasts = model.forecast(series_records(data, P), num_samples=50, seed=0)
    return float(np.mean([np.abs(np.array(f["mean"]) - row[-P:]).mean() for f, row in zip(forecasts, data)]))


DEEPAR_DRIFT_TOLERANCE = 0.1  # continued on series of another period: no worse than a fresh run (measured)


CASES: dict[str, Case] = {
    # Averaged networks (one initialization for every seed), each half trained for half the steps of the whole
    # (100 Adam steps): measured on 2 x 200 series, the whole's forecasts err 0.72 (seasonal naive 0.63), the
    # halves' 2.61 and 0.83, their merge 1.49: averaging networks that drifted apart is a loose approximation
    # (at learning rate 0.005: halves 1.13 and 1.31, merge 1.92), so the merge may err up to 2.5 x the whole.
    "deepar": Case("deepar", {"time_freq": "M", "prediction_length": 6, "context_length": 12, "num_cells": 16,
                              "num_layers": 1, "likelihood": "gaussian", "learning_rate": 0.01, "epochs": 1},
                   seasonal_series, forecast_error, merge_tolerance=1.5, batch_size=2, records=400,
                   check_records=100, make_batches=_series_batches, write_data=_write_series, cli_records=6000,
                   blobs_args=None, predicts_rows=False, choices=[{"model": "last"}, {"test_quantiles": ["0.05"]}],
                   drift=functools.partial(seasonal_series, period=6), drift_tolerance=DEEPAR_DRIFT_TOLERANCE),
    # Continued with a half-life of 500 records, 4,000 records of moved centres leave the old ones 2^-8 of weight.
    "kmeans": Case("kmeans", {"k": 6}, gaussian_mixture, kmeans_cost, merge_tolerance=0.02,
                   choices=[{"k": 3}, {"k": 12, "local_lloyd_num_trials": 3}],
                   drift=shifted_mixture, drift_hyperparameters={"half_life_time_size": 500}),
    "kmeans-sparse": Case("kmeans", {"k": 6, "feature_dim": 300}, sparse_mixture, kmeans_cost, merge_tolerance=0.02,
                          choices=[{"k": 3}, {"k": 12, "local_lloyd_num_trials": 3}], sparse=True,
                          drift=moved_sparse_mixture, drift_hyperparameters={"half_life_time_size": 500}),
    # Exact sums: a merge equals the whole up to float64 rounding.
    "pca": Case("pca", {"num_components": 3}, decaying_spectrum, pca_loss, merge_tolerance=1e-9,
                choices=[{"num_components": 1}, {"num_components": 12, "subtract_mean": False}],
                drift=rotated_spectrum, drift_reference="whole", drift_tolerance=1e-9),
    # A sketch of 6 rows for 12 features: shrinkage happens, a merge keeps the Frequent Directions bound.
    "pca-randomized": Case("pca", {"num_components": 3, "algorithm_mode": "randomized", "extra_components": 3},
                           decaying_spectrum, pca_loss, merge_tolerance=0.02,
                           choices=[{"num_components": 6}, {"num_components": 2, "subtract_mean": False}],
                           drift=rotated_spectrum, drift_reference="whole", drift_tolerance=0.02),
    # SGD models: a merge averages them, each trained for half the steps of the whole, so the merged model is
    # worse by what those steps were worth: measured 11 % on 2 x 20,000 records (200 steps each).
    "linear_learner": Case("linear_learner", {"predictor_type": "binary_classifier", "num_models": 8, "epochs": 2,
                                              "learning_rate": 0.1,
                                              "num_point_for_scaler": 1000},
                           linear_classes, logistic_loss, merge_tolerance=0.15, label_column="last", batch_size=100,
                           records=40_000,
                           blobs_args=("--k", "2"), drift=flipped_classes,
                           choices=[{"binary_classifier_model_selection_criteria": "precision_at_target_recall",
                                     "target_recall": 0.9}, {"model": 3}]),
    # Averaged SGD models again (b's factors rotated onto a's first): measured 8.5 % on 2 x 20,000 records.
    "factorization_machines": Case("factorization_machines", {"predictor_type": "binary_classifier",
                                                              "num_factors": 4, "num_models": 4, "epochs": 2},
                                   pairwise_classes, logistic_loss, merge_tolerance=0.15, label_column="last",
                                   batch_size=100, records=40_000, blobs_args=("--k", "2"),
                                   choices=[{"binary_classifier_model_selection_criteria": "f_beta", "f_beta": 2},
                                            {"model": 2}],
                                   # Continued on another hidden model's data, with half the grid restarted
                                   # (fm.continued): log-loss 0.204 against a fresh run's 0.227 (every model
                                   # continued: 0.360, +58 %).
                                   drift=functools.partial(pairwise_classes, hidden=1), drift_tolerance=0.1),
    # SGD again: a merge averages two networks trained apart from the same start, each for half the steps of
    # the whole: measured +32 % perplexity on 2 x 10,000 documents, as each half alone (see ntm.py, "Merge").
    # A second topic count packed beside (3 topics, its own network on the same batches): resume, merge and the
    # files cover packed states; num_topics's network is the unpacked one, so the figures above hold.
    # The memory test's documents have 200 words (vocabulary) rather than 20: 10^5 rows of 20 small counts are
    # 4 MiB of CSV, less than the CSV reader's read-ahead (its threads + 2 blocks of 4 MiB and their values), so
    # that stream never filled it and 10^6 rows seemed to grow (+14 %); reading alone, 272 -> 331 MiB peak with
    # 4 MiB blocks, 273 -> 279 with 1 MiB blocks. At 200 words 10^5 rows are about 40 MiB: the window fills.
    "ntm": Case("ntm", {"num_topics": 4, "extra_num_topics": "3", "epochs": 1}, topic_documents, perplexity,
                merge_tolerance=0.4, choices=[{"num_topics": 3}, {"select": "uniqueness"}],
                batch_size=100, records=20_000, dataset="topics", blobs_args=("--d", "200"),
                drift=reversed_topic_documents),
}
