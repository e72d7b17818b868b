"""Redis Streams (redis-py): `redis://[:PASSWORD@]HOST:PORT/KEY`, the record in one field of each entry.

Position: the last entry ID read (``"<ms>-<seq>"``) and `n`, the index in the stream of the entry after it. Reading
is ``XREAD COUNT n STREAMS key <id>`` (exclusive of `id`), in one transaction with ``XINFO STREAM``, whose
`entries-added` minus `length` is the index of the oldest entry still there (Redis 7; trimming removes the oldest
entries first): when that is past `n`, the entries between were trimmed before they were read, and counted. A
quiet stream is waited on with ``XREAD BLOCK``.
"""

from __future__ import annotations

from typing import Any

import redis

from ...errors import DataError
from .base import MAX_MESSAGES, Broker, Message, Trimmed, server_url


class RedisStream(Broker):
    PARTITION = "stream"
    TRANSIENT = (redis.ConnectionError, redis.TimeoutError)

    def __init__(self, inp, options):
        super().__init__(inp, options)
        self.key = self.spec.name
        self.field = options["stream_field"].encode()
        self.client = redis.Redis.from_url(server_url(inp.connect), socket_timeout=30)
        # XREAD's reply as the server sends it (entries of [id, [field, value, ...]]): redis-py's own callback
        # makes a dict of every entry's fields, a tenth of the read's time with hiredis parsing the reply
        self.client.set_response_callback("XREAD", _raw)
        self.last: str = "0-0"
        self.n: int | None = None  # the index of the next entry; None until the first look at the stream

    def seek(self, positions: dict[str, dict]) -> list[Trimmed]:
        pos = positions.get(self.key) or {}
        self.last, self.n = pos.get("last", "0-0"), pos.get("n")
        try:
            if not self.client.exists(self.key):
                raise DataError(f"no stream {self.key!r} on the server (XADD creates one)", source=self.inp.path,
                                reason="missing")
            if not pos and self.latest:  # after the last entry now there (entries-added: its index + 1)
                info = self.client.xinfo_stream(self.key)
                self.last, self.n = _text(info["last-generated-id"]), int(info.get("entries-added", info["length"]))
                self.started[self.key] = {"last": self.last, "n": self.n}
        except redis.RedisError as e:
            raise DataError(f"cannot reach the server: {e}", source=self.inp.path, reason="unreachable") from None
        return []

    def poll(self, timeout: float) -> list[tuple[str, list[Message], bool]]:
        for attempt in range(2):
            with self.client.pipeline(transaction=True) as pipe:
                pipe.xinfo_stream(self.key)
                pipe.xread({self.key: self.last}, count=MAX_MESSAGES)
                info, got = pipe.execute()
            self._check(info)
            if got:
                entries, field, n = _entries(got), self.field, self.n
                try:
                    messages = [((entry_id, n + k), fields[1] if fields[0] == field else _value(fields, field))
                                for k, (entry_id, fields) in enumerate(entries)]
                except KeyError:
                    entry_id, fields = next((i, f) for i, f in entries if field not in f[::2])
                    raise DataError(f"entry {entry_id.decode()} has no field {field.decode()!r} (its fields: "
                                    f"{', '.join(f.decode(errors='replace') for f in fields[::2])}; choose one with "
                                    "--stream-field)", source=self.inp.path, reason="missing field") from None
                self.last, self.n = messages[-1][0][0].decode(), n + len(messages)
                return [(self.key, messages, False)]
            if attempt == 0:  # nothing new: wait for an entry (then read it in the transaction above)
                if not self.client.xread({self.key: self.last}, count=1, block=max(1, int(timeout * 1000))):
                    return []
        return []

    def _check(self, info: dict[Any, Any]) -> None:
        """Count the entries trimmed between the last one read and the oldest one left."""
        oldest = int(info.get("entries-added", info["length"])) - int(info["length"])
        if self.n is None:  # a fresh start: reading begins at the oldest entry there
            self.n = oldest
            return
        if oldest > self.n and _id(info["first-entry"][0].decode() if info.get("first-entry") else "0-0") > \
                _id(self.last):
            self.trimmed.append(Trimmed(self.key, oldest - self.n, f"stream {self.key} after entry {self.last}"))
            self.n = oldest

    def after(self, partition: str, message_id: tuple[bytes, int]) -> dict[str, Any]:
        return {"last": message_id[0].decode(), "n": message_id[1] + 1}

    def where(self, partition: str, message_id: tuple[bytes, int]) -> str:
        return f"entry {message_id[0].decode()}"

    def close(self) -> None:
        self.client.close()


def _raw(response, **_):
    return response


def _entries(reply) -> list:
    """The entries of an XREAD reply for one stream: RESP3 gives {key: entries}, RESP2 [[key, entries]]."""
    return next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]


def _value(fields: list[bytes], field: bytes) -> bytes:
    """The value of `field` in an entry's [field, value, ...] (KeyError when it has none)."""
    for k in range(0, len(fields) - 1, 2):
        if fields[k] == field:
            return fields[k + 1]
    raise KeyError(field)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def open(inp, options) -> RedisStream:
    return RedisStream(inp, options)
