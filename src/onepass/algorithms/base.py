"""The algorithm protocol and the model base class.

Every algorithm is a module with four functions over an explicit `State` (see DESIGN.md):

    state = init(hyperparameters, n_features, seed)   # empty; its size is known before any data
    state = update(state, batch)                      # one mini-batch; may reuse the state's storage
    state = merge(state_a, state_b)                   # states of disjoint data -> one state
    model = finalize(state, **choice)                 # does not change the state

plus `HYPERPARAMETERS` (training), `CHOICES` (finalize), `Model` (its model class), `evaluate` and `summary`.
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

import os
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from .. import _files
from ..data.batches import Batch
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
        """SageMaker's per-record outputs, as named tensors of length n."""
        raise NotImplementedError

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
        return cls(tensors, header.get("meta", {}))


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
