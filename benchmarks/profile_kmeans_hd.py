#!/usr/bin/env python
"""Where k-means' update spends its time at high dimension, by phase, and what the model costs against
scikit-learn's MiniBatchKMeans and KMeans on the same records (issue 29). In one process, 2 threads as the
command line's CSV runs use them (torch on one, the search's row blocks on two). Times are CPU seconds of the
process (all its threads), which a machine shared with other work disturbs less than wall time.

    python benchmarks/profile_kmeans_hd.py --set digits --n 60000 --k 100 --peers --const WIDE_CENTER_FACTOR=5
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from onepass import _blas
from onepass.algorithms import kmeans
from onepass.data.batches import Batch

import kmeans_hd_sets

PHASES = {"_nearest": "nearest", "_open_far_records": "ward+open", "_renearest": "renearest",
          "_absorb": "absorb", "_reservoir": "sample", "_refine": "refine"}


def timed(times, name, fn):
    def wrapper(*a, **kw):
        t0 = time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            times[name] += time.process_time() - t0
    return wrapper


def cost(x: np.ndarray, c: np.ndarray) -> float:
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    total = 0.0
    for s in range(0, len(x), 20_000):
        b = x64[s:s + 20_000]
        idx = ((c64 * c64).sum(1)[None] - 2 * b @ c64.T).argmin(1)
        total += float(((b - c64[idx]) ** 2).sum())
    return total


def run_onepass(x, k, hp_extra, batch=5000):
    times = defaultdict(float)
    saved = {name: getattr(kmeans, name) for name in PHASES}
    # only the calls update makes directly: nested calls (the sample's, refine's own searches) count once
    for name, phase in PHASES.items():
        setattr(kmeans, name, timed(times, phase, saved[name]))
    try:
        t0 = time.process_time()
        state = kmeans.init({"k": k, **hp_extra}, x.shape[1], seed=0)
        for s in range(0, len(x), batch):
            kmeans.update(state, Batch(torch.from_numpy(x[s:s + batch])))
        t1 = time.process_time()
    finally:
        for name, fn in saved.items():
            setattr(kmeans, name, fn)
    model = kmeans.finalize(state)
    t2 = time.process_time()
    times = dict(times)
    times["update"], times["finalize"] = t1 - t0, t2 - t1
    return model.tensors["centers"].numpy(), times, model.meta["centres_from"]


def peers(x: np.ndarray, k: int) -> dict:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    out = {}
    with threadpool_limits(2):
        for name, est in (("minibatch", MiniBatchKMeans(k, random_state=0)), ("kmeans", KMeans(k, random_state=0))):
            t = time.process_time()
            est.fit(x)
            out[f"{name}_s"] = round(time.process_time() - t, 2)
            out[f"{name}_cost"] = cost(x, est.cluster_centers_)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--set", default="digits", choices=("digits", "mixture"))
    p.add_argument("--n", type=int, default=60_000)
    p.add_argument("--d", type=int, default=784)
    p.add_argument("--k", type=int, nargs="+", default=[100])
    p.add_argument("--hp", default="{}", help="JSON of extra hyperparameters for onepass")
    p.add_argument("--const", nargs="*", default=[], metavar="NAME=VALUE",
                   help="set module constants of onepass.algorithms.kmeans, e.g. WIDE_CENTER_FACTOR=5")
    p.add_argument("--peers", action="store_true", help="also MiniBatchKMeans and KMeans")
    a = p.parse_args()
    for c in a.const:
        name, value = c.split("=")
        setattr(kmeans, name, type(getattr(kmeans, name))(value))
    torch.set_num_threads(1)
    _blas.set_block_threads(2)
    t0 = time.process_time()
    x = kmeans_hd_sets.make(a.set, a.n, a.d)
    print(f"{a.set} {x.shape} made in {time.process_time() - t0:.1f} s", flush=True)
    for k in a.k:
        c, times, src = run_onepass(x, k, json.loads(a.hp))
        row = {"set": a.set, "shape": list(x.shape), "k": k, "hp": a.hp, "const": a.const, "onepass_s": round(times["update"] +
               times["finalize"], 2), "phases": {n: round(v, 2) for n, v in times.items()}, "from": src,
               "onepass_cost": cost(x, c)}
        print(json.dumps(row), flush=True)
        if a.peers:  # the peers' results do not change with onepass: kept in a file between runs
            cache = Path(__file__).parent / "data" / "runs" / "profile_kmeans_hd_peers.json"
            known = json.loads(cache.read_text()) if cache.exists() else {}
            key = f"{a.set}|{a.n}|{x.shape[1]}|{k}"
            if key not in known:
                known[key] = peers(x, k)
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(known, indent=1))
            row.update(known[key])
            row["vs_minibatch"] = round(row["onepass_cost"] / row["minibatch_cost"] - 1, 5)
            row["vs_kmeans"] = round(row["onepass_cost"] / row["kmeans_cost"] - 1, 5)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
