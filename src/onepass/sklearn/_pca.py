"""scikit-learn's PCA over onepass's one-pass PCA, exact or sketched."""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ..algorithms import pca as _pca
from ..algorithms.base import as_tensor
from ..data.batches import Batch
from ..errors import UsageError
from ..state import State
from ._base import _is_source, _Parameters, _spec, _Streaming


class PCA(_Parameters, _Streaming, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """PCA in one pass (see `onepass.algorithms.pca`), with scikit-learn's names and SageMaker's options.

    n_components:     components kept: an integer; a float in (0, 1), the fewest components that explain at
                      least that share of the variance (as scikit-learn's); None keeps all (at most the records
                      seen). Alias: num_components (SageMaker's name).
    algorithm_mode:   ``regular`` (exact, d x d memory) or ``randomized`` (a Frequent Directions sketch of
                      n_components + extra_components rows, for large d; see `onepass.algorithms.pca`).
    subtract_mean:    centre the data (scikit-learn's PCA always does).
    extra_components: randomized mode: sketch rows beyond n_components (-1: auto, as `onepass.pca.sketch_rows`).
    batch_size:       records per mini-batch (alias mini_batch_size).

    Learned attributes: `components_`, `explained_variance_`, `explained_variance_ratio_`, `singular_values_`,
    `mean_`, `noise_variance_`, `n_components_`, `n_samples_seen_`, `n_features_in_`, `state_` (for
    `onepass.pca.finalize` with any other number of components) and `model_`. Sparse input (any scipy format)
    goes through sparse products. `score` and `score_samples` give the log-likelihood under the probabilistic
    PCA model, as scikit-learn's (Tipping and Bishop 1999), without forming a d x d matrix.
    """

    _aliases = {"n_components": "num_components", "batch_size": "mini_batch_size"}
    _specs = {"algorithm_mode": _spec(_pca, "algorithm_mode"), "subtract_mean": _spec(_pca, "subtract_mean"),
              "extra_components": _spec(_pca, "extra_components"), "batch_size": _spec(_pca, "mini_batch_size")}

    def __init__(self, n_components: int | float | None = None, *, algorithm_mode: str = "regular",
                 subtract_mean: bool = True, extra_components: int = -1, batch_size: int = 5000,
                 device: str = "cpu", num_components: int | None = None, mini_batch_size: int | None = None):
        self.n_components = n_components
        self.algorithm_mode = algorithm_mode
        self.subtract_mean = subtract_mean
        self.extra_components = extra_components
        self.batch_size = batch_size
        self.device = device
        self.num_components = num_components
        self.mini_batch_size = mini_batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _resolved(self) -> dict[str, Any]:
        p = super()._resolved()
        k = p["n_components"]
        if k is not None:
            if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Real):
                raise TypeError(f"PCA: n_components={k!r} should be an integer >= 1, a float in (0, 1) or None, "
                                f"not {type(k).__name__}")
            if isinstance(k, numbers.Integral) and k < 1 or not isinstance(k, numbers.Integral) and not 0 < k < 1:
                raise ValueError(f"PCA: n_components={k!r} is invalid: expected an integer >= 1, a float in "
                                 "(0, 1) or None")
        return p

    def fit(self, X, y=None, *, label_column=None, data_format=None):
        """Learn from an array (n, d), dense or sparse, or stream a source once: a path, glob or folder, or a
        `Stream`."""
        self._reset()
        if _is_source(X):
            self._fit_source(X, label_column, data_format, _pca, self._resolved()["batch_size"])
            return self._finish()
        return self.partial_fit(X)

    def partial_fit(self, X, y=None):
        """Absorb one more chunk of records, then refresh the model."""
        size = self._resolved()["batch_size"]
        X = self._validate(X, reset=not hasattr(self, "state_"))
        for s in range(0, X.shape[0], size):
            self._absorb(Batch(as_tensor(X[s:s + size])))
        return self._finish()

    def transform(self, X) -> np.ndarray:
        """SageMaker's projection: (X - mean_) @ components_.T; sparse X is never densified."""
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        return self.model_.transform(X).astype(X.dtype, copy=False)

    def inverse_transform(self, X) -> np.ndarray:
        """Back to the data space: X @ components_ + mean_."""
        check_is_fitted(self, "model_")
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_components_:
            raise ValueError(f"inverse_transform expects shape (n, {self.n_components_}), got {X.shape}")
        return self.model_.inverse_transform(torch.from_numpy(X)).numpy()

    def score_samples(self, X) -> np.ndarray:
        """Each record's log-likelihood under the probabilistic PCA model: a Gaussian with covariance
        C = components_^T diag(explained_variance_ - noise_variance_) components_ + noise_variance_ I.

        With z = V (x - mean) and r = |x - mean|^2 - |z|^2 (V orthonormal), x^T C^-1 x = sum z_i^2 / e_i + r /
        noise_variance and log det C = sum log e_i + (d - k) log noise_variance, e_i the larger of
        explained_variance_i and noise_variance_: O(n d k), never a d x d matrix. A model that keeps every
        direction of its data (noise_variance_ = 0) scores on its components alone."""
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        z = self.model_.transform(X).astype(np.float64)
        e = np.maximum(self.explained_variance_, self.noise_variance_)
        quad = (z * z / e).sum(1)
        logdet = float(np.log(e).sum())
        if self.noise_variance_ > 0:
            quad += np.maximum(_centred_norms(X, self.mean_) - (z * z).sum(1), 0.0) / self.noise_variance_
            logdet += (X.shape[1] - self.n_components_) * np.log(self.noise_variance_)
        return -0.5 * (quad + X.shape[1] * np.log(2 * np.pi) + logdet)

    def score(self, X, y=None) -> float:
        """The average log-likelihood of the records under the probabilistic PCA model, as scikit-learn's."""
        return float(np.mean(self.score_samples(X)))

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
            p, d = self._resolved(), batch.x.shape[1]
            k = p["n_components"]
            if isinstance(k, numbers.Integral) and k > d:
                raise ValueError(f"n_components={k} must be between 1 and n_features={d}")
            hp = {"num_components": k if isinstance(k, numbers.Integral) else d,
                  "algorithm_mode": p["algorithm_mode"], "subtract_mean": bool(p["subtract_mean"]),
                  "extra_components": p["extra_components"], "mini_batch_size": p["batch_size"]}
            try:
                self.state_: State = _pca.init(hp, d, 0, p["device"])
            except UsageError as e:
                raise ValueError(str(e)) from None
        self.state_ = _pca.update(self.state_, batch)

    def _finish(self):
        p = self._resolved()
        seen, centred = self.state_.meta["records_seen"], bool(p["subtract_mean"])
        most = min(_pca.available_components(self.state_, centred), seen)
        k = p["n_components"]
        if not isinstance(k, numbers.Integral):  # None: all; a share: the fewest components that explain it
            every = _pca.finalize(self.state_, num_components=most, subtract_mean=centred)
            share = np.cumsum(every.meta["explained_variance_ratio"])
            k = most if k is None else int(min(np.searchsorted(share, k, side="right") + 1, most))
        self.model_ = _pca.finalize(self.state_, num_components=k, subtract_mean=centred)
        t = {name: v.cpu().numpy() for name, v in self.model_.tensors.items()}
        self.components_, self.mean_ = t["components"], t["mean"]
        self.explained_variance_, self.singular_values_ = t["explained_variance"], t["singular_values"]
        self.explained_variance_ratio_ = np.asarray(self.model_.meta["explained_variance_ratio"])
        self.n_components_, self.n_samples_seen_ = k, seen
        # scikit-learn's: the mean of the variances of the directions left out, of min(n, d) in all
        rest = min(self.state_.meta["n_features"], seen) - k
        left = self.model_.meta["total_variance"] - float(self.explained_variance_.sum())
        self.noise_variance_ = max(left, 0.0) / rest if rest > 0 else 0.0
        if self.model_.meta.get("resolved") is False:
            lower = sum(self.model_.meta["explained_variance_ratio_lower"])
            warnings.warn(f"PCA: the randomized sketch of {self.state_.meta['sketch_rows']} rows does not resolve "
                          f"{k} components of this data: they explain between {lower:.2%} and "
                          f"{self.explained_variance_ratio_.sum():.2%} of the variance; use a larger "
                          "extra_components or algorithm_mode='regular'", UserWarning, stacklevel=3)
        return self


def _centred_norms(X, mean: np.ndarray) -> np.ndarray:
    """|x - mean|^2 of each row, dense or sparse (|x|^2 - 2 x.mean + |mean|^2, never densified)."""
    if sp.issparse(X):
        return (np.asarray(X.multiply(X).sum(1)).ravel() - 2 * (X @ mean) + float(mean @ mean))
    r = np.asarray(X, dtype=np.float64) - mean
    return (r * r).sum(1)
