"""Amazon Kinesis Data Streams (boto3): `kinesis://STREAM`, every shard, followed through splits and merges.

Position: per shard, the last sequence number read, kept as a string (up to 129 digits: never a float or an int64),
and `done` once a closed shard was read to its end. Reading asks `AFTER_SEQUENCE_NUMBER` of the last one read, or
`TRIM_HORIZON` for a shard not read yet. Resharding (B3 of the research notes, as KCL does): a shard that was split
or merged is closed; its records stay until retention, and reading it to the end gives no next iterator. A shard is
read only once its parents (`ParentShardId`, `AdjacentParentShardId`) are done, or gone past retention before this
reader knew them, so each key's records come in order across a split or a merge.

Start at latest: an open shard without a saved position is read `AT_TIMESTAMP` of the moment the reader looked
(kept in the position as `since`, so that a resumed run that read nothing of it yet starts there too); shards
closed by then are taken as done. Under several processes a shard is read by the process whose rank is its number
(``shardId-000000000007``: 7) modulo the processes; a parent read by another process counts as done once closed
(each process trains its own part: order across processes is not kept, every record is read once).

Loss: Kinesis sequence numbers have gaps, so lost records cannot be counted. A saved shard that is no longer listed,
or whose last record read is no longer there (`AT_SEQUENCE_NUMBER` returns a later one), was trimmed past the
position: reported with an unknown count.

The endpoint, region and credentials come the standard way (AWS_* variables, ~/.aws) or from --storage-options:
`endpoint_url`, `region_name`, `aws_access_key_id` (or `key`), `aws_secret_access_key` (or `secret`),
`aws_session_token` (or `token`), `profile`.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import boto3
import botocore.exceptions

from ...errors import DataError, UsageError
from .base import MAX_MESSAGES, Broker, Message, Trimmed

LIST_S = 30.0  # how often the shards are listed again (children appear when a parent closes, listed at once)
EMPTY_WAIT_S = 0.2  # GetRecords allows 5 calls a second per shard: an idle reader asks no more often than that
_ALIASES = {"key": "aws_access_key_id", "secret": "aws_secret_access_key", "token": "aws_session_token"}
_CLIENT = ("endpoint_url", "region_name", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
           "verify", "config")


def client(storage_options: dict[str, Any] | None):
    """A boto3 Kinesis client from --storage-options (or the standard AWS configuration)."""
    options = {_ALIASES.get(k, k): v for k, v in (storage_options or {}).items()}
    options.update(options.pop("client_kwargs", None) or {})
    profile = options.pop("profile", None)
    unknown = set(options) - set(_CLIENT)
    if unknown:
        raise UsageError(f"--storage-options for kinesis://: unknown {', '.join(sorted(unknown))} (known: "
                         f"{', '.join(_CLIENT + tuple(_ALIASES) + ('profile',))})")
    return boto3.session.Session(profile_name=profile).client("kinesis", **options)


class Kinesis(Broker):
    PARTITION = "shard"
    TRANSIENT = (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError,
                 botocore.exceptions.ReadTimeoutError)

    def __init__(self, inp, options):
        super().__init__(inp, options)
        self.stream = self.spec.name
        try:
            self.client = client(inp.storage_options)
        except botocore.exceptions.BotoCoreError as e:
            raise UsageError(f"{inp.path}: {e}") from None
        self.shards: dict[str, dict] = {}
        self.last: dict[str, str] = {}  # shard -> the last sequence number read
        self.since: dict[str, float] = {}  # shard -> the time from which it is read (started at latest)
        self.done: set[str] = set()
        self.iterators: dict[str, str] = {}
        self.listed = 0.0

    def _call(self, name: str, **kwargs):
        try:
            return getattr(self.client, name)(**kwargs)
        except self.client.exceptions.ResourceNotFoundException:
            raise DataError(f"no Kinesis stream {self.stream!r}", source=self.inp.path, reason="missing") from None
        except botocore.exceptions.NoCredentialsError:
            raise DataError("no AWS credentials (AWS_* variables, ~/.aws or --storage-options)",
                            source=self.inp.path, reason="access denied") from None

    def _list(self) -> None:
        shards, token = {}, None
        while True:
            page = self._call("list_shards", **({"NextToken": token} if token else {"StreamName": self.stream}))
            shards.update({s["ShardId"]: s for s in page["Shards"]})
            token = page.get("NextToken")
            if not token:
                break
        self.shards, self.listed = shards, time.monotonic()
        self.done &= set(shards)  # a finished shard gone past retention: its children count it done

    def seek(self, positions: dict[str, dict]) -> list[Trimmed]:
        self._list()
        trims = []
        for shard, pos in positions.items():
            if not pos:
                continue
            if pos.get("done"):
                if shard in self.shards:
                    self.done.add(shard)
                continue
            if shard not in self.shards:
                trims.append(Trimmed(shard, None, f"shard {shard} expired after sequence number {pos.get('last')}"))
                continue
            if "last" in pos:
                self.last[shard] = pos["last"]
                if not self._still_there(shard, pos["last"]):
                    trims.append(Trimmed(shard, None, f"shard {shard} after sequence number {pos['last']}"))
                    self.iterators[shard] = self._call("get_shard_iterator", StreamName=self.stream, ShardId=shard,
                                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            elif "since" in pos:
                self.since[shard] = float(pos["since"])
        self.saved = {s for s, p in positions.items() if p and not p.get("done")}
        rank, world = self.shard
        if not any(self.owns(_number(s)) for s in self.shards):
            raise UsageError(f"{self.inp.path}: {len(self.shards)} shard(s) for {world} processes: process {rank} "
                             f"has none (shard n goes to process n mod {world}); run fewer processes")
        if self.latest:
            now = time.time()
            for shard, info in self.shards.items():
                if positions.get(shard) or not self.owns(_number(shard)):
                    continue
                if "EndingSequenceNumber" in info.get("SequenceNumberRange", {}):  # closed: nothing comes any more
                    self.done.add(shard)
                    self.started[shard] = {"done": True}
                else:
                    self.since[shard] = now
                    self.started[shard] = {"since": now}
        return trims

    def _still_there(self, shard: str, seq: str) -> bool:
        try:
            it = self._call("get_shard_iterator", StreamName=self.stream, ShardId=shard,
                            ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=seq)["ShardIterator"]
        except self.client.exceptions.InvalidArgumentException:
            return False
        got = self._call("get_records", ShardIterator=it, Limit=1)["Records"]
        return not got or got[0]["SequenceNumber"] == seq

    def _readable(self) -> list[str]:
        """Shards to read now: not done, and each parent done or gone (and not one this reader was reading)."""
        def ready(parent: str | None) -> bool:
            if parent is None or parent in self.done:
                return True
            if parent not in self.shards:
                return parent not in self.saved
            return not self.owns(_number(parent)) and "EndingSequenceNumber" in \
                self.shards[parent].get("SequenceNumberRange", {})  # another process's: closed

        return sorted(s for s, info in self.shards.items() if s not in self.done and self.owns(_number(s))
                      and ready(info.get("ParentShardId")) and ready(info.get("AdjacentParentShardId")))

    def poll(self, timeout: float) -> list[tuple[str, list[Message], bool]]:
        if time.monotonic() - self.listed >= LIST_S:
            self._list()
        out, ended = [], False
        for shard in self._readable():
            it = self.iterators.get(shard) or self._iterator(shard)
            try:
                got = self.client.get_records(ShardIterator=it, Limit=MAX_MESSAGES)
            except self.client.exceptions.ExpiredIteratorException:  # 5 minutes old: ask again after `last`
                self.iterators.pop(shard, None)
                continue
            except self.client.exceptions.ProvisionedThroughputExceededException:
                continue
            messages = [(r["SequenceNumber"], r["Data"]) for r in got["Records"]]
            if messages:
                self.last[shard] = messages[-1][0]
            nxt = got.get("NextShardIterator")
            if nxt is None:  # a closed shard read to its end: its children may start
                self.done.add(shard)
                self.iterators.pop(shard, None)
                ended = True
            else:
                self.iterators[shard] = nxt
            if messages or nxt is None:
                out.append((shard, messages, nxt is None))
        if ended:
            self._list()
        if not any(m for _, m, _ in out):
            time.sleep(min(timeout, EMPTY_WAIT_S))
        return out

    def _iterator(self, shard: str) -> str:
        if shard in self.last:
            kind = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": self.last[shard]}
        elif shard in self.since:
            kind = {"ShardIteratorType": "AT_TIMESTAMP",
                    "Timestamp": datetime.fromtimestamp(self.since[shard], timezone.utc)}
        else:
            kind = {"ShardIteratorType": "TRIM_HORIZON"}
        return self._call("get_shard_iterator", StreamName=self.stream, ShardId=shard, **kind)["ShardIterator"]

    def after(self, partition: str, message_id: str) -> dict[str, Any]:
        return {"last": message_id}

    def where(self, partition: str, message_id: str) -> str:
        return f"shard {partition} sequence number {message_id}"


def _number(shard: str) -> int:
    """A shard's number: ``shardId-000000000007`` is 7 (which process reads it)."""
    digits = shard.rsplit("-", 1)[-1]
    return int(digits) if digits.isdigit() else sum(shard.encode())


def open(inp, options) -> Kinesis:
    return Kinesis(inp, options)
