"""The linear learner: losses, the model grid, selection under every criterion, sparse input, the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import onepass
from onepass import DataError, IncompatibleStateError, State, load_model
from onepass.algorithms import linear as ll
from onepass.algorithms import _csr, selection
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
    held = selection.records_held_out(state, torch.arange(10000))
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
    # accuracy named: on 300 held-out records `auto` would choose (and stop) by the loss, which on separable data
    # goes on falling for 50 epochs
    state = _fit({"predictor_type": "binary_classifier", "epochs": 50, "early_stopping_patience": 2,
                  "num_point_for_scaler": 500, "binary_classifier_model_selection_criteria": "accuracy"},
                 x, y, batch=100, epochs=50)
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
        cols, place = _csr.present_columns(col, d)
        want_cols, want_place = torch.unique(col, return_inverse=True)
        assert torch.equal(cols, want_cols) and torch.equal(place, want_place)
        assert torch.equal(cols[place], col)


# ------------------------------------------------------------------ choices that hold on new data (issue 20, 21)

def _logistic_data(n, seed, d=12):
    """Records with a known score distribution: x ~ N(1, I), P(y = 1 | x) = sigmoid((x - 1) . beta), AUC ~0.63."""
    g = torch.Generator().manual_seed(seed)
    beta = torch.tensor([0.25, -0.2, 0.15, 0.1, -0.1, 0.08, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0])[:d]
    x = torch.randn(n, d, generator=g) + 1.0
    return x, (torch.rand(n, generator=g) < torch.sigmoid((x - 1.0) @ beta)).float()


@pytest.mark.parametrize("criterion, key, target", [("precision_at_target_recall", "target_recall", 0.9),
                                                    ("recall_at_target_precision", "target_precision", 0.6)])
def test_a_threshold_chosen_for_a_target_holds_on_fresh_records(criterion, key, target):
    """The held-out records are scored by the finished models: what the threshold reaches there, it reaches on
    fresh records of the same distribution, within two standard errors (of the sample and of the fresh set)."""
    x, y = _logistic_data(100_000, 1)
    state = _fit({"predictor_type": "binary_classifier", "epochs": 2}, x, y, batch=1000, epochs=2)
    model = ll.finalize(state, binary_classifier_model_selection_criteria=criterion, **{key: target})
    assert model.meta["validation"][key[len("target_"):]] >= target
    xf, yf = _logistic_data(100_000, 2)
    pred = model.predict(xf)["predicted_label"]
    tp = float((pred * yf).sum())
    sample = ll.describe(state)["validation_reservoir"]["rows"]
    if key == "target_recall":
        got, n_sample, n_fresh = tp / float(yf.sum()), sample * float(y.mean()), float(yf.sum())
    else:  # precision is measured on the predicted positives
        share = float(pred.mean())
        got, n_sample, n_fresh = tp / float(pred.sum()), sample * share, float(pred.sum())
    se = (target * (1 - target) * (1 / n_sample + 1 / n_fresh)) ** 0.5
    assert abs(got - target) <= 2 * se, f"{key[7:]} {got:.4f} on fresh records, target {target} +- {2 * se:.4f}"


def test_the_held_out_sample_has_a_fixed_budget_stated_in_inspect(tmp_path):
    x, y = _logistic_data(30_000, 3)
    hp = {"predictor_type": "binary_classifier", "num_models": 4, "validation_reservoir_mib": 0.05}
    state = _fit(hp, x, y, batch=500)
    sample = ll.describe(state)["validation_reservoir"]
    assert sample["budget_mib"] == 0.05
    capacity = int(0.05 * 2**20 / 1.25) // (4 * 12 + 16)  # a fifth of the budget takes admissions between cuts
    assert sample["capacity_rows"] == capacity == sample["rows"] < sample["records_offered"]
    stored = sum(v.numel() * v.element_size() for k, v in state.tensors.items() if k.startswith("reservoir_"))
    assert stored <= 0.05 * 2**20 + 500 * (4 * 12 + 16)  # the budget and at most one batch
    off = _fit({**hp, "validation_reservoir_mib": 0}, x, y, batch=500)
    assert "validation_reservoir" not in ll.describe(off)
    assert ll.finalize(off).meta["validated_on"] == "held-out records (progressive)"


@pytest.mark.parametrize("sparse", [False, True])
def test_samples_merge_into_the_sample_of_both_streams(sparse):
    """Priority sampling keeps the highest priorities that fit: two samples merged hold exactly what one sample
    of both streams holds (rows, labels, the weight each stands for), dense or CSR."""
    from onepass.algorithms import reservoir

    g = torch.Generator().manual_seed(4)
    x = torch.randn(3000, 20, generator=g) * (torch.rand(3000, 20, generator=g) < 0.3)
    y, w = (torch.rand(3000, generator=g) < 0.5).float(), torch.rand(3000, generator=g) + 0.5
    pri = reservoir.priorities(torch.rand(3000, generator=g, dtype=torch.float64) + 1e-9, w)
    rows = (lambda a, b: x[a:b].to_sparse_csr()) if sparse else (lambda a, b: x[a:b])

    def sample(start, end):
        t, meta = {}, reservoir.new_meta(0.02, 10**6)
        for s in range(start, end, 100):
            reservoir.add(t, meta, "r_", rows(s, s + 100), y[s:s + 100], w[s:s + 100], pri[s:s + 100])
        return t, meta

    def content(t, meta):
        (xs, ys, ws), = reservoir.chunks(t, meta, "r_", 20, size=10**6)
        xs = xs.to_dense() if sparse else xs
        return sorted((float(yy), float(ww), tuple(xx.tolist())) for xx, yy, ww in zip(xs, ys, ws))

    whole = sample(0, 3000)
    merged = reservoir.merge(*sample(0, 1700), *sample(1700, 3000), "r_")
    assert 0 < reservoir.rows(*whole, "r_") < 3000, "the budget should bind"
    assert reservoir.describe(*whole, "r_")["each_row_stands_for"] == \
        reservoir.describe(*merged, "r_")["each_row_stands_for"]
    assert content(*whole) == content(*merged)


def test_continuing_on_flipped_labels_learns_them_from_the_command_line(tmp_path):
    """Issue 21: train on A, continue on B (A's labels flipped) with --init-from: the continued run judges its
    models on B, so its test AUC on B is a fresh run's, not A's 0.08, and its model is not A's."""
    x, y = _linear_data(8000, d=6, seed=13, noise=1.0)
    xt, yt = _linear_data(2000, d=6, seed=14, noise=1.0)
    for name, xx, yy in (("A", x, y), ("B", x, 1 - y), ("B_test", xt, 1 - yt)):
        np.savetxt(tmp_path / f"{name}.csv", np.column_stack([yy.numpy(), xx.numpy()]), delimiter=",", fmt="%.6g")
    common = ["--predictor-type", "binary_classifier", "--quiet"]
    run_cli("train", "linear_learner", "--data", tmp_path / "A.csv", "--out", tmp_path / "A", "--epochs", "3",
            *common, check=True)
    run_cli("train", "linear_learner", "--data", tmp_path / "B.csv", "--init-from", tmp_path / "A", "--epochs", "2",
            "--early-stopping-patience", "10", "--test", tmp_path / "B_test.csv", "--out", tmp_path / "B", "--quiet",
            check=True)
    run_cli("train", "linear_learner", "--data", tmp_path / "B.csv", "--epochs", "2", "--test",
            tmp_path / "B_test.csv", "--out", tmp_path / "fresh", *common, check=True)

    def events(run):
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    continued, fresh = events("B")[-1]["test:roc_auc_score"], events("fresh")[-1]["test:roc_auc_score"]
    assert continued > 0.9 and continued >= fresh - 0.02, (continued, fresh)
    assert load_model(tmp_path / "B").weight.tolist() != load_model(tmp_path / "A").weight.tolist()
    a_last = [e for e in events("A") if e["event"] == "validation"][-1]
    b_first = [e for e in events("B") if e["event"] == "validation"][0]
    assert b_first["best_so_far"] != a_last["best_so_far"], "the continued run repeats A's validation figures"


def test_validation_events_report_the_epoch_apart_from_the_best_so_far(tmp_path):
    x, y = _linear_data(4000, seed=15, noise=2.0)
    np.savetxt(tmp_path / "d.csv", np.column_stack([y.numpy(), x.numpy()]), delimiter=",", fmt="%.6g")
    run_cli("train", "linear_learner", "--data", tmp_path / "d.csv", "--out", tmp_path / "run", "--epochs", "4",
            "--predictor-type", "binary_classifier", "--num-models", "4", "--early-stopping-patience", "10",
            "--quiet", check=True)
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validation = [e for e in events if e["event"] == "validation"]
    assert len(validation) == 4
    losses = [e["objective_loss"] for e in validation]
    assert len(set(losses)) == 4, "each epoch reports its own models' figures"
    model = load_model(tmp_path / "run")
    assert validation[-1]["best_so_far"]["model_index"] == model.meta["model_index"]
    assert validation[-1]["best_so_far"]["objective_loss"] == pytest.approx(model.meta["validation"]["objective_loss"])


def test_a_binary_criterion_for_a_multiclass_state_is_an_error(tmp_path):
    g = torch.Generator().manual_seed(16)
    x = torch.randn(2000, 4, generator=g)
    y = x[:, :3].argmax(1).float()
    state = _fit({"predictor_type": "multiclass_classifier", "num_classes": 3, "num_models": 2}, x, y)
    with pytest.raises(onepass.UsageError, match="binary_classifier_model_selection_criteria .*multiclass"):
        ll.finalize(state, binary_classifier_model_selection_criteria="precision_at_target_recall")
    with pytest.raises(onepass.UsageError, match="target_recall"):
        ll.finalize(state, target_recall=0.9)
    assert ll.finalize(state).meta["criterion"] == "loss_function"
    state.save(tmp_path / "s.safetensors")
    r = run_cli("finalize", tmp_path / "s.safetensors", "--binary-classifier-model-selection-criteria", "f_beta",
                "--out", tmp_path / "m.safetensors")
    assert r.returncode == 2 and "multiclass_classifier" in r.stderr
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("labels, kind, message", [
    ("0.37", "binary_classifier", r"label 0.37 of record 3 .*not 0 or 1"),
    ("2.5", "multiclass_classifier", r"label 2.5 of record 3 .*not an integer 0 .. 2"),
    ("one class", "binary_classifier", r"every label of the 3,000 records of this pass is 0.*another column"),
])
def test_a_label_column_that_cannot_be_a_classifiers_is_refused_naming_the_file(tmp_path, labels, kind, message):
    g = np.random.default_rng(17)
    x = g.normal(size=(3000, 5))
    y = g.integers(0, 2 if kind == "binary_classifier" else 3, 3000).astype(float)
    if labels == "one class":  # the digits mistake: a pixel that is always 0 read as the label
        y[:] = 0
    else:
        y[2] = float(labels)
    np.savetxt(tmp_path / "d.csv", np.column_stack([y, x]), delimiter=",", fmt="%.6g")
    r = run_cli("train", "linear_learner", "--data", tmp_path / "d.csv", "--out", tmp_path / "run",
                "--predictor-type", kind, "--num-classes", "3", "--quiet") if kind != "binary_classifier" else \
        run_cli("train", "linear_learner", "--data", tmp_path / "d.csv", "--out", tmp_path / "run",
                "--predictor-type", kind, "--quiet")
    assert r.returncode == 3, r.stderr
    assert "d.csv" in r.stderr
    import re
    assert re.search(message, r.stderr), r.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_choice_on_a_tiny_held_out_set_says_so_and_uses_the_loss(tmp_path):
    """42 validation records: accuracy cannot tell 8 models apart, so `auto` chooses by the loss and the model,
    the run's output and the validation events say the choice is noisy; 1,000 and more choose by accuracy."""
    x, y = _linear_data(3000, seed=18, noise=2.0)
    xv, yv = _linear_data(1500, seed=19, noise=2.0)
    for name, xx, yy in (("train", x, y), ("tiny", xv[:42], yv[:42]), ("large", xv, yv)):
        np.savetxt(tmp_path / f"{name}.csv", np.column_stack([yy.numpy(), xx.numpy()]), delimiter=",", fmt="%.6g")
    runs = {}
    for val in ("tiny", "large"):
        r = run_cli("train", "linear_learner", "--data", tmp_path / "train.csv", "--validation",
                    tmp_path / f"{val}.csv", "--out", tmp_path / val, "--predictor-type", "binary_classifier",
                    "--num-models", "8", "--epochs", "2", check=True)
        runs[val] = (r.stdout, load_model(tmp_path / val))
    out, model = runs["tiny"]
    assert model.meta["criterion"] == "loss_function" and model.meta["validation_records"] == 42
    assert "chosen on 42 held-out records" in model.meta["warnings"][0] and "warning: the model was chosen on 42" in out
    events = [json.loads(line) for line in (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert all(e.get("warnings") for e in events if e["event"] == "validation")
    out, model = runs["large"]
    assert model.meta["criterion"] == "accuracy" and model.meta["warnings"] == [] and "warning" not in out
    accuracy = load_model(tmp_path / "tiny")
    assert ll.finalize(State.load(tmp_path / "tiny"), binary_classifier_model_selection_criteria="accuracy"
                       ).meta["criterion"] == "accuracy" != accuracy.meta["criterion"]  # a named criterion is kept


def _wide_sparse(n, d=5000, seed=0, classes=2):
    """Indicator records of ~12 skewed columns out of d (a head of frequent ones), labels from a hidden model."""
    g = torch.Generator().manual_seed(seed)
    cols = (d * torch.rand(n, 12, generator=g) ** 2).long()
    x = torch.zeros(n, d).scatter_(1, cols, 1.0)
    w = torch.randn(d, classes, generator=torch.Generator().manual_seed(99))
    y = (x @ w).argmax(1).float()
    return x.to_sparse_csr(), y


def _fit_sparse(hp, x, y, batch=250):
    from onepass.algorithms._csr import row_slice
    state = ll.init(hp, x.shape[1], 0)
    for s in range(0, x.shape[0], batch):
        state = ll.update(state, Batch(row_slice(x, s, s + batch), y[s:s + batch]))
    return ll.end_epoch(state)[0]


@pytest.mark.parametrize("kind", ["binary_classifier", "multiclass_classifier"])
def test_the_sparse_kernel_trains_the_models_the_torch_path_trains(kind, monkeypatch):
    """The C kernel (one pass over a batch's entries) and the torch path (gathers, optimizer passes, scatters)
    give every model of a grid of all three optimizers with L1 and L2 the same weights and moments."""
    from onepass.algorithms import _fast_sparse
    if _fast_sparse._sparsestep is None:
        pytest.skip("onepass was installed without its C extensions")
    classes = 2 if kind == "binary_classifier" else 4
    x, y = _wide_sparse(3000, classes=classes)
    hp = {"predictor_type": kind, "num_models": 24, "num_point_for_scaler": 500, "holdout_fraction": 0.1,
          **({"num_classes": classes} if classes > 2 else {})}
    fast = _fit_sparse(hp, x, y)
    monkeypatch.setattr(_fast_sparse, "_sparsestep", None)
    slow = _fit_sparse(hp, x, y)
    assert {g["optimizer"] for g in fast.meta["grid"]} == {"adam", "sgd", "rmsprop"}
    assert len({(g["wd"], g["l1"]) for g in fast.meta["grid"]}) > 1
    # float32 rounding in another order, grown over 12 adam steps: weights agree to 1e-4 (a wrong formula moves
    # them by the learning rate, 0.01-0.09), the moments to their own scale
    for k, atol in (("weight", 1e-4), ("bias", 1e-5), ("m1", 1e-6), ("m2", 1e-8)):
        torch.testing.assert_close(fast.tensors[k], slow.tensors[k], rtol=1e-4, atol=atol, msg=k)
    assert ll.finalize(fast).meta["model_index"] == ll.finalize(slow).meta["model_index"]


def test_sparse_training_resumed_from_a_saved_state_equals_uninterrupted():
    """Through the C kernel and its huge-page copies of the weights: save, load, continue, bit for bit."""
    from onepass import testing as T

    def data(n, seed):
        x, y = _wide_sparse(n, d=3000, seed=seed)
        return np.column_stack([x.to_dense().numpy(), y.numpy()]).astype(np.float32)

    case = T.Case("linear_learner", {"predictor_type": "binary_classifier", "num_models": 8,
                                     "num_point_for_scaler": 300}, data, T.logistic_loss, merge_tolerance=0.15,
                  label_column="last", batch_size=100, sparse=True)
    T.check_resume_equals_uninterrupted(case, n=2000)
