"""The progress line on a terminal, and metrics as JSON lines in the output folder."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from ._files import to_jsonable


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Records/s, records so far, elapsed and ETA (when the size is known), redrawn at most 4 times a second.

    Quiet unless `stream` is a terminal (or `enabled` says otherwise).
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self.last = 0.0
        self.records0 = None

    def update(self, records: int, fraction: float | None, epoch: int, epochs: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        if self.records0 is None:
            self.records0 = records
        elapsed = now - self.start
        rate = (records - self.records0) / elapsed if elapsed > 0 else 0.0
        line = f"{records:,} records  {rate:,.0f} rec/s  elapsed {_hms(elapsed)}"
        if epochs > 1:
            line += f"  epoch {epoch + 1}/{epochs}"
        if fraction:
            done = (epoch + fraction) / epochs
            first = getattr(self, "_first_done", None)
            if first is None:
                self._first_done = first = done
            if done > first:
                line += f"  {100 * done:.0f}%  ETA {_hms(elapsed * (1 - done) / (done - first))}"
        self.stream.write("\r" + line.ljust(78))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.last:
            self.stream.write("\n")
            self.stream.flush()


class Metrics:
    """Appends one JSON object per event to `metrics.jsonl`, then hands it to `on_event` when one is given."""

    def __init__(self, path: Path | None, on_event: Callable[[dict[str, Any]], Any] | None = None):
        self.path = path
        self.on_event = on_event
        self.start = time.time()

    def log(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": round(time.time(), 3), **to_jsonable(fields)}
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.on_event is not None:
            self.on_event(record)
        return record
