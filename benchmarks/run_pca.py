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

The sparse set (`--datasets sparse`, in the default list): a generated 10^6 x 10^5 LibSVM file (0.1 % non-zeros,
bag-of-words-like: 10 topics over a flat floor; about 1 GB, written in chunks in bounded memory). On it onepass runs randomized only
(regular mode's d x d float64 scatter would be 80 GB); scikit-learn's IncrementalPCA densifies its batches and runs
under an address-space cap (--memory-cap-gb), so it is recorded as refused or out of memory rather than taking the
machine down; scikit-learn's TruncatedSVD (uncentred) on the whole file loaded by load_svmlight_file is the sparse
peer; Spark MLlib's PCA computes a d x d covariance and refuses more than 65,535 columns, so it is skipped there
(it runs on --quick's 10^4 x 10^3). `parse` on this set is load_svmlight_file. The evaluator streams the file once
(scores are centred-variance shares, as for the dense sets); the optimum needs S's eigenvalues (d x d), so it is
left out where d > 5,000.
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
from run_kmeans import (DATA, RUNS, _n, _ncols, _onepass_exe, _tail, kept_run, load_csv,  # noqa: E402
                        machine, measure_repeated, run_env, stream_csv, versions)

SYSTEMS = ("parse", "onepass", "onepass-randomized", "sklearn-pca", "sklearn-incremental", "sklearn-truncated-svd",
           "spark")
SPARSE_SYSTEMS = ("parse", "onepass", "onepass-randomized", "sklearn-incremental", "sklearn-truncated-svd", "spark")
LABELS = {"parse": "pyarrow parse (whole file)", "onepass": "onepass regular (1 pass)",
          "onepass-randomized": "onepass randomized (1 pass)", "sklearn-pca": "scikit-learn PCA",
          "sklearn-incremental": "scikit-learn IncrementalPCA", "sklearn-truncated-svd": "scikit-learn TruncatedSVD",
          "spark": "Spark MLlib PCA"}
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
    p.add_argument("--n-features", type=int, help="a LibSVM file: its width (it has no header)")
    p.add_argument("--memory-cap-gb", type=float, default=0, help="address-space cap for this worker (0: none)")
    a = p.parse_args(argv)
    if a.memory_cap_gb:  # a densifying peer meets MemoryError here instead of taking the machine down
        import resource
        cap = int(a.memory_cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    t0 = time.perf_counter()
    info: dict = {}
    if a.n_features:
        components = _sparse_worker(a, info, t0)
    else:
        components = _dense_worker(a, info, t0)
    np.save(a.out.with_suffix(".npy"), np.asarray(components, dtype=np.float64))
    a.out.with_suffix(".json").write_text(json.dumps(info, default=str))
    return 0


def _spark_session(a):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(f"local[{a.threads}]").appName("onepass-pca-benchmark")
             .config("spark.driver.memory", a.spark_memory).config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", str(2 * a.threads)).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _sparse_worker(a, info: dict, t0: float) -> np.ndarray:
    """The LibSVM file: parse, IncrementalPCA (densifies), TruncatedSVD (sparse, uncentred) or Spark (sparse)."""
    from threadpoolctl import threadpool_limits

    d = a.n_features
    if a.system == "spark":
        from pyspark.ml.feature import PCA

        spark = _spark_session(a)
        df = spark.read.format("libsvm").option("numFeatures", str(d)).load(str(a.data))
        t1 = time.perf_counter()
        model = PCA(k=a.k, inputCol="features").fit(df.select("features"))
        info.update(startup_s=t1 - t0, fit_s=time.perf_counter() - t1,
                    explained_variance_ratio=model.explainedVariance.toArray().tolist(),
                    params={"k": a.k, "master": f"local[{a.threads}]", "spark.driver.memory": a.spark_memory})
        components = model.pc.toArray().T
        spark.stop()
        return components
    from sklearn.datasets import load_svmlight_file

    x = load_svmlight_file(str(a.data), n_features=d, zero_based=False)[0]
    info.update(load_s=time.perf_counter() - t0, records_seen=x.shape[0], nnz=int(x.nnz))
    if a.system == "parse":
        return np.zeros((0, d))
    from sklearn.decomposition import IncrementalPCA, TruncatedSVD

    with threadpool_limits(a.threads):
        if a.system == "sklearn-incremental":  # fit on sparse input densifies one batch (5 x d records) at a time
            est = IncrementalPCA(n_components=a.k)
            info["dense_batch_bytes"] = min(5 * d, x.shape[0]) * d * 8
        elif a.system == "sklearn-truncated-svd":
            est = TruncatedSVD(n_components=a.k, algorithm="randomized", random_state=0)
        else:
            raise SystemExit(f"{a.system} does not run on sparse data")
        est.fit(x)
    info.update(fit_s=time.perf_counter() - t0, explained_variance_ratio=est.explained_variance_ratio_.tolist(),
                params={k: v for k, v in est.get_params().items()})
    return est.components_


def _dense_worker(a, info: dict, t0: float) -> np.ndarray:
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
        from pyspark.ml.feature import PCA, VectorAssembler
        from pyspark.sql.types import DoubleType, StructField, StructType

        spark = _spark_session(a)
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
    return components


def _skip_reason(system: str, d: int, args) -> str | None:
    """Why a system is not run on a sparse set of width d (None: run it)."""
    if system == "onepass" and d * d * 8 > args.memory_cap_gb * 2**30:
        return f"skipped: regular mode keeps a d x d float64 scatter, {d * d * 8 / 2**30:,.0f} GiB at d = {d:,}"
    if system == "spark" and d > 65535:
        return (f"skipped: Spark's PCA computes a d x d covariance and refuses more than 65,535 columns "
                f"(d = {d:,})")
    return None


def run_one(system: str, ds: str, path: Path, k: int, args, env: dict, n_features: int | None = None) -> dict:
    tag = f"pca_{ds}_k{k}_{system}"
    skip = _skip_reason(system, n_features, args) if n_features else None
    if skip:
        print(f"  {tag}: {skip}", flush=True)
        return {"system": system, "dataset": ds, "k": k, "status": skip, "wall_s": None, "peak_bytes": None}
    prefix = RUNS / tag
    log = RUNS / "logs" / f"{tag}.log"
    for suffix in (".npy", ".json"):
        prefix.with_suffix(suffix).unlink(missing_ok=True)
    before = None
    if system.startswith("onepass"):
        out_dir = RUNS / f"{tag}.run"
        before = lambda: shutil.rmtree(out_dir, ignore_errors=True)  # noqa: E731 (each repeat starts afresh)
        mode = "randomized" if system == "onepass-randomized" else "regular"
        cmd = [_onepass_exe(), "train", "pca", "--data", str(path), "--out", str(out_dir), "--num-components",
               str(k), "--algorithm-mode", mode, "--threads", str(args.threads), "--quiet"]
        cmd += ["--feature-dim", str(n_features)] if n_features else []
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", system, str(path), str(k), str(prefix),
               "--threads", str(args.threads), "--spark-memory", args.spark_memory]
        if n_features:
            cmd += ["--n-features", str(n_features)]
            if system == "sklearn-incremental":
                cmd += ["--memory-cap-gb", str(args.memory_cap_gb)]
    print(f"  {tag}: {' '.join(cmd[:3])} ...", flush=True)
    r = measure_repeated(cmd, args.timeout, log, env, args.repeats, args.repeat_under, before)
    r.update(system=system, dataset=ds, k=k, command=" ".join(cmd))
    if r["timed_out"]:
        r["status"] = f"did not finish (killed after {args.timeout:.0f} s time limit)"
    elif r["returncode"] != 0:
        tail = _tail(log, 50)
        why = "out of memory" if r["returncode"] in (-9, 137) or "MemoryError" in tail or "Unable to allocate" in tail \
            else "error"
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


def evaluate_sparse(path: Path, d: int, component_sets: dict[str, np.ndarray], k: int) -> dict:
    """One float64 pass over a LibSVM file, never dense: per set, trace(Q^T S Q) from sums of (XQ)^T XQ and XQ;
    trace(S) from sums of squares. The optimum (top eigenvalues of the d x d S) only where d <= 5,000."""
    import torch
    from onepass.data import Stream

    bases = {key: torch.from_numpy(np.linalg.qr(V.T)[0]) for key, V in component_sets.items()}
    proj = {key: [0.0, torch.zeros(Q.shape[1], dtype=torch.float64)] for key, Q in bases.items()}
    n, squares, sums = 0, 0.0, torch.zeros(d, dtype=torch.float64)
    S = torch.zeros(d, d, dtype=torch.float64) if d <= 5000 else None
    for batch in Stream(path, n_features=d).batches(20_000):
        x = batch.x.to(torch.float64)
        n += x.shape[0]
        squares += float((x.values() ** 2).sum())
        sums += (x.t() @ torch.ones(x.shape[0], 1, dtype=torch.float64))[:, 0]
        if S is not None:
            S += (x.t() @ x).to_dense()
        for key, Q in bases.items():
            xq = x @ Q
            proj[key][0] += float((xq * xq).sum())
            proj[key][1] += xq.sum(0)
    total = squares - float(sums @ sums) / n
    out = {"_records": n, "_optimum": None}
    if S is not None:
        S -= torch.outer(sums, sums) / n
        out["_optimum"] = float(torch.linalg.eigvalsh(S).flip(0)[:k].sum()) / total
    for key, (sq, s) in proj.items():
        out[key] = (sq - float(s @ s) / n) / total
        V = component_sets[key]
        out[key + "|orthonormal_error"] = float(np.abs(V @ V.T - np.eye(len(V))).max())
    return out


# ------------------------------------------------------------------------------------------------ data

def write_sparse_libsvm(path: Path, n: int, d: int, density: float, topics: int = 10, vocabulary: int = 200,
                        seed: int = 0, chunk: int = 20_000) -> None:
    """n x d LibSVM (1-based) shaped like bag-of-words data: each record draws a topic (probabilities ~ 1/t), puts
    80 % of its density * d non-zeros on that topic's `vocabulary` columns and 20 % anywhere, values exponential.
    The topic means give `topics` strong directions over a flat floor. Written in chunks of records (bounded
    memory), the text built by pyarrow's string kernels (no Python loop per value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    words = rng.integers(0, d, size=(topics, vocabulary))
    weights = 1.0 / np.arange(1, topics + 1)
    per_row = max(1, round(density * d))
    on_topic = round(0.8 * per_row)
    with open(path, "wb") as f:
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            topic = rng.choice(topics, size=m, p=weights / weights.sum())
            cols = np.concatenate([words[topic[:, None], rng.integers(0, vocabulary, size=(m, on_topic))],
                                   rng.integers(0, d, size=(m, per_row - on_topic))], axis=1)
            cols.sort(axis=1)
            keep = np.ones(cols.shape, dtype=bool)
            keep[:, 1:] = cols[:, 1:] != cols[:, :-1]  # indices unique along a row
            vals = np.round(rng.exponential(size=cols.shape), 3) + 0.001
            offsets = np.zeros(m + 1, dtype=np.int32)
            np.cumsum(keep.sum(1), out=offsets[1:])
            pairs = pc.binary_join_element_wise(pa.array(cols[keep] + 1).cast(pa.string()),
                                                pa.array(vals[keep]).cast(pa.string()), ":")
            rows = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pairs), " ")
            lines = pc.binary_join_element_wise(pa.array(topic).cast(pa.string()), rows, " ")
            f.write(("\n".join(lines.to_pylist()) + "\n").encode())


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
    if "sparse" in args.datasets:
        target = DATA / f"sparse_{args.sparse_n}x{args.sparse_d}_{args.sparse_density:g}.libsvm"
        if not target.exists():
            print(f"writing {target} ...", flush=True)
            tmp = target.with_suffix(".tmp")
            write_sparse_libsvm(tmp, args.sparse_n, args.sparse_d, args.sparse_density)
            tmp.rename(target)
        files[f"sparse {_n(args.sparse_n)} x {_n(args.sparse_d)}"] = target
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
         (f"Full run: `{meta['first_run']['command']}` ({meta['first_run']['date']}, "
          f"{meta['first_run'].get('total_s', 0) / 60:.0f} min); then `{meta['command']}` ({meta['date']}, "
          f"{meta['total_s'] / 60:.0f} min) re-ran some of its runs." if meta.get("first_run") else
          f"This run: `{meta['command']}` (total {meta['total_s'] / 60:.0f} min, data preparation included)."), "",
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
         "- The sparse set is a LibSVM file: onepass `--feature-dim d`; **parse** is scikit-learn's "
         "`load_svmlight_file` of the whole file; `TruncatedSVD(k)` (randomized, uncentred, on the whole CSR matrix) "
         "is the sparse peer; IncrementalPCA (which densifies batches of 5 x d records) runs under an address-space "
         f"cap of {meta.get('memory_cap_gb', '?')} GB; the optimum is left out where d > 5,000 (it needs S's "
         "eigenvalues).", ""]
    bars = []
    present = {r["dataset"] for r in runs.values()}
    for ds in [d for d in dict.fromkeys([*meta["records"], *present]) if d in present]:
        get = lambda s: runs.get(f"{ds}|{k}|{s}")  # noqa: E731
        ok = lambda r: r is not None and r["status"] == "ok"  # noqa: E731
        # the reference: regular mode, or randomized where regular cannot run (the sparse set)
        op, parse = get("onepass") if ok(get("onepass")) else get("onepass-randomized") or get("onepass"), get("parse")
        n = meta["records"].get(ds)
        L += [f"## {ds} ({n:,} records x {meta['dims'][ds]})", "",
              f"optimum explained by {k} components: " + (f"{meta['optimum'][ds]:.6f}" if meta["optimum"].get(ds)
                                                           is not None else "not computed (d x d)"), "",
              "| system | wall s | peak MiB | explained | time / onepass | memory / onepass | notes |",
              "|---|---:|---:|---:|---:|---:|---|"]
        for s in SYSTEMS:
            r = get(s)
            if not r:
                continue
            note = [] if ok(r) else [r["status"]]
            if r.get("other_load_cores", 0) > 0.25:
                note.append(f"**other processes used {r['other_load_cores']:.1f} cores during this run**")
            if len(r.get("walls_s", [])) > 1:
                note.append(f"median of {len(r['walls_s'])} runs ({', '.join(f'{w:.1f}' for w in r['walls_s'])} s)")
            if r.get("info", {}).get("variance_error_bound") is not None:
                note.append(f"sketch bound {r['info']['variance_error_bound']:.3g}")
            expl = f"{r['explained']:.6f}" if r.get("explained") is not None else "—"
            wall = f"{r['wall_s']:.1f}" if r.get("wall_s") is not None else "—"
            peak = f"{r['peak_bytes'] / 2**20:,.0f}" if r.get("peak_bytes") is not None else "—"
            L.append(f"| {LABELS[s]} | {wall} | {peak} | {expl} | "
                     f"{_ratio(r['wall_s'], op['wall_s']) if ok(r) and ok(op) else '—'} | "
                     f"{_ratio(r['peak_bytes'], op['peak_bytes']) if ok(op) else '—'} | {'; '.join(note)} |")
        L.append("")
        bars.append((ds, _bars(get, ok, parse, meta["optimum"].get(ds), ds.startswith("sparse"))))
    L += ["## The bars of issue 4", "", "Regular mode against the exact optimum (relative gap in the share of variance "
          "explained; the bar is 1e-6).", "",
          "| data set | matches exact PCA | faster than IncrementalPCA | 2 x IncrementalPCA (10^7 x 100) | "
          "within 1.5 x parse (10^7 x 100) | sparse: onepass finishes where the peers densify |",
          "|---|---|---|---|---|---|"]
    L += [f"| {ds} | " + " | ".join(b) + " |" for ds, b in bars]
    L += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in meta["versions"].items()] + ["", GENERATED_MARK]
    path.write_text("\n".join(L) + notes)


def _bars(get, ok, parse, optimum: float | None, sparse: bool) -> list[str]:
    """The issue's bars for one data set: regular mode matches exact PCA (the evaluator's float64 optimum: the
    explained share of the top eigenvectors of the exact scatter), faster than IncrementalPCA, and on the sparse
    set: onepass finishes where the peers densify."""
    if sparse:
        op, inc = get("onepass-randomized"), get("sklearn-incremental")
        if not ok(op):
            return ["—", "—", "—", "—", "**missed**: onepass did not finish"]
        peers = "IncrementalPCA " + ("finished" if ok(inc) else "did not finish: " + str(inc.get("status", "?"))[:60])
        return ["—", "—", "—", "—", f"{'met' if not ok(inc) else '**missed**'} (onepass randomized "
                f"{op['wall_s']:.0f} s, {op['peak_bytes'] / 2**20:,.0f} MiB; {peers})"]
    op, ref, inc = get("onepass"), get("sklearn-pca"), get("sklearn-incremental")
    if not ok(op):
        return ["onepass did not finish"] * 4 + ["—"]
    out = []
    exact = optimum if optimum is not None else (ref.get("explained") if ok(ref) else None)
    if exact is not None and op.get("explained") is not None:
        gap = abs(op["explained"] / exact - 1)
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
    return out + ["—"]


# ----------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        return _worker(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: digits and a 50,000 x 100 stream, 300 s limit")
    p.add_argument("--datasets", nargs="+", default=["digits", "kdd04", "dense", "sparse"],
                   choices=("digits", "kdd04", "dense", "sparse"))
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--k", type=int, default=10, help="components (default 10)")
    p.add_argument("--dense-n", type=int, default=10_000_000)
    p.add_argument("--dense-d", type=int, default=100)
    p.add_argument("--sparse-n", type=int, default=1_000_000)
    p.add_argument("--sparse-d", type=int, default=100_000)
    p.add_argument("--sparse-density", type=float, default=0.001, help="share of non-zeros (default 0.1 %%)")
    p.add_argument("--memory-cap-gb", type=float, default=16.0,
                   help="address-space cap of IncrementalPCA on the sparse set; also the largest d x d scatter "
                        "onepass regular mode is run with there (default 16)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take (default 1800)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--spark-memory", default="10g")
    p.add_argument("--results", type=Path, default=HERE / "results_pca.json")
    p.add_argument("--report", type=Path, default=HERE / "RESULTS_PCA.md")
    p.add_argument("--repeats", type=int, default=3, help="runs of a short run: its median is reported (default 3)")
    p.add_argument("--repeat-under", type=float, default=30.0, metavar="S",
                   help="repeat a run only while it takes under S seconds (default 30)")
    p.add_argument("--resume", action="store_true", help="keep the finished runs of --results; run the rest")
    p.add_argument("--redo", nargs="+", default=[], metavar="PATTERN",
                   help="with --resume: run these again anyway; glob patterns on 'DATASET|K|SYSTEM'")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from --results")
    args = p.parse_args(argv)
    if args.quick:
        args.datasets = [d for d in args.datasets if d != "kdd04"]
        args.dense_n, args.timeout = min(args.dense_n, 50_000), min(args.timeout, 300.0)
        args.sparse_n, args.sparse_d = min(args.sparse_n, 10_000), min(args.sparse_d, 1000)
        args.sparse_density = max(args.sparse_density, 0.02)  # 20 non-zeros a record at d = 1000
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
    env = run_env(args.threads)
    old = json.loads(args.results.read_text()) if args.resume and args.results.exists() else {"runs": {}}
    files = prepare(args)
    records = {ds: sum(1 for _ in open(f, "rb")) for ds, f in files.items()}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "versions": versions(),
            "threads": args.threads, "timeout": args.timeout, "k": args.k, "records": records,
            "repeats": args.repeats, "repeat_under": args.repeat_under,
            "memory_cap_gb": args.memory_cap_gb,
            "dims": {ds: args.sparse_d if f.suffix == ".libsvm" else _ncols(f) for ds, f in files.items()},
            "optimum": {},
            "command": "python benchmarks/run_pca.py " + " ".join(argv),
            "reproduce": "bash benchmarks/run.sh pca" + (" " + " ".join(argv) if argv else ""),
            "files": {ds: str(f.relative_to(HERE.parent)) for ds, f in files.items()}}
    results = {"meta": meta, "runs": {}}
    if args.resume:  # the data sets not run this time keep their rows (and facts) from --results
        results["runs"] = {key: r for key, r in old["runs"].items() if r["dataset"] not in files}
        for field in ("records", "dims", "files", "optimum"):
            for ds, v in old.get("meta", {}).get(field, {}).items():
                meta[field].setdefault(ds, v)
    for ds, path in files.items():
        print(f"{ds}: {path} ({records[ds]:,} records)", flush=True)
        sparse = path.suffix == ".libsvm"
        for system in args.systems:
            if (system in SPARSE_SYSTEMS) if sparse else system != "sklearn-truncated-svd":
                key = f"{ds}|{args.k}|{system}"
                prev = kept_run(old, key, args.redo, scored="explained", artefact="components")
                if prev:
                    results["runs"][key] = prev
                    continue
                results["runs"][key] = run_one(system, ds, path, args.k, args, env, args.sparse_d if sparse else None)
            args.results.write_text(json.dumps(results, indent=1, default=str))
        todo = {key: np.load(r["components"]) for key, r in results["runs"].items()
                if r["dataset"] == ds and r["status"] == "ok" and "components" in r and "explained" not in r}
        if not todo and ds in old.get("meta", {}).get("optimum", {}):
            meta["optimum"][ds] = old["meta"]["optimum"][ds]  # every run kept, and scored
            continue
        t0 = time.perf_counter()
        scores = evaluate_sparse(path, args.sparse_d, todo, args.k) if sparse else evaluate(path, todo, args.k)
        meta["optimum"][ds] = scores["_optimum"]
        for key in todo:
            results["runs"][key]["explained"] = scores[key]
            results["runs"][key]["orthonormal_error"] = scores[key + "|orthonormal_error"]
        print(f"  evaluated {len(todo)} component sets on {scores['_records']:,} records in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        args.results.write_text(json.dumps(results, indent=1, default=str))
    meta["total_s"] = time.perf_counter() - t_start
    if args.resume and "meta" in old:  # the run that this one continued
        first = old["meta"].get("first_run", old["meta"])
        meta["first_run"] = {k: first[k] for k in ("date", "command", "total_s", "reproduce") if k in first}
        meta["reproduce"] = meta["first_run"].get("reproduce", meta["reproduce"])
    args.results.write_text(json.dumps(results, indent=1, default=str))
    write_report(results, args.report)
    print(f"wrote {args.report} and {args.results} ({meta['total_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
