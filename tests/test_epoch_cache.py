"""Later epochs from memory (data/epoch_cache.py): the same batches, the same state, nothing counted twice or lost."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from onepass import State, testing as T
from onepass.data.batches import Stream
from onepass.data.epoch_cache import CacheBudget, EpochCache
from onepass.errors import Interrupted
from onepass.progress import Progress
from onepass.train import train

from conftest import run_cli, write_csv

LINEAR = {"predictor_type": "binary_classifier", "num_models": 4, "learning_rate": 0.1, "num_point_for_scaler": 500,
          "early_stopping_patience": 10}


def _events(out, name):
    return [e for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if e["event"] == name]


@pytest.fixture
def labelled(tmp_path):
    train_csv = write_csv(tmp_path / "train.csv", T.linear_classes(6000, 1))
    val_csv = write_csv(tmp_path / "val.csv", T.linear_classes(1000, 2))
    return train_csv, val_csv


def _train(data, out, cache_mib, **kw):
    kw.setdefault("hyperparameters", LINEAR)
    return train("linear_learner", data, out, epochs=4, mini_batch_size=250, threads=1, label_column="last",
                 overwrite=True, epoch_cache_mib=cache_mib, checkpoint_seconds=None, **kw)


def test_cached_epochs_give_the_same_state_as_reading_the_source(labelled, tmp_path):
    data, val = labelled
    read = _train(data, tmp_path / "read", 0, validation=val)
    cached = _train(data, tmp_path / "cached", None, validation=val)
    T.assert_states_equal(read.state, cached.state, "epoch cache")
    assert cached.state.meta["records_seen"] == 4 * 6000
    assert read.metrics == cached.metrics
    said = {e["source"]: e for e in _events(tmp_path / "cached", "epoch_cache")}
    assert said["data"]["epoch"] == 1 and said["data"]["mib"] > 0
    assert "validation" in said
    assert not _events(tmp_path / "read", "epoch_cache")  # off: nothing kept, nothing said


def test_kmeans_and_pca_epochs_from_the_cache_match(tmp_path):
    data = write_csv(tmp_path / "x.csv", T.gaussian_mixture(5000, 3))
    for algo, hp in (("kmeans", {"k": 4}), ("pca", {"num_components": 2})):
        a = train(algo, data, tmp_path / f"{algo}0", epochs=3, mini_batch_size=400, threads=1, epoch_cache_mib=0,
                  hyperparameters=hp)
        b = train(algo, data, tmp_path / f"{algo}1", epochs=3, mini_batch_size=400, threads=1, hyperparameters=hp)
        T.assert_states_equal(a.state, b.state, f"{algo} with the epoch cache")


def test_a_pass_over_the_budget_is_dropped_and_every_epoch_reads_the_source(labelled, tmp_path):
    data, _ = labelled
    read = _train(data, tmp_path / "read", 0)
    small = _train(data, tmp_path / "small", 0.05)  # 50 KiB: a few batches of 250 x 10 floats, not 6,000 records
    T.assert_states_equal(read.state, small.state, "over budget")
    said = _events(tmp_path / "small", "epoch_cache")
    assert len(said) == 1 and "more than the cache's budget" in said[0]["message"]


def test_the_budget_is_shared_by_the_data_and_the_validation_source(labelled):
    data, val = labelled
    budget = CacheBudget(200_000)  # the training pass (6,000 x 10 floats and labels: 264,000 bytes) cannot fit
    train_cache, val_cache = EpochCache(Stream(data, label_column="last"), budget), \
        EpochCache(Stream(val, label_column="last"), budget)
    for cache in (val_cache, train_cache):
        for _ in cache.batches(250):
            pass
    assert val_cache.ready and not train_cache.ready and train_cache.dropped
    assert budget.left == 200_000 - val_cache.nbytes  # what the dropped pass took is given back


def test_an_unfinished_pass_is_not_kept(labelled):
    data, _ = labelled
    budget = CacheBudget(1 << 30)
    cache = EpochCache(Stream(data, label_column="last"), budget)
    it = cache.batches(250)
    next(it)
    it.close()
    assert not cache.ready and budget.left == 1 << 30
    full = [b.x.clone() for b in cache.batches(250)]
    assert cache.ready
    assert all(np.array_equal(a.numpy(), b.x.numpy()) for a, b in zip(full, cache.batches(250), strict=True))


class _StopInEpoch(Progress):
    """Sends this process SIGTERM once training is `records` into epoch `epoch` (counted from 0)."""

    def __init__(self, epoch: int, records: int):
        super().__init__(enabled=False)
        self.epoch, self.records, self.sent = epoch, records, False

    def update(self, records, fraction, epoch, epochs, force=False):
        if not self.sent and epoch == self.epoch and records >= self.epoch * 6000 + self.records:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_stopped_in_a_replayed_epoch_and_resumed_equals_uninterrupted(labelled, tmp_path):
    data, val = labelled
    whole = _train(data, tmp_path / "whole", None, validation=val)
    out = tmp_path / "stopped"
    with pytest.raises(Interrupted):
        _train(data, out, None, validation=val, progress=_StopInEpoch(epoch=2, records=2000))
    position = State.load(out).meta["position"]
    assert position["epoch"] == 2 and position["records"] == 2000
    resumed = train("linear_learner", data, out, resume=True, threads=1, validation=val, checkpoint_seconds=None)
    T.assert_states_equal(whole.state, resumed.state, "resumed in a replayed epoch")


def test_skipped_bad_records_are_counted_again_every_epoch(tmp_path):
    rows = [",".join(f"{v:g}" for v in r) for r in T.linear_classes(3000, 4)]
    rows[100] = "1,2,oops,4,5,6,7,8,9,10,1"
    rows[2000] = "1,2,3"
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(rows) + "\n")
    counts = []
    for mib in (0, None):
        r = _train(data, tmp_path / f"bad{mib}", mib, on_bad_record="skip")
        counts.append(r.state.meta["bad_records"])
        assert r.state.meta["bad_records"]["skipped"] == 4 * 2
        assert r.state.meta["bad_records"]["records"] == 4 * 2998
    assert counts[0] == counts[1]
    assert "skipped bad records" in _events(tmp_path / "badNone", "epoch_cache")[0]["message"]


def test_a_clean_pass_under_skip_is_replayed_and_counts_its_records(labelled, tmp_path):
    data, _ = labelled
    r = _train(data, tmp_path / "clean", None, on_bad_record="skip")
    assert r.state.meta["bad_records"]["records"] == 4 * 6000 and r.state.meta["bad_records"]["skipped"] == 0
    assert _events(tmp_path / "clean", "epoch_cache")[0]["source"] == "data"


def test_one_epoch_keeps_nothing(labelled, tmp_path):
    data, _ = labelled
    train("linear_learner", data, tmp_path / "one", epochs=1, threads=1, label_column="last", hyperparameters=LINEAR)
    assert not _events(tmp_path / "one", "epoch_cache")


def test_cli_option(labelled, tmp_path):
    data, _ = labelled
    bad = run_cli("train", "linear_learner", "--data", str(data), "--out", str(tmp_path / "neg"), "--label-column",
                  "last", "--predictor-type", "binary_classifier", "--epochs", "2", "--epoch-cache-mib", "-1")
    assert bad.returncode == 2 and "--epoch-cache-mib: expected a number of at least 0, got -1" in bad.stderr
    ok = run_cli("train", "linear_learner", "--data", str(data), "--out", str(tmp_path / "cli"), "--label-column",
                 "last", "--predictor-type", "binary_classifier", "--epochs", "2", "--epoch-cache-mib", "16",
                 "--quiet", check=True)
    assert "12,000 records" in ok.stdout
    assert _events(tmp_path / "cli", "epoch_cache")[0]["source"] == "data"
