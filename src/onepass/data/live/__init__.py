"""Live streams as sources: Redis Streams, NATS JetStream, Kafka and Amazon Kinesis.

    Stream("redis://127.0.0.1:6379/clicks")      # a Redis stream key; the record in the entry's field `data`
    Stream("nats://127.0.0.1:4222/CLICKS")       # a JetStream stream (every subject of it)
    Stream("kafka://127.0.0.1:9092/clicks")      # every partition of a topic; ?partitions=0,2 for some
    Stream("kinesis://clicks")                   # every shard, followed through splits and merges

A live stream never ends: `train` on one runs until stopped (SIGTERM or SIGINT checkpoint and exit). Its read
position, per partition or shard, is part of every batch's `position`, so the checkpoint holds it and `--resume`
continues at the exact next record with no commit on the broker's side (base.py says how).

This module only parses URLs (sources.py asks it, without a connection); base.py reads, one small module a broker
talks to its client library, which is imported only when such a stream is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ...errors import UsageError

# scheme -> (module, the onepass extra that installs its client, what the URL names)
SCHEMES = {"redis": ("redis_streams", "redis", "stream key"), "nats": ("jetstream", "nats", "stream"),
           "kafka": ("kafka", "kafka", "topic"), "kinesis": ("kinesis", "kinesis", "stream")}
DEFAULT_PORTS = {"redis": 6379, "nats": 4222, "kafka": 9092}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Spec:
    """What a live URL names: the broker (host, port; none for Kinesis), the stream and the URL's options."""

    scheme: str
    host: str | None
    port: int | None
    name: str
    params: dict[str, str] = field(default_factory=dict, compare=False)


def is_live(source) -> bool:
    """Whether `source` is a live stream's URL (redis://, nats://, kafka://, kinesis://)."""
    m = _SCHEME.match(source) if isinstance(source, str) else None
    return bool(m) and m.group(1).lower() in SCHEMES


def parse(url: str) -> Spec:
    """The broker, stream and options a live URL names; a URL without a stream name is refused, naming the form."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    what = SCHEMES[scheme][2]
    if scheme == "kinesis":  # kinesis://STREAM: the endpoint comes from the AWS configuration
        name = unquote((parts.netloc + parts.path).strip("/"))
        host = port = None
    else:
        name = unquote(parts.path.strip("/"))
        host = parts.hostname or "127.0.0.1"
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            raise UsageError(f"{url}: the port is not a number") from None
    if not name or "/" in name:
        form = "kinesis://STREAM" if scheme == "kinesis" else f"{scheme}://HOST:PORT/{what.split()[-1].upper()}"
        raise UsageError(f"{url}: expected {form} (one {what})")
    params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return Spec(scheme, host, port, name, params)
