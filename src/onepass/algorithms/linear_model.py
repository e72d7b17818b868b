"""The linear learner's model: one linear model on raw features, SageMaker's outputs, its metrics on labelled data."""

from __future__ import annotations

from typing import Any

import torch

from ..data.batches import Batch
from ..errors import UsageError
from . import score_summaries as summaries
from . import selection
from .base import Model, takes_arrays
from .linear_options import kind as _kind
from .losses import loss_only

NAME = "linear_learner"


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

    @takes_arrays
    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores (n,) or (n, C); x dense or sparse CSR."""
        W = self.weight.to(x.device)
        s = x.to(W.dtype) @ W + self.bias.to(x.device)
        return s[:, 0] if s.shape[1] == 1 else s

    @takes_arrays
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.decision_function(x)
        kind, loss = self.meta["predictor_type"], self.meta["loss"]
        if kind == "regressor":
            return {"score": s}
        if kind == "multiclass_classifier":
            return {"score": torch.softmax(s, -1), "predicted_label": s.argmax(-1).to(torch.float32)}
        label = (s >= self.meta["threshold"]).to(torch.float32)
        return {"score": torch.sigmoid(s) if loss == "logistic" else s, "predicted_label": label}


def evaluate(model: LinearModel, batch: Batch) -> dict[str, Any]:
    """Summary sums of one batch (the trainer adds them up over a test or validation source)."""
    meta = model.meta
    return labelled_sums(model, batch, "a linear learner", meta["classes"], meta["loss_options"],
                         meta["accuracy_top_k"])


def labelled_sums(model: Model, batch: Batch, what: str, classes: int = 1, loss_options: dict[str, float] | None = None,
                  top_k: int = 3) -> dict[str, Any]:
    """A model's score summary of one labelled batch (the models whose `decision_function` gives raw scores)."""
    if batch.y is None:
        raise UsageError(f"evaluating {what} needs labels: name the label column (--label-column)")
    x = batch.x.to(model.weight.device)
    y = batch.y.to(x.device, torch.float32)
    w = batch.w.to(x.device, torch.float32) if batch.w is not None else torch.ones_like(y)
    s = model.decision_function(x)[:, None]
    kind = _kind(model.meta)
    part = summaries.empty(kind, 1, classes, x.device)
    loss = loss_only(model.meta["loss"], s, y, **(loss_options or {}))
    summaries.add(part, kind, s, y, w, loss, top_k=top_k)
    return part


def metrics(model: LinearModel, sums: dict[str, Any]) -> dict[str, float]:
    """SageMaker's metric names from summed `evaluate` results."""
    edge = int(round((model.meta["threshold"] + summaries.SCORE_RANGE) * summaries.BINS
                     / (2 * summaries.SCORE_RANGE)))
    edge = min(max(edge, 0), summaries.BINS)  # a threshold beyond the histogram's range (unscaled sparse features)
    return selection.model_metrics(_kind(model.meta), sums, 0, edge, model.meta.get("choice", {}).get("f_beta", 1.0))


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
    lines.extend(f"  warning: {w}" for w in m.get("warnings", []))
    return lines


def precision_recall(model: LinearModel) -> tuple[list[float], list[float]]:
    """The chosen binary model's precision-recall curve on its validation records (recall, precision)."""
    hist = model.tensors["validation_hist"].double()
    tp, fp, fn, _ = summaries._curves(hist)
    keep = (tp + fp) > 0
    precision, recall = tp[keep] / (tp + fp)[keep], tp[keep] / (tp + fn)[keep].clamp(min=1e-300)
    return recall.tolist(), precision.tolist()
