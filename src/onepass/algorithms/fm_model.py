"""A trained factorization machine (SageMaker's w0, w and V as `bias`, `linear`, `factors`), its evaluation and
its metrics with SageMaker's names; `fm.py` trains and chooses it."""

from __future__ import annotations

from typing import Any

import torch

from ..data.batches import Batch
from .base import Model, takes_arrays
from .linear_model import labelled_sums, metrics as _metrics
from .linear_options import kind as _kind

NAME = "factorization_machines"


class FMModel(Model):
    """One factorization machine on raw features and labels: `bias` (), `linear` (d,), `factors` (d, k), as
    SageMaker's w0, w and V."""

    algorithm = NAME
    json_key = "predictions"

    @property
    def weight(self) -> torch.Tensor:  # the device the model lives on, for the shared evaluation code
        return self.tensors["linear"]

    @takes_arrays
    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (n,) of dense or CSR records, in O(k nnz)."""
        V, w = self.tensors["factors"], self.tensors["linear"]
        x = x.to(w.device, w.dtype)
        x2 = torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), x.values() ** 2, size=x.shape,
                                     check_invariants=False) if x.layout == torch.sparse_csr else x * x
        S = x @ V
        return self.tensors["bias"] + x @ w + 0.5 * (S * S - x2 @ (V * V)).sum(1)

    @takes_arrays
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.decision_function(x)
        if self.meta["predictor_type"] == "regressor":
            return {"score": s}
        return {"score": torch.sigmoid(s), "predicted_label": (s >= self.meta["threshold"]).to(torch.float32)}


def named(hp: dict[str, Any], values: dict[str, float]) -> dict[str, float]:
    """SageMaker's FM metric names: log loss is `binary_classification_cross_entropy`."""
    if hp["predictor_type"] == "binary_classifier" and "objective_loss" in values:
        values["binary_classification_cross_entropy"] = values["objective_loss"]
    return values


def evaluate(model: FMModel, batch: Batch) -> dict[str, torch.Tensor]:
    """Summary sums of one batch (the trainer adds them up over a test or validation source)."""
    return labelled_sums(model, batch, "factorization machines")


def metrics(model: FMModel, sums: dict[str, Any]) -> dict[str, float]:
    """SageMaker's metric names from summed `evaluate` results."""
    return named(model.meta, _metrics(model, sums))


def summary(model: FMModel) -> list[str]:
    m = model.meta
    g = m["settings"]
    lines = [f"model: factorization machine, {m['predictor_type']}, k = {m['num_factors']}, model "
             f"{m['model_index']} of {m['models']} (learning rates x {g['lr_mult']:.3g}, factors_wd "
             f"{g['factors_wd']:.3g}, init x {g['init_mult']:.3g}), chosen by {m['criterion']} on "
             f"{m['validated_on']}"]
    if m["predictor_type"] == "binary_classifier":
        lines.append(f"  threshold: {m['threshold_probability']:.4g} (probability)")
    if m["validation"]:
        lines.append("  validation: " + ", ".join(f"{k} {v:.4g}" for k, v in m["validation"].items()))
    return lines
