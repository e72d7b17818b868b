"""The linear learner's hyperparameters (SageMaker's names) and finalize's choices."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..hyperparameters import HP, HyperParameters
from . import score_summaries as summaries
from . import selection
from .grid import OPTIMIZERS
from .losses import BINARY, LOSSES, MULTICLASS, REGRESSION

# The held-out sample's budget and most rows: measured in selection.py's docstring (benchmarks/run_selection.py).
DEFAULT_RESERVOIR_MIB = 32.0
RESERVOIR_ROWS = 100_000


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
    hp["binary_classifier_model_selection_criteria"] = selection.LEGACY.get(
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
    HP("binary_classifier_model_selection_criteria", "str", "auto", "how finalize chooses the model and "
       "threshold (finalize can choose again); auto: accuracy, or the loss on fewer than "
       f"{selection.MIN_RECORDS_FOR_ACCURACY:,} held-out records", choices=summaries.CRITERIA + ("f1", "cross_entropy_loss"),
       auto=True),
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
    HP("validation_reservoir_mib", "float", DEFAULT_RESERVOIR_MIB, "held-out records kept in this many MiB (at "
       f"most {RESERVOIR_ROWS:,}) and scored by the finished models at each epoch end and at finalize, so that "
       "the chosen model and threshold hold on new data; 0: summaries of held-out records scored as they came",
       low=0),
], check=_check)

CHOICES = HyperParameters([
    HP("binary_classifier_model_selection_criteria", "str", "auto", "the criterion (binary classifiers)",
       choices=summaries.CRITERIA + ("f1", "cross_entropy_loss"), auto=True),
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


def kind(hp: dict[str, Any]) -> str:
    return {"binary_classifier": "binary", "multiclass_classifier": "multiclass",
            "regressor": "regression"}[hp["predictor_type"]]
