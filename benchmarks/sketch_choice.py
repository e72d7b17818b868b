"""Which sketch for `algorithm_mode=randomized`: Frequent Directions (onepass's) against a single-pass randomized
range sketch (the Nyström sketch of Tropp, Yurtsever, Udell and Cevher 2017: Y = S Omega, then S ~ Y (Omega^T Y)^+
Y^T), at equal memory (l rows of d, or l columns of d) and on the same batches.

Both are one pass, O(l d) memory and mergeable (FD by stacking and shrinking, the range sketch by adding Y).
Reported: the share of the data's variance that each sketch's top k components explain, against the optimum
(the top k eigenvalues of the exact scatter), and the seconds each spends updating. Five seeds for the range
sketch (it is random); FD is deterministic.

    python benchmarks/sketch_choice.py            # writes benchmarks/results_sketch_choice.json, prints a table
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

import onepass
from onepass.data.batches import Batch, Stream

HERE = Path(__file__).resolve().parent
K, ELL, BATCH = 10, 20, 5000


def datasets() -> dict[str, np.ndarray]:
    def csv(name: str) -> np.ndarray:
        return np.concatenate([b.x.numpy() for b in Stream(str(HERE / "data" / name)).batches(50_000, prefetch=0)])

    rng = np.random.default_rng(0)
    d = 1000  # power-law spectrum: lambda_i ~ i^-1, a slow decay (a hard case for every sketch)
    axes = np.linalg.qr(rng.normal(size=(d, d)))[0]
    slow = (rng.standard_normal((100_000, d)) * np.arange(1, d + 1) ** -0.5) @ axes.T
    d = 500  # a few strong directions over isotropic noise
    axes = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :10]
    spiked = rng.standard_normal((100_000, 10)) * np.linspace(10, 3, 10) @ axes.T + rng.standard_normal((100_000, d))
    return {"digits (1,797 x 64)": csv("digits.csv"), "kdd04 (145,751 x 74)": csv("kdd04.csv"),
            "power law (10^5 x 1,000)": slow.astype(np.float32), "spiked (10^5 x 500)": spiked.astype(np.float32)}


def explained(x: np.ndarray, components: np.ndarray) -> tuple[float, float]:
    """(share of the centred variance the rows of `components` explain, the optimum for as many components)."""
    xc = torch.tensor(x, dtype=torch.float64)
    xc -= xc.mean(0)
    S = xc.T @ xc
    Q = torch.linalg.qr(torch.tensor(components, dtype=torch.float64).T)[0]
    total = float(torch.trace(S))
    opt = float(torch.linalg.eigvalsh(S)[-len(components):].sum())
    return float(torch.trace(Q.T @ S @ Q)) / total, opt / total


def frequent_directions(x: np.ndarray) -> tuple[np.ndarray, float]:
    hp = {"num_components": K, "algorithm_mode": "randomized", "extra_components": ELL - K}
    t = time.perf_counter()
    state = onepass.pca.init(hp, x.shape[1])
    for s in range(0, len(x), BATCH):
        state = onepass.pca.update(state, Batch(torch.from_numpy(x[s:s + BATCH])))
    seconds = time.perf_counter() - t
    return onepass.pca.finalize(state).tensors["components"].numpy(), seconds


def range_sketch(x: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Single-pass Nyström: Y = S_raw Omega accumulated batch by batch (with n and the sum, to centre at the end)."""
    d = x.shape[1]
    omega = torch.tensor(np.random.default_rng(seed).standard_normal((d, ELL)), dtype=torch.float64)
    t = time.perf_counter()
    Y = torch.zeros(d, ELL, dtype=torch.float64)
    total, n = torch.zeros(d, dtype=torch.float64), 0
    for s in range(0, len(x), BATCH):
        b = torch.from_numpy(x[s:s + BATCH]).double()
        Y += b.T @ (b @ omega)
        total += b.sum(0)
        n += len(b)
    mu = total / n
    Y -= n * mu[:, None] * (mu @ omega)[None, :]  # S Omega of the centred data
    nu = np.finfo(np.float64).eps ** 0.5 * float(torch.linalg.norm(Y))  # stable Nyström (Tropp et al., Alg. 3)
    Yn = Y + nu * omega
    C = torch.linalg.cholesky(omega.T @ Yn)
    B = torch.linalg.solve_triangular(C, Yn.T, upper=False).T
    U = torch.linalg.svd(B, full_matrices=False)[0]
    seconds = time.perf_counter() - t
    return U[:, :K].T.numpy(), seconds


def main() -> None:
    torch.set_num_threads(2)
    results = {}
    for name, x in datasets().items():
        fd, fd_s = frequent_directions(x)
        fd_share, opt = explained(x, fd)
        rs = [range_sketch(x, seed) for seed in range(5)]
        shares = [explained(x, c)[0] for c, _ in rs]
        results[name] = {"optimum": opt, "fd": fd_share, "fd_s": fd_s, "range": shares,
                         "range_s": float(np.median([s for _, s in rs]))}
        print(f"{name}: optimum {opt:.6f}; FD {fd_share:.6f} ({fd_s:.2f} s); range sketch "
              f"{min(shares):.6f}-{max(shares):.6f} ({results[name]['range_s']:.2f} s)", flush=True)
    (HERE / "results_sketch_choice.json").write_text(json.dumps(results, indent=1))
    print(f"\nk = {K} components from l = {ELL} rows/columns; share of variance explained "
          "(gap to the optimum, relative)\n")
    print("| data | optimum | Frequent Directions | range sketch (Nyström), 5 seeds | FD update s | range update s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        gap = lambda v: (r["optimum"] - v) / r["optimum"]  # noqa: E731
        print(f"| {name} | {r['optimum']:.4f} | {r['fd']:.4f} ({gap(r['fd']):.2%}) | "
              f"{min(r['range']):.4f}-{max(r['range']):.4f} ({gap(max(r['range'])):.2%}-{gap(min(r['range'])):.2%}) | "
              f"{r['fd_s']:.2f} | {r['range_s']:.2f} |")


if __name__ == "__main__":
    main()
