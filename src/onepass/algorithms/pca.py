"""PCA in one pass: exact (`regular`) or sketched in O(l d) memory (`randomized`), dense or sparse input, any
number of components, with or without the mean, from one state.

Both modes keep the count n, the mean mu and the scatter about the mean, S = sum (x - mu)(x - mu)^T: the
numerically stable form of SageMaker's sums (n, sum x, sum x x^T), since sum x x^T = S + n mu mu^T. A mini-batch
(or a second state) joins by Chan's pairwise rule, exact in arithmetic:

    S = S_a + S_b + (n_a n_b / n) (mu_a - mu_b)(mu_a - mu_b)^T,    mu = mu_a + (n_b / n) (mu_b - mu_a).

- `regular` keeps S whole (d x d, float64). finalize takes the eigendecomposition of S, or of S + n mu mu^T
  when `subtract_mean` is false: the same components as an exact PCA of all the data.
- `randomized` keeps a Frequent Directions sketch B (l x d, l = num_components + extra_components) with
  B^T B ~ S. Rows arrive (centred batch rows, and one row sqrt(n_a n_b / n) (mu_a - mu_b) per join); when the
  buffer overflows, B's singular values are shrunk: sigma_i^2 -> max(sigma_i^2 - delta, 0), delta = the
  (l+1)-th largest. Deterministic and mergeable (a merge stacks two sketches and shrinks), with the bound
  (Ghashami, Liberty, Phillips, Woodruff 2016; Agarwal et al. 2012 for merges), for every k < l:

      0 <= S - B^T B <= Delta I,    Delta = sum of the deltas <= (sum_{i>k} lambda_i(S)) / (l - k),

  lambda_i(S) the eigenvalues of the exact scatter. Delta is kept in the state (`shrinkage`), so each model
  states its own error: no direction's variance is off by more than Delta / (n - 1). SageMaker's randomized
  mode sums random projections instead; Frequent Directions needs no randomness and has the sharper bound. Chosen
  by measurement (benchmarks/sketch_choice.py): at equal memory a single-pass Nystrom range sketch explained 2-8 %
  less variance than the optimum on three of four data sets, Frequent Directions at most 0.02 % less.

How far the sketch is from the exact answer (benchmarks/sketch_error.py, k = 10; the table is in
benchmarks/RESULTS_PCA.md). Its components explain within 1 % of the optimum share of the variance on structured
data at l = 20 (digits, kdd04 and ten spikes over noise 0.00 %, a power-law spectrum at d = 1,000 0.08 %, a sparse
bag-of-words at d = 10^5 0.98 %). What a model *stated* they explain was the weak point: sum sigma_i^2, the bottom
of the guaranteed range, said 6.8 % where the components explained 11.0 % on that bag-of-words (issue 21's 6.9 %
against 11.9 %) and 26 % for 39 % on the power law. A component's variance is now stated as sigma_i^2 + Delta,
the top of the range (`_sketched_variances`): within 0.0-0.4 % of the truth on the dense sets and 5 % over on the
bag-of-words (3 % at l = 30, 0.2 % at l = 200), the bottom kept as `explained_variance_ratio_lower`. Up to
COVARIANCE_FD_MAX_D features the default sketch is the whole width (`sketch_rows`): exact, gap 0, at no cost in
time. On noise-like data (that bag-of-words at d = 1,000 with 2 % non-zeros; uniformly placed non-zeros at
d = 2,000) no affordable sketch finds the top components (33-54 % below the optimum at l = 20, still 0.7-28 % at
l = 200, at 10-40 x the time); such a model says so (`resolved` false, its guaranteed range more than 2 x wide)
instead of stating one share. On the resolved sets, merging two halves' sketches moves the components' share by at
most 0.2 % and the stated share by at most 0.6 %.

Sparse mini-batches (torch sparse CSR) go through sparse products: X^T X into S in regular mode; in randomized
mode the sketch meets the batch through X B^T, X X^T (chunk x chunk) and X^T W, never a dense batch.

    >>> import numpy as np, torch, onepass
    >>> x = np.random.default_rng(0).normal(size=(500, 4)) * [5.0, 2.0, 1.0, 0.5]
    >>> state = onepass.pca.init({"num_components": 2}, n_features=4)
    >>> state = onepass.pca.update(state, onepass.Batch(torch.tensor(x, dtype=torch.float32)))
    >>> model = onepass.pca.finalize(state)
    >>> model.components.abs().argmax(1).tolist()      # the two widest axes, widest first
    [0, 1]
    >>> model.predict(torch.zeros(1, 4))["projection"].shape
    torch.Size([1, 2])
    >>> onepass.pca.finalize(state, num_components=4).meta["explained_variance_ratio"][0] > 0.8
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import _blas
from ..data.batches import Batch
from ..errors import IncompatibleStateError, UsageError
from ..hyperparameters import HP, HyperParameters
from ..state import State
from . import _csr
from .base import Model, check_mergeable, takes_arrays

NAME = "pca"
VERSION = 1
# The trainer reads batches this many times mini_batch_size on a GPU, where a 5,000-record batch is mostly kernel
# launches: the result does not depend on how the stream is cut (regular: exact float64 sums, the same up to
# rounding; randomized: Frequent Directions' bound holds for any batch, a whole batch being shrunk at once).
GPU_BATCH_FACTOR = 8
STRUCTURAL = ("algorithm_mode", "extra_components", "feature_dim")  # fix the state's shape: --init-from keeps them
ACCEPTS_SPARSE = True  # update, transform and evaluate take sparse CSR batches (the trainer asks)


def _check(hp: dict[str, Any]) -> None:
    if hp["num_components"] is None:
        raise UsageError("hyperparameter num_components is required: the number of principal components "
                         "(an integer >= 1)")
    if hp["extra_components"] < -1:
        raise UsageError(f"hyperparameter extra_components = {hp['extra_components']} is out of range: "
                         "expected -1 (auto) or an integer >= 0")


HYPERPARAMETERS = HyperParameters([
    HP("num_components", "int", None, "principal components of the default model; finalize can pick another "
       "number later", low=1),
    HP("algorithm_mode", "str", "regular", "regular: exact sums, d x d memory; randomized: a Frequent "
       "Directions sketch of num_components + extra_components rows, for large d",
       choices=("regular", "randomized")),
    HP("subtract_mean", "bool", True, "centre the data (the default model's choice; finalize can pick the other)"),
    HP("extra_components", "int", -1, "randomized mode: sketch rows beyond num_components (-1: the whole width "
       "up to 512 features, else max(10, num_components)); accuracy, time and memory grow with it", low=-1),
    HP("feature_dim", "int", None, "number of features; checked against the data when given", low=1),
    HP("epochs", "int", 1, "passes over the data (PCA needs one; more count every record again)", low=1),
    HP("mini_batch_size", "int", 5000, "records per mini-batch", low=1),
], check=_check)

# What finalize may choose, with the state's hyperparameters as defaults.
CHOICES = HyperParameters([
    HP("num_components", "int", None, "principal components, up to what the state holds", low=1),
    HP("subtract_mean", "bool", True, "centre the data: components of the covariance (true) or of the "
       "uncentred second moment (false)"),
])


def sketch_rows(hp: dict[str, Any], n_features: int) -> int:
    """l = num_components + extra_components, at most d. extra_components = -1 (auto): the whole width d up to
    COVARIANCE_FD_MAX_D features, where the sketch is then exact at no cost in time (every batch's shrink already
    takes a d x d eigendecomposition, whatever l is; benchmarks/sketch_error.py: digits 0.02 s at l = d against
    0.03 s at l = 20, kdd04 0.29 s against 0.37 s), and above it SageMaker's max(10, num_components) rows, whose
    top components are within 1 % of the optimum on the structured sets measured (a larger sketch costs time in
    proportion: at d = 10^5, 2,671 records/s at l = 20, 878 at l = 50, 243 at l = 200)."""
    extra = hp["extra_components"]
    if extra == -1:
        extra = n_features if n_features <= COVARIANCE_FD_MAX_D else max(10, hp["num_components"])
    return min(hp["num_components"] + extra, n_features)


# ----------------------------------------------------------------------------------------------- state

def init(hyperparameters: dict[str, Any], n_features: int, seed: int = 0,
         device: str | torch.device = "cpu") -> State:
    """Empty sums (regular) or an empty sketch (randomized) for `n_features`-dimensional records."""
    hp = HYPERPARAMETERS.parse(hyperparameters)
    if hp["feature_dim"] is not None and hp["feature_dim"] != n_features:
        raise UsageError(f"hyperparameter feature_dim = {hp['feature_dim']} but the data has {n_features} features")
    zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
    tensors = {"mean": zeros(n_features), "trace": zeros(())}  # trace: exact total scatter, sum |x - mu|^2
    meta = {"n_features": n_features, "records_seen": 0, "seed": seed, "algorithm_version": VERSION}
    if hp["algorithm_mode"] == "regular":
        tensors["scatter"] = zeros(n_features, n_features)
    else:
        rows = sketch_rows(hp, n_features)
        tensors["sketch"], tensors["shrinkage"] = zeros(rows, n_features), zeros(())
        meta["sketch_rows"] = rows
    return State(NAME, hp, tensors, meta)


def update(state: State, batch: Batch) -> State:
    """Absorb one mini-batch, dense or sparse CSR (the state's tensors are updated in place and returned)."""
    t = state.tensors
    mean = t["mean"]
    x = batch.x.to(mean.device, torch.float64)
    if x.shape[1] != mean.shape[0]:
        raise UsageError(f"the state has {mean.shape[0]} features, this batch {x.shape[1]}")
    n_a, n_b = state.meta["records_seen"], x.shape[0]
    if n_b == 0:
        return state
    sparse = x.layout == torch.sparse_csr
    mu_b = _column_sums(x) / n_b
    between = _between(n_a, n_b, mean, mu_b)  # the join's row: sqrt(n_a n_b / n) (mu_a - mu_b)
    if sparse:  # centred implicitly: sum (x - mu_b)(x - mu_b)^T = X^T X - n_b mu_b mu_b^T
        shift = mu_b
        trace_b = (x.values() ** 2).sum() - n_b * (mu_b @ mu_b)
    else:
        x, shift = x - mu_b, torch.zeros_like(mu_b)
        trace_b = (x * x).sum()  # sums stay tensors: reading them would make the host wait for a GPU
    if "scatter" in t:
        S = t["scatter"]
        if sparse:
            S.add_(_sparse_gram(x, transpose=True)).sub_(torch.outer(mu_b, mu_b), alpha=n_b)
        else:
            S.add_(_blas.matmul(x.T, x))  # on one CPU thread by NumPy's BLAS: 1.7 x torch's at 5,000 x 100
        S.add_(torch.outer(between, between))
    else:
        ell = state.meta["sketch_rows"]
        B = torch.cat([t["sketch"], between[None]])
        if x.shape[1] <= COVARIANCE_FD_MAX_D:
            B, shrink = fd_shrink_covariance(B, x, shift, ell)
        else:
            shrink, step = 0.0, _chunk(ell, x.shape[1])
            for s in range(0, n_b, step):
                B, delta = fd_shrink(B, _csr.row_slice(x, s, s + step), shift, ell)
                shrink += delta
        t["sketch"] = B
        t["shrinkage"] += shrink
    t["trace"] += trace_b + between @ between
    mean.add_(mu_b - mean, alpha=n_b / (n_a + n_b))
    state.meta["records_seen"] = n_a + n_b
    return state


def _between(n_a: int, n_b: int, mu_a: torch.Tensor, mu_b: torch.Tensor) -> torch.Tensor:
    return (mu_a - mu_b) * math.sqrt(n_a * n_b / (n_a + n_b))


def _column_sums(x: torch.Tensor) -> torch.Tensor:
    if x.layout == torch.sparse_csr:
        return (x.t() @ torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device))[:, 0]
    return x.sum(0)


def _sparse_gram(x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """X X^T (or X^T X) of a sparse CSR matrix, dense. Through COO: torch 2.13's CSR x CSR product leaks about
    0.25 MB a call (measured), which grew peak memory from 0.6 to 1.8 GB over 10^6 sparse records."""
    c = x.to_sparse_coo()
    return torch.sparse.mm(c.t(), c).to_dense() if transpose else torch.sparse.mm(c, c.t()).to_dense()


def _chunk(ell: int, d: int) -> int:
    """Rows of a batch per shrink. Each shrink costs about l^2 d for the sketch plus (l + c)^3 for the small
    eigenproblem; c near (2 l^2 d)^(1/3) balances them. Any c keeps the bound."""
    return max(ell, min(2048, round((2 * ell * ell * d) ** (1 / 3))))


# Up to this many features a whole batch is shrunk at once through the d x d matrix M^T M (one eigh of d x d per
# batch); above it, in chunks through the small Gram matrix M M^T. Measured on 10^7 x 100 (l = 20): the chunked
# Gram form spent 208 s in 230,000 small eigh calls.
COVARIANCE_FD_MAX_D = 512


def fd_shrink_covariance(D: torch.Tensor, X: torch.Tensor, shift: torch.Tensor,
                         ell: int) -> tuple[torch.Tensor, torch.Tensor | float]:
    """The Frequent Directions step of `fd_shrink` for a whole batch, through C = M^T M (d x d), M = [D; X - 1
    shift^T]: with C = V diag(lambda) V^T, B = diag(sqrt(max(lambda_i - delta, 0))) V_i^T for i <= ell and delta =
    lambda_{ell+1}, so B^T B = C - sum_i min(lambda_i, delta) v_i v_i^T, exactly as `fd_shrink` gives (FD depends
    on M only through M^T M), and the same bound holds: any number of rows may join between shrinks."""
    n = X.shape[0]
    if X.layout == torch.sparse_csr:
        XtX = _sparse_gram(X, transpose=True)
        col = _column_sums(X)
        C = D.T @ D + XtX - torch.outer(col, shift) - torch.outer(shift, col) + n * torch.outer(shift, shift)
    else:
        Xc = X - shift
        C = torch.addmm(D.T @ D, Xc.T, Xc)
    lam, V = torch.linalg.eigh(C)
    lam, V = lam.flip(0), V.flip(1)
    d = C.shape[0]
    delta = lam[ell].clamp(min=0.0) if ell < d else 0.0  # a tensor: not read back from a GPU
    keep = min(ell, d)
    B = (lam[:keep] - delta).clamp(min=0).sqrt()[:, None] * V[:, :keep].T
    if keep < ell:
        B = torch.cat([B, B.new_zeros(ell - keep, d)])
    return B, delta


def fd_shrink(D: torch.Tensor, X: torch.Tensor, shift: torch.Tensor, ell: int) -> tuple[torch.Tensor, float]:
    """One Frequent Directions step: the rows of M = [D; X - 1 shift^T] shrunk to `ell` rows B, and delta.

    With M M^T = U diag(lambda) U^T (lambda descending) and delta = lambda_{ell+1} (0 when M has at most ell
    rows), B = diag(sqrt(1 - delta / lambda_i)) U_i^T M for i <= ell, so B^T B = M^T M - sum_i min(lambda_i,
    delta) v_i v_i^T: the energy removed is at most delta in any direction, and at least (ell + 1) delta in
    total. X may be sparse CSR: M is never formed, only D D^T, X D^T, X X^T and X^T W.
    """
    r = D.shape[0]
    if X.layout == torch.sparse_csr:
        Xs = X @ shift
        XD = X @ D.T - (D @ shift)[None, :]
        XX = _sparse_gram(X) - Xs[:, None] - Xs[None, :] + float(shift @ shift)
        G = torch.cat([torch.cat([D @ D.T, XD.T], 1), torch.cat([XD, XX], 1)])
    else:
        M = torch.cat([D, X - shift])
        G = M @ M.T
    lam, U = torch.linalg.eigh(G)
    lam, U = lam.flip(0), U.flip(1)
    # A sketch as wide as the data (ell >= d) holds M's whole row space: the rest is rounding, not energy.
    delta = max(float(lam[ell]), 0.0) if len(lam) > ell and ell < D.shape[1] else 0.0
    keep = min(ell, len(lam))
    lam_k = lam[:keep]
    scale = torch.where(lam_k > delta, (1 - delta / lam_k.clamp(min=1e-300)).clamp(min=0).sqrt(),
                        torch.zeros_like(lam_k))
    W = U[:, :keep] * scale
    if X.layout == torch.sparse_csr:
        Wd, Wx = W[:r], W[r:]
        B = Wd.T @ D + (X.t() @ Wx).T - torch.outer(Wx.sum(0), shift)
    else:
        B = W.T @ M
    if keep < ell:
        B = torch.cat([B, B.new_zeros(ell - keep, B.shape[1])])
    return B, delta


def merge(a: State, b: State) -> State:
    """The state of both streams: Chan's rule on (n, mean, scatter); sketches are stacked and shrunk."""
    check_mergeable(a, b, ("algorithm_mode",))
    if a.meta.get("sketch_rows") != b.meta.get("sketch_rows"):
        raise IncompatibleStateError(f"cannot merge sketches of {a.meta['sketch_rows']} and "
                                     f"{b.meta['sketch_rows']} rows (num_components + extra_components differ)")
    out = a.copy()
    ta, tb = out.tensors, {k: v.to(a.tensors["mean"].device) for k, v in b.tensors.items()}
    n_a, n_b = a.meta["records_seen"], b.meta["records_seen"]
    if n_b == 0:
        return out
    between = _between(n_a, n_b, ta["mean"], tb["mean"])
    if "scatter" in ta:
        ta["scatter"].add_(tb["scatter"]).add_(torch.outer(between, between))
    else:
        ell = a.meta["sketch_rows"]
        D = torch.cat([ta["sketch"], between[None]])
        ta["sketch"], delta = fd_shrink(D, tb["sketch"], torch.zeros_like(between), ell)
        ta["shrinkage"] += tb["shrinkage"] + delta
    ta["trace"] += tb["trace"] + float(between @ between)
    ta["mean"].add_(tb["mean"] - ta["mean"], alpha=n_b / (n_a + n_b))
    out.meta["records_seen"] = n_a + n_b
    return out


# -------------------------------------------------------------------------------------------- finalize

class PCAModel(Model):
    """Mean, components (K x d, rows by decreasing variance), singular values and explained variance;
    predicts SageMaker's `projection`: (x - mean) projected on the components."""

    algorithm = NAME
    json_key = "projections"  # SageMaker's PCA answers {"projections": [{"projection": [...]}, ...]}

    @property
    def components(self) -> torch.Tensor:
        return self.tensors["components"]

    @property
    def mean(self) -> torch.Tensor:
        return self.tensors["mean"]

    @takes_arrays
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) V^T, shape (n, K); x dense or sparse CSR (the mean is subtracted after the product)."""
        V = self.components.to(x.device, torch.float64)
        return x.to(torch.float64) @ V.T - (self.mean.to(x.device, torch.float64) @ V.T)[None, :]

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        """Back to the data space: z V + mean, shape (n, d)."""
        V = self.components.to(z.device, torch.float64)
        return z.to(torch.float64) @ V + self.mean.to(z.device, torch.float64)

    @takes_arrays
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"projection": self.transform(x).to(torch.float32)}


Model = PCAModel


def _choice(state: State, choice: dict[str, Any]) -> dict[str, Any]:
    base = {k: state.hyperparameters.get(k, v) for k, v in CHOICES.defaults().items()}
    c = CHOICES.parse({k: v for k, v in choice.items() if v is not None}, base=base)
    if state.meta["records_seen"] == 0:
        raise UsageError("the state has seen no records: nothing to finalize")
    most = available_components(state, c["subtract_mean"])
    if c["num_components"] > most:
        raise UsageError(f"num_components = {c['num_components']} is more than the state holds; valid values: "
                         f"1 to {most}")
    return c


def available_components(state: State, subtract_mean: bool = True) -> int:
    """The most components finalize can give: d (regular) or the sketch's rows (randomized)."""
    d = state.meta["n_features"]
    if "sketch" in state.tensors:
        return min(d, state.meta["sketch_rows"] + (0 if subtract_mean else 1))
    return d


def spectrum(state: State, subtract_mean: bool = True) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Eigenvalues (descending) and eigenvectors (rows) of the scatter the state holds, and its exact trace.

    The scatter is S (centred) or S + n mu mu^T (uncentred). Regular: eigendecomposition of the d x d matrix;
    randomized: SVD of the sketch (with the row sqrt(n) mu for the uncentred case).
    """
    t, n = state.tensors, state.meta["records_seen"]
    mu = t["mean"]
    total = float(t["trace"]) + (0.0 if subtract_mean else n * float(mu @ mu))
    if "scatter" in t:
        S = t["scatter"] if subtract_mean else t["scatter"] + n * torch.outer(mu, mu)
        lam, V = torch.linalg.eigh((S + S.T) / 2)
        lam, V = lam.flip(0), V.flip(1).T
    else:
        B = t["sketch"] if subtract_mean else torch.cat([t["sketch"], math.sqrt(n) * mu[None]])
        _, s, V = torch.linalg.svd(B, full_matrices=False)
        lam = s * s
    return lam.clamp(min=0), _flip_signs(V), total


def _flip_signs(V: torch.Tensor) -> torch.Tensor:
    """Each component's largest-magnitude entry made positive (scikit-learn's svd_flip on V)."""
    biggest = V.abs().argmax(1)
    signs = torch.sign(V[torch.arange(len(V), device=V.device), biggest])
    return V * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]


def finalize(state: State, **choice: Any) -> PCAModel:
    """The model with `num_components` components (default: the state's), centred or not; the state is unchanged.

    singular_values are those of the (centred) data matrix, sqrt(lambda_i), and explained_variance is
    lambda_i / (n - 1), as scikit-learn's PCA defines them; explained_variance_ratio divides by the exact total.
    """
    c = _choice(state, choice)
    K, n = c["num_components"], state.meta["records_seen"]
    lam, V, total = spectrum(state, c["subtract_mean"])
    lam = lam[:K]
    mean = state.tensors["mean"] if c["subtract_mean"] else torch.zeros_like(state.tensors["mean"])
    share = (lambda v: (v / total if total > 0 else torch.zeros_like(v)).tolist())  # noqa: E731
    meta = {"num_components": K, "n_features": state.meta["n_features"], "records": n,
            "subtract_mean": c["subtract_mean"], "algorithm_mode": state.hyperparameters["algorithm_mode"],
            "total_variance": total / max(n - 1, 1), "choice": c}
    if "shrinkage" in state.tensors:
        delta = float(state.tensors["shrinkage"])
        meta["variance_error_bound"] = delta / max(n - 1, 1)  # no direction's variance is off by more than this
        meta["explained_variance_ratio_lower"] = share(lam)  # guaranteed: the sketch never overstates
        # resolved: the guaranteed range of the explained share is at most a factor 2 wide (sum sigma^2 >= K
        # Delta). Measured at l = 20: structured sets stay within a factor 1.7 (digits 1.14, power law 1.49, the
        # sparse bag-of-words at d = 10^5 1.70); noise-like sets, whose components miss the optimum by 33-54 %,
        # are about 150 x wide.
        meta["resolved"] = bool(float(lam.sum()) >= K * delta)
        lam = _sketched_variances(lam, delta, total)
    meta["explained_variance_ratio"] = share(lam)
    tensors = {"mean": mean.clone(), "components": V[:K].contiguous(), "singular_values": lam.sqrt(),
               "explained_variance": lam / max(n - 1, 1)}
    return PCAModel(tensors, meta)


def _sketched_variances(sigma2: torch.Tensor, delta: float, total: float) -> torch.Tensor:
    """The variance along each sketched component: sigma_i^2 + Delta, at most what the exact total leaves.

    A component's true variance lies in [sigma_i^2, sigma_i^2 + Delta] (the bound above), and a direction the
    sketch held through every shrink lost exactly Delta (each shrink takes delta from every kept direction), so
    the top of the range is where the top components of structured data are. Measured (benchmarks/
    sketch_error.py, k = 10 at l = 20): the components' true share of the variance against sum sigma_i^2 and
    against this estimate: digits 0.738 (0.649, 0.738), power-law spectrum 0.392 (0.265, 0.394), 10 spikes over
    noise 0.498 (0.481, 0.498), sparse bag-of-words at d = 10^5 0.110 (0.068, 0.116). Where the sketch has not
    resolved the components (noise-like data: `resolved` is false and the summary says so) the estimate
    overstates: 0.022 against 0.162 for the bag-of-words at d = 1,000."""
    est = sigma2 + delta
    room = (total - torch.cumsum(est, 0) + est).clamp(min=0)  # what the exact total leaves for each component
    return torch.minimum(est, room)


def evaluate(model: PCAModel, batch: Batch) -> dict[str, float]:
    """Squared reconstruction distances over one batch; the trainer reports their mean as msd."""
    x = batch.x.to(torch.float64)
    if x.layout == torch.sparse_csr:  # |x - mean|^2 - |z|^2 (orthonormal components), never a dense batch
        z, mean = model.transform(x), model.mean.to(x.device, torch.float64)
        centred = float((x.values() ** 2).sum() - 2 * (x @ mean).sum()) + len(z) * float(mean @ mean)
        return {"ssd": max(centred - float((z * z).sum()), 0.0), "count": float(len(z))}
    r = x - model.inverse_transform(model.transform(x))
    return {"ssd": float((r * r).sum()), "count": float(len(x))}


def describe(state: State) -> dict[str, Any]:
    """What a user wants to see of a state."""
    n = state.meta["records_seen"]
    out: dict[str, Any] = {"records_seen": n, "algorithm_mode": state.hyperparameters["algorithm_mode"],
                           "total_variance": float(state.tensors["trace"]) / max(n - 1, 1)}
    if "sketch" in state.tensors:
        out["sketch_rows"] = state.meta["sketch_rows"]
        out["variance_error_bound"] = float(state.tensors["shrinkage"]) / max(n - 1, 1)
    return out


def summary(model: PCAModel) -> list[str]:
    """Lines for the command line: the components and how much of the variance they explain."""
    m = model.meta
    ratio, lower = m["explained_variance_ratio"], m.get("explained_variance_ratio_lower")  # older models lack it
    explained = f"{sum(ratio):.4%}" if m.get("resolved") is not False else \
        f"unresolved, between {sum(lower):.4%} and {sum(ratio):.4%}"
    lines = [f"model: {m['num_components']} components ({'centred' if m['subtract_mean'] else 'uncentred'}, "
             f"{m['algorithm_mode']}), explained variance {explained} of {m['total_variance']:,.6g}"]
    lines.append("  ratio per component: " + ", ".join(f"{r:.4f}" for r in ratio[:20])
                 + (" ..." if len(ratio) > 20 else ""))
    if "variance_error_bound" in m:
        lines.append(f"  sketch error bound: every direction's variance within {m['variance_error_bound']:,.6g}"
                     + (f"; explained variance at least {sum(lower):.4%}" if lower is not None else ""))
        if m.get("resolved") is False:
            lines.append(f"  warning: the sketch does not resolve {m['num_components']} components of this data "
                         "(its error bound is more than they retain): the components and their share are "
                         "unreliable; use a larger extra_components or regular mode")
    return lines
