"""--on-bad-record skip / --max-bad-fraction: bad records are left out and counted, exactly, also across a resume."""

from __future__ import annotations

import json
import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from onepass import cli
from onepass.data import csv as csv_reader
from onepass.data import jsonl as jsonl_reader
from onepass.data import libsvm as libsvm_reader
from onepass.data import parquet as parquet_reader
from onepass.data.batches import Stream
from onepass.errors import DataError, Interrupted, UsageError
from onepass.progress import Progress
from onepass.state import State
from onepass.train import train

# (bad line, reason) inserted among good CSV records; records are numbered from 0
CSV_BAD = [(b"1.0,x,2.0", "not a number"), (b"1.0,2.0", "wrong field count"), (b"1.0,nan,2.0", "not finite"),
           (b"1.0,,2.0", "missing value"), (b"\xff\xfe,1,2", "bad utf-8"), (b"1e39,1,1", "not finite")]


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.round(np.random.default_rng(seed).normal(size=(n, 3)), 4)


def _csv_pair(tmp_path, n=600, every=37):
    """A clean CSV and the same records with a bad line after every `every`-th record (some at block ends)."""
    rows = _rows(n)
    clean, dirty, bad_lines = [b"a,b,c"], [b"a,b,c"], []
    for i, r in enumerate(rows):
        line = ",".join(f"{v:.4f}" for v in r).encode()
        clean.append(line)
        dirty.append(line)
        if i % every == every - 1:
            bad, _ = CSV_BAD[len(bad_lines) % len(CSV_BAD)]
            dirty.append(bad)
            bad_lines.append((len(dirty), CSV_BAD[len(bad_lines) % len(CSV_BAD)][1]))  # 1-based line number
    (tmp_path / "clean.csv").write_bytes(b"\n".join(clean) + b"\n")
    (tmp_path / "dirty.csv").write_bytes(b"\n".join(dirty) + b"\n")
    return tmp_path / "clean.csv", tmp_path / "dirty.csv", bad_lines


def _all(stream: Stream, size: int = 16):
    xs, ys, last = [], [], None
    for b in stream.batches(size, prefetch=0):
        xs.append(b.x.to_dense() if b.x.is_sparse_csr else b.x)
        ys.append(b.y if b.y is not None else torch.zeros(len(b)))
        last = b
    return torch.cat(xs), torch.cat(ys), last


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(csv_reader, "BLOCK_SIZE", 700)  # many blocks, most with a bad line somewhere
    monkeypatch.setattr(jsonl_reader, "BLOCK_SIZE", 700)
    monkeypatch.setattr(libsvm_reader, "BLOCK_SIZE", 300)
    monkeypatch.setattr(parquet_reader, "SLICE_ROWS", 23)


def test_csv_skip_gives_the_clean_records_and_counts(tmp_path, small_blocks):
    clean, dirty, bad_lines = _csv_pair(tmp_path)
    x0, _, _ = _all(Stream(clean))
    x1, _, last = _all(Stream(dirty, on_bad_record="skip", max_bad_fraction=0.5))
    assert torch.equal(x0, x1)
    tally = last.bad
    assert tally["skipped"] == len(bad_lines) and tally["records"] == len(x0)
    expected: dict[str, int] = {}
    for _, reason in bad_lines:
        expected[reason] = expected.get(reason, 0) + 1
    assert tally["counts"] == expected
    assert [(e["source"], e["line"], e["reason"]) for e in tally["examples"]] == \
        [(str(dirty), line, reason) for line, reason in bad_lines[:5]]
    assert f"line {bad_lines[0][0]}" in tally["examples"][0]["message"]
    with pytest.raises(DataError, match=f"line {bad_lines[0][0]}: field 2 is not a number"):
        _all(Stream(dirty))  # fail (the default) names the first


def test_max_bad_fraction_stops_with_the_counts(tmp_path):
    _, dirty, bad_lines = _csv_pair(tmp_path, n=2000, every=50)  # 2 % bad
    with pytest.raises(DataError, match=r"too many bad records: skipped \d+ bad records of 1,0\d\d .*first: .*line"):
        _all(Stream(dirty, on_bad_record="skip"))  # default 0.01, checked from 1000 records on
    _all(Stream(dirty, on_bad_record="skip", max_bad_fraction=0.03))
    with pytest.raises(DataError, match="too many bad records"):  # at the end, however few records
        _all(Stream(_csv_pair(tmp_path, n=100, every=50)[1], on_bad_record="skip", max_bad_fraction=0.001))
    with pytest.raises(UsageError, match="needs --on-bad-record skip"):
        Stream(dirty, max_bad_fraction=0.1)


def _write_pair(tmp_path, ext: str, good: list[str], bad: list[str], every: int) -> None:
    """clean.EXT with the good lines; dirty.EXT with the bad lines in turn after every `every`-th good one."""
    dirty = []
    for i, line in enumerate(good):
        dirty.append(line)
        if i % every == every - 1:
            dirty.append(bad[(i // every) % len(bad)])
    (tmp_path / f"clean.{ext}").write_text("\n".join(good) + "\n")
    (tmp_path / f"dirty.{ext}").write_text("\n".join(dirty) + "\n")


def test_libsvm_skip(tmp_path, small_blocks):
    good = [f"{i % 2} {1 + i % 5}:{i / 7:.3f} 7:{i % 3}" for i in range(300)]
    bad = ["1 3:x", "0 9:1", "1 4:1 2:1", "0 0:1", "z 1:1"]
    _write_pair(tmp_path, "svm", good, bad, 29)
    x0, y0, _ = _all(Stream(tmp_path / "clean.svm", n_features=8))
    x1, y1, last = _all(Stream(tmp_path / "dirty.svm", n_features=8, on_bad_record="skip", max_bad_fraction=0.5))
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert last.bad["skipped"] == 10
    assert last.bad["counts"] == {"not a number": 4, "index out of range": 2, "unsorted index": 2, "bad index": 2}
    assert last.bad["examples"][0]["line"] == 30 and last.bad["examples"][0]["source"].endswith("dirty.svm")


def test_jsonl_skip(tmp_path, small_blocks):
    rows = _rows(300)
    good = [json.dumps({"a": float(r[0]), "b": float(r[1]), "c": float(r[2])}) for r in rows]
    bad = ['{"a": 1, "b": "x", "c": 2}', '{"a": 1, "c": 2}', "not json", '{"a": 1, "b": 2, "c": 3, "d": 4}',
           '{"a": 1, "b": null, "c": 2}']
    _write_pair(tmp_path, "jsonl", good, bad, 31)
    x0, _, _ = _all(Stream(tmp_path / "clean.jsonl"))
    x1, _, last = _all(Stream(tmp_path / "dirty.jsonl", on_bad_record="skip", max_bad_fraction=0.5))
    assert torch.equal(x0, x1)
    assert last.bad["counts"] == {"not a number": 2, "missing value": 3, "parse error": 2, "unknown field": 2}
    assert last.bad["examples"][0]["line"] == 32


def _parquet_pair(tmp_path, n=400):
    rows = _rows(n).astype(np.float64)
    bad = np.zeros(n, dtype=bool)
    bad[[0, 5, 22, 23, 46, 100, 101, 102, 250, 399]] = True
    a, b = rows[:, 0].tolist(), rows[:, 1].tolist()
    for k, i in enumerate(np.flatnonzero(bad)):
        if k % 2:
            a[i] = None
        else:
            b[i] = float("inf")
    pq.write_table(pa.table({"a": a, "b": b, "c": rows[:, 2]}), tmp_path / "dirty.parquet", row_group_size=97)
    keep = ~bad
    pq.write_table(pa.table({"a": rows[keep, 0], "b": rows[keep, 1], "c": rows[keep, 2]}),
                   tmp_path / "clean.parquet", row_group_size=97)
    return tmp_path / "clean.parquet", tmp_path / "dirty.parquet", int(bad.sum())


def test_parquet_nulls_skip(tmp_path, small_blocks):
    clean, dirty, nbad = _parquet_pair(tmp_path)
    x0, _, _ = _all(Stream(clean))
    x1, _, last = _all(Stream(dirty, on_bad_record="skip", max_bad_fraction=0.5))
    assert torch.equal(x0, x1)
    assert last.bad["counts"] == {"missing value": nbad // 2, "not finite": nbad - nbad // 2}
    assert last.bad["examples"][0]["row"] == 0 and "missing value" not in last.bad["examples"][0]["message"]
    assert last.bad["examples"][1]["message"].endswith("row 5: column 'a' is missing a value")
    with pytest.raises(DataError, match="row 5: column 'a' is missing a value"):  # fail: missing values first
        _all(Stream(dirty))


class _StopAt(Progress):
    """Sends this process SIGTERM once `at` records were trained on: the trainer checkpoints and stops."""

    def __init__(self, at: int):
        super().__init__(enabled=False)
        self.at = at

    def update(self, records, fraction, epoch, epochs, force=False):
        if self.at is not None and records >= self.at:
            self.at = None
            signal.raise_signal(signal.SIGTERM)


def _train(data, out, **kw):
    return train("kmeans", data, out, hyperparameters={"k": 3, "extra_center_factor": 2}, mini_batch_size=20,
                 checkpoint_seconds=None, device="cpu", seed=1, on_bad_record="skip", max_bad_fraction=0.5, **kw)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_resume_with_skipped_records_equals_uninterrupted(tmp_path, small_blocks, kind):
    if kind == "csv":
        clean, dirty, _ = _csv_pair(tmp_path, n=400, every=20)  # a bad line right at every batch end
    else:
        clean, dirty, _ = _parquet_pair(tmp_path)
    whole = _train(dirty, tmp_path / "whole", epochs=2)
    reference = _train(clean, tmp_path / "clean", epochs=2, overwrite=True)
    for name, t in reference.state.tensors.items():
        assert torch.equal(t, whole.state.tensors[name]), name
    counts = whole.state.meta["bad_records"]
    assert counts["records"] == reference.state.meta["records_seen"]  # both epochs counted
    assert counts["skipped"] == 2 * (20 if kind == "csv" else 10)
    for stop in (20, 60, 100, 400, 560):
        out = tmp_path / f"stop{stop}"
        with pytest.raises(Interrupted):
            _train(dirty, out, epochs=2, checkpoint_every=40, progress=_StopAt(stop))
        resumed = _train(dirty, out, resume=True)
        for name, t in whole.state.tensors.items():
            assert torch.equal(t, resumed.state.tensors[name]), (stop, name)
        assert resumed.state.meta["bad_records"] == counts, stop
        assert State.load(out / "state.safetensors").meta["bad_records"] == counts
    events = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    logged = [e for e in events if e.get("event") == "bad_records" or e.get("kind") == "bad_records"]
    assert logged and logged[-1]["skipped"] == counts["skipped"]
    assert whole.metrics["bad_records"].startswith(f"skipped {counts['skipped']} bad records of ")


def test_resume_refuses_another_policy(tmp_path):
    _, dirty, _ = _csv_pair(tmp_path, n=100, every=50)
    _train(dirty, tmp_path / "run")
    with pytest.raises(Exception, match="on_bad_record"):
        train("kmeans", dirty, tmp_path / "run", resume=True, on_bad_record="fail", device="cpu")


def test_cli_train_and_predict_with_skip(tmp_path, capsys):
    _, dirty, bad_lines = _csv_pair(tmp_path, n=300, every=50)
    assert cli.main(["train", "kmeans", "--data", str(dirty), "--out", str(tmp_path / "run"), "--k", "2",
                     "--on-bad-record", "skip", "--max-bad-fraction", "0.05", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"skipped {len(bad_lines)} bad records of 306 (1.961 %): " in out and "first: " in out
    predictions = tmp_path / "p.jsonl"
    assert cli.main(["predict", str(tmp_path / "run"), "--data", str(dirty), "--output", str(predictions),
                     "--on-bad-record", "skip", "--max-bad-fraction", "0.05"]) == 0
    assert len(predictions.read_text().splitlines()) == 300
    assert f"skipped {len(bad_lines)} bad records" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path / "run"), "--data", str(dirty), "--output", str(predictions)]) == 3
