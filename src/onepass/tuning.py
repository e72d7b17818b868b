"""Tuning from paused states: start many configurations, pause them, continue only the best.

    result = onepass.tune("linear_learner", "train.csv", "val.csv", "runs/tune", ranges="ranges.json",
                          objective="validation:objective_loss", trials=20, max_records=200_000)

The search and the schedule are Optuna's (its samplers and its Hyperband pruner); what onepass adds is that a trial
is a onepass state. A trial trains in rungs of records (`train(..., max_records=r)`, which checkpoints and pauses),
is scored on the validation source after each rung and reported to Optuna, and is either stopped there or
*continued from its checkpoint* to the next rung: promoted trials are never retrained, and their records trained add
up (the state resumes at the exact next record, so a promoted trial's state is bit for bit the one a run straight to
that rung would have).

Rungs: Hyperband's, min_records x eta^k up to max_records (eta = 3, min_records = max_records / 27 unless given);
`hyperband` draws configurations at random and `bayesian` by TPE (the BOHB arrangement), both pruned by Optuna's
`HyperbandPruner`, whose brackets hedge: the least aggressive one prunes nothing, so about a quarter of the trials
train on the whole budget; `asha` draws at random and prunes by successive halving alone (Optuna's
`SuccessiveHalvingPruner`: every trial may stop at the first rung, the cheapest schedule); `random` trains every
configuration on the whole budget (no pruning: the baseline a schedule is measured against).

The tuner is a run folder: ``study.log`` (Optuna's journal storage, appended and fsynced as the study goes),
``trials/NNNN`` (each trial's run folder), ``trials.jsonl`` (a line a trial a rung: trial, hyperparameters,
records_trained, objective, state), ``objective.png`` and ``best`` (a copy of the best trial's run folder, with its
model, which finalize, predict and serve take like any run). `resume=True` after a crash continues the study: finished
rungs are not repeated, a trial stopped mid-rung resumes from its last checkpoint, and every trial's configuration is
drawn from a sampler seeded by (seed, trial number), so a resumed study gives the leaderboard an uninterrupted one
gives.

Ranges use SageMaker's HyperparameterTuner format::

    {"ContinuousParameterRanges": [{"Name": "learning_rate", "MinValue": "0.0001", "MaxValue": "0.1",
                                    "ScalingType": "Logarithmic"}],
     "IntegerParameterRanges": [{"Name": "k", "MinValue": "2", "MaxValue": "30"}],
     "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "adam"]}]}

Each entry is checked before any training: the name must be a hyperparameter of the algorithm, the range non-empty,
a logarithmic range above zero, every categorical value one the algorithm accepts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import algorithms
from .data.batches import Stream
from .errors import UsageError
from .state import MODEL_FILE, STATE_FILE
from .train import evaluate, train

STRATEGIES = ("hyperband", "asha", "bayesian", "random")
ETA = 3  # Hyperband's reduction factor: a third of the trials go on at each rung
RUNGS = 3  # min_records = max_records / ETA^RUNGS by default: rungs at 1/27, 1/9, 1/3 and the whole budget
MAXIMIZED = ("accuracy", "auc", "precision", "recall", "f_beta", "f1", "r2")  # metric words that are maximized
TRIALS_FILE, STUDY_FILE, SETTINGS_FILE = "trials.jsonl", "study.log", "tune.json"


@dataclass
class TuneResult:
    table: list[dict[str, Any]]  # the leaderboard: one row a trial, best first
    best: Path  # the best trial's run folder (a copy: DIR/best)
    best_hyperparameters: dict[str, Any]
    best_objective: float
    records_trained: int  # over every trial and rung: the cost of the study


def tune(algorithm: str, data, validation, out: str | Path, *, ranges: dict[str, Any] | str | Path,
         objective: str, direction: str | None = None, trials: int = 20, strategy: str = "hyperband",
         max_records: int | None = None, min_records: int | None = None, seed: int = 0,
         hyperparameters: dict[str, Any] | None = None, resume: bool = False, overwrite: bool = False,
         device: str | None = "cpu", threads: int | None = None, quiet: bool = True,
         **stream_options: Any) -> TuneResult:
    """Search `ranges` for the configuration of `algorithm` that is best on `objective` (a validation metric as
    training reports it: ``validation:rmse``, ``validation:roc_auc_score``, ``validation:msd``...). See the module
    docstring."""
    optuna = _optuna()
    algo = algorithms.get(algorithm)
    out = Path(out)
    fixed = algo.HYPERPARAMETERS.parse(dict(hyperparameters or {}))
    space = parse_ranges(algo, ranges, fixed)
    metric, direction = _objective(objective, direction)
    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    if trials < 1:
        raise UsageError(f"--trials must be at least 1, got {trials}")
    settings = {"algorithm": algo.NAME, "objective": objective, "direction": direction, "strategy": strategy,
                "seed": seed, "hyperparameters": hyperparameters or {}, "space": space,
                "stream_options": {k: v for k, v in stream_options.items() if k != "storage_options"}}
    if resume:
        saved = _read_json(out / SETTINGS_FILE)
        if saved is None:
            raise UsageError(f"--resume: {out} holds no study ({SETTINGS_FILE}); start without --resume")
        diff = [k for k in settings if _jsonable(settings[k]) != saved.get(k)]
        if diff:
            raise UsageError(f"--resume continues the study as it was started; differs in {', '.join(diff)}")
        max_records, min_records = saved["max_records"], saved["min_records"]
    else:
        if (out / SETTINGS_FILE).exists() and not overwrite:
            raise UsageError(f"{out} already holds a study; use --resume to continue it or --overwrite to start over")
        if out.exists() and overwrite:
            for name in (TRIALS_FILE, STUDY_FILE, SETTINGS_FILE, "objective.png"):
                (out / name).unlink(missing_ok=True)
            for name in ("trials", "best"):
                shutil.rmtree(out / name, ignore_errors=True)
        if max_records is None:
            max_records = _count(Stream(data, **_with_label(algo, stream_options)), fixed["mini_batch_size"])
        min_records = min_records or max(fixed["mini_batch_size"], max_records // ETA ** RUNGS)
        if not 1 <= min_records <= max_records:
            raise UsageError(f"--min-records {min_records} must lie in 1..--max-records ({max_records})")
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / SETTINGS_FILE, {**_jsonable(settings), "max_records": max_records,
                                          "min_records": min_records})
    rungs = _rungs(min_records, max_records) if strategy != "random" else [max_records]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / STUDY_FILE)))
    if strategy == "random":
        pruner = optuna.pruners.NopPruner()
    elif strategy == "asha":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=min_records, reduction_factor=ETA)
    else:
        pruner = optuna.pruners.HyperbandPruner(min_resource=min_records, max_resource=max_records,
                                                reduction_factor=ETA)
    study = optuna.create_study(study_name="onepass", storage=storage, direction=direction, pruner=pruner,
                                load_if_exists=True)
    val = Stream(validation, **_with_label(algo, stream_options))
    log = _TrialLog(out / TRIALS_FILE)
    run = dict(device=device, threads=threads, progress=None, checkpoint_seconds=None, **stream_options)
    if quiet:
        from .progress import Progress
        run["progress"] = Progress(enabled=False)

    def sampler(number: int):
        return (optuna.samplers.TPESampler(seed=seed * 100_003 + number) if strategy == "bayesian"
                else optuna.samplers.RandomSampler(seed=seed * 100_003 + number))

    # trials a crash left running: continued from their checkpoints, in order (Optuna has no public way back to a
    # running trial's handle; Trial(study, id) is what its own ask() builds)
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        _run_trial(optuna.trial.Trial(study, frozen._trial_id), algo, data, val, out, fixed, space, metric, rungs,
                   run, log, resume_trial=True)
    while len(study.trials) < trials:
        study.sampler = sampler(len(study.trials))
        _run_trial(study.ask(), algo, data, val, out, fixed, space, metric, rungs, run, log)
    return _finish(study, optuna, out, algo, log, direction)


def parse_ranges(algo, ranges: dict[str, Any] | str | Path, fixed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """SageMaker's range JSON as {name: {"kind", "low", "high", "log"} or {"kind": "categorical", "values"}},
    every entry checked (and named when refused) before any training."""
    if not isinstance(ranges, dict):
        try:
            ranges = json.loads(Path(ranges).read_text())
        except OSError as e:
            raise UsageError(f"--ranges {ranges}: cannot read it ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"--ranges {ranges}: not JSON ({e})") from None
    known = ("ContinuousParameterRanges", "IntegerParameterRanges", "CategoricalParameterRanges")
    unknown = [k for k in ranges if k not in known]
    if unknown:
        raise UsageError(f"ranges: unknown key(s) {', '.join(unknown)}; expected {', '.join(known)}")
    space: dict[str, dict[str, Any]] = {}
    for key in known:
        for i, entry in enumerate(ranges.get(key, [])):
            where = f"ranges: {key}[{i}]"
            name = str(entry.get("Name", "")).replace("-", "_")
            if not name:
                raise UsageError(f"{where}: no Name")
            try:
                algo.HYPERPARAMETERS.parse({**fixed, name: _probe(key, entry)})
            except UsageError as e:
                raise UsageError(f"{where} ({name}): {e}") from None
            if name in space:
                raise UsageError(f"{where}: {name} has two ranges")
            space[name] = _range(key, entry, where, name, algo, fixed)
    if not space:
        raise UsageError("ranges: no range to search")
    return space


def _probe(key: str, entry: dict[str, Any]) -> Any:
    """A value of the range, to ask the algorithm whether the name exists and takes such values."""
    if key == "CategoricalParameterRanges":
        values = entry.get("Values") or [None]
        return values[0]
    return entry.get("MinValue")


def _range(key: str, entry: dict[str, Any], where: str, name: str, algo, fixed: dict[str, Any]) -> dict[str, Any]:
    if key == "CategoricalParameterRanges":
        values = entry.get("Values")
        if not isinstance(values, list) or not values:
            raise UsageError(f"{where} ({name}): Values must be a non-empty list")
        for v in values:  # every value one the algorithm takes
            try:
                algo.HYPERPARAMETERS.parse({**fixed, name: v})
            except UsageError as e:
                raise UsageError(f"{where} ({name}): value {v!r}: {e}") from None
        return {"kind": "categorical", "values": list(values)}
    cast = float if key == "ContinuousParameterRanges" else int
    try:
        low, high = cast(float(entry["MinValue"])), cast(float(entry["MaxValue"]))
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{where} ({name}): MinValue and MaxValue must be numbers") from None
    if not low < high:
        raise UsageError(f"{where} ({name}): empty range: MinValue {low} is not below MaxValue {high}")
    scaling = str(entry.get("ScalingType", "Auto"))
    if scaling not in ("Auto", "Linear", "Logarithmic"):
        raise UsageError(f"{where} ({name}): ScalingType {scaling!r}: one of Auto, Linear, Logarithmic "
                         "(ReverseLogarithmic is not supported)")
    if scaling == "Logarithmic" and low <= 0:
        raise UsageError(f"{where} ({name}): a logarithmic range must lie above zero, got MinValue {low}")
    for v in (low, high):
        try:
            algo.HYPERPARAMETERS.parse({**fixed, name: v})
        except UsageError as e:
            raise UsageError(f"{where} ({name}): {e}") from None
    # Auto: logarithmic when the range spans more than two decades above zero, as SageMaker's Auto tends to
    log = scaling == "Logarithmic" or (scaling == "Auto" and low > 0 and high / low >= 100)
    return {"kind": "int" if cast is int else "float", "low": low, "high": high, "log": log}


def _suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for name, r in space.items():
        if r["kind"] == "categorical":
            out[name] = trial.suggest_categorical(name, r["values"])
        elif r["kind"] == "int":
            out[name] = trial.suggest_int(name, r["low"], r["high"], log=r["log"])
        else:
            out[name] = trial.suggest_float(name, r["low"], r["high"], log=r["log"])
    return out


def _run_trial(trial, algo, data, val: Stream, out: Path, fixed: dict[str, Any], space, metric: str,
               rungs: list[int], run: dict[str, Any], log: "_TrialLog", resume_trial: bool = False) -> None:
    """Train `trial` rung by rung, continuing its own state, until it finishes or the pruner stops it."""
    import optuna

    hp = {**fixed, **_suggest(trial, space)}
    folder = out / "trials" / f"{trial.number:04d}"
    done = log.rungs(trial.number)  # rungs trained before a crash: (objective, paused)
    reported = set(trial.study.get_trials(deepcopy=False)[trial.number].intermediate_values)
    value = None
    for rung in rungs:
        if rung in done:
            value, paused = done[rung]
        else:
            if (folder / STATE_FILE).exists():  # continued from its own checkpoint: never retrained
                result = train(algo.NAME, data, folder, resume=True, max_records=rung, **run)
            else:
                result = train(algo.NAME, data, folder, hyperparameters=hp, max_records=rung, overwrite=True, **run)
            value, paused = _score(result.model, val, hp, algo, metric), result.paused
            log.write({"trial": trial.number, "hyperparameters": _jsonable(hp), "rung": rung,
                       "records_trained": result.state.meta["records_seen"], "objective": value, "paused": paused})
        if rung not in reported:
            trial.report(value, rung)
        if not paused:  # the data ran out before the budget: the trial is complete
            break
        if trial.should_prune():
            trial.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return
    trial.study.tell(trial, value)


def _score(model, val: Stream, hp: dict[str, Any], algo, metric: str) -> float:
    got = evaluate(model, val, hp, algo)
    if metric not in got:
        raise UsageError(f"--objective validation:{metric}: {algo.NAME} reports {', '.join(sorted(got)) or 'none'} "
                         "on validation data")
    value = float(got[metric])
    if math.isnan(value):
        raise UsageError(f"--objective validation:{metric} is not a number on the validation data")
    return value


def _finish(study, optuna, out: Path, algo, log: "_TrialLog", direction: str) -> TuneResult:
    rows = []
    for t in study.trials:
        last = log.last(t.number)
        if last is None:
            continue
        rows.append({"trial": t.number, "state": t.state.name.lower(), "objective": last["objective"],
                     "records_trained": last["records_trained"], "hyperparameters": last["hyperparameters"]})
    if not rows:
        raise UsageError("no trial finished a rung")
    # the best among trials that reached the furthest rung any trial reached (a short rung's score flatters)
    furthest = max(r["records_trained"] for r in rows)
    sign = -1 if direction == "maximize" else 1
    rows.sort(key=lambda r: (r["records_trained"] < furthest, sign * r["objective"]))
    best = rows[0]
    folder = out / "trials" / f"{best['trial']:04d}"
    if not (folder / MODEL_FILE).exists():  # paused at the budget: its model, finalized now
        from .data.hashing import keep_in_model
        from .state import State
        state = State.load(folder / STATE_FILE)
        keep_in_model(algo.finalize(state), state.meta).save(folder / MODEL_FILE)
    tmp = out / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    shutil.rmtree(out / "best", ignore_errors=True)
    os.replace(tmp, out / "best")
    _plot(out / "objective.png", log.lines(), best["trial"])
    total = sum(r["records_trained"] for r in rows)
    return TuneResult(rows, out / "best", best["hyperparameters"], best["objective"], total)


def _plot(path: Path, lines: list[dict[str, Any]], best: int) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_trial: dict[int, list] = {}
    for line in lines:
        by_trial.setdefault(line["trial"], []).append((line["records_trained"], line["objective"]))
    for t, points in sorted(by_trial.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", lw=2.5 if t == best else 0.8, alpha=1 if t == best else 0.5,
                label=f"trial {t} (best)" if t == best else None)
    ax.set_xscale("log")
    ax.set_xlabel("records trained")
    ax.set_ylabel("objective (validation)")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class _TrialLog:
    """trials.jsonl: a line a trial a rung, appended and flushed as rungs finish (a crash loses no finished rung)."""

    def __init__(self, path: Path):
        self.path = path

    def lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: its rung is run again
                pass
        return out

    def rungs(self, trial: int) -> dict[int, tuple[float, bool]]:
        return {line["rung"]: (line["objective"], line["paused"]) for line in self.lines() if line["trial"] == trial}

    def last(self, trial: int) -> dict[str, Any] | None:
        mine = [line for line in self.lines() if line["trial"] == trial]
        return mine[-1] if mine else None

    def write(self, line: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _rungs(low: int, high: int) -> list[int]:
    out, r = [], low
    while r < high:
        out.append(r)
        r *= ETA
    return out + [high]


def _objective(objective: str, direction: str | None) -> tuple[str, str]:
    if not objective.startswith("validation:"):
        raise UsageError(f"--objective {objective!r}: name a validation metric, e.g. validation:rmse")
    metric = objective.split(":", 1)[1]
    if direction is None:
        direction = "maximize" if any(w in metric for w in MAXIMIZED) else "minimize"
    if direction not in ("minimize", "maximize"):
        raise UsageError(f"--direction {direction!r}: minimize or maximize")
    return metric, direction


def _with_label(algo, options: dict[str, Any]) -> dict[str, Any]:
    """A supervised algorithm's default label column, as train applies it, for the sources tune reads itself."""
    if getattr(algo, "SUPERVISED", False) and options.get("label_column") is None:
        return {**options, "label_column": "first"}
    return dict(options)


def _count(stream: Stream, batch_size: int) -> int:
    """Records in one pass over `stream` (the default budget)."""
    with closing(stream.batches(batch_size)) as batches:
        return sum(len(b) for b in batches)


def _optuna():
    try:
        import optuna
    except ImportError as e:
        raise UsageError(f"tune needs Optuna ({e}); pip install 'onepass[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    return optuna


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


__all__ = ["tune", "TuneResult", "parse_ranges", "STRATEGIES"]
