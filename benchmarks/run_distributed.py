#!/usr/bin/env python
"""Data-parallel benchmark: onepass on 1 and 2 processes (torchrun, gloo), each process held to one thread.

    python benchmarks/run_distributed.py            # 10^7 records x 50 features (~5 GB of CSV; run on a quiet machine)
    python benchmarks/run_distributed.py --quick    # 10^5 records: a smoke run of a minute

The stream is generated once as PARTS CSV files (blobs, label first), so that 2 processes shard it by file and
each parses only its half: parsing dominates, as on real data. For every algorithm and number of processes the
parent runs `onepass train ALGO --threads 1 [--nproc N]` in a subprocess with OMP_NUM_THREADS=1 and measures its
wall time (start to exit) and total CPU time (user + system of the whole process tree, torchrun's workers
included). From the 2-process run's metrics it reads the communication: control all_reduces (checkpoint, stop
and end-of-shard decisions), bytes per synchronization, model-averaging bytes (--sync-every) and the bytes
gathered to rank 0 for the final merge. Quality: PCA's components against the 1-process model, k-means' cost
on a 10^5-record sample against the 1-process cost.

The bar (issue 6): 2 processes at least 1.7x faster than 1 at equal quality, total CPU within 1.15x.
Results: benchmarks/RESULTS_DISTRIBUTED.md (--quick: benchmarks/data/runs/DISTRIBUTED_QUICK.md) and a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RUNS = DATA / "runs"
# Per algorithm: its hyperparameters on the command line (the label, first, is read and ignored by the
# unsupervised ones).
ALGORITHMS = {
    "kmeans": ["--k", "10"],
    "pca": ["--num-components", "10"],
    "linear_learner": ["--predictor-type", "multiclass_classifier", "--num-classes", "10", "--epochs", "1"],
}


def run_env(threads: int = 1) -> dict[str, str]:
    """Every run's environment: BLAS/OpenMP held to `threads`, output unbuffered."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def make_parts(n: int, d: int, k: int, parts: int) -> Path:
    """The stream as `parts` CSV files of about n / parts records each (chunks dealt out in turn)."""
    from onepass import datasets

    folder = DATA / f"dist_{n}x{d}_{parts}parts"
    if (folder / "_DONE").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = [open(folder / f"part-{i:03d}.csv", "wb") for i in range(parts)]
    try:
        for c, (x, y) in enumerate(datasets.blobs(n, d, k, seed=0, chunk=max(1, min(100_000, n // parts)))):
            datasets.write_csv(x, y.astype(np.float32), files[c % parts])
    finally:
        for f in files:
            f.close()
    (folder / "_DONE").write_text("")
    return folder


def train(algo: str, data: Path, out: Path, nproc: int, timeout: float, extra: list[str]) -> dict:
    """One run: wall and CPU time of the process tree, the metrics' distributed event."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "onepass", "train", algo, "--data", str(data), "--out", str(out), "--threads", "1",
           "--quiet", "--label-column", "first", "--checkpoint-seconds", "0", *ALGORITHMS[algo], *extra]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=run_env(1), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    dist = next((e for e in events if e["event"] == "distributed"), {})
    records = next(e for e in events if e["event"] == "finished").get("records_seen")
    return {"algorithm": algo, "processes": nproc, "wall_s": wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "records": records, "distributed": dist, "out": str(out)}


def sample(data: Path, n: int = 100_000) -> np.ndarray:
    """Up to n records of the first part (features only), for the k-means cost."""
    first = sorted(data.glob("part-*.csv"))[0]
    x = np.loadtxt(first, delimiter=",", max_rows=n, dtype=np.float64)
    return x[:, :-1]


def quality(algo: str, out: Path, reference: Path, x: np.ndarray) -> str:
    from onepass import load_model

    model = load_model(out)
    if algo == "pca":
        ref = load_model(reference)
        diff = max(float((model.tensors[k].double() - ref.tensors[k].double()).abs().max()) for k in ref.tensors)
        return f"max abs diff to 1 process {diff:.1e}"
    if algo == "kmeans":
        d = model.predict(torch.tensor(x, dtype=torch.float32))["distance_to_cluster"].double()
        return f"cost/record on sample {float((d * d).mean()):.6g}"
    shown = {k: v for k, v in model.meta.get("validation", {}).items() if k in ("multiclass_accuracy", "accuracy",
                                                                               "objective_loss")}
    return "validation " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) if shown else "-"


def report(rows: list[dict], n: int, d: int, parts: int, path: Path) -> None:
    lines = [f"# Data-parallel training: 1 and 2 processes ({n:,} records x {d} features, {parts} CSV files)", "",
             f"Machine: {platform.platform()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
             f"torch {torch.__version__}; every process one thread (OMP_NUM_THREADS=1, --threads 1).", "",
             "| algorithm | processes | wall s | CPU s | speed-up | CPU / 1 proc | control syncs | bytes / sync "
             "| averaging bytes / sync | final gather bytes | quality |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    base = {r["algorithm"]: r for r in rows if r["processes"] == 1}
    for r in rows:
        b, dist = base.get(r["algorithm"]), r["distributed"]
        speed = f"{b['wall_s'] / r['wall_s']:.2f}x" if b else "-"
        cpu = f"{r['cpu_s'] / b['cpu_s']:.2f}" if b else "-"
        lines.append(f"| {r['algorithm']} | {r['processes']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {speed} | {cpu} "
                     f"| {dist.get('control_syncs', '-')} | {dist.get('control_bytes', '-')} "
                     f"| {dist.get('average_bytes', '-') or '-'} | {dist.get('gather_bytes', '-')} | {r['quality']} |")
    lines += ["", "Control syncs happen about every second (one all_reduce of 5 float64), so their number follows the "
              "run's duration, not the number of records; the final gather is the states' size, fixed before the "
              "first record (PCA: d x d sums; k-means: its summary and sample)."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10^5 records: a smoke run")
    p.add_argument("--n", type=int, default=None, help="records (default 10^7; 10^5 with --quick)")
    p.add_argument("--d", type=int, default=50, help="features")
    p.add_argument("--parts", type=int, default=8, help="CSV files the stream is written as")
    p.add_argument("--algorithms", nargs="+", default=["kmeans", "pca", "linear_learner"], choices=list(ALGORITHMS))
    p.add_argument("--nprocs", nargs="+", type=int, default=[1, 2])
    p.add_argument("--sync-every", type=int, default=None, help="linear learner: average models every K steps")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take")
    args = p.parse_args(argv)
    n = args.n or (100_000 if args.quick else 10_000_000)
    data = make_parts(n, args.d, 10, args.parts)
    x = sample(data)
    rows = []
    for algo in args.algorithms:
        reference = None
        for nproc in args.nprocs:
            extra = ["--sync-every", str(args.sync_every)] if args.sync_every and algo == "linear_learner" \
                and nproc > 1 else []
            r = train(algo, data, RUNS / f"dist_{algo}_{nproc}p", nproc, args.timeout, extra)
            reference = reference or Path(r["out"])
            r["quality"] = quality(algo, Path(r["out"]), reference, x)
            rows.append(r)
            print(f"{algo:15s} {nproc} proc: wall {r['wall_s']:7.1f} s  CPU {r['cpu_s']:7.1f} s  {r['quality']}",
                  flush=True)
    name = "DISTRIBUTED_QUICK.md" if args.quick else "RESULTS_DISTRIBUTED.md"
    out = RUNS / name if args.quick else HERE / name
    report(rows, n, args.d, args.parts, out)
    (RUNS / ("results_distributed_quick.json" if args.quick else "results_distributed.json")).write_text(
        json.dumps(rows, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
