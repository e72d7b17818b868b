"""scikit-learn estimators over onepass's algorithms (needs scikit-learn: `pip install onepass[sklearn]`).

>>> import numpy as np
>>> from onepass.sklearn import KMeans
>>> X = np.vstack([np.zeros((20, 2)), np.full((20, 2), 5.0)])
>>> km = KMeans(k=2, random_state=0).fit(X)
>>> sorted(np.bincount(km.labels_).tolist())
[20, 20]
>>> km.state_.meta["records_seen"]
40

`fit` also takes a source (a path, glob or folder) and streams it in fixed memory:
`KMeans(k=10).fit("data/*.csv")`. `partial_fit` absorbs one more chunk of data; the summary in `state_`
gives a model for any other k with `onepass.kmeans.finalize(km.state_, k=...)`.

PCA, exact or sketched, from arrays (dense or scipy sparse, never densified), chunks or sources:

>>> from onepass.sklearn import PCA
>>> X = np.random.default_rng(0).normal(size=(200, 5)) * [4.0, 2.0, 1.0, 0.5, 0.1]
>>> pca = PCA(n_components=2).fit(X)
>>> pca.explained_variance_ratio_.round(2).tolist()
[0.73, 0.2]
>>> pca.transform(X[:3]).shape, pca.inverse_transform(pca.transform(X[:3])).shape
((3, 2), (3, 5))
"""

from __future__ import annotations

import os
from contextlib import closing
from typing import Any

import numpy as np
import torch
import scipy.sparse as sp
from sklearn.base import (BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin, ClusterMixin,
                          RegressorMixin, TransformerMixin)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted, validate_data

from .algorithms import kmeans as _kmeans
from .algorithms import linear as _linear
from .algorithms import pca as _pca
from .data.batches import Batch, Stream
from .errors import UsageError
from .state import State

__all__ = ["KMeans", "LinearLearnerClassifier", "LinearLearnerRegressor", "PCA"]


def _seed(random_state) -> int:
    if random_state is None:
        return 0  # reproducible by default, as onepass's command line
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


class _Streaming:
    """What the estimators share: `fit` on a source streams it once, batch by batch, into `_absorb`."""

    def _fit_source(self, source, label_column, data_format) -> None:
        stream = Stream(source, data_format=data_format, label_column=label_column)
        with closing(stream.batches(self.mini_batch_size)) as batches:
            for batch in batches:
                self._absorb(batch)
        self.n_features_in_ = self.state_.meta["n_features"]


class KMeans(_Streaming, ClusterMixin, TransformerMixin, BaseEstimator):
    """Streaming k-means with SageMaker's hyperparameters; see `onepass.algorithms.kmeans`.

    Learned attributes: `cluster_centers_`, `labels_` (array input), `inertia_`, `n_features_in_`,
    `state_` (the one-pass summary), `model_`.
    """

    def __init__(self, k: int = 8, *, extra_center_factor: Any = "auto", init_method: str = "kmeans++",
                 half_life_time_size: int = 0, local_lloyd_max_iter: int = 300, local_lloyd_tol: float = 1e-4,
                 local_lloyd_num_trials: Any = "auto", local_lloyd_init_method: str = "kmeans++",
                 mini_batch_size: int = 5000, random_state=None, device: str = "cpu"):
        self.k = k
        self.extra_center_factor = extra_center_factor
        self.init_method = init_method
        self.half_life_time_size = half_life_time_size
        self.local_lloyd_max_iter = local_lloyd_max_iter
        self.local_lloyd_tol = local_lloyd_tol
        self.local_lloyd_num_trials = local_lloyd_num_trials
        self.local_lloyd_init_method = local_lloyd_init_method
        self.mini_batch_size = mini_batch_size
        self.random_state = random_state
        self.device = device

    def _hyperparameters(self) -> dict[str, Any]:
        names = ("k", "extra_center_factor", "init_method", "half_life_time_size", "local_lloyd_max_iter",
                 "local_lloyd_tol", "local_lloyd_num_trials", "local_lloyd_init_method", "mini_batch_size")
        return {n: getattr(self, n) for n in names}

    def _batches(self, X: np.ndarray):
        for s in range(0, len(X), self.mini_batch_size):
            yield Batch(torch.tensor(X[s:s + self.mini_batch_size], dtype=torch.float32))

    def _validate(self, X, reset: bool) -> np.ndarray:
        X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], ensure_min_samples=1)
        return X

    def fit(self, X, y=None, *, label_column=None, data_format=None):
        """Learn from an array (n, d), or stream a source (path, glob or folder) once."""
        self._reset()
        if isinstance(X, (str, os.PathLike)):
            self._fit_source(X, label_column, data_format)
            return self._finish(None)
        X = self._validate(X, reset=True)
        if len(X) < self.k:
            raise ValueError(f"n_samples={len(X)} should be >= k={self.k}")
        for batch in self._batches(X):
            self._absorb(batch)
        return self._finish(X)

    def partial_fit(self, X, y=None):
        """Absorb one more chunk of records into the summary, then refresh the model."""
        first = not hasattr(self, "state_")
        X = self._validate(X, reset=first)
        for batch in self._batches(X):
            self._absorb(batch)
        if self.state_.meta["n_active"] < self.k:
            raise ValueError(f"n_samples={self.state_.meta['records_seen']} seen so far should be >= k={self.k}")
        return self._finish(X)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        return self.model_.predict(torch.tensor(X, dtype=torch.float64))["closest_cluster"].numpy().astype(np.int64)

    def transform(self, X) -> np.ndarray:
        """Euclidean distance of each record to each centre."""
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        return self.model_.transform(torch.tensor(X, dtype=torch.float64)).numpy().astype(X.dtype, copy=False)

    def score(self, X, y=None) -> float:
        """Minus the sum of squared distances to the nearest centre (higher is better), as scikit-learn's."""
        d = self.transform(X).astype(np.float64).min(axis=1)
        return -float((d * d).sum())

    def _reset(self) -> None:
        for name in ("state_", "model_", "cluster_centers_", "labels_", "inertia_", "n_features_in_"):
            self.__dict__.pop(name, None)

    def _absorb(self, batch: Batch) -> None:
        if not hasattr(self, "state_"):
            self.state_: State = _kmeans.init(self._hyperparameters(), batch.x.shape[1],
                                              _seed(self.random_state), self.device)
        self.state_ = _kmeans.update(self.state_, batch)

    def _finish(self, X: np.ndarray | None):
        self.model_ = _kmeans.finalize(self.state_)
        self.cluster_centers_ = self.model_.centers.cpu().numpy().astype(np.float64)
        if X is not None:
            self.labels_ = self.predict(X)
            self.inertia_ = -self.score(X)
        else:
            self.inertia_ = float(self.model_.meta["cost"])
        return self


class PCA(_Streaming, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """PCA in one pass (see `onepass.algorithms.pca`), with scikit-learn's names and SageMaker's options.

    n_components:     components kept; None keeps all (at most the records seen).
    algorithm_mode:   ``regular`` (exact, d x d memory) or ``randomized`` (a Frequent Directions sketch of
                      n_components + extra_components rows, for large d).
    subtract_mean:    centre the data (scikit-learn's PCA always does).
    extra_components: randomized mode: sketch rows beyond n_components (-1: max(10, n_components)).

    Learned attributes: `components_`, `explained_variance_`, `explained_variance_ratio_`, `singular_values_`,
    `mean_`, `n_components_`, `n_samples_seen_`, `n_features_in_`, `state_` (for `onepass.pca.finalize` with
    any other number of components) and `model_`. Sparse input (any scipy format) goes through sparse products.
    """

    def __init__(self, n_components: int | None = None, *, algorithm_mode: str = "regular",
                 subtract_mean: bool = True, extra_components: int = -1, mini_batch_size: int = 5000,
                 device: str = "cpu"):
        self.n_components = n_components
        self.algorithm_mode = algorithm_mode
        self.subtract_mean = subtract_mean
        self.extra_components = extra_components
        self.mini_batch_size = mini_batch_size
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def fit(self, X, y=None, *, label_column=None, data_format=None):
        """Learn from an array (n, d), dense or sparse, or stream a source (path, glob or folder) once."""
        self._reset()
        if isinstance(X, (str, os.PathLike)):
            self._fit_source(X, label_column, data_format)
            return self._finish()
        return self.partial_fit(X)

    def partial_fit(self, X, y=None):
        """Absorb one more chunk of records, then refresh the model."""
        X = self._validate(X, reset=not hasattr(self, "state_"))
        for s in range(0, X.shape[0], self.mini_batch_size):
            self._absorb(Batch(_as_tensor(X[s:s + self.mini_batch_size])))
        return self._finish()

    def transform(self, X) -> np.ndarray:
        """SageMaker's projection: (X - mean_) @ components_.T; sparse X is never densified."""
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        return self.model_.transform(_as_tensor(X)).numpy().astype(X.dtype, copy=False)

    def inverse_transform(self, X) -> np.ndarray:
        """Back to the data space: X @ components_ + mean_."""
        check_is_fitted(self, "model_")
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_components_:
            raise ValueError(f"inverse_transform expects shape (n, {self.n_components_}), got {X.shape}")
        return self.model_.inverse_transform(torch.from_numpy(X)).numpy()

    @property
    def _n_features_out(self) -> int:
        return self.n_components_

    def _validate(self, X, reset: bool):
        return validate_data(self, X, reset=reset, accept_sparse="csr", dtype=[np.float64, np.float32],
                             ensure_min_samples=1)

    def _reset(self) -> None:
        for name in list(self.__dict__):
            if name.endswith("_") and not name.startswith("_"):
                del self.__dict__[name]

    def _absorb(self, batch: Batch) -> None:
        if not hasattr(self, "state_"):
            d = batch.x.shape[1]
            if self.n_components is not None and not 1 <= self.n_components <= d:
                raise ValueError(f"n_components={self.n_components} must be between 1 and n_features={d}")
            hp = {"num_components": self.n_components or d, "algorithm_mode": self.algorithm_mode,
                  "subtract_mean": self.subtract_mean, "extra_components": self.extra_components,
                  "mini_batch_size": self.mini_batch_size}
            try:
                self.state_: State = _pca.init(hp, d, 0, self.device)
            except UsageError as e:
                raise ValueError(str(e)) from None
        self.state_ = _pca.update(self.state_, batch)

    def _finish(self):
        seen = self.state_.meta["records_seen"]
        most = _pca.available_components(self.state_, bool(self.subtract_mean))
        k = self.n_components or min(most, seen)
        self.model_ = _pca.finalize(self.state_, num_components=k, subtract_mean=bool(self.subtract_mean))
        t = {name: v.cpu().numpy() for name, v in self.model_.tensors.items()}
        self.components_, self.mean_ = t["components"], t["mean"]
        self.explained_variance_, self.singular_values_ = t["explained_variance"], t["singular_values"]
        self.explained_variance_ratio_ = np.asarray(self.model_.meta["explained_variance_ratio"])
        self.n_components_, self.n_samples_seen_ = k, seen
        return self


def _as_tensor(X) -> torch.Tensor:
    """A float64 tensor, sparse CSR for scipy sparse input (never densified)."""
    if sp.issparse(X):
        X = X.tocsr()
        return torch.sparse_csr_tensor(torch.from_numpy(X.indptr.astype(np.int64)),
                                       torch.from_numpy(X.indices.astype(np.int64)),
                                       torch.from_numpy(X.data.astype(np.float64)), size=X.shape,
                                       check_invariants=False)  # scipy's CSR is valid
    return torch.tensor(X, dtype=torch.float64)  # a copy: the caller's array may be read-only


class _LinearLearner(BaseEstimator):
    """What the linear learner estimators share: SageMaker's hyperparameters, epochs over an array (shuffled once,
    so the hash-chosen holdout stays the same records), early stopping, and `state_` for re-choosing later."""

    _predictor_type = "regressor"
    _defaults: dict[str, Any] = {}

    def __init__(self, *, num_models: Any = "auto", loss: str = "auto", optimizer: str = "auto",
                 learning_rate: Any = "auto", wd: Any = "auto", l1: Any = "auto", epochs: int = 15,
                 mini_batch_size: Any = "auto", early_stopping_patience: int = 3, holdout_fraction: float = 0.1,
                 num_point_for_scaler: int = 10000, hyperparameters: dict[str, Any] | None = None,
                 random_state=None, device: str = "cpu"):
        self.num_models = num_models
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.wd = wd
        self.l1 = l1
        self.epochs = epochs
        self.mini_batch_size = mini_batch_size
        self.early_stopping_patience = early_stopping_patience
        self.holdout_fraction = holdout_fraction
        self.num_point_for_scaler = num_point_for_scaler
        self.hyperparameters = hyperparameters
        self.random_state = random_state
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _hp(self, n: int, extra: dict[str, Any]) -> dict[str, Any]:
        size = self.mini_batch_size
        if size == "auto":  # at least about 50 steps an epoch on small arrays; SageMaker's 1000 on large ones
            size = int(min(1000, max(8, -(-n // 50))))
        hp = {"num_models": self.num_models, "loss": self.loss, "optimizer": self.optimizer,
              "learning_rate": self.learning_rate, "wd": self.wd, "l1": self.l1, "epochs": self.epochs,
              "mini_batch_size": size, "early_stopping_patience": self.early_stopping_patience,
              "holdout_fraction": self.holdout_fraction, "num_point_for_scaler": self.num_point_for_scaler,
              **self._defaults, **(self.hyperparameters or {}), **extra}
        return hp

    def _validate(self, X, reset: bool):
        return validate_data(self, X, reset=reset, accept_sparse="csr", dtype=[np.float64, np.float32],
                             ensure_min_samples=1)

    def _validate_xy(self, X, y, sample_weight, reset: bool):
        X, y = validate_data(self, X, y, reset=reset, accept_sparse="csr", dtype=[np.float64, np.float32],
                             y_numeric=self._predictor_type == "regressor")
        w = None if sample_weight is None else _check_sample_weight(sample_weight, X, dtype=np.float32,
                                                                     ensure_non_negative=True)
        if w is not None and not w.any():
            raise ValueError("sample_weight is zero everywhere: nothing to learn from")
        return X, y, w

    def _targets(self, y) -> tuple[np.ndarray, dict[str, Any]]:
        """Labels as the algorithm takes them, and the hyperparameters they imply."""
        return np.asarray(y, dtype=np.float32), {"predictor_type": "regressor"}

    def _batches(self, X, y, w, size: int, order: np.ndarray):
        for s in range(0, len(order), size):
            rows = order[s:s + size]
            yield Batch(_as_tensor(X[rows]).float(), torch.from_numpy(y[rows]),
                        w=None if w is None else torch.from_numpy(w[rows]))

    def fit(self, X, y, sample_weight=None):
        """Train every model of the grid over `epochs` passes (stopping early when none improves)."""
        for name in [n for n in self.__dict__ if n.endswith("_") and not n.startswith("_")]:
            del self.__dict__[name]
        X, y, w = self._validate_xy(X, y, sample_weight, reset=True)
        labels, extra = self._targets(y)
        hp = self._hp(X.shape[0], extra)
        try:
            state = _linear.init(hp, X.shape[1], _seed(self.random_state), self.device)
        except UsageError as e:
            raise ValueError(str(e)) from None
        order = np.random.default_rng(_seed(self.random_state)).permutation(X.shape[0])
        for _ in range(state.hyperparameters["epochs"]):
            for batch in self._batches(X, labels, w, state.hyperparameters["mini_batch_size"], order):
                state = _linear.update(state, batch)
            state, stop = _linear.end_epoch(state)
            if stop:
                break
        self.state_ = state
        return self._finish()

    def partial_fit(self, X, y, sample_weight=None, **kwargs):
        """One pass over one more chunk (no epochs, no early stopping), then refresh the model."""
        first = not hasattr(self, "state_")
        X, y, w = self._validate_xy(X, y, sample_weight, reset=first)
        labels, extra = self._targets(y, **kwargs) if first else self._encode(y)
        if first:
            self.state_ = _linear.init(self._hp(X.shape[0], extra), X.shape[1], _seed(self.random_state),
                                       self.device)
        for batch in self._batches(X, labels, w, self.state_.hyperparameters["mini_batch_size"],
                                   np.arange(X.shape[0])):
            self.state_ = _linear.update(self.state_, batch)
        return self._finish()

    def _encode(self, y) -> tuple[np.ndarray, dict[str, Any]]:
        return np.asarray(y, dtype=np.float32), {}

    def _finish(self):
        self.model_ = _linear.finalize(self.state_)
        self.coef_ = self.model_.weight.T.cpu().numpy().astype(np.float64)
        self.intercept_ = self.model_.bias.cpu().numpy().astype(np.float64)
        return self

    def _decision(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        return self.model_.decision_function(_as_tensor(X).float()).cpu().numpy().astype(np.float64)


class LinearLearnerClassifier(ClassifierMixin, _LinearLearner):
    """Binary or multiclass linear learner (see `onepass.algorithms.linear`): every model of a grid trained at
    once, the best chosen on held-out records by its loss. To place the threshold by another
    `binary_classifier_model_selection_criteria` (SageMaker's default is accuracy), pass it and its targets in
    `hyperparameters`; predict then follows the threshold, and predict_proba stays the model's probability.

    >>> import numpy as np
    >>> from onepass.sklearn import LinearLearnerClassifier
    >>> X = np.random.default_rng(0).normal(size=(600, 2)); y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    >>> clf = LinearLearnerClassifier(random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.95, clf.predict([[3.0, 3.0]]).tolist()
    (True, ['yes'])

    Learned attributes: `classes_`, `coef_`, `intercept_`, `n_features_in_`, `state_` (every model, for
    `onepass.linear_learner.finalize` under other criteria) and `model_`.
    """

    def _targets(self, y, classes=None) -> tuple[np.ndarray, dict[str, Any]]:
        check_classification_targets(y)
        self.classes_ = np.unique(y) if classes is None else np.asarray(classes)
        if len(self.classes_) < 2:
            raise ValueError(f"the data holds only one class ({self.classes_[0]!r}): a classifier needs two or more")
        extra = {"predictor_type": "binary_classifier"} if len(self.classes_) == 2 else \
            {"predictor_type": "multiclass_classifier", "num_classes": len(self.classes_)}
        return self._encode(y)[0], extra

    def _encode(self, y) -> tuple[np.ndarray, dict[str, Any]]:
        index = np.searchsorted(self.classes_, y)
        if np.any(index >= len(self.classes_)) or np.any(self.classes_[np.minimum(index, len(self.classes_) - 1)] != y):
            raise ValueError(f"labels outside the classes seen first: {sorted(set(y) - set(self.classes_))}")
        return index.astype(np.float32), {}

    _predictor_type = "classifier"
    # scikit-learn's contract: predict is the argmax of predict_proba, so the threshold stays at probability 0.5
    # unless another criterion is asked for in `hyperparameters`
    _defaults = {"binary_classifier_model_selection_criteria": "loss_function"}

    def decision_function(self, X) -> np.ndarray:
        """Scores: (n,) for two classes, minus the chosen threshold, so that > 0 predicts the second class;
        (n, C) for more."""
        s = self._decision(X)
        return s - self.model_.meta["threshold"] if s.ndim == 1 else s

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        label = self.model_.predict(_as_tensor(X).float())["predicted_label"].cpu().numpy().astype(np.int64)
        return self.classes_[label]

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities per class (logistic and softmax losses; hinge scores are not probabilities)."""
        check_is_fitted(self, "model_")
        if self.model_.meta["loss"] not in ("logistic", "softmax_loss"):
            raise AttributeError(f"predict_proba needs logistic or softmax loss, not {self.model_.meta['loss']}")
        X = self._validate(X, reset=False)
        score = self.model_.predict(_as_tensor(X).float())["score"].cpu().numpy().astype(np.float64)
        return np.column_stack([1 - score, score]) if score.ndim == 1 else score


class LinearLearnerRegressor(RegressorMixin, _LinearLearner):
    """Linear regression by the linear learner (squared loss by default; huber, quantile, absolute and the
    eps-insensitive losses via `loss`), the best model of the grid chosen on held-out records.

    >>> import numpy as np
    >>> from onepass.sklearn import LinearLearnerRegressor
    >>> X = np.random.default_rng(0).normal(size=(2000, 3)); y = X @ [1.0, -2.0, 0.5] + 3.0
    >>> reg = LinearLearnerRegressor(random_state=0).fit(X, y)
    >>> reg.score(X, y) > 0.99
    True
    """

    def predict(self, X) -> np.ndarray:
        return self._decision(X)
