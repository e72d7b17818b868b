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
"""

from __future__ import annotations

import os
from contextlib import closing
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .algorithms import kmeans as _kmeans
from .data.batches import Batch, Stream
from .state import State

__all__ = ["KMeans"]


def _seed(random_state) -> int:
    if random_state is None:
        return 0  # reproducible by default, as onepass's command line
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
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
            stream = Stream(X, data_format=data_format, label_column=label_column)
            with closing(stream.batches(self.mini_batch_size)) as batches:
                for batch in batches:
                    self._absorb(batch)
            self.n_features_in_ = self.state_.meta["n_features"]
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
