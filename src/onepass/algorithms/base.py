"""The algorithm protocol and the model base class.

Every algorithm is a module with four functions over an explicit `State` (see DESIGN.md):

    state = init(hyperparameters, n_features, seed)   # empty; its size is known before any data
    state = update(state, batch)                      # one mini-batch; may reuse the state's storage
    state = merge(state_a, state_b)                   # states of disjoint data -> one state
    model = finalize(state, **choice)                 # does not change the state

plus `HYPERPARAMETERS` (training), `CHOICES` (finalize), `Model` (its model class), `evaluate` and `summary`.
An algorithm that judges its own models at each epoch's end (the linear learner) also defines
`end_epoch(state, validation) -> (state, stop)`, `epoch_metrics(state)` (that epoch's figures, and apart the best
so far: the trainer's `validation` events) and `continued(state)`, which the trainer calls on a state continued on
new data (`--init-from`) so that the earlier run's best models and early stopping are history, not competitors.
Algorithms know nothing of files, processes or progress bars: only states, batches and tensors.

How records become examples. The trainer reads a source's records as rows (one record, one example), which is what
k-means, PCA and the linear learner train on. An algorithm whose examples are made from records otherwise (windows
cut from series, bag-of-words from text) defines

    examples(stream, hyperparameters) -> data.Examples    # the stream's records made into examples

and the trainer trains, validates and tests on what it returns, through the same loop, checkpoints and epoch cache.
A hook may take a third argument, `state`: the state training continues (--resume, --init-from) or has made (for
--test), None on a fresh run; so examples are made as that state's were (the topic model's vocabulary). What a
hook learns from the data on a fresh run (a vocabulary built from the head of the stream) it may record in
`hyperparameters`, the dict the trainer then hands to `init` and to the validation and test hooks.
An `Examples` subclass overrides `batches(batch_size, start=None, prefetch=2)`, yielding `Batch`es whose `position`
resumes at the exact next example; the rest (the source's name, format, seekability, bad-record tally) is the
stream's. So a new way of making examples never touches the trainer, and a new format never touches an algorithm.

Several processes (distributed.py) train one state each on their shards and `merge` them once, at the end. An SGD
algorithm may also declare

    AVERAGED: tuple[str, ...] = ("weight", "bias")   # names of state tensors

and then `--sync-every K` replaces those tensors, every K mini-batches, by their average over the processes,
weighted by the records each process saw since the previous average (one all_reduce of their float64 values),
which keeps the processes' models from drifting apart (K = 1 with plain SGD is synchronous data-parallel SGD).
The named tensors must mean the same on every process (the same shapes, the same feature scaling); everything
else in the state stays local until `merge`. An algorithm whose tensors depend on something each process fixes on
its own (the linear learner's feature scaling) also defines `shared_parameters(state) -> {name: tensor}` (the
AVERAGED tensors in a form every process shares, fresh tensors) and `set_shared_parameters(state, tensors)`
(back into its own form); the average is then taken of the shared form. Algorithms with exact merges (PCA,
k-means) do not declare any of it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, TypeVar

import numpy as np
import torch

from .. import _files
from ..data.batches import Batch
from ..data.sparse import CSR
from ..errors import IncompatibleStateError
from ..hyperparameters import HyperParameters
from ..state import MODEL_FILE, State


class Algorithm(Protocol):
    NAME: str
    HYPERPARAMETERS: HyperParameters
    CHOICES: HyperParameters

    def init(self, hyperparameters: dict[str, Any], n_features: int, seed: int,
             device: str | torch.device = "cpu") -> State: ...

    def update(self, state: State, batch: Batch) -> State: ...

    def merge(self, a: State, b: State) -> State: ...

    def finalize(self, state: State, **choice: Any) -> "Model": ...

    def evaluate(self, model: "Model", batch: Batch) -> dict[str, float]: ...

    def summary(self, model: "Model") -> list[str]: ...  # lines the command line prints for a model


class Model:
    """A small trained model: named tensors plus JSON-able facts, saved and loaded on its own."""

    algorithm: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def __init__(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]):
        self.tensors = tensors
        self.meta = meta

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """SageMaker's per-record outputs, as named tensors of length n (NumPy arrays for NumPy or SciPy input:
        see `takes_arrays`)."""
        raise NotImplementedError

    @property
    def accepts_sparse(self) -> bool:
        """Whether the model's methods take sparse CSR tensors (its algorithm's ACCEPTS_SPARSE)."""
        from . import get

        return bool(getattr(get(self.algorithm), "ACCEPTS_SPARSE", False))

    def to(self, device: str | torch.device) -> "Model":
        return type(self)({k: v.to(device) for k, v in self.tensors.items()}, self.meta)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        header = {"kind": "model", "algorithm": self.algorithm, "model_version": self.version,
                  "meta": _files.to_jsonable(self.meta)}
        return _files.write_file(path, header, self.tensors)

    @staticmethod
    def load(path: str | os.PathLike) -> "Model":
        """Load any onepass model file (or the model in a run folder), verified, as its algorithm's class."""
        from . import get

        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        header, tensors = _files.read_file(path, expect_kind="model")
        cls = get(header["algorithm"]).Model
        if header.get("model_version", 1) > cls.version:
            raise IncompatibleStateError(f"{path}: model format {header['model_version']} is newer than this "
                                         f"onepass reads ({cls.version}); upgrade onepass")
        model = cls(tensors, header.get("meta", {}))
        model.checksum = header.get("checksum")  # which file this is (a server names the model that answered)
        return model


Method = TypeVar("Method", bound=Callable[..., Any])


def takes_arrays(method: Method) -> Method:
    """Let a model's method over records (n, d) take what Python users have, and answer in kind.

    A torch tensor (dense or sparse CSR) goes in as it is and the answer stays tensors, as the trainer and the
    command line use it. A NumPy array, a SciPy sparse matrix (any format), a list of rows or a DataFrame (anything
    `np.asarray` reads as numbers) is converted first (`records`) and the answer comes back as NumPy arrays: a
    dict of arrays for `predict`, an array for `transform`. Wrong types are a TypeError, a wrong shape, a wrong
    feature count or a non-finite value a ValueError, each saying what was expected.

    >>> import numpy as np, torch, onepass
    >>> model = onepass.kmeans.KMeansModel({"centers": torch.tensor([[0.0, 0.0], [5.0, 5.0]])}, {"n_features": 2})
    >>> model.predict(np.array([[4.0, 6.0], [1.0, 0.0]]))["closest_cluster"]
    array([1., 0.], dtype=float32)
    >>> model.predict(np.zeros((1, 3)))
    Traceback (most recent call last):
    ...
    ValueError: the records have 3 features, but this kmeans model was trained on 2
    """

    @functools.wraps(method)
    def wrapper(self: Model, x: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return method(self, records(x, self), *args, **kwargs)
        return _numpy(method(self, records(x, self), *args, **kwargs))

    return wrapper  # type: ignore[return-value]


def records(x: Any, model: Model) -> torch.Tensor:
    """`x` as a tensor of records for `model` (`as_tensor`), checked for shape and feature count; NumPy and SciPy
    input moved to the model's device; sparse input densified for a model that takes dense records only."""
    device = next(iter(model.tensors.values())).device if model.tensors else torch.device("cpu")
    t = as_tensor(x)
    if t.dim() != 2:
        hint = "; one record x as x.reshape(1, -1)" if t.dim() == 1 else ""
        raise ValueError(f"records must be 2-D, shape (n, d): got shape {tuple(t.shape)}{hint}")
    expected = model.meta.get("n_features")
    if expected is not None and t.shape[1] != expected:
        raise ValueError(f"the records have {t.shape[1]} features, but this {model.algorithm} model was trained on "
                         f"{expected}")
    if t.layout == torch.sparse_csr and not model.accepts_sparse:
        t = t.to_dense()
    return t if isinstance(x, torch.Tensor) else t.to(device)


def as_tensor(x: Any) -> torch.Tensor:
    """A tensor of `x`: a tensor as it is; a SciPy sparse matrix as sparse CSR (never densified); a NumPy array, a
    list of rows or a DataFrame dense, sharing the array's memory where it can (float32 and float64 kept, other
    numbers as float64). Checks types and finiteness, not shapes (see `records`)."""
    if isinstance(x, torch.Tensor):
        return x
    if _is_scipy_sparse(x):
        return _from_scipy(x)
    if isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__"):
        return torch.from_numpy(_numeric(x))
    raise TypeError(f"records must be a NumPy array, a SciPy sparse matrix or a torch tensor of shape (n, d), "
                    f"not {type(x).__module__}.{type(x).__qualname__}")


def _numeric(x: Any) -> np.ndarray:
    """A C-contiguous float32 or float64 array of `x`, writable (torch warns on read-only memory), all finite."""
    a = np.asarray(x)
    if a.dtype.kind == "O":  # a DataFrame of mixed columns, a list of Decimals: numbers if every value converts
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError("records must be numbers, not object values that are not numbers") from None
    elif a.dtype.kind not in "biuf":
        raise TypeError(f"records must be real numbers, not {a.dtype} values")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    a = np.require(a, requirements=("C", "W"))
    _check_finite(a)
    return a


def _check_finite(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise ValueError("the records hold NaN or infinity; predict needs finite numbers")


def _is_scipy_sparse(x: Any) -> bool:
    return type(x).__module__.startswith("scipy.sparse") and hasattr(x, "tocsr")


def _from_scipy(x: Any) -> torch.Tensor:
    """A torch sparse CSR tensor of a SciPy sparse matrix, never densified (float32 kept, else float64)."""
    x = x.tocsr()
    if not x.has_canonical_format:  # duplicate or unsorted columns in a row: summed and sorted, on a copy
        x = x.copy()
        x.sum_duplicates()
    return CSR(x.indptr.astype(np.int64), x.indices.astype(np.int64), _numeric(x.data), x.shape).to_torch()


def _numpy(out: Any) -> Any:
    """Tensors (alone, or the values of a dict) as NumPy arrays on the host."""
    if isinstance(out, dict):
        return {k: _numpy(v) for k, v in out.items()}
    return out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else out


def check_mergeable(a: State, b: State, keys: tuple[str, ...]) -> None:
    """Refuse to merge states of different algorithms, feature counts or configurations."""
    if a.algorithm != b.algorithm:
        raise IncompatibleStateError(f"cannot merge a {a.algorithm} state with a {b.algorithm} state")
    if a.meta.get("n_features") != b.meta.get("n_features"):
        raise IncompatibleStateError(f"cannot merge states with {a.meta.get('n_features')} and "
                                     f"{b.meta.get('n_features')} features")
    diff = [k for k in keys if a.hyperparameters.get(k) != b.hyperparameters.get(k)]
    if diff:
        raise IncompatibleStateError("cannot merge states trained with different " + ", ".join(
            f"{k} ({a.hyperparameters.get(k)!r} vs {b.hyperparameters.get(k)!r})" for k in diff))
