"""onepass on a GPU against onepass on the same machine's CPU cores: the same command, `--device cuda` or `cpu`.

The data are generated here (nothing can be fetched on a lent GPU machine) as memory-mapped .npy files, so that
the reader costs little and the difference is the compute:

- k-means, k = 10 and 100, on blobs (N x 50, 10 true clusters);
- the linear learner (binary, 32 models at once, the default; one epoch), on N x 100 records with a noisy
  linear label;
- PCA (regular: exact float64 sums), on N x 100 correlated records.

Each job runs end to end from the command line (`python -m onepass train ... --device D`), timed from outside
(interpreter, import, CUDA start-up and all), and its model's quality is measured on a 200,000-record sample, so
that the table shows the GPU giving the same model. A second, in-process measure times `update` alone over batches
already in memory on the device (synchronized), which is what the GPU speeds up once the reader keeps pace.

    python benchmarks/run_gpu.py --n 4000000 --results benchmarks/results_gpu.json   # on the GPU machine
    python benchmarks/run_gpu.py --report-only                                       # RESULTS_GPU.md from json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
JOBS = {  # name: (algorithm, data set, hyperparameters)
    "kmeans k=10": ("kmeans", "blobs", {"k": 10}),
    "kmeans k=100": ("kmeans", "blobs", {"k": 100}),
    # one epoch: the default (15, with early stopping) repeats the same work 15 times
    "linear_learner": ("linear_learner", "linear", {"predictor_type": "binary_classifier", "epochs": 1}),
    "pca": ("pca", "spectrum", {"num_components": 10}),
}


def make_data(kind: str, n: int, path: Path, seed: int = 0) -> Path:
    """n records as float32 .npy, written in blocks (the generator's memory stays small)."""
    d = 50 if kind == "blobs" else 100
    cols = d + (kind == "linear")
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, cols))
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1).normal(scale=4.0, size=(10, d))
    w = np.random.default_rng(2).normal(size=d)
    axes = np.linalg.qr(np.random.default_rng(3).normal(size=(d, d)))[0]
    scale = np.linspace(4.0, 0.3, d)
    for s in range(0, n, 1_000_000):
        m = min(1_000_000, n - s)
        z = rng.standard_normal((m, d))
        if kind == "blobs":
            out[s:s + m] = centers[rng.integers(0, 10, m)] + z
        elif kind == "linear":  # SageMaker's layout: the label first
            y = (z @ w + rng.normal(scale=1.0, size=m)) > 0
            out[s:s + m, 0], out[s:s + m, 1:] = y, z
        else:
            out[s:s + m] = 1.0 + (z * scale) @ axes.T
    out.flush()
    del out
    return path


def quality(algo: str, model, sample: np.ndarray) -> float:
    """k-means: mean squared distance; PCA: mean squared reconstruction error; linear: log-loss of the model."""
    import torch

    if algo == "kmeans":
        d = model.predict(torch.tensor(sample))["distance_to_cluster"].double()
        return float((d * d).mean())
    if algo == "pca":
        x = torch.tensor(sample, dtype=torch.float64)
        r = x - model.inverse_transform(model.transform(x))
        return float((r * r).sum(1).mean())
    s = model.decision_function(torch.tensor(sample[:, 1:])).double()
    y = torch.tensor(sample[:, 0], dtype=torch.float64)
    return float((torch.nn.functional.softplus(s) - y * s).mean())


def run_cli(algo: str, data: Path, hp: dict, device: str, out: Path, timeout: float) -> dict:
    args = [sys.executable, "-m", "onepass", "train", algo, "--data", str(data), "--out", str(out), "--overwrite",
            "--device", device, "--quiet", "--seed", "0"]
    for k, v in hp.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    if algo == "linear_learner":
        args += ["--label-column", "first"]
    t = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:g} s"}
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return {"wall_s": wall}


def _on_device(algo: str, data: np.ndarray, hp: dict, device: str, batch: int):
    """The algorithm, a fresh state on `device` and the data's mini-batches already there (label first)."""
    import torch

    import onepass
    from onepass.data.batches import Batch

    mod = onepass.get_algorithm(algo)
    label = algo == "linear_learner"
    xs = torch.tensor(data[:, 1:] if label else data, device=device)
    ys = torch.tensor(data[:, 0], device=device) if label else None
    state = mod.init(mod.HYPERPARAMETERS.parse({**hp, "mini_batch_size": batch}), xs.shape[1], 0, device)
    batches = [Batch(xs[s:s + batch], ys[s:s + batch] if label else None) for s in range(0, len(xs), batch)]
    return mod, state, batches


def update_only(algo: str, data: np.ndarray, hp: dict, device: str, batch: int, budget_s: float) -> dict:
    """Records/s of update over batches already on `device` (as many as fit in budget_s, at least 3)."""
    import torch

    mod, state, batches = _on_device(algo, data, hp, device, batch)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t, done = time.perf_counter(), 0
    for i, b in enumerate(batches):
        state = mod.update(state, b)
        done += len(b)
        if i >= 2 and time.perf_counter() - t > budget_s:
            break
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    res = {"records": done, "records_per_s": done / wall}
    if cuda:
        res["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def profile_update(algo: str, data: np.ndarray, hp: dict, device: str, batch: int, path: Path) -> None:
    """torch.profiler's tables of 20 steady-state updates (after 20 unprofiled ones) on `device`, appended to
    `path`: which operators, launches and host synchronizations a mini-batch costs."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    mod, state, batches = _on_device(algo, data[:40 * batch], hp, device, batch)
    for b in batches[:20]:
        state = mod.update(state, b)
    cuda = device.startswith("cuda")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for b in batches[20:]:
            state = mod.update(state, b)
        if cuda:
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    with path.open("a") as f:
        f.write(f"{algo} {hp} on {device}, {len(batches) - 20} updates of {batch} records\n\n"
                + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30) + "\n\n"
                + prof.key_averages().table(sort_by=sort, row_limit=30) + "\n\n")


def measure(args) -> dict:
    import torch

    import onepass

    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0)
                           if torch.cuda.is_available() else None}, "n": args.n, "jobs": {}}
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    work = Path(args.work or tempfile.mkdtemp(prefix="onepass-gpu-"))
    files: dict[str, Path] = {}
    for name in args.jobs:
        algo, kind, hp = JOBS[name]
        if kind not in files:
            t = time.perf_counter()
            files[kind] = make_data(kind, args.n, work / f"{kind}.npy")
            print(f"generated {kind}: {args.n:,} records in {time.perf_counter() - t:.1f} s", flush=True)
        data = np.load(files[kind], mmap_mode="r")
        sample = np.ascontiguousarray(data[:200_000])
        job = results["jobs"][name] = {"algorithm": algo, "hyperparameters": hp, "runs": {}}
        for dev in devices:
            r = run_cli(algo, files[kind], hp, dev, work / f"run-{algo}-{dev}", args.timeout)
            if "error" not in r:
                r["records"] = onepass.load_state(work / f"run-{algo}-{dev}").meta["records_seen"]
                r["records_per_s"] = r["records"] / r["wall_s"]
                r["quality"] = quality(algo, onepass.load_model(work / f"run-{algo}-{dev}"), sample)
            batch = onepass.get_algorithm(algo).HYPERPARAMETERS.parse(hp)["mini_batch_size"]
            r["update_only"] = update_only(algo, np.ascontiguousarray(data[:args.update_records]), hp, dev, batch,
                                           args.update_budget)
            job["runs"][dev] = r
            print(name, dev, json.dumps(r), flush=True)
            if args.profile and dev == "cuda":
                profile_update(algo, np.ascontiguousarray(data[:50 * batch]), hp, dev, batch,
                               args.profile / "profiles.txt")
            args.results.write_text(json.dumps(results, indent=1))
    return results


def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# onepass on a GPU", "",
        f"Measured on {m['gpu']} with {m['cpus']} CPU cores (Python {m['python']}, torch {m['torch']}): the same "
        f"`onepass train` command with `--device cuda` and with `--device cpu` (all {m['cpus']} cores), on "
        f"{results['n']:,} generated records in a memory-mapped .npy file, default hyperparameters otherwise. "
        "End to end is the command's wall time (interpreter, imports, CUDA start-up, reading); quality is measured "
        "on the first 200,000 records (k-means: mean squared distance; PCA: mean squared reconstruction error with "
        "10 components; linear learner: log-loss), so equal figures mean the same model. *Update only* times "
        "`update` over batches already in the device's memory, at the default mini-batch size.", "",
        "Reproduce on a machine with a GPU: `python benchmarks/run_gpu.py --n 4000000` (or the whole GPU check: "
        "`bash benchmarks/gpu_checks.sh`).", "",
        *[line for note in results.get("notes", []) for line in (f"- {note}",)], "",
        "| job | device | end to end (s) | records/s | quality | GPU / CPU time | update only (records/s) "
        "| update only GPU / CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, job in results["jobs"].items():
        runs = job["runs"]
        for dev, r in runs.items():
            if "error" in r:
                lines.append(f"| {name} | {dev} | failed: {r['error']} | | | | | |")
                continue
            speed = ratio = ""
            if dev == "cuda" and "wall_s" in runs.get("cpu", {}):
                speed = f"{runs['cpu']['wall_s'] / r['wall_s']:.2f} x faster"
            u = r["update_only"]
            if dev == "cuda" and "update_only" in runs.get("cpu", {}):
                ratio = f"{u['records_per_s'] / runs['cpu']['update_only']['records_per_s']:.1f} x"
            lines.append(f"| {name} | {dev} | {r['wall_s']:.1f} | {r['records_per_s']:,.0f} | {r['quality']:.6g} "
                         f"| {speed} | {u['records_per_s']:,.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4_000_000, help="records of each generated set")
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one end-to-end run may take")
    p.add_argument("--update-records", type=int, default=1_000_000, help="records held in memory for update only")
    p.add_argument("--update-budget", type=float, default=5.0, help="seconds of update-only timing per run")
    p.add_argument("--profile", type=Path, metavar="DIR", help="also write torch.profiler tables of the GPU's "
                   "updates into DIR")
    p.add_argument("--work", help="folder for the generated data and runs (default: a temporary one)")
    p.add_argument("--results", type=Path, default=HERE / "results_gpu.json")
    p.add_argument("--report", type=Path, default=HERE / "RESULTS_GPU.md")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from --results")
    args = p.parse_args()
    results = json.loads(args.results.read_text()) if args.report_only else measure(args)
    args.report.write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
