"""The State: everything needed to continue training, as explicit data.

A state is named tensors plus small JSON-able metadata. It is saved as one safetensors file with a checksummed
JSON header (see `_files`), so a state file from a stranger is safe to open, and a damaged one is refused whole.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import _files
from .errors import StateFileError

STATE_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"


@dataclass
class State:
    """One algorithm's training state.

    algorithm:       the algorithm's registered name, e.g. ``"kmeans"``.
    hyperparameters: the validated hyperparameters the state was trained with.
    tensors:         named tensors (model parameters, sufficient statistics, RNG state).
    meta:            JSON-able counters and facts (records seen, feature count, the stream position, ...).
    """

    algorithm: str
    hyperparameters: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> "State":
        return State(self.algorithm, copy.deepcopy(self.hyperparameters),
                     {k: v.clone() for k, v in self.tensors.items()}, copy.deepcopy(self.meta))

    def to(self, device: str | torch.device) -> "State":
        # RNG states and other byte tensors stay on the CPU; torch's generators live there.
        return State(self.algorithm, self.hyperparameters,
                     {k: (v if v.dtype == torch.uint8 else v.to(device)) for k, v in self.tensors.items()},
                     self.meta)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to `path` (a file, or a folder that gets ``state.safetensors``)."""
        path = Path(path)
        if path.is_dir():
            path = path / STATE_FILE
        header = {"kind": "state", "algorithm": self.algorithm,
                  "hyperparameters": _files.to_jsonable(self.hyperparameters),
                  "meta": _files.to_jsonable(self.meta), "onepass_version": _version()}
        return _files.write_file(path, header, self.tensors)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "State":
        """Read and verify a state file (or the state in a run folder). Raises StateFileError on any damage."""
        path = Path(path)
        if path.is_dir():
            path = path / STATE_FILE
        header, tensors = _files.read_file(path, expect_kind="state")
        for key in ("algorithm", "hyperparameters", "meta"):
            if key not in header:
                raise StateFileError(f"{path}: state header lacks {key!r}")
        return cls(header["algorithm"], header["hyperparameters"], tensors, header["meta"])


def _version() -> str:
    from . import __version__
    return __version__
