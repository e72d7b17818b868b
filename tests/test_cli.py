"""The command line as users type it: train, finalize, predict, inspect, and its errors and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onepass import State, load_model
from onepass.testing import gaussian_mixture

from conftest import run_cli, write_csv


@pytest.fixture
def trained(tmp_path, blobs_csv):
    out = tmp_path / "run"
    proc = run_cli("train", "kmeans", "--data", str(blobs_csv), "--out", str(out), "--k", "6", "--quiet",
                   check=True)
    return out, proc


def test_train_prints_cost_sizes_and_where_the_model_went(trained):
    out, proc = trained
    assert "trained kmeans on 3,000 records of 8 features" in proc.stdout
    sizes = proc.stdout.split("cluster sizes:")[1].splitlines()[0]
    assert sum(int(s.replace(",", "")) for s in sizes.split(",")) == 3000
    assert str(out / "model.safetensors") in proc.stdout
    events = [json.loads(line)["event"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "finished" and "checkpoint" in events


def test_predict_outputs_sagemaker_shapes(trained, blobs_csv, tmp_path):
    out, _ = trained
    as_json = json.loads(run_cli("predict", str(out), "--data", str(blobs_csv), "--format", "json",
                                 check=True).stdout)
    preds = as_json["predictions"]
    assert len(preds) == 3000 and set(preds[0]) == {"closest_cluster", "distance_to_cluster"}
    assert all(0 <= p["closest_cluster"] < 6 and p["closest_cluster"] == int(p["closest_cluster"]) for p in preds)
    lines = run_cli("predict", str(out), "--data", str(blobs_csv), "--format", "jsonl", check=True).stdout
    assert [json.loads(line) for line in lines.splitlines()] == preds
    run_cli("predict", str(out), "--data", str(blobs_csv), "--format", "csv", "--output",
            str(tmp_path / "p.csv"), check=True)
    csv = np.loadtxt(tmp_path / "p.csv", delimiter=",")
    assert csv.shape == (3000, 2)
    np.testing.assert_allclose(csv[:, 1], [p["distance_to_cluster"] for p in preds], rtol=1e-6)
    # distances are real Euclidean distances to the model's centres
    x = np.loadtxt(blobs_csv, delimiter=",")
    centers = load_model(out).tensors["centers"].numpy()
    d = np.sqrt(((x[:, None, :] - centers[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(csv[:, 0], d.argmin(1))
    np.testing.assert_allclose(csv[:, 1], d.min(1), rtol=1e-4)


def test_finalize_gives_other_models_from_the_same_state(trained, tmp_path):
    out, _ = trained
    before = (out / "state.safetensors").read_bytes()
    proc = run_cli("finalize", str(out), "--k", "3", "--out", str(tmp_path / "k3.safetensors"),
                   "--k-range", "1:8", "--plot", str(tmp_path / "elbow.png"), check=True)
    assert load_model(tmp_path / "k3.safetensors").tensors["centers"].shape == (3, 8)
    costs = [float(line.split()[1].replace(",", "")) for line in proc.stdout.splitlines()
             if line.strip() and line.split()[0].isdigit()]
    assert len(costs) == 8 and costs[0] > costs[5]  # the cost falls as k grows to the true 6 clusters
    assert (tmp_path / "elbow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "state.safetensors").read_bytes() == before, "finalize must not change the state"
    bad = run_cli("finalize", str(out), "--k", "100000")
    assert bad.returncode == 2 and "valid values: 1 to" in bad.stderr


def test_inspect_shows_header_and_tensors(trained):
    out, _ = trained
    info = json.loads(run_cli("inspect", "--json", str(out / "state.safetensors"), check=True).stdout)
    assert info["algorithm"] == "kmeans" and info["kind"] == "state" and info["checksum_ok"]
    assert info["hyperparameters"]["k"] == 6 and info["meta"]["records_seen"] == 3000
    assert info["tensors"]["centers"]["shape"] == [120, 8]


def test_sagemaker_hyperparameter_file_of_strings(tmp_path, blobs_csv):
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps({"k": "4", "feature_dim": "8", "extra_center_factor": "5",
                              "init_method": "random", "mini_batch_size": "700", "eval_metrics": '["msd","ssd"]',
                              "local_lloyd_num_trials": "auto"}))
    run_cli("train", "kmeans", "--data", str(blobs_csv), "--out", str(tmp_path / "r"), "--hyperparameters",
            str(hp), "--validation", str(blobs_csv), "--quiet", check=True)
    state = State.load(tmp_path / "r")
    assert state.hyperparameters["k"] == 4 and state.meta["summary_size"] == 20
    assert state.hyperparameters["mini_batch_size"] == 700
    val = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
           if '"validation"' in line][0]
    assert val["ssd"] == pytest.approx(val["msd"] * 3000, rel=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--k", "5", "--no-such-thing", "1"], "unknown hyperparameter 'no_such_thing'; valid hyperparameters:"),
    (["--k", "zero"], "hyperparameter k = 'zero' is invalid: expected an integer >= 1"),
    (["--k", "5", "--init-method", "best"], "expected one of random, kmeans++"),
    ([], "hyperparameter k is required"),
    (["--k", "5", "--feature-dim", "3"], "feature_dim = 3 but the data has 8 features"),
])
def test_bad_hyperparameters_are_usage_errors_naming_the_valid_values(tmp_path, blobs_csv, args, message):
    proc = run_cli("train", "kmeans", "--data", str(blobs_csv), "--out", str(tmp_path / "r"), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize("content, where", [
    ("1,2,3\n4,5,6\n7,8\n", "line 3: expected 3 fields, found 2"),
    ("1,2,3\n4,abc,6\n", "line 2: field 2 is not a number: 'abc'"),
    ("1,2,3\n4,5,6\n7,nan,9\n", "line 3: field 2 is NaN"),
    ("1,2,3\n4,5,inf\n", "line 2: field 3 is inf"),
    ("", "file is empty"),
])
def test_bad_data_fails_naming_file_and_line_and_leaves_no_model(tmp_path, content, where):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    out = tmp_path / "r"
    proc = run_cli("train", "kmeans", "--data", str(data), "--out", str(out), "--k", "1", "--quiet")
    assert proc.returncode == 3, proc.stderr
    assert str(data) in proc.stderr and where in proc.stderr, proc.stderr
    assert not (out / "model.safetensors").exists()


def test_damaged_state_is_refused_with_exit_code(tmp_path, trained):
    out, _ = trained
    blob = (out / "state.safetensors").read_bytes()
    (out / "state.safetensors").write_bytes(blob[:-100])
    for args in (["inspect", str(out / "state.safetensors")], ["finalize", str(out), "--k", "2"]):
        proc = run_cli(*args)
        assert proc.returncode == 5 and "truncated" in proc.stderr, proc.stderr


def test_fresh_run_refuses_to_overwrite_a_state(trained, blobs_csv):
    out, _ = trained
    proc = run_cli("train", "kmeans", "--data", str(blobs_csv), "--out", str(out), "--k", "6")
    assert proc.returncode == 2 and "--resume" in proc.stderr and "--overwrite" in proc.stderr


def test_init_from_continues_an_earlier_state_with_new_data(tmp_path):
    a = write_csv(tmp_path / "day1.csv", gaussian_mixture(2000, 1))
    b = write_csv(tmp_path / "day2.csv", gaussian_mixture(3000, 2))
    run_cli("train", "kmeans", "--data", str(a), "--out", str(tmp_path / "d1"), "--k", "6", "--quiet", check=True)
    proc = run_cli("train", "kmeans", "--data", str(b), "--out", str(tmp_path / "d2"), "--init-from",
                   str(tmp_path / "d1"), "--quiet", check=True)
    assert "5,000 records" in proc.stdout and "1 earlier run(s) continued" in proc.stdout
    state = State.load(tmp_path / "d2")
    assert state.meta["lineage"][0]["records_seen"] == 2000
    bad = run_cli("train", "kmeans", "--data", str(b), "--out", str(tmp_path / "d3"), "--init-from",
                  str(tmp_path / "d1"), "--k", "7")
    assert bad.returncode == 5 and "cannot change k" in bad.stderr


def test_epochs_glob_folder_parquet_and_npy_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = gaussian_mixture(1500, 3)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(3):
        write_csv(folder / f"part-{i}.csv", x[i * 500:(i + 1) * 500])
    np.save(tmp_path / "x.npy", x)
    pq.write_table(pa.table({f"f{j}": x[:, j] for j in range(8)}), tmp_path / "x.parquet", row_group_size=400)
    for src in (str(folder), str(folder / "part-*.csv"), str(tmp_path / "x.npy"), str(tmp_path / "x.parquet")):
        out = tmp_path / f"run{abs(hash(src))}"
        proc = run_cli("train", "kmeans", "--data", src, "--out", str(out), "--k", "6", "--epochs", "2",
                       "--quiet", check=True)
        assert "3,000 records" in proc.stdout, src


def test_resume_of_a_finished_run_changes_nothing(trained, blobs_csv):
    out, _ = trained
    before = State.load(out)
    run_cli("train", "kmeans", "--data", str(blobs_csv), "--out", str(out), "--k", "6", "--resume", "--quiet",
            check=True)
    after = State.load(out)
    assert after.meta["records_seen"] == before.meta["records_seen"] == 3000


def test_merge_command_combines_states_from_different_machines(tmp_path):
    x = gaussian_mixture(6000, 4)
    for i, part in enumerate(np.array_split(x, 2)):
        write_csv(tmp_path / f"p{i}.csv", part)
        run_cli("train", "kmeans", "--data", str(tmp_path / f"p{i}.csv"), "--out", str(tmp_path / f"m{i}"),
                "--k", "6", "--quiet", check=True)
    proc = run_cli("merge", str(tmp_path / "m0"), str(tmp_path / "m1"), "--out", str(tmp_path / "all"), check=True)
    assert "6,000 records" in proc.stdout
    assert State.load(tmp_path / "all").meta["records_seen"] == 6000
    assert load_model(tmp_path / "all").tensors["centers"].shape == (6, 8)
    run_cli("train", "kmeans", "--data", str(tmp_path / "p0.csv"), "--out", str(tmp_path / "k5"), "--k", "5",
            "--quiet", check=True)
    bad = run_cli("merge", str(tmp_path / "m0"), str(tmp_path / "k5"), "--out", str(tmp_path / "bad"))
    assert bad.returncode == 5 and "different k" in bad.stderr
