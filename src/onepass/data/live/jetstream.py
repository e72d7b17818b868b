"""NATS JetStream (nats-py): `nats://[USER:PASSWORD@]HOST:PORT/STREAM`, every subject of the stream.

Position: the last stream sequence read. Reading is an ephemeral pull consumer that starts at the next sequence
(`DeliverPolicy.BY_START_SEQUENCE`) and acknowledges nothing (`AckPolicy.NONE`), so the server keeps no state for
onepass and an abandoned consumer goes away by itself (`inactive_threshold`). Stream sequences have no holes but
those of deleted messages, so a message whose sequence is past the next one expected means the ones between were
trimmed (a limit, a purge) before they were read; so does a stream whose first sequence is past it on resume.

nats-py is asyncio only: the reader runs its own event loop, in the thread that reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ...errors import DataError
from .base import MAX_MESSAGES, Broker, Message, Trimmed, server_url

INACTIVE_S = 60.0  # the server drops the consumer of a reader gone this long (a killed trainer leaves one behind)


class JetStream(Broker):
    PARTITION = "stream"
    # a server gone away (restarting): the reader connects again and makes a new consumer at the next sequence
    TRANSIENT = (OSError, nats.errors.ConnectionClosedError, nats.errors.NoServersError,
                 nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError,
                 nats.errors.UnexpectedEOF, nats.errors.NoRespondersError)

    def __init__(self, inp, options):
        super().__init__(inp, options)
        self.stream = self.spec.name
        self.loop = asyncio.new_event_loop()
        self.nc = self.sub = None
        self.next_seq, self.fresh = 1, True

    def _run(self, coro):
        return self.loop.run_until_complete(coro)

    def _connect(self):
        """A connection and the stream's info; a missing stream is a DataError."""
        if self.nc is not None:
            try:
                self._run(self.nc.close())
            except Exception:  # already broken: nothing to close cleanly
                pass
        self.nc = self.sub = None
        self.nc = self._run(nats.connect(server_url(self.inp.connect), connect_timeout=10, allow_reconnect=False))
        self.js = self.nc.jetstream()
        try:
            return self._run(self.js.stream_info(self.stream))
        except nats.js.errors.NotFoundError:
            raise DataError(f"no JetStream stream {self.stream!r} on the server", source=self.inp.path,
                            reason="missing") from None

    def _subscribe(self, info) -> None:
        """An ephemeral consumer from the next sequence to read (a stream trimmed past it is counted first)."""
        first = int(info.state.first_seq)
        if self.fresh:  # nothing read yet: the stream starts where it starts
            self.next_seq = max(self.next_seq, first)
        elif first > self.next_seq:
            self.trimmed.append(Trimmed(self.stream, first - self.next_seq,
                                        f"stream {self.stream} sequences {self.next_seq}..{first - 1}"))
            self.next_seq = first
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.next_seq,
                                ack_policy=AckPolicy.NONE, inactive_threshold=INACTIVE_S)
        consumer = self._run(self.js.add_consumer(self.stream, config))
        self.sub = self._run(self.js.pull_subscribe_bind(consumer.name, self.stream))

    def seek(self, positions: dict[str, dict]) -> list[Trimmed]:
        pos = positions.get(self.stream) or {}
        self.next_seq, self.fresh = (int(pos["last"]) + 1, False) if "last" in pos else (1, True)
        try:
            info = self._connect()
        except self.TRANSIENT as e:
            raise DataError(f"cannot reach the server: {type(e).__name__} {e}", source=self.inp.path,
                            reason="unreachable") from None
        if "last" not in pos and self.latest:  # after the last message now there
            self.next_seq, self.fresh = int(info.state.last_seq) + 1, False
            self.started[self.stream] = {"last": int(info.state.last_seq)}
        self._subscribe(info)
        trims, self.trimmed = self.trimmed, []
        return trims

    def poll(self, timeout: float) -> list[tuple[str, list[Message], bool]]:
        if self.sub is None or self.nc.is_closed:
            self._subscribe(self._connect())  # raises a TRANSIENT error while the server is away
        try:
            msgs = self._run(self.sub.fetch(MAX_MESSAGES, timeout=timeout))
        except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nothing new (nats-py raises either, by path)
            return []
        except self.TRANSIENT:
            self.sub = None
            raise
        messages = []
        for m in msgs:
            seq = int(m.metadata.sequence.stream)
            if seq > self.next_seq:
                self.trimmed.append(Trimmed(self.stream, seq - self.next_seq,
                                            f"stream {self.stream} sequences {self.next_seq}..{seq - 1}"))
            self.next_seq, self.fresh = seq + 1, False
            messages.append((seq, m.data))
        return [(self.stream, messages, False)] if messages else []

    def after(self, partition: str, message_id: int) -> dict[str, Any]:
        return {"last": message_id}

    def where(self, partition: str, message_id: int) -> str:
        return f"sequence {message_id}"

    def close(self) -> None:
        try:
            if self.nc is not None:
                self._run(self.nc.close())
        finally:
            self.loop.close()


def open(inp, options) -> JetStream:
    return JetStream(inp, options)
