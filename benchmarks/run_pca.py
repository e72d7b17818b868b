#!/usr/bin/env python
"""PCA benchmark: onepass (one pass; regular and randomized) against scikit-learn PCA (exact), IncrementalPCA and
Spark MLlib PCA, every system reading the same CSV file in its own subprocess, beside the bare parse of the file.

    python benchmarks/run_pca.py            # the full benchmark (digits, kdd04, a generated 10^7 x 100 stream)
    python benchmarks/run_pca.py --quick    # a smoke run of a few minutes (digits and 50,000 x 100)

The method is run_kmeans.py's, whose measurement code this reuses: wall time of each system's subprocess (start
to exit, so start-up, CSV reading and fitting all count) and the peak resident memory of its process tree. Every
system returns its top components; ONE shared evaluator then streams over the CSV in float64, accumulates the
exact scatter matrix S of the centred data and scores each system by the share of the variance its components
explain, trace(Q^T S Q) / trace(S) (Q an orthonormal basis of the returned components), next to the optimum (the
top eigenvalues of S). `pyarrow parse` is the time to read the whole file into memory with pyarrow's CSV reader:
the floor no reader of this file can beat.

The generated sparse 10^6 x 10^5 set of issue 4 is not run: onepass has no sparse file format (LibSVM) reader yet.
Run `bash benchmarks/run.sh pca` to make the environment (benchmarks/.venv), prepare the data and run this.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_kmeans import (DATA, RUNS, _n, _ncols, _onepass_exe, _tail, load_csv, machine, measure,  # noqa: E402
                        stream_csv, versions)

SYSTEMS = ("parse", "onepass", "onepass-randomized", "sklearn-pca", "sklearn-incremental", "spark")
LABELS = {"parse": "pyarrow parse (whole file)", "onepass": "onepass regular (1 pass)",
          "onepass-randomized": "onepass randomized (1 pass)", "sklearn-pca": "scikit-learn PCA",
          "sklearn-incremental": "scikit-learn IncrementalPCA", "spark": "Spark MLlib PCA"}
GENERATED_MARK = "<!-- Hand-written notes below this line are kept when run_pca.py rewrites the file. -->"


# -------------------------------------------------------------------------------------------- workers

def _worker(argv: list[str]) -> int:
    """`run_pca.py _worker SYSTEM CSV K OUT_PREFIX [options]`: fit, save components (K x d) to OUT_PREFIX.npy."""
    p = argparse.ArgumentParser()
    p.add_argument("system")
    p.add_argument("data", type=Path)
    p.add_argument("k", type=int)
    p.add_argument("out", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--spark-memory", default="10g")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    info: dict = {}
    d = _ncols(a.data)
    components = np.zeros((0, d))
    if a.system == "parse":
        x = load_csv(a.data)
        info.update(load_s=time.perf_counter() - t0, records_seen=len(x))
    elif a.system in ("sklearn-pca", "sklearn-incremental"):
        from sklearn.decomposition import PCA, IncrementalPCA
        from threadpoolctl import threadpool_limits

        with threadpool_limits(a.threads):
            if a.system == "sklearn-pca":  # in memory, as the library is used
                x = load_csv(a.data)
                info["load_s"] = time.perf_counter() - t0
                est = PCA(n_components=a.k).fit(x)
                info["records_seen"] = len(x)
            else:  # streamed: IncrementalPCA's own batches (5 x d records) from blocks of the file
                est = IncrementalPCA(n_components=a.k)
                size, seen = est.batch_size or 5 * d, 0
                for block in stream_csv(a.data, dtype=np.float32):
                    for s in range(0, len(block), size):
                        chunk = block[s:s + size]
                        if seen and len(chunk) < a.k:  # its rule: a batch needs >= n_components records
                            continue
                        est.partial_fit(chunk)
                        seen += len(chunk)
                info.update(records_seen=seen, batch_size=size)
        info.update(fit_s=time.perf_counter() - t0, explained_variance_ratio=est.explained_variance_ratio_.tolist(),
                    params={k: v for k, v in est.get_params().items()})
        components = est.components_
    elif a.system == "spark":
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        from pyspark.ml.feature import PCA, VectorAssembler
        from pyspark.sql import SparkSession
        from pyspark.sql.types import DoubleType, StructField, StructType

        spark = (SparkSession.builder.master(f"local[{a.threads}]").appName("onepass-pca-benchmark")
                 .config("spark.driver.memory", a.spark_memory).config("spark.ui.enabled", "false")
                 .config("spark.sql.shuffle.partitions", str(2 * a.threads)).getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        cols = [f"c{i}" for i in range(d)]
        schema = StructType([StructField(c, DoubleType(), False) for c in cols])
        df = spark.read.csv(str(a.data), schema=schema, header=False)
        features = VectorAssembler(inputCols=cols, outputCol="features").transform(df).select("features")
        t1 = time.perf_counter()
        model = PCA(k=a.k, inputCol="features").fit(features)
        components = model.pc.toArray().T
        info.update(startup_s=t1 - t0, fit_s=time.perf_counter() - t1,
                    explained_variance_ratio=model.explainedVariance.toArray().tolist(),
                    params={"k": a.k, "master": f"local[{a.threads}]", "spark.driver.memory": a.spark_memory})
        spark.stop()
    else:
        raise SystemExit(f"unknown system {a.system}")
    np.save(a.out.with_suffix(".npy"), np.asarray(components, dtype=np.float64))
    a.out.with_suffix(".json").write_text(json.dumps(info, default=str))
    return 0


def run_one(system: str, ds: str, path: Path, k: int, args, env: dict) -> dict:
    tag = f"pca_{ds}_k{k}_{system}"
    prefix = RUNS / tag
    log = RUNS / "logs" / f"{tag}.log"
    for suffix in (".npy", ".json"):
        prefix.with_suffix(suffix).unlink(missing_ok=True)
    if system.startswith("onepass"):
        out_dir = RUNS / f"{tag}.run"
        shutil.rmtree(out_dir, ignore_errors=True)
        mode = "randomized" if system == "onepass-randomized" else "regular"
        cmd = [_onepass_exe(), "train", "pca", "--data", str(path), "--out", str(out_dir), "--num-components",
               str(k), "--algorithm-mode", mode, "--threads", str(args.threads), "--quiet"]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", system, str(path), str(k), str(prefix),
               "--threads", str(args.threads), "--spark-memory", args.spark_memory]
    print(f"  {tag}: {' '.join(cmd[:3])} ...", flush=True)
    r = measure(cmd, args.timeout, log, env)
    r.update(system=system, dataset=ds, k=k, command=" ".join(cmd))
    if r["timed_out"]:
        r["status"] = f"did not finish (killed after {args.timeout:.0f} s time limit)"
    elif r["returncode"] != 0:
        why = "out of memory" if r["returncode"] in (-9, 137) or "MemoryError" in _tail(log, 50) else "error"
        r["status"] = f"did not finish ({why}, exit {r['returncode']}: {_tail(log)})"
    else:
        r["status"] = "ok"
        if system.startswith("onepass"):
            import onepass

            model = onepass.load_model(out_dir)
            np.save(prefix.with_suffix(".npy"), model.tensors["components"].double().numpy())
            r["info"] = {"records_seen": model.meta["records"], "stdout": _tail(log, 20),
                         "explained_variance_ratio": model.meta["explained_variance_ratio"],
                         "variance_error_bound": model.meta.get("variance_error_bound")}
        else:
            r["info"] = json.loads(prefix.with_suffix(".json").read_text())
        if system != "parse":
            r["components"] = str(prefix.with_suffix(".npy"))
    print(f"    {r['status']}  wall {r['wall_s']:.1f} s  peak {r['peak_bytes'] / 2**20:.0f} MiB  cpu {r['cpu_s']:.0f} s"
          f"  other load {r['other_load_cores']:.2f} cores", flush=True)
    return r


# ------------------------------------------------------------------------------------------ evaluator

def evaluate(path: Path, component_sets: dict[str, np.ndarray], k: int) -> dict:
    """One float64 pass: the exact scatter S (Chan's rule over blocks), then each set's explained share."""
    n, mean, S = 0, None, None
    for block in stream_csv(path):
        m, mu = len(block), block.mean(0)
        xc = block - mu
        if S is None:
            n, mean, S = m, mu, xc.T @ xc
            continue
        delta = mu - mean
        S += xc.T @ xc + np.outer(delta, delta) * (n * m / (n + m))
        mean, n = mean + delta * (m / (n + m)), n + m
    total = float(np.trace(S))
    lam = np.linalg.eigvalsh(S)[::-1]
    out = {"_records": n, "_optimum": float(lam[:k].sum() / total)}
    for key, V in component_sets.items():
        Q = np.linalg.qr(V.T)[0]  # an orthonormal basis of the returned components
        out[key] = float(np.trace(Q.T @ S @ Q) / total)
        out[key + "|orthonormal_error"] = float(np.abs(V @ V.T - np.eye(len(V))).max())
    return out


# ------------------------------------------------------------------------------------------------ data

def prepare(args) -> dict[str, Path]:
    """The CSV files (kept between runs, shared with the k-means benchmark where they are the same)."""
    DATA.mkdir(parents=True, exist_ok=True)
    exe = _onepass_exe()
    files: dict[str, Path] = {}

    def make(name: str, target: Path, extra: list[str]) -> Path:
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            print(f"writing {target} ...", flush=True)
            import subprocess
            subprocess.run([exe, "datasets", name, "--no-label", "--out", str(tmp), *extra], check=True)
            tmp.rename(target)
        return target

    if "digits" in args.datasets:
        files["digits"] = make("digits", DATA / "digits.csv", [])
    if "kdd04" in args.datasets:
        files["kdd04"] = make("kdd04", DATA / "kdd04.csv", [])
    if "dense" in args.datasets:
        files[f"dense {_n(args.dense_n)} x {args.dense_d}"] = make(
            "blobs", DATA / f"blobs_{args.dense_n}x{args.dense_d}.csv",
            ["--n", str(args.dense_n), "--d", str(args.dense_d), "--k", "10", "--seed", "0"])
    return files


# --------------------------------------------------------------------------------------------- report

def _ratio(a, b, digits=2):
    return "—" if a is None or b is None or b == 0 else f"{a / b:.{digits}f}"


def write_report(results: dict, path: Path) -> None:
    meta, runs = results["meta"], results["runs"]
    old = path.read_text() if path.exists() else ""
    notes = old.split(GENERATED_MARK, 1)[1] if GENERATED_MARK in old else "\n"
    k = meta["k"]
    L = ["# PCA benchmark: onepass against scikit-learn and Spark MLlib", "",
         f"Measured {meta['date']} on {meta['machine']}.", "",
         "Reproduce (from the repository root; makes `benchmarks/.venv`, writes the CSV files into "
         "`benchmarks/data/` and rewrites this file):", "", "```bash", meta["reproduce"], "```", "",
         f"This run: `{meta['command']}` (total {meta['total_s'] / 60:.0f} min, data preparation included).", "",
         "## Method", "",
         "- Every system reads the same CSV file (no header, no label) in a subprocess of its own; **wall s** is its "
         "life from start to exit, **peak MiB** the peak resident memory of its process tree (run_kmeans.py's "
         "measurement). **parse** is pyarrow reading the whole file into memory and nothing else.",
         f"- **explained** is the share of the data's variance that a system's top {k} components explain, "
         "computed for every system by one shared float64 evaluator over the file (exact scatter matrix S, "
         f"trace(QᵀSQ)/trace(S)); **optimum** is the best any {k} components can do (the top eigenvalues of S).",
         f"- Settings: onepass `train pca --num-components {k}` (mini-batch 5000; `--algorithm-mode randomized`: "
         f"a Frequent Directions sketch of {k} + max(10, {k}) rows); scikit-learn `PCA(n_components={k})` on the "
         f"whole file in memory (float32); `IncrementalPCA(n_components={k})` streamed with `partial_fit` over its "
         "default batches of 5 x d records from pyarrow's streaming reader (float32); Spark `PCA(k)` on "
         f"`spark.read.csv` + `VectorAssembler`, `local[{meta['threads']}]`. {meta['threads']} threads each.",
         "- Not run: the sparse 10^6 x 10^5 set of issue 4 (onepass reads no sparse file format yet).", ""]
    bars = []
    for ds in dict.fromkeys(r["dataset"] for r in runs.values()):
        get = lambda s: runs.get(f"{ds}|{k}|{s}")  # noqa: E731
        op, parse = get("onepass"), get("parse")
        ok = lambda r: r is not None and r["status"] == "ok"  # noqa: E731
        n = meta["records"].get(ds)
        L += [f"## {ds} ({n:,} records x {meta['dims'][ds]})", "",
              f"optimum explained by {k} components: {meta['optimum'].get(ds, float('nan')):.6f}", "",
              "| system | wall s | peak MiB | explained | time / onepass | memory / onepass | notes |",
              "|---|---:|---:|---:|---:|---:|---|"]
        for s in SYSTEMS:
            r = get(s)
            if not r:
                continue
            note = [] if ok(r) else [r["status"]]
            if r.get("other_load_cores", 0) > 0.25:
                note.append(f"**other processes used {r['other_load_cores']:.1f} cores during this run**")
            if r.get("info", {}).get("variance_error_bound") is not None:
                note.append(f"sketch bound {r['info']['variance_error_bound']:.3g}")
            expl = f"{r['explained']:.6f}" if r.get("explained") is not None else "—"
            L.append(f"| {LABELS[s]} | {r['wall_s']:.1f} | {r['peak_bytes'] / 2**20:,.0f} | {expl} | "
                     f"{_ratio(r['wall_s'], op['wall_s']) if ok(r) and ok(op) else '—'} | "
                     f"{_ratio(r['peak_bytes'], op['peak_bytes']) if ok(op) else '—'} | {'; '.join(note)} |")
        L.append("")
        bars.append((ds, _bars(get, ok, parse)))
    L += ["## The bars of issue 4", "", "| data set | matches exact PCA | faster than IncrementalPCA | "
          "2 x IncrementalPCA (10^7 x 100) | within 1.5 x parse (10^7 x 100) |", "|---|---|---|---|---|"]
    L += [f"| {ds} | " + " | ".join(b) + " |" for ds, b in bars]
    L += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in meta["versions"].items()] + ["", GENERATED_MARK]
    path.write_text("\n".join(L) + notes)


def _bars(get, ok, parse) -> list[str]:
    op, ref, inc = get("onepass"), get("sklearn-pca"), get("sklearn-incremental")
    if not ok(op):
        return ["onepass did not finish"] * 4
    out = []
    if ok(ref) and ref.get("explained") is not None:
        gap = abs(op["explained"] / ref["explained"] - 1)
        out.append(f"{'met' if gap <= 1e-6 else '**missed**'} ({gap:.1e})")
    else:
        out.append("no reference")
    speed = inc["wall_s"] / op["wall_s"] if ok(inc) else None
    out.append("IncrementalPCA did not finish" if speed is None else
               f"{'met' if speed > 1 else '**missed**'} ({speed:.2f} x)")
    big = "10^7" in op["dataset"]
    out.append("—" if not big or speed is None else f"{'met' if speed >= 2 else '**missed**'} ({speed:.2f} x)")
    if big and ok(parse):
        r = op["wall_s"] / parse["wall_s"]
        out.append(f"{'met' if r <= 1.5 else '**missed**'} ({r:.2f} x parse)")
    else:
        out.append("—")
    return out


# ----------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        return _worker(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: digits and a 50,000 x 100 stream, 300 s limit")
    p.add_argument("--datasets", nargs="+", default=["digits", "kdd04", "dense"], choices=("digits", "kdd04", "dense"))
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--k", type=int, default=10, help="components (default 10)")
    p.add_argument("--dense-n", type=int, default=10_000_000)
    p.add_argument("--dense-d", type=int, default=100)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take (default 1800)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--spark-memory", default="10g")
    p.add_argument("--results", type=Path, default=HERE / "results_pca.json")
    p.add_argument("--report", type=Path, default=HERE / "RESULTS_PCA.md")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from --results")
    args = p.parse_args(argv)
    if args.quick:
        args.datasets = [d for d in args.datasets if d != "kdd04"]
        args.dense_n, args.timeout = min(args.dense_n, 50_000), min(args.timeout, 300.0)
        if args.results == HERE / "results_pca.json":
            args.results = RUNS / "pca_quick.json"
        if args.report == HERE / "RESULTS_PCA.md":
            args.report = RUNS / "PCA_QUICK.md"
    if args.report_only:
        write_report(json.loads(args.results.read_text()), args.report)
        print(f"wrote {args.report}")
        return 0

    t_start = time.perf_counter()
    (RUNS / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    files = prepare(args)
    records = {ds: sum(1 for _ in open(f, "rb")) for ds, f in files.items()}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "versions": versions(),
            "threads": args.threads, "timeout": args.timeout, "k": args.k, "records": records,
            "dims": {ds: _ncols(f) for ds, f in files.items()}, "optimum": {},
            "command": "python benchmarks/run_pca.py " + " ".join(argv),
            "reproduce": "bash benchmarks/run.sh pca" + (" " + " ".join(argv) if argv else ""),
            "files": {ds: str(f.relative_to(HERE.parent)) for ds, f in files.items()}}
    results = {"meta": meta, "runs": {}}
    for ds, path in files.items():
        print(f"{ds}: {path} ({records[ds]:,} records)", flush=True)
        for system in args.systems:
            results["runs"][f"{ds}|{args.k}|{system}"] = run_one(system, ds, path, args.k, args, env)
            args.results.write_text(json.dumps(results, indent=1, default=str))
        todo = {key: np.load(r["components"]) for key, r in results["runs"].items()
                if r["dataset"] == ds and r["status"] == "ok" and "components" in r}
        t0 = time.perf_counter()
        scores = evaluate(path, todo, args.k)
        meta["optimum"][ds] = scores["_optimum"]
        for key in todo:
            results["runs"][key]["explained"] = scores[key]
            results["runs"][key]["orthonormal_error"] = scores[key + "|orthonormal_error"]
        print(f"  evaluated {len(todo)} component sets on {scores['_records']:,} records in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        args.results.write_text(json.dumps(results, indent=1, default=str))
    meta["total_s"] = time.perf_counter() - t_start
    args.results.write_text(json.dumps(results, indent=1, default=str))
    write_report(results, args.report)
    print(f"wrote {args.report} and {args.results} ({meta['total_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
