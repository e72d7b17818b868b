"""train(on_event=...): every event of metrics.jsonl reaches the caller as it happens."""

from __future__ import annotations

import importlib
import json

import pytest

from onepass import State, testing as T
from onepass.train import STATE_FILE, train

from conftest import write_csv


def _kmeans(data, out, **kw):
    return train("kmeans", data, out, hyperparameters={"k": 4}, mini_batch_size=500, threads=1, seed=0,
                 checkpoint_every=1000, checkpoint_seconds=None, **kw)


def test_every_event_of_metrics_jsonl_reaches_on_event(tmp_path):
    data = write_csv(tmp_path / "x.csv", T.gaussian_mixture(3000, 0))
    seen = []
    _kmeans(data, tmp_path / "run", epochs=2, on_event=seen.append)
    written = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert seen == written
    names = [e["event"] for e in seen]
    assert names[0] == "start" and names[-1] == "finished"
    assert names.count("epoch") == 2 and "checkpoint" in names
    assert seen[-1]["model"].endswith("model.safetensors")


def test_an_error_in_on_event_stops_training_and_resume_finishes_it(tmp_path):
    data = write_csv(tmp_path / "x.csv", T.gaussian_mixture(4000, 1))
    whole = _kmeans(data, tmp_path / "whole")

    checkpoints = 0

    def stop_at_second_checkpoint(event):
        nonlocal checkpoints
        checkpoints += event["event"] == "checkpoint"
        if checkpoints == 2:
            raise RuntimeError("the caller's monitor gave up")

    with pytest.raises(RuntimeError, match="monitor gave up"):
        _kmeans(data, tmp_path / "cut", on_event=stop_at_second_checkpoint)
    kept = State.load(tmp_path / "cut" / STATE_FILE)
    assert kept.meta["records_seen"] == 2000  # the checkpoint the event reported is on disk
    resumed = _kmeans(data, tmp_path / "cut", resume=True)
    T.assert_states_equal(State.load(tmp_path / "cut" / STATE_FILE), State.load(tmp_path / "whole" / STATE_FILE),
                          "resumed after the callback's error")
    assert resumed.model.meta["cost"] == whole.model.meta["cost"]


@pytest.mark.parametrize("gap, epoch_ends", [(0.0, 2), (3600.0, 0)])
def test_epoch_end_checkpoints_are_skipped_while_the_last_one_is_young(tmp_path, monkeypatch, gap, epoch_ends):
    """An epoch-end checkpoint is written unless the last checkpoint is younger than EPOCH_CHECKPOINT_GAP_S; the
    last epoch's is the finished one. Either way the run ends in the same state."""
    trainer = importlib.import_module("onepass.train")  # the module: `onepass.train` the attribute is the function
    monkeypatch.setattr(trainer, "EPOCH_CHECKPOINT_GAP_S", gap)
    data = write_csv(tmp_path / "x.csv", T.gaussian_mixture(1500, 2))
    seen = []
    train("kmeans", data, tmp_path / "run", hyperparameters={"k": 3}, epochs=3, mini_batch_size=500, threads=1,
          seed=0, checkpoint_seconds=None, on_event=seen.append)
    reasons = [e["reason"] for e in seen if e["event"] == "checkpoint"]
    assert reasons == ["epoch end"] * epoch_ends + ["finished"]
    state = State.load(tmp_path / "run" / STATE_FILE)
    assert state.meta["records_seen"] == 4500 and state.meta["complete"]


def test_a_run_refused_before_training_leaves_torch_threads_as_they_were(tmp_path):
    """A CSV run computes on half the threads beside the parser; a run refused before it starts (here a negative
    epoch-cache budget) must leave the caller's thread count alone."""
    import torch

    from onepass import UsageError

    data = write_csv(tmp_path / "x.csv", T.gaussian_mixture(500, 3))
    before = torch.get_num_threads()
    try:
        with pytest.raises(UsageError, match="epoch-cache-mib"):
            train("kmeans", data, tmp_path / "run", hyperparameters={"k": 2}, epochs=2, threads=2,
                  epoch_cache_mib=-1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
