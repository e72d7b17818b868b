#!/usr/bin/env python
"""k-means benchmark: onepass (one pass) against scikit-learn KMeans and MiniBatchKMeans, River's KMeans and
Spark MLlib KMeans, every system reading the same CSV file in its own subprocess.

    python benchmarks/run_kmeans.py            # the full benchmark (about an hour on 2 cores)
    python benchmarks/run_kmeans.py --quick    # a smoke run of a few minutes

Per data set and k, each system runs in a subprocess of its own; the parent measures its wall time (process
start to exit, so start-up, CSV reading and fitting all count) and its peak memory (the resident set of the
whole process tree, polled, so Spark's JVM is included; GNU time's %M (ru_maxrss of the largest process) is a floor).
Every system's centres are then scored by ONE shared evaluator that streams over the CSV in float64: the cost
is the sum over every record of the squared distance to its nearest returned centre.

Run `benchmarks/run.sh` to make the environment (benchmarks/.venv), prepare the data and run this.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RUNS = DATA / "runs"
SYSTEMS = ("onepass", "sklearn-kmeans", "sklearn-minibatch", "river", "spark")
LABELS = {"onepass": "onepass (1 pass)", "sklearn-kmeans": "scikit-learn KMeans", "sklearn-minibatch":
          "scikit-learn MiniBatchKMeans", "river": "River KMeans", "spark": "Spark MLlib KMeans"}
GENERATED_MARK = "<!-- Hand-written notes below this line are kept when run_kmeans.py rewrites the file. -->"


# ------------------------------------------------------------------------------------------------ CSV

def _ncols(path: Path) -> int:
    with open(path) as f:
        return len(f.readline().split(","))


def load_csv(path: Path, dtype=np.float32) -> np.ndarray:
    """The whole CSV as one C-ordered (n, d) array, parsed by pyarrow's multi-threaded reader."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(_ncols(path))]
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names),
                           convert_options=pacsv.ConvertOptions(
                               column_types={n: pa.from_numpy_dtype(dtype) for n in names}))
    x = np.empty((table.num_rows, len(names)), dtype=dtype)
    for j in range(len(names)):
        x[:, j] = table.column(j).to_numpy()
    return x


def stream_csv(path: Path, dtype=np.float64, block_size: int = 1 << 26):
    """Blocks of the CSV as (m, d) arrays, in order, in bounded memory."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(_ncols(path))]
    reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(column_names=names, block_size=block_size),
                            convert_options=pacsv.ConvertOptions(
                                column_types={n: pa.from_numpy_dtype(dtype) for n in names}))
    for batch in reader:
        x = np.empty((batch.num_rows, len(names)), dtype=dtype)
        for j in range(len(names)):
            x[:, j] = batch.column(j).to_numpy()
        yield x


# -------------------------------------------------------------------------------------------- workers

def _worker(argv: list[str]) -> int:
    """`run_kmeans.py _worker SYSTEM CSV K OUT_PREFIX [options]`: fit and save centres to OUT_PREFIX.npy."""
    p = argparse.ArgumentParser()
    p.add_argument("system")
    p.add_argument("data", type=Path)
    p.add_argument("k", type=int)
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--river-budget", type=float, default=120.0)
    p.add_argument("--spark-memory", default="10g")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    info: dict = {}
    if a.system in ("sklearn-kmeans", "sklearn-minibatch"):
        from sklearn.cluster import KMeans, MiniBatchKMeans
        from threadpoolctl import threadpool_limits

        x = load_csv(a.data)
        info["load_s"] = time.perf_counter() - t0
        with threadpool_limits(a.threads):
            est = (KMeans if a.system == "sklearn-kmeans" else MiniBatchKMeans)(n_clusters=a.k,
                                                                                 random_state=a.seed)
            t1 = time.perf_counter()
            est.fit(x)
        info.update(fit_s=time.perf_counter() - t1, n_iter=int(est.n_iter_), records_seen=len(x),
                    params={k: v for k, v in est.get_params().items() if k != "verbose"})
        if hasattr(est, "n_steps_"):
            info["n_steps"] = int(est.n_steps_)
        centers = est.cluster_centers_
    elif a.system == "river":
        from river import cluster

        model = cluster.KMeans(n_clusters=a.k, seed=a.seed)
        seen, stopped = 0, False
        deadline = t0 + a.river_budget
        for block in stream_csv(a.data, block_size=1 << 20):
            for row in block.tolist():
                model.learn_one(dict(enumerate(row)))
                seen += 1
                if seen % 256 == 0 and time.perf_counter() > deadline:
                    stopped = True
                    break
            if stopped:
                break
        d = _ncols(a.data)
        centers = np.array([[model.centers[i][j] for j in range(d)] for i in range(a.k)])
        info.update(fit_s=time.perf_counter() - t0, records_seen=seen, stopped_by_budget=stopped,
                    budget_s=a.river_budget, params={"n_clusters": a.k, "halflife": 0.5, "mu": 0, "sigma": 1,
                                                     "p": 2, "seed": a.seed})
    elif a.system == "spark":
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        from pyspark.ml.clustering import KMeans
        from pyspark.ml.feature import VectorAssembler
        from pyspark.sql import SparkSession
        from pyspark.sql.types import DoubleType, StructField, StructType

        spark = (SparkSession.builder.master(f"local[{a.threads}]").appName("onepass-kmeans-benchmark")
                 .config("spark.driver.memory", a.spark_memory).config("spark.ui.enabled", "false")
                 .config("spark.sql.shuffle.partitions", str(2 * a.threads)).getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        d = _ncols(a.data)
        cols = [f"c{i}" for i in range(d)]
        schema = StructType([StructField(c, DoubleType(), False) for c in cols])
        df = spark.read.csv(str(a.data), schema=schema, header=False)
        features = VectorAssembler(inputCols=cols, outputCol="features").transform(df).select("features")
        est = KMeans(k=a.k, seed=a.seed, featuresCol="features")
        t1 = time.perf_counter()
        model = est.fit(features)
        centers = np.array(model.clusterCenters())
        info.update(startup_s=t1 - t0, fit_s=time.perf_counter() - t1, n_iter=int(model.summary.numIter),
                    records_seen=int(model.summary.clusterSizes and sum(model.summary.clusterSizes)),
                    params={"k": a.k, "maxIter": est.getMaxIter(), "tol": est.getTol(),
                            "initMode": est.getInitMode(), "initSteps": est.getInitSteps(), "seed": a.seed,
                            "master": f"local[{a.threads}]", "spark.driver.memory": a.spark_memory})
        spark.stop()
    else:
        raise SystemExit(f"unknown system {a.system}")
    np.save(a.out.with_suffix(".npy"), np.asarray(centers, dtype=np.float64))
    a.out.with_suffix(".json").write_text(json.dumps(info, default=str))
    return 0


# ---------------------------------------------------------------------------------------- measurement

def _tree_rss(proc, cpu: dict[int, float]) -> int:
    """Resident bytes of proc and all its descendants; records each one's CPU seconds so far in `cpu`."""
    import psutil

    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            with p.oneshot():
                total += p.memory_info().rss
                t = p.cpu_times()
                cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system)
        except psutil.Error:
            pass
    return total


def _busy_cpu_s() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


def measure(cmd: list[str], timeout: float, log: Path, env: dict) -> dict:
    """Run cmd; its wall time, peak RSS of its process tree (polled) and ru_maxrss; kill it past timeout."""
    import psutil

    # GNU time's %M is the child's own ru_maxrss, measured from a fresh fork of the small `time` process (a
    # fork of this big parent would carry the parent's resident set into the child's ru_maxrss).
    rss_file = log.with_suffix(".maxrss")
    rss_file.unlink(missing_ok=True)
    if Path("/usr/bin/time").exists():
        cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd]
    cpu: dict[int, float] = {}
    with open(log, "w") as out:
        busy0, t0 = _busy_cpu_s(), time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        proc = psutil.Process(p.pid)
        peak, timed_out, status, ru = 0, False, 0, None
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_rss(proc, cpu))
            elapsed = time.perf_counter() - t0
            if elapsed > timeout:
                timed_out = True
                os.killpg(p.pid, signal.SIGKILL)
                _, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.02 if elapsed < 2 else 0.05)
        wall = time.perf_counter() - t0
        busy = _busy_cpu_s() - busy0
        p.returncode = os.waitstatus_to_exitcode(status)
    # The CPU the run's own process tree used (the larger of the polled per-process times and wait4's rusage,
    # which also holds the waited-for children's) and what everything else on the machine used meanwhile:
    # a check that no other work shared the cores during a timed run.
    own = max(sum(cpu.values()), (ru.ru_utime + ru.ru_stime) if ru is not None else 0.0)
    other_load = max(0.0, busy - own) / wall if wall > 0 else 0.0
    try:  # whatever the worker left behind (a JVM) goes with it
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        maxrss = int(rss_file.read_text().split()[-1]) * 1024
    except (OSError, ValueError, IndexError):
        maxrss = 0
    return {"wall_s": wall, "peak_bytes": max(peak, maxrss), "polled_peak_bytes": peak, "ru_maxrss_bytes": maxrss,
            "returncode": p.returncode, "timed_out": timed_out, "cpu_s": own, "other_load_cores": other_load}


def measure_repeated(cmd: list[str], timeout: float, log: Path, env: dict, repeats: int, under: float,
                     before=None) -> dict:
    """Run cmd up to `repeats` times while each run takes under `under` s: the run of median wall time, with
    every run's wall time. A short run's time is otherwise half noise (the first one after a change also loads
    torch's libraries from disk, not from the page cache). `before` is called before each run."""
    runs = []
    for _ in range(max(1, repeats)):
        if before is not None:
            before()
        r = measure(cmd, timeout, log, env)
        runs.append(r)
        if r["returncode"] != 0 or r["timed_out"] or r["wall_s"] >= under:
            break
    if runs[-1]["returncode"] != 0 or runs[-1]["timed_out"]:
        chosen = runs[-1]
    else:
        chosen = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    return {**chosen, "walls_s": [r["wall_s"] for r in runs]}


def kept_run(old: dict, key: str, redo: list[str], scored: str, artefact: str) -> dict | None:
    """With --resume: the run `key` of an earlier results file, to keep rather than run again: finished, not named
    by a --redo pattern, and scored already (`scored` in it) or with its output (`artefact`) still on disk."""
    prev = old["runs"].get(key)
    if prev is None or prev["status"] != "ok" or any(fnmatch.fnmatchcase(key, pat) for pat in redo):
        return None
    return prev if scored in prev or Path(prev.get(artefact, "")).exists() else None


def _tail(log: Path, n: int = 3) -> str:
    try:
        lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-300:]


def run_one(system: str, ds: str, path: Path, k: int, args, env: dict) -> dict:
    tag = f"{ds}_k{k}_{system}"
    prefix = RUNS / tag
    log = RUNS / "logs" / f"{tag}.log"
    for suffix in (".npy", ".json"):
        prefix.with_suffix(suffix).unlink(missing_ok=True)
    out_dir, before = RUNS / f"{tag}.run", None
    if system == "onepass":
        before = lambda: shutil.rmtree(out_dir, ignore_errors=True)  # noqa: E731 (each repeat starts afresh)
        cmd = [_onepass_exe(), "train", "kmeans", "--data", str(path), "--out", str(out_dir), "--k", str(k),
               "--threads", str(args.threads), "--seed", str(args.seed), "--quiet"]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", system, str(path), str(k), str(prefix),
               "--seed", str(args.seed), "--threads", str(args.threads), "--river-budget", str(args.river_budget),
               "--spark-memory", args.spark_memory]
    print(f"  {tag}: {' '.join(cmd[:3])} ...", flush=True)
    r = measure_repeated(cmd, args.timeout, log, env, args.repeats, args.repeat_under, before=before)
    r.update(system=system, dataset=ds, k=k, command=" ".join(cmd))
    if r["timed_out"]:
        r["status"] = f"did not finish (killed after {args.timeout:.0f} s time limit)"
    elif r["returncode"] != 0:
        why = "out of memory" if r["returncode"] in (-9, 137) or "MemoryError" in _tail(log, 50) else "error"
        r["status"] = f"did not finish ({why}, exit {r['returncode']}: {_tail(log)})"
    else:
        r["status"] = "ok"
        if system == "onepass":
            import onepass

            model = onepass.load_model(out_dir)
            np.save(prefix.with_suffix(".npy"), model.tensors["centers"].double().numpy())
            r["info"] = {"records_seen": int(round(model.meta["records"])), "estimated_cost": model.meta["cost"],
                         "stdout": _tail(log, 20)}
        else:
            r["info"] = json.loads(prefix.with_suffix(".json").read_text())
        r["centers"] = str(prefix.with_suffix(".npy"))
    print(f"    {r['status']}  wall {r['wall_s']:.1f} s  peak {r['peak_bytes'] / 2**20:.0f} MiB  cpu {r['cpu_s']:.0f} s"
          f"  other load {r['other_load_cores']:.2f} cores", flush=True)
    return r


def _onepass_exe() -> str:
    exe = Path(sys.executable).parent / "onepass"
    return str(exe) if exe.exists() else (shutil.which("onepass") or "onepass")


# ------------------------------------------------------------------------------------------ evaluator

def evaluate(path: Path, center_sets: dict[str, np.ndarray], chunk: int = 32768) -> dict[str, float]:
    """Sum over every record of the squared distance to its nearest centre, for each set, in one pass."""
    totals = {key: 0.0 for key in center_sets}
    prepared = {key: (c, (c * c).sum(1)) for key, c in center_sets.items()}
    n = 0
    for block in stream_csv(path):
        n += len(block)
        for s in range(0, len(block), chunk):
            x = block[s:s + chunk]
            for key, (c, cc) in prepared.items():
                idx = (cc[None, :] - 2.0 * (x @ c.T)).argmin(1)  # |x|^2 is the same for every centre
                totals[key] += float(((x - c[idx]) ** 2).sum())
    return {**totals, "_records": n}


# ------------------------------------------------------------------------------------------------ data

def prepare(args) -> dict[str, Path]:
    """Write each data set once as CSV into benchmarks/data (kept between runs)."""
    DATA.mkdir(parents=True, exist_ok=True)
    exe = _onepass_exe()
    files: dict[str, Path] = {}

    def make(name: str, target: Path, extra: list[str]) -> None:
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            print(f"writing {target} ...", flush=True)
            t0 = time.perf_counter()
            subprocess.run([exe, "datasets", name, "--no-label", "--out", str(tmp), *extra], check=True)
            tmp.rename(target)
            print(f"  {time.perf_counter() - t0:.0f} s, {target.stat().st_size / 2**20:,.0f} MiB", flush=True)

    if "digits" in args.datasets:
        make("digits", DATA / "digits.csv", [])
        files["digits"] = DATA / "digits.csv"
    if "kdd04" in args.datasets:
        make("kdd04", DATA / "kdd04.csv", [])
        files["kdd04"] = DATA / "kdd04.csv"
    if "blobs" in args.datasets:
        big = DATA / f"blobs_{args.blobs_n}x{args.blobs_d}.csv"
        make("blobs", big, ["--n", str(args.blobs_n), "--d", str(args.blobs_d), "--k", str(args.blobs_k),
                            "--seed", str(args.seed)])
        if args.blobs_prefix:
            small = DATA / f"blobs_{args.blobs_n}x{args.blobs_d}_head{args.blobs_prefix}.csv"
            if not small.exists():  # the first records of the same stream
                with open(big, "rb") as src, open(small.with_suffix(".tmp"), "wb") as dst:
                    for i, line in enumerate(src):
                        if i >= args.blobs_prefix:
                            break
                        dst.write(line)
                small.with_suffix(".tmp").rename(small)
            files[f"blobs {_n(args.blobs_prefix)}"] = small
        files[f"blobs {_n(args.blobs_n)}"] = big
    for name, n in zip(("digits784", "mixture500", "mixture1000"), args.hd_n):
        if name in args.datasets:
            target = DATA / f"{name}_{n}.csv"
            if not target.exists():
                _write_hd(name, n, target)
            files[f"{name} ({_n(n)})"] = target
    return files


def _write_hd(name: str, n: int, target: Path) -> None:
    """One of kmeans_hd_sets' data sets as CSV, written in chunks (appears only whole)."""
    sys.path.insert(0, str(HERE))
    import kmeans_hd_sets
    from onepass.datasets import write_csv

    print(f"writing {target} ...", flush=True)
    parts = kmeans_hd_sets.digits_up(n) if name == "digits784" else kmeans_hd_sets.mixture(n, int(name[7:]))
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for x in parts:
            write_csv(x, None, out)
    tmp.rename(target)


def _n(n: int) -> str:
    e = len(str(n)) - 1
    return f"10^{e}" if n == 10 ** e else f"{n:,}"


# --------------------------------------------------------------------------------------------- report

def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("onepass", "torch", "numpy", "pyarrow", "scikit-learn", "river", "pyspark", "psutil"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    except (OSError, IndexError):
        java = "not found"
    out["java"] = java
    try:  # onepass is installed in editable mode: which commit of the working tree ran
        git = ["git", "-C", str(HERE.parent)]
        head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout
        out["onepass"] += f" (git {head}{', src/ modified' if dirty.strip() else ''})"
    except OSError:
        pass
    return out


def machine() -> str:
    import psutil

    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}")


def _fmt_cost(c):
    return "—" if c is None else f"{c:.6g}"


def _ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.{digits}f}"


def write_report(results: dict, path: Path) -> None:
    meta, runs = results["meta"], results["runs"]
    old = path.read_text() if path.exists() else ""
    notes = old.split(GENERATED_MARK, 1)[1] if GENERATED_MARK in old else "\n"
    L = ["# k-means benchmark: onepass against scikit-learn, River and Spark MLlib", "",
         f"Measured {meta['date']} on {meta['machine']}.", "",
         "Reproduce (from the repository root; makes `benchmarks/.venv`, writes the CSV files into "
         "`benchmarks/data/` and rewrites this file):", "", "```bash", meta["reproduce"], "```", "",
         (f"Full run: `{meta['first_run']['command']}` ({meta['first_run']['date']}, "
          f"{meta['first_run']['total_s'] / 60:.0f} min, data preparation included); then `{meta['command']}` "
          f"re-ran some of its runs ({meta['date']}, {meta['total_s'] / 60:.0f} min): see the notes at the end."
          if meta.get("first_run") else
          f"This run: `{meta['command']}` (total {meta['total_s'] / 60:.0f} min, data preparation included)."), "",
         "## Method", "",
         "- Every system reads the same CSV file (no header, no label column) in a subprocess of its own. "
         "**wall s** is that subprocess's life, start to exit: interpreter/JVM start-up, imports, CSV parsing "
         "and fitting all count (end to end). **peak MiB** is the peak resident memory of its whole process "
         "tree (the sum of every process's RSS, polled by psutil every 0.05 s, so Spark's JVM is included; "
         "never below the largest single process's `ru_maxrss` as GNU `time -f %M` reports it). Each run also "
         "records the CPU that other processes used meanwhile (system busy time less the run's own); a run that "
         "shared the cores says so in its notes."
         + (f" A run shorter than {meta['repeat_under']:.0f} s is run up to {meta['repeats']} times, each from "
            "scratch, and the run of median wall time is shown (the notes list every run's time)."
            if meta.get("repeats", 1) > 1 else ""),
         "- **cost** is the sum over every record of the squared distance to its nearest returned centre, "
         "computed for every system by one shared evaluator that streams over the CSV in float64 after the "
         "runs. Ratios are system / onepass: time and memory above 1 mean onepass is faster / smaller, cost "
         "above 1 means onepass's centres are better.",
         f"- Threads: onepass `--threads {meta['threads']}` (torch intra-op threads; it also parses CSV on "
         "pyarrow's thread pool); scikit-learn KMeans and MiniBatchKMeans limited to "
         f"{meta['threads']} OpenMP/BLAS threads (threadpoolctl; `OMP_NUM_THREADS={meta['threads']}`); "
         f"Spark `local[{meta['threads']}]` (plus the JVM's own GC/JIT threads), `spark.driver.memory="
         f"{meta['spark_memory']}`; River is pure Python, one thread. The machine has {os.cpu_count()} cores.",
         "- Settings are each library's defaults, seed 0: onepass `train kmeans --k K` (summary of 20 k centres, "
         "5 k from 100 features on, "
         "mini-batch 5000, one pass); scikit-learn `KMeans(n_clusters=k)` (k-means++, n_init 1, up to 300 Lloyd "
         "iterations, tol 1e-4) and `MiniBatchKMeans(n_clusters=k)` (batch 1024, early stopping), both fit on "
         "the whole file loaded into memory as float32 with pyarrow; River `cluster.KMeans(n_clusters=k)` "
         "(halflife 0.5, mu 0, sigma 1) learning one record at a time; Spark `KMeans(k=k)` (k-means||, "
         "maxIter 20, tol 1e-4) on `spark.read.csv` with an explicit double schema + `VectorAssembler`.",
         f"- River is very slow (pure Python, one record at a time): it gets a budget of {meta['river_budget']:.0f} s "
         "of wall time per run and its centres are scored after however many records it learnt in that time "
         f"(shown as *partial*). It runs only on data sets of at most {meta['river_max_records']:,} records.",
         f"- A run that passes {meta['timeout'] / 60:.0f} min, or crashes, is shown as *did not finish* with the "
         "reason.", ""]
    datasets = list(dict.fromkeys(r["dataset"] for r in runs.values()))
    ks = sorted({r["k"] for r in runs.values()})
    bars = []
    for ds in datasets:
        for k in ks:
            rows = [runs.get(f"{ds}|{k}|{s}") for s in SYSTEMS]
            rows = [r for r in rows if r]
            if not rows:
                continue
            op = runs.get(f"{ds}|{k}|onepass")
            op_ok = op and op["status"] == "ok"
            n = meta["records"].get(ds)
            L += [f"## {ds} ({n:,} records x {meta['dims'][ds]}), k = {k}" if n else f"## {ds}, k = {k}", "",
                  "| system | wall s | peak MiB | cost | time / onepass | memory / onepass | cost / onepass | "
                  "notes |", "|---|---:|---:|---:|---:|---:|---:|---|"]
            for r in rows:
                ok = r["status"] == "ok"
                cost = r.get("cost")
                note = []
                info = r.get("info", {})
                if not ok:
                    note.append(r["status"])
                if len(r.get("walls_s", [])) > 1:
                    note.append(f"median of {len(r['walls_s'])} runs ({', '.join(f'{w:.1f}' for w in r['walls_s'])} s)")
                if r.get("other_load_cores", 0) > 0.25:
                    note.append(f"**other processes used {r['other_load_cores']:.1f} cores during this run**")
                if r["system"] == "river" and ok:
                    seen = info.get("records_seen", 0)
                    if info.get("stopped_by_budget"):
                        note.append(f"partial: learnt {seen:,} records in its {info['budget_s']:.0f} s budget")
                    else:
                        note.append(f"all {seen:,} records")
                if r["system"] in ("sklearn-kmeans", "spark") and ok and "n_iter" in info:
                    note.append(f"{info['n_iter']} iterations")
                if r["system"] == "sklearn-minibatch" and ok and "n_steps" in info:
                    note.append(f"{info['n_steps']:,} mini-batches")
                if r["system"] not in ("onepass", "river") and ok and "fit_s" in info:
                    note.append(f"fit {info['fit_s']:.1f} s")
                wall = f"{r['wall_s']:.1f}" if ok else f"({r['wall_s']:.0f})"
                L.append(f"| {LABELS[r['system']]} | {wall} | {r['peak_bytes'] / 2**20:,.0f} | {_fmt_cost(cost)} | "
                         f"{_ratio(r['wall_s'], op['wall_s']) if ok and op_ok else '—'} | "
                         f"{_ratio(r['peak_bytes'], op['peak_bytes']) if op_ok else '—'} | "
                         f"{_ratio(cost, op.get('cost'), 4) if ok and op_ok else '—'} | {'; '.join(note)} |")
            L.append("")
            bars.append((ds, k, _bars(runs, ds, k, 0.01 if meta["dims"].get(ds, 0) >= 100 else 0.02)))
    L += ["## The bars of the issue", "",
          "| data set | k | cost within 2 % of KMeans (1 % from 100 features on) | cost better than MiniBatchKMeans | faster than "
          "MiniBatchKMeans | >= 10 x faster than Spark |", "|---|---:|---|---|---|---|"]
    for ds, k, b in bars:
        L.append(f"| {ds} | {k} | " + " | ".join(b) + " |")
    L += ["", "### Memory as the stream grows", ""]
    L += _memory_section(results)
    L += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in meta["versions"].items()] + ["", GENERATED_MARK]
    path.write_text("\n".join(L) + notes)


def _bars(runs, ds, k, tol: float = 0.02) -> list[str]:
    op, km, mb, sp = (runs.get(f"{ds}|{k}|{s}") for s in ("onepass", "sklearn-kmeans", "sklearn-minibatch",
                                                           "spark"))
    ok = lambda r: r is not None and r["status"] == "ok" and r.get("cost") is not None
    if not ok(op):
        return ["onepass did not finish"] * 4
    out = []
    if ok(km):
        gap = op["cost"] / km["cost"] - 1
        out.append(f"{'met' if gap <= tol else '**missed**'} ({gap:+.2%})")
    else:
        out.append("no reference (KMeans did not finish)" if km else "not run")
    if ok(mb):
        gap = op["cost"] / mb["cost"] - 1
        out.append(f"{'met' if gap < 0 else '**missed**'} ({gap:+.2%})")
    else:
        out.append("MiniBatchKMeans did not finish" if mb else "not run")
    if mb and mb["status"] == "ok":
        r = mb["wall_s"] / op["wall_s"]
        out.append(f"{'met' if r > 1 else '**missed**'} ({r:.2f} x)")
    else:
        out.append("MiniBatchKMeans did not finish" if mb else "not run")
    if sp and sp["status"] == "ok":
        r = sp["wall_s"] / op["wall_s"]
        out.append(f"{'met' if r >= 10 else '**missed**'} ({r:.1f} x)")
    elif sp:
        r = sp["wall_s"] / op["wall_s"]
        out.append(f"met: Spark {sp['status']}, already >= {r:.1f} x" if r >= 10 else
                   f"unknown: Spark {sp['status']}")
    else:
        out.append("not run")
    return out


def _memory_section(results) -> list[str]:
    runs, meta = results["runs"], results["meta"]
    sizes = [ds for ds in dict.fromkeys(r["dataset"] for r in runs.values()) if ds.startswith("blobs ")]
    if len(sizes) < 2:
        return ["(needs the blobs stream at two sizes)"]
    small, big = sizes[0], sizes[-1]
    ks = sorted({r["k"] for r in runs.values()})
    L = [f"Peak MiB on the first {small.split()[1]} records of the blobs stream and on all {big.split()[1]} of "
         "them (the same file's prefix), and the growth:", "",
         f"| system | k | peak MiB, {small} | peak MiB, {big} | growth |", "|---|---:|---:|---:|---:|"]
    for s in SYSTEMS:
        for k in ks:
            a, b = runs.get(f"{small}|{k}|{s}"), runs.get(f"{big}|{k}|{s}")
            if not a or not b:
                continue
            fa, fb = a["peak_bytes"] / 2**20, b["peak_bytes"] / 2**20
            flag = "" if b["status"] == "ok" else f" ({b['status'].split(' (')[0]})"
            L.append(f"| {LABELS[s]} | {k} | {fa:,.0f} | {fb:,.0f}{flag} | {fb / fa:.2f} x |")
    op = [(runs.get(f"{small}|{k}|onepass"), runs.get(f"{big}|{k}|onepass")) for k in ks]
    op = [(a, b) for a, b in op if a and b and a["status"] == b["status"] == "ok"]
    if op:
        g = max(b["peak_bytes"] / a["peak_bytes"] for a, b in op)
        L += ["", f"Bar 'onepass's peak memory flat as the stream grows' (growth at most 1.10 x from "
              f"{small.split()[1]} to {big.split()[1]} records): **{'met' if g <= 1.10 else 'missed'}** "
              f"(largest growth {g:.2f} x)."]
    peers = []
    for s in ("sklearn-kmeans", "sklearn-minibatch", "spark"):
        for k in ks:
            a, b = runs.get(f"{small}|{k}|{s}"), runs.get(f"{big}|{k}|{s}")
            if a and b and a["status"] == "ok":
                peers.append(f"{LABELS[s]} k={k}: {b['peak_bytes'] / a['peak_bytes']:.2f} x"
                             + ("" if b["status"] == "ok" else " (at least: the big run did not finish)"))
    if peers:
        L += ["", "In-memory peers' growth: " + "; ".join(peers) + "."]
    return L


# ----------------------------------------------------------------------------------------------- main

def run_env(threads: int) -> dict[str, str]:
    """The environment of every run: BLAS/OpenMP held to `threads`, Spark on loopback, output unbuffered."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads), "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        return _worker(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: blobs of 200,000 records (prefix 50,000), River budget 10 s, time limit 300 s")
    p.add_argument("--datasets", nargs="+", default=["digits", "kdd04", "blobs"],
                   choices=("digits", "kdd04", "blobs", "digits784", "mixture500", "mixture1000"),
                   help="digits784, mixture500, mixture1000: the high-dimensional sets of kmeans_hd_sets.py")
    p.add_argument("--hd-n", type=int, nargs=3, default=[60_000, 100_000, 50_000], metavar=("D784", "M500", "M1000"),
                   help="records of digits784, mixture500 and mixture1000")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--ks", nargs="+", type=int, default=[10, 100])
    p.add_argument("--blobs-n", type=int, default=10_000_000, help="records of the generated stream")
    p.add_argument("--blobs-d", type=int, default=50)
    p.add_argument("--blobs-k", type=int, default=10, help="clusters of the generating mixture")
    p.add_argument("--blobs-prefix", type=int, default=1_000_000,
                   help="also run on the stream's first N records, to show memory against size (0: no)")
    p.add_argument("--big-systems", nargs="+", choices=SYSTEMS, default=None,
                   help="systems to run on the full blobs stream (default: all but River)")
    p.add_argument("--big-ks", nargs="+", type=int, default=None, help="k values for the full blobs stream")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take (default 900)")
    p.add_argument("--river-budget", type=float, default=60.0, help="seconds of learning River gets per run")
    p.add_argument("--river-max-records", type=int, default=1_000_000, help="River runs only on data this small")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spark-memory", default="10g")
    p.add_argument("--repeats", type=int, default=3, help="runs of a short run: its median is reported (default 3)")
    p.add_argument("--repeat-under", type=float, default=30.0, metavar="S",
                   help="a run is short, and repeated, while it takes under S seconds (default 30)")
    p.add_argument("--results", type=Path, default=HERE / "results_kmeans.json")
    p.add_argument("--report", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--resume", action="store_true", help="keep the finished runs of --results; run the rest")
    p.add_argument("--redo", nargs="+", default=[], metavar="PATTERN",
                   help="with --resume: run these again anyway; glob patterns on 'DATASET|K|SYSTEM', "
                        "e.g. 'blobs 10^7|*|onepass'")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from --results")
    args = p.parse_args(argv)
    if args.quick:
        args.blobs_n, args.blobs_prefix = 200_000, 50_000
        args.river_budget, args.timeout = min(args.river_budget, 10.0), min(args.timeout, 300.0)
        if args.results == HERE / "results_kmeans.json":
            args.results = RUNS / "quick.json"
        if args.report == HERE / "RESULTS.md":
            args.report = RUNS / "QUICK.md"
    if args.report_only:
        write_report(json.loads(args.results.read_text()), args.report)
        print(f"wrote {args.report}")
        return 0

    t_start = time.perf_counter()
    (RUNS / "logs").mkdir(parents=True, exist_ok=True)
    env = run_env(args.threads)
    old = json.loads(args.results.read_text()) if args.resume and args.results.exists() else {"runs": {}}
    files = prepare(args)
    big = f"blobs {_n(args.blobs_n)}"
    records = {ds: sum(1 for _ in open(f, "rb")) for ds, f in files.items()}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "versions": versions(),
            "threads": args.threads, "timeout": args.timeout, "repeats": args.repeats,
            "repeat_under": args.repeat_under, "river_budget": args.river_budget,
            "river_max_records": args.river_max_records, "spark_memory": args.spark_memory,
            "records": records, "dims": {ds: _ncols(f) for ds, f in files.items()},
            "command": "python benchmarks/run_kmeans.py " + " ".join(argv),
            "reproduce": "bash benchmarks/run.sh" + (" " + " ".join(argv) if argv else ""),
            "files": {ds: str(f.relative_to(HERE.parent)) for ds, f in files.items()}}
    results = {"meta": meta, "runs": {}}
    for ds, path in files.items():
        print(f"{ds}: {path} ({records[ds]:,} records)", flush=True)
        ks = args.big_ks if ds == big and args.big_ks else args.ks
        for k in ks:
            for system in args.systems:
                key = f"{ds}|{k}|{system}"
                if ds == big and system not in (args.big_systems or [s for s in SYSTEMS if s != "river"]):
                    continue
                if system == "river" and records[ds] > args.river_max_records:
                    continue
                prev = kept_run(old, key, args.redo, scored="cost", artefact="centers")
                if prev:
                    results["runs"][key] = prev
                    continue
                results["runs"][key] = run_one(system, ds, path, k, args, env)
                args.results.write_text(json.dumps(results, indent=1, default=str))
        todo = {key: np.load(r["centers"]) for key, r in results["runs"].items()
                if r["dataset"] == ds and r["status"] == "ok" and "cost" not in r}
        if todo:
            t0 = time.perf_counter()
            costs = evaluate(path, todo)
            for key in todo:
                results["runs"][key]["cost"] = costs[key]
            print(f"  evaluated {len(todo)} centre sets on {costs['_records']:,} records in "
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
