"""scikit-learn classifiers and regressors over onepass's linear learner."""

from __future__ import annotations

import inspect
from contextlib import closing
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ..algorithms import linear as _linear
from ..algorithms.base import as_tensor
from ..data.batches import Batch, Stream
from ..errors import UsageError
from ..state import State
from ._base import _is_source, _open, _Parameters, _seed, _spec


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
            if alias in extra:
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
