"""Data-parallel training (distributed.py) and sharding: 2 processes, gloo on loopback, 1 thread each.

Every torchrun launch costs a few seconds of start-up, so each test launches as few as it can.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from onepass import State, load_model
from onepass import testing as T
from onepass.data import csv as csv_reader
from onepass.data.batches import Stream, shard_files

from conftest import run_cli, write_csv

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _ids(stream: Stream, batch_size: int = 37, start=None) -> np.ndarray:
    """The first column (a record id) of every batch, in order."""
    got = [b.x[:, 0].numpy() for b in stream.batches(batch_size, start=start, prefetch=0)]
    return np.concatenate(got).astype(np.int64) if got else np.zeros(0, np.int64)


def _with_ids(n: int, d: int = 3, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    x[:, 0] = np.arange(n)
    return x


# ----------------------------------------------------------------------------------------------- sharding

def test_shard_by_file_reads_every_record_once(tmp_path):
    """At least N files: whole files per rank, balanced by size, every record once."""
    sizes = [500, 80, 300, 120, 40]
    start = np.cumsum([0] + sizes)
    for i, n in enumerate(sizes):
        x = _with_ids(n)
        x[:, 0] += start[i]
        write_csv(tmp_path / f"part{i}.csv", x)
    for world in (2, 3, 5):
        seen = [_ids(Stream(str(tmp_path), shard=(r, world))) for r in range(world)]
        assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(start[-1])), world
        assert all(len(s) for s in seen)
    assert shard_files([500, 80, 300, 120, 40], 2) == [[0, 4], [1, 2, 3]]  # 540 and 500 bytes
    assert shard_files([1] * 5, 2) == [[0, 2, 4], [1, 3]]  # equal sizes: file i to rank i mod N


def test_shard_by_stride_reads_every_record_once_and_resumes_exactly(tmp_path, monkeypatch):
    """Fewer files than workers: rank r keeps records r, r + N, ...; a position after any batch resumes at the
    rank's exact next record, across the reader's blocks."""
    monkeypatch.setattr(csv_reader, "BLOCK_SIZE", 512)  # many blocks, so that strides cross block ends
    n = 1000
    write_csv(tmp_path / "a.csv", _with_ids(n))
    world, seen = 3, []
    for r in range(world):
        stream = Stream(str(tmp_path / "a.csv"), shard=(r, world))
        assert stream.stride == (r, world)
        ids = _ids(stream)
        assert np.array_equal(ids, np.arange(r, n, world))
        seen.append(ids)
        batches = list(stream.batches(37, prefetch=0))
        for k in (0, 3, len(batches) // 2, len(batches) - 1):
            rest = _ids(Stream(str(tmp_path / "a.csv"), shard=(r, world)), start=batches[k].position)
            assert np.array_equal(rest, ids[37 * (k + 1):]), (r, k)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(n))


def test_shard_by_stride_of_sparse_records(tmp_path):
    lines = [f"{i} 1:{i} {2 + i % 5}:1.5" for i in range(50)]
    (tmp_path / "a.libsvm").write_text("\n".join(lines) + "\n")
    for r in range(2):
        batches = list(Stream(str(tmp_path / "a.libsvm"), n_features=8, shard=(r, 2)).batches(7, prefetch=0))
        x = torch.cat([b.x.to_dense() for b in batches])
        y = torch.cat([b.y for b in batches])
        assert torch.equal(y, torch.arange(r, 50, 2, dtype=torch.float32))
        assert torch.equal(x[:, 0], y) and torch.equal(x.sum(1) - x[:, 0], torch.full((25,), 1.5))


def test_shard_refuses_stdin_and_bad_ranks(tmp_path):
    from onepass import UsageError
    write_csv(tmp_path / "a.csv", _with_ids(10))
    with pytest.raises(UsageError, match="standard input"):
        Stream("-", shard=(0, 2))
    with pytest.raises(UsageError, match="rank"):
        Stream(str(tmp_path / "a.csv"), shard=(2, 2))


# ------------------------------------------------------------------------------------ several processes

def _train(algo: str, data, out, *args: str) -> list[str]:
    return ["train", algo, "--data", str(data), "--out", str(out), "--threads", "1", "--quiet", "--seed", "3",
            *args]


def _launch(args: list[str], nproc: int = 2, max_restarts: int = 0, how: str = "torchrun", **kw) -> subprocess.Popen:
    """torchrun running `python -m onepass` workers, or onepass's own `--nproc` (torchrun's agent forking them)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           f"--max-restarts={max_restarts}", "-m", "onepass", *args] if how == "torchrun" else \
        [sys.executable, "-m", "onepass", *args, "--nproc", str(nproc), "--max-restarts", str(max_restarts)]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-6) -> bool:
    return torch.allclose(a.double(), b.double(), rtol=tol, atol=tol)


def test_pca_on_two_processes_equals_one_and_uses_every_record_once(tmp_path):
    """--nproc 2 on one file (stride sharding): the model equals the one-process model to 1e-6, and the two
    processes saw disjoint halves that add up to the file."""
    n = 20_000
    data = write_csv(tmp_path / "pca.csv", T.decaying_spectrum(n, 5))
    hp = ["--num-components", "3", "--mini-batch-size", "500"]
    run_cli(*_train("pca", data, tmp_path / "one", *hp), check=True)
    two = run_cli(*_train("pca", data, tmp_path / "two", *hp, "--nproc", "2", "--checkpoint-every", "4000"),
                  check=True)
    assert f"trained pca on {n:,} records" in two.stdout
    assert two.stdout.count("trained pca") == 1, "only rank 0 reports"
    one, both = load_model(tmp_path / "one"), load_model(tmp_path / "two")
    for k in one.tensors:
        assert _close(one.tensors[k], both.tensors[k]), k
    state = State.load(tmp_path / "two")
    assert state.meta["records_seen"] == n and state.meta["distributed"]["records_seen"] == [n // 2, n // 2]
    manifest = json.loads((tmp_path / "two" / "checkpoint.json").read_text())
    assert manifest["world_size"] == 2 and manifest["complete"] and manifest["records_seen"] == [n // 2, n // 2]
    assert sorted(p.name for p in (tmp_path / "two").glob("state.rank*")) == manifest["files"], \
        "older checkpoint generations are removed"
    # a different number of processes cannot resume these parts
    three = run_cli(*_train("pca", data, tmp_path / "two", *hp, "--nproc", "3", "--resume"))
    assert three.returncode != 0 and "written by 2 processes" in three.stderr


def test_kmeans_on_two_processes_reaches_one_process_cost(tmp_path):
    """Two files (file sharding): the merged summaries' model costs at most 2 % more than one process's (the
    merge tolerance onepass.testing states for k-means)."""
    x = T.gaussian_mixture(30_000, 8)
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "a.csv", x[:14_000])
    write_csv(tmp_path / "data" / "b.csv", x[14_000:])
    hp = ["--k", "6", "--mini-batch-size", "1000"]
    run_cli(*_train("kmeans", tmp_path / "data", tmp_path / "one", *hp), check=True)
    run_cli(*_train("kmeans", tmp_path / "data", tmp_path / "two", *hp, "--nproc", "2"), check=True)
    one = T.kmeans_cost(load_model(tmp_path / "one"), x)
    two = T.kmeans_cost(load_model(tmp_path / "two"), x)
    assert two <= one * 1.02, f"2 processes: cost {two:.6g}, 1 process: {one:.6g}"
    state = State.load(tmp_path / "two")
    assert state.meta["records_seen"] == len(x) and sorted(state.meta["distributed"]["records_seen"]) == [14_000, 16_000]


def test_linear_learner_on_two_processes_reaches_one_process_quality(tmp_path):
    """SGD models on 2 processes: merged once at the end (--sync-every 0), or averaged every 5 steps, or every 100
    (the default; the end here) as raw-feature models (each process fixes its own scaling); all within 15 % of one
    process's log-loss: each process takes half the steps (measured 0.1204-0.1206 against 0.1075; the 5 % this
    test once allowed held only while the one-process run chose its model on records scored as they came, which
    picked a model of log-loss 0.146)."""
    data = T.linear_classes(40_000, 9)
    labelled = np.column_stack([data[:, -1], data[:, :-1]])  # SageMaker's layout: the label first
    path = write_csv(tmp_path / "ll.csv", labelled)
    hp = ["--predictor-type", "binary_classifier", "--num-models", "4", "--epochs", "1", "--mini-batch-size", "200",
          "--num-point-for-scaler", "2000", "--learning-rate", "0.1"]  # converged in the steps each process takes
    run_cli(*_train("linear_learner", path, tmp_path / "one", *hp), check=True)
    run_cli(*_train("linear_learner", path, tmp_path / "merged", *hp, "--nproc", "2", "--sync-every", "0"),
            check=True)
    run_cli(*_train("linear_learner", path, tmp_path / "default", *hp, "--nproc", "2"), check=True)
    synced = run_cli(*_train("linear_learner", path, tmp_path / "synced", *hp, "--nproc", "2", "--sync-every", "5"),
                     check=True)
    assert "trained linear_learner on 40,000 records" in synced.stdout
    one = T.logistic_loss(load_model(tmp_path / "one"), data)
    for name in ("merged", "synced", "default"):
        loss = T.logistic_loss(load_model(tmp_path / name), data)
        assert loss <= one * 1.15, f"{name}: log-loss {loss:.4f} vs one process {one:.4f}"
    assert State.load(tmp_path / "synced").meta["records_seen"] == 40_000
    averages = {name: next(json.loads(line)["averages"] for line in (tmp_path / name / "metrics.jsonl").open()
                           if json.loads(line)["event"] == "distributed") for name in ("merged", "default")}
    assert averages["merged"] == 0 and averages["default"] >= 1, averages


def _workers(pid: int) -> list[int]:
    """The child processes of `pid` (torchrun's workers)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


@pytest.mark.parametrize("how", ["torchrun", "--nproc"])
def test_worker_killed_mid_run_restarts_from_the_checkpoint(tmp_path, how):
    """SIGKILL of one worker under --max-restarts 1: torchrun restarts both, they resume the last checkpoint
    (TORCHELASTIC_RESTART_COUNT), and the PCA model is still exact."""
    n = 200_000
    data = write_csv(tmp_path / "pca.csv", T.decaying_spectrum(n, 6))
    hp = ["--num-components", "3", "--mini-batch-size", "100"]
    run_cli(*_train("pca", data, tmp_path / "one", *hp, "--mini-batch-size", "5000"), check=True)
    out = tmp_path / "two"
    proc = _launch(_train("pca", data, out, *hp, "--checkpoint-every", "5000"), max_restarts=1, how=how)
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before a worker could be killed:\n" + proc.communicate()[1]
    assert not (out / "model.safetensors").exists()
    os.kill(_workers(proc.pid)[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    starts = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    resumed = [e for e in starts if e["event"] == "start" and e["resume"]]
    assert resumed, "the restarted group should have resumed the checkpoint"
    state = State.load(out)
    assert state.meta["records_seen"] == n and state.meta["distributed"]["records_seen"] == [n // 2, n // 2]
    one, two = load_model(tmp_path / "one"), load_model(out)
    for k in one.tensors:
        assert _close(one.tensors[k], two.tensors[k]), k


def test_sigterm_to_the_launcher_checkpoints_every_process_and_resume_finishes(tmp_path):
    """`onepass train --nproc 2` stopped by SIGTERM: torchrun's agent passes it on, every process checkpoints at
    the same point, the status is 4 (interrupted), and --resume on 2 processes finishes with every record once."""
    n = 300_000  # one record a batch: seconds of work, while the ranks meet (and see the signal) every second
    data = write_csv(tmp_path / "pca.csv", T.decaying_spectrum(n, 6))
    out = tmp_path / "run"
    args = _train("pca", data, out, "--num-components", "3", "--mini-batch-size", "1")
    proc = _launch(args, how="--nproc")
    deadline = time.monotonic() + 60
    while b'"start"' not in _read(out / "metrics.jsonl") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be stopped:\n" + proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    manifest = json.loads((out / "checkpoint.json").read_text())
    assert manifest["reason"] == "signal SIGTERM" and not manifest["complete"]
    run_cli(*args, "--nproc", "2", "--resume", check=True)
    assert State.load(out).meta["records_seen"] == n


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def test_a_failed_worker_gives_its_exit_status_and_message(tmp_path):
    """--nproc 2 where one process's shard holds a bad record: the data error's status (3) and its message
    naming the file and line, not a launcher's traceback."""
    (tmp_path / "data").mkdir()
    good = write_csv(tmp_path / "data" / "a.csv", T.decaying_spectrum(1000, 1))
    (tmp_path / "data" / "b.csv").write_text(good.read_text().replace("\n", "\nnot,a,number\n", 1))
    p = run_cli(*_train("pca", tmp_path / "data", tmp_path / "run", "--num-components", "2", "--nproc", "2"))
    assert p.returncode == 3, p.stderr
    assert "b.csv" in p.stderr and "line 2" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _by_hand(rank: int, world: int, port: int, args: list[str]) -> subprocess.Popen:
    """A worker started without torchrun: the environment variables it would set."""
    env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    return subprocess.Popen([sys.executable, "-m", "onepass", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_mismatched_hyperparameters_fail_on_every_rank(tmp_path):
    data = write_csv(tmp_path / "a.csv", T.decaying_spectrum(2000, 1))
    port = _free_port()
    procs = [_by_hand(r, 2, port, _train("pca", data, tmp_path / "run", "--num-components", str(2 + r),
                                         "--dist-timeout", "30")) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2, err
        assert "different settings" in err and "hyperparameters.num_components (rank 0: '2', rank 1: '3')" in err


def test_nccl_on_the_cpu_is_refused_on_every_rank(tmp_path):
    data = write_csv(tmp_path / "a.csv", T.decaying_spectrum(200, 1))
    port = _free_port()
    procs = [_by_hand(r, 2, port, _train("pca", data, tmp_path / "run", "--num-components", "2", "--device", "cpu",
                                         "--dist-backend", "nccl", "--dist-timeout", "30")) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2, err
        assert "--dist-backend nccl needs --device cuda" in err


def test_processes_get_a_gpu_each_with_nccl_or_share_them_with_gloo(monkeypatch):
    """Which GPU each process takes (no GPU needed to decide): NCCL refuses more processes than GPUs, clearly and
    on every process before any waits for the others; gloo shares them round robin; auto decides alike on every
    process, also where the launcher did not say how many processes share the machine."""
    from onepass import distributed
    from onepass.errors import UsageError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    monkeypatch.setenv("WORLD_SIZE", "3")
    for local in range(3):
        monkeypatch.setenv("LOCAL_RANK", str(local))
        assert distributed._backend("auto", torch.device("cuda")) == "gloo"
        assert distributed._process_gpu(torch.device("cuda"), "gloo") == torch.device("cuda", local % 2)
        with pytest.raises(UsageError, match="3 processes on this machine need a GPU each with NCCL, and it has 2"):
            distributed._process_gpu(torch.device("cuda"), "nccl")
        with pytest.raises(UsageError, match="NCCL refuses"):
            distributed._process_gpu(torch.device("cuda", 1), "nccl")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed._backend("auto", torch.device("cuda")) == "nccl"
    assert distributed._backend("auto", torch.device("cuda", 0)) == "gloo"  # one GPU named for all
    assert distributed._process_gpu(torch.device("cuda"), "nccl") == torch.device("cuda", 1)
    assert distributed._backend(None, torch.device("cpu")) == "gloo"
    monkeypatch.delenv("LOCAL_WORLD_SIZE")  # started by hand: WORLD_SIZE decides, the same on every rank
    for world, expected in ((2, "nccl"), (4, "gloo")):
        monkeypatch.setenv("WORLD_SIZE", str(world))
        chosen = set()
        for r in range(world):
            monkeypatch.setenv("LOCAL_RANK", str(r))
            chosen.add(distributed._backend("auto", torch.device("cuda")))
        assert chosen == {expected}, world


def test_workers_that_may_use_cuda_are_spawned_not_forked(monkeypatch):
    from onepass import distributed

    monkeypatch.delenv("ONEPASS_START_METHOD", raising=False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert distributed._start_method("auto") == "spawn"
    assert distributed._start_method("cuda:1") == "spawn"
    assert distributed._start_method("cpu") == "fork"
    monkeypatch.setattr(torch.version, "cuda", None)
    assert distributed._start_method("auto") == "fork"


def test_spawned_workers_train_and_report_an_unexpected_error(tmp_path, monkeypatch, capsys):
    """The spawn start (what CUDA machines use) on the CPU: the same model as one process; and a worker's
    unexpected error (not a onepass error) shows its traceback and fails with status 1."""
    data = write_csv(tmp_path / "pca.csv", T.decaying_spectrum(6000, 5))
    hp = ["--num-components", "3", "--mini-batch-size", "500"]
    run_cli(*_train("pca", data, tmp_path / "one", *hp), check=True)
    monkeypatch.setenv("ONEPASS_START_METHOD", "spawn")
    two = run_cli(*_train("pca", data, tmp_path / "two", *hp, "--nproc", "2"), check=True)
    assert "trained pca on 6,000 records" in two.stdout
    one, both = load_model(tmp_path / "one"), load_model(tmp_path / "two")
    assert all(_close(one.tensors[k], both.tensors[k]) for k in one.tensors)

    from onepass import distributed

    def broken(argv):
        raise RuntimeError("something onepass did not foresee")
    def leave(code):  # the worker's os._exit, which would end this test's process
        raise SystemExit(code)
    monkeypatch.setattr(distributed, "_leave", leave)
    with pytest.raises(SystemExit) as e:
        distributed._worker(broken, ["train"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: something onepass did not foresee" in err


def test_unreachable_rank_fails_within_the_timeout(tmp_path):
    """World size 2 with one process started: a clear error once --dist-timeout has passed, no hang."""
    data = write_csv(tmp_path / "a.csv", T.decaying_spectrum(100, 1))
    start = time.monotonic()
    p = _by_hand(0, 2, _free_port(), _train("pca", data, tmp_path / "run", "--num-components", "2",
                                            "--dist-timeout", "3"))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "could not reach the others" in err and "within 3 s" in err, err
    assert time.monotonic() - start < 30


AVERAGE = """
import torch, types
from onepass.distributed import Session
from onepass.state import State
algo = types.SimpleNamespace(NAME="sgd", AVERAGED=("w",))
session, _ = Session.from_env(torch.device("cpu"), algo, {}, timeout=30, sync_every=1)
r = session.rank
state = State("sgd", {}, {"w": torch.full((3,), r + 1.0), "step": torch.tensor([r])}, {"records_seen": 10 * (r + 1)})
session._average(state)
with open(f"{sys.argv[1]}/rank{r}.json", "w") as f:
    json.dump([state.tensors["w"].tolist(), state.tensors["step"].tolist(), session.stats["average_bytes"]], f)
torch.distributed.destroy_process_group()
os._exit(0)  # as the onepass command leaves (onepass.cli.run): no teardown race between native thread pools
"""


def test_averaged_tensors_are_weighted_by_records_since_the_last_sync(tmp_path):
    """The AVERAGED hook: rank 0 saw 10 records with w = 1, rank 1 saw 20 with w = 2: both get 5/3; tensors not
    named stay local."""
    script = tmp_path / "average.py"
    script.write_text("import json, os, sys" + AVERAGE)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(script), str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for r in (0, 1):
        w, step, nbytes = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert np.allclose(w, [5 / 3] * 3) and step == [r] and nbytes == 8 * 4
