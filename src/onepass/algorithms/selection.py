"""Choosing a model of a grid and its decision threshold from held-out records, so that the choice holds on new data.

Shared by the algorithms that train a grid of models at once (the linear learner, factorization machines).

Which records are held out.  A fixed hash of a record's position in the epoch (SplitMix64 of seed and position)
below `holdout_fraction`: the same records in every epoch and after a resume, never trained on.

What they are scored by.  Held-out records scored as they arrive are scored by models still moving: early
records judge early models. On a binary problem of 250,000 records (12 features, AUC 0.61; benchmarks/
run_selection.py), a threshold chosen that way for recall 0.9 gave 0.876 on fresh records. The held-out records are
therefore kept in a bounded, mergeable sample (`reservoir.py`: priority sampling under a byte budget fixed before
the first record) that every model of the grid scores at the end of each epoch (to keep each model's best epoch)
and at `finalize` (to choose among the models as they are finalized). Measured on that problem (3 epochs,
250,000 fresh records; benchmarks/run_selection.py):

    target                    scored as they came    sample of 16,384 (1 MiB)    every held-out record (24,833)
    recall 0.9                0.8628                 0.8993                      0.8988
    precision 0.6             0.5875                 0.5897                      0.5937

The sample costs nothing in training (0.53-0.68 s an epoch either way) and 60 ms at finalize for 25,000 rows and
32 models. Its default budget, 32 MiB and at most 100,000 rows (the linear learner's `DEFAULT_RESERVOIR_MIB`,
`RESERVOIR_ROWS`), keeps a recall's standard error near 0.9 under 0.002 with half the rows positive, while
finalize's scoring stays under a second and a 12-feature state under 7 MB. A user may turn the sample off
(`validation_reservoir_mib 0`): the progressive summaries of records scored as they came remain, in fixed memory
whatever the stream's length. With `holdout_fraction 0` there are no held-out records and validation stays
progressive on the training records; with a validation source, every model scores the whole source at each epoch
end, so nothing is sampled.

Thresholds.  A model is chosen on binned score summaries (`score_summaries`, every model at once); the chosen
model's threshold is then placed exactly, between two consecutive scores of its sample (bins of 1/64 logit hold 1 %
of the records near the middle of a weak model's scores, so a binned threshold overshoots a target by up to that).

Small held-out sets.  Accuracy on a few records barely tells models apart (on 42 records one record is 2.4
points), and a choice among 32 models by it picks the luckiest: `auto` (the default criterion) chooses by the loss
below `MIN_RECORDS_FOR_ACCURACY` held-out records, by accuracy above, and a choice made on fewer records than that
says so in the model's `warnings`. Measured (`run_selection.py --small`): mean test accuracy over 20 binary
problems (4 features, 3,000 training records, 20,000 test records) of the model chosen on n held-out records:

    n                        42       100      300      1000     3000
    5 epochs, by accuracy    0.6828   0.6810   0.6889   0.6921   0.6948
    5 epochs, by the loss    0.6913   0.6930   0.6957   0.6966   0.6962
    1 epoch, by accuracy     0.6569   0.6708   0.6832   0.6854   0.6891
    1 epoch, by the loss     0.6331   0.6368   0.6336   0.6375   0.6357

Trained models (the default is 15 epochs) are chosen better by the loss, most of all on few records (+0.85 points
at 42, +0.14 at 3,000); under-trained ones, whose probability-0.5 threshold is off, gain from accuracy's choice of
threshold at every size. Where the two disagree by little (1,000 records and more) accuracy, SageMaker's default,
stays the default; below, the loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..state import State
from . import score_summaries as summaries

# Held-out records below which `auto` chooses by the loss, not by accuracy (the table in the docstring: at 42-300
# records the loss's choice is 0.7-0.85 points more accurate on test data, at 1,000 and more 0.14-0.45).
MIN_RECORDS_FOR_ACCURACY = 1000
LEGACY = {"f1": "f_beta", "cross_entropy_loss": "loss_function"}
BINARY_CHOICES = ("binary_classifier_model_selection_criteria", "target_precision", "target_recall")


def held_out(index: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Whether each record (by its position in the epoch) is held out: a fixed hash below `fraction`."""
    if fraction <= 0:
        return torch.zeros(len(index), dtype=torch.bool)
    return torch.from_numpy(splitmix64(index.cpu().numpy(), seed) < fraction)


def sample_keys(index: torch.Tensor, seed: int) -> torch.Tensor:
    """A uniform number in (0, 1) per position, independent of `held_out`'s: the reservoir's priorities."""
    u = splitmix64(index.cpu().numpy(), seed ^ 0x5DEECE66D)
    return torch.from_numpy(u + 0.5 / float(1 << 53))


def splitmix64(index: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per index: SplitMix64 of (seed, index), a fixed, well-mixed hash."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def criterion(hp: dict[str, Any], records: float) -> str:
    """The criterion that chooses: a binary classifier's (auto resolved by the held-out records' count), else the
    loss."""
    if hp["predictor_type"] != "binary_classifier":
        return "loss_function"
    c = LEGACY.get(hp["binary_classifier_model_selection_criteria"], hp["binary_classifier_model_selection_criteria"])
    if c == "auto":
        return "accuracy" if records >= MIN_RECORDS_FOR_ACCURACY else "loss_function"
    return c


def check_binary_choice(hp: dict[str, Any], given: dict[str, Any]) -> None:
    """A binary criterion or target given for a model that is not a binary classifier is an error, not ignored."""
    from ..errors import UsageError

    wrong = [k for k in BINARY_CHOICES if given.get(k) is not None]
    if wrong and hp["predictor_type"] != "binary_classifier":
        raise UsageError(f"{', '.join(wrong)} choose a binary classifier's model and threshold; this state is a "
                         f"{hp['predictor_type']}, whose models are chosen by their loss")


def targets(hp: dict[str, Any], given: dict[str, Any]) -> dict[str, float]:
    return {"beta": given.get("f_beta", hp["f_beta"]),
            "target_precision": given.get("target_precision", hp["target_precision"]),
            "target_recall": given.get("target_recall", hp["target_recall"])}


def default_edge() -> int:
    return summaries.BINS // 2  # raw score 0: probability 0.5 (logistic), the hinge's decision boundary


def values(summary: dict[str, torch.Tensor], crit: str, target: dict[str, float]) -> torch.Tensor:
    """Per model, the value (higher is better) it reaches under `crit` on a summary; nan without records."""
    weight = summary["weight"]
    if crit != "loss_function":
        _, value = summaries.choose_threshold(summary["hist"], crit, default_edge=default_edge(), **target)
    else:
        value = -summary["loss"] / weight.clamp(min=1e-300)
    return torch.where(weight > 0, value, torch.full_like(value, math.nan))


def best_model(value: torch.Tensor) -> int:
    """The model of highest value; model 0 (the given settings) when none has a finite one."""
    if not bool(torch.isfinite(value).any()):
        return 0
    return int(torch.where(torch.isfinite(value), value, torch.full_like(value, -math.inf)).argmax())


def keep_best(t: dict[str, torch.Tensor], values: torch.Tensor, names: tuple[str, ...],
              prefix: str = "validation_") -> None:
    """Keep each model's best epoch so far: where a model's value beats its best, copy its columns of the parameter
    tensors `names` (last dimension: the M models' equal blocks of columns) to `best_<name>`, and its summaries
    (`<prefix>*`, first dimension M) to `best_<prefix>*`."""
    M = values.shape[0]
    summaries_ = [k for k in t if k.startswith(prefix)]
    if "best_value" not in t:
        t["best_value"] = torch.full((M,), -math.inf, dtype=torch.float64, device=values.device)
        for k in (*names, *summaries_):
            t["best_" + k] = t[k].clone()
    better = values > t["best_value"]
    if not bool(better.any()):
        return
    t["best_value"] = torch.where(better, values, t["best_value"])
    for k in names:
        cols = better.repeat_interleave(t[k].shape[-1] // M)
        t["best_" + k][..., cols] = t[k][..., cols]
    for k in summaries_:
        t["best_" + k][better] = t[k][better]


def early_stopping(meta: dict[str, Any], values: torch.Tensor, patience: int, tolerance: float) -> bool:
    """Count epochs in which no model's value beat the best so far by the relative `tolerance`; stop after
    `patience` of them (meta's best_value, bad_epochs and stopped)."""
    finite = values[torch.isfinite(values)]
    best_now = float(finite.max()) if finite.numel() else None
    previous = meta["best_value"]
    if best_now is not None and (previous is None or best_now > previous + tolerance * abs(previous)):
        meta["best_value"], meta["bad_epochs"] = best_now, 0
    else:
        meta["bad_epochs"] += 1
    meta["stopped"] = meta["bad_epochs"] >= patience
    return meta["stopped"]


def exact_threshold(s: torch.Tensor, y: torch.Tensor, w: torch.Tensor, crit: str,
                    target: dict[str, float]) -> tuple[float, torch.Tensor, int]:
    """One model's threshold under `crit` from its scores s of the held-out sample (labels y, weights w), placed
    midway between two consecutive distinct scores; also the sample as a histogram over those scores (2, U) and
    the edge (records in bins >= edge are predicted positive). `loss_function` keeps the raw-score threshold 0."""
    uniq, inverse = torch.unique(s.double(), return_inverse=True)
    U = len(uniq)
    hist = torch.zeros(2, U, dtype=torch.float64, device=s.device)
    hist.index_put_(((y > 0.5).long(), inverse), w.double(), accumulate=True)
    zero_edge = int((uniq < 0).sum())
    if crit == "loss_function":
        return 0.0, hist, zero_edge
    edges, _ = summaries.choose_threshold(hist[None], crit, default_edge=zero_edge, **target)
    edge = int(edges[0])
    if edge == 0:
        threshold = float(uniq[0]) - 1.0
    elif edge == U:
        threshold = float(uniq[-1]) + 1.0
    else:
        threshold = float((uniq[edge - 1] + uniq[edge]) / 2)
    return threshold, hist, edge


def noisy_choice_warning(records: float) -> str | None:
    """A warning when the held-out records are too few for the choice of a model to be trusted."""
    if records >= MIN_RECORDS_FOR_ACCURACY:
        return None
    spread = 0.5 / math.sqrt(max(records, 1.0))
    return (f"the model was chosen on {records:.0f} held-out records: accuracy's standard error there is up to "
            f"{spread:.3f}, so the choice among models is noisy (give a larger --validation source or "
            "holdout_fraction)")


def model_metrics(kind: str, summary: dict[str, torch.Tensor], m: int, edge: int, beta: float,
                  hist: torch.Tensor | None = None) -> dict[str, float]:
    """SageMaker's metrics of model m from a summary (validation or test); a binary model's at threshold bin
    `edge` of `hist` (its summary's histogram unless an exact one is given)."""
    weight = float(summary["weight"][m])
    if weight <= 0:
        return {}
    out = {"objective_loss": float(summary["loss"][m]) / weight}
    if kind == "binary":
        h = summary["hist"][m] if hist is None else hist
        out.update(summaries.binary_at(h, edge, beta))
        out["roc_auc_score"] = float(summaries.roc_auc(h))
    elif kind == "multiclass":
        out.update(summaries.multiclass_metrics(summary["class_counts"][m], summary["hits"][m], weight, beta))
    else:
        out.update(summaries.regression_metrics(summary["errors"][m], weight))
    return out

# ------------------------------------------------------------------ a grid's progressive validation summaries
# The state keeps summaries under prefixes: `current_` (this epoch, since the last restart), `previous_` (the part
# before it), `validation_` (the last epoch's) and `best_validation_` (each model's best epoch).

def check_feature_dim(hp: dict[str, Any], n_features: int) -> None:
    """The data's width against a given `feature_dim`."""
    if hp["feature_dim"] is not None and hp["feature_dim"] != n_features:
        raise UsageError(f"hyperparameter feature_dim = {hp['feature_dim']} but the data has {n_features} features")


def records_held_out(state: State, index: torch.Tensor) -> torch.Tensor:
    """Whether each record (by its position in the epoch) is held out for validation: a fixed hash, so the same
    records are held out in every epoch and after a resume."""
    if state.meta.get("external_validation"):
        return torch.zeros(len(index), dtype=torch.bool)
    return held_out(index, state.hyperparameters["holdout_fraction"], state.meta["seed"])


def rotate_summaries(state: State, position: int) -> None:
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


def epoch_summary(state: State) -> dict[str, torch.Tensor]:
    """This epoch's validation summary: the current part plus the previous one (see `rotate_summaries`)."""
    t = state.tensors
    return {k[len("current_"):]: v + t["previous_" + k[len("current_"):]] if "previous_" + k[len("current_"):] in t
            else v.clone() for k, v in t.items() if k.startswith("current_")}


def prefixed(state: State, prefix: str) -> dict[str, torch.Tensor]:
    """The summary tensors stored under `prefix`, by their own names."""
    return {k[len(prefix):]: v for k, v in state.tensors.items() if k.startswith(prefix)}
