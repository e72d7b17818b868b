"""What the scikit-learn estimators share: parameter names and checks, seeds, sources."""

from __future__ import annotations

import inspect
import numbers
import os
from contextlib import closing
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.utils import check_random_state

from ..data.batches import Stream
from ..errors import UsageError
from ..hyperparameters import HP
from ..train import check_sparse


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
