"""Sources: object stores (an S3-compatible server on loopback, a real client), HTTP with range reads, .zst, SQL
queries (SQLite, and a real PostgreSQL server), FIFOs and SageMaker's pipe mode."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import run_cli
from test_libsvm import _Crash  # stops training as a crash would

import onepass.data.csv as csv_reader
from onepass.data import Stream
from onepass.data.sources import resolve
from onepass.errors import DataError, UsageError
from onepass.testing import gaussian_mixture
from onepass.train import train

KM = {"k": 3, "mini_batch_size": 200}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def csv_text(x: np.ndarray) -> bytes:
    out = io.StringIO()
    np.savetxt(out, x, delimiter=",", fmt="%.7g")
    return out.getvalue().encode()


def batches(stream: Stream, n: int = 97, start=None) -> list[tuple]:
    return [(b.x.to_dense().numpy() if b.x.is_sparse_csr else b.x.numpy(), None if b.y is None else b.y.numpy(),
             b.position) for b in stream.batches(n, start=start, prefetch=0)]


def same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for (xa, ya, _), (xb, yb, _) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        if ya is not None or yb is not None:
            np.testing.assert_array_equal(ya, yb)


def same_state(a, b) -> None:
    assert a.meta["records_seen"] == b.meta["records_seen"]
    for name, t in a.tensors.items():
        torch.testing.assert_close(b.tensors[name], t, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- S3 (moto server)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server in its own process on loopback, with IAM checks on: only the key made here gets in."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    # the first 3 requests (making the IAM user, its policy and its key) go unchecked, the rest are authenticated
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        kw = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **kw)
        iam.create_user(UserName="onepass")
        iam.put_user_policy(UserName="onepass", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="onepass")["AccessKey"]
        client = boto3.client("s3", aws_access_key_id=key["AccessKeyId"],
                              aws_secret_access_key=key["SecretAccessKey"], **kw)
        client.create_bucket(Bucket="onepass-data")
        no_aws = tmp_path_factory.mktemp("aws")
        yield {"endpoint": endpoint, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"], "client": client,
               "env": {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                       "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_CONFIG_FILE": str(no_aws / "config"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(no_aws / "credentials")}}
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def aws(s3, monkeypatch):
    """The standard AWS environment (endpoint and credentials) pointing at the test server."""
    for k, v in s3["env"].items():
        monkeypatch.setenv(k, v)
    return s3


def upload(s3, prefix: str, files: dict[str, bytes], local: Path) -> None:
    """Each file to s3://onepass-data/PREFIX/NAME and to LOCAL/NAME."""
    for name, data in files.items():
        s3["client"].put_object(Bucket="onepass-data", Key=f"{prefix}/{name}", Body=data)
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)


def test_s3_glob_trains_kmeans_as_local_copies_do(aws, tmp_path):
    parts = {f"part-{i}.csv": csv_text(gaussian_mixture(700 + 50 * i, i)) for i in range(3)}
    upload(aws, "km", {**parts, "notes.txt.gz": b"", "sub/part-9.csv": b"1,2\n"}, tmp_path / "local")
    inputs = resolve("s3://onepass-data/km/*.csv")
    assert [i.path for i in inputs] == [f"s3://onepass-data/km/part-{i}.csv" for i in range(3)]
    assert [i.size for i in inputs] == [len(parts[f"part-{i}.csv"]) for i in range(3)]
    assert all(i.seekable and i.remote for i in inputs)
    remote = train("kmeans", "s3://onepass-data/km/*.csv", tmp_path / "remote", hyperparameters=KM, epochs=2)
    local = train("kmeans", str(tmp_path / "local" / "part-*.csv"), tmp_path / "localrun", hyperparameters=KM,
                  epochs=2)
    same_state(local.state, remote.state)
    # a prefix is a folder: every object under it, in order, names starting with _ or . left out
    upload(aws, "folder", {"a.csv": b"1,2\n", "b/c.csv": b"3,4\n", "_SUCCESS": b""}, tmp_path / "f")
    assert [i.path for i in resolve("s3://onepass-data/folder/")] == [
        "s3://onepass-data/folder/a.csv", "s3://onepass-data/folder/b/c.csv"]


def test_s3_resume_mid_file_equals_an_uninterrupted_run(aws, tmp_path, monkeypatch):
    monkeypatch.setattr(csv_reader, "BLOCK_SIZE", 4096)  # many blocks: the checkpoint lies inside the file
    upload(aws, "resume", {"x.csv": csv_text(gaussian_mixture(3000, 5))}, tmp_path)
    url = "s3://onepass-data/resume/x.csv"
    full = batches(Stream(url))
    k = len(full) // 2
    assert 0 < full[k][2]["offset"] < resolve(url)[0].size
    same(batches(Stream(url), start=json.loads(json.dumps(full[k][2]))), full[k + 1:])
    whole = train("kmeans", url, tmp_path / "full", hyperparameters=KM)
    with pytest.raises(RuntimeError, match="crash"):
        train("kmeans", url, tmp_path / "part", hyperparameters=KM, checkpoint_every=1000, progress=_Crash(1900))
    resumed = train("kmeans", url, tmp_path / "part", resume=True)
    same_state(whole.state, resumed.state)


def test_s3_parquet_libsvm_and_gzip_read_as_local_files(aws, tmp_path):
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    pq.write_table(pa.table({"a": rng.normal(size=500), "b": rng.normal(size=500), "y": rng.integers(0, 3, 500)}),
                   buf, row_group_size=120)
    svm = b"".join(b"%d 1:%.3f 4:%.3f\n" % (i % 2, rng.normal(), rng.normal()) for i in range(300))
    x = csv_text(gaussian_mixture(400, 1))
    upload(aws, "fmt", {"t.parquet": buf.getvalue(), "t.libsvm": svm, "t.csv.gz": gzip.compress(x)}, tmp_path)
    url = "s3://onepass-data/fmt/"
    same(batches(Stream(url + "t.parquet", label_column="y")), batches(Stream(tmp_path / "t.parquet", label_column="y")))
    pq_full = batches(Stream(url + "t.parquet", label_column="y"))
    same(batches(Stream(url + "t.parquet", label_column="y"), start=pq_full[2][2]), pq_full[3:])
    same(batches(Stream(url + "t.libsvm", n_features=4)), batches(Stream(tmp_path / "t.libsvm", n_features=4)))
    gz = Stream(url + "t.csv.gz")
    assert not gz.seekable and gz.rereadable
    same(batches(gz), batches(Stream(tmp_path / "t.csv.gz")))


def test_s3_missing_object_and_wrong_credentials_name_the_url(aws, tmp_path):
    upload(aws, "err", {"x.csv": b"1,2\n"}, tmp_path)
    with pytest.raises(DataError, match=r"s3://onepass-data/err/nope\.csv.*no such object"):
        Stream("s3://onepass-data/err/nope.csv")
    with pytest.raises(DataError, match=r"s3://onepass-data/err/\*\.parquet.*no object matches"):
        Stream("s3://onepass-data/err/*.parquet")
    wrong = {"key": "AKIANOTAKEY", "secret": "nope", "endpoint_url": aws["endpoint"]}
    with pytest.raises(DataError, match=r"s3://onepass-data/err/x\.csv.*access denied.*credentials"):
        Stream("s3://onepass-data/err/x.csv", storage_options=wrong)


def test_cli_storage_options_reach_s3_and_stay_out_of_the_checkpoint(s3, tmp_path, monkeypatch):
    upload(s3, "cli", {"x.csv": csv_text(gaussian_mixture(600, 2))}, tmp_path)
    options = json.dumps({"endpoint_url": s3["endpoint"], "key": s3["key"], "secret": s3["secret"]})
    for k in [k for k in os.environ if k.startswith("AWS_")]:  # the endpoint and key come from the option only
        monkeypatch.delenv(k)
    for k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(k, s3["env"][k])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    out = tmp_path / "run"
    r = run_cli("train", "kmeans", "--data", "s3://onepass-data/cli/", "--k", "3", "--out", str(out),
                "--storage-options", options, "--quiet", check=True)
    assert "600 records" in r.stdout
    for name in ("state.safetensors", "metrics.jsonl"):
        assert s3["secret"].encode() not in (out / name).read_bytes()
    bad = run_cli("train", "kmeans", "--data", "s3://onepass-data/cli/", "--k", "3", "--out", str(out),
                  "--storage-options", "{not json", "--overwrite")
    assert bad.returncode == 2 and "--storage-options" in bad.stderr


# ------------------------------------------------------------------------------------------- HTTP with ranges


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A file server that honours single `Range: bytes=a-b` requests, as object stores and CDNs do."""

    def log_message(self, *args):
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        data = path.read_bytes()
        spec = self.headers.get("Range")
        if spec and spec.startswith("bytes="):
            a, _, b = spec[6:].partition("-")
            a, b = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
            data = data[a:b + 1]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(data)


@contextmanager
def http_server(root: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a: _RangeHandler(*a, directory=str(root)))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_url_streams_and_resumes_by_range_reads(tmp_path, monkeypatch):
    pytest.importorskip("aiohttp")
    monkeypatch.setattr(csv_reader, "BLOCK_SIZE", 2048)
    (tmp_path / "x.csv").write_bytes(csv_text(gaussian_mixture(1500, 4)))
    with http_server(tmp_path) as base:
        url = f"{base}/x.csv"
        stream = Stream(url)
        assert stream.seekable and stream.total_bytes == (tmp_path / "x.csv").stat().st_size
        full = batches(stream)
        same(full, batches(Stream(tmp_path / "x.csv")))
        same(batches(Stream(url), start=full[7][2]), full[8:])
        with pytest.raises(DataError, match=r"/missing\.csv.*no such object"):
            Stream(f"{base}/missing.csv")


# ------------------------------------------------------------------------------------------- zstandard


def test_zst_files_read_like_plain_ones_and_truncation_is_an_error(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    data = csv_text(gaussian_mixture(2000, 6))
    c = zstandard.ZstdCompressor()
    path = tmp_path / "x.csv.zst"
    path.write_bytes(c.compress(data[:5000]) + c.compress(data[5000:]))  # two frames
    stream = Stream(path)
    assert stream.format == "csv" and not stream.seekable
    (tmp_path / "x.csv").write_bytes(data)
    same(batches(stream), batches(Stream(tmp_path / "x.csv")))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="truncated|ends early"):
        batches(Stream(path))


# ------------------------------------------------------------------------------------------- SQL: SQLite


def make_db(path: Path, rows: list[tuple], columns: str = "a REAL, b REAL, label INTEGER") -> str:
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE t ({columns})")
        db.executemany(f"INSERT INTO t VALUES ({','.join('?' * len(rows[0]))})", rows)
    db.close()
    return f"sqlite:///{path}"


def test_sqlite_query_reads_features_and_label_by_name(tmp_path, monkeypatch):
    import onepass.data.sql as sql_reader
    monkeypatch.setattr(sql_reader, "FETCH_ROWS", 64)  # many fetches
    x = gaussian_mixture(500, 3, d=2)
    url = make_db(tmp_path / "d.db", [(float(a), float(b), i % 3) for i, (a, b) in enumerate(x)])
    stream = Stream(url, query="SELECT a, label, b FROM t ORDER BY rowid", label_column="label")
    assert not stream.seekable and stream.rereadable and stream.format == "sql"
    got = batches(stream)
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), x)
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), np.arange(500) % 3)
    model = train("kmeans", url, tmp_path / "km", query="SELECT a, b FROM t", hyperparameters=KM, epochs=2)
    assert model.state.meta["records_seen"] == 1000 and model.state.meta["run"]["query"] == "SELECT a, b FROM t"


def test_sqlite_null_text_and_bad_queries_are_named(tmp_path):
    url = make_db(tmp_path / "d.db", [(1.0, 2.0, 0), (3.0, None, 1), (5.0, 6.0, 0)])
    with pytest.raises(DataError, match=r"d\.db, row 2: column 'b' is NULL"):
        batches(Stream(url, query="SELECT a, b FROM t ORDER BY rowid"))
    with pytest.raises(DataError, match=r"row 1: column 'x' is str 'abc', not a number"):
        batches(Stream(url, query="SELECT a, 'abc' AS x FROM t"))
    with pytest.raises(DataError, match="the query failed.*no such table"):
        batches(Stream(url, query="SELECT * FROM nope"))
    with pytest.raises(DataError, match="no such SQLite database file"):
        batches(Stream("sqlite:///" + str(tmp_path / "none.db"), query="SELECT 1"))
    with pytest.raises(UsageError, match="needs --query"):
        Stream("sqlite:///" + str(tmp_path / "d.db"))
    with pytest.raises(UsageError, match="cannot choose columns"):
        Stream(url, query="SELECT a FROM t", columns=["a"])


def test_cli_query_train_and_resume_warns_what_was_not_replayed(tmp_path):
    x = gaussian_mixture(3000, 8, d=3)
    url = make_db(tmp_path / "d.db", [tuple(map(float, r)) for r in x], "a REAL, b REAL, c REAL")
    out = tmp_path / "run"
    r = run_cli("train", "kmeans", "--data", url, "--query", "SELECT a, b, c FROM t", "--k", "3", "--out", str(out),
                "--mini-batch-size", "100", "--quiet", check=True)
    assert "3,000 records" in r.stdout
    with pytest.raises(RuntimeError, match="crash"):
        train("kmeans", url, tmp_path / "part", query="SELECT a, b, c FROM t", hyperparameters=KM,
              checkpoint_every=1000, progress=_Crash(1500))
    r = run_cli("train", "kmeans", "--data", url, "--out", str(tmp_path / "part"), "--resume", "--quiet", check=True)
    assert "cannot seek: the 1,000 records of epoch 1 read before the checkpoint cannot be skipped" in r.stderr
    warning = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert any(e["event"] == "warning" and "cannot seek" in e["message"] for e in warning)


# ------------------------------------------------------------------------------------------- SQL: PostgreSQL


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server from the Debian package, on a temporary folder and a loopback port."""
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="onepass-pg-"))
    demote = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as nobody
        user = pwd.getpwnam("nobody")
        os.chown(root, user.pw_uid, user.pw_gid)

        def demote():
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
    port = free_port()
    data = root / "data"

    def pg(*args: str) -> None:
        subprocess.run([str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True, preexec_fn=demote,
                       cwd=root, timeout=60)
    try:
        pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        pg("pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-o",
           f"-h 127.0.0.1 -p {port} -k {root} -F", "start")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            pg("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_query_streams_through_a_server_side_cursor(postgres, tmp_path, monkeypatch):
    import sqlalchemy

    import onepass.data.sql as sql_reader
    monkeypatch.setattr(sql_reader, "FETCH_ROWS", 100)
    x = gaussian_mixture(1000, 9, d=2)
    engine = sqlalchemy.create_engine(postgres)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS pts")
        conn.exec_driver_sql("CREATE TABLE pts (id int, a double precision, b numeric, w real, note text)")
        conn.execute(sqlalchemy.text("INSERT INTO pts VALUES (:id, :a, :b, :w, :note)"),
                     [{"id": i, "a": float(r[0]), "b": float(r[1]), "w": 1.0 + i % 2, "note": "n"}
                      for i, r in enumerate(x)])
    engine.dispose()
    query = "SELECT a, b::float8 AS b, w, id % 3 AS label FROM pts ORDER BY id"
    got = batches(Stream(postgres, query=query, label_column="label", weight_column="w"))
    assert sum(len(g[0]) for g in got) == 1000
    np.testing.assert_allclose(np.concatenate([g[0] for g in got]), x, rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), np.arange(1000) % 3)
    # NUMERIC arrives as Decimal: read as a number; text is refused naming the row
    dec = batches(Stream(postgres, query="SELECT a, b FROM pts ORDER BY id"))
    np.testing.assert_allclose(np.concatenate([g[0] for g in dec]), x, rtol=1e-6)
    with pytest.raises(DataError, match=r"row 1: column 'note' is str 'n', not a number"):
        batches(Stream(postgres, query="SELECT a, note FROM pts ORDER BY id"))
    with pytest.raises(DataError, match=r"postgres.*the query failed.*nope"):
        batches(Stream(postgres, query="SELECT * FROM nope"))
    secret = postgres.replace("postgres@", "postgres:hunter2@")  # trust auth ignores it; it must never be shown
    result = train("kmeans", secret, tmp_path / "km", query="SELECT a, b FROM pts", hyperparameters=KM)
    assert result.state.meta["records_seen"] == 1000
    assert b"hunter2" not in (tmp_path / "km" / "metrics.jsonl").read_bytes()
    assert b"hunter2" not in (tmp_path / "km" / "state.safetensors").read_bytes()


# ------------------------------------------------------------------------------------------- FIFOs, pipe mode


def feed(path: Path, data: bytes) -> threading.Thread:
    """A writer thread: opens the FIFO (waiting for the reader), writes, closes."""
    def write():
        with open(path, "wb") as f:
            f.write(data)
    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


def test_fifo_is_a_one_pass_input(tmp_path):
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    [inp] = resolve(str(fifo))
    assert not inp.seekable and not inp.rereadable and inp.size is None
    data = csv_text(gaussian_mixture(800, 1))
    feed(fifo, data)
    result = train("kmeans", fifo, tmp_path / "km", hyperparameters=KM)
    assert result.state.meta["records_seen"] == 800
    with pytest.raises(UsageError, match="can be read once"):
        train("kmeans", fifo, tmp_path / "km2", hyperparameters=KM, epochs=2)


def test_sagemaker_pipe_mode_reads_one_fifo_per_epoch(tmp_path):
    x0, x1 = gaussian_mixture(900, 11), gaussian_mixture(700, 12)
    channel = tmp_path / "ch" / "train"
    channel.parent.mkdir()
    for n, x in enumerate((x0, x1)):
        os.mkfifo(f"{channel}_{n}")
        feed(Path(f"{channel}_{n}"), csv_text(x))
    stream = Stream(channel)
    assert stream.format == "csv" and not stream.seekable and stream.rereadable
    first, second = batches(stream), batches(stream)  # each pass opens the next FIFO
    np.testing.assert_allclose(np.concatenate([b[0] for b in first]), x0, rtol=1e-6)  # as written, 7 digits
    np.testing.assert_allclose(np.concatenate([b[0] for b in second]), x1, rtol=1e-6)
    assert second[0][2]["path"] == f"{channel}_1"
    with pytest.raises(DataError, match="pass 2 has no FIFO"):
        stream._channels[0].in_pass(2, wait=0.2)

    channel = tmp_path / "train"  # the trainer: two epochs, two FIFOs
    for n, x in enumerate((x0, x1)):
        os.mkfifo(f"{channel}_{n}")
        feed(Path(f"{channel}_{n}"), csv_text(x))
    piped = train("kmeans", channel, tmp_path / "piped", hyperparameters=KM, epochs=2)
    assert piped.state.meta["records_seen"] == 1600
