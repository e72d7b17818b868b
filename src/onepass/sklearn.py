"""scikit-learn estimators over onepass's algorithms (needs scikit-learn: `pip install onepass[sklearn]`).

>>> import numpy as np
>>> from onepass.sklearn import KMeans
>>> X = np.vstack([np.zeros((20, 2)), np.full((20, 2), 5.0)])
>>> km = KMeans(n_clusters=2, random_state=0).fit(X)
>>> sorted(np.bincount(km.labels_).tolist())
[20, 20]
>>> km.state_.meta["records_seen"]
40

Parameters take scikit-learn's names where it has them (`n_clusters`, `n_components`, `max_iter`, `tol`,
`n_init`, `batch_size`, `random_state`, `n_iter_no_change`, `validation_fraction`), and SageMaker's as aliases
(`k`, `num_components`, `local_lloyd_max_iter`, `epochs`, `mini_batch_size`, `early_stopping_patience`...):
an alias that disagrees with its scikit-learn parameter is an error. Values are checked at `fit`:

>>> KMeans(k=2).fit(X).cluster_centers_.shape
(2, 2)
>>> KMeans(n_clusters="2").fit(X)
Traceback (most recent call last):
...
TypeError: KMeans: n_clusters='2' should be an integer >= 1, not str

`fit` also takes a source (a path, glob or folder, or a `Stream`) and streams it in fixed memory:
`KMeans(n_clusters=10).fit("data/*.csv")`, `LinearLearnerClassifier().fit("train/*.csv")` (the label first,
as SageMaker's). `partial_fit` absorbs one more chunk of data; the summary in `state_`
gives a model for any other k with `onepass.kmeans.finalize(km.state_, k=...)`.

PCA, exact or sketched, from arrays (dense or scipy sparse, never densified), chunks or sources:

>>> from onepass.sklearn import PCA
>>> X = np.random.default_rng(0).normal(size=(200, 5)) * [4.0, 2.0, 1.0, 0.5, 0.1]
>>> pca = PCA(n_components=2).fit(X)
>>> pca.explained_variance_ratio_.round(2).tolist()
[0.73, 0.2]
>>> pca.transform(X[:3]).shape, pca.inverse_transform(pca.transform(X[:3])).shape
((3, 2), (3, 5))
>>> round(pca.score(X), 2)      # average log-likelihood under probabilistic PCA, as scikit-learn's
-7.6
"""

from __future__ import annotations

import inspect
import numbers
import os
import warnings
from contextlib import closing
from dataclasses import replace
from typing import Any, ClassVar

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
from .algorithms.base import as_tensor
from .data.batches import Batch, Stream
from .errors import UsageError
from .hyperparameters import HP
from .state import State
from .train import check_sparse

__all__ = ["KMeans", "LinearLearnerClassifier", "LinearLearnerRegressor", "PCA"]


def _seed(random_state) -> int:
    if random_state is None:
        return 0  # reproducible by default, as onepass's command line
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


class _Parameters:
    """scikit-learn's parameter names, with SageMaker's as aliases, checked at fit (scikit-learn's contract:
    `__init__` only stores).

    `_aliases` maps a scikit-learn name to SageMaker's: the alias defaults to None, and when given it replaces the
    scikit-learn parameter, which must then be at its default or equal (anything else is a ValueError naming
    both). `_specs` gives each checked parameter's type and range as a hyperparameter (`HP`): a value of the
    wrong type is a TypeError, one out of range a ValueError, each saying what is expected."""

    _aliases: ClassVar[dict[str, str]] = {}
    _specs: ClassVar[dict[str, HP]] = {}

    def _resolved(self) -> dict[str, Any]:
        """The parameters under scikit-learn's names (aliases folded in), every value checked."""
        values = self.get_params(deep=False)
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        for name, alias in self._aliases.items():
            given = values.pop(alias)
            if given is None:
                continue
            if values[name] != defaults[name] and values[name] != given:
                raise ValueError(f"{type(self).__name__}: {name}={values[name]!r} and {alias}={given!r} disagree "
                                 f"({alias} is SageMaker's name for {name}): give one of them")
            values[name] = given
        for name, spec in self._specs.items():
            _check_value(type(self).__name__, name, values[name], spec)
        if "device" in values:
            try:
                torch.device(values["device"])
            except (RuntimeError, TypeError):
                raise ValueError(f"{type(self).__name__}: device={values['device']!r} is not a device "
                                 "(cpu, cuda, cuda:1, mps...)") from None
        return values


def _check_value(owner: str, name: str, value: Any, spec: HP) -> None:
    """TypeError for a value of the wrong type, ValueError for one out of range or not among the choices."""
    if (spec.auto and isinstance(value, str) and value == "auto") or (value is None and spec.default is None):
        return
    types = {"int": numbers.Integral, "float": numbers.Real, "str": str, "bool": (bool, np.bool_)}[spec.kind]
    if not isinstance(value, types) or (spec.kind in ("int", "float") and isinstance(value, (bool, np.bool_))):
        raise TypeError(f"{owner}: {name}={value!r} should be {spec.valid()}, not {type(value).__name__}")
    try:
        spec.parse(value)
    except UsageError:
        raise ValueError(f"{owner}: {name}={value!r} is invalid: expected {spec.valid()}") from None


def _spec(algorithm, name: str, **change: Any) -> HP:
    """An algorithm's hyperparameter, as it is or with other choices."""
    return replace(algorithm.HYPERPARAMETERS.specs[name], **change)


def _is_source(X) -> bool:
    return isinstance(X, (str, os.PathLike, Stream))


def _open(source, label_column, data_format, algorithm) -> Stream:
    """The source as a Stream: a path, glob or folder (read with `label_column` and `data_format`), or a Stream
    opened with any other options (LibSVM's n_features, header, columns...)."""
    if isinstance(source, Stream):
        if label_column is not None or data_format is not None:
            raise ValueError("fit(Stream): give label_column and data_format to the Stream, not to fit")
        stream = source
    else:
        try:
            stream = Stream(source, data_format=data_format, label_column=label_column)
        except UsageError as e:
            raise ValueError(str(e)) from None
    check_sparse(algorithm, stream)
    return stream


class _Streaming:
    """What the unsupervised estimators share: `fit` on a source streams it once, batch by batch, into `_absorb`."""

    def _fit_source(self, source, label_column, data_format, algorithm, batch_size: int) -> None:
        stream = _open(source, label_column, data_format, algorithm)
        with closing(stream.batches(batch_size)) as batches:
            for batch in batches:
                self._absorb(batch)
        if not hasattr(self, "state_"):
            raise ValueError(f"{stream.name}: no records to fit")
        self.n_features_in_ = self.state_.meta["n_features"]


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
              "batch_size": _spec(_kmeans, "mini_batch_size"), "extra_center_factor": _spec(_kmeans, "extra_center_factor"),
              "init_method": _spec(_kmeans, "init_method"), "half_life_time_size": _spec(_kmeans, "half_life_time_size")}

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

    def _batches(self, X: np.ndarray, size: int):
        for s in range(0, len(X), size):
            yield Batch(torch.tensor(X[s:s + size], dtype=torch.float32))

    def _validate(self, X, reset: bool) -> np.ndarray:
        X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], ensure_min_samples=1)
        return X

    def fit(self, X, y=None, *, label_column=None, data_format=None):
        """Learn from an array (n, d), or stream a source once: a path, glob or folder, or a `Stream`."""
        self._reset()
        hp = self._hyperparameters()
        if _is_source(X):
            self._fit_source(X, label_column, data_format, _kmeans, hp["mini_batch_size"])
            return self._finish(None)
        X = self._validate(X, reset=True)
        if len(X) < hp["k"]:
            raise ValueError(f"n_samples={len(X)} should be >= n_clusters={hp['k']}")
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


class _LinearLearner(_Parameters, BaseEstimator):
    """What the linear learner estimators share: SageMaker's hyperparameters under scikit-learn's names where it
    has them, epochs over an array (shuffled once, so the hash-chosen holdout stays the same records) or over a
    source read again each epoch, early stopping, and `state_` for re-choosing later.

    max_iter:            epochs, passes over the data at most (SageMaker's `epochs`, accepted as an alias).
    batch_size:          records per mini-batch (alias mini_batch_size); auto: about 50 steps an epoch on small
                         data (arrays, and sources whose classes a first pass counts), else SageMaker's 1000.
    n_iter_no_change:    epochs without improvement before stopping (alias early_stopping_patience).
    validation_fraction: share of the records held out to choose the model and stop early (alias
                         holdout_fraction).
    num_models, loss, optimizer, learning_rate, wd, l1, num_point_for_scaler: SageMaker's; any other of its
    hyperparameters in `hyperparameters` (a dict), which also takes the aliases above.
    """

    _predictor_type = "regressor"
    _defaults: dict[str, Any] = {}
    _aliases = {"max_iter": "epochs", "batch_size": "mini_batch_size", "n_iter_no_change": "early_stopping_patience",
                "validation_fraction": "holdout_fraction"}
    _specs = {"max_iter": _spec(_linear, "epochs"), "batch_size": _spec(_linear, "mini_batch_size", auto=True),
              "n_iter_no_change": _spec(_linear, "early_stopping_patience"),
              "validation_fraction": _spec(_linear, "holdout_fraction"),
              **{n: _spec(_linear, n) for n in ("num_models", "loss", "optimizer", "learning_rate", "wd", "l1",
                                            "num_point_for_scaler")}}

    def __init__(self, *, num_models: Any = "auto", loss: str = "auto", optimizer: str = "auto",
                 learning_rate: Any = "auto", wd: Any = "auto", l1: Any = "auto", max_iter: int = 15,
                 batch_size: Any = "auto", n_iter_no_change: int = 3, validation_fraction: float = 0.1,
                 num_point_for_scaler: int = 10000, hyperparameters: dict[str, Any] | None = None,
                 random_state=None, device: str = "cpu", epochs: int | None = None,
                 mini_batch_size: Any = None, early_stopping_patience: int | None = None,
                 holdout_fraction: float | None = None):
        self.num_models = num_models
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.wd = wd
        self.l1 = l1
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.num_point_for_scaler = num_point_for_scaler
        self.hyperparameters = hyperparameters
        self.random_state = random_state
        self.device = device
        self.epochs = epochs
        self.mini_batch_size = mini_batch_size
        self.early_stopping_patience = early_stopping_patience
        self.holdout_fraction = holdout_fraction

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _resolved(self) -> dict[str, Any]:
        """The parameters, with the SageMaker names in `hyperparameters` folded in as aliases too."""
        extra = self.hyperparameters or {}
        if not isinstance(extra, dict):
            raise TypeError(f"{type(self).__name__}: hyperparameters should be a dict of SageMaker's names, not "
                            f"{type(extra).__name__}")
        p = super()._resolved()
        for name, alias in self._aliases.items():
            if alias in extra and self.get_params()[alias] is None:
                p[name] = self._agreed(name, p[name], f"hyperparameters[{alias!r}]", extra[alias])
        for name in self._specs:
            if name in extra:
                p[name] = self._agreed(name, p[name], f"hyperparameters[{name!r}]", extra[name])
        return p

    def _agreed(self, name: str, value: Any, where: str, given: Any) -> Any:
        default = inspect.signature(type(self).__init__).parameters[name].default
        if value != default and value != given:
            raise ValueError(f"{type(self).__name__}: {name}={value!r} and {where}={given!r} disagree: give one")
        return given

    def _hp(self, n: int | None, extra: dict[str, Any]) -> dict[str, Any]:
        """SageMaker's hyperparameters for n records (None: a source of unknown length)."""
        p = self._resolved()
        size = p["batch_size"]
        if size == "auto":  # at least about 50 steps an epoch on small arrays; SageMaker's 1000 on large ones
            size = 1000 if n is None else int(min(1000, max(8, -(-n // 50))))
        aliases = set(self._aliases.values()) | set(self._specs)
        hp = {"num_models": p["num_models"], "loss": p["loss"], "optimizer": p["optimizer"],
              "learning_rate": p["learning_rate"], "wd": p["wd"], "l1": p["l1"], "epochs": p["max_iter"],
              "mini_batch_size": size, "early_stopping_patience": p["n_iter_no_change"],
              "holdout_fraction": p["validation_fraction"], "num_point_for_scaler": p["num_point_for_scaler"],
              **self._defaults, **{k: v for k, v in (self.hyperparameters or {}).items() if k not in aliases},
              **extra}
        return hp

    def _init(self, hp: dict[str, Any], n_features: int) -> State:
        try:
            return _linear.init(hp, n_features, _seed(self.random_state), self._resolved()["device"])
        except UsageError as e:
            raise ValueError(str(e)) from None

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
            yield Batch(as_tensor(X[rows]).float(), torch.from_numpy(y[rows]),
                        w=None if w is None else torch.from_numpy(w[rows]))

    def fit(self, X, y=None, sample_weight=None, *, label_column=None, data_format=None, classes=None):
        """Train every model of the grid over `max_iter` epochs (stopping early when none improves), on arrays
        X and y, or on a source read once an epoch: a path, glob or folder whose records carry the label in
        `label_column` (SageMaker's first column by default) and optionally their weight, or a `Stream`."""
        for name in [n for n in self.__dict__ if n.endswith("_") and not n.startswith("_")]:
            del self.__dict__[name]
        if _is_source(X):
            if y is not None or sample_weight is not None:
                raise ValueError("fit(source) reads the labels (and weights) from the source: leave y and "
                                 "sample_weight out")
            stream = _open(X, "first" if label_column is None and not isinstance(X, Stream) else label_column,
                           data_format, _linear)
            return self._fit_stream(stream, classes)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None (or fit "
                             "a source that holds the labels)")
        X, y, w = self._validate_xy(X, y, sample_weight, reset=True)
        labels, extra = self._targets(y)
        state = self._init(self._hp(X.shape[0], extra), X.shape[1])
        order = np.random.default_rng(_seed(self.random_state)).permutation(X.shape[0])
        for _ in range(state.hyperparameters["epochs"]):
            for batch in self._batches(X, labels, w, state.hyperparameters["mini_batch_size"], order):
                state = _linear.update(state, batch)
            state, stop = _linear.end_epoch(state)
            if stop:
                break
        self.state_ = state
        return self._finish()

    def _fit_stream(self, stream: Stream, classes) -> "_LinearLearner":
        extra, n = self._stream_targets(stream, classes)
        hp, state = self._hp(n, extra), None
        for _ in range(hp["epochs"]):
            with closing(stream.batches(hp["mini_batch_size"])) as batches:
                for batch in batches:
                    if batch.y is None:
                        raise ValueError(f"{stream.name}: the records have no label column")
                    if state is None:
                        state = self._init(hp, batch.x.shape[1])
                    y = torch.from_numpy(self._encode(batch.y.cpu().numpy())[0])
                    state = _linear.update(state, Batch(batch.x, y, w=batch.w))
            if state is None:
                raise ValueError(f"{stream.name}: no records to fit")
            state, stop = _linear.end_epoch(state)
            if stop:
                break
        self.state_, self.n_features_in_ = state, state.meta["n_features"]
        return self._finish()

    def _stream_targets(self, stream: Stream, classes) -> tuple[dict[str, Any], int | None]:
        """The hyperparameters the labels imply, and the number of records where a pass has counted them."""
        return {"predictor_type": "regressor"}, None

    def partial_fit(self, X, y, sample_weight=None, **kwargs):
        """One pass over one more chunk (no epochs, no early stopping), then refresh the model."""
        first = not hasattr(self, "state_")
        X, y, w = self._validate_xy(X, y, sample_weight, reset=first)
        labels, extra = self._targets(y, **kwargs) if first else self._encode(y)
        if first:
            self.state_ = self._init(self._hp(X.shape[0], extra), X.shape[1])
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
        self.n_iter_ = max(1, self.state_.meta["epochs_done"])  # epochs run (partial_fit: one pass, no epoch)
        return self

    def _decision(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        return self.model_.decision_function(X).astype(np.float64)


MAX_CLASSES = 1_000_000  # linear.py's bound on num_classes


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

    `fit(source)` reads a source once to find its classes (the distinct labels; pass `classes=` to skip that
    pass), then once an epoch: `LinearLearnerClassifier(max_iter=5).fit("train/*.csv")`.

    Learned attributes: `classes_`, `coef_`, `intercept_`, `n_features_in_`, `state_` (every model, for
    `onepass.linear_learner.finalize` under other criteria) and `model_`.
    """

    def _targets(self, y, classes=None) -> tuple[np.ndarray, dict[str, Any]]:
        check_classification_targets(y)
        extra = self._set_classes(np.unique(y) if classes is None else np.asarray(classes))
        return self._encode(y)[0], extra

    def _set_classes(self, classes: np.ndarray) -> dict[str, Any]:
        """Keep the classes; the hyperparameters their number implies."""
        self.classes_ = classes
        if len(classes) < 2:
            raise ValueError(f"the data holds only one class ({classes[0]!r}): a classifier needs two or more")
        return {"predictor_type": "binary_classifier"} if len(classes) == 2 else \
            {"predictor_type": "multiclass_classifier", "num_classes": len(classes)}

    def _stream_targets(self, stream: Stream, classes) -> tuple[dict[str, Any], int | None]:
        """The classes: given, or the distinct labels of the source, read in a first pass (labels only are kept,
        at most MAX_CLASSES of them), which also counts the records."""
        if classes is not None:
            return self._set_classes(np.unique(np.asarray(classes))), None
        seen: set = set()
        n = 0
        with closing(stream.batches(10_000)) as batches:
            for batch in batches:
                if batch.y is None:
                    raise ValueError(f"{stream.name}: the records have no label column")
                seen.update(np.unique(batch.y.cpu().numpy()).tolist())
                n += len(batch.y)
                if len(seen) > MAX_CLASSES:
                    raise ValueError(f"{stream.name}: the label column holds more than {MAX_CLASSES:,} distinct "
                                     "values: not the classes of a classifier (LinearLearnerRegressor?)")
        found = np.array(sorted(seen))
        check_classification_targets(found)
        return self._set_classes(found), n

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
        label = self.model_.predict(X)["predicted_label"].astype(np.int64)
        return self.classes_[label]

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities per class (logistic and softmax losses; hinge scores are not probabilities)."""
        check_is_fitted(self, "model_")
        if self.model_.meta["loss"] not in ("logistic", "softmax_loss"):
            raise AttributeError(f"predict_proba needs logistic or softmax loss, not {self.model_.meta['loss']}")
        X = self._validate(X, reset=False)
        score = self.model_.predict(X)["score"].astype(np.float64)
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
