"""Linear learner: a grid of linear models trained at once in one pass, chosen and thresholded at finalize.

M models (`num_models`) share one stream. Their weights are the columns of one matrix W (d x M C, C = classes or
1), so a mini-batch costs one product X W for the scores and one X^T G for the gradients of every model: a batched
tensor computation, not a loop over models. Each model has its own learning rate, L2 (`wd`), L1 and optimizer
(sgd with momentum, adam, rmsprop): the grid is centred on the given settings, the first model is exactly them.

Scaling.  The first `num_point_for_scaler` records are held in the state; their mean and deviation fix the
feature scaling (and, for regression, the label's), then they are trained on and dropped. Dense features are
centred and scaled; sparse features are left as they are by default (`normalize_data true` scales them, never
centres them), so sparse batches stay sparse, and only the weights of the features present in a batch are
updated, lazily, as Vowpal Wabbit does. On the CPU that sparse update is one C pass over the batch's entries
(`_sparsestep.c`: each present column's rows of the weights and moments read and written once, in place).

Validation.  Records of a separate validation source (the trainer's `--validation`), or else a deterministic,
hash-chosen `holdout_fraction` of the stream (never trained on), are summarised per model: binned scores per class
for binary classifiers, per-class hit counts for multiclass, error sums for regression (see `score_summaries`).
These bounded summaries are the rich state: `finalize` picks the model and its decision threshold under any
`binary_classifier_model_selection_criteria` and target, again and again, without data. With several epochs,
each model's best epoch is kept and training stops early when no model improves.

merge averages the models' weights and optimizer moments, weighted by the records each side trained on (the
documented approximation of SGD merging; exact when one side is empty) and adds the validation summaries
exactly. Weights trained under another scaling are first re-expressed in this state's scaling.

    >>> import torch, onepass
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4000, 3, generator=g); y = (x[:, 0] - x[:, 1] > 0).float()
    >>> state = onepass.linear_learner.init({"predictor_type": "binary_classifier", "learning_rate": 0.1,
    ...                                      "num_models": 4, "num_point_for_scaler": 500}, n_features=3)
    >>> for i in range(0, 4000, 200):
    ...     state = onepass.linear_learner.update(state, onepass.Batch(x[i:i + 200], y[i:i + 200]))
    >>> model = onepass.linear_learner.finalize(state)
    >>> model.meta["validation"]["binary_classification_accuracy"] > 0.85  # held-out records, scored as they came
    True
    >>> model.predict(torch.tensor([[2.0, -2.0, 0.0]]))["predicted_label"].tolist()
    [1.0]
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch

from ..data.batches import Batch
from ..errors import DataError, UsageError
from ..hyperparameters import HP, HyperParameters
from ..state import State
from . import _fast_sparse
from . import score_summaries as summaries
from .base import Model, check_mergeable
from .losses import BINARY, LOSSES, MULTICLASS, REGRESSION, grad_only, loss_only

NAME = "linear_learner"
VERSION = 1
ACCEPTS_SPARSE = True
SUPERVISED = True  # the trainer reads a label column (SageMaker's default: the first)
AVERAGED = ("weight", "bias")  # --sync-every K on several processes: averaged as raw-feature models (see below)
STRUCTURAL = ("predictor_type", "num_classes", "num_models", "loss", "feature_dim", "optimizer", "learning_rate",
              "wd", "l1", "use_bias", "positive_example_weight_mult", "momentum", "beta_1", "beta_2")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
# Centres of the grid's learning-rate axis. Measured on adult, KDD04, california_housing and LetterRecognition
# (benchmarks/run_linear.py): 0.03 for every optimizer beat adam 0.01 / sgd 0.1 on all four test sets (sgd at 0.1
# let california's rare extreme records swing the weights: test RMSE 5.5 instead of 0.74).
DEFAULT_LR = {"adam": 0.03, "sgd": 0.03, "rmsprop": 0.03}
LR_STEPS = (1.0, 1 / 3, 3.0, 0.1, 10.0)                    # the grid's learning rates, nearest first
PENALTY_STEPS = (0.0, 1e-6, 1e-4, 1e-2)                    # the grid's wd and l1 when not given
EPS = 1e-8


def _positive_weight(value: Any) -> Any:
    s = str(value).strip().lower()
    if s in ("auto", "balanced"):
        return s
    try:
        v = float(s)
    except ValueError:
        raise UsageError(f"hyperparameter positive_example_weight_mult = {value!r} is invalid: expected a number "
                         "> 0, balanced or auto") from None
    if not v > 0:
        raise UsageError(f"hyperparameter positive_example_weight_mult = {value!r} is out of range: expected > 0")
    return v


def _check(hp: dict[str, Any]) -> None:
    kind = hp["predictor_type"]
    if kind is None:
        raise UsageError("hyperparameter predictor_type is required: binary_classifier, multiclass_classifier or "
                         "regressor")
    if kind == "multiclass_classifier" and (hp["num_classes"] is None or hp["num_classes"] < 3):
        raise UsageError("hyperparameter num_classes is required for multiclass_classifier: an integer >= 3")
    loss = resolved_loss(hp)
    allowed = {"binary_classifier": BINARY, "multiclass_classifier": MULTICLASS, "regressor": REGRESSION}[kind]
    if loss not in allowed:
        raise UsageError(f"hyperparameter loss = {loss!r} does not fit predictor_type = {kind}; valid: "
                         + ", ".join(allowed))
    hp["positive_example_weight_mult"] = _positive_weight(hp["positive_example_weight_mult"])
    legacy = {"f1": "f_beta", "cross_entropy_loss": "loss_function"}
    hp["binary_classifier_model_selection_criteria"] = legacy.get(
        hp["binary_classifier_model_selection_criteria"], hp["binary_classifier_model_selection_criteria"])


HYPERPARAMETERS = HyperParameters([
    HP("predictor_type", "str", None, "binary_classifier, multiclass_classifier or regressor",
       choices=("binary_classifier", "multiclass_classifier", "regressor")),
    HP("num_classes", "int", None, "classes of a multiclass_classifier (labels 0 .. num_classes-1)", low=3,
       high=1_000_000),
    HP("feature_dim", "int", None, "number of features (required for LibSVM input); checked against the data",
       low=1),
    HP("num_models", "int", "auto", "models trained at once, on a grid around the given settings (auto: 32)",
       low=1, high=1024, auto=True),
    HP("loss", "str", "auto", "auto: logistic (binary), softmax_loss (multiclass), squared_loss (regressor)",
       choices=LOSSES, auto=True),
    HP("binary_classifier_model_selection_criteria", "str", "accuracy", "how finalize chooses the model and "
       "threshold (finalize can choose again)", choices=summaries.CRITERIA + ("f1", "cross_entropy_loss")),
    HP("target_precision", "float", 0.8, "for recall_at_target_precision", low=0, high=1),
    HP("target_recall", "float", 0.8, "for precision_at_target_recall", low=0, high=1),
    HP("f_beta", "float", 1.0, "beta of the F-score (f_beta criterion and binary_f_beta metric)", low=0),
    HP("positive_example_weight_mult", "str", 1.0, "weight of positive examples: a number, balanced (negatives "
       "/ positives in the scaling sample) or auto (half the grid 1, half balanced)"),
    HP("balance_multiclass_weights", "bool", False, "weigh every class equally (from the scaling sample)"),
    HP("accuracy_top_k", "int", 3, "k of multiclass_top_k_accuracy", low=1),
    HP("epochs", "int", 15, "most passes over the data (early stopping may end sooner)", low=1),
    HP("mini_batch_size", "int", 1000, "records per mini-batch", low=1),
    HP("optimizer", "str", "auto", "adam, sgd (with momentum) or rmsprop; auto: adam, and the grid tries all",
       choices=OPTIMIZERS, auto=True),
    HP("learning_rate", "float", "auto", "step size (auto: 0.03); the grid also tries 1/10 to 10 times it", low=0,
       auto=True),
    HP("momentum", "float", "auto", "sgd momentum (auto: 0.9)", low=0, high=0.999999, auto=True),
    HP("beta_1", "float", "auto", "adam's first-moment decay (auto: 0.9)", low=0, high=0.999999, auto=True),
    HP("beta_2", "float", "auto", "adam's and rmsprop's second-moment decay (auto: 0.999)", low=0,
       high=0.999999, auto=True),
    HP("wd", "float", "auto", "L2 regularization (auto: the grid tries 0 to 1e-2)", low=0, auto=True),
    HP("l1", "float", "auto", "L1 regularization (auto: the grid tries 0 to 1e-2)", low=0, auto=True),
    HP("use_bias", "bool", True, "learn an intercept"),
    HP("bias_lr_mult", "float", "auto", "bias learning rate = learning_rate x this (auto: 10)", low=0, auto=True),
    HP("bias_wd_mult", "float", "auto", "bias L2 = wd x this (auto: 0, no bias regularization)", low=0, auto=True),
    HP("init_method", "str", "uniform", "initial weights: uniform in [-init_scale, init_scale] or normal with "
       "deviation init_sigma", choices=("uniform", "normal")),
    HP("init_scale", "float", 0.07, "uniform initialization bound", low=0),
    HP("init_sigma", "float", 0.01, "normal initialization deviation", low=0),
    HP("init_bias", "float", 0.0, "initial bias"),
    HP("use_lr_scheduler", "bool", True, "decay the learning rate stepwise"),
    HP("lr_scheduler_step", "int", "auto", "updates between decays (auto: 100)", low=1, auto=True),
    HP("lr_scheduler_factor", "float", "auto", "decay factor (auto: 0.99)", low=0, high=1, auto=True),
    HP("lr_scheduler_minimum_lr", "float", "auto", "the decay's floor (auto: 1e-5)", low=0, auto=True),
    HP("normalize_data", "bool", "auto", "scale features to unit deviation, dense ones also to zero mean (auto: "
       "dense data only; scaling sparse indicator features by a sample's deviation hurt: AUC 0.526 against 0.551 "
       "unscaled on the benchmark's sparse stream)", auto=True),
    HP("normalize_label", "bool", "auto", "regressor: scale the label (auto: true for regressors)", auto=True),
    HP("unbias_data", "bool", "auto", "centre dense features (auto: true for dense data)", auto=True),
    HP("unbias_label", "bool", "auto", "centre the label (auto: with normalize_label)", auto=True),
    HP("num_point_for_scaler", "int", 10000, "records that fix the scaling statistics", low=1),
    HP("num_calibration_samples", "int", "auto", "accepted for SageMaker compatibility: every validation record "
       "is summarised in bounded memory, so there is no sample to size", low=1, auto=True),
    HP("margin", "float", 1.0, "hinge_loss margin", low=0),
    HP("quantile", "float", 0.5, "quantile_loss's quantile", low=0, high=1),
    HP("loss_insensitivity", "float", 0.01, "epsilon of the eps-insensitive losses", low=0),
    HP("huber_delta", "float", 1.0, "huber_loss: squared inside, linear outside delta", low=0),
    HP("early_stopping_patience", "int", 3, "epochs without improvement before stopping", low=1),
    HP("early_stopping_tolerance", "float", 0.001, "relative improvement that counts as none", low=0),
    HP("holdout_fraction", "float", 0.1, "without a validation source: the share of records held out (chosen by "
       "a hash of their position; 0: validate progressively on the training records)", low=0, high=0.9),
], check=_check)

CHOICES = HyperParameters([
    HP("binary_classifier_model_selection_criteria", "str", "accuracy", "the criterion",
       choices=summaries.CRITERIA + ("f1", "cross_entropy_loss")),
    HP("target_precision", "float", 0.8, "for recall_at_target_precision", low=0, high=1),
    HP("target_recall", "float", 0.8, "for precision_at_target_recall", low=0, high=1),
    HP("f_beta", "float", 1.0, "beta of the F-score", low=0),
    HP("model", "int", None, "take this model of the grid (0-based) instead of the best", low=0),
])


def resolved_loss(hp: dict[str, Any]) -> str:
    if hp["loss"] != "auto":
        return hp["loss"]
    return {"binary_classifier": "logistic", "multiclass_classifier": "softmax_loss",
            "regressor": "squared_loss"}[hp["predictor_type"]]


def _kind(hp: dict[str, Any]) -> str:
    return {"binary_classifier": "binary", "multiclass_classifier": "multiclass",
            "regressor": "regression"}[hp["predictor_type"]]


def _auto(value: Any, default: Any) -> Any:
    return default if value == "auto" else value


# ------------------------------------------------------------------------------------------------------- grid

def model_grid(hp: dict[str, Any]) -> list[dict[str, Any]]:
    """The models: every combination of the axes, nearest to the given settings first; model 0 is exactly them.

    Axes: optimizer (the given one, then the others unless given), learning rate (x 1, 1/3, 3, 1/10, 10), wd and
    l1 (the given value x 1, 1/10, 10, 1/100, or 0, 1e-6, 1e-4, 1e-2 when auto), and for auto positive weights,
    1 or balanced. Models are then grouped by optimizer so that each optimizer updates one block of columns.
    """
    size = _auto(hp["num_models"], 32)
    opt0 = _auto(hp["optimizer"], "adam")
    optimizers = [opt0] + [o for o in OPTIMIZERS if o != opt0]

    def penalties(given: Any) -> list[float]:
        return list(PENALTY_STEPS) if given == "auto" else [given * m for m in (1.0, 0.1, 10.0, 0.01)] \
            if given > 0 else [0.0, 1e-6, 1e-4, 1e-2]

    pos = hp["positive_example_weight_mult"]
    weights: list[Any] = [1.0, "balanced"] if pos == "auto" and hp["predictor_type"] == "binary_classifier" \
        else [pos if pos != "auto" else 1.0]
    axes = [optimizers, LR_STEPS, penalties(hp["wd"]), penalties(hp["l1"]), weights]
    combos = [(i, j, k, m, p) for i in range(len(axes[0])) for j in range(len(axes[1]))
              for k in range(len(axes[2])) for m in range(len(axes[3])) for p in range(len(axes[4]))]
    combos.sort(key=lambda c: (sum(c), c))
    chosen = combos[:size]
    chosen.sort(key=lambda c: (c[0], sum(c), c))  # grouped by optimizer; the given settings stay first
    grid = []
    for i, j, k, m, p in chosen:
        opt = optimizers[i]
        base_lr = _auto(hp["learning_rate"], DEFAULT_LR[opt])
        grid.append({"optimizer": opt, "learning_rate": base_lr * LR_STEPS[j], "wd": axes[2][k], "l1": axes[3][m],
                     "positive_example_weight_mult": weights[p]})
    return grid


def _groups(grid: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each optimizer's contiguous block of models [first, last + 1)."""
    out: dict[str, list[int]] = {}
    for m, g in enumerate(grid):
        out.setdefault(g["optimizer"], [m, m])[1] = m + 1
    return out


# ------------------------------------------------------------------------------------------------------ state

def init(hyperparameters: dict[str, Any], n_features: int, seed: int = 0,
         device: str | torch.device = "cpu") -> State:
    """M models of `n_features` features, initialized from `seed`; the scaling sample still to collect."""
    hp = HYPERPARAMETERS.parse(hyperparameters)
    if hp["feature_dim"] is not None and hp["feature_dim"] != n_features:
        raise UsageError(f"hyperparameter feature_dim = {hp['feature_dim']} but the data has {n_features} features")
    grid = model_grid(hp)
    M, C = len(grid), hp["num_classes"] if hp["predictor_type"] == "multiclass_classifier" else 1
    gen = torch.Generator().manual_seed(seed)
    if hp["init_method"] == "uniform":
        W = (torch.rand(n_features, M * C, generator=gen) * 2 - 1) * hp["init_scale"]
    else:
        W = torch.randn(n_features, M * C, generator=gen) * hp["init_sigma"]
    f32 = lambda v: torch.tensor(v, dtype=torch.float32, device=device)  # noqa: E731
    kind = _kind(hp)
    tensors = {
        "weight": W.to(device), "bias": torch.full((M * C,), hp["init_bias"] if hp["use_bias"] else 0.0,
                                                   device=device),
        "m1": torch.zeros(n_features, M * C, device=device), "m2": torch.zeros(n_features, M * C, device=device),
        "bias_m1": torch.zeros(M * C, device=device), "bias_m2": torch.zeros(M * C, device=device),
        "learning_rate": f32([g["learning_rate"] for g in grid]), "wd": f32([g["wd"] for g in grid]),
        "l1": f32([g["l1"] for g in grid]),
        "x_mean": torch.zeros(n_features, device=device), "x_scale": torch.ones(n_features, device=device),
        "y_shift": torch.zeros((), dtype=torch.float64, device=device),
        "y_scale": torch.ones((), dtype=torch.float64, device=device),
        "class_weight": torch.ones(C, device=device), "positive_weight": torch.ones(M, device=device),
    }
    for name, value in summaries.empty(kind, M, C, device).items():
        tensors[f"current_{name}"] = value
    meta = {"n_features": n_features, "records_seen": 0, "records_trained": 0, "seed": seed,
            "algorithm_version": VERSION, "grid": grid, "classes": C, "step": 0, "epoch_records": 0,
            "epochs_done": 0, "scaled": False, "buffered": 0, "best_value": None, "bad_epochs": 0,
            "stopped": False, "sparse": None,
            "summary_restart_at": hp["num_point_for_scaler"]}
    return State(NAME, hp, tensors, meta)


def update(state: State, batch: Batch) -> State:
    """One mini-batch: held for the scaling sample while it fills, else scored (validation) and trained on."""
    x, y, w = _checked(state, batch)
    n = x.shape[0]
    if n == 0:
        return state
    first = state.meta["epoch_records"]
    index = torch.arange(first, first + n, dtype=torch.int64)
    state.meta["epoch_records"] = first + n
    state.meta["records_seen"] += n
    if state.meta["sparse"] is None:
        state.meta["sparse"] = x.layout == torch.sparse_csr
    if state.meta["scaled"]:
        _step(state, x, y, w, index)
        return state
    _hold(state, x, y, w, index)
    if state.meta["buffered"] >= state.hyperparameters["num_point_for_scaler"]:
        _fix_scaling(state)
    return state


def _checked(state: State, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features, labels and weights on the state's device; labels checked against the predictor type."""
    dev = state.tensors["weight"].device
    x = batch.x.to(dev)
    if x.shape[1] != state.meta["n_features"]:
        raise UsageError(f"the state has {state.meta['n_features']} features, this batch {x.shape[1]}")
    if batch.y is None:
        raise UsageError("the linear learner needs labels: name the label column (--label-column, SageMaker's "
                         "default is first)")
    y = batch.y.to(dev, torch.float32)
    kind = _kind(state.hyperparameters)
    bad = None
    if kind == "binary":
        bad = (y != 0) & (y != 1)
        need = "0 or 1"
    elif kind == "multiclass":
        bad = (y != y.round()) | (y < 0) | (y >= state.meta["classes"])
        need = f"an integer 0 .. {state.meta['classes'] - 1}"
    if bad is not None and bool(bad.any()):
        r = int(bad.nonzero()[0, 0])
        pos = batch.position or {}
        where = pos.get("records", state.meta["epoch_records"] + len(y)) - len(y) + r + 1
        raise DataError(f"label {float(y[r])!r} of record {where} (of the stream) is not {need} "
                        f"({state.hyperparameters['predictor_type']})", source=pos.get("path"), reason="bad label")
    w = batch.w.to(dev, torch.float32) if batch.w is not None else torch.ones_like(y)
    return x, y, w


# --------------------------------------------------------------------------------------- the scaling sample

def _hold(state: State, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, index: torch.Tensor) -> None:
    """Append records to the scaling sample (dense rows, or CSR parts for sparse batches)."""
    t = state.tensors
    if x.layout == torch.sparse_csr:
        crow = x.crow_indices()
        start = int(t["held_crow"][-1]) if "held_crow" in t else 0
        parts = {"held_crow": crow[1:] + start if "held_crow" in t else crow,
                 "held_col": x.col_indices(), "held_val": x.values()}
    else:
        parts = {"held_x": x.float()}
    parts.update({"held_y": y, "held_w": w, "held_index": index})
    for k, v in parts.items():
        t[k] = torch.cat([t[k], v]) if k in t else v.clone()
    state.meta["buffered"] += x.shape[0]


def _held_batches(state: State, size: int) -> Iterable[tuple[torch.Tensor, ...]]:
    t, n = state.tensors, state.meta["buffered"]
    for s in range(0, n, size):
        e = min(n, s + size)
        if "held_x" in t:
            x = t["held_x"][s:e]
        else:
            crow = t["held_crow"]
            a, b = int(crow[s]), int(crow[e])
            x = torch.sparse_csr_tensor(crow[s:e + 1] - a, t["held_col"][a:b], t["held_val"][a:b],
                                        size=(e - s, state.meta["n_features"]), check_invariants=False)
        yield x, t["held_y"][s:e], t["held_w"][s:e], t["held_index"][s:e]


def _fix_scaling(state: State) -> None:
    """Scaling statistics and class weights from the held records; then train on them and drop them."""
    hp, t = state.hyperparameters, state.tensors
    carried = _raw_parameters(state, t["weight"], t["bias"]) if state.meta.get("shared_before_scaling") else None
    if state.meta["buffered"]:
        y, w = t["held_y"], t["held_w"]
        sparse = "held_x" not in t
        if _auto(hp["normalize_data"], not sparse):
            if sparse:
                n, d = state.meta["buffered"], state.meta["n_features"]
                col, val = t["held_col"], t["held_val"].double()
                s1 = torch.zeros(d, dtype=torch.float64, device=val.device).index_add_(0, col, val)
                s2 = torch.zeros(d, dtype=torch.float64, device=val.device).index_add_(0, col, val * val)
                var = (s2 / n - (s1 / n) ** 2).clamp(min=0)
                mean = torch.zeros(d, dtype=torch.float64, device=val.device)  # sparse data is never shifted
            else:
                xd = t["held_x"].double()
                mean, var = xd.mean(0), xd.var(0, unbiased=False)
                if not _auto(hp["unbias_data"], True):
                    mean = torch.zeros_like(mean)
            scale = var.sqrt()
            t["x_mean"] = mean.float()
            t["x_scale"] = torch.where(scale > 1e-12, scale, torch.ones_like(scale)).float()
        if hp["predictor_type"] == "regressor" and _auto(hp["normalize_label"], True):
            yd = y.double()
            if _auto(hp["unbias_label"], True):
                t["y_shift"] = yd.mean()
            sd = yd.std(unbiased=False) if len(yd) > 1 else torch.ones((), dtype=torch.float64)
            t["y_scale"] = sd if sd > 1e-12 else torch.ones((), dtype=torch.float64, device=yd.device)
        _class_weights(state, y, w)
    if carried is not None:  # models averaged in from other processes keep their raw-feature meaning
        t["weight"], t["bias"] = _from_raw(state, *carried)
    state.meta["scaled"] = True
    held = list(_held_batches(state, hp["mini_batch_size"])) if state.meta["buffered"] else []
    for k in [k for k in t if k.startswith("held_")]:
        del t[k]
    state.meta["buffered"] = 0
    for x, y, w, index in held:
        _step(state, x, y, w, index)


def _class_weights(state: State, y: torch.Tensor, w: torch.Tensor) -> None:
    hp, t = state.hyperparameters, state.tensors
    if hp["predictor_type"] == "binary_classifier":
        pos, neg = float(w[y > 0.5].sum()), float(w[y <= 0.5].sum())
        balanced = neg / pos if pos > 0 and neg > 0 else 1.0
        t["positive_weight"] = torch.tensor(
            [balanced if g["positive_example_weight_mult"] == "balanced" else float(g["positive_example_weight_mult"])
             for g in state.meta["grid"]], dtype=torch.float32, device=t["weight"].device)
    elif hp["predictor_type"] == "multiclass_classifier" and hp["balance_multiclass_weights"]:
        C = state.meta["classes"]
        counts = torch.zeros(C, dtype=torch.float64, device=y.device).index_add_(0, y.long(), w.double())
        seen = counts > 0
        weights = torch.where(seen, counts.sum() / (seen.sum() * counts.clamp(min=1e-12)), torch.ones_like(counts))
        t["class_weight"] = weights.float()


# ----------------------------------------------------------------------------------------------- training

def _held_out(state: State, index: torch.Tensor) -> torch.Tensor:
    """Whether each record (by its position in the epoch) is held out for validation: a fixed hash, so the same
    records are held out in every epoch and after a resume."""
    fraction = state.hyperparameters["holdout_fraction"]
    if fraction <= 0 or state.meta.get("external_validation"):
        return torch.zeros(len(index), dtype=torch.bool)
    return torch.from_numpy(_splitmix64(index.cpu().numpy(), state.meta["seed"]) < fraction)


def _splitmix64(index: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per index: SplitMix64 of (seed, index), a fixed, well-mixed hash."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _scale(state: State, x: torch.Tensor) -> torch.Tensor:
    """Features in the scaled space: (x - mean) / scale (dense) or x / scale, still sparse (CSR)."""
    t = state.tensors
    if x.layout == torch.sparse_csr:
        if _fast_sparse.all_ones(t["x_scale"]):  # sparse features unscaled (the default): no gather of 10^6 scales
            return x if x.values().dtype == torch.float32 else x.to(torch.float32)
        values = x.values().float() / t["x_scale"][x.col_indices()]
        return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, size=x.shape,
                                       check_invariants=False)
    return (x.float() - t["x_mean"]) / t["x_scale"]


def _raw_scores(state: State, xs: torch.Tensor, W: torch.Tensor | None = None,
                b: torch.Tensor | None = None) -> torch.Tensor:
    """Scores of scaled features for every model: (n, M) or (n, M, C)."""
    W = state.tensors["weight"] if W is None else W
    b = state.tensors["bias"] if b is None else b
    fast = _fast_sparse.scores(xs, W) if xs.layout == torch.sparse_csr else None
    s = (xs @ W if fast is None else fast) + b
    C = state.meta["classes"]
    return s.view(s.shape[0], -1, C) if C > 1 else s


def _labels_for_loss(state: State, y: torch.Tensor) -> torch.Tensor:
    """Regression labels in the scaled space the models learn."""
    if state.hyperparameters["predictor_type"] != "regressor":
        return y
    t = state.tensors
    return ((y.double() - t["y_shift"]) / t["y_scale"]).float()


def _loss_options(hp: dict[str, Any]) -> dict[str, float]:
    return {k: hp[k] for k in ("margin", "huber_delta", "quantile", "loss_insensitivity")}


def _step(state: State, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, index: torch.Tensor) -> None:
    """Score a batch with every model (validation records go to the summaries), then one update of every model
    on the training records."""
    hp, t = state.hyperparameters, state.tensors
    held = _held_out(state, index).to(x.device)
    xs = _scale(state, x)
    s = _raw_scores(state, xs)
    validating = held if bool(held.any()) or hp["holdout_fraction"] > 0 or state.meta.get("external_validation") \
        else torch.ones_like(held)  # no holdout: validate progressively on training records, before their update
    if bool(validating.any()):
        _rotate_summaries(state, int(index[0]))
        _summarize(state, "current_", s[validating], y[validating], w[validating])
    train = ~held
    n_train = int(train.sum())
    if n_train == 0:
        return
    grad = grad_only(resolved_loss(hp), s, _labels_for_loss(state, y), **_loss_options(hp))
    # per-record weights: record weight x class weight (x the model's positive weight), mean over the batch
    rw = w * train.float()
    if hp["predictor_type"] == "multiclass_classifier":
        rw = rw * t["class_weight"][y.long()]
    scale = rw[:, None] / n_train
    if hp["predictor_type"] == "binary_classifier":
        scale = scale * torch.where(y[:, None] > 0.5, t["positive_weight"][None, :], torch.ones_like(scale))
    if grad.dim() == 3:
        grad = grad * scale[..., None]
    else:
        grad = grad * scale
    G = grad.reshape(grad.shape[0], -1)                                   # (n, M C)
    _apply(state, xs, G)
    state.meta["records_trained"] += n_train


def _rotate_summaries(state: State, position: int) -> None:
    """Held-out records are scored by the models as they are then, so early records judge early models. When the
    epoch reaches the next doubling point, the summary so far becomes `previous_` and a new one starts: the two
    together always cover at least the latest half of the epoch's validation records."""
    t, meta = state.tensors, state.meta
    if position < meta["summary_restart_at"]:
        return
    while meta["summary_restart_at"] <= position:
        meta["summary_restart_at"] *= 2
    for k in [k for k in t if k.startswith("current_")]:
        t["previous_" + k[len("current_"):]] = t[k].clone()
        t[k].zero_()


def _epoch_summary(state: State) -> dict[str, torch.Tensor]:
    """This epoch's validation summary: the current part plus the previous one (see `_rotate_summaries`)."""
    t = state.tensors
    return {k[len("current_"):]: v + t["previous_" + k[len("current_"):]] if "previous_" + k[len("current_"):] in t
            else v.clone() for k, v in t.items() if k.startswith("current_")}


def _summarize(state: State, prefix: str, s: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
    """Add scored records (raw scores s, labels y in their own units) to the summaries named `prefix`."""
    hp, t = state.hyperparameters, state.tensors
    kind = _kind(hp)
    part = {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}
    if kind == "regression":  # errors and loss in the label's own units
        s, y = s.double() * t["y_scale"] + t["y_shift"], y.double()
    loss = loss_only(resolved_loss(hp), s, y, **_loss_options(hp))
    summaries.add(part, kind, s, y, w, loss, top_k=hp["accuracy_top_k"])


def _lr_factor(state: State) -> float:
    hp = state.hyperparameters
    if not hp["use_lr_scheduler"]:
        return 1.0
    return _auto(hp["lr_scheduler_factor"], 0.99) ** (state.meta["step"] // _auto(hp["lr_scheduler_step"], 100))


def _apply(state: State, xs: torch.Tensor, G: torch.Tensor) -> None:
    """One optimizer step of every model from the loss gradient G = dL/dscores (n, M C)."""
    hp, t, meta = state.hyperparameters, state.tensors, state.meta
    meta["step"] += 1
    C = meta["classes"]
    lr = (t["learning_rate"] * _lr_factor(state)).clamp(min=_auto(hp["lr_scheduler_minimum_lr"], 1e-5))
    lr_col = lr.repeat_interleave(C)
    wd_col, l1_col = t["wd"].repeat_interleave(C), t["l1"].repeat_interleave(C)
    # On the CPU a sparse batch takes the C kernel: each present column's rows read and written once, in place
    # (_fast_sparse; the same formulas as below, to float32 rounding).
    sparse = xs.layout == torch.sparse_csr
    if sparse:
        _fast_sparse.on_huge_pages(t, ("weight", "m1", "m2"))
    fast = sparse and _fast_sparse.step(
        xs, G, t["weight"], t["m1"], t["m2"], lr_col, wd_col, l1_col, _kinds(state), _auto(hp["momentum"], 0.9),
        _auto(hp["beta_1"], 0.9), _auto(hp["beta_2"], 0.999), meta["step"])
    cols = None
    if not fast:
        if sparse:  # lazy: only the rows of features present in the batch
            # index_select / index_copy_ rather than W[cols]: 3-4 x faster gathers and scatters of (d, M C) rows
            rows_of = torch.repeat_interleave(torch.arange(xs.shape[0], device=G.device), xs.crow_indices().diff())
            cols, inverse = _present_columns(xs.col_indices(), xs.shape[1])
            gW = torch.zeros(len(cols), G.shape[1], device=G.device).index_add_(
                0, inverse, G.index_select(0, rows_of).mul_(xs.values()[:, None]))
            W, m1, m2 = (t[k].index_select(0, cols) for k in ("weight", "m1", "m2"))
        else:
            gW = xs.T @ G
            W, m1, m2 = t["weight"], t["m1"], t["m2"]
        gW.addcmul_(W, wd_col).addcmul_(torch.sign(W), l1_col)  # + wd W + l1 sign(W)
        _optimize(state, W, gW, m1, m2, lr_col)
    if cols is not None:
        for k, v in (("weight", W), ("m1", m1), ("m2", m2)):
            t[k].index_copy_(0, cols, v)
    if hp["use_bias"]:
        bias_wd = _auto(hp["bias_wd_mult"], 0.0) * wd_col
        gb = G.sum(0) + bias_wd * t["bias"]
        _optimize(state, t["bias"], gb, t["bias_m1"], t["bias_m2"], lr_col * _auto(hp["bias_lr_mult"], 10.0))


def _kinds(state: State) -> np.ndarray:
    """Each column's optimizer as the C kernel numbers them (int8, one per column of W)."""
    C = state.meta["classes"]
    return np.repeat(np.array([_fast_sparse.KINDS[g["optimizer"]] for g in state.meta["grid"]], np.int8), C)


def _present_columns(col: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct columns of a batch, ascending, and each entry's place among them: torch.unique(col,
    return_inverse=True). While d is at most 32 x the entries a mask of the d columns is faster than unique's
    sort (1,838 columns, 27,000 entries: 0.15 against 1.2 ms); at 10^6 columns and 20,000 entries they are
    even, and beyond the mask's O(d) loses."""
    if d > 32 * len(col):
        return torch.unique(col, return_inverse=True)
    present = torch.zeros(d, dtype=torch.bool, device=col.device)
    present[col] = True
    cols = present.nonzero().squeeze(1)
    place = torch.empty(d, dtype=torch.long, device=col.device)
    place[cols] = torch.arange(len(cols), device=col.device)
    return cols, place[col]


def _optimize(state: State, p: torch.Tensor, g: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor,
              lr: torch.Tensor) -> None:
    """In place, per block of columns: each optimizer's own rule, with per-column learning rates."""
    hp = state.hyperparameters
    C, step = state.meta["classes"], state.meta["step"]
    momentum, b1, b2 = _auto(hp["momentum"], 0.9), _auto(hp["beta_1"], 0.9), _auto(hp["beta_2"], 0.999)
    for opt, (a, b) in _groups(state.meta["grid"]).items():
        cols = slice(a * C, b * C)
        P, Gr, M1, M2, LR = p[..., cols], g[..., cols], m1[..., cols], m2[..., cols], lr[cols]
        if opt == "sgd":      # v = mu v + g;  p -= lr v
            M1.mul_(momentum).add_(Gr)
            P.sub_(M1 * LR)
        elif opt == "adam":   # bias-corrected first and second moments
            M1.mul_(b1).add_(Gr, alpha=1 - b1)
            M2.mul_(b2).addcmul_(Gr, Gr, value=1 - b2)
            corr1, corr2 = 1 - b1 ** step, 1 - b2 ** step
            P.sub_((M1 / ((M2 / corr2).sqrt_().add_(EPS))).mul_(LR / corr1))  # lr m1^ / (sqrt(m2^) + eps)
        else:                 # rmsprop: p -= lr g / sqrt(E[g^2])
            M2.mul_(b2).addcmul_(Gr, Gr, value=1 - b2)
            P.sub_((Gr / ((M2 / (1 - b2 ** step)).sqrt_().add_(EPS))).mul_(LR))


# ------------------------------------------------------------------------------------------ epochs, validation

def end_epoch(state: State, validation: Iterable[Batch] | None = None) -> tuple[State, bool]:
    """Close an epoch: finish scaling if the stream was shorter than the sample, summarise the validation source
    (or take the epoch's held-out summaries), keep each model's best epoch, and say whether to stop early."""
    hp, t, meta = state.hyperparameters, state.tensors, state.meta
    if not meta["scaled"]:
        _fix_scaling(state)
    kind, M, C = _kind(hp), len(meta["grid"]), meta["classes"]
    if validation is not None:
        val = summaries.empty(kind, M, C, t["weight"].device)
        for k, v in val.items():
            t[f"validation_{k}"] = v
        for batch in validation:
            x, y, w = _checked(state, batch)
            if x.shape[0]:
                _summarize(state, "validation_", _raw_scores(state, _scale(state, x)), y, w)
    else:
        for k, v in _epoch_summary(state).items():
            t["validation_" + k] = v
    for k in [k for k in t if k.startswith("previous_")]:
        del t[k]
    for k in [k for k in t if k.startswith("current_")]:
        t[k].zero_()
    meta["summary_restart_at"] = hp["num_point_for_scaler"]
    meta["epochs_done"] += 1
    meta["epoch_records"] = 0
    values = _selection_values(state, _summary(state, "validation_"), _criterion(hp))
    if hp["epochs"] > 1:  # keep each model's best epoch: its weights and the summaries that chose it
        if "best_value" not in t:
            t["best_value"] = torch.full((M,), -math.inf, dtype=torch.float64, device=values.device)
            t["best_weight"], t["best_bias"] = t["weight"].clone(), t["bias"].clone()
            for k in [k for k in t if k.startswith("validation_")]:
                t["best_" + k] = t[k].clone()
        better = values > t["best_value"]
        if bool(better.any()):
            t["best_value"] = torch.where(better, values, t["best_value"])
            cols = better.repeat_interleave(C)
            t["best_weight"][:, cols] = t["weight"][:, cols]
            t["best_bias"][cols] = t["bias"][cols]
            for k in [k for k in t if k.startswith("validation_")]:
                t["best_" + k][better] = t[k][better]
    best_now = float(values.max()) if values.numel() and bool(torch.isfinite(values).any()) else None
    previous = meta["best_value"]
    if best_now is not None and (previous is None or best_now > previous + hp["early_stopping_tolerance"]
                                 * abs(previous)):
        meta["best_value"], meta["bad_epochs"] = best_now, 0
    else:
        meta["bad_epochs"] += 1
    meta["stopped"] = meta["bad_epochs"] >= hp["early_stopping_patience"]
    return state, meta["stopped"]


def _criterion(hp: dict[str, Any]) -> str:
    return hp["binary_classifier_model_selection_criteria"] if hp["predictor_type"] == "binary_classifier" \
        else "loss_function"


def _default_edge() -> int:
    return summaries.BINS // 2  # raw score 0: probability 0.5 (logistic), the hinge's decision boundary


def _summary(state: State, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.tensors.items() if k.startswith(prefix)}


def _selection_values(state: State, summary: dict[str, torch.Tensor], criterion: str,
                      **targets: float) -> torch.Tensor:
    """Per model, the value (higher is better) it reaches under `criterion` on a validation summary."""
    weight = summary["weight"]
    if criterion != "loss_function":
        _, value = summaries.choose_threshold(summary["hist"], criterion, default_edge=_default_edge(),
                                              **_targets(state.hyperparameters, targets))
    else:
        value = -summary["loss"] / weight.clamp(min=1e-300)
    return torch.where(weight > 0, value, torch.full_like(value, math.nan))


def _targets(hp: dict[str, Any], given: dict[str, Any]) -> dict[str, float]:
    return {"beta": given.get("f_beta", hp["f_beta"]),
            "target_precision": given.get("target_precision", hp["target_precision"]),
            "target_recall": given.get("target_recall", hp["target_recall"])}


# ----------------------------------------------------------------------------------------------------- merge

def merge(a: State, b: State) -> State:
    """Weights averaged by records trained (b re-expressed in a's scaling); validation summaries added."""
    check_mergeable(a, b, STRUCTURAL + ("seed",))
    a, b = _ready(a), _ready(b.to(a.tensors["weight"].device))  # a state from another device joins a's
    out = a.copy()
    na, nb = a.meta["records_trained"], b.meta["records_trained"]
    fa = na / (na + nb) if na + nb else 0.5
    W_b, bias_b = _in_scaling_of(a, b, b.tensors["weight"], b.tensors["bias"])
    t = out.tensors
    t["weight"] = fa * a.tensors["weight"] + (1 - fa) * W_b
    t["bias"] = fa * a.tensors["bias"] + (1 - fa) * bias_b
    for k in ("m1", "m2", "bias_m1", "bias_m2"):
        t[k] = fa * a.tensors[k] + (1 - fa) * b.tensors[k]
    for k in [k for k in t if k.startswith(("current_", "previous_", "validation_"))]:
        if k in b.tensors:
            t[k] = a.tensors[k] + b.tensors[k]
    if "best_weight" in t:  # the merged weights are the best estimate now; best epochs restart from them
        for k in [k for k in t if k.startswith("best_")]:
            del t[k]
    for k in ("records_seen", "records_trained"):
        out.meta[k] = a.meta[k] + b.meta[k]
    out.meta["step"] = max(a.meta["step"], b.meta["step"])
    return out


def _ready(state: State) -> State:
    """A state whose scaling is fixed (a copy when the sample still had to be trained on)."""
    if state.meta["scaled"]:
        return state
    state = state.copy()
    _fix_scaling(state)
    return state


def _in_scaling_of(a: State, b: State, W: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """b's models as scores in a's scaled feature and label space (the same predictions in raw units)."""
    return _from_raw(a, *_raw_parameters(b, W, bias))


def _raw_parameters(state: State, W: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias on raw features and raw labels: score = x W_raw + bias_raw."""
    t = state.tensors
    ys, yb = t["y_scale"].float(), t["y_shift"].float()
    W_raw = W / t["x_scale"][:, None] * ys
    bias_raw = (bias - (t["x_mean"] / t["x_scale"]) @ W) * ys + yb
    return W_raw, bias_raw


def shared_parameters(state: State) -> dict[str, torch.Tensor]:
    """Every model's weights and bias on raw features and labels: what processes with their own scaling share
    (torch.distributed's model averaging, `--sync-every`)."""
    W_raw, bias_raw = _raw_parameters(state, state.tensors["weight"], state.tensors["bias"])
    return {"weight": W_raw, "bias": bias_raw}


def set_shared_parameters(state: State, shared: dict[str, torch.Tensor]) -> None:
    """Take averaged raw-feature models back into this state's scaling. Before the scaling is fixed they are kept
    under the identity scaling and carried over when it is fixed (`_fix_scaling`)."""
    W, bias = _from_raw(state, shared["weight"], shared["bias"])
    state.tensors["weight"].copy_(W)
    state.tensors["bias"].copy_(bias)
    if not state.meta["scaled"]:
        state.meta["shared_before_scaling"] = True


def _from_raw(state: State, W_raw: torch.Tensor, bias_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw-feature models as scores in this state's scaled feature and label space (`_raw_parameters` inverted)."""
    t = state.tensors
    ys, yb = t["y_scale"].float(), t["y_shift"].float()
    W = W_raw * t["x_scale"][:, None] / ys
    bias = (bias_raw - yb) / ys + (t["x_mean"] / t["x_scale"]) @ W
    return W, bias


# -------------------------------------------------------------------------------------------------- finalize

class LinearModel(Model):
    """One linear model on raw features: scores x W + b, SageMaker's `score` and `predicted_label`."""

    algorithm = NAME
    json_key = "predictions"

    @property
    def weight(self) -> torch.Tensor:
        return self.tensors["weight"]

    @property
    def bias(self) -> torch.Tensor:
        return self.tensors["bias"]

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores (n,) or (n, C); x dense or sparse CSR."""
        W = self.weight.to(x.device)
        s = x.to(W.dtype) @ W + self.bias.to(x.device)
        return s[:, 0] if s.shape[1] == 1 else s

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.decision_function(x)
        kind, loss = self.meta["predictor_type"], self.meta["loss"]
        if kind == "regressor":
            return {"score": s}
        if kind == "multiclass_classifier":
            return {"score": torch.softmax(s, -1), "predicted_label": s.argmax(-1).to(torch.float32)}
        label = (s >= self.meta["threshold"]).to(torch.float32)
        return {"score": torch.sigmoid(s) if loss == "logistic" else s, "predicted_label": label}


Model = LinearModel


def finalize(state: State, **choice: Any) -> LinearModel:
    """The best model of the grid under the criterion (and its threshold), from the validation summaries; the
    state is unchanged. Another criterion or target gives another model and threshold at once."""
    hp = state.hyperparameters
    base = {k: hp.get(k, v) for k, v in CHOICES.defaults().items()}
    c = CHOICES.parse({k: v for k, v in choice.items() if v is not None}, base=base)
    c["binary_classifier_model_selection_criteria"] = {"f1": "f_beta", "cross_entropy_loss": "loss_function"}.get(
        c["binary_classifier_model_selection_criteria"], c["binary_classifier_model_selection_criteria"])
    if state.meta["records_seen"] == 0:
        raise UsageError("the state has seen no records: nothing to finalize")
    st = _ready(state)
    t = st.tensors
    if "best_weight" in t:
        W, bias, summary = t["best_weight"], t["best_bias"], _summary(st, "best_validation_")
    else:  # before any epoch ended: this epoch's summary so far
        W, bias = t["weight"], t["bias"]
        summary = _summary(st, "validation_") if "validation_weight" in t else _epoch_summary(st)
    criterion = _criterion({**hp, **c})
    M, C = len(st.meta["grid"]), st.meta["classes"]
    targets = {k: c[k] for k in ("f_beta", "target_precision", "target_recall")}
    values = _selection_values(st, summary, criterion, **targets)
    if c["model"] is not None:
        if c["model"] >= M:
            raise UsageError(f"model = {c['model']}: the grid has models 0 to {M - 1}")
        m = c["model"]
    elif bool(torch.isfinite(values).any()):
        m = int(torch.where(torch.isfinite(values), values, torch.full_like(values, -math.inf)).argmax())
    else:
        m = 0  # no validation records, or no model meets the target: the given settings
    edge = _default_edge()
    if hp["predictor_type"] == "binary_classifier" and criterion != "loss_function" and \
            float(summary["weight"][m]) > 0:
        edges, _ = summaries.choose_threshold(summary["hist"][m:m + 1], criterion, default_edge=edge,
                                              **_targets(hp, targets))
        edge = int(edges[0])
    cols = slice(m * C, (m + 1) * C)
    W_raw, bias_raw = _raw_parameters(st, W[:, cols], bias[cols])
    threshold = summaries.bin_edge(edge)
    loss = resolved_loss(hp)
    validation = _model_metrics(hp, summary, m, edge, targets["f_beta"])
    meta = {"predictor_type": hp["predictor_type"], "loss": loss, "n_features": st.meta["n_features"],
            "classes": C, "threshold": threshold, "model_index": m, "models": M, "settings": st.meta["grid"][m],
            "criterion": criterion, "choice": c, "records": st.meta["records_seen"], "validation": validation,
            "loss_options": _loss_options(hp), "accuracy_top_k": hp["accuracy_top_k"],
            "validated_on": ("validation source" if st.meta.get("external_validation") else
                             "held-out records" if hp["holdout_fraction"] > 0 else "training records (progressive)")}
    if hp["predictor_type"] == "binary_classifier" and loss == "logistic":
        meta["threshold_probability"] = 1 / (1 + math.exp(-threshold))
    tensors = {"weight": W_raw.contiguous(), "bias": bias_raw.contiguous()}
    if hp["predictor_type"] == "binary_classifier":  # the chosen model's validation scores: its PR curve
        tensors["validation_hist"] = summary["hist"][m].clone()
    return LinearModel(tensors, meta)


def _model_metrics(hp: dict[str, Any], summary: dict[str, torch.Tensor], m: int, edge: int,
                   beta: float) -> dict[str, float]:
    """SageMaker's metrics of model m from a summary (validation or test)."""
    weight = float(summary["weight"][m])
    if weight <= 0:
        return {}
    out = {"objective_loss": float(summary["loss"][m]) / weight}
    kind = _kind(hp)
    if kind == "binary":
        out.update(summaries.binary_at(summary["hist"][m], edge, beta))
        out["roc_auc_score"] = float(summaries.roc_auc(summary["hist"][m]))
    elif kind == "multiclass":
        out.update(summaries.multiclass_metrics(summary["class_counts"][m], summary["hits"][m], weight, beta))
    else:
        out.update(summaries.regression_metrics(summary["errors"][m], weight))
    return out


def evaluate(model: LinearModel, batch: Batch) -> dict[str, Any]:
    """Summary sums of one batch (the trainer adds them up over a test or validation source)."""
    meta = model.meta
    kind = {"binary_classifier": "binary", "multiclass_classifier": "multiclass", "regressor": "regression"}[
        meta["predictor_type"]]
    if batch.y is None:
        raise UsageError("evaluating a linear learner needs labels: name the label column (--label-column)")
    x = batch.x.to(model.weight.device)
    y = batch.y.to(x.device, torch.float32)
    w = batch.w.to(x.device, torch.float32) if batch.w is not None else torch.ones_like(y)
    s = model.decision_function(x)[:, None]
    part = summaries.empty(kind, 1, meta["classes"], x.device)
    loss = loss_only(meta["loss"], s, y, **meta["loss_options"])
    summaries.add(part, kind, s, y, w, loss, top_k=meta["accuracy_top_k"])
    return part


def metrics(model: LinearModel, sums: dict[str, Any]) -> dict[str, float]:
    """SageMaker's metric names from summed `evaluate` results."""
    edge = int(round((model.meta["threshold"] + summaries.SCORE_RANGE) * summaries.BINS
                     / (2 * summaries.SCORE_RANGE)))
    hp = {"predictor_type": model.meta["predictor_type"]}
    return _model_metrics(hp, sums, 0, edge, model.meta.get("choice", {}).get("f_beta", 1.0))


def describe(state: State) -> dict[str, Any]:
    """The grid, and each model's validation metrics under the state's criterion."""
    hp, t, meta = state.hyperparameters, state.tensors, state.meta
    prefix = "best_validation_" if "best_validation_weight" in t else "validation_"
    summary = _summary(state, prefix) if prefix + "weight" in t else _epoch_summary(state)
    models = []
    for m, g in enumerate(meta["grid"]):
        entry = dict(g)
        entry["validation"] = _model_metrics(hp, summary, m, _default_edge(), hp["f_beta"]) \
            if meta["scaled"] else {}
        models.append(entry)
    return {"records_seen": meta["records_seen"], "records_trained": meta["records_trained"],
            "epochs_done": meta["epochs_done"], "predictor_type": hp["predictor_type"], "loss": resolved_loss(hp),
            "scaling_fixed": meta["scaled"], "stopped_early": meta["stopped"], "models": models}


def summary(model: LinearModel) -> list[str]:
    m = model.meta
    g = m["settings"]
    lines = [f"model: {m['predictor_type']} ({m['loss']}), model {m['model_index']} of {m['models']} "
             f"({g['optimizer']}, learning_rate {g['learning_rate']:.3g}, wd {g['wd']:.3g}, l1 {g['l1']:.3g}), "
             f"chosen by {m['criterion']} on {m['validated_on']}"]
    if m["predictor_type"] == "binary_classifier":
        t = m.get("threshold_probability", m["threshold"])
        lines.append(f"  threshold: {t:.4g}" + (" (probability)" if "threshold_probability" in m else " (score)"))
    if m["validation"]:
        lines.append("  validation: " + ", ".join(f"{k} {v:.4g}" for k, v in m["validation"].items()))
    return lines


def precision_recall(model: LinearModel) -> tuple[list[float], list[float]]:
    """The chosen binary model's precision-recall curve on its validation records (recall, precision)."""
    hist = model.tensors["validation_hist"].double()
    tp, fp, fn, _ = summaries._curves(hist)
    keep = (tp + fp) > 0
    precision, recall = tp[keep] / (tp + fp)[keep], tp[keep] / (tp + fn)[keep].clamp(min=1e-300)
    return recall.tolist(), precision.tolist()
