"""How far randomized PCA (a Frequent Directions sketch of l rows) falls from the exact answer, by sketch size.

For each data set and sketch size l, the k = 10 components of `onepass.pca` in randomized mode are measured against
the exact PCA of the same records:

- optimum: the share of the centred variance that the top k eigenvectors of the exact scatter S explain;
- found:   the share that the sketch's k components really explain, trace(V S V^T) / trace(S), computed on the data;
- stated:  the share the model reports (its `explained_variance_ratio`, summed), with the two bounds the sketch
           guarantees for it: sum sigma_i^2 <= v^T S v summed <= sum sigma_i^2 + k Delta (sigma_i the sketch's
           singular values, Delta its total shrinkage), and whether the model says it resolved its components
           (Delta at most the k-th sigma^2);
- update s: seconds spent in `pca.update` (one thread), and records per second.

The row "default" is the sketch that `num_components = 10` gets without `extra_components`; "merged" is that
sketch built as two halves trained apart and merged (Frequent Directions' merge), to show the merge keeps the
accuracy.

    python benchmarks/sketch_error.py            # ~10 min on one core; writes benchmarks/results_sketch_error.json
    python benchmarks/sketch_error.py --quick    # smaller sets, ~1 min
    python benchmarks/sketch_error.py --report   # the markdown table of RESULTS_PCA.md, from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

import onepass
from onepass import datasets
from onepass.data.batches import Batch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results_sketch_error.json"
K, BATCH = 10, 5000
SIZES = (20, 30, 50, 100, 200)  # sketch rows l measured (and the default's, and l = d where d is small)


# ------------------------------------------------------------------------------------------------ data

def power_law(n: int, d: int, rng) -> np.ndarray:
    """lambda_i ~ 1 / i: a slow decay, a hard case for every sketch."""
    axes = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return ((rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -0.5) @ axes.T).astype(np.float32)


def spiked(n: int, d: int, rng) -> np.ndarray:
    """Ten strong directions over isotropic noise."""
    axes = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :10]
    return (rng.standard_normal((n, 10)) * np.linspace(10, 3, 10) @ axes.T
            + rng.standard_normal((n, d))).astype(np.float32)


def words(n: int, d: int, density: float) -> sp.csr_matrix:
    """The PCA benchmark's sparse set (run_pca.write_sparse_libsvm): bag-of-words-like rows from 10 topics, 80 % of
    each row's non-zeros on its topic's 200 columns, 20 % anywhere: a few directions over a wide, flat floor."""
    sys.path.insert(0, str(HERE))
    from run_pca import write_sparse_libsvm
    from sklearn.datasets import load_svmlight_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.libsvm"
        write_sparse_libsvm(path, n, d, density)
        return load_svmlight_file(str(path), n_features=d)[0].tocsr()


def noise(n: int, d: int, density: float, rng) -> sp.csr_matrix:
    """Uniformly placed non-zeros with exponential values: no structure at all (a Marchenko-Pastur spectrum)."""
    return sp.random(n, d, density=density, format="csr", random_state=rng,
                     data_rvs=lambda size: rng.exponential(size=size))


def data_sets(quick: bool) -> dict[str, np.ndarray | sp.csr_matrix]:
    rng = np.random.default_rng(0)
    n = 5000 if quick else 20_000
    out: dict[str, np.ndarray | sp.csr_matrix] = {"digits (1,797 x 64)": datasets.digits()[0]}
    if not quick:
        try:
            out["kdd04 (145,751 x 74)"] = datasets.kdd04()[0]
        except onepass.UsageError as e:  # its carrier package is a benchmark-only dependency
            print(f"kdd04 left out: {e}", file=sys.stderr)
    out[f"power law ({n:,} x 1,000)"] = power_law(n, 1000, rng)
    out[f"spiked ({n:,} x 500)"] = spiked(n, 500, rng)
    out["sparse words (10,000 x 1,000, 2 %)"] = words(10_000, 1000, 0.02)  # run_pca.py --quick's sparse set
    out[f"sparse noise ({n:,} x 2,000, 0.5 %)"] = noise(n, 2000, 0.005, rng)
    if not quick:
        out["sparse words (20,000 x 100,000, 0.1 %)"] = words(20_000, 100_000, 0.001)  # run_pca.py's, fewer rows
    return out


# ---------------------------------------------------------------------------------------------- measure

def _batch(x, s: int, e: int) -> Batch:
    if sp.issparse(x):
        part = x[s:e]
        return Batch(torch.sparse_csr_tensor(torch.from_numpy(part.indptr.astype(np.int64)),
                                             torch.from_numpy(part.indices.astype(np.int64)),
                                             torch.from_numpy(part.data.astype(np.float64)), size=part.shape,
                                             check_invariants=False))
    return Batch(torch.from_numpy(np.ascontiguousarray(x[s:e])))


def sketch(x, extra: int | None, start: int = 0, stop: int | None = None):
    """(state, update seconds) of randomized PCA over rows start:stop; extra None: the default sketch."""
    hp = {"num_components": K, "algorithm_mode": "randomized"}
    if extra is not None:
        hp["extra_components"] = extra
    stop = x.shape[0] if stop is None else stop
    state = onepass.pca.init(hp, x.shape[1])
    t = time.perf_counter()
    for s in range(start, stop, BATCH):
        state = onepass.pca.update(state, _batch(x, s, min(s + BATCH, stop)))
    return state, time.perf_counter() - t


class Exact:
    """The exact centred scatter of x, as far as the measurements need it: its trace, its top k eigenvalues and
    v^T S v for given directions (d x d for d <= 5,000; else a Lanczos solve on the implicit operator)."""

    def __init__(self, x):
        self.x, self.sparse = x, sp.issparse(x)
        n = x.shape[0]
        self.mu = np.asarray(x.mean(0), dtype=np.float64).ravel()
        sq = float(x.multiply(x).sum()) if self.sparse else float((x.astype(np.float64) ** 2).sum())
        self.trace = sq - n * float(self.mu @ self.mu)
        d = x.shape[1]
        if d <= 5000:
            xtx = (x.T @ x).toarray() if self.sparse else x.T.astype(np.float64) @ x.astype(np.float64)
            self.S = np.asarray(xtx, dtype=np.float64) - n * np.outer(self.mu, self.mu)
            self.top = np.linalg.eigvalsh(self.S)[::-1][:K]
        else:
            from scipy.sparse.linalg import LinearOperator, eigsh

            xd = x.astype(np.float64)
            op = LinearOperator((d, d), dtype=np.float64,
                                matvec=lambda v: xd.T @ (xd @ v) - n * self.mu * (self.mu @ v))
            self.S, self.top = None, np.sort(eigsh(op, k=K, which="LA", tol=1e-8)[0])[::-1]

    def share(self, V: np.ndarray) -> float:
        """trace(V S V^T) / trace(S) for orthonormal rows V."""
        if self.S is not None:
            return float(np.trace(V @ self.S @ V.T)) / self.trace
        z = np.asarray(self.x @ V.T, dtype=np.float64) - (self.mu @ V.T)[None, :]
        return float((z * z).sum()) / self.trace


def measure(name: str, x, exact: Exact, extra: int | None, merged: bool = False) -> dict:
    if merged:
        half = (x.shape[0] // 2 // BATCH) * BATCH or x.shape[0] // 2
        a, sa = sketch(x, extra, 0, half)
        b, sb = sketch(x, extra, half)
        t = time.perf_counter()
        state = onepass.pca.merge(a, b)
        seconds = sa + sb + time.perf_counter() - t
    else:
        state, seconds = sketch(x, extra)
    model = onepass.pca.finalize(state, num_components=min(K, onepass.pca.available_components(state)))
    n, m = state.meta["records_seen"], model.meta
    delta = float(state.tensors["shrinkage"]) / exact.trace
    lower = m.get("explained_variance_ratio_lower", m["explained_variance_ratio"])
    return {"data": name, "rows": state.meta["sketch_rows"], "extra": extra, "merged": merged,
            "optimum": float(exact.top.sum() / exact.trace), "found": exact.share(model.components.numpy()),
            "stated": float(sum(m["explained_variance_ratio"])), "lower": float(sum(lower)),
            "upper": float(sum(lower) + len(lower) * delta), "delta": delta, "last_lower": float(lower[-1]),
            "resolved": m.get("resolved"), "seconds": seconds, "records_per_s": n / seconds if seconds > 0 else None}


def run(quick: bool) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    for name, x in data_sets(quick).items():
        exact = Exact(x)
        d = x.shape[1]
        sizes = sorted({min(l, d) for l in SIZES} | ({d} if d <= 512 else set()))
        runs = [(l - K, False) for l in sizes] + [(None, False), (None, True)]
        for extra, merged in runs:
            r = measure(name, x, exact, extra, merged)
            rows.append(r)
            print(f"{name}: l = {r['rows']}{' (default)' if extra is None else ''}{' merged' if merged else ''}: "
                  f"optimum {r['optimum']:.4f}, found {r['found']:.4f}, stated {r['stated']:.4f} "
                  f"[{r['lower']:.4f}, {r['upper']:.4f}], {r['seconds']:.2f} s", flush=True)
    return rows


def report(rows: list[dict]) -> str:
    """The table of RESULTS_PCA.md: per data set and sketch size, found and stated against the optimum."""
    out = ["| data | l | optimum | found (gap) | stated (gap to found) | guaranteed range | resolved | update s | "
           "records/s |", "|---|---:|---:|---:|---:|---:|:-:|---:|---:|"]
    for r in rows:
        label = f"{r['rows']}" + (" default" if r["extra"] is None else "") + (", merged" if r["merged"] else "")
        gap = (r["optimum"] - r["found"]) / r["optimum"]
        off = (r["stated"] - r["found"]) / r["found"]
        rate = f"{r['records_per_s']:,.0f}" if r["records_per_s"] else "—"
        out.append(f"| {r['data']} | {label} | {r['optimum']:.4f} | {r['found']:.4f} ({gap:.2%}) | "
                   f"{r['stated']:.4f} ({off:+.1%}) | {r['lower']:.4f}-{r['upper']:.4f} | "
                   f"{'yes' if r['resolved'] else 'no'} | {r['seconds']:.2f} | {rate} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller data sets, for a look (not written)")
    p.add_argument("--report", action="store_true", help="print the table from the saved results")
    args = p.parse_args(argv)
    if args.report:
        print(report(json.loads(RESULTS.read_text())["rows"]))
        return
    t = time.time()
    rows = run(args.quick)
    if not args.quick:
        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "minutes": (time.time() - t) / 60,
                "torch": torch.__version__, "threads": 1, "k": K, "mini_batch_size": BATCH,
                "load_average_at_end": os.getloadavg()}  # the seconds are only as good as the machine was quiet
        RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("\n" + report(rows))


if __name__ == "__main__":
    main()
