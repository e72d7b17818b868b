"""Every algorithm's model takes what Python users have: NumPy arrays, SciPy sparse matrices and torch tensors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from onepass import Model
from onepass.testing import CASES, fit


ROW_CASES = sorted(n for n in CASES if CASES[n].predicts_rows)  # (a forecaster's predict takes series, not rows)


def _trained(name: str, tmp_path) -> tuple[Model, np.ndarray]:
    """A model of case `name`, saved and loaded back as a user would, and records it can predict."""
    case = CASES[name]
    data = case.make_data(2000, 0)
    model = case.algo.finalize(fit(case, data))
    model.save(tmp_path / "model.safetensors")
    x = data[:, :-1] if case.label_column else data
    return Model.load(tmp_path / "model.safetensors"), np.ascontiguousarray(x[:50])


@pytest.mark.parametrize("name", ROW_CASES)
def test_predict_takes_numpy_and_scipy_and_answers_in_numpy(name, tmp_path):
    model, x = _trained(name, tmp_path)
    from_tensor = model.predict(torch.from_numpy(x))
    assert all(isinstance(v, torch.Tensor) for v in from_tensor.values())  # tensors in, tensors out, as before
    for given in (x, x.astype(np.float64), x.tolist(), sp.csr_matrix(x), sp.coo_matrix(x.astype(np.float64))):
        out = model.predict(given)
        assert out.keys() == from_tensor.keys()
        for key, value in out.items():
            assert isinstance(value, np.ndarray), (type(given), key)
            np.testing.assert_allclose(value, from_tensor[key].numpy(), rtol=1e-5, atol=1e-5,
                                       err_msg=f"{type(given).__name__} {key}")


@pytest.mark.parametrize("name", ROW_CASES)
def test_predict_refuses_wrong_input_with_a_message(name, tmp_path):
    model, x = _trained(name, tmp_path)
    d = x.shape[1]
    with pytest.raises(ValueError, match=f"the records have {d + 1} features, but this .* model was trained on {d}"):
        model.predict(np.zeros((3, d + 1)))
    with pytest.raises(ValueError, match=f"the records have {d - 1} features"):
        model.predict(torch.zeros(3, d - 1))
    with pytest.raises(ValueError, match=r"2-D.*reshape\(1, -1\)"):
        model.predict(x[0])
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict(np.full((2, d), np.nan))
    with pytest.raises(TypeError, match="NumPy array, a SciPy sparse matrix or a torch tensor"):
        model.predict("records.csv")
    with pytest.raises(TypeError, match="real numbers"):
        model.predict(np.full((2, d), "a"))


def test_transform_and_decision_function_answer_in_numpy_too(tmp_path):
    pca, x = _trained("pca", tmp_path / "a")[0], _trained("pca", tmp_path / "b")[1]
    assert isinstance(pca.transform(x), np.ndarray) and pca.transform(x).shape == (50, 3)
    assert isinstance(pca.transform(torch.from_numpy(x)), torch.Tensor)
    linear, x = _trained("linear_learner", tmp_path / "c")
    np.testing.assert_allclose(linear.decision_function(sp.csr_matrix(x)),
                               linear.decision_function(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
