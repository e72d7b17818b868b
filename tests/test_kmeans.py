"""Streaming k-means: quality against scikit-learn, robustness to order, decay, merge and finalize rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onepass import Batch, IncompatibleStateError, Stream, UsageError, kmeans
from onepass.testing import gaussian_mixture, kmeans_cost

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
sklearn = pytest.importorskip("sklearn")
from sklearn.cluster import KMeans as SkKMeans  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402


def stream(x, hp, batch=500, seed=0):
    state = kmeans.init(hp, x.shape[1], seed)
    for s in range(0, len(x), batch):
        state = kmeans.update(state, Batch(torch.tensor(x[s:s + batch])))
    return state


def test_one_pass_cost_within_2_percent_of_sklearn_kmeans_on_digits():
    x = load_digits().data.astype(np.float32)
    reference = SkKMeans(10, n_init=1, random_state=0).fit(x).inertia_
    for seed in range(3):
        model = kmeans.finalize(stream(x[np.random.default_rng(seed).permutation(len(x))], {"k": 10}, seed=seed))
        assert kmeans_cost(model, x) <= 1.02 * reference


def test_greedy_seeding_matches_lloyd_on_the_data_when_the_summary_holds_every_record():
    # k = 100 x 20 slots > 1797 records: the summary is the data itself, so finalize is weighted Lloyd on the
    # data and must reach the quality of scikit-learn's (greedy k-means++) Lloyd; plain k-means++ seeding was 1.8 %
    # worse here.
    x = load_digits().data.astype(np.float32)
    reference = SkKMeans(100, n_init=1, random_state=0).fit(x).inertia_
    model = kmeans.finalize(stream(x, {"k": 100}))
    assert kmeans_cost(model, x) <= 1.005 * reference


def test_cluster_sorted_stream_still_finds_every_cluster():
    """Unshuffled data (every cluster arrives after the previous one ends) must not trap the centres."""
    x = gaussian_mixture(20_000, 0, d=5, k=8)
    labels = SkKMeans(8, n_init=3, random_state=0).fit(x)
    ordered = x[np.argsort(labels.labels_, kind="stable")]
    model = kmeans.finalize(stream(ordered, {"k": 8}))
    assert kmeans_cost(model, x) <= 1.01 * labels.inertia_


def test_estimated_cost_is_close_to_the_true_cost():
    x = gaussian_mixture(10_000, 1)
    model = kmeans.finalize(stream(x, {"k": 6}))
    assert model.meta["cost"] == pytest.approx(kmeans_cost(model, x), rel=0.05)
    assert sum(model.meta["cluster_sizes"]) == pytest.approx(10_000)


def test_half_life_forgets_old_data():
    old = gaussian_mixture(5000, 0, d=2, k=1)
    new = old + np.float32(100.0)
    state = stream(np.vstack([old, new]), {"k": 1, "half_life_time_size": 500})
    centre = kmeans.finalize(state).tensors["centers"][0].numpy()
    assert np.allclose(centre, new.mean(0), atol=1.0), centre
    assert float(state.tensors["weights"].sum()) < 1000  # about 2 x half-life of effective records


def test_finalize_any_k_up_to_the_summary():
    state = stream(gaussian_mixture(3000, 2), {"k": 6, "extra_center_factor": 4})
    costs = kmeans.costs(state, [1, 3, 6, 24])
    assert costs[1] > costs[3] > costs[6] > costs[24]
    with pytest.raises(UsageError, match="valid values: 1 to 24"):
        kmeans.finalize(state, k=25)


def test_merge_refuses_other_configurations():
    x = gaussian_mixture(1000, 3)
    with pytest.raises(IncompatibleStateError, match="k"):
        kmeans.merge(stream(x, {"k": 6}), stream(x, {"k": 5}))
    with pytest.raises(IncompatibleStateError, match="features"):
        kmeans.merge(stream(x, {"k": 6}), stream(x[:, :4], {"k": 6}))


def test_fewer_records_than_slots_and_duplicates():
    x = np.ones((7, 3), dtype=np.float32)
    state = stream(x, {"k": 2})
    assert state.meta["n_active"] == 7
    model = kmeans.finalize(state, k=2)
    assert model.meta["cost"] == pytest.approx(0.0)


def test_cuda_device_is_refused_clearly_when_absent(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from onepass.train import resolve_device
    with pytest.raises(UsageError, match="no CUDA device"):
        resolve_device("cuda")


def test_sample_is_uniform_over_the_stream(monkeypatch):
    # Records numbered 0..n-1: the reservoir's mean number and its share from the first half match a uniform
    # sample's, over many seeds (a biased reservoir, e.g. one that stops replacing, fails both).
    monkeypatch.setattr(kmeans, "SAMPLE_RECORDS", 200)
    n = 20_000
    x = np.arange(n, dtype=np.float32)[:, None]
    means, first_half = [], []
    for seed in range(20):
        state = stream(x, {"k": 2, "extra_center_factor": 2}, batch=1000, seed=seed)
        assert state.meta["sample_filled"] == 200
        kept = state.tensors["sample"][:, 0].numpy()
        assert len(np.unique(kept)) == 200, "a record was kept twice"
        means.append(kept.mean())
        first_half.append((kept < n / 2).mean())
    assert abs(np.mean(means) - (n - 1) / 2) < 0.02 * n
    assert abs(np.mean(first_half) - 0.5) < 0.03


def test_merged_sample_draws_each_side_in_proportion(monkeypatch):
    monkeypatch.setattr(kmeans, "SAMPLE_RECORDS", 400)
    hp = {"k": 2, "extra_center_factor": 2}
    a = stream(np.zeros((30_000, 1), np.float32), hp)
    b = stream(np.ones((10_000, 1), np.float32), hp, seed=1)
    merged = kmeans.merge(a, b)
    assert merged.meta["sample_filled"] == 400
    share_b = float(merged.tensors["sample"][:, 0].mean())
    assert abs(share_b - 0.25) < 0.07  # hypergeometric: sd about 0.02


def test_cost_is_exact_while_the_stream_fits_in_the_sample():
    x = load_digits().data.astype(np.float32)
    model = kmeans.finalize(stream(x, {"k": 10}))
    assert model.meta["cost_estimated_from"] == "every record (exact)"
    assert model.meta["cost"] == pytest.approx(kmeans_cost(model, x), rel=1e-6)


def test_refinement_beats_the_summary_in_high_dimension():
    # 30 dimensions, 5 true clusters, k = 20: Lloyd on the summary cannot see how the records behind one
    # summary centre split; the refined centres (online Lloyd over the stream) can, and are chosen.
    from onepass.datasets import blobs
    x = np.concatenate([c for c, _ in blobs(60_000, 30, 5, seed=3)])
    state = stream(x, {"k": 20}, batch=2000)
    model = kmeans.finalize(state)
    assert model.meta["centres_from"] == "refined"
    summary_centres, _, _ = kmeans._reduce(state, kmeans._choice(state, {}))
    summary_cost = float(((torch.tensor(x, dtype=torch.float64)[:, None, :] - summary_centres[None]) ** 2)
                         .sum(2).min(1).values.sum())
    assert kmeans_cost(model, x) < 0.997 * summary_cost
    assert model.meta["cost"] == pytest.approx(kmeans_cost(model, x), rel=0.02)  # the sample's estimate


def test_wide_records_get_a_smaller_summary_of_the_same_quality():
    # From WIDE_FROM features on, auto keeps 5 k centres, not 20 k (4 x less search a batch); an explicit factor
    # holds at any width. The model still matches scikit-learn's Lloyd on the data.
    assert kmeans.init({"k": 4}, kmeans.WIDE_FROM - 1).meta["summary_size"] == 4 * kmeans.AUTO_CENTER_FACTOR
    assert kmeans.init({"k": 4}, kmeans.WIDE_FROM).meta["summary_size"] == 4 * kmeans.WIDE_CENTER_FACTOR
    assert kmeans.init({"k": 4, "extra_center_factor": 20}, 300).meta["summary_size"] == 80
    x = gaussian_mixture(5000, 0, d=120, k=6)
    state = stream(x, {"k": 6}, batch=1000)
    assert state.meta["summary_size"] == 6 * kmeans.WIDE_CENTER_FACTOR and state.meta["refine_restart_at"]
    reference = SkKMeans(6, n_init=1, random_state=0).fit(x).inertia_
    assert kmeans_cost(kmeans.finalize(state), x) <= 1.01 * reference


def test_merge_with_a_state_of_the_wider_summary_made_before_keeps_its_size(monkeypatch):
    # states written before auto's size depended on the width hold 20 k centres at 100+ features
    x = gaussian_mixture(600, 0, d=kmeans.WIDE_FROM, k=3)
    monkeypatch.setattr(kmeans, "WIDE_CENTER_FACTOR", kmeans.AUTO_CENTER_FACTOR)
    old = stream(x, {"k": 3})
    monkeypatch.undo()
    new = stream(x, {"k": 3}, seed=1)
    assert (old.meta["summary_size"], new.meta["summary_size"]) == (60, 3 * kmeans.WIDE_CENTER_FACTOR)
    for a, b in ((old, new), (new, old)):
        merged = kmeans.merge(a, b)
        assert merged.meta["summary_size"] == len(merged.tensors["centers"]) == a.meta["summary_size"]
        assert merged.meta["records_seen"] == 1200
        kmeans.update(merged, Batch(torch.tensor(x[:100])))
        assert kmeans.finalize(merged).meta["records"] == pytest.approx(1300)


def test_finalize_takes_the_cheapest_candidate_on_the_sample():
    # candidates: the summary's reduction, the refined centres, and those polished by Lloyd on the summary (on
    # kdd04 at k = 100, a drifting stream, the polished ones are 0.35 % cheaper on the data than the refined)
    from onepass.datasets import blobs
    x = np.concatenate([c for c, _ in blobs(60_000, 30, 5, seed=3)])
    drifting = x[np.argsort(x[:, 0] + np.random.default_rng(0).normal(0, 5, len(x)), kind="stable")]
    for data, winner in ((x, "refined"), (drifting, "summary")):
        state = stream(data, {"k": 20}, batch=2000)
        model = kmeans.finalize(state)
        reduced, _, _ = kmeans._reduce(state, kmeans._choice(state, {}))
        X, wt, _ = kmeans._reduction_points(state)
        polished = kmeans._lloyd(X, wt, state.tensors["refined"][None], 300, 1e-4)[0][0]
        candidates = {"summary": reduced, "refined": state.tensors["refined"], "polished": polished}
        on_sample = {name: kmeans._sample_cost(state, c) for name, c in candidates.items()}
        assert model.meta["centres_from"] == min(on_sample, key=on_sample.get) == winner
        assert model.meta["cost"] == pytest.approx(min(on_sample.values()), rel=1e-6)
        assert model.meta["cost"] == pytest.approx(kmeans_cost(model, data), rel=0.03)


def test_state_of_version_1_is_upgraded_on_use():
    x = gaussian_mixture(3000, 0)
    state = stream(x[:1500], {"k": 4})
    for key in ("refined", "refined_count", "sample"):
        del state.tensors[key]
    for key in ("sample_seen", "sample_filled", "refine_restart_at"):
        del state.meta[key]
    state = kmeans.update(state, Batch(torch.tensor(x[1500:])))
    assert state.meta["sample_filled"] == 1500  # sampling starts with the first batch it sees
    assert kmeans_cost(kmeans.finalize(state), x) > 0


def test_batched_greedy_seeding_draws_distinct_far_apart_seeds(monkeypatch):
    """The trials of the reduction are seeded together, in groups when their distances would not fit at once:
    every trial picks k distinct records, one in each well-separated cluster, and the same seed repeats it."""
    from onepass.algorithms import kmeans as km
    g = torch.Generator().manual_seed(0)
    means = torch.arange(8, dtype=torch.float64)[:, None] * 100.0 * torch.ones(8, 3, dtype=torch.float64)
    x = (means[:, None, :] + torch.randn(8, 50, 3, generator=g, dtype=torch.float64)).reshape(400, 3)
    w = torch.ones(400, dtype=torch.float64)
    whole = km._kmeanspp_greedy(x, w, 8, torch.Generator().manual_seed(1), trials=5)
    monkeypatch.setattr(km, "BATCHED_DISTANCES", 1)  # one trial at a time
    grouped = km._kmeanspp_greedy(x, w, 8, torch.Generator().manual_seed(1), trials=5)
    for seeds in (whole, grouped):
        assert seeds.shape == (5, 8)
        for row in seeds:
            assert sorted((row // 50).tolist()) == list(range(8)), "one seed in each cluster"
    assert torch.equal(grouped, km._kmeanspp_greedy(x, w, 8, torch.Generator().manual_seed(1), trials=5))


def test_greedy_seeding_with_fewer_distinct_records_than_k():
    from onepass.algorithms import kmeans as km
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], dtype=torch.float64).repeat(10, 1)
    seeds = km._kmeanspp_greedy(x, torch.ones(30, dtype=torch.float64), 5, torch.Generator().manual_seed(0), 3)
    assert seeds.shape == (3, 5)
    for row in seeds:
        assert len(set(row.tolist())) == 5 and {tuple(x[i].tolist()) for i in row} == {(0, 0), (1, 1), (5, 5)}


def test_draws_follow_the_weights_and_never_take_a_weightless_index():
    """k-means++'s draws by inverse cumulative weights: multinomial's distribution, zero weights never drawn (at
    either end either), and a uniform at 0 or just below 1 still lands on a weighted index."""
    from onepass.algorithms import kmeans as km
    g = torch.Generator().manual_seed(3)
    p = torch.tensor([0.0, 1.0, 0.0, 0.0, 3.0, 0.0], dtype=torch.float64)
    u = torch.rand(400_000, generator=g, dtype=torch.float64)
    drawn = torch.bincount(km._draw(p, u), minlength=len(p)).double() / len(u)
    assert drawn[[0, 2, 3, 5]].sum() == 0
    assert abs(float(drawn[1]) - 0.25) < 0.003 and abs(float(drawn[4]) - 0.75) < 0.003
    edges = km._draw(p, torch.tensor([0.0, 0.25, 1 - 1e-16], dtype=torch.float64))
    assert edges.tolist() == [1, 4, 4]
    rows = km._draw(torch.stack([p, p.flip(0)]), torch.tensor([[0.1], [0.1]], dtype=torch.float64))
    assert rows.tolist() == [[1], [1]]  # per row of p, from its own cumulative weights


def test_summary_fill_gives_a_stack_of_identical_records_one_slot():
    """The fill draws k-means++ in rounds; a heavy stack of copies far from the rest draws several times in a
    round, and must still take one slot, as one draw after another would, leaving the others to the spread data."""
    from onepass.algorithms import kmeans as km
    g = torch.Generator().manual_seed(0)
    near = torch.randn(1000, 3, generator=g, dtype=torch.float64)
    far = torch.full((1000, 3), 50.0, dtype=torch.float64)
    x = torch.cat([near, far])
    centre = torch.zeros(1, 3, dtype=torch.float64)  # so that the stack, not a record near it, draws first
    chosen = km._kmeanspp(x, torch.ones(len(x), dtype=torch.float64), 200, g, existing=centre)
    assert len(chosen) == len(set(chosen.tolist())) == 200
    assert int((x[chosen] == 50.0).all(1).sum()) == 1


# ------------------------------------------------------------------------------------------ sparse input

def _sparse_files(tmp_path, x):
    """The same records as dense CSV, LibSVM and sparse RecordIO-protobuf (as the SageMaker SDK writes it)."""
    import scipy.sparse as sp

    from onepass.data import recordio
    from onepass.testing import write_libsvm

    files = {"csv": tmp_path / "x.csv", "libsvm": tmp_path / "x.libsvm", "recordio": tmp_path / "x.rec"}
    np.savetxt(files["csv"], x, delimiter=",", fmt="%.9g")
    with open(files["libsvm"], "w") as f:
        write_libsvm(x, f)
    recordio.write_recordio(files["recordio"], sp.csr_matrix(x))
    return files


@pytest.mark.parametrize("width", [60, 400])
def test_libsvm_and_sparse_recordio_give_the_model_of_the_same_data_as_csv(tmp_path, width):
    """At 60 features (at most DENSE_WIDTH) sparse batches are made dense: the very same model. At 400 they stay
    sparse, distances from sparse products: the same centres within float tolerance."""
    from onepass.testing import sparse_mixture
    from onepass.train import train

    x = sparse_mixture(3000, 1, d=width)
    hp = {"k": 6, "feature_dim": width, "mini_batch_size": 250}
    models = {name: train("kmeans", path, tmp_path / name, hyperparameters=hp).model
              for name, path in _sparse_files(tmp_path, x).items()}
    want = models["csv"]
    for name in ("libsvm", "recordio"):
        got = models[name]
        if width <= kmeans.DENSE_WIDTH:
            assert torch.equal(got.centers, want.centers), name
        else:
            torch.testing.assert_close(got.centers, want.centers, rtol=1e-5, atol=1e-5, msg=name)
        assert got.meta["cost"] == pytest.approx(want.meta["cost"], rel=1e-9)
        assert got.meta["cluster_sizes"] == want.meta["cluster_sizes"]


def test_wide_sparse_batches_are_never_made_dense(tmp_path, monkeypatch):
    """20,000 features: training, finalize, predict and evaluate never densify a batch (only the few rows that
    become centres or sample records); the clusters are found."""
    from onepass.testing import sparse_mixture
    from onepass.train import train

    d = 20_000
    x = sparse_mixture(2000, 3, d=d)
    path = _sparse_files(tmp_path, x)["libsvm"]
    to_dense = torch.Tensor.to_dense

    def refuse(self, *a, **k):
        if self.dim() == 2 and self.shape[1] == d and self.shape[0] > 100:
            raise AssertionError(f"a sparse batch of {self.shape[0]} records was made dense")
        return to_dense(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "to_dense", refuse)
    result = train("kmeans", path, tmp_path / "run", validation=path,
                   hyperparameters={"k": 6, "feature_dim": d, "mini_batch_size": 500})
    assert result.state.meta["records_seen"] == 2000
    batch = next(iter(Stream(path, n_features=d).batches(2000)))
    got = result.model.predict(batch.x)
    want = result.model.predict(torch.tensor(x))
    assert torch.equal(got["closest_cluster"], want["closest_cluster"])
    torch.testing.assert_close(got["distance_to_cluster"], want["distance_to_cluster"], rtol=1e-4, atol=1e-4)
    assert len(set(got["closest_cluster"].tolist())) == 6
    torch.testing.assert_close(result.model.transform(batch.x), result.model.transform(torch.tensor(x)),
                               rtol=1e-4, atol=1e-4)


def test_scikit_learn_estimator_takes_a_scipy_sparse_matrix():
    """onepass.sklearn.KMeans fits, predicts and transforms a scipy CSR matrix as it does the dense array."""
    import scipy.sparse as sp

    from onepass.sklearn import KMeans
    from onepass.testing import sparse_mixture

    x = sparse_mixture(2000, 5, d=300)
    dense = KMeans(k=6, random_state=0, mini_batch_size=500).fit(x)
    sparse = KMeans(k=6, random_state=0, mini_batch_size=500).fit(sp.csr_matrix(x))
    np.testing.assert_allclose(sparse.cluster_centers_, dense.cluster_centers_, rtol=1e-5, atol=1e-5)
    assert np.array_equal(sparse.labels_, dense.labels_)
    assert np.array_equal(sparse.predict(sp.csr_matrix(x[:100])), dense.predict(x[:100]))
    np.testing.assert_allclose(sparse.transform(sp.csr_matrix(x[:100])), dense.transform(x[:100]), rtol=1e-4)


def test_a_few_records_get_the_answer_of_the_batch_search(tmp_path):
    """predict of a served request's few records (NumPy, float64 differences) and of a batch (the search built for
    batches) agree: the same clusters, distances within float32 rounding."""
    from onepass.train import train

    x = gaussian_mixture(1500, 4).astype(np.float32)
    model = train("kmeans", x, tmp_path / "run", hyperparameters={"k": 10}).model
    batch = model.predict(torch.from_numpy(x))  # 1,500 x 10 x 8: over SMALL_PREDICT
    for rows in (x[:1], x[5:9]):
        few = model.predict(torch.from_numpy(rows))
        at = slice(0, 1) if len(rows) == 1 else slice(5, 9)
        assert torch.equal(few["closest_cluster"], batch["closest_cluster"][at])
        torch.testing.assert_close(few["distance_to_cluster"], batch["distance_to_cluster"][at], rtol=1e-5,
                                   atol=1e-5)
    near = model.centers[3:4].clone()  # a record on a centre: distance 0, that cluster
    assert model.predict(near)["closest_cluster"].item() == 3
    assert model.predict(near)["distance_to_cluster"].item() == 0
