"""Categorical columns hashed into features without a vocabulary pass (data/hashing.py): the documented hash, the
same model from every format, predict and resume hashing alike, collisions counted, bad values named."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import onepass
from onepass import State
from onepass.data import Stream
from onepass.data import hashing
from onepass.data.hashing import murmur3_32
from onepass.errors import DataError, UsageError

from onepass import cli

FM = {"predictor_type": "binary_classifier", "num_factors": 4, "feature_dim": 512}


def _records(n: int = 2000, seed: int = 0) -> list[dict]:
    """Clicks from user and site ids (text and integers) with an interaction, plus a numeric column."""
    rng = np.random.default_rng(seed)
    user, site, age = rng.integers(0, 60, n), rng.integers(0, 30, n), rng.normal(size=n).round(3)
    bu, bs = rng.normal(size=60), rng.normal(size=30)
    y = (bu[user] * bs[site] + 0.5 * age > 0).astype(int)
    return [{"y": int(a), "age": float(b), "user": f"u{c}", "site": int(d)} for a, b, c, d in zip(y, age, user, site)]


def _write(records: list[dict], path, fmt: str):
    if fmt == "csv":
        path.write_text("y,age,user,site\n" + "".join(f"{r['y']},{r['age']},{r['user']},{r['site']}\n"
                                                        for r in records))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=700)
    else:  # sqlite
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE clicks (y INTEGER, age REAL, user TEXT, site INTEGER)")
            db.executemany("INSERT INTO clicks VALUES (?, ?, ?, ?)", [tuple(r.values()) for r in records])
        return Stream(f"sqlite:///{path}", query="SELECT * FROM clicks", label_column="y",
                      categorical_columns=["user", "site"])
    return Stream(str(path), label_column="y", categorical_columns=["user", "site"])


def _slots(records: list[dict], size: int) -> tuple[int, int]:
    """(slots used, slots shared by two or more keys), by brute force over the keys."""
    slots: dict[int, set] = {}
    for r in records:
        for col in ("user", "site"):
            key = f"{col}\x00{r[col]}".encode()
            slots.setdefault(murmur3_32(key) % size, set()).add(key)
    return len(slots), sum(len(keys) > 1 for keys in slots.values())


def test_hash_of_known_strings_equals_the_documented_values():
    # MurmurHash3 x86_32, seed 0, unsigned: the values of the reference implementation (and of mmh3, scikit-learn)
    assert murmur3_32(b"hello") == 0x248BFA47
    assert murmur3_32(b"") == 0
    assert list(murmur3_32([b"user\x00alice", b"site\x00a.com", "item\x00été".encode()])) == [
        654713589, 1593259336, 1688880808]
    # every tail length and a key longer than a group of 16 bytes
    keys = [bytes(range(i)) for i in range(40)]
    assert list(murmur3_32(keys)) == [murmur3_32(k) for k in keys]
    # scikit-learn's murmurhash3_32(key, seed=0, positive=True) agrees on these 40 keys; its values, kept here
    assert murmur3_32(keys[39]) == 0x2486B774 and murmur3_32(keys[3]) == 0x51D4D0D7


def test_the_c_hash_and_the_numpy_hash_agree(monkeypatch):
    values = np.array(["alice", " bob\t", "", "été", "x" * 300, "12"], dtype=object)
    fast = hashing.hash_column("user", values, trim=True)
    monkeypatch.setattr(hashing, "_murmur", None)
    assert list(hashing.hash_column("user", values, trim=True)) == list(fast)
    assert fast[1] == murmur3_32(b"user\x00bob") and fast[2] == murmur3_32(b"user\x00")


def test_slots_follow_the_documented_layout(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("y,age,user\n1,2.5,alice\n0,0,bob\n")
    x = next(Stream(str(path), label_column="y", categorical_columns=["user"], n_features=100).batches(10)).x
    dense = x.to_dense().numpy()
    # numeric columns first (index 0), then 1 + murmur3("user\0value") % 99
    assert dense[0, 0] == 2.5 and dense[1, 0] == 0
    for row, value in ((0, "alice"), (1, "bob")):
        slot = 1 + murmur3_32(f"user\x00{value}".encode()) % 99
        assert dense[row, slot] == 1 and dense[row, 1:].sum() == 1


def test_csv_parquet_jsonl_and_sqlite_give_the_same_model(tmp_path):
    records = _records()
    states = []
    for fmt in ("csv", "parquet", "jsonl", "db"):
        stream = _write(records, tmp_path / f"clicks.{fmt}", fmt)
        result = onepass.train("factorization-machines", stream, tmp_path / f"run-{fmt}", hyperparameters=FM,
                               device="cpu", threads=1, progress=None)
        states.append(result.state)
    for s in states[1:]:
        for name, t in states[0].tensors.items():
            assert torch.equal(t, s.tensors[name]), name
    tally = states[0].meta["categorical"]
    assert (tally["occupied_slots"], tally["collided_slots"]) == _slots(records, 511)


def test_predict_and_serve_on_raw_categoricals_equal_predict_on_the_hashed_libsvm(tmp_path, capsys):
    """A user can hash elsewhere (the documented layout) and predict from LibSVM: the same scores."""
    records = _records(800)
    _write(records, tmp_path / "clicks.csv", "csv")
    assert cli.main(["train", "linear-learner", "--data", str(tmp_path / "clicks.csv"), "--label-column", "y",
                     "--categorical-columns", "user,site", "--feature-dim", "512", "--predictor-type",
                     "binary_classifier", "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet", "--threads",
                     "1"]) == 0
    lines = []
    for r in records:  # age at index 0, then 1 + murmur3 % 511 for each column
        feats = {0: r["age"]} if r["age"] else {}
        for col in ("user", "site"):
            slot = 1 + murmur3_32(f"{col}\x00{r[col]}".encode()) % 511
            feats[slot] = feats.get(slot, 0) + 1
        lines.append(f"{r['y']} " + " ".join(f"{k}:{v}" for k, v in sorted(feats.items())))
    (tmp_path / "clicks.libsvm").write_text("\n".join(lines) + "\n")
    for name, fmt in (("raw", "csv"), ("hashed", "libsvm")):
        assert cli.main(["predict", str(tmp_path / "run"), "--data", str(tmp_path / f"clicks.{fmt}"),
                         "--output", str(tmp_path / f"{name}.jsonl"), "--zero-based"]
                        + (["--label-column", "y"] if fmt == "csv" else [])) == 0
    raw, hashed = ((tmp_path / f"{n}.jsonl").read_text().splitlines() for n in ("raw", "hashed"))
    assert len(raw) == 800 and raw == hashed
    capsys.readouterr()
    assert cli.main(["inspect", str(tmp_path / "run")]) == 0
    inspect = capsys.readouterr().out
    used, _ = _slots(records, 511)
    assert f"{used} of 511 hash slots used" in inspect and "categorical columns (hashed" in inspect
    # served: raw values in a CSV line (the training fields' order) or named in JSON get predict's scores
    pytest.importorskip("uvicorn")
    from test_serve import call, serving
    from onepass.serving import Settings
    csv_body = "".join(f"{r['age']},{r['user']},{r['site']}\n" for r in records[:5])
    json_body = json.dumps({"instances": [{k: r[k] for k in ("age", "user", "site")} for r in records[:5]]})
    with serving(Settings(model=str(tmp_path / "run"))) as port:
        for body, kind in ((csv_body, "text/csv"), (json_body, "application/json")):
            status, _, answer = call(port, "POST", "/invocations", body, content_type=kind, accept="application/json")
            assert status == 200, answer
            assert [p["score"] for p in json.loads(answer)["predictions"]] == pytest.approx(
                [json.loads(line)["score"] for line in raw[:5]], rel=1e-6)
        bad = json.dumps({"instances": [{"age": 1, "user": ["a"], "site": 3}]})
        status, _, answer = call(port, "POST", "/invocations", bad, content_type="application/json")
        assert status == 400 and b"record 1: categorical field 'user' holds list" in answer


def test_resume_continues_bit_for_bit_with_the_collision_tally(tmp_path):
    stream = _write(_records(3000), tmp_path / "clicks.csv", "csv")
    hp = {**FM, "feature_dim": 64, "mini_batch_size": 200}
    whole = onepass.train("factorization-machines", stream, tmp_path / "whole", hyperparameters=hp, device="cpu",
                          threads=1)
    onepass.train("factorization-machines", stream, tmp_path / "part", hyperparameters=hp, device="cpu",
                  threads=1, max_records=1400, checkpoint_every=200)
    paused = State.load(tmp_path / "part")
    assert paused.meta["records_seen"] == 1400 and "categorical_slots" in paused.tensors
    resumed = onepass.train("factorization-machines", stream, tmp_path / "part", hyperparameters=hp, device="cpu",
                            threads=1, resume=True)
    for name, t in whole.state.tensors.items():
        assert torch.equal(t, resumed.state.tensors[name]), name
    assert resumed.state.meta["categorical"] == whole.state.meta["categorical"]


def test_collisions_are_counted_on_a_small_feature_dim(tmp_path, capsys):
    records = _records(2000)
    stream = _write(records, tmp_path / "clicks.csv", "csv").replace(n_features=41)  # 40 slots for 90 values
    for _ in stream.batches(500):
        pass
    meta = stream.hashing.to_meta()
    used, shared = _slots(records, 40)
    assert (meta["occupied_slots"], meta["collided_slots"]) == (used, shared) and shared > 0
    assert cli.main(["train", "factorization-machines", "--data", str(tmp_path / "clicks.csv"), "--label-column",
                     "y", "--categorical-columns", "user,site", "--feature-dim", "41", "--predictor-type",
                     "binary_classifier", "--num-factors", "2", "--out", str(tmp_path / "run"), "--threads", "1"]) == 0
    assert f"{used} of 40 hash slots used, {shared} shared by two or more values" in capsys.readouterr().out


def test_a_json_object_as_a_categorical_value_names_the_line_or_is_skipped(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"y": 1, "user": "a"}\n{"y": 0, "user": {"id": 2}}\n{"y": 1, "user": 7}\n')
    stream = Stream(str(path), label_column="y", categorical_columns=["user"], n_features=16)
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: categorical column 'user' holds an object"):
        list(stream.batches(10))
    skipping = stream.replace(on_bad_record="skip", max_bad_fraction=0.5)
    batch = next(skipping.batches(10))
    assert batch.y.tolist() == [1, 1] and skipping.bad.counts == {"bad categorical": 1}


def test_a_categorical_column_that_is_not_there_is_named(tmp_path, capsys):
    path = tmp_path / "c.csv"
    path.write_text("y,user\n1,a\n")
    with pytest.raises(UsageError, match="--categorical-columns 'site': no such column in .*c.csv"):
        list(Stream(str(path), label_column="y", categorical_columns=["site"], n_features=16).batches(10))
    assert cli.main(["train", "linear-learner", "--data", str(path), "--label-column", "y", "--predictor-type",
                     "binary_classifier", "--categorical-columns", "user", "--out", str(tmp_path / "run")]) != 0
    assert "give feature_dim" in capsys.readouterr().err


def test_a_sql_value_that_is_neither_text_nor_a_number_names_the_row(tmp_path):
    with sqlite3.connect(tmp_path / "d.db") as db:
        db.execute("CREATE TABLE t (y INTEGER, user BLOB)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (0, b"\x00\x01")])
    stream = Stream(f"sqlite:///{tmp_path / 'd.db'}", query="SELECT * FROM t", label_column="y",
                    categorical_columns=["user"], n_features=16)
    with pytest.raises(DataError, match="row 2: categorical column 'user' holds bytes"):
        list(stream.batches(10))


def test_predict_reads_the_numeric_columns_the_model_was_trained_on(tmp_path, capsys):
    """Hashed rows are always feature_dim wide, so a width check cannot catch a different set of numeric columns:
    the model keeps them, and predict reads those, whatever else the file holds."""
    records = [{**r, "z": i % 7} for i, r in enumerate(_records(600))]
    path = tmp_path / "clicks.csv"
    path.write_text("y,age,z,user,site\n" + "".join(f"{r['y']},{r['age']},{r['z']},{r['user']},{r['site']}\n"
                                                      for r in records))
    onepass.train("factorization-machines", str(path), tmp_path / "run", hyperparameters=FM, device="cpu",
                  threads=1, label_column="y", columns=["age"], categorical_columns=["user", "site"])
    for name, extra in (("plain", []), ("given", ["--columns", "age"])):
        assert cli.main(["predict", str(tmp_path / "run"), "--data", str(path), "--label-column", "y",
                         "--output", str(tmp_path / f"{name}.jsonl"), *extra]) == 0
    assert (tmp_path / "plain.jsonl").read_text() == (tmp_path / "given.jsonl").read_text()
    (tmp_path / "other.csv").write_text("y,user,site\n1,u1,3\n")
    assert cli.main(["predict", str(tmp_path / "run"), "--data", str(tmp_path / "other.csv"), "--label-column",
                     "y"]) == UsageError.exit_code
    assert "other.csv has no column 'age', a numeric feature column of the model" in capsys.readouterr().err


def test_merge_and_finalize_keep_the_columns_and_the_union_of_the_tallies(tmp_path):
    records = _records(2000)
    for i, part in enumerate((records[:1000], records[1000:])):
        _write(part, tmp_path / f"part{i}.csv", "csv")
        onepass.train("factorization-machines", str(tmp_path / f"part{i}.csv"), tmp_path / f"run{i}",
                      hyperparameters={**FM, "feature_dim": 61}, device="cpu", threads=1, label_column="y",
                      categorical_columns=["user", "site"])
    assert cli.main(["merge", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(tmp_path / "merged")]) == 0
    tally = State.load(tmp_path / "merged").meta["categorical"]
    assert (tally["occupied_slots"], tally["collided_slots"]) == _slots(records, 60)
    assert cli.main(["finalize", str(tmp_path / "merged"), "--binary-classifier-model-selection-criteria",
                     "recall_at_target_precision", "--out", str(tmp_path / "chosen.safetensors")]) == 0
    for model in (tmp_path / "merged", tmp_path / "chosen.safetensors"):
        meta = onepass.load_model(model).meta
        assert meta["categorical_columns"] == ["user", "site"]
        assert meta["categorical_layout"] == {"numeric": ["age"], "fields": ["age", "user", "site"]}
