"""Factorization machines: a grid of second-order FMs trained at once by sparse AdaGrad, chosen at finalize.

Model (Rendle 2010).  For a record x in R^d, with global bias w0, linear weights w in R^d and factors V in R^(d x k)
(`num_factors` = k),

    s(x) = w0 + sum_j w_j x_j + sum_{i<j} <v_i, v_j> x_i x_j
         = w0 + x.w + 1/2 sum_f [ (sum_j v_jf x_j)^2 - sum_j v_jf^2 x_j^2 ]          (Rendle's identity)

so a record costs O(k nnz(x)), not O(k d^2). Binary classifiers take p = sigmoid(s) and log loss; regressors take
s (in label units) and squared loss.

Grid.  M models (`num_models`, auto 8) share the stream: their parameters are the columns of one tensor each
(w0: M, w: d x M, V: d x M k), so a mini-batch is one batched computation, not a loop over models. The grid
multiplies the learning rates (x 1, 1/3, 3), `factors_wd` (x 1, 10, 1/10) and the factors' initial scale
(x 1, 10, 1/10), nearest to the given settings first; model 0 is exactly them.

Update.  A batch touches only the rows of its features: the distinct columns J of the batch are gathered
(w_J, V_J), scored through a CSR of the batch over J, updated and scattered back; no d x k gradient is ever formed.
With g_r = dL/ds_r (times the record's weight, averaged over the batch's training records) and S_rf = sum_j v_jf x_rj:

    dw0 = sum_r g_r,   dw_j = sum_r g_r x_rj,   dv_jf = sum_r g_r x_rj (S_rf - v_jf x_rj)

then, as MXNet's optimizers that SageMaker's names come from, g <- clip(rescale_grad g, clip_gradient) + wd p, and
AdaGrad per coordinate: G += g^2, p -= lr g / (sqrt(G) + eps). Weight decay reaches only the rows a batch touches
(lazy regularization, as libFFM). Dense batches go through the same sparse path (their zeros dropped), so dense
and sparse input of the same data give the same model. Regression labels are learnt centred and scaled by the mean
and deviation of the first batch (kept in the state), so the bias need not travel to the label's mean.

Why AdaGrad, and the defaults.  SageMaker's defaults (plain step sizes bias 0.1, linear 0.001, factors 0.0001,
factors initialised with deviation 0.001) leave the factors where they started within one pass: dv is proportional
to v, so small factors get small steps. AdaGrad normalises each coordinate's steps, so factors leave a small
initialisation at once and rare features get large steps. Measured with one model, one pass of 40,000 records of
three one-hot fields of 30, 30 and 10 values with hidden pairwise effects (a hidden FM, k = 4), test AUC:
SageMaker's step sizes and initialisation 0.558; AdaGrad steps (linear and factors) 0.02: 0.905, 0.05: 0.969,
0.1: 0.982 (the default), 0.3: 0.984; regression RMSE (noise 0.5) 0.590, 0.535, 0.575 at 0.05, 0.1, 0.3. On
MovieLens 100k (u1, ids and side features, at most 10 epochs; benchmarks/run_fm.py) the default grid's test RMSE is
0.9426 (the linear learner's 0.9576; myFM's Gibbs sampler, rank 10, 200 sweeps, on the same features and split:
0.9005). One model at the given settings reaches 0.9602 and stops after 6 epochs: it fits the ids' noise within
three; with one model, factors_wd 1e-4 gives 0.9481, 1e-3 0.9462, all learning rates 0.03 with factors_wd 1e-4
0.9396 (14 epochs), mini-batches of 100 0.9625. A grid centred on factors_wd 1e-4 and linear_wd 1e-5 gave 0.9458:
it stopped after 7 epochs, since no model improved by `early_stopping_tolerance` in three while its slow models
still crept, so the defaults stay. The rest of the gap to myFM is what averaging over posterior samples buys.

Validation, selection.  As the linear learner (the grid's summaries and choice are `selection.py`'s): a
hash-chosen `holdout_fraction` of the records (or the trainer's validation source) is scored by every model into
bounded score summaries (`score_summaries`), so `finalize` chooses model and threshold under any
`binary_classifier_model_selection_criteria`, again and again, without data. With several epochs each model's best
epoch is kept and training stops early when no model improves.

Merge.  Weighted average by records trained, exact when one side is empty; validation summaries add exactly. An FM
is unchanged by V -> V R for any orthogonal R, so two states trained apart may hold the same interactions in
rotated factors, whose plain average would cancel; merge first rotates each of b's models onto a's (orthogonal
Procrustes: R = U W^T from the SVD of V_b^T V_a, O(d k^2)), then averages. Tolerance: on the shared property check
(`testing.CASES["factorization_machines"]`, halves of 40,000 records) the merged model's log-loss is within 15 % of
the model trained on the whole (measured +8.5 %: each half takes half the steps). Processes of one `--nproc` run
start from the same initialisation and average every K batches (`AVERAGED`), so their factors stay aligned.

    >>> import torch, onepass
    >>> g = torch.Generator().manual_seed(0)
    >>> x = (torch.rand(20000, 20, generator=g) < 0.2).float()
    >>> y = (x[:, 0] * x[:, 1] + x[:, 2] * x[:, 3] - x[:, 0] * x[:, 3] > 0).float()  # pairs, no single feature
    >>> state = onepass.factorization_machines.init({"predictor_type": "binary_classifier", "num_factors": 4},
    ...                                              n_features=20)
    >>> for i in range(0, 20000, 500):
    ...     state = onepass.factorization_machines.update(state, onepass.Batch(x[i:i + 500], y[i:i + 500]))
    >>> model = onepass.factorization_machines.finalize(state)
    >>> model.meta["validation"]["roc_auc_score"] > 0.95  # held-out records, scored as they came
    True
    >>> model.predict(torch.tensor([[1.0, 1.0] + [0.0] * 18]))["predicted_label"].tolist()
    [1.0]
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from ..data.batches import Batch
from ..errors import DataError, UsageError
from ..hyperparameters import HP, HyperParameters
from ..state import State
from . import score_summaries as summaries
from .base import check_mergeable
from .fm_model import NAME, FMModel, _kind, evaluate, metrics, named as _named, summary  # noqa: F401 (protocol)
from . import _csr, selection
from .losses import grad_only, loss_only

VERSION = 1
ACCEPTS_SPARSE = True
SUPERVISED = True
FORGETTING = ("AdaGrad's steps shrink as each coordinate's gradients add up, so a model trained for long follows a "
              "drift ever more slowly: start a new run (--init-from) to learn afresh")
AVERAGED = ("bias", "linear", "factors")  # --sync-every: averaged in label units (shared_parameters)
PARAMETERS = ("bias", "linear", "factors")
GROUPS = ("bias", "linear", "factors")
STRUCTURAL = ("predictor_type", "feature_dim", "num_factors", "num_models") + tuple(
    f"{g}_{p}" for g in GROUPS for p in ("lr", "wd", "init_method", "init_scale", "init_sigma", "init_value"))
LR_STEPS = (1.0, 1 / 3, 3.0)        # the grid's multipliers of all three learning rates
WD_STEPS = (1.0, 10.0, 0.1)         # of factors_wd
INIT_STEPS = (1.0, 10.0, 0.1)       # of the factors' initial scale
FIRST_ROTATION = 10_000             # validation summaries restart at 10^4, 2 10^4, ... records (linear.py)


def _check(hp: dict[str, Any]) -> None:
    if hp["predictor_type"] is None:
        raise UsageError("hyperparameter predictor_type is required: binary_classifier or regressor")
    for g in GROUPS:
        method, need = hp[f"{g}_init_method"], {"uniform": "init_scale", "normal": "init_sigma",
                                                "constant": "init_value"}
        if hp[f"{g}_{need[method]}"] is None:
            raise UsageError(f"hyperparameter {g}_init_method = {method} needs {g}_{need[method]}")


def _family(group: str, lr: float, wd: float, sigma: float) -> list[HP]:
    return [HP(f"{group}_lr", "float", lr, f"{group} AdaGrad learning rate", low=0),
            HP(f"{group}_wd", "float", wd, f"{group} L2 weight decay (on the rows a batch touches)", low=0),
            HP(f"{group}_init_method", "str", "normal", f"{group} initialisation", choices=("normal", "uniform",
                                                                                             "constant")),
            HP(f"{group}_init_sigma", "float", sigma, f"{group}: deviation of the normal initialisation", low=0),
            HP(f"{group}_init_scale", "float", None, f"{group}: bound of the uniform initialisation", low=0),
            HP(f"{group}_init_value", "float", None, f"{group}: value of the constant initialisation")]


HYPERPARAMETERS = HyperParameters([
    HP("predictor_type", "str", None, "binary_classifier or regressor", choices=("binary_classifier", "regressor")),
    HP("feature_dim", "int", None, "number of features (required for LibSVM input); checked against the data",
       low=1),
    HP("num_factors", "int", 16, "latent dimension k of the pairwise interactions (SageMaker requires it and "
       "suggests 64; 16 because the state holds d x models x k factors and their AdaGrad sums, 1 GB at 10^6 "
       "features and 8 models, and MovieLens u1 gained nothing from more: RMSE 0.941 at k = 4, 0.943-0.946 at 16)",
       low=1, high=1000),
    HP("num_models", "int", "auto", "models trained at once on a grid around the given settings (auto: 8)", low=1,
       high=27, auto=True),
    HP("epochs", "int", 1, "most passes over the data (early stopping may end sooner)", low=1),
    HP("mini_batch_size", "int", 1000, "records per mini-batch", low=1),
    *_family("bias", 0.1, 0.0, 0.01),
    *_family("linear", 0.1, 1e-6, 0.01),
    *_family("factors", 0.1, 1e-5, 0.01),
    HP("clip_gradient", "float", None, "clip each gradient coordinate to [-c, c] (none: no clipping)", low=0),
    HP("eps", "float", 1e-8, "AdaGrad's epsilon", low=0),
    HP("rescale_grad", "float", 1.0, "multiplies the gradient (already the batch's mean)", low=0),
    HP("binary_classifier_model_selection_criteria", "str", "accuracy", "how finalize chooses model and threshold "
       "(finalize can choose again)", choices=summaries.CRITERIA),
    HP("target_precision", "float", 0.8, "for recall_at_target_precision", low=0, high=1),
    HP("target_recall", "float", 0.8, "for precision_at_target_recall", low=0, high=1),
    HP("f_beta", "float", 1.0, "beta of the F-score (f_beta criterion and binary_f_beta metric)", low=0),
    HP("early_stopping_patience", "int", 3, "epochs without improvement before stopping", low=1),
    HP("early_stopping_tolerance", "float", 0.001, "relative improvement that counts as none", low=0),
    HP("holdout_fraction", "float", 0.1, "without a validation source: the share of records held out (chosen by "
       "a hash of their position; 0: validate progressively on the training records)", low=0, high=0.9),
], check=_check)

CHOICES = HyperParameters([
    HP("binary_classifier_model_selection_criteria", "str", "accuracy", "the criterion", choices=summaries.CRITERIA),
    HP("target_precision", "float", 0.8, "for recall_at_target_precision", low=0, high=1),
    HP("target_recall", "float", 0.8, "for precision_at_target_recall", low=0, high=1),
    HP("f_beta", "float", 1.0, "beta of the F-score", low=0),
    HP("model", "int", None, "take this model of the grid (0-based) instead of the best", low=0),
])


def _loss(hp: dict[str, Any]) -> str:
    return "logistic" if hp["predictor_type"] == "binary_classifier" else "squared_loss"


def model_grid(hp: dict[str, Any]) -> list[dict[str, float]]:
    """Every combination of the three axes, nearest to the given settings first (model 0 is exactly them)."""
    size = 8 if hp["num_models"] == "auto" else hp["num_models"]
    combos = sorted(((i, j, m) for i in range(3) for j in range(3) for m in range(3)), key=lambda c: (sum(c), c))
    return [{"lr_mult": LR_STEPS[i], "factors_lr": hp["factors_lr"] * LR_STEPS[i],
             "factors_wd": hp["factors_wd"] * WD_STEPS[j], "init_mult": INIT_STEPS[m]} for i, j, m in combos[:size]]


# ------------------------------------------------------------------------------------------------------ state

def init(hyperparameters: dict[str, Any], n_features: int, seed: int = 0,
         device: str | torch.device = "cpu") -> State:
    """M models of `n_features` features, initialised from `seed` (drawn on the CPU, so every device agrees)."""
    hp = HYPERPARAMETERS.parse(hyperparameters)
    selection.check_feature_dim(hp, n_features)
    grid = model_grid(hp)
    M, k = len(grid), hp["num_factors"]
    gen = torch.Generator().manual_seed(seed)
    mult = torch.tensor([g["init_mult"] for g in grid])
    tensors = {"bias": _initial(hp, "bias", (M,), gen), "linear": _initial(hp, "linear", (n_features, M), gen),
               "factors": (_initial(hp, "factors", (n_features, M, k), gen) * mult[:, None]).view(n_features, M * k)}
    for p in PARAMETERS:
        tensors[f"{p}_g2"] = torch.zeros_like(tensors[p])
    tensors["lr_mult"] = torch.tensor([g["lr_mult"] for g in grid])
    tensors["factors_wd"] = torch.tensor([g["factors_wd"] for g in grid])
    tensors["y_shift"] = torch.zeros((), dtype=torch.float64)
    tensors["y_scale"] = torch.ones((), dtype=torch.float64)
    tensors.update({f"current_{n}": v for n, v in summaries.empty(_kind(hp), M, 1).items()})
    meta = {"n_features": n_features, "records_seen": 0, "records_trained": 0, "seed": seed, "grid": grid,
            "algorithm_version": VERSION, "step": 0, "epoch_records": 0, "epochs_done": 0, "labels_scaled": False,
            "best_value": None, "bad_epochs": 0, "stopped": False, "summary_restart_at": FIRST_ROTATION}
    return State(NAME, hp, {n: v.to(device) for n, v in tensors.items()}, meta)


def _initial(hp: dict[str, Any], group: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    method = hp[f"{group}_init_method"]
    if method == "constant":
        return torch.full(shape, float(hp[f"{group}_init_value"]))
    if method == "uniform":
        return (torch.rand(shape, generator=gen) * 2 - 1) * hp[f"{group}_init_scale"]
    return torch.randn(shape, generator=gen) * hp[f"{group}_init_sigma"]


def update(state: State, batch: Batch) -> State:
    """One mini-batch: validation records scored into the summaries, the others trained on."""
    x, y, w = _checked(state, batch)
    n = x.shape[0]
    if n == 0:
        return state
    meta = state.meta
    first = meta["epoch_records"]
    index = torch.arange(first, first + n, dtype=torch.int64)
    meta["epoch_records"] = first + n
    meta["records_seen"] += n
    if not meta["labels_scaled"]:
        _scale_labels(state, y)
    _step(state, x, y, w, index)
    return state


def _checked(state: State, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features as CSR on the state's device (a dense batch's zeros dropped), labels and weights; bad ones named."""
    dev, d = state.tensors["linear"].device, state.meta["n_features"]
    pos = batch.position or {}
    record = lambda r: pos.get("records", state.meta["epoch_records"] + len(batch)) - len(batch) + r + 1  # noqa
    if batch.x.shape[1] != d:
        raise UsageError(f"the state has {d} features (feature_dim), this batch {batch.x.shape[1]}")
    x = batch.x.to(dev)
    x = x.float() if x.layout == torch.sparse_csr else x.float().to_sparse_csr()
    col = x.col_indices()
    if col.numel() and bool(((col >= d) | (col < 0)).any()):  # one read from a GPU, not two
        e = int(((col >= d) | (col < 0)).nonzero()[0, 0])
        r = int(torch.searchsorted(x.crow_indices(), torch.tensor(e, device=dev), right=True)) - 1
        raise DataError(f"record {record(r)} (of the stream) has feature index {int(col[e])}, past feature_dim = "
                        f"{d}", source=pos.get("path"), reason="index past feature_dim")
    if batch.y is None:
        raise UsageError("factorization machines need labels: name the label column (--label-column, SageMaker's "
                         "default is first)")
    y = batch.y.to(dev, torch.float32)
    bad = ~torch.isfinite(y)
    if state.hyperparameters["predictor_type"] == "binary_classifier":
        bad |= (y != 0) & (y != 1)
    if bool(bad.any()):
        r = int(bad.nonzero()[0, 0])
        raise DataError(f"label {float(y[r])!r} of record {record(r)} (of the stream) is not "
                        f"{'0 or 1' if _kind(state.hyperparameters) == 'binary' else 'a finite number'}",
                        source=pos.get("path"), reason="bad label")
    w = batch.w.to(dev, torch.float32) if batch.w is not None else torch.ones_like(y)
    return x, y, w


def _scale_labels(state: State, y: torch.Tensor) -> None:
    """Regressors learn (y - mean) / deviation of the first batch; binary classifiers' biases start from its
    log-odds. AdaGrad moves a bias about lr sqrt(steps) at most, so a click rate of 3 % (log-odds -3.5) would
    otherwise take some 1,200 batches at bias_lr 0.1 to reach."""
    state.meta["labels_scaled"] = True
    if state.hyperparameters["predictor_type"] != "regressor":
        p = float(y.double().mean().clamp(1e-3, 1 - 1e-3))
        state.tensors["bias"] += math.log(p / (1 - p))
        return
    yd = y.double()
    sd = float(yd.std(unbiased=False)) if len(yd) > 1 else 1.0
    state.tensors["y_shift"] = yd.mean()
    state.tensors["y_scale"] = torch.tensor(sd if sd > 1e-12 else 1.0, dtype=torch.float64, device=y.device)


# ----------------------------------------------------------------------------------------------- training

def _gathered(state: State, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None):
    """The batch over its distinct columns J: (J, each entry's row, the CSR over J, w_J, V_J)."""
    t = params or state.tensors
    crow, col = x.crow_indices(), x.col_indices()
    J, inverse = _csr.present_columns(col, x.shape[1])
    rows_of = torch.repeat_interleave(torch.arange(x.shape[0], device=col.device), crow.diff(),
                                      output_size=col.numel())  # known: no read of the sum from a GPU
    xj = torch.sparse_csr_tensor(crow, inverse, x.values(), size=(x.shape[0], len(J)), check_invariants=False)
    return J, rows_of, xj, t["linear"].index_select(0, J), t["factors"].index_select(0, J)


def _scores(bias: torch.Tensor, xj: torch.Tensor, wj: torch.Tensor, vj: torch.Tensor,
            k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (n, M) of every model by Rendle's identity, and S = x V (n, M k), which the gradient reuses."""
    S = xj @ vj
    x2 = torch.sparse_csr_tensor(xj.crow_indices(), xj.col_indices(), xj.values() ** 2, size=xj.shape,
                                 check_invariants=False)
    n = S.shape[0]
    pair = 0.5 * (S * S - x2 @ (vj * vj)).view(n, -1, k).sum(-1)
    return bias + xj @ wj + pair, S


def _forward(state: State, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> tuple:
    """(J, each entry's row, the CSR over J, w_J, V_J, scores (n, M), S (n, M k)): what scoring and the gradient
    share, computed once a batch."""
    J, rows_of, xj, wj, vj = _gathered(state, x, params)
    s, S = _scores((params or state.tensors)["bias"], xj, wj, vj, state.hyperparameters["num_factors"])
    return J, rows_of, xj, wj, vj, s, S


def scores(state: State, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Every model's scores (n, M) of a CSR batch, in the learnt (for regressors: scaled) label space."""
    return _forward(state, x, params)[5]


def gradients(state: State, x: torch.Tensor, G: torch.Tensor,
              forward: tuple | None = None) -> tuple[torch.Tensor, ...]:
    """Loss gradients (bias (M,), linear (|J|, M), factors (|J|, M k)) of the rows J a batch touches, from
    G = dL/ds (n, M), and J. (Checked against autograd in the tests.)"""
    J, rows_of, xj, wj, vj, _, S = forward or _forward(state, x)
    k = state.hyperparameters["num_factors"]
    # x^T as a CSR over J (entries sorted by column, stably): sums over a column's records become one sparse
    # product each, where per-entry (nnz, M k) products and index_add_ took 2-3 x longer (9,000 entries, M k = 128)
    col = xj.col_indices()
    order = torch.sort(col, stable=True).indices
    crow_t = torch.zeros(len(J) + 1, dtype=torch.int64, device=col.device)
    crow_t[1:] = torch.zeros(len(J), dtype=torch.int64, device=col.device).index_add_(
        0, col, torch.ones_like(col)).cumsum(0)  # bincount's length would be read from a GPU
    values = xj.values()[order]
    xt = torch.sparse_csr_tensor(crow_t, rows_of[order], values, size=(len(J), x.shape[0]), check_invariants=False)
    xt2 = torch.sparse_csr_tensor(crow_t, rows_of[order], values * values, size=xt.shape, check_invariants=False)
    n, M = G.shape
    g_linear = xt @ G                                                    # sum_r g_r x_rj
    # dv_jf = sum_r g_r x_rj S_rf - v_jf sum_r g_r x_rj^2
    g_factors = xt @ (G[:, :, None] * S.view(n, M, k)).view(n, M * k)
    g_factors -= vj * (xt2 @ G).repeat_interleave(k, dim=1)
    return G.sum(0), g_linear, g_factors, J


def _step(state: State, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, index: torch.Tensor) -> None:
    """Score the batch with every model (validation records go to the summaries), then one AdaGrad step of
    every model on its training records, touching only the rows of the batch's features."""
    hp, t = state.hyperparameters, state.tensors
    held_host = selection.records_held_out(state, index)  # on the host, from the positions: no read from a GPU
    held = held_host.to(x.device)
    forward = _forward(state, x)
    s = forward[5]
    validating = held_host if bool(held_host.any()) or hp["holdout_fraction"] > 0 or \
        state.meta.get("external_validation") else torch.ones_like(held_host)  # no holdout: validate progressively
    if bool(validating.any()):
        selection.rotate_summaries(state, int(index[0]))
        rows = validating.nonzero().squeeze(1).to(x.device)
        _summarize(state, "current_", s[rows], y[rows], w[rows])
    train = ~held
    n_train = len(held_host) - int(held_host.sum())
    if n_train == 0:
        return
    G = grad_only(_loss(hp), s, _learnt_labels(state, y)) * (w * train.float() / n_train)[:, None]
    g_bias, g_linear, g_factors, J = gradients(state, x, G, forward)
    state.meta["step"] += 1
    state.meta["records_trained"] += n_train
    k = hp["num_factors"]
    lr = t["lr_mult"]
    for name, g, rate, wd in (("bias", g_bias, hp["bias_lr"] * lr, hp["bias_wd"]),
                              ("linear", g_linear, hp["linear_lr"] * lr, hp["linear_wd"]),
                              ("factors", g_factors, (hp["factors_lr"] * lr).repeat_interleave(k),
                               t["factors_wd"].repeat_interleave(k))):
        rows = None if name == "bias" else J
        p = t[name] if rows is None else forward[3 if name == "linear" else 4]  # w_J, V_J: gathered copies
        g2 = t[name + "_g2"] if rows is None else t[name + "_g2"].index_select(0, rows)
        # in place on the fresh gradient, fused where torch can: a pass over (|J|, M k) per line, no temporaries
        if hp["rescale_grad"] != 1.0:
            g.mul_(hp["rescale_grad"])
        if hp["clip_gradient"] is not None:
            g.clamp_(-hp["clip_gradient"], hp["clip_gradient"])
        if isinstance(wd, torch.Tensor):
            g.addcmul_(p, wd)
        elif wd:
            g.add_(p, alpha=wd)
        g2.addcmul_(g, g)
        p.addcdiv_(g.mul_(rate), g2.sqrt().add_(hp["eps"]), value=-1.0)
        if rows is not None:
            t[name].index_copy_(0, rows, p)
            t[name + "_g2"].index_copy_(0, rows, g2)


def _learnt_labels(state: State, y: torch.Tensor) -> torch.Tensor:
    if state.hyperparameters["predictor_type"] != "regressor":
        return y
    t = state.tensors
    return ((y.double() - t["y_shift"]) / t["y_scale"]).float()


def _summarize(state: State, prefix: str, s: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
    """Add scored records (scores in the learnt space, labels in their own units) to the summaries `prefix`."""
    hp, t = state.hyperparameters, state.tensors
    part = {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}
    if hp["predictor_type"] == "regressor":
        s, y = s.double() * t["y_scale"] + t["y_shift"], y.double()
    summaries.add(part, _kind(hp), s, y, w, loss_only(_loss(hp), s, y))


# ------------------------------------------------------------------------------------------ epochs, validation

def end_epoch(state: State, validation: Iterable[Batch] | None = None) -> tuple[State, bool]:
    """Close an epoch: summarise the validation source (or take the epoch's held-out summaries), keep each
    model's best epoch, and say whether to stop early (no model improved for `early_stopping_patience`)."""
    hp, t, meta = state.hyperparameters, state.tensors, state.meta
    M = len(meta["grid"])
    if validation is not None:
        t.update({f"validation_{k}": v for k, v in summaries.empty(_kind(hp), M, 1, t["linear"].device).items()})
        for batch in validation:
            x, y, w = _checked(state, batch)
            if x.shape[0]:
                _summarize(state, "validation_", scores(state, x), y, w)
    else:
        t.update({f"validation_{k}": v for k, v in selection.epoch_summary(state).items()})
    for k in [k for k in t if k.startswith("previous_")]:
        del t[k]
    for k in [k for k in t if k.startswith("current_")]:
        t[k].zero_()
    meta.update(summary_restart_at=FIRST_ROTATION, epochs_done=meta["epochs_done"] + 1, epoch_records=0)
    values = _values(state, selection.prefixed(state, "validation_"), _criterion(hp))
    if hp["epochs"] > 1:  # keep each model's best epoch: its parameters and the summaries that chose it
        selection.keep_best(t, values, PARAMETERS)
    selection.early_stopping(meta, values, hp["early_stopping_patience"], hp["early_stopping_tolerance"])
    return state, meta["stopped"]


def continued(state: State) -> State:
    """A state continued on new data (`--init-from`): the earlier run's best epochs, validation summaries and
    early-stopping counters are history (the new run judges on new data), the AdaGrad sums restart (new data is
    learnt with a fresh run's step sizes), and the grid's second half (the models farthest from the given
    settings) restarts from a fresh initialisation while the first half goes on from where it was: validation on
    the new data then chooses between what was learnt and a clean start. Why: factors fitted to interactions that no
    longer hold are a worse start than small ones (a continued model must first unlearn them). Measured on the
    shared drift check (`testing.CASES`: 40,000 records of another hidden model, 4 models, 2 epochs), log-loss on
    the new data: 0.360 with every model continued, 0.204 with half restarted, 0.227 for a fresh run (the
    continuation's grid also holds models whose linear weights and bias still fit)."""
    t, hp, meta = state.tensors, state.hyperparameters, state.meta
    for p in PARAMETERS:
        t[p + "_g2"].zero_()
    for k in [k for k in t if k.startswith(("best_", "validation_", "previous_"))]:
        del t[k]
    for k in [k for k in t if k.startswith("current_")]:
        t[k].zero_()
    M, d, k = len(meta["grid"]), meta["n_features"], hp["num_factors"]
    restart = list(range(M - M // 2, M))
    if restart:  # drawn as init draws, from another seed (the restarted models are not the old run's start)
        gen = torch.Generator().manual_seed(meta["seed"] + 1 + meta.get("continuations", 0))
        mult = torch.tensor([meta["grid"][m]["init_mult"] for m in restart])
        dev = t["linear"].device
        t["linear"][:, restart] = _initial(hp, "linear", (d, len(restart)), gen).to(dev)
        t["factors"].view(d, M, k)[:, restart] = (_initial(hp, "factors", (d, len(restart), k), gen)
                                                  * mult[:, None]).to(dev)
    state.meta.update(best_value=None, bad_epochs=0, stopped=False, epoch_records=0,
                      summary_restart_at=FIRST_ROTATION, continuations=meta.get("continuations", 0) + 1)
    return state


def _criterion(hp: dict[str, Any]) -> str:
    return hp["binary_classifier_model_selection_criteria"] if hp["predictor_type"] == "binary_classifier" \
        else "loss_function"


# ----------------------------------------------------------------------------------------------------- merge

def merge(a: State, b: State) -> State:
    """Parameters averaged by records trained (b's factors first rotated onto a's, b re-expressed in a's label
    scaling); AdaGrad sums averaged alike; validation summaries added."""
    check_mergeable(a, b, STRUCTURAL)
    b = b.to(a.tensors["linear"].device)
    if b.meta["labels_scaled"] and not a.meta["labels_scaled"]:  # a saw no record: b's label scaling holds
        a, b = b, a
    out = a.copy()
    na, nb = a.meta["records_trained"], b.meta["records_trained"]
    fa = na / (na + nb) if na + nb else 0.5
    raw_b = _in_label_units(b)
    mine = _from_label_units(a, {**raw_b, "factors": _rotated_onto(a, raw_b["factors"])})
    t = out.tensors
    for p in PARAMETERS:
        t[p] = fa * a.tensors[p] + (1 - fa) * mine[p]
        t[p + "_g2"] = fa * a.tensors[p + "_g2"] + (1 - fa) * b.tensors[p + "_g2"]
    for k in [k for k in t if k.startswith(("current_", "previous_", "validation_"))]:
        if k in b.tensors:
            t[k] = a.tensors[k] + b.tensors[k]
    for k in [k for k in t if k.startswith("best_")]:  # the merged parameters are the best estimate now
        del t[k]
    for k in ("records_seen", "records_trained"):
        out.meta[k] = a.meta[k] + b.meta[k]
    out.meta["step"] = max(a.meta["step"], b.meta["step"])
    return out


def _rotated_onto(a: State, factors_b: torch.Tensor) -> torch.Tensor:
    """Each of b's models' factors turned by the orthogonal R minimising ||V_a - V_b R|| (same predictions)."""
    d, k = a.meta["n_features"], a.hyperparameters["num_factors"]
    va = a.tensors["factors"].double().view(d, -1, k).transpose(0, 1)     # (M, d, k)
    vb = factors_b.double().view(d, -1, k).transpose(0, 1)
    U, _, Vh = torch.linalg.svd(vb.transpose(1, 2) @ va)
    return (vb @ (U @ Vh)).transpose(0, 1).reshape(d, -1).to(factors_b.dtype)


def _in_label_units(state: State, params: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Parameters predicting the label in its own units: s_raw = y_scale s + y_shift."""
    t = params or state.tensors
    ys, yb = state.tensors["y_scale"].float(), state.tensors["y_shift"].float()
    return {"bias": t["bias"] * ys + yb, "linear": t["linear"] * ys, "factors": t["factors"] * ys.sqrt()}


def _from_label_units(state: State, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ys, yb = state.tensors["y_scale"].float(), state.tensors["y_shift"].float()
    return {"bias": (raw["bias"] - yb) / ys, "linear": raw["linear"] / ys, "factors": raw["factors"] / ys.sqrt()}


def shared_parameters(state: State) -> dict[str, torch.Tensor]:
    """Every model's parameters in label units: what processes with their own label scaling share (--sync-every)."""
    return _in_label_units(state)


def set_shared_parameters(state: State, shared: dict[str, torch.Tensor]) -> None:
    for name, value in _from_label_units(state, shared).items():
        state.tensors[name].copy_(value)


# -------------------------------------------------------------------------------------------------- finalize

Model = FMModel  # the protocol's name for the model class


def finalize(state: State, **choice: Any) -> FMModel:
    """The best model of the grid under the criterion (and its threshold), from the validation summaries; the
    state is unchanged."""
    hp, t, meta = state.hyperparameters, state.tensors, state.meta
    c = CHOICES.parse({k: v for k, v in choice.items() if v is not None},
                      base={k: hp.get(k, v) for k, v in CHOICES.defaults().items()})
    if meta["records_seen"] == 0:
        raise UsageError("the state has seen no records: nothing to finalize")
    best = "best_bias" in t
    params = {p: t[("best_" if best else "") + p] for p in PARAMETERS}
    summary = selection.prefixed(state, "best_validation_") if best else selection.prefixed(state, "validation_") \
        if "validation_weight" in t else selection.epoch_summary(state)
    criterion = _criterion({**hp, **c})
    targets = {k: c[k] for k in ("f_beta", "target_precision", "target_recall")}
    values = _values(state, summary, criterion, **targets)
    M, k = len(meta["grid"]), hp["num_factors"]
    if c["model"] is not None:
        if c["model"] >= M:
            raise UsageError(f"model = {c['model']}: the grid has models 0 to {M - 1}")
        m = c["model"]
    elif bool(torch.isfinite(values).any()):
        m = int(torch.where(torch.isfinite(values), values, torch.full_like(values, -math.inf)).argmax())
    else:
        m = 0  # no validation records, or no model meets the target: the given settings
    edge = summaries.BINS // 2  # raw score 0: probability 0.5
    if criterion != "loss_function" and float(summary["weight"][m]) > 0:
        edges, _ = summaries.choose_threshold(summary["hist"][m:m + 1], criterion, default_edge=edge,
                                              beta=c["f_beta"], target_precision=c["target_precision"],
                                              target_recall=c["target_recall"])
        edge = int(edges[0])
    raw = _in_label_units(state, params)
    tensors = {"bias": raw["bias"][m].clone(), "linear": raw["linear"][:, m].contiguous(),
               "factors": raw["factors"].view(meta["n_features"], M, k)[:, m].contiguous()}
    threshold = summaries.bin_edge(edge)
    out = {"predictor_type": hp["predictor_type"], "loss": _loss(hp), "n_features": meta["n_features"],
           "num_factors": k, "classes": 1, "threshold": threshold, "model_index": m, "models": M,
           "settings": meta["grid"][m], "criterion": criterion, "choice": c, "records": meta["records_seen"],
           "validation": _metrics_of(hp, summary, m, edge, c["f_beta"]),
           "validated_on": ("validation source" if meta.get("external_validation") else "held-out records"
                            if hp["holdout_fraction"] > 0 else "training records (progressive)")}
    if hp["predictor_type"] == "binary_classifier":
        out["threshold_probability"] = 1 / (1 + math.exp(-threshold))
    return FMModel(tensors, out)


def _values(state: State, summary: dict[str, torch.Tensor], criterion: str, **targets: float) -> torch.Tensor:
    """Per model, the value (higher is better) it reaches under `criterion` on a summary (the linear learner's)."""
    return selection.values(summary, criterion, selection.targets(state.hyperparameters, targets))


def _metrics_of(hp: dict[str, Any], summary: dict[str, torch.Tensor], m: int, edge: int,
                beta: float) -> dict[str, float]:
    """SageMaker's FM metrics of model m from a summary, at threshold bin `edge`."""
    return _named(hp, selection.model_metrics(_kind(hp), summary, m, edge, beta))


def epoch_metrics(state: State) -> dict[str, Any]:
    """What a `validation` event reports at an epoch's end: this epoch's best model's figures, and apart from them
    the best so far (the model finalize would give now)."""
    hp = state.hyperparameters
    summary = selection.prefixed(state, "validation_")
    values = _values(state, summary, _criterion(hp))
    m = int(torch.where(torch.isfinite(values), values, torch.full_like(values, -math.inf)).argmax()) \
        if bool(torch.isfinite(values).any()) else 0
    best = finalize(state)
    return {**_metrics_of(hp, summary, m, summaries.BINS // 2, hp["f_beta"]), "model_index": m,
            "best_so_far": {**best.meta["validation"], "model_index": best.meta["model_index"]}}


def describe(state: State) -> dict[str, Any]:
    """The grid, and each model's validation metrics."""
    hp, t, meta = state.hyperparameters, state.tensors, state.meta
    prefix = "best_validation_" if "best_validation_weight" in t else "validation_"
    summary = selection.prefixed(state, prefix) if prefix + "weight" in t else selection.epoch_summary(state)
    models = [{**g, "validation": _metrics_of(hp, summary, m, summaries.BINS // 2, hp["f_beta"])}
              for m, g in enumerate(meta["grid"])]
    return {"records_seen": meta["records_seen"], "records_trained": meta["records_trained"],
            "epochs_done": meta["epochs_done"], "predictor_type": hp["predictor_type"],
            "num_factors": hp["num_factors"], "stopped_early": meta["stopped"], "models": models}
