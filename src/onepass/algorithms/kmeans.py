"""Streaming k-means: a one-pass weighted summary of K = k x extra_center_factor centres, reduced to any k at
finalize by weighted k-means++ and Lloyd, without reading the data again.

The summary.  Each of the K slots holds a centre c, a weight w (records it stands for) and the sum of squared
distances of those records to c (`sse`). A mini-batch is absorbed in three steps:

1. While slots are free, batch records fill them (chosen at random or by k-means++ sampling).
2. Facility location: a record far from every centre is opened as a centre of its own when that costs less
   than the cheapest merge of two existing centres (Ward's cost w_a w_b / (w_a + w_b) |c_a - c_b|^2), so
   that a region of the space that appears late in the stream (unshuffled data) still gets centres.
3. Every other record joins its nearest centre; centre, weight and sse are updated exactly:
       w' = w + n,   c' = (w c + sum x) / w',   sse' = sse + sum |x - c|^2 - w' |c' - c|^2.

Merging two summaries stacks their slots and merges the cheapest pairs (Ward) until K remain; the sse
bookkeeping stays exact.

Refinement of the training k.  A summary of weighted centres cannot tell how the records behind one centre
would split between two final centres, and in high dimension that costs: on 10^6 50-dimensional records at
k = 100, Lloyd on the summary ended 1.2 % above Lloyd on the data. So once the summary is full and has seen
REFINE_AFTER x K records, the state also keeps the reduction to the training k and moves it with every later
record, as online Lloyd (MacQueen) does: each centre is the running mean of the records nearest to it. The
running means restart whenever the stream doubles in length, so that each segment averages records assigned by
centres that have settled (0.1 % above Lloyd on the data in that measurement).

A uniform sample.  The state keeps a reservoir sample of the records (Vitter's algorithm R; merged exactly).
finalize picks between the summary's reduction, the refined centres and the refined centres polished by Lloyd
on the summary, by their cost on the sample, since online refinement can also lose (a drifting stream), and
reports that cost, scaled to the stream, as the model's estimated cost: unbiased, and exact while the stream fits
in the sample.  With a half-life the sample and the refinement are off (the decayed stream has no uniform sample)
and the cost is the summary's estimate, an upper bound.

Wide records.  The update's work is the search of each batch against the K centres and Ward's search among
them, K d (n + K) a batch of n, and the reductions to k (at the refinement's start and at finalize) grow with K
too. From WIDE_FROM = 100 features on, auto keeps 5 k centres instead of 20 k: at high dimension the model comes
from the refined centres (online Lloyd over the stream), not the summary's reduction, and a smaller summary starts
refining sooner (REFINE_AFTER x K records). Measured at k = 100 (benchmarks/profile_kmeans_hd.py, CPU seconds
of update + finalize on a loaded machine; cost on every record):
- 60,000 digits upsampled to 784 features: 20 k centres 14.5 s (nearest-centre search 3.4, Ward's search and
  opening 1.1, the search again after opening 1.1, absorbing 0.5, sample 0.1, refinement (its start a reduction
  to k) 3.9, finalize 4.6), 1.18 % above scikit-learn's KMeans; 10 k 1.26 %; 5 k 6.7 s (1.7, 0.1,
  0.4, 0.2, 0.1, 2.1, 1.9), 0.86 % above KMeans and 0.99 % below MiniBatchKMeans.
- 10^5 records of a 500-feature mixture with a decaying spectrum: 20 k 12.5 s, 5 k 6.4 s and 0.77 % cheaper.
Finishing with Lloyd over the reservoir sample (10,000 records) was worse on the digits, +1.1 % over KMeans:
100 records a centre in 784 dimensions over-fit; nor did keeping half the running means' counts at each
restart help (+0.87 %). Below 100 features (kdd04's 74, the 50-feature blobs) nothing changes.

Sparse records (LibSVM, sparse RecordIO-protobuf).  A batch wider than DENSE_WIDTH features stays a sparse CSR
tensor: distances are |x|^2 - 2 x.c + |c|^2 with the sparse product x C^T (float64), the centre sums a scatter of
the batch's entries, and only the rows that become centres or sample records are made dense. The summary, the
refined centres and the sample stay dense (K x d, k x d, and the sample within SAMPLE_BYTES). Everything else
(merge, finalize, resume) sees the same state as for dense records.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import _blas, _files
from . import _csr
from ..data.batches import Batch
from ..errors import UsageError
from ..hyperparameters import HP, HyperParameters
from ..state import State
from .base import Model, check_mergeable, takes_arrays

NAME = "kmeans"
HALF_LIFE = "half_life_time_size"  # what train's half_life sets: a record's weight halves after that many records
VERSION = 2  # 2: the refined centres and the reservoir sample
# SageMaker's `auto` keeps 10 k centres ("shrinking 80 centers into 8"). Measured on digits (k = 10), the
# reduced model's cost was within 2.3 % of scikit-learn's KMeans with 10 k and within 1.3 % with 20 k: 20 it is.
AUTO_CENTER_FACTOR = 20
# From WIDE_FROM features on, auto keeps WIDE_CENTER_FACTOR x k centres (see "Wide records" above).
WIDE_FROM, WIDE_CENTER_FACTOR = 100, 5
AUTO_TRIALS = 10
BATCHED_DISTANCES = 1 << 23  # float64 distances one k-means++ pick of several trials at once may hold (64 MiB)
SMALL_PREDICT = 1 << 16  # records x centres x features up to which predict takes exact differences at once
FILL_ROUNDS = 64  # k-means++ fills the summary's free slots in about this many rounds of draws
SETS_PER_PRODUCT = 4096  # centres of several sets that one search product takes at once (Lloyd's trials)
# Refinement starts after REFINE_AFTER x K records: started after 2 K or 5 K (10^6 x 50 blobs, k = 100) the
# reduction it starts from was still poor and the result 0.8 % worse than after 20 K.
REFINE_AFTER = 20
SAMPLE_RECORDS = 10_000  # the reservoir's size, cut so that it holds at most SAMPLE_BYTES of float32
SAMPLE_BYTES = 64 << 20
STRUCTURAL = ("k", "extra_center_factor", "feature_dim")
ACCEPTS_SPARSE = True  # update, predict and evaluate take sparse CSR batches (the trainer asks)
# A sparse batch up to this many features wide is made dense, so that it gives the very model a dense source of
# the same records gives; wider ones stay sparse (`_records`). Sparse is faster from there on: 40,000 records of
# 10 entries, k = 10, one thread: 0.34 s against 0.50 s dense at 100 features, 0.59 / 1.56 s at 300, 1.5 / 6.1 s
# at 1,000 (denser data would move the crossover up; narrow data's memory is no concern either way).
DENSE_WIDTH = 100  # fix the state's shape: --init-from keeps them


def _check(hp: dict[str, Any]) -> None:
    if hp["k"] is None:
        raise UsageError("hyperparameter k is required: the number of clusters (an integer >= 1)")


HYPERPARAMETERS = HyperParameters([
    HP("k", "int", None, "number of clusters of the default model; finalize can pick another k later", low=1),
    HP("feature_dim", "int", None, "number of features; checked against the data when given", low=1),
    HP("extra_center_factor", "int", "auto", "the summary keeps k x this many centres (auto: 20, 5 from "
       "100 features on)",
       low=1, auto=True),
    HP("init_method", "str", "kmeans++", "how the first records fill the summary's slots (SageMaker's "
       "default is random; k-means++ measured better)",
       choices=("random", "kmeans++")),
    HP("half_life_time_size", "int", 0, "records after which a record's weight halves (0: no decay)", low=0),
    HP("local_lloyd_max_iter", "int", 300, "Lloyd iterations at most when reducing the summary to k", low=1),
    HP("local_lloyd_tol", "float", 1e-4, "stop Lloyd when the cost improves by less than this fraction",
       low=0.0, high=1.0),
    HP("local_lloyd_num_trials", "int", "auto", "seedings tried when reducing to k; the cheapest wins (auto: 10)",
       low=1, auto=True),
    HP("local_lloyd_init_method", "str", "kmeans++", "seeding of the reduction to k",
       choices=("kmeans++", "random")),
    HP("eval_metrics", "list", ["msd"], "metrics on validation data: msd (mean squared distance) and/or "
       "ssd (sum of squared distances)", choices=("msd", "ssd")),
    HP("epochs", "int", 1, "passes over the data", low=1),
    HP("mini_batch_size", "int", 5000, "records per mini-batch", low=1),
], check=_check)

# What finalize may choose, with the state's hyperparameters as defaults.
CHOICES = HyperParameters([
    HP("k", "int", None, "number of clusters, up to the summary's size", low=1),
    HP("local_lloyd_max_iter", "int", 300, "Lloyd iterations at most", low=1),
    HP("local_lloyd_tol", "float", 1e-4, "relative cost improvement that stops Lloyd", low=0.0, high=1.0),
    HP("local_lloyd_num_trials", "int", "auto", "seedings tried (auto: 10)", low=1, auto=True),
    HP("local_lloyd_init_method", "str", "kmeans++", "seeding", choices=("kmeans++", "random")),
])


def summary_size(hp: dict[str, Any], n_features: int = 0) -> int:
    factor = hp["extra_center_factor"]
    return hp["k"] * (auto_center_factor(n_features) if factor == "auto" else int(factor))


def auto_center_factor(n_features: int) -> int:
    """The summary's centres per final centre when `extra_center_factor` is auto (see WIDE_CENTER_FACTOR)."""
    return AUTO_CENTER_FACTOR if n_features < WIDE_FROM else WIDE_CENTER_FACTOR


# ----------------------------------------------------------------------------------------------- state

def init(hyperparameters: dict[str, Any], n_features: int, seed: int = 0,
         device: str | torch.device = "cpu") -> State:
    """An empty summary of K slots for `n_features`-dimensional records."""
    hp = HYPERPARAMETERS.parse(hyperparameters)
    if n_features < 1:
        raise UsageError("the data has no features: nothing to cluster")
    if hp["feature_dim"] is not None and hp["feature_dim"] != n_features:
        raise UsageError(f"hyperparameter feature_dim = {hp['feature_dim']} but the data has {n_features} features")
    K = summary_size(hp, n_features)
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        "centers": torch.zeros(K, n_features, dtype=torch.float64, device=device),
        "weights": torch.zeros(K, dtype=torch.float64, device=device),
        "sse": torch.zeros(K, dtype=torch.float64, device=device),
        "rng": _files.rng_to_tensor(gen),
    }
    meta = {"n_features": n_features, "summary_size": K, "n_active": 0, "records_seen": 0,
            "arrival_sse": 0.0, "seed": seed, "algorithm_version": VERSION}
    state = State(NAME, hp, tensors, meta)
    _add_refinement(state, device)
    return state


def sample_size(hp: dict[str, Any], n_features: int) -> int:
    """Records the reservoir keeps: none under a half-life, else SAMPLE_RECORDS within SAMPLE_BYTES."""
    if hp["half_life_time_size"]:
        return 0
    return max(1, min(SAMPLE_RECORDS, SAMPLE_BYTES // (4 * n_features)))


def _add_refinement(state: State, device: str | torch.device | None = None) -> None:
    """The refined centres and the sample (empty), also for a state written by version 1."""
    t, meta, hp = state.tensors, state.meta, state.hyperparameters
    if "sample" in t:
        return
    device = device if device is not None else t["centers"].device
    d = meta["n_features"]
    t["refined"] = torch.zeros(hp["k"], d, dtype=torch.float64, device=device)
    t["refined_count"] = torch.zeros(hp["k"], dtype=torch.float64, device=device)
    t["sample"] = torch.zeros(sample_size(hp, d), d, dtype=torch.float32, device=device)
    # sample_seen: the records the reservoir was offered (all of them, except in a state written by version 1,
    # whose sample starts at the upgrade); refine_restart_at: the record count at which the running means
    # restart, 0 while not refining
    meta.update(sample_seen=0, sample_filled=0, refine_restart_at=0, algorithm_version=VERSION)


def update(state: State, batch: Batch) -> State:
    """Absorb one mini-batch (the state's tensors are updated in place and returned)."""
    t, meta, hp = state.tensors, state.meta, state.hyperparameters
    C, w, sse = t["centers"], t["weights"], t["sse"]
    x = _records(batch.x, C.device)
    if x.shape[1] != C.shape[1]:
        raise UsageError(f"the state has {C.shape[1]} features, this batch {x.shape[1]}")
    n = x.shape[0]
    gen = _files.tensor_to_rng(t["rng"])
    if hp["half_life_time_size"]:
        decay = 0.5 ** (n / hp["half_life_time_size"])
        w.mul_(decay)
        sse.mul_(decay)
    active = meta["n_active"]
    rest = x

    # 1. Fill free slots with records of the batch.
    if active < C.shape[0]:
        take = min(C.shape[0] - active, n)
        if take == n:  # every record of the batch gets a slot: no choice to make
            chosen = torch.arange(n, device=C.device)
        elif hp["init_method"] == "kmeans++":
            chosen = _kmeanspp(x, torch.ones(n, dtype=torch.float64, device=C.device), take, gen,
                               existing=C[:active])
        else:
            chosen = torch.randperm(n, generator=gen)[:take].to(C.device)
        C[active:active + take] = _csr.dense_rows(x, chosen)
        w[active:active + take] = 1.0
        sse[active:active + take] = 0.0
        keep = torch.ones(n, dtype=torch.bool, device=C.device)
        keep[chosen] = False
        rest = _csr.take(x, keep)
        active += take
        meta["n_active"] = active

    arrival = 0.0
    if rest.shape[0]:
        idx, d2 = _nearest(rest, C[:active])
        # 2. Facility location: open far records as centres where a Ward merge is cheaper.
        opening, arrival = _open_far_records(rest, d2, C, w, sse, active)
        if opening is not None:
            opened, changed = opening
            rest, idx, d2 = _csr.take(rest, ~opened), idx[~opened], d2[~opened]
            idx, d2 = _renearest(rest, idx, d2, C[:active], changed)
        # 3. Absorb the rest into their nearest centres, exactly.
        _absorb(rest, idx, d2, C, w, sse)
    _add_refinement(state)
    meta["sample_filled"] = _reservoir(t["sample"], meta["sample_seen"], x, gen)
    meta["sample_seen"] += n
    meta["records_seen"] += n
    meta["arrival_sse"] += arrival
    _refine(state, x)
    t["rng"] = _files.rng_to_tensor(gen)
    return state


def _reservoir(sample: torch.Tensor, seen: int, x: torch.Tensor, gen: torch.Generator) -> int:
    """Keep `sample` a uniform sample of all records so far (algorithm R); returns how many rows it holds.

    Record number t (0-based) replaces a uniformly drawn row j in [0, t] if j < m; when two records of a batch
    draw the same row, the later one wins, as in the sequential algorithm.
    """
    m, n = len(sample), x.shape[0]
    if m == 0:
        return 0
    fill = min(max(m - seen, 0), n)
    sample[seen:seen + fill] = _csr.dense_rows(x, torch.arange(fill, device=x.device)).to(torch.float32)
    if fill < n:
        t = torch.arange(seen + fill, seen + n, dtype=torch.float64)
        j = (torch.rand(n - fill, generator=gen, dtype=torch.float64) * (t + 1)).long()
        rows = torch.nonzero(j < m).squeeze(1)
        if len(rows):
            slots, inverse = torch.unique(j[rows], return_inverse=True)
            last = torch.full((len(slots),), -1, dtype=torch.long).scatter_reduce_(0, inverse, rows, "amax")
            sample[slots.to(sample.device)] = _csr.dense_rows(x, (fill + last).to(x.device)).to(torch.float32)
    return min(m, seen + n)


def _refine(state: State, x: torch.Tensor) -> None:
    """Online Lloyd of the training k over the stream, started from the summary's reduction (see above)."""
    t, meta = state.tensors, state.meta
    if len(t["sample"]) == 0:  # a half-life: no refinement
        return
    if meta["refine_restart_at"] == 0:
        if meta["n_active"] < meta["summary_size"] or meta["records_seen"] < REFINE_AFTER * meta["summary_size"]:
            return
        t["refined"].copy_(_reduce(state, _choice(state, {}), on_records=False)[0])
        t["refined_count"].zero_()
        meta["refine_restart_at"] = 2 * meta["records_seen"]
        return
    R, count = t["refined"], t["refined_count"]
    idx = _nearest(x, R, with_d2=False)
    n = _counts(idx, len(R))
    sums = _csr.index_add_rows(torch.zeros_like(R), idx, x)
    count += n  # + 0 where no record came: unchanged
    # running means, where records came (a select, not a boolean mask: no read from a GPU)
    R.copy_(torch.where((n > 0)[:, None], R + (sums - n[:, None] * R) / count[:, None], R))
    if meta["records_seen"] >= meta["refine_restart_at"]:
        count.zero_()
        meta["refine_restart_at"] = 2 * meta["records_seen"]


def _nearest(x: torch.Tensor, C: torch.Tensor, with_d2: bool = True):
    """Index of and squared distance to the nearest centre, for each row of x (float32 search, exact d2);
    the index alone when not `with_d2`."""
    found = _nearest_sets(x, C[None], with_d2)
    return (found[0][0], found[1][0]) if with_d2 else found[0]


def _nearest_sets(x: torch.Tensor, C: torch.Tensor, with_d2: bool = True):
    """`_nearest` for each of S sets of centres at once (C: (S, k, d)): indices and squared distances, (S, n).

    Up to SETS_PER_PRODUCT // k sets share one product a row block, so that Lloyd's trials take one search a
    step between them rather than one each (finalize on kdd04 at k = 100: 0.18-0.28 s -> 0.15 s).
    """
    S, k, d = C.shape
    per = max(1, SETS_PER_PRODUCT // k)
    if S > per:
        parts = [_nearest_sets(x, C[s:s + per], with_d2) for s in range(0, S, per)]
        return tuple(torch.cat(p) for p in zip(*parts)) if with_d2 else torch.cat(parts)
    if _csr.is_csr(x):
        return _nearest_sets_sparse(x, C, with_d2)
    # Row blocks of at most 4 MiB of distances: larger temporaries are fresh mmaps whose page faults cost as
    # much system time as the search itself (measured at K = 2000); and ten blocks of a 5,000-record batch at
    # K = 2000 share out evenly over two threads (_blas.row_blocks: 10.4 -> 6.3 ms on 2 cores).
    chunk = max(256, (1 << 20) // (S * k))
    n = x.shape[0]
    idx = torch.empty(S, n, dtype=torch.long, device=x.device)
    flat = C.reshape(S * k, d)
    ref = flat.mean(0)  # centred before the float32 search, so large offsets cost no precision
    C32 = (flat - ref).to(torch.float32)
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every centre, so it is left out of argmin. The rest
    # is one product, [x, 1] . [-2 c, |c|^2] (the bias rides in it: no pass of its own over the distances).
    Caug = torch.cat([-2.0 * C32, (C32 * C32).sum(1, keepdim=True)], 1)

    def block(s: int, e: int) -> None:
        xs = torch.empty(e - s, d + 1, dtype=torch.float32, device=x.device)
        xs[:, d] = 1.0
        xs[:, :d] = x[s:e] - ref
        idx[:, s:e] = _row_argmin(_blas.matmul(xs, Caug.T).view(e - s, S, k)).T

    _blas.row_blocks(n, chunk, block)
    if not with_d2:
        return idx
    d2 = torch.empty(S, n, dtype=x.dtype, device=x.device)
    for j in range(S):
        diff = x - C[j][idx[j]]
        d2[j] = diff.mul_(diff).sum(1)
    return idx, d2


def _nearest_sets_sparse(x: torch.Tensor, C: torch.Tensor, with_d2: bool = True):
    """`_nearest_sets` for a sparse CSR x: d2 = |x|^2 - 2 x.c + |c|^2 with a sparse product x C^T, in float64
    (the product costs entries x centres, not records x width), never a dense batch. Not centred first as the dense
    search is: that would make x dense; float64 keeps the cancellation harmless for records near the origin."""
    S, k, d = C.shape
    n = x.shape[0]
    flat = C.reshape(S * k, d)
    flat_t = flat.T.contiguous()
    cc = (flat * flat).sum(1)
    xx = _csr.sq_norms(x)
    idx = torch.empty(S, n, dtype=torch.long, device=x.device)
    d2 = torch.empty(S, n, dtype=x.dtype, device=x.device)
    chunk = max(256, (1 << 20) // (S * k))  # row blocks of at most 8 MiB of distances
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        D = (_csr.row_slice(x, s, e) @ flat_t).mul_(-2.0).add_(cc).view(e - s, S, k)  # |x|^2 left for later
        j = _row_argmin(D)                                                            # (e - s, S)
        idx[:, s:e] = j.T
        if with_d2:
            d2[:, s:e] = (D.gather(2, j[..., None])[..., 0] + xx[s:e, None]).clamp_(min=0.0).T
    return (idx, d2) if with_d2 else idx


def _records(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch as float64 on `device`: dense as it comes, and a sparse CSR batch dense too while it is at most
    DENSE_WIDTH features wide, else still sparse (every step below takes either)."""
    x = x.to(device, torch.float64)
    if _csr.is_csr(x) and x.shape[1] <= DENSE_WIDTH:
        return x.to_dense()
    return x


def _row_argmin(D: torch.Tensor) -> torch.Tensor:
    """The index of the minimum along the last axis (the first one on ties, as torch's argmin). On the CPU
    through NumPy, whose vectorized argmin is 4-5 times torch's (5,000 x 200 float32: 0.20 ms against 0.93 ms on
    one thread; 5,000 x 2,000: 1.4 ms against 6.8 ms): a fifth of the update's time at K = 200."""
    if D.device.type == "cpu":
        return torch.from_numpy(np.argmin(D.numpy(), axis=-1))
    return D.argmin(-1)


def _absorb(x: torch.Tensor, idx: torch.Tensor, d2: torch.Tensor, C: torch.Tensor, w: torch.Tensor,
            sse: torch.Tensor) -> None:
    """Add records x to their centres idx (d2: their squared distances to them), updating c, w, sse exactly."""
    K = C.shape[0]
    count = _counts(idx, K)
    sums = _csr.index_add_rows(torch.zeros_like(C), idx, x)
    d2_old = torch.zeros(K, dtype=torch.float64, device=C.device).index_add_(0, idx, d2)
    # Every slot computed, then kept where records came: boolean masks would read their counts from a GPU (the
    # slots no record reached, empty ones included, compute 0/0 and are not kept).
    hit = count > 0
    w_new = w + count
    c_new = (w[:, None] * C + sums) / w_new[:, None]
    sse.copy_(torch.where(hit, sse + d2_old - w_new * ((c_new - C) ** 2).sum(1), sse)).clamp_(min=0.0)
    C.copy_(torch.where(hit[:, None], c_new, C))
    w.copy_(torch.where(hit, w_new, w))


def _counts(idx: torch.Tensor, K: int) -> torch.Tensor:
    """Records per centre, float64 (K,): an index_add, since bincount reads its length back from a GPU."""
    return torch.zeros(K, dtype=torch.float64, device=idx.device).index_add_(
        0, idx, torch.ones(len(idx), dtype=torch.float64, device=idx.device))


def _ward_nearest(C: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each centre, the cheapest Ward merge cost w_a w_b / (w_a + w_b) |c_a - c_b|^2 and its partner.

    A float32 search (centred, like `_nearest`): it only picks candidates; `_ward_cost` prices a chosen pair
    exactly. Computed in row blocks of at most 4 MiB, so memory is O(K) rather than O(K^2), and the blocks can
    be shared out over threads (_blas.row_blocks).
    """
    chunk = max(64, (1 << 20) // len(C))
    Cc = (C - C.mean(0)).to(torch.float32)
    sq = (Cc * Cc).sum(1, keepdim=True)
    ones = torch.ones_like(sq)
    # |c_a - c_b|^2 = [c_a, |c_a|^2, 1] . [-2 c_b, 1, |c_b|^2]: one product, no broadcast sums (as in _nearest)
    left, right = torch.cat([Cc, sq, ones], 1), torch.cat([-2.0 * Cc, ones, sq], 1)
    inv = (1.0 / w).to(torch.float32)  # w_a w_b / (w_a + w_b) = 1 / (1/w_a + 1/w_b)
    best = torch.empty(len(C), dtype=torch.float64, device=C.device)
    partner = torch.empty(len(C), dtype=torch.long, device=C.device)

    def block(s: int, e: int) -> None:
        cost = _blas.matmul(left[s:e], right.T).clamp_(min=0.0)
        cost.div_(inv[s:e, None] + inv[None, :])
        cost[torch.arange(e - s), torch.arange(s, e)] = math.inf
        j = _row_argmin(cost)
        partner[s:e] = j
        best[s:e] = cost.gather(1, j[:, None])[:, 0].to(torch.float64)

    _blas.row_blocks(len(C), chunk, block)
    return best, partner


def _ward_cost(a: int, b: int, C: torch.Tensor, w: torch.Tensor) -> float:
    """The exact (float64) increase of the summary's cost when centres a and b merge."""
    wa, wb = float(w[a]), float(w[b])
    return wa * wb / (wa + wb) * float(((C[a] - C[b]) ** 2).sum())


def _cheapest_pairs(best: torch.Tensor, partner: torch.Tensor, limit: int) -> list[tuple[int, int, float]]:
    """Up to `limit` disjoint pairs (a, nearest partner of a), cheapest first (greedy)."""
    order = torch.argsort(best).tolist()
    best, partner = best.tolist(), partner.tolist()
    used: set[int] = set()
    pairs = []
    for a in order:
        if len(pairs) >= limit or best[a] == math.inf:
            break
        b = partner[a]
        if a in used or b in used:
            continue
        used.update((a, b))
        pairs.append((a, b, best[a]))
    return pairs


def _merge_into(a: int, b: int, cost: float, C, w, sse) -> None:
    wa, wb = w[a], w[b]
    C[a] = (wa * C[a] + wb * C[b]) / (wa + wb)
    sse[a] = sse[a] + sse[b] + cost
    w[a] = wa + wb


def _open_far_records(x, d2, C, w, sse, active: int) -> tuple[tuple[torch.Tensor, list[int]] | None, float]:
    """Open the farthest records as centres where that is cheaper than the cheapest disjoint Ward merges.

    Returns the opened records (a mask of x) and the centres that changed, or None when nothing opened; and the
    records' cost on arrival (the sum of d2).
    """
    if active < C.shape[0] or active < 2:
        return None, float(d2.sum())
    limit = max(1, active // 8)
    far = torch.topk(d2, min(limit, len(d2))).indices  # farthest first
    # Joining its nearest centre adds about d2 to the cost; the cheapest merge adds `cost`.
    best, partner = _ward_nearest(C[:active], w[:active])
    # The one read from a GPU a steady-state batch makes: whether to open is a host decision (the greedy loop
    # below), read together with the arrival cost for the metadata.
    arrival, farthest, cheapest = torch.cat([d2.sum()[None], d2[far[:1]], best.min()[None]]).tolist()
    if farthest <= cheapest:
        return None, arrival
    pairs = _cheapest_pairs(best, partner, limit)
    gains = d2[far].tolist()
    opened = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    changed = []
    for i, ((a, b, _), r, gain) in enumerate(zip(pairs, far.tolist(), gains)):
        cost = _ward_cost(a, b, C, w)
        if gain <= cost:
            break
        _merge_into(a, b, cost, C, w, sse)
        C[b], w[b], sse[b] = _csr.dense_rows(x, far[i:i + 1])[0], 1.0, 0.0
        opened[r] = True
        changed += [a, b]
    return ((opened, changed) if changed else None), arrival


def _renearest(x: torch.Tensor, idx: torch.Tensor, d2: torch.Tensor, C: torch.Tensor,
               changed: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centres again after the centres `changed` moved, searching no more than needed: a record whose
    centre moved searches them all; any other record can only have come nearer to one of the moved centres."""
    moved = torch.tensor(changed, dtype=torch.long, device=C.device)
    lost = torch.isin(idx, moved)
    idx, d2 = idx.clone(), d2.clone()
    if lost.any():
        idx[lost], d2[lost] = _nearest(_csr.take(x, lost), C)
    kept = (~lost).nonzero().squeeze(1)
    if len(kept):
        j, dj = _nearest(_csr.take(x, kept), C[moved])
        closer = dj < d2[kept]
        idx[kept[closer]], d2[kept[closer]] = moved[j[closer]], dj[closer]
    return idx, d2


def merge(a: State, b: State) -> State:
    """One summary of both streams: stack the slots, merge the cheapest pairs until K remain."""
    check_mergeable(a, b, ("k", "extra_center_factor", "half_life_time_size"))
    _add_refinement(a)
    _add_refinement(b)
    na, nb = a.meta["n_active"], b.meta["n_active"]
    C = torch.cat([a.tensors["centers"][:na], b.tensors["centers"][:nb].to(a.tensors["centers"].device)])
    w = torch.cat([a.tensors["weights"][:na], b.tensors["weights"][:nb].to(C.device)])
    sse = torch.cat([a.tensors["sse"][:na], b.tensors["sse"][:nb].to(C.device)])
    K = a.meta["summary_size"]
    while len(C) > K:
        pairs = _cheapest_pairs(*_ward_nearest(C, w), len(C) - K)
        gone = []
        for i, j, _ in pairs:
            _merge_into(i, j, _ward_cost(i, j, C, w), C, w, sse)
            gone.append(j)
        keep = torch.ones(len(C), dtype=torch.bool, device=C.device)
        keep[gone] = False
        C, w, sse = C[keep], w[keep], sse[keep]
    out = init(a.hyperparameters, a.meta["n_features"], a.meta["seed"], C.device)
    if out.meta["summary_size"] != K:  # a state from before auto's size depended on the width keeps its size
        for name in ("centers", "weights", "sse"):
            out.tensors[name] = out.tensors[name].new_zeros((K,) + tuple(out.tensors[name].shape[1:]))
        out.meta["summary_size"] = K
    m = len(C)
    out.tensors["centers"][:m], out.tensors["weights"][:m], out.tensors["sse"][:m] = C, w, sse
    gen = _files.tensor_to_rng(a.tensors["rng"])
    out.tensors["sample"], out.meta["sample_filled"] = _merge_samples(a, b, gen)
    out.meta["sample_seen"] = a.meta["sample_seen"] + b.meta["sample_seen"]
    out.tensors["rng"] = _files.rng_to_tensor(gen)
    out.meta.update(n_active=m, records_seen=a.meta["records_seen"] + b.meta["records_seen"],
                    arrival_sse=a.meta["arrival_sse"] + b.meta["arrival_sse"])
    # Keep the refined centres (of either side) that are cheaper on the merged sample; their running means
    # restart when the merged stream has doubled.
    refining = [s for s in (a, b) if s.meta["refine_restart_at"]]
    if refining and out.meta["sample_filled"]:
        best = min(refining, key=lambda s: _sample_cost(out, s.tensors["refined"].to(C.device)))
        out.tensors["refined"] = best.tensors["refined"].to(C.device).clone()
        out.tensors["refined_count"] = best.tensors["refined_count"].to(C.device).clone()
        out.meta["refine_restart_at"] = 2 * out.meta["records_seen"]
    return out


def _merge_samples(a: State, b: State, gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """A uniform sample of both streams from the two uniform samples: how many rows come from each side is
    hypergeometric (as if drawn without replacement from the two streams), which rows is uniform."""
    na, nb = a.meta["sample_seen"], b.meta["sample_seen"]
    sa, sb = a.tensors["sample"], b.tensors["sample"].to(a.tensors["sample"].device)
    out = torch.zeros_like(sa)
    m = min(len(out), na + nb)
    if m == 0:
        return out, 0
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    from_a = int(np.random.default_rng(seed).hypergeometric(na, nb, m)) if na and nb else (m if na else 0)
    pick_a = torch.randperm(a.meta["sample_filled"], generator=gen)[:from_a]
    pick_b = torch.randperm(b.meta["sample_filled"], generator=gen)[:m - from_a]
    out[:m] = torch.cat([sa[pick_a.to(sa.device)], sb[pick_b.to(sb.device)]])
    return out, m


# -------------------------------------------------------------------------------------------- finalize

class KMeansModel(Model):
    """k centres; predicts SageMaker's `closest_cluster` and `distance_to_cluster` (Euclidean)."""

    algorithm = NAME

    @property
    def centers(self) -> torch.Tensor:
        return self.tensors["centers"]

    @takes_arrays
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: dense or sparse CSR records."""
        x = _records(x, x.device)
        if not _csr.is_csr(x) and x.device.type == "cpu" and x.shape[0] * self.centers.numel() <= SMALL_PREDICT:
            # a few records (a served request): exact float64 distances at once in NumPy, 10 us for one record
            # against 28 us through the same steps in torch and 142 us through the search built for batches (k =
            # 10, 50 features)
            xs, C = x.numpy(), self.centers.numpy().astype(np.float64)
            diff = xs[:, None, :] - C[None]
            d2 = np.einsum("nkd,nkd->nk", diff, diff)
            idx = d2.argmin(1)  # the first of equals, as the batch search
            d2 = d2[np.arange(len(idx)), idx]
            return {"closest_cluster": torch.from_numpy(idx.astype(np.float32)),
                    "distance_to_cluster": torch.from_numpy(np.sqrt(d2).astype(np.float32))}
        idx, d2 = _nearest(x, self.centers.to(x.device, torch.float64))
        return {"closest_cluster": idx.to(torch.float32), "distance_to_cluster": d2.sqrt().to(torch.float32)}

    @takes_arrays
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of each record (dense or sparse CSR) to every centre, shape (n, k)."""
        x, C = _records(x, x.device), self.centers.to(x.device, torch.float64)
        if _csr.is_csr(x):
            d2 = (x @ C.T.contiguous()).mul_(-2.0).add_((C * C).sum(1)).add_(_csr.sq_norms(x)[:, None])
            return d2.clamp_(min=0.0).sqrt_().to(torch.float32)
        return torch.cdist(x, C).to(torch.float32)


Model = KMeansModel


def _centred_norms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred records and their squared norms: |x - c|^2 = |x|^2 - 2 x.c + |c|^2 is then one matrix product
    for any set of centres c among the records (filling 200 slots from 5,000 records of 100 features: 0.035 s,
    against 0.065 s through the differences x - c)."""
    if _csr.is_csr(x):  # not centred: that would make x dense (float64 keeps the products exact enough)
        return x, _csr.sq_norms(x)
    xc = x - x.mean(0)
    return xc, (xc * xc).sum(1)


def _sq_dist_to(xc: torch.Tensor, xx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """|x - x[r]|^2 for every record x and every r in `rows`: shape (len(rows), n)."""
    if _csr.is_csr(xc):
        prod = (xc @ _csr.dense_rows(xc, rows).T).T
    else:
        prod = xc[rows] @ xc.T
    return (xx[None, :] - 2.0 * prod + xx[rows, None]).clamp_(min=0.0)


def _kmeanspp(x: torch.Tensor, weight: torch.Tensor, k: int, gen: torch.Generator,
              existing: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted k-means++ seeding: indices of k rows of x, drawn with probability ~ weight x D^2 (D: the distance
    to the nearest centre chosen so far, or in `existing`).

    In rounds of k / FILL_ROUNDS draws from the same D^2, the distinct rows kept (as k-means|| oversamples), so
    that a round's distances are one product: filling kdd04's 2,000 slots from its first 5,000 records took
    0.15 s one draw at a time, 0.04 s in rounds, for the same cost of the final model (mean of 6 seeds at k = 100:
    0.03 % cheaper).
    """
    n = x.shape[0]
    chosen = torch.empty(0, dtype=torch.long)
    xc, xx = _centred_norms(x)
    if existing is not None and len(existing):
        d2 = _nearest(x, existing)[1]
    else:
        first = _draw(weight.cpu(), torch.rand(1, generator=gen, dtype=torch.float64))
        chosen, d2 = first, _sq_dist_to(xc, xx, first.to(x.device))[0]
    step = max(1, min(-(-k // FILL_ROUNDS), BATCHED_DISTANCES // n))  # a round's distances stay bounded
    while len(chosen) < k:
        p = (weight * d2).cpu()
        if float(p.sum()) <= 0:  # every remaining record coincides with a chosen one
            p = _fallback(weight, chosen)
        u = torch.rand(min(step, k - len(chosen)), generator=gen, dtype=torch.float64)
        new = _distinct_rows(x, torch.unique(_draw(p, u)))  # a row, or its copies, drawn twice count once
        chosen = torch.cat([chosen, new])
        d2 = torch.minimum(d2, _sq_dist_to(xc, xx, new.to(x.device)).min(0).values)
    return chosen.to(x.device)


def _distinct_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`rows` (sorted indices into x) less those whose record equals an earlier one's: a heavy stack of identical
    records far from every centre draws several times in a round, and one draw after another would take it once."""
    if len(rows) < 2:
        return rows
    _, group = torch.unique(_csr.dense_rows(x, rows), dim=0, return_inverse=True)
    first = torch.full((int(group.max()) + 1,), len(rows), dtype=torch.long, device=group.device)
    first.scatter_reduce_(0, group, torch.arange(len(rows), device=group.device), reduce="amin")
    return rows[first.to(rows.device).sort().values]


def _draw(p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """For each uniform number in u (..., m), an index drawn with probability proportional to p (..., n)."""
    return _search(torch.cumsum(p, -1), u)


def _search(cum: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse of the cumulative weights `cum`: the first index whose running total passes u x total, so that an
    index of zero weight is never drawn. torch.multinomial's distribution at a tenth of its cost for one draw
    from 5,000 records (9 against 90 us): filling 2,000 slots from kdd04's first batch took 0.15 s, not 0.32 s."""
    j = torch.searchsorted(cum, (u * cum[..., -1:]).contiguous(), right=True)
    return j.clamp_(max=cum.shape[-1] - 1)


def _kmeanspp_greedy(x: torch.Tensor, weight: torch.Tensor, k: int, gen: torch.Generator,
                     trials: int) -> torch.Tensor:
    """`trials` independent greedy k-means++ seedings at once: indices (trials, k) of rows of x.

    Each pick draws 2 + ln k candidates ~ weight x D^2 and keeps the one that lowers the weighted cost most (the
    variant of Arthur and Vassilvitskii that scikit-learn uses; measured 1-2 % cheaper at k = 100 on the
    summaries). The trials advance together, one batched draw and one matrix product a pick for all of them:
    10 trials at k = 100 on digits take 0.05 s instead of 0.3 s one after the other.
    """
    n, tries = len(x), 2 + int(math.log(k))
    group = max(1, BATCHED_DISTANCES // (tries * n))  # trials at once, so that a pick's distances stay bounded
    if trials > group:
        return torch.cat([_kmeanspp_greedy(x, weight, k, gen, min(group, trials - s)) for s in range(0, trials, group)])
    T = trials
    chosen = torch.empty(T, k, dtype=torch.long)
    rows = torch.arange(T)
    xc, xx = _centred_norms(x)
    chosen[:, 0] = torch.multinomial(weight.cpu().float()[None, :].expand(T, n), 1, generator=gen)[:, 0]
    d2 = _sq_dist_to(xc, xx, chosen[:, 0].to(x.device))                               # (T, n)
    for i in range(1, k):
        p = (weight[None, :] * d2).cpu()
        for t in (p.sum(1) <= 0).nonzero()[:, 0].tolist():  # every remaining record coincides with a chosen one
            p[t] = _fallback(weight, chosen[t, :i])
        cand = torch.multinomial(p.float(), tries, replacement=True, generator=gen)   # (T, tries)
        d2c = torch.minimum(d2[:, None, :], _sq_dist_to(xc, xx, cand.reshape(-1).to(x.device)).view(T, tries, n))
        best = torch.argmin((d2c * weight).sum(2), dim=1).cpu()                        # the cheapest candidate
        chosen[:, i] = cand[rows, best]
        d2 = d2c[rows.to(x.device), best.to(x.device)]
    return chosen.to(x.device)


def _fallback(weight: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Draw weights when every record lies on a chosen centre: the unchosen records by weight (or uniformly)."""
    p = weight.cpu().clone()
    p[chosen] = 0
    if float(p.sum()) <= 0:
        p = torch.ones(len(weight), dtype=torch.float64)
        p[chosen] = 0
    return p


def _lloyd(X: torch.Tensor, wt: torch.Tensor, centers: torch.Tensor, max_iter: int,
           tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted Lloyd iterations on the summary from S starts at once (centers: (S, k, d)); returns the centres
    and their weighted costs (S,). Each start stops on its own; those still running share one search a step."""
    C = centers.clone()
    k = C.shape[1]
    wX = wt[:, None] * X
    prev = [math.inf] * len(C)
    running = list(range(len(C)))
    for _ in range(max_iter):
        if not running:
            break
        idx, d2 = _nearest_sets(X, C[running])
        still = []
        for j, s in enumerate(running):
            cost = float((wt * d2[j]).sum())
            mass = torch.zeros(k, dtype=torch.float64, device=X.device).index_add_(0, idx[j], wt)
            sums = torch.zeros_like(C[s]).index_add_(0, idx[j], wX)
            hit = mass > 0
            C[s, hit] = sums[hit] / mass[hit, None]
            if prev[s] - cost > tol * cost:
                still.append(s)
            prev[s] = cost
        running = still
    return C, (wt * _nearest_sets(X, C)[1]).sum(1)


def _choice(state: State, choice: dict[str, Any]) -> dict[str, Any]:
    base = {k: state.hyperparameters.get(k, v) for k, v in CHOICES.defaults().items()}
    c = CHOICES.parse({k: v for k, v in choice.items() if v is not None}, base=base)
    active = state.meta["n_active"]
    if active == 0:
        raise UsageError("the state has seen no records: nothing to finalize")
    if c["k"] > active:
        raise UsageError(f"k = {c['k']} is more than the summary holds ({active} centres); "
                         f"valid values: 1 to {active}")
    return c


def _reduce(state: State, c: dict[str, Any], on_records: bool = True,
            refined: torch.Tensor | None = None) -> tuple[torch.Tensor, float, str]:
    """The best of several weighted k-means++ + Lloyd runs: centres, their cost and where they come from.

    The runs cluster the summary's centres, or the records themselves while the sample holds every record (unless
    not `on_records`: the start of the refinement, which moves the centres over the stream anyway, costs 25x less
    on a summary of 200 centres than on the first 5,000 records, for the same final cost on the benchmarks). The
    best run is the cheapest on the sample when there is one (the summary's own cost misjudged which run is
    best by up to 1.6 % on digits), else on the summary. With `refined` centres (finalize at the training k),
    they compete too, and so do they polished by Lloyd, which runs beside the seedings. Repeatable: the seedings
    draw from a generator seeded by the state's seed, never from the state itself.
    """
    meta = state.meta
    filled = meta["sample_filled"]
    X, wt, internal = _reduction_points(state, on_records)
    trials = AUTO_TRIALS if c["local_lloyd_num_trials"] == "auto" else c["local_lloyd_num_trials"]
    gen = torch.Generator().manual_seed(int(meta["seed"]) + 7919 * c["k"])
    if c["local_lloyd_init_method"] == "kmeans++":
        seeds = _kmeanspp_greedy(X, wt, c["k"], gen, trials)
    else:
        seeds = torch.stack([torch.multinomial(wt.cpu().float(), c["k"], replacement=False, generator=gen)
                             for _ in range(trials)]).to(X.device)
    starts, names = X[seeds], ["reduced"] * trials
    if refined is not None:  # only while refining, so with a sample to judge by
        starts = torch.cat([starts, refined[None]])
    ends, costs = _lloyd(X, wt, starts, c["local_lloyd_max_iter"], c["local_lloyd_tol"])
    if refined is not None:
        ends, names = torch.cat([ends[:trials], refined[None], ends[trials:]]), names + ["refined", "polished"]
    costs = _sample_costs(state, ends) if filled else costs + internal
    best = int(torch.argmin(costs))  # the first of equals: a seeding before the refined, before the polished
    return ends[best], float(costs[best]), names[best]


def _reduction_points(state: State, on_records: bool = True) -> tuple[torch.Tensor, torch.Tensor, float]:
    """What the reduction clusters: the records while the sample holds all of them (and `on_records`), else the
    summary's centres; their weights, and the cost the points themselves hide (the summary's sse)."""
    t, meta = state.tensors, state.meta
    active, filled = meta["n_active"], meta["sample_filled"]
    if on_records and filled and filled == meta["records_seen"]:
        X = t["sample"][:filled].to(torch.float64)
        return X, torch.ones(filled, dtype=torch.float64, device=X.device), 0.0
    return t["centers"][:active], t["weights"][:active], float(t["sse"][:active].sum())


def _sample_costs(state: State, centers: torch.Tensor) -> torch.Tensor:
    """The cost on the stream of each set of centres (S, k, d), estimated from the sample (exact while the stream
    fits in it)."""
    sample = state.tensors["sample"][:state.meta["sample_filled"]].to(torch.float64)
    return _nearest_sets(sample, centers)[1].sum(1) * (state.meta["records_seen"] / len(sample))


def _sample_cost(state: State, centers: torch.Tensor) -> float:
    """The estimated cost on the stream of one set of centres (k, d)."""
    return float(_sample_costs(state, centers[None])[0])


def finalize(state: State, **choice: Any) -> KMeansModel:
    """The model for k (default: the state's k): the summary's reduction, or for the training k the refined
    centres when they are cheaper on the sample. Does not change the state; repeatable."""
    _add_refinement(state)
    c = _choice(state, choice)
    t, meta = state.tensors, state.meta
    # At the training k the refined centres compete, and so do they polished by Lloyd on the reduction's points:
    # on a drifting stream (kdd04, k = 100) the running means lag behind and Lloyd from them ends 0.35 % cheaper
    # on the data; on a stationary one (10^6 blobs) it ends 1.2 % dearer, and the sample says so.
    refining = c["k"] == state.hyperparameters["k"] and meta["refine_restart_at"] and meta["sample_filled"]
    best, cost, source = _reduce(state, c, refined=t["refined"] if refining else None)
    exact = meta["sample_filled"] == meta["records_seen"]
    if source == "reduced":
        source = "records" if exact else "summary"
    estimate = ("every record (exact)" if exact else f"a uniform sample of {meta['sample_filled']:,} records") \
        if meta["sample_filled"] else "the summary (an upper bound)"
    active = meta["n_active"]
    X, wt = t["centers"][:active], t["weights"][:active]
    idx, _ = _nearest(X, best)
    sizes = torch.zeros(c["k"], dtype=torch.float64, device=X.device).index_add_(0, idx, wt)
    records = float(wt.sum())
    meta_out = {"k": c["k"], "n_features": meta["n_features"], "records": records,
                "cost": cost, "cost_estimated_from": estimate, "centres_from": source,
                "msd": cost / records if records else 0.0, "choice": c,
                "cluster_sizes": [round(v, 6) for v in sizes.tolist()]}
    return KMeansModel({"centers": best.to(torch.float32)}, meta_out)


def summary(model: KMeansModel) -> list[str]:
    """Lines for the command line: the model's cost, where it comes from, and the cluster sizes."""
    m = model.meta
    sizes = [int(round(s)) for s in m["cluster_sizes"]]
    how = {"summary": "from the summary", "refined": "refined over the stream",
           "polished": "refined over the stream, then Lloyd on the summary",
           "records": "from Lloyd on the records"}[m["centres_from"]]
    return [f"model: k={m['k']}, centres {how}; cost (sum of squared distances) {m['cost']:,.6g}, msd "
            f"{m['msd']:,.6g}, estimated on {m['cost_estimated_from']}",
            "  cluster sizes: " + ", ".join(f"{s:,}" for s in sizes)]


def costs(state: State, ks: list[int], **choice: Any) -> dict[int, float]:
    """The estimated cost (sum of squared distances of the data) of the model for each k: an elbow curve."""
    return {k: finalize(state, **{**choice, "k": k}).meta["cost"] for k in ks}


def evaluate(model: KMeansModel, batch: Batch) -> dict[str, float]:
    """Sums over one batch; the trainer turns them into SageMaker's msd and ssd."""
    d = model.predict(batch.x)["distance_to_cluster"].to(torch.float64)
    return {"ssd": float((d * d).sum()), "count": float(len(d))}


def describe(state: State) -> dict[str, Any]:
    """What a user wants to see of a state."""
    m = state.meta
    _add_refinement(state)
    return {"summary_centres": f"{m['n_active']} of {m['summary_size']}", "records_seen": m["records_seen"],
            "train_msd_on_arrival": m["arrival_sse"] / m["records_seen"] if m["records_seen"] else None,
            "refining_k": state.hyperparameters["k"] if m["refine_restart_at"] else "not yet (after "
            f"{REFINE_AFTER * m['summary_size']:,} records)" if len(state.tensors["sample"]) else "off (half-life)",
            "sample_records": m["sample_filled"]}
