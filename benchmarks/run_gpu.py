"""onepass on a GPU against onepass on the same machine's CPU cores: the same command, `--device cuda` or `cpu`.

The data are generated here (nothing can be fetched on a lent GPU machine): dense sets as memory-mapped .npy files
(the reader costs little, the difference is the compute), the sparse stream as LibSVM:

- k-means, k = 10 and 100, on blobs (N x 50, 10 true clusters);
- PCA, regular (exact float64 sums) and randomized (Frequent Directions), on N x 100 correlated records;
- the linear learner (binary, 32 models at once, the default; one epoch), on N x 100 records with a noisy linear
  label, and on the sparse stream of run_linear.py (10^6 features, ~20 non-zeros a record, LibSVM);
- factorization machines (binary, one epoch) on the dense linear set.

Each job runs end to end from the command line (`python -m onepass train ... --device D`), timed from outside
(interpreter, import, CUDA start-up and all), and its model's quality is measured on the first records (k-means:
mean squared distance; PCA: reconstruction error with 10 components; linear learner and FM: log-loss), so that the
table shows the GPU giving the same model. In-process it also times `update` alone over batches already on the
device (synchronized), what the GPU speeds up once the reader keeps pace, and the reader alone (parse rate), so
that end to end is placed between the two. And it counts the host reads of each algorithm's steady-state update
(onepass.host_reads, as tests/test_host_reads.py), the cause of a GPU's waiting.

    python benchmarks/run_gpu.py                       # on the GPU machine: JSON and report under $OUT (or here)
    python benchmarks/run_gpu.py --device cpu --tiny   # the same script in seconds on a CPU (known to work)
    python benchmarks/run_gpu.py --report-only         # RESULTS_GPU.md from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
QUALITY_RECORDS = 200_000
JOBS = {  # name: (algorithm, data set, hyperparameters)
    "kmeans k=10": ("kmeans", "blobs", {"k": 10}),
    "kmeans k=100": ("kmeans", "blobs", {"k": 100}),
    "pca": ("pca", "spectrum", {"num_components": 10}),
    "pca randomized": ("pca", "spectrum", {"num_components": 10, "algorithm_mode": "randomized"}),
    # one epoch: the default (15, with early stopping) repeats the same work 15 times
    "linear_learner": ("linear_learner", "linear", {"predictor_type": "binary_classifier", "epochs": 1}),
    "linear_learner sparse": ("linear_learner", "sparse", {"predictor_type": "binary_classifier", "epochs": 1}),
    "factorization_machines": ("factorization_machines", "linear", {"predictor_type": "binary_classifier",
                                                                    "epochs": 1}),
}
HOST_READ_CASES = ("kmeans", "kmeans-sparse", "pca", "pca-randomized", "linear_learner", "factorization_machines",
                   "ntm", "deepar")


def make_data(kind: str, n: int, path: Path, sparse_d: int, seed: int = 0) -> Path:
    """n records: float32 .npy written in blocks (the generator's memory stays small), or the sparse stream."""
    if kind == "sparse":
        sys.path.insert(0, str(HERE))
        from run_linear import write_stream

        path = path.with_suffix(".libsvm")
        write_stream(path, n, sparse_d, part=0, seed=seed)
        return path
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


def _stream(data: Path, algo: str, sparse_d: int):
    import onepass

    if data.suffix == ".libsvm":
        return onepass.Stream(str(data), n_features=sparse_d)
    return onepass.Stream(str(data), label_column="first" if algo != "kmeans" and algo != "pca" else None)


def read_batches(data: Path, algo: str, sparse_d: int, batch: int, records: int, device: str = "cpu") -> list:
    """The first `records` records as the trainer's batches, moved to `device`."""
    import torch

    from onepass.data.batches import Batch

    out, seen = [], 0
    with closing(_stream(data, algo, sparse_d).batches(batch)) as read:  # closed: its read-ahead thread ends
        for b in read:
            y = b.y.to(device) if b.y is not None else None
            out.append(Batch(b.x.to(device), y))
            seen += len(b)
            if seen >= records:
                break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out


def quality(algo: str, model, batches: list) -> float:
    """k-means: mean squared distance; PCA: mean squared reconstruction error; linear and FM: log-loss."""
    import torch

    total, n = 0.0, 0
    for b in batches:
        x = b.x.cpu()
        if algo == "kmeans":
            d = model.predict(x.to_dense() if x.layout != torch.strided else x)["distance_to_cluster"].double()
            total += float((d * d).sum())
        elif algo == "pca":
            x = x.double()
            r = x - model.inverse_transform(model.transform(x))
            total += float((r * r).sum())
        else:
            s = model.decision_function(x).double()
            y = b.y.cpu().double()
            total += float((torch.nn.functional.softplus(s) - y * s).sum())
        n += len(b)
    return total / n


def run_cli(algo: str, data: Path, hp: dict, device: str, out: Path, timeout: float, sparse_d: int) -> dict:
    args = [sys.executable, "-m", "onepass", "train", algo, "--data", str(data), "--out", str(out), "--overwrite",
            "--device", device, "--quiet", "--seed", "0"]
    for k, v in hp.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    if data.suffix == ".libsvm":
        args += ["--feature-dim", str(sparse_d)]
    elif algo not in ("kmeans", "pca"):
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


def _fresh(algo: str, hp: dict, batches: list, device: str, batch: int):
    import onepass

    mod = onepass.get_algorithm(algo)
    return mod, mod.init(mod.HYPERPARAMETERS.parse({**hp, "mini_batch_size": batch}), batches[0].x.shape[1], 0,
                         device)


def update_only(algo: str, hp: dict, batches: list, device: str, batch: int, budget_s: float) -> dict:
    """Records/s of update over batches already on `device` (as many as fit in budget_s, at least 3) after up to
    12 warm-up batches: k-means at k = 100 starts its refinement (a one-off reduction of the summary) after 20 x
    2,000 records, 8 batches."""
    import torch

    mod, state = _fresh(algo, hp, batches, device, batch)
    warm = min(12, len(batches) // 2)
    for b in batches[:warm]:
        state = mod.update(state, b)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t, done = time.perf_counter(), 0
    for i, b in enumerate(batches[warm:]):
        state = mod.update(state, b)
        done += len(b)
        if i >= 2 and time.perf_counter() - t > budget_s:
            break
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    res = {"records": done, "records_per_s": done / wall, "batch": batch}
    if cuda:
        res["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def parse_only(data: Path, algo: str, sparse_d: int, batch: int, budget_s: float) -> dict:
    """Records/s of the reader alone (the trainer's batches, read ahead on the host's cores)."""
    t, done = time.perf_counter(), 0
    with closing(_stream(data, algo, sparse_d).batches(batch)) as read:
        for b in read:
            done += len(b)
            if time.perf_counter() - t > budget_s:
                break
    return {"records": done, "records_per_s": done / (time.perf_counter() - t)}


def profile_update(algo: str, hp: dict, batches: list, device: str, batch: int, path: Path) -> None:
    """torch.profiler's tables of up to 20 steady-state updates (after 20 unprofiled ones) on `device`, appended
    to `path`: which operators, launches and host synchronizations a mini-batch costs."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    mod, state = _fresh(algo, hp, batches, device, batch)
    for b in batches[:20]:
        state = mod.update(state, b)
    cuda = device.startswith("cuda")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for b in batches[20:40]:
            state = mod.update(state, b)
        if cuda:
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    with path.open("a") as f:
        f.write(f"{algo} {hp} on {device}, {len(batches[20:40])} updates of {batch} records\n\n"
                + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30) + "\n\n"
                + prof.key_averages().table(sort_by=sort, row_limit=30) + "\n\n")


def host_reads() -> dict:
    """Host reads of each algorithm's steady-state update a batch (median of 3 after the warm-up of the test)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_host_reads import STEADY, WARMUP

    from onepass import testing
    from onepass.host_reads import steady_state_reads

    out = {}
    for case in HOST_READ_CASES:
        counts = steady_state_reads(testing.CASES[case], warmup=WARMUP.get(case, 8), batches=STEADY)
        out[case] = statistics.median(sum(c.values()) for c in counts)
    return out


def measure(args) -> dict:
    import torch

    import onepass

    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0)
                           if torch.cuda.is_available() else None}, "n": args.n, "sparse_n": args.sparse_n,
               "sparse_d": args.sparse_d, "tiny": args.tiny, "jobs": {}}
    results["host_reads"] = host_reads()
    print("host reads a steady-state batch:", json.dumps(results["host_reads"]), flush=True)
    devices = args.device
    work = Path(args.work or tempfile.mkdtemp(prefix="onepass-gpu-"))
    files: dict[str, Path] = {}
    parsed: dict[str, dict] = {}
    for name in args.jobs:
        algo, kind, hp = JOBS[name]
        if kind not in files:
            t = time.perf_counter()
            n = args.sparse_n if kind == "sparse" else args.n
            files[kind] = make_data(kind, n, work / f"{kind}.npy", args.sparse_d)
            print(f"generated {kind}: {n:,} records in {time.perf_counter() - t:.1f} s", flush=True)
        batch = onepass.get_algorithm(algo).HYPERPARAMETERS.parse(hp)["mini_batch_size"]
        if kind not in parsed:
            parsed[kind] = parse_only(files[kind], algo, args.sparse_d, batch, args.update_budget)
        sample = read_batches(files[kind], algo, args.sparse_d, batch, args.quality_records)
        job = results["jobs"][name] = {"algorithm": algo, "hyperparameters": hp, "parse": parsed[kind], "runs": {}}
        for dev in devices:
            out = work / f"run-{name.replace(' ', '-')}-{dev}"
            r = run_cli(algo, files[kind], hp, dev, out, args.timeout, args.sparse_d)
            if "error" not in r:
                r["records"] = onepass.load_state(out).meta["records_seen"]
                r["records_per_s"] = r["records"] / r["wall_s"]
                r["quality"] = quality(algo, onepass.load_model(out), sample)
            on_dev = read_batches(files[kind], algo, args.sparse_d, batch, args.update_records, dev)
            r["update_only"] = update_only(algo, hp, on_dev, dev, batch, args.update_budget)
            job["runs"][dev] = r
            print(name, dev, json.dumps(r), flush=True)
            if args.profile and dev == "cuda":
                profile_update(algo, hp, on_dev, dev, batch, args.profile / "profiles.txt")
            del on_dev
            args.results.write_text(json.dumps(results, indent=1))
    args.results.write_text(json.dumps(results, indent=1))
    return results


def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# onepass on a GPU", "",
        f"Measured on {m['gpu'] or 'no GPU'} with {m['cpus']} CPU cores (Python {m['python']}, torch {m['torch']}): "
        f"the same `onepass train` command with `--device cuda` and with `--device cpu` (all {m['cpus']} cores), on "
        f"{results['n']:,} generated dense records in a memory-mapped .npy file and {results.get('sparse_n', 0):,} "
        f"sparse records of {results.get('sparse_d', 0):,} features (LibSVM), default hyperparameters otherwise. "
        "End to end is the command's wall time (interpreter, imports, CUDA start-up, reading); quality is measured "
        "on the first records (k-means: mean squared distance; PCA: mean squared reconstruction error with 10 "
        "components; linear learner and FM: log-loss), so equal figures mean the same model. *Update only* times "
        "`update` over batches already in the device's memory, at the default mini-batch size; *parse* is the "
        "reader alone on the host's cores.", "",
        "Reproduce on a machine with a GPU: `bash benchmarks/gpu_checks.sh` (this script is its step 2: "
        "`python benchmarks/run_gpu.py`, figures in `$OUT/results_gpu.json`).", "",
        *[f"- {note}" for note in results.get("notes", [])], "",
    ]
    if results.get("host_reads"):
        lines += ["Host reads a steady-state update makes a batch (onepass.host_reads; each one waits for the GPU):",
                  "", "| algorithm | reads a batch |", "| --- | ---: |",
                  *[f"| {k} | {v:g} |" for k, v in results["host_reads"].items()], ""]
    lines += ["| job | device | end to end (s) | records/s | quality | GPU / CPU time | update only (records/s) "
              "| update only GPU / CPU | end to end / update only | parse (records/s) |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, job in results["jobs"].items():
        runs = job["runs"]
        for dev, r in runs.items():
            u = r["update_only"]
            if "error" in r:
                lines.append(f"| {name} | {dev} | failed: {r['error']} | | | | {u['records_per_s']:,.0f} | | | |")
                continue
            speed = ratio = ""
            if dev == "cuda" and "wall_s" in runs.get("cpu", {}):
                speed = f"{runs['cpu']['wall_s'] / r['wall_s']:.2f} x faster"
            if dev == "cuda" and "update_only" in runs.get("cpu", {}):
                ratio = f"{u['records_per_s'] / runs['cpu']['update_only']['records_per_s']:.1f} x"
            lines.append(f"| {name} | {dev} | {r['wall_s']:.1f} | {r['records_per_s']:,.0f} | {r['quality']:.6g} "
                         f"| {speed} | {u['records_per_s']:,.0f} | {ratio} "
                         f"| {r['records_per_s'] / u['records_per_s']:.2f} "
                         f"| {job.get('parse', {}).get('records_per_s', float('nan')):,.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2_000_000, help="records of each generated dense set")
    p.add_argument("--sparse-n", type=int, default=500_000, help="records of the generated sparse stream")
    p.add_argument("--sparse-d", type=int, default=1_000_000, help="the sparse stream's features")
    p.add_argument("--device", nargs="+", choices=["cpu", "cuda"],
                   default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    p.add_argument("--tiny", action="store_true", help="a few thousand records of each, to check the script")
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one end-to-end run may take")
    p.add_argument("--update-records", type=int, default=500_000, help="records held in memory for update only")
    p.add_argument("--update-budget", type=float, default=3.0, help="seconds of update-only timing per run")
    p.add_argument("--quality-records", type=int, default=QUALITY_RECORDS)
    p.add_argument("--profile", type=Path, metavar="DIR", help="also write torch.profiler tables of the GPU's "
                   "updates into DIR")
    p.add_argument("--work", help="folder for the generated data and runs (default: a temporary one)")
    p.add_argument("--results", type=Path, help="the figures as JSON (default: $OUT/results_gpu.json, else here; "
                   "--tiny: a temporary folder, unless $OUT)")
    p.add_argument("--report", type=Path, help="the report (default: RESULTS_GPU.md beside the results)")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from --results")
    args = p.parse_args()
    base = out or (Path(tempfile.mkdtemp(prefix="onepass-gpu-tiny-")) if args.tiny else HERE)
    args.results = args.results or base / "results_gpu.json"
    args.report = args.report or args.results.parent / "RESULTS_GPU.md"
    if args.tiny:  # seconds on a CPU: the same steps, small
        args.n, args.sparse_n, args.sparse_d = min(args.n, 30_000), min(args.sparse_n, 20_000), 10_000
        args.update_records, args.update_budget, args.quality_records = 20_000, 0.2, 5_000
    results = json.loads(args.results.read_text()) if args.report_only else measure(args)
    args.report.write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
