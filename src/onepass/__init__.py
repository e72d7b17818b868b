"""onepass: train machine-learning models on streams of any length, in one pass and fixed memory.

>>> import numpy as np, onepass
>>> X = np.vstack([np.zeros((50, 2)), np.full((50, 2), 10.0)]).astype(np.float32)
>>> state = onepass.kmeans.init({"k": 2, "extra_center_factor": 4}, n_features=2)
>>> state = onepass.kmeans.update(state, onepass.Batch(onepass.as_tensor(X)))
>>> model = onepass.kmeans.finalize(state)
>>> sorted(model.meta["cluster_sizes"])
[50.0, 50.0]
"""

from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# Parsing threads and torch's OpenMP threads share the cores: spinning OpenMP workers would starve the parser
# (see _process.py). Only takes effect if torch is not loaded yet, and never overrides the user's setting.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as _np  # noqa: E402
import torch as _torch  # noqa: E402

from .algorithms import ALGORITHMS, get as get_algorithm
from .algorithms import deepar
from .algorithms import fm as factorization_machines
from .algorithms import kmeans, ntm, pca
from .algorithms import linear as linear_learner
from .algorithms.base import Model
from .data import Batch, Stream
from .errors import (DataError, IncompatibleStateError, Interrupted, OnepassError, StateFileError,
                     UsageError)
from .state import State
from .train import TrainResult, train


def as_tensor(x) -> _torch.Tensor:
    """A float32 tensor of shape (n, d) from an array-like."""
    return _torch.as_tensor(_np.asarray(x, dtype=_np.float32))


def load_state(path) -> State:
    """Read and verify a state file or a run folder's state."""
    return State.load(path)


def load_model(path) -> Model:
    """Read and verify a model file or a run folder's model."""
    return Model.load(path)


def merge(a: State, b: State) -> State:
    """Merge two states of the same algorithm and configuration trained on disjoint data.

    States of other algorithms or configurations are refused with IncompatibleStateError (by the algorithm's
    own check, `algorithms.base.check_mergeable`).
    """
    from .data import hashing  # hashed categorical columns: their collision tallies merge too
    return hashing.merged(get_algorithm(a.algorithm).merge(a, b), a, b)


def tune(algorithm: str, data, validation, out, **options):
    """Search hyperparameters Hyperband-style, continuing the best trials' paused states (onepass.tuning.tune)."""
    from .tuning import tune as _tune
    return _tune(algorithm, data, validation, out, **options)


def __getattr__(name: str):
    # The scikit-learn estimator imports scikit-learn, so it loads only when asked for.
    if name in ("KMeans", "PCA", "LinearLearnerClassifier", "LinearLearnerRegressor", "FMClassifier",
                "FMRegressor", "NTM", "DeepAR"):
        from . import sklearn
        return getattr(sklearn, name)
    raise AttributeError(f"module 'onepass' has no attribute {name!r}")


__all__ = ["ALGORITHMS", "Batch", "DataError", "DeepAR", "deepar", "FMClassifier", "FMRegressor", "IncompatibleStateError",
           "Interrupted", "KMeans", "Model", "NTM",
           "OnepassError", "PCA", "State", "StateFileError", "Stream", "TrainResult", "UsageError",
           "LinearLearnerClassifier", "LinearLearnerRegressor", "as_tensor", "factorization_machines",
           "get_algorithm", "kmeans", "linear_learner", "load_model", "load_state", "merge", "ntm", "pca", "train",
           "tune"]
