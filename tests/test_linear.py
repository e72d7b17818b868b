"""The linear learner: losses, the model grid, selection under every criterion, sparse input, the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import onepass
from onepass import DataError, IncompatibleStateError, State, load_model
from onepass.algorithms import linear as ll
from onepass.algorithms import score_summaries as summaries
from onepass.algorithms.losses import LOSSES, MULTICLASS, REGRESSION, loss_and_grad
from onepass.data.batches import Batch

from conftest import run_cli


def _fit(hp, x, y, batch=100, epochs=1, validation=None, w=None):
    state = ll.init(hp, x.shape[1], 0)
    for _ in range(epochs):
        for s in range(0, len(x), batch):
            state = ll.update(state, Batch(x[s:s + batch], y[s:s + batch],
                                           w=None if w is None else w[s:s + batch]))
        state, stop = ll.end_epoch(state, None if validation is None else [Batch(*validation)])
        if stop:
            break
    return state


def _linear_data(n, d=8, seed=0, noise=1.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.linspace(-2, 2, d)
    x = torch.randn(n, d, generator=g) * 2 + 1
    y = ((x - 1) @ w + noise * torch.randn(n, generator=g) > 0).float()
    return x, y


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_gradient_matches_autograd(name):
    g = torch.Generator().manual_seed(1)
    if name in MULTICLASS:
        s, y = torch.randn(20, 3, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (20,), generator=g)
    elif name in REGRESSION:
        s, y = torch.randn(20, 3, generator=g, dtype=torch.float64), torch.randn(20, generator=g,
                                                                              dtype=torch.float64) * 2
    else:
        s, y = torch.randn(20, 3, generator=g, dtype=torch.float64) * 2, torch.randint(0, 2, (20,), generator=g)
    s.requires_grad_(True)
    options = {"huber_delta": 0.7, "quantile": 0.3, "loss_insensitivity": 0.2, "margin": 1.0}
    loss, grad = loss_and_grad(name, s, y.to(s.dtype) if name not in MULTICLASS else y, **options)
    assert loss.shape == (20, 3)
    (auto,) = torch.autograd.grad(loss.sum(), s)
    torch.testing.assert_close(grad, auto, rtol=1e-9, atol=1e-12)


def test_the_grid_is_centred_on_the_given_settings_and_grouped_by_optimizer():
    hp = ll.HYPERPARAMETERS.parse({"predictor_type": "binary_classifier", "learning_rate": 0.05, "wd": 0.001})
    grid = ll.model_grid(hp)
    assert len(grid) == 32
    assert grid[0] == {"optimizer": "adam", "learning_rate": 0.05, "wd": 0.001, "l1": 0.0,
                       "positive_example_weight_mult": 1.0}
    assert {g["optimizer"] for g in grid} == {"adam", "sgd", "rmsprop"}
    order = [g["optimizer"] for g in grid]
    assert order == sorted(order, key=["adam", "sgd", "rmsprop"].index), "optimizers must form blocks"
    assert len({tuple(sorted(g.items())) for g in grid}) == 32, "every model differs"
    one = ll.model_grid({**hp, "num_models": 1})
    assert one == grid[:1]


def test_a_separable_problem_reaches_zero_training_error():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).float()
    keep = (x[:, 0] + 0.5 * x[:, 3]).abs() > 0.2  # a margin
    x, y = x[keep], y[keep]
    state = _fit({"predictor_type": "binary_classifier", "num_point_for_scaler": 500, "holdout_fraction": 0,
                  "epochs": 20, "early_stopping_patience": 20}, x, y, batch=50, epochs=20)
    model = ll.finalize(state, binary_classifier_model_selection_criteria="loss_function")
    assert torch.equal(model.predict(x)["predicted_label"], y)


def test_refinalizing_at_a_target_recall_reaches_it_on_the_validation_data():
    x, y = _linear_data(20000, seed=4, noise=3.0)
    xv, yv = _linear_data(5000, seed=5, noise=3.0)
    state = _fit({"predictor_type": "binary_classifier", "epochs": 1}, x, y, validation=(xv, yv))
    first = ll.finalize(state)
    for target in (0.5, 0.9, 0.97):
        model = ll.finalize(state, binary_classifier_model_selection_criteria="precision_at_target_recall",
                            target_recall=target)
        pred = model.predict(xv)["predicted_label"]
        recall = float((pred * yv).sum() / yv.sum())
        assert recall >= target, f"recall {recall:.4f} below the target {target}"
        assert model.meta["validation"]["recall"] == pytest.approx(recall, abs=1e-6)  # the summary is exact
    assert ll.finalize(state, binary_classifier_model_selection_criteria="precision_at_target_recall",
                       target_recall=0.97).meta["threshold"] < first.meta["threshold"]
    precise = ll.finalize(state, binary_classifier_model_selection_criteria="recall_at_target_precision",
                          target_precision=0.95)
    pred = precise.predict(xv)["predicted_label"]
    assert float((pred * yv).sum() / pred.sum()) >= 0.95


def test_sparse_and_dense_input_of_the_same_data_give_the_same_model():
    x, y = _linear_data(4000, d=6, seed=6)
    x[x.abs() < 0.1] = 0.0  # a few zeros; every feature still appears in every batch
    hp = {"predictor_type": "binary_classifier", "unbias_data": False, "normalize_data": True, "num_models": 6,
          "num_point_for_scaler": 800}
    dense = _fit(hp, x, y, batch=200)
    sparse = ll.init(hp, 6, 0)
    for s in range(0, 4000, 200):
        sparse = ll.update(sparse, Batch(x[s:s + 200].to_sparse_csr(), y[s:s + 200]))
    sparse, _ = ll.end_epoch(sparse)
    torch.testing.assert_close(sparse.tensors["weight"], dense.tensors["weight"], rtol=1e-4, atol=1e-5)
    a, b = ll.finalize(dense), ll.finalize(sparse)
    assert a.meta["model_index"] == b.meta["model_index"]
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-5)


def test_sparse_updates_touch_only_the_features_present():
    hp = {"predictor_type": "regressor", "num_models": 2, "num_point_for_scaler": 10, "holdout_fraction": 0}
    x = torch.zeros(40, 100)
    x[:, :3] = torch.randn(40, 3)
    state = ll.init(hp, 100, 0)
    for s in range(0, 40, 10):
        state = ll.update(state, Batch(x[s:s + 10].to_sparse_csr(), x[s:s + 10, 0] * 2))
    before = ll.init(hp, 100, 0).tensors["weight"]
    assert torch.equal(state.tensors["weight"][3:], before[3:])
    assert not torch.equal(state.tensors["weight"][:3], before[:3])


def test_multiclass_and_regression_reach_the_exact_solvers_quality():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LinearRegression

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    state = _fit({"predictor_type": "multiclass_classifier", "num_classes": 10, "epochs": 15,
                  "num_point_for_scaler": 1000}, x[:1400], y[:1400], batch=50, epochs=15)
    model = ll.finalize(state)
    accuracy = float((model.predict(x[1400:])["predicted_label"] == y[1400:]).float().mean())
    assert accuracy > 0.85
    assert model.predict(x[:2])["score"].sum(1).allclose(torch.ones(2))

    g = torch.Generator().manual_seed(7)
    xr = torch.randn(20000, 5, generator=g) * 3 + 2
    yr = xr @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]) + 100 + torch.randn(20000, generator=g)
    state = _fit({"predictor_type": "regressor", "epochs": 3}, xr, yr, batch=200, epochs=3)
    model = ll.finalize(state)
    exact = LinearRegression().fit(xr.numpy(), yr.numpy())
    rmse = float(((model.predict(xr)["score"] - yr) ** 2).mean().sqrt())
    best = float(np.sqrt(np.mean((exact.predict(xr.numpy()) - yr.numpy()) ** 2)))
    assert rmse <= best * 1.02, f"rmse {rmse:.4f} vs least squares {best:.4f}"


def test_bad_labels_name_the_record():
    state = ll.init({"predictor_type": "binary_classifier"}, 2, 0)
    x = torch.zeros(5, 2)
    with pytest.raises(DataError, match=r"label 2.0 of record 4 .*not 0 or 1"):
        ll.update(state, Batch(x, torch.tensor([0.0, 1.0, 1.0, 2.0, 0.0])))
    state = ll.init({"predictor_type": "multiclass_classifier", "num_classes": 3}, 2, 0)
    with pytest.raises(DataError, match="not an integer 0 .. 2"):
        ll.update(state, Batch(x, torch.tensor([0.0, 1.0, 1.5, 2.0, 0.0])))
    with pytest.raises(onepass.UsageError, match="needs labels"):
        ll.update(state, Batch(x))


def test_holdout_records_are_never_trained_on_and_balanced_weights_follow_the_sample():
    x, y = _linear_data(10000, seed=8)
    y[:9000][torch.arange(9000) % 4 != 0] = 0.0  # about 1 in 8 positive
    state = _fit({"predictor_type": "binary_classifier", "positive_example_weight_mult": "auto",
                  "holdout_fraction": 0.2}, x, y)
    held = ll._held_out(state, torch.arange(10000))
    assert state.meta["records_trained"] == 10000 - int(held.sum())
    assert 0.17 < float(held.float().mean()) < 0.23
    balanced = float((y == 0).sum() / (y == 1).sum())  # the scaling sample is all 10,000 records
    weights = {g["positive_example_weight_mult"] for g in state.meta["grid"]}
    assert weights == {1.0, "balanced"}
    pw = state.tensors["positive_weight"]
    for g, v in zip(state.meta["grid"], pw.tolist()):
        assert v == pytest.approx(1.0 if g["positive_example_weight_mult"] == 1.0 else balanced, rel=1e-5)


def test_early_stopping_keeps_the_best_epoch():
    x, y = _linear_data(3000, seed=9, noise=0.0)
    state = _fit({"predictor_type": "binary_classifier", "epochs": 50, "early_stopping_patience": 2,
                  "num_point_for_scaler": 500}, x, y, batch=100, epochs=50)
    assert state.meta["stopped"] and state.meta["epochs_done"] < 50
    assert "best_weight" in state.tensors
    assert ll.finalize(state).meta["validation"]["binary_classification_accuracy"] > 0.97


def test_merge_refuses_another_configuration():
    x, y = _linear_data(500)
    a = _fit({"predictor_type": "binary_classifier", "num_models": 4}, x, y)
    b = _fit({"predictor_type": "binary_classifier", "num_models": 8}, x, y)
    with pytest.raises(IncompatibleStateError, match="num_models"):
        ll.merge(a, b)


def test_merge_maps_weights_trained_under_another_scaling():
    """A state merged with itself under another scaling predicts exactly as before."""
    x, y = _linear_data(2000, seed=10)
    a = _fit({"predictor_type": "binary_classifier", "num_models": 2}, x, y)
    b = _fit({"predictor_type": "binary_classifier", "num_models": 2}, x * 3 + 5, y)  # another scaling
    b.tensors["x_mean"], b.tensors["x_scale"] = b.tensors["x_mean"] / 3 - 5 / 3, b.tensors["x_scale"] / 3
    merged = ll.merge(a, b)
    raw_a = ll._raw_parameters(a, a.tensors["weight"], a.tensors["bias"])
    raw_b = ll._raw_parameters(b, b.tensors["weight"], b.tensors["bias"])
    raw_m = ll._raw_parameters(merged, merged.tensors["weight"], merged.tensors["bias"])
    for i in range(2):
        torch.testing.assert_close(raw_m[i], (raw_a[i] + raw_b[i]) / 2, rtol=1e-4, atol=1e-5)


def test_summary_metrics_match_direct_computation():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(11)
    s = torch.randn(5000, 1, generator=g) * 3
    y = (s[:, 0] + torch.randn(5000, generator=g) * 2 > 0).float()
    part = summaries.empty("binary", 1, 1)
    summaries.add(part, "binary", s, y, torch.ones(5000), torch.zeros(5000, 1))
    auc = float(summaries.roc_auc(part["hist"])[0])
    assert auc == pytest.approx(roc_auc_score(y.numpy(), s[:, 0].numpy()), abs=2e-4)
    edge = summaries.BINS // 2
    m = summaries.binary_at(part["hist"][0], edge)
    pred = (s[:, 0] >= summaries.bin_edge(edge)).float()
    assert m["binary_classification_accuracy"] == pytest.approx(float((pred == y).float().mean()))
    assert m["precision"] == pytest.approx(float((pred * y).sum() / pred.sum()))


def test_command_line_train_rechoose_plot_predict_inspect(tmp_path):
    x, y = _linear_data(6000, seed=12, noise=2.0)
    data = np.column_stack([y.numpy(), x.numpy()])  # SageMaker's layout: the label first
    np.savetxt(tmp_path / "train.csv", data[:4000], delimiter=",", fmt="%.6g")
    np.savetxt(tmp_path / "val.csv", data[4000:5000], delimiter=",", fmt="%.6g")
    np.savetxt(tmp_path / "test.csv", data[5000:], delimiter=",", fmt="%.6g")
    out = tmp_path / "run"
    r = run_cli("train", "linear_learner", "--data", tmp_path / "train.csv", "--validation", tmp_path / "val.csv",
                "--test", tmp_path / "test.csv", "--predictor-type", "binary_classifier", "--epochs", "3",
                "--num-models", "8", "--out", out, "--quiet", check=True)
    assert "chosen by accuracy on validation source" in r.stdout
    assert "test:roc_auc_score" in r.stdout and "test:binary_classification_accuracy" in r.stdout
    finished = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert finished["event"] == "finished" and finished["test:roc_auc_score"] > 0.85

    r = run_cli("finalize", out, "--binary-classifier-model-selection-criteria", "precision_at_target_recall",
                "--target-recall", "0.95", "--plot", tmp_path / "pr.png", "--out", tmp_path / "recall.safetensors",
                check=True)
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    high_recall = load_model(tmp_path / "recall.safetensors")
    assert high_recall.meta["validation"]["recall"] >= 0.95
    assert high_recall.meta["threshold"] < load_model(out).meta["threshold"]

    r = run_cli("predict", tmp_path / "recall.safetensors", "--data", tmp_path / "test.csv",
                "--label-column", "first", check=True)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 1000 and set(rows[0]) == {"score", "predicted_label"} and 0 <= rows[0]["score"] <= 1

    report = json.loads(run_cli("inspect", "--json", out / "state.safetensors", check=True).stdout)
    models = report["summary"]["models"]
    assert len(models) == 8 and "roc_auc_score" in models[0]["validation"]
    assert State.load(out).meta["external_validation"] is True


@pytest.mark.parametrize("d", [7, 1838, 10**6])
def test_present_columns_are_torch_unique_by_either_path(d):
    """The batch's distinct columns and each entry's place among them, as torch.unique gives them, whether found
    by a mask (few columns) or by unique's sort (many)."""
    g = torch.Generator().manual_seed(d)
    for n in (0, 1, 50, 5000):
        col = (torch.rand(n, generator=g) ** 2 * d).long()
        cols, place = ll._present_columns(col, d)
        want_cols, want_place = torch.unique(col, return_inverse=True)
        assert torch.equal(cols, want_cols) and torch.equal(place, want_place)
        assert torch.equal(cols[place], col)
