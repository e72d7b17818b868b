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
hash-chosen `holdout_fraction` of the stream (never trained on), judge the models. Held-out records are kept in a
bounded, mergeable sample (`reservoir.py`, `validation_reservoir_mib`, stated by `inspect`) that every model scores
as it is at the end of each epoch and at `finalize`, so that a threshold chosen for a target holds on new records
(`selection.py` says why, with the measurement); a validation source is scored whole at each epoch end. Scores
are summarised per model: binned scores per class for binary classifiers, per-class hit counts for multiclass,
error sums for regression (see `score_summaries`). `finalize` picks the model and its decision threshold under any
`binary_classifier_model_selection_criteria` and target, again and again, without reading data; a binary model's
threshold falls between two of its sample's scores. With several epochs, each model's best epoch is kept and
training stops early when no model improves. A run continued on new data (`--init-from`, `continued`) judges its
models on the new data only: the earlier best epochs, sample and early-stopping counters are history.

merge averages the models' weights and optimizer moments, weighted by the records each side trained on (the
documented approximation of SGD merging; exact when one side is empty) and adds the validation summaries
exactly and the held-out samples as weighted samples (exact). Weights trained under another scaling are first
re-expressed in this state's scaling.

    >>> import torch, onepass
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4000, 3, generator=g); y = (x[:, 0] - x[:, 1] > 0).float()
    >>> state = onepass.linear_learner.init({"predictor_type": "binary_classifier", "learning_rate": 0.1,
    ...                                      "num_models": 4, "num_point_for_scaler": 500}, n_features=3)
    >>> for i in range(0, 4000, 200):
    ...     state = onepass.linear_learner.update(state, onepass.Batch(x[i:i + 200], y[i:i + 200]))
    >>> model = onepass.linear_learner.finalize(state)
    >>> model.meta["validation"]["binary_classification_accuracy"] > 0.85  # held-out records, the model as it is
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
from ..state import State
from . import _csr, _fast_sparse, reservoir, selection
from . import score_summaries as summaries
from .base import check_mergeable
from .grid import DEFAULT_LR, LR_STEPS, OPTIMIZERS, PENALTY_STEPS, model_grid  # noqa: F401 (public names)
from .grid import auto as _auto, groups as _groups
from .linear_model import LinearModel, evaluate, metrics, precision_recall, summary  # noqa: F401 (public names)
from .linear_options import (CHOICES, DEFAULT_RESERVOIR_MIB, HYPERPARAMETERS, RESERVOIR_ROWS,  # noqa: F401
                             kind as _kind, resolved_loss)
from .losses import grad_only, loss_only

NAME = "linear_learner"
# train's half_life: SGD forgets through its learning rate, which the scheduler lowers x 0.99 every 100 updates down
# to lr_scheduler_minimum_lr (1e-5): a stream trained for long learns ever more slowly
FORGETTING = ("SGD forgets at its learning rate: give --use-lr-scheduler false to keep the rate at --learning-rate "
              "(the default schedule lowers it x 0.99 every 100 updates, down to --lr-scheduler-minimum-lr)")
VERSION = 1
ACCEPTS_SPARSE = True
SUPERVISED = True  # the trainer reads a label column (SageMaker's default: the first)
AVERAGED = ("weight", "bias")  # --sync-every K on several processes: averaged as raw-feature models (see below)
STRUCTURAL = ("predictor_type", "num_classes", "num_models", "loss", "feature_dim", "optimizer", "learning_rate",
              "wd", "l1", "use_bias", "positive_example_weight_mult", "momentum", "beta_1", "beta_2")
EPS = 1e-8


# ------------------------------------------------------------------------------------------------------ state

def init(hyperparameters: dict[str, Any], n_features: int, seed: int = 0,
         device: str | torch.device = "cpu") -> State:
    """M models of `n_features` features, initialized from `seed`; the scaling sample still to collect."""
    hp = HYPERPARAMETERS.parse(hyperparameters)
    selection.check_feature_dim(hp, n_features)
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
            "summary_restart_at": hp["num_point_for_scaler"],
            "reservoir": reservoir.new_meta(hp["validation_reservoir_mib"], RESERVOIR_ROWS), "reservoir_open": True}
    if kind != "regression":  # training labels per class: a label column of one class is refused (end_epoch)
        tensors["label_counts"] = torch.zeros(max(C, 2), dtype=torch.float64, device=device)
    return State(NAME, hp, tensors, meta)


def _upgraded(state: State) -> State:
    """A state written before the held-out sample existed goes on as it was trained: progressive summaries."""
    if "reservoir" not in state.meta:
        state.hyperparameters.setdefault("validation_reservoir_mib", 0.0)
        state.meta.update(reservoir=reservoir.new_meta(0.0, RESERVOIR_ROWS), reservoir_open=False)
    return state


def update(state: State, batch: Batch) -> State:
    """One mini-batch: held for the scaling sample while it fills, else scored (validation) and trained on."""
    _upgraded(state)
    x, y, w = _checked(state, batch)
    n = x.shape[0]
    if n == 0:
        return state
    first = state.meta["epoch_records"]
    index = torch.arange(first, first + n, dtype=torch.int64)
    state.meta["epoch_records"] = first + n
    state.meta["records_seen"] += n
    if "label_counts" in state.tensors:
        state.tensors["label_counts"].index_add_(0, y.long(), torch.ones_like(y, dtype=torch.float64))
        if "label_source" not in state.meta and batch.position:
            state.meta["label_source"] = batch.position.get("path")
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
        raise DataError(f"label {round(float(y[r]), 6)!r} of record {where} (of the stream) is not {need} "
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

def _sampling(state: State) -> bool:
    """Whether held-out records go to the reservoir (else to progressive summaries): records are held out, and
    the sample has a budget."""
    hp = state.hyperparameters
    return hp["validation_reservoir_mib"] > 0 and hp["holdout_fraction"] > 0 and \
        not state.meta.get("external_validation")


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
    held_host = selection.records_held_out(state, index)  # on the host, from the positions: reads no GPU
    held = held_host.to(x.device)
    xs = _scale(state, x)
    s = _raw_scores(state, xs)
    _validate(state, x, s, y, w, index, held_host)
    train = ~held
    n_train = len(held_host) - int(held_host.sum())
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


def _validate(state: State, x: torch.Tensor, s: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
              index: torch.Tensor, held: torch.Tensor) -> None:
    """Held-out records go to the sample (the first epoch offers them; later epochs repeat them), or, without a
    sample, their scores s by the models as they are go to the progressive summaries (without held-out records:
    the training records' scores, before their update). `held` is on the host (see `_step`)."""
    if _sampling(state):
        if state.meta["reservoir_open"] and bool(held.any()):
            rows = held.nonzero().squeeze(1).to(x.device)
            wh = w[rows]
            key = selection.sample_keys(index[held], state.meta["seed"]).to(wh.device)
            reservoir.add(state.tensors, state.meta["reservoir"], "reservoir_", reservoir.take_rows(x, rows),
                          y[rows], wh, reservoir.priorities(key, wh))
        return
    progressive = state.hyperparameters["holdout_fraction"] <= 0 and not state.meta.get("external_validation")
    validating = torch.ones_like(held) if progressive and not bool(held.any()) else held
    if bool(validating.any()):
        selection.rotate_summaries(state, int(index[0]))
        rows = validating.nonzero().squeeze(1).to(s.device)  # indices found on the host: no mask on a GPU
        _summarize(state, "current_", s[rows], y[rows], w[rows])


def _summarize(state: State, prefix: str, s: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
    """Add scored records (raw scores s, labels y in their own units) to the summaries named `prefix`."""
    _summarize_into(state, selection.prefixed(state, prefix), s, y, w)


def _summarize_into(state: State, part: dict[str, torch.Tensor], s: torch.Tensor, y: torch.Tensor,
                    w: torch.Tensor) -> None:
    hp, t = state.hyperparameters, state.tensors
    kind = _kind(hp)
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
            cols, inverse = _csr.present_columns(xs.col_indices(), xs.shape[1])
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
    """Close an epoch: finish scaling if the stream was shorter than the sample, score every model as it now is on
    the validation source or the held-out sample (or take the epoch's progressive summaries), keep each model's
    best epoch, and say whether to stop early."""
    hp, t, meta = _upgraded(state).hyperparameters, state.tensors, state.meta
    if not meta["scaled"]:
        _fix_scaling(state)
    _check_classes(state)
    kind, M, C = _kind(hp), len(meta["grid"]), meta["classes"]
    if validation is not None:
        meta["external_validation"] = True  # as the trainer marks it: this source judges, not the held-out sample
        val = summaries.empty(kind, M, C, t["weight"].device)
        for k, v in val.items():
            t[f"validation_{k}"] = v
        for batch in validation:
            x, y, w = _checked(state, batch)
            if x.shape[0]:
                _summarize(state, "validation_", _raw_scores(state, _scale(state, x)), y, w)
    elif _sampling(state):
        meta["reservoir_open"] = False  # the next epochs hold out the same records: the sample is complete
        for k, v in _sample_summary(state, t["weight"], t["bias"]).items():
            t["validation_" + k] = v
    else:
        for k, v in selection.epoch_summary(state).items():
            t["validation_" + k] = v
    for k in [k for k in t if k.startswith("previous_")]:
        del t[k]
    for k in [k for k in t if k.startswith("current_")]:
        t[k].zero_()
    meta["summary_restart_at"] = hp["num_point_for_scaler"]
    meta["epochs_done"] += 1
    meta["epoch_records"] = 0
    summary = selection.prefixed(state, "validation_")
    values = selection.values(summary, _criterion(state, summary), _targets(hp, {}))
    if hp["epochs"] > 1:  # keep each model's best epoch: its weights and the summaries that chose it
        selection.keep_best(t, values, ("weight", "bias"))
    selection.early_stopping(meta, values, hp["early_stopping_patience"], hp["early_stopping_tolerance"])
    return state, meta["stopped"]


def continued(state: State) -> State:
    """A state continued on new data (`--init-from`): its models go on learning from where they are, but the
    earlier run's best epochs, validation figures, held-out sample and early-stopping counters are history, not
    competitors: the new run judges its models on the new data only, and its early stopping starts afresh."""
    t, meta = _upgraded(state).tensors, state.meta
    for k in [k for k in t if k.startswith(("best_", "validation_", "previous_", "reservoir_"))]:
        del t[k]
    for k in [k for k in t if k.startswith("current_")]:
        t[k].zero_()
    if "label_counts" in t:
        t["label_counts"].zero_()
    meta.update(best_value=None, bad_epochs=0, stopped=False, epoch_records=0, reservoir_open=True,
                summary_restart_at=state.hyperparameters["num_point_for_scaler"],
                reservoir=reservoir.new_meta(state.hyperparameters["validation_reservoir_mib"], RESERVOIR_ROWS))
    meta.pop("label_source", None)
    return state


def _check_classes(state: State) -> None:
    """Refuse a classifier whose training labels, a whole pass of them, hold one class only: the label column is
    most likely another column (SageMaker's default is the first)."""
    counts = state.tensors.get("label_counts")
    if counts is None or int((counts > 0).sum()) != 1:
        return
    from ..errors import DataError

    only, n = int(counts.argmax()), int(counts.sum())
    raise DataError(f"every label of the {n:,} records of this pass is {only}: a "
                    f"{state.hyperparameters['predictor_type']} needs at least two classes; is the label in another "
                    "column? (--label-column; SageMaker's default is the first)",
                    source=state.meta.get("label_source"), reason="one class")


def _criterion(state: State, summary: dict[str, torch.Tensor], choice: dict[str, Any] | None = None) -> str:
    return selection.criterion({**state.hyperparameters, **(choice or {})}, _judged_on(state, summary))


def _judged_on(state: State, summary: dict[str, torch.Tensor]) -> float:
    """How many records judge the models: the sample's rows (each may stand for several records), else the
    summary's weight."""
    if _sampling(state) and state.meta["reservoir"]["rows"]:
        return float(reservoir.rows(state.tensors, state.meta["reservoir"], "reservoir_"))
    return float(summary["weight"].max()) if summary["weight"].numel() else 0.0


def _targets(hp: dict[str, Any], given: dict[str, Any]) -> dict[str, float]:
    return selection.targets(hp, given)


def _sample_scores(state: State, W: torch.Tensor, bias: torch.Tensor, cols: slice | None = None
                   ) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The held-out sample scored by the models W, bias (columns `cols` of them): raw scores, labels, weights."""
    if cols is not None:
        W, bias = W[:, cols], bias[cols]
    for x, y, w in reservoir.chunks(state.tensors, state.meta["reservoir"], "reservoir_", state.meta["n_features"]):
        s = _scale(state, x) @ W + bias
        C = state.meta["classes"]
        yield (s.view(s.shape[0], -1, C) if C > 1 else s), y, w


def _sample_summary(state: State, W: torch.Tensor, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every model's summary of the held-out sample, scored by the models W, bias as they are."""
    hp = state.hyperparameters
    part = summaries.empty(_kind(hp), len(state.meta["grid"]), state.meta["classes"], W.device)
    for s, y, w in _sample_scores(state, W, bias):
        _summarize_into(state, part, s, y, w)
    return part


def _choice_summary(st: State) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The weights finalize chooses among (each model's best epoch, or the current ones) and their summary."""
    t = st.tensors
    W, bias = (t["best_weight"], t["best_bias"]) if "best_weight" in t else (t["weight"], t["bias"])
    if _sampling(st) and st.meta["reservoir"]["rows"]:
        return W, bias, _sample_summary(st, W, bias)
    if "best_weight" in t:
        return W, bias, selection.prefixed(st, "best_validation_")
    return W, bias, selection.prefixed(st, "validation_") if "validation_weight" in t else selection.epoch_summary(st)


# ----------------------------------------------------------------------------------------------------- merge

def merge(a: State, b: State) -> State:
    """Weights averaged by records trained (b re-expressed in a's scaling); validation summaries added."""
    check_mergeable(_upgraded(a), _upgraded(b), STRUCTURAL + ("seed",))
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
    for k in [k for k in t if k.startswith("reservoir_")]:
        del t[k]
    sample, out.meta["reservoir"] = reservoir.merge(a.tensors, a.meta["reservoir"], b.tensors, b.meta["reservoir"],
                                                    "reservoir_")
    t.update(sample)
    out.meta["reservoir_open"] = a.meta["reservoir_open"] and b.meta["reservoir_open"]
    if "label_counts" in t:
        t["label_counts"] = a.tensors["label_counts"] + b.tensors["label_counts"]
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

Model = LinearModel


def finalize(state: State, **choice: Any) -> LinearModel:
    """The best model of the grid under the criterion, and its threshold, chosen on the held-out sample scored by
    the models as they are now (or on the validation summaries); the state is unchanged. Another criterion or
    target gives another model and threshold at once."""
    hp = _upgraded(state).hyperparameters
    given = {k: v for k, v in choice.items() if v is not None}
    selection.check_binary_choice(hp, given)
    base = {k: hp.get(k, v) for k, v in CHOICES.defaults().items()}
    c = CHOICES.parse(given, base=base)
    c["binary_classifier_model_selection_criteria"] = selection.LEGACY.get(
        c["binary_classifier_model_selection_criteria"], c["binary_classifier_model_selection_criteria"])
    if state.meta["records_seen"] == 0:
        raise UsageError("the state has seen no records: nothing to finalize")
    st = _ready(state)
    W, bias, summary = _choice_summary(st)
    records = _judged_on(st, summary)
    criterion = _criterion(st, summary, c)
    M, C = len(st.meta["grid"]), st.meta["classes"]
    targets = _targets(hp, {k: c[k] for k in ("f_beta", "target_precision", "target_recall")})
    if c["model"] is not None:
        if c["model"] >= M:
            raise UsageError(f"model = {c['model']}: the grid has models 0 to {M - 1}")
        m = c["model"]
    else:  # no validation records, or no model meets the target: model 0, the given settings
        m = selection.best_model(selection.values(summary, criterion, targets))
    cols = slice(m * C, (m + 1) * C)
    threshold, edge, hist = summaries.bin_edge(selection.default_edge()), selection.default_edge(), None
    if hp["predictor_type"] == "binary_classifier" and float(summary["weight"][m]) > 0:
        if _sampling(st) and st.meta["reservoir"]["rows"]:  # the chosen model's own scores: a threshold between two
            parts = list(_sample_scores(st, W, bias, cols))
            s, y, w = (torch.cat([p[i].reshape(-1) for p in parts]) for i in range(3))
            threshold, hist, edge = selection.exact_threshold(s, y, w, criterion, targets)
        elif criterion != "loss_function":
            edges, _ = summaries.choose_threshold(summary["hist"][m:m + 1], criterion,
                                                  default_edge=selection.default_edge(), **targets)
            edge = int(edges[0])
            threshold = summaries.bin_edge(edge)
    W_raw, bias_raw = _raw_parameters(st, W[:, cols], bias[cols])
    loss = resolved_loss(hp)
    validation = selection.model_metrics(_kind(hp), summary, m, edge, targets["beta"], hist)
    warning = selection.noisy_choice_warning(records) if records > 0 and c["model"] is None else None
    meta = {"predictor_type": hp["predictor_type"], "loss": loss, "n_features": st.meta["n_features"],
            "classes": C, "threshold": threshold, "model_index": m, "models": M, "settings": st.meta["grid"][m],
            "criterion": criterion, "choice": c, "records": st.meta["records_seen"], "validation": validation,
            "loss_options": _loss_options(hp), "accuracy_top_k": hp["accuracy_top_k"],
            "validated_on": _validated_on(st), "validation_records": records,
            "warnings": [warning] if warning else []}
    if hp["predictor_type"] == "binary_classifier" and loss == "logistic":
        meta["threshold_probability"] = 1 / (1 + math.exp(-max(min(threshold, 700.0), -700.0)))
    tensors = {"weight": W_raw.contiguous(), "bias": bias_raw.contiguous()}
    if hp["predictor_type"] == "binary_classifier":  # the chosen model's validation scores: its PR curve
        tensors["validation_hist"] = summary["hist"][m].clone()
    return LinearModel(tensors, meta)


def _validated_on(state: State) -> str:
    if state.meta.get("external_validation"):
        return "validation source"
    if _sampling(state) and state.meta["reservoir"]["rows"]:
        rows = reservoir.rows(state.tensors, state.meta["reservoir"], "reservoir_")
        return f"{rows:,} held-out records scored by the finished models"
    if state.hyperparameters["holdout_fraction"] > 0:
        return "held-out records (progressive)"
    return "training records (progressive)"


def epoch_metrics(state: State) -> dict[str, Any]:
    """What a `validation` event reports at an epoch's end: the figures of this epoch's models (the best of them
    under the criterion), and apart from them the best so far, the model finalize would give now."""
    hp = state.hyperparameters
    summary = selection.prefixed(state, "validation_")
    crit = _criterion(state, summary)
    target = _targets(hp, {})
    m = selection.best_model(selection.values(summary, crit, target))
    edge = selection.default_edge()
    if hp["predictor_type"] == "binary_classifier" and crit != "loss_function":
        edge = int(summaries.choose_threshold(summary["hist"][m:m + 1], crit, default_edge=edge, **target)[0][0])
    best = finalize(state)
    out: dict[str, Any] = {**selection.model_metrics(_kind(hp), summary, m, edge, target["beta"]),
                           "model_index": m, "best_so_far": {**best.meta["validation"],
                                                             "model_index": best.meta["model_index"]}}
    if best.meta["warnings"]:
        out["warnings"] = best.meta["warnings"]
    return out


def describe(state: State) -> dict[str, Any]:
    """The grid, each model's validation metrics under the state's criterion, and the held-out sample's budget."""
    hp, meta = _upgraded(state).hyperparameters, state.meta
    summary = _choice_summary(state)[2] if meta["scaled"] else None
    models = []
    for m, g in enumerate(meta["grid"]):
        entry = dict(g)
        entry["validation"] = selection.model_metrics(_kind(hp), summary, m, selection.default_edge(), hp["f_beta"]) \
            if summary is not None else {}
        models.append(entry)
    out = {"records_seen": meta["records_seen"], "records_trained": meta["records_trained"],
           "epochs_done": meta["epochs_done"], "predictor_type": hp["predictor_type"], "loss": resolved_loss(hp),
           "scaling_fixed": meta["scaled"], "stopped_early": meta["stopped"], "models": models}
    if _sampling(state):
        out["validation_reservoir"] = reservoir.describe(state.tensors, meta["reservoir"], "reservoir_")
    return out
