"""The same code on a GPU: every algorithm's promises checked with its state on CUDA (skipped where there is none).

On a GPU, sums that use atomic adds (index_add_, sparse products) may round in another order from run to run, so
"the same state" means within RESUME_RTOL there; everything else (counters, metadata, shapes) is exact.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from onepass import State, load_model
from onepass import testing as T
from onepass.data.batches import Batch

from conftest import run_cli, write_csv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")

ALGOS = sorted(T.CASES)
RESUME_RTOL = 1e-5
# CPU and GPU states differ by rounding (another summation order, TF32 off): the models' quality by at most this
# (deepar: not measured yet, no GPU at hand when it was added; an LSTM's rounding compounds over the steps)
CROSS_DEVICE_RTOL = {"kmeans": 0.02, "pca": 1e-9, "pca-randomized": 1e-4, "linear_learner": 0.01,
                     "factorization_machines": 0.01, "deepar": 0.2}


@pytest.mark.parametrize("algo", ALGOS)
def test_resume_on_the_gpu_equals_uninterrupted(algo):
    T.check_resume_equals_uninterrupted(T.CASES[algo], device="cuda", rtol=RESUME_RTOL)


@pytest.mark.parametrize("algo", ALGOS)
def test_a_gpu_state_merges_with_a_cpu_state(algo):
    """One half trained on the GPU, the other on the CPU: the merge is as good as the whole (within the case's
    merge tolerance, as on one device)."""
    T.check_merge_matches_whole(T.CASES[algo], device="cuda", other_device="cpu")


@pytest.mark.parametrize("algo", ALGOS)
def test_finalize_on_the_gpu_is_repeatable(algo):
    T.check_finalize_repeatable(T.CASES[algo], device="cuda")


@pytest.mark.parametrize("algo", ALGOS)
def test_gpu_and_cpu_train_the_same_model(algo, tmp_path):
    """The same data and seed on both devices: models of the same quality; a state and a model written from the
    GPU load anywhere (on the CPU) and predict what they predicted on the GPU."""
    case = T.CASES[algo]
    data = case.make_data(case.check_records, 6)
    gpu_state, cpu_state = T.fit(case, data, device="cuda"), T.fit(case, data)
    assert any(t.device.type == "cuda" for t in gpu_state.tensors.values())
    assert gpu_state.meta["records_seen"] == cpu_state.meta["records_seen"] > 0
    gpu_model, cpu_model = case.algo.finalize(gpu_state), case.algo.finalize(cpu_state)
    q_gpu, q_cpu = case.quality(gpu_model.to("cpu"), data), case.quality(cpu_model, data)
    assert abs(q_gpu - q_cpu) <= CROSS_DEVICE_RTOL[algo] * abs(q_cpu), f"GPU {q_gpu:.8g} vs CPU {q_cpu:.8g}"

    gpu_state.save(tmp_path / "state.safetensors")
    loaded = State.load(tmp_path / "state.safetensors")
    assert all(t.device.type == "cpu" for t in loaded.tensors.values())
    T.assert_states_equal(gpu_state, loaded, "a GPU state saved and loaded")
    gpu_model.save(tmp_path / "model.safetensors")
    model = load_model(tmp_path / "model.safetensors")
    if not case.predicts_rows:  # a forecaster: its samples come from the device's own generator
        return
    x = torch.tensor(data[:, :-1] if case.label_column else data)
    on_gpu, on_cpu = gpu_model.predict(x.cuda()), model.predict(x)
    for k in on_cpu:
        assert torch.allclose(on_gpu[k].cpu().double(), on_cpu[k].double(), rtol=1e-4, atol=1e-4), k


def test_sparse_batches_train_on_the_gpu_as_on_the_cpu():
    """Sparse CSR batches (never densified) on CUDA: the linear learner's and randomized PCA's states match what
    the same sparse batches give on the CPU."""
    from onepass.algorithms import linear as ll
    from onepass.algorithms import pca

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(2000, 30)) * (rng.random((2000, 30)) < 0.1), dtype=torch.float32)
    y = (x[:, 0] - x[:, 1] > 0).float()
    hp = {"predictor_type": "binary_classifier", "num_models": 4, "num_point_for_scaler": 500}
    states = {dev: ll.init(hp, 30, 0, dev) for dev in ("cuda", "cpu")}
    for dev in states:
        for s in range(0, 2000, 200):
            states[dev] = ll.update(states[dev], Batch(x[s:s + 200].to_sparse_csr(), y[s:s + 200]))
    assert states["cuda"].tensors["weight"].device.type == "cuda"
    torch.testing.assert_close(states["cuda"].tensors["weight"].cpu(), states["cpu"].tensors["weight"],
                               rtol=1e-3, atol=1e-4)

    hp = {"num_components": 3, "algorithm_mode": "randomized", "extra_components": 5}
    states = {dev: pca.init(hp, 30, 0, dev) for dev in ("cuda", "cpu")}
    for dev in states:
        for s in range(0, 2000, 500):
            states[dev] = pca.update(states[dev], Batch(x[s:s + 500].to_sparse_csr()))
    a, b = pca.finalize(states["cuda"]), pca.finalize(states["cpu"])
    torch.testing.assert_close(a.tensors["singular_values"].cpu(), b.tensors["singular_values"], rtol=1e-4, atol=1e-6)


def test_the_command_line_trains_on_cuda_and_says_so(tmp_path):
    """--device cuda and cuda:0 from the CLI: the run says where it ran; finalize and predict use its state."""
    x = T.gaussian_mixture(20_000, 3)
    data = write_csv(tmp_path / "x.csv", x)
    run_cli("train", "kmeans", "--data", str(data), "--out", str(tmp_path / "km"), "--k", "6", "--device", "cuda",
            "--quiet", check=True)
    start = json.loads((tmp_path / "km" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["device"].startswith("cuda"), start
    run_cli("finalize", str(tmp_path / "km"), "--k", "4", "--out", str(tmp_path / "k4.safetensors"), check=True)
    pred = run_cli("predict", str(tmp_path / "k4.safetensors"), "--data", str(data), "--format", "jsonl", check=True)
    labels = [json.loads(line)["closest_cluster"] for line in pred.stdout.splitlines()]
    assert len(labels) == len(x) and set(labels) <= {0, 1, 2, 3}
    run_cli("train", "pca", "--data", str(data), "--out", str(tmp_path / "pca"), "--num-components", "3",
            "--device", "cuda:0", "--quiet", check=True)
    cpu = run_cli("train", "pca", "--data", str(data), "--out", str(tmp_path / "pca_cpu"), "--num-components", "3",
                  "--device", "cpu", "--quiet", check=True)
    assert cpu.returncode == 0
    a, b = load_model(tmp_path / "pca"), load_model(tmp_path / "pca_cpu")
    assert torch.allclose(a.tensors["components"].double(), b.tensors["components"].double(), rtol=1e-6, atol=1e-8)


def test_two_processes_train_on_cuda(tmp_path):
    """--nproc 2 --device cuda: with gloo the processes share this machine's GPUs; with NCCL they need a GPU each,
    and are refused clearly where there are fewer. The merged model is as good as one process's."""
    x = T.gaussian_mixture(40_000, 4)
    data = write_csv(tmp_path / "x.csv", x)
    hp = ["--k", "6", "--device", "cuda", "--quiet", "--mini-batch-size", "1000"]
    run_cli("train", "kmeans", "--data", str(data), "--out", str(tmp_path / "one"), *hp, check=True)
    one = T.kmeans_cost(load_model(tmp_path / "one"), x)
    backends = ["gloo", "nccl"] if torch.cuda.device_count() >= 2 else ["gloo"]
    for backend in backends:
        run_cli("train", "kmeans", "--data", str(data), "--out", str(tmp_path / backend), *hp, "--nproc", "2",
                "--dist-backend", backend, check=True)
        state = State.load(tmp_path / backend)
        assert state.meta["records_seen"] == len(x) and len(state.meta["distributed"]["records_seen"]) == 2
        assert T.kmeans_cost(load_model(tmp_path / backend), x) <= one * 1.02, backend
    if torch.cuda.device_count() < 2:
        refused = run_cli("train", "kmeans", "--data", str(data), "--out", str(tmp_path / "nccl"), *hp,
                          "--nproc", "2", "--dist-backend", "nccl", "--dist-timeout", "60")
        assert refused.returncode != 0 and "need a GPU each with NCCL" in refused.stderr, refused.stderr


def test_batches_reach_the_gpu_pinned_one_ahead_with_their_values():
    """The trainer's copy path: dense and sparse batches arrive on the GPU with the values read, in order, and the
    update sees them ready (the compute stream waits for each copy)."""
    from onepass.data.to_device import to_device

    rng = np.random.default_rng(0)
    read = [Batch(torch.tensor(rng.normal(size=(50, 4)), dtype=torch.float32), torch.arange(50.0) + i)
            for i in range(3)] + [Batch(torch.tensor(rng.normal(size=(50, 4)) * (rng.random((50, 4)) < 0.3),
                                                     dtype=torch.float32).to_sparse_csr())]
    moved = list(to_device(iter(read), torch.device("cuda")))
    assert [b.x.device.type for b in moved] == ["cuda"] * 4
    for a, b in zip(read, moved):
        assert torch.equal(a.x.to_dense(), b.x.cpu().to_dense())
        assert (a.y is None and b.y is None) or torch.equal(a.y, b.y.cpu())


def test_pca_reads_larger_batches_on_the_gpu_with_the_same_model(tmp_path):
    """PCA's GPU_BATCH_FACTOR: 8 x mini_batch_size a batch on CUDA, the same components as the CPU's."""
    from onepass import pca
    from onepass.train import read_size

    dev = torch.device("cuda")
    assert read_size(pca, {"mini_batch_size": 500}, dev) == 4000
    assert read_size(pca, {"mini_batch_size": 500}, torch.device("cpu")) == 500
    data = T.decaying_spectrum(20_000, 0)
    csv = write_csv(tmp_path / "x.csv", data)
    for d in ("cpu", "cuda"):
        assert run_cli("train", "pca", "--data", str(csv), "--out", str(tmp_path / d), "--num-components", "3",
                       "--mini-batch-size", "500", "--device", d).returncode == 0
    cpu, gpu = load_model(tmp_path / "cpu"), load_model(tmp_path / "cuda")
    x = torch.tensor(data[:2000], dtype=torch.float64)
    assert torch.allclose(cpu.transform(x).abs(), gpu.transform(x).abs().cpu(), rtol=1e-6, atol=1e-6)
