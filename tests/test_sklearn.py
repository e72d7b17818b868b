"""The scikit-learn estimator passes scikit-learn's own conformance checks and streams sources."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from onepass.sklearn import KMeans  # noqa: E402
from onepass.testing import gaussian_mixture  # noqa: E402

from conftest import write_csv  # noqa: E402


@parametrize_with_checks([KMeans(k=3)])
def test_sklearn_check_estimator(estimator, check):
    check(estimator)


def test_fit_on_a_file_equals_fit_on_the_array(tmp_path):
    x = gaussian_mixture(4000, 0)
    path = write_csv(tmp_path / "x.csv", x)
    from_file = KMeans(k=6, random_state=1).fit(str(path))
    from_array = KMeans(k=6, random_state=1).fit(np.loadtxt(path, delimiter=",", dtype=np.float32))
    np.testing.assert_array_equal(from_file.cluster_centers_, from_array.cluster_centers_)


def test_partial_fit_accumulates_and_score_is_minus_inertia():
    x = gaussian_mixture(3000, 1)
    km = KMeans(k=6, mini_batch_size=500)
    for part in np.array_split(x, 3):
        km.partial_fit(part)
    assert km.state_.meta["records_seen"] == 3000
    assert km.score(x) == pytest.approx(-((km.transform(x).min(1).astype(np.float64)) ** 2).sum())
    assert set(km.predict(x)) == set(range(6))
