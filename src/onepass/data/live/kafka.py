"""Kafka (confluent-kafka): `kafka://HOST:PORT/TOPIC`, every partition, or `?partitions=0,2` for some.

Position: the next offset of each partition. The consumer is assigned its partitions at those offsets (`assign`, no
`subscribe`): it never joins a group and never commits (confluent-kafka wants a `group.id` all the same; a random
one is given). Offsets count a partition's records, so a partition whose low watermark (the oldest offset left) is
past the saved offset lost the records between; `auto.offset.reset=error` makes a fetch there an error instead of a
silent jump, which is counted the same way. Partitions added to the topic later are read from their start.

Under several processes a partition is read by the process whose rank is its number modulo the processes
(base.py: Sharing); a process left without a partition is refused, naming how many the topic has.

Other librdkafka settings (`security.protocol`, `sasl.*`) come from --storage-options as a JSON object.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from ...errors import DataError, UsageError
from .base import MAX_MESSAGES, Broker, Message, Trimmed

METADATA_S = 30.0  # how often the topic's partitions are listed again (new partitions are read from their start)
QUEUED_KIB = 16 * 1024  # librdkafka's read-ahead per partition (its default, 64 MiB, would dwarf the batches)


class Kafka(Broker):
    PARTITION = "partition"

    def __init__(self, inp, options):
        super().__init__(inp, options)
        self.topic = self.spec.name
        chosen = self.spec.params.get("partitions")
        try:
            self.chosen = None if not chosen else sorted({int(p) for p in chosen.split(",")})
        except ValueError:
            raise UsageError(f"{inp.path}: ?partitions= takes partition numbers, e.g. ?partitions=0,2") from None
        config = {"bootstrap.servers": f"{self.spec.host}:{self.spec.port}", "group.id": f"onepass-{uuid.uuid4()}",
                  "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "error",
                  "enable.partition.eof": False, "queued.max.messages.kbytes": QUEUED_KIB,
                  "log.connection.close": False,
                  **(inp.storage_options or {})}
        try:
            self.consumer = Consumer(config)
        except KafkaException as e:
            raise UsageError(f"{inp.path}: {e}") from None
        self.assigned: dict[int, int] = {}  # partition -> the next offset to read
        self.listed = 0.0

    def _partitions(self) -> list[int]:
        try:
            topic = self.consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        except KafkaException as e:
            raise DataError(f"cannot reach the broker: {e}", source=self.inp.path, reason="unreachable") from None
        if topic is None or topic.error is not None or not topic.partitions:
            raise DataError(f"no topic {self.topic!r} on the broker" + (f" ({topic.error})" if topic and topic.error
                                                                        else ""), source=self.inp.path,
                            reason="missing")
        found = sorted(topic.partitions)
        if self.chosen is not None:
            missing = [p for p in self.chosen if p not in found]
            if missing:
                raise UsageError(f"{self.inp.path}: the topic has no partition {missing[0]} (it has 0..{found[-1]})")
            found = self.chosen
        self.listed = time.monotonic()
        mine = [p for p in found if self.owns(p)]
        if not mine:
            rank, world = self.shard
            raise UsageError(f"{self.inp.path}: {len(found)} partition(s) ({', '.join(map(str, found))}) for {world} "
                             f"processes: process {rank} has none (partition p goes to process p mod {world}); "
                             "run fewer processes or add partitions")
        return mine

    def seek(self, positions: dict[str, dict]) -> list[Trimmed]:
        trims = []
        for p in self._partitions():
            pos = positions.get(str(p)) or {}
            start = int(pos.get("next", 0))
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            if not pos and self.latest:  # only what comes from now on
                start = high
                self.started[str(p)] = {"next": high}
            elif low > start:
                trims.append(self._trimmed(p, start, low))
                start = low
            self.assigned[p] = start
        self.consumer.assign([TopicPartition(self.topic, p, o if o else OFFSET_BEGINNING)
                              for p, o in self.assigned.items()])
        return trims

    def _trimmed(self, p: int, start: int, low: int) -> Trimmed:
        return Trimmed(str(p), low - start, f"partition {p} offsets {start}..{low - 1}")

    def poll(self, timeout: float) -> list[tuple[str, list[Message], bool]]:
        if time.monotonic() - self.listed >= METADATA_S:
            new = [p for p in self._partitions() if p not in self.assigned]
            if new:
                self.assigned.update({p: 0 for p in new})
                self.consumer.incremental_assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in new])
        by_partition: dict[int, list[Message]] = {}
        for m in self.consumer.consume(MAX_MESSAGES, timeout=timeout):
            error = m.error()
            if error is not None:
                self._failed(m, error)
                continue
            p = m.partition()
            if p not in by_partition:
                by_partition[p] = []
            by_partition[p].append((m.offset(), m.value() or b""))  # a tombstone (no value): no record
        for p, messages in by_partition.items():
            self.assigned[p] = messages[-1][0] + 1
        return [(str(p), messages, False) for p, messages in by_partition.items()]

    def _failed(self, m, error: KafkaError) -> None:
        p = m.partition()
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.code() == KafkaError.OFFSET_OUT_OF_RANGE and p is not None:  # retention deleted the next offset
            low, _ = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            start = self.assigned.get(p, 0)
            self.trimmed.append(self._trimmed(p, start, low))
            self.assigned[p] = low
            self.consumer.seek(TopicPartition(self.topic, p, low))
            return
        if not error.fatal() and (p is None or error.retriable()):
            return  # a lost connection and the like: librdkafka reconnects and fetches again
        raise DataError(f"the broker failed: {error.str()}", source=self.inp.path + (
            f" partition {p}" if p is not None else ""), reason="broker error")

    def after(self, partition: str, message_id: int) -> dict[str, Any]:
        return {"next": message_id + 1}

    def where(self, partition: str, message_id: int) -> str:
        return f"partition {partition} offset {message_id}"

    def close(self) -> None:
        self.consumer.close()


def open(inp, options) -> Kafka:
    return Kafka(inp, options)
