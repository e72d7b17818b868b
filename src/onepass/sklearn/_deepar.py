"""A scikit-learn style estimator over DeepAR (needs scikit-learn: `pip install onepass[sklearn]`), kept in its own
module so that it joins `onepass.sklearn` (as `onepass/sklearn/_deepar.py`) without touching the other estimators."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._base import _seed

__all__ = ["DeepAR"]


class DeepAR(BaseEstimator):
    """DeepAR forecasting (`onepass.algorithms.deepar`) with SageMaker's hyperparameters, on series records.

    `fit` takes a source of JSON lines series (a path, glob or folder, streamed in fixed memory) or a list of
    records as dicts ({"start": "2020-01-01", "target": [...], "cat": [...], "dynamic_feat": [[...]]}).
    `predict(records)` gives the mean forecast of the prediction_length points after each series, (n, P);
    `predict_quantiles(records, quantiles)` any quantiles from the same model; `forecast` SageMaker's prediction
    objects. Learned attributes: `state_` (continue it with `onepass.train(..., init_from=...)`), `model_`.

    >>> import numpy as np
    >>> from onepass.sklearn import DeepAR
    >>> t = np.arange(100)
    >>> series = [{"start": "2024-01-01", "target": (10 + 5 * np.sin(2 * np.pi * t / 7 + k)).tolist()}
    ...           for k in range(4)]
    >>> model = DeepAR(prediction_length=7, time_freq="D", context_length=14, epochs=3, num_cells=8,
    ...                num_layers=1).fit(series)
    >>> model.predict(series).shape, model.predict_quantiles(series, [0.1, 0.9]).shape
    ((4, 7), (4, 2, 7))
    """

    def __init__(self, prediction_length: int = 1, *, time_freq: str = "D", context_length: int | None = None,
                 epochs: int = 100, min_batches_per_epoch: int | None = None, mini_batch_size: int = 128,
                 learning_rate: float = 1e-3, num_cells: int = 40,
                 num_layers: int = 2, dropout_rate: float = 0.1, likelihood: str = "student-T",
                 embedding_dimension: int = 10, cardinality: Any = "auto", num_dynamic_feat: Any = "auto",
                 early_stopping_patience: int | None = None, num_eval_samples: int = 100, random_state=None):
        self.prediction_length = prediction_length
        self.time_freq = time_freq
        self.context_length = context_length
        self.epochs = epochs
        self.min_batches_per_epoch = min_batches_per_epoch
        self.mini_batch_size = mini_batch_size
        self.learning_rate = learning_rate
        self.num_cells = num_cells
        self.num_layers = num_layers
        self.dropout_rate = dropout_rate
        self.likelihood = likelihood
        self.embedding_dimension = embedding_dimension
        self.cardinality = cardinality
        self.num_dynamic_feat = num_dynamic_feat
        self.early_stopping_patience = early_stopping_patience
        self.num_eval_samples = num_eval_samples
        self.random_state = random_state

    def fit(self, X, y=None) -> "DeepAR":
        import json
        import tempfile
        from pathlib import Path

        from ..progress import Progress
        from ..train import train

        hp = {k: v for k, v in self.get_params().items() if k != "random_state" and v is not None}
        with tempfile.TemporaryDirectory(prefix="onepass-deepar-") as tmp:
            source = X
            if not isinstance(X, (str, os.PathLike)):
                source = Path(tmp) / "series.jsonl"
                with open(source, "w") as f:
                    for record in X:
                        f.write(json.dumps(_jsonable_series(record)) + "\n")
            result = train("deepar", source, Path(tmp) / "run", hyperparameters=hp, seed=_seed(self.random_state),
                           progress=Progress(enabled=False))
        self.state_, self.model_ = result.state, result.model
        return self

    def forecast(self, X, num_samples: int | None = None, quantiles=None,
                 output_types=("mean", "quantiles")) -> list[dict[str, Any]]:
        """SageMaker's prediction objects ({"mean": [...], "quantiles": {"0.1": [...]}, "samples": [...]})."""
        check_is_fitted(self, "model_")
        return self.model_.forecast([_jsonable_series(r) for r in X], num_samples, quantiles, output_types,
                                    seed=_seed(self.random_state))

    def predict(self, X, num_samples: int | None = None) -> np.ndarray:
        """The mean forecast, (n series, prediction_length)."""
        return np.array([f["mean"] for f in self.forecast(X, num_samples, output_types=("mean",))])

    def predict_quantiles(self, X, quantiles=(0.1, 0.5, 0.9), num_samples: int | None = None) -> np.ndarray:
        """Quantile forecasts, (n series, len(quantiles), prediction_length), in the order asked."""
        forecasts = self.forecast(X, num_samples, list(quantiles), output_types=("quantiles",))
        return np.array([list(f["quantiles"].values()) for f in forecasts])


def _jsonable_series(record: dict) -> dict:
    """A series record with NumPy arrays as lists (NaN as "NaN", as DeepAR writes a missing value)."""
    out = {}
    for k, v in record.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if k == "target":
            v = ["NaN" if isinstance(x, float) and x != x else x for x in v]
        out[k] = v
    return out

