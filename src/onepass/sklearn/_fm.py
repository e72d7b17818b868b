"""scikit-learn's estimators over factorization machines (`onepass.algorithms.fm`): FMClassifier, FMRegressor."""

from __future__ import annotations

import os
from contextlib import closing
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ..algorithms import fm as _fm
from ..algorithms.base import as_tensor
from ..data.batches import Batch, Stream
from ..errors import UsageError
from ._base import _seed


class _FactorizationMachine(BaseEstimator):
    """What FMClassifier and FMRegressor share: SageMaker's FM hyperparameters, epochs over an array (shuffled
    once, so the hash-chosen holdout stays the same records) or over a source, early stopping, and `state_` (every
    model of the grid, for `onepass.factorization_machines.finalize` under other criteria)."""

    _predictor_type = "regressor"

    def __init__(self, *, num_factors: int = 16, epochs: int = 10, mini_batch_size: Any = "auto",
                 num_models: Any = "auto", linear_lr: float = 0.1, factors_lr: float = 0.1, factors_wd: float = 1e-5,
                 early_stopping_patience: int = 3, holdout_fraction: float = 0.1,
                 hyperparameters: dict[str, Any] | None = None, random_state=None, device: str = "cpu"):
        self.num_factors = num_factors
        self.epochs = epochs
        self.mini_batch_size = mini_batch_size
        self.num_models = num_models
        self.linear_lr = linear_lr
        self.factors_lr = factors_lr
        self.factors_wd = factors_wd
        self.early_stopping_patience = early_stopping_patience
        self.holdout_fraction = holdout_fraction
        self.hyperparameters = hyperparameters
        self.random_state = random_state
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _fm_hyperparameters(self, n: int | None) -> dict[str, Any]:
        size = self.mini_batch_size
        if size == "auto":  # about 50 steps an epoch on small arrays, SageMaker's 1000 on large ones and sources
            size = 1000 if n is None else int(min(1000, max(8, -(-n // 50))))
        names = ("num_factors", "epochs", "num_models", "linear_lr", "factors_lr", "factors_wd",
                 "early_stopping_patience", "holdout_fraction")
        hp = {k: getattr(self, k) for k in names}
        return {**hp, "mini_batch_size": size, "predictor_type": "binary_classifier" if self._predictor_type ==
                "classifier" else "regressor", **self._fm_defaults, **(self.hyperparameters or {})}

    _fm_defaults: dict[str, Any] = {}

    def _fm_validate(self, X, y=None, sample_weight=None, reset: bool = False):
        if y is None:
            return validate_data(self, X, reset=reset, accept_sparse="csr", dtype=[np.float64, np.float32],
                                 ensure_min_samples=1), None, None
        X, y = validate_data(self, X, y, reset=reset, accept_sparse="csr", dtype=[np.float64, np.float32],
                             y_numeric=self._predictor_type == "regressor")
        w = None if sample_weight is None else _check_sample_weight(sample_weight, X, dtype=np.float32,
                                                                     ensure_non_negative=True)
        if w is not None and not w.any():
            raise ValueError("sample_weight is zero everywhere: nothing to learn from")
        return X, y, w

    def _fm_labels(self, y, first: bool) -> np.ndarray:
        return np.asarray(y, dtype=np.float32)

    def _fm_batches(self, X, y, w, order: np.ndarray):
        size = self.state_.hyperparameters["mini_batch_size"]
        for s in range(0, len(order), size):
            rows = order[s:s + size]
            yield Batch(as_tensor(X[rows]).float(), torch.from_numpy(y[rows]),
                        w=None if w is None else torch.from_numpy(w[rows]))

    def _fm_init(self, n: int | None, n_features: int) -> None:
        try:
            self.state_ = _fm.init(self._fm_hyperparameters(n), n_features, _seed(self.random_state), self.device)
        except UsageError as e:
            raise ValueError(str(e)) from None

    def fit(self, X, y=None, sample_weight=None, *, label_column="first", data_format=None):
        """Train every model of the grid over `epochs` passes (stopping early when none improves), on an array
        (dense or scipy sparse) with labels y, or on a source (a path, glob or folder; the label in
        `label_column`, SageMaker's first by default; a classifier's labels 0 and 1) streamed once an epoch."""
        for name in [n for n in self.__dict__ if n.endswith("_") and not n.startswith("_")]:
            del self.__dict__[name]
        if isinstance(X, (str, os.PathLike)):
            return self._fm_fit_source(X, label_column, data_format)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        X, y, w = self._fm_validate(X, y, sample_weight, reset=True)
        labels = self._fm_labels(y, first=True)
        self._fm_init(X.shape[0], X.shape[1])
        order = np.random.default_rng(_seed(self.random_state)).permutation(X.shape[0])
        for _ in range(self.state_.hyperparameters["epochs"]):
            for batch in self._fm_batches(X, labels, w, order):
                self.state_ = _fm.update(self.state_, batch)
            self.state_, stop = _fm.end_epoch(self.state_)
            if stop:
                break
        return self._fm_finish()

    def _fm_fit_source(self, source, label_column, data_format):
        if self._predictor_type == "classifier":
            self.classes_ = np.array([0, 1])
        stream = Stream(source, data_format=data_format, label_column=label_column)
        for _ in range(self.epochs):
            with closing(stream.batches(self._fm_hyperparameters(None)["mini_batch_size"])) as batches:
                for batch in batches:
                    if not hasattr(self, "state_"):
                        self._fm_init(None, batch.x.shape[1])
                    self.state_ = _fm.update(self.state_, batch)
            self.state_, stop = _fm.end_epoch(self.state_)
            if stop or not stream.rereadable:
                break
        self.n_features_in_ = self.state_.meta["n_features"]
        return self._fm_finish()

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One pass over one more chunk (no epochs, no early stopping), then refresh the model."""
        first = not hasattr(self, "state_")
        X, y, w = self._fm_validate(X, y, sample_weight, reset=first)
        if first and classes is not None:
            self.classes_ = np.asarray(classes)
        labels = self._fm_labels(y, first=first and classes is None)
        if first:
            self._fm_init(X.shape[0], X.shape[1])
        for batch in self._fm_batches(X, labels, w, np.arange(X.shape[0])):
            self.state_ = _fm.update(self.state_, batch)
        return self._fm_finish()

    def _fm_finish(self):
        self.model_ = _fm.finalize(self.state_)
        return self

    def _fm_scores(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X, _, _ = self._fm_validate(X)
        return self.model_.decision_function(as_tensor(X).float()).cpu().numpy().astype(np.float64)


class FMClassifier(ClassifierMixin, _FactorizationMachine):
    """A binary factorization machine (see `onepass.algorithms.fm`): a grid of models trained at once, the best
    chosen on held-out records by its log-loss; predict is the argmax of predict_proba (probability 0.5). Another
    `binary_classifier_model_selection_criteria` in `hyperparameters` moves the threshold predict uses.

    >>> import numpy as np
    >>> from onepass.sklearn import FMClassifier
    >>> X = (np.random.default_rng(0).random((3000, 10)) < 0.3).astype(float)
    >>> y = np.where(X[:, 0] * X[:, 1] + X[:, 2] * X[:, 3] > 0, "click", "none")   # pairs of features
    >>> clf = FMClassifier(num_factors=4, random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.95, clf.predict([[1, 1] + [0] * 8]).tolist()
    (True, ['click'])
    """

    _predictor_type = "classifier"
    _fm_defaults = {"binary_classifier_model_selection_criteria": "loss_function"}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # SageMaker's FM: binary_classifier or regressor
        return tags

    def _fm_labels(self, y, first: bool) -> np.ndarray:
        if first:
            check_classification_targets(y)
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError(f"the data holds only one class ({self.classes_[0]!r}): a classifier needs two")
            if len(self.classes_) > 2:
                raise ValueError("Only binary classification is supported (SageMaker's FM: binary_classifier or "
                                 f"regressor). The type of the target is {type_of_target(y)}.")
        index = np.searchsorted(self.classes_, y)
        if np.any(index >= len(self.classes_)) or np.any(self.classes_[np.minimum(index, 1)] != y):
            raise ValueError(f"labels outside the classes {self.classes_.tolist()}: "
                             f"{sorted(set(np.asarray(y).tolist()) - set(self.classes_.tolist()))}")
        return index.astype(np.float32)

    def decision_function(self, X) -> np.ndarray:
        """Scores minus the chosen threshold: > 0 predicts the second class."""
        return self._fm_scores(X) - self.model_.meta["threshold"]

    def predict(self, X) -> np.ndarray:
        positive = self.decision_function(X) >= 0
        return self.classes_[positive.astype(np.int64)]

    def predict_proba(self, X) -> np.ndarray:
        p = 1 / (1 + np.exp(-self._fm_scores(X)))
        return np.column_stack([1 - p, p])


class FMRegressor(RegressorMixin, _FactorizationMachine):
    """A factorization machine for real-valued targets (squared loss), the best model of the grid chosen on
    held-out records.

    >>> import numpy as np
    >>> from onepass.sklearn import FMRegressor
    >>> X = (np.random.default_rng(0).random((4000, 10)) < 0.3).astype(float)
    >>> y = 3 + 2 * X[:, 0] * X[:, 1] - X[:, 2] * X[:, 3] + X[:, 4]
    >>> FMRegressor(num_factors=4, random_state=0).fit(X, y).score(X, y) > 0.95
    True
    """

    def predict(self, X) -> np.ndarray:
        return self._fm_scores(X)
