"""State and model files: checksummed, atomic, never pickles, refused whole when damaged or foreign."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from onepass import Model, State, StateFileError, kmeans
from onepass import _files
from onepass.testing import CASES, fit, gaussian_mixture


@pytest.fixture
def state():
    return fit(CASES["kmeans"], gaussian_mixture(1000, 0))


def test_roundtrip_is_exact_and_leaves_no_temporary_files(state, tmp_path):
    path = state.save(tmp_path / "s.safetensors")
    again = State.load(path)
    assert all(torch.equal(state.tensors[k], again.tensors[k]) for k in state.tensors)
    assert again.meta == json.loads(json.dumps(state.meta)) and again.hyperparameters["k"] == 6
    assert os.listdir(tmp_path) == ["s.safetensors"]


def test_foreign_safetensors_file_is_refused(tmp_path):
    save_file({"w": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(StateFileError, match="without a onepass header"):
        State.load(tmp_path / "other.safetensors")


def test_edited_header_fails_the_checksum(state, tmp_path):
    path = state.save(tmp_path / "s.safetensors")
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    edited = blob[8:8 + n].replace(b'\\"k\\": 6', b'\\"k\\": 7')
    assert edited != blob[8:8 + n]
    path.write_bytes(blob[:8] + edited + blob[8 + n:])
    with pytest.raises(StateFileError, match="checksum mismatch"):
        State.load(path)


def test_a_model_is_not_a_state_and_vice_versa(state, tmp_path):
    model = kmeans.finalize(state)
    model.save(tmp_path / "m.safetensors")
    state.save(tmp_path / "s.safetensors")
    with pytest.raises(StateFileError, match="not a state"):
        State.load(tmp_path / "m.safetensors")
    with pytest.raises(StateFileError, match="not a model"):
        Model.load(tmp_path / "s.safetensors")
    loaded = Model.load(tmp_path / "m.safetensors")
    assert torch.equal(loaded.tensors["centers"], model.tensors["centers"])


def test_no_pickle_anywhere_in_the_package():
    import pathlib

    import onepass
    root = pathlib.Path(onepass.__file__).parent
    for py in root.rglob("*.py"):
        text = py.read_text()
        assert "import pickle" not in text and "torch.load(" not in text, py


def test_newer_format_version_names_the_versions(tmp_path):
    _files.write_file(tmp_path / "x.safetensors", {"kind": "state", "format_version": 2}, {})
    with pytest.raises(StateFileError, match="format version 2; this onepass reads up to 1"):
        State.load(tmp_path / "x.safetensors")
