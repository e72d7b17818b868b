"""onepass tune: Hyperband from paused states, resumable, with ranges checked before any training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("optuna")

from onepass import State  # noqa: E402
import importlib  # noqa: E402

tune_module = importlib.import_module("onepass.tuning")
from onepass.errors import UsageError  # noqa: E402
from onepass.train import train  # noqa: E402
from onepass.tuning import tune  # noqa: E402

from conftest import run_cli, write_csv  # noqa: E402

RANGES = {"ContinuousParameterRanges": [{"Name": "learning_rate", "MinValue": "0.0001", "MaxValue": "0.5",
                                         "ScalingType": "Logarithmic"}],
          "CategoricalParameterRanges": [{"Name": "wd", "Values": [0, 10]}]}
FIXED = {"predictor_type": "regressor", "num_models": 1, "mini_batch_size": 100, "epochs": 4}


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2400, 6))
    y = x @ rng.normal(size=6) + 0.1 * rng.normal(size=2400)
    return (write_csv(root / "train.csv", np.column_stack([y[:2000], x[:2000]])),
            write_csv(root / "val.csv", np.column_stack([y[2000:], x[2000:]])))


def _study(data, val, out, **kw):
    return tune("linear_learner", data, val, out, ranges=RANGES, objective="validation:objective_loss",
                hyperparameters=FIXED, trials=6, max_records=5400, seed=3, **kw)


def test_the_tuner_prefers_the_setting_known_to_be_best(regression, tmp_path):
    data, val = regression
    result = _study(data, val, tmp_path / "study")
    assert result.best_hyperparameters["wd"] == 0  # weight decay 10 shrinks the exact linear answer away
    assert result.table[0]["objective"] == min(r["objective"] for r in result.table
                                               if r["records_trained"] == result.table[0]["records_trained"])
    assert (result.best / "model.safetensors").exists() and (tmp_path / "study" / "objective.png").exists()
    states = {r["state"] for r in result.table}
    assert "pruned" in states  # Hyperband stopped some trials early
    full = 6 * 5400
    assert result.records_trained < full  # the schedule cost less than every trial on the whole budget


def test_a_promoted_trial_continues_its_state_bit_for_bit(regression, tmp_path):
    data, val = regression
    result = _study(data, val, tmp_path / "study")
    lines = [json.loads(line) for line in (tmp_path / "study" / "trials.jsonl").read_text().splitlines()]
    promoted = max({line["trial"] for line in lines}, key=lambda t: sum(line["trial"] == t for line in lines))
    rungs = [line for line in lines if line["trial"] == promoted]
    assert len(rungs) > 1 and [r["records_trained"] for r in rungs] == sorted(r["rung"] for r in rungs)
    straight = train("linear_learner", data, tmp_path / "straight", hyperparameters=rungs[0]["hyperparameters"],
                     max_records=rungs[-1]["rung"])
    state = State.load(tmp_path / "study" / "trials" / f"{promoted:04d}" / "state.safetensors")
    assert state.meta["records_seen"] == straight.state.meta["records_seen"] == rungs[-1]["rung"]
    for name, tensor in straight.state.tensors.items():
        assert torch.equal(tensor, state.tensors[name]), name
    assert result.records_trained == sum(max(r["records_trained"] for r in lines if r["trial"] == t)
                                         for t in {line["trial"] for line in lines})


def test_a_study_killed_and_resumed_gives_the_same_leaderboard(regression, tmp_path, monkeypatch):
    data, val = regression
    whole = _study(data, val, tmp_path / "whole")
    calls = 0
    score = tune_module._score

    def dies_on_the_seventh_score(*args):
        nonlocal calls
        calls += 1
        if calls == 7:
            raise KeyboardInterrupt  # as kill -9 would leave it: the rung's checkpoint, no line for it
        return score(*args)

    monkeypatch.setattr(tune_module, "_score", dies_on_the_seventh_score)
    with pytest.raises(KeyboardInterrupt):
        _study(data, val, tmp_path / "killed")
    monkeypatch.setattr(tune_module, "_score", score)
    resumed = _study(data, val, tmp_path / "killed", resume=True)
    assert [(r["trial"], r["state"], r["records_trained"], r["objective"]) for r in resumed.table] == \
        [(r["trial"], r["state"], r["records_trained"], r["objective"]) for r in whole.table]


@pytest.mark.parametrize("ranges, words", [
    ({"ContinuousParameterRanges": [{"Name": "learning_rat", "MinValue": "0.1", "MaxValue": "1"}]},
     "ContinuousParameterRanges[0] (learning_rat): unknown hyperparameter"),
    ({"ContinuousParameterRanges": [{"Name": "learning_rate", "MinValue": "0.1", "MaxValue": "0.1"}]},
     "empty range"),
    ({"ContinuousParameterRanges": [{"Name": "wd", "MinValue": "0", "MaxValue": "1", "ScalingType": "Logarithmic"}]},
     "above zero"),
    ({"CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "lion"]}]}, "value 'lion'"),
    ({"CategoricalParameterRanges": [{"Name": "optimizer", "Values": []}]}, "non-empty"),
    ({"ContinuousRanges": []}, "unknown key"),
])
def test_bad_ranges_are_refused_before_any_training(regression, tmp_path, ranges, words):
    data, val = regression
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        tune("linear_learner", data, val, tmp_path / "s", ranges=ranges, objective="validation:objective_loss",
             hyperparameters=FIXED, max_records=1000)
    assert not (tmp_path / "s" / "trials").exists()


def test_tune_from_the_command_line_prints_a_leaderboard_and_the_best_run_predicts(regression, tmp_path):
    data, val = regression
    ranges = tmp_path / "ranges.json"
    ranges.write_text(json.dumps(RANGES))
    args = ["tune", "linear_learner", "--data", str(data), "--validation", str(val), "--out", str(tmp_path / "s"),
            "--ranges", str(ranges), "--objective", "validation:objective_loss", "--trials", "3",
            "--max-records", "1800", "--predictor-type", "regressor", "--num-models", "1", "--mini-batch-size", "100"]
    result = run_cli(*args, check=True)
    assert "best: trial" in result.stdout and "learning_rate" in result.stdout
    again = run_cli(*args)
    assert again.returncode == 2 and "already holds a study" in again.stderr
    predicted = run_cli("predict", str(tmp_path / "s" / "best"), "--data", str(val), "--label-column", "first",
                        check=True)
    assert len(predicted.stdout.splitlines()) == 400
