"""scikit-learn's KMeans over onepass's streaming k-means."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..algorithms import kmeans as _kmeans
from ..algorithms.base import as_tensor
from ..data.batches import Batch
from ..state import State
from ._base import _is_source, _Parameters, _seed, _spec, _Streaming


class KMeans(_Parameters, _Streaming, ClusterMixin, TransformerMixin, BaseEstimator):
    """Streaming k-means (see `onepass.algorithms.kmeans`) with scikit-learn's parameter names.

    n_clusters:  k (SageMaker's name, accepted as an alias: `k`).
    init, n_init, max_iter, tol: the final reduction of the summary to k centres, as scikit-learn's KMeans
                 (SageMaker's local_lloyd_init_method, local_lloyd_num_trials, local_lloyd_max_iter and
                 local_lloyd_tol, accepted as aliases); init is "k-means++" (also spelt "kmeans++") or "random".
    batch_size:  records per mini-batch (alias mini_batch_size).
    extra_center_factor, init_method, half_life_time_size: SageMaker's options of the one-pass summary.

    An alias given replaces its scikit-learn parameter, which must then be left at its default or agree.
    Learned attributes: `cluster_centers_`, `labels_` (array input), `inertia_`, `n_features_in_`, `n_iter_`
    (passes over the data, as MiniBatchKMeans's: 1), `state_` (the one-pass summary), `model_`.
    """

    _aliases = {"n_clusters": "k", "init": "local_lloyd_init_method", "n_init": "local_lloyd_num_trials",
                "max_iter": "local_lloyd_max_iter", "tol": "local_lloyd_tol", "batch_size": "mini_batch_size"}
    _specs = {"n_clusters": _spec(_kmeans, "k"), "n_init": _spec(_kmeans, "local_lloyd_num_trials"),
              "init": _spec(_kmeans, "local_lloyd_init_method", choices=("k-means++", "kmeans++", "random")),
              "max_iter": _spec(_kmeans, "local_lloyd_max_iter"), "tol": _spec(_kmeans, "local_lloyd_tol"),
              "batch_size": _spec(_kmeans, "mini_batch_size"),
              **{n: _spec(_kmeans, n) for n in ("extra_center_factor", "init_method", "half_life_time_size")}}

    def __init__(self, n_clusters: int = 8, *, init: str = "k-means++", n_init: Any = "auto", max_iter: int = 300,
                 tol: float = 1e-4, batch_size: int = 5000, random_state=None, extra_center_factor: Any = "auto",
                 init_method: str = "kmeans++", half_life_time_size: int = 0, device: str = "cpu",
                 k: int | None = None, local_lloyd_init_method: str | None = None,
                 local_lloyd_num_trials: Any = None, local_lloyd_max_iter: int | None = None,
                 local_lloyd_tol: float | None = None, mini_batch_size: int | None = None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.random_state = random_state
        self.extra_center_factor = extra_center_factor
        self.init_method = init_method
        self.half_life_time_size = half_life_time_size
        self.device = device
        self.k = k
        self.local_lloyd_init_method = local_lloyd_init_method
        self.local_lloyd_num_trials = local_lloyd_num_trials
        self.local_lloyd_max_iter = local_lloyd_max_iter
        self.local_lloyd_tol = local_lloyd_tol
        self.mini_batch_size = mini_batch_size

    def _hyperparameters(self) -> dict[str, Any]:
        """SageMaker's hyperparameters of the estimator's parameters (checked)."""
        p = self._resolved()
        return {"k": p["n_clusters"], "local_lloyd_init_method": p["init"].replace("k-means++", "kmeans++"),
                "local_lloyd_num_trials": p["n_init"], "local_lloyd_max_iter": p["max_iter"],
                "local_lloyd_tol": p["tol"], "mini_batch_size": p["batch_size"],
                "extra_center_factor": p["extra_center_factor"], "init_method": p["init_method"],
                "half_life_time_size": p["half_life_time_size"]}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _batches(self, X, size: int):
        for s in range(0, X.shape[0], size):
            yield Batch(as_tensor(X[s:s + size]).to(torch.float32))

    def _validate(self, X, reset: bool):
        """A dense array or a scipy CSR matrix (sparse input is never densified: see kmeans.DENSE_WIDTH)."""
        return validate_data(self, X, reset=reset, accept_sparse="csr", dtype=[np.float64, np.float32],
                             ensure_min_samples=1)

    def fit(self, X, y=None, *, label_column=None, data_format=None):
        """Learn from an array (n, d), or stream a source once: a path, glob or folder, or a `Stream`."""
        self._reset()
        hp = self._hyperparameters()
        if _is_source(X):
            self._fit_source(X, label_column, data_format, _kmeans, hp["mini_batch_size"])
            return self._finish(None)
        X = self._validate(X, reset=True)
        if X.shape[0] < hp["k"]:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={hp['k']}")
        for batch in self._batches(X, hp["mini_batch_size"]):
            self._absorb(batch)
        return self._finish(X)

    def partial_fit(self, X, y=None):
        """Absorb one more chunk of records into the summary, then refresh the model."""
        first = not hasattr(self, "state_")
        hp = self._hyperparameters()
        X = self._validate(X, reset=first)
        for batch in self._batches(X, hp["mini_batch_size"]):
            self._absorb(batch)
        if self.state_.meta["n_active"] < hp["k"]:
            raise ValueError(f"n_samples={self.state_.meta['records_seen']} seen so far should be >= "
                             f"n_clusters={hp['k']}")
        return self._finish(X)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        return self.model_.predict(X)["closest_cluster"].astype(np.int64)

    def transform(self, X) -> np.ndarray:
        """Euclidean distance of each record to each centre."""
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        return self.model_.transform(X).astype(X.dtype, copy=False)

    def score(self, X, y=None) -> float:
        """Minus the sum of squared distances to the nearest centre (higher is better), as scikit-learn's."""
        d = self.transform(X).astype(np.float64).min(axis=1)
        return -float((d * d).sum())

    def _reset(self) -> None:
        for name in ("state_", "model_", "cluster_centers_", "labels_", "inertia_", "n_features_in_", "n_iter_"):
            self.__dict__.pop(name, None)

    def _absorb(self, batch: Batch) -> None:
        if not hasattr(self, "state_"):
            self.state_: State = _kmeans.init(self._hyperparameters(), batch.x.shape[1],
                                              _seed(self.random_state), self.device)
        self.state_ = _kmeans.update(self.state_, batch)

    def _finish(self, X: np.ndarray | None):
        self.model_ = _kmeans.finalize(self.state_)
        self.cluster_centers_ = self.model_.centers.cpu().numpy().astype(np.float64)
        self.n_iter_ = 1  # passes over the data, as MiniBatchKMeans's n_iter_: one
        if X is not None:
            self.labels_ = self.predict(X)
            self.inertia_ = -self.score(X)
        else:
            self.inertia_ = float(self.model_.meta["cost"])
        return self
