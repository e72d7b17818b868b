"""Publishing models while training goes on: `train(..., publish_every="60s")` or `--publish-every 10000`.

Every T seconds or N records (at a batch boundary, and only when records came since the last one) the trainer
finalizes the state and publishes the model: first as a version of its own in the run folder's `models/`, named by
the time and the records seen (``model-20261206T021530Z-000000120000.safetensors``, sortable by either), written
atomically; then as `model.safetensors`, a hard link to that version put in place by one rename, which
`onepass serve RUN` reloads within half a second (serving/models.py). A server never sees a half-written file, and
the last `KEEP` versions stay for a look back or a roll back. Records seen count across resumed runs (they are in
the state), so versions order across restarts as they do within one run.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from .algorithms.base import Model
from .errors import UsageError
from .state import MODEL_FILE

KEEP = 5  # published versions kept in models/ (the newest; older ones are removed)
MODELS_DIR = "models"
_EVERY = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(s|m|h|min|sec)?\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_every(value: str | int | float | None) -> tuple[float | None, int | None]:
    """(seconds, records) from ``"60s"``, ``"5m"``, ``"1h"`` (a time) or ``"10000"`` / 10000 (records)."""
    if value is None:
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        records, seconds = value, None
    else:
        m = _EVERY.match(str(value))
        if not m:
            raise UsageError(f"--publish-every {value!r}: expected a time (60s, 5m, 1h) or a number of records")
        if m.group(2):
            records, seconds = None, float(m.group(1)) * _UNIT_S[m.group(2).lower()]
        elif "." in m.group(1):
            raise UsageError(f"--publish-every {value!r}: records are a whole number; a time takes a unit (60s)")
        else:
            records, seconds = int(m.group(1)), None
    if (records is not None and records < 1) or (seconds is not None and seconds <= 0):
        raise UsageError(f"--publish-every {value!r} must be more than zero")
    return seconds, records


class Publisher:
    """Decides when a model is due and publishes it into the run folder `out`."""

    def __init__(self, out: Path, every: str | int | float, records_seen: int = 0, keep: int = KEEP):
        self.out, self.keep = Path(out), keep
        self.seconds, self.records = parse_every(every)
        self.last_time, self.last_records = time.monotonic(), records_seen

    def due(self, records_seen: int) -> bool:
        if records_seen <= self.last_records:
            return False
        if self.records is not None:
            return records_seen - self.last_records >= self.records
        return time.monotonic() - self.last_time >= self.seconds

    def publish(self, model: Model, records_seen: int) -> Path:
        """Write `model` as a new version and as the run folder's model.safetensors; the path of the version."""
        now = datetime.now(timezone.utc)
        folder = self.out / MODELS_DIR
        version = folder / f"model-{now:%Y%m%dT%H%M%S}Z-{records_seen:012d}.safetensors"
        model.meta["published"] = {"time": now.isoformat(timespec="seconds"), "records_seen": records_seen}
        model.save(version)  # atomic: a temporary file, fsync, rename
        tmp = self.out / f".{MODEL_FILE}.publish.tmp"
        tmp.unlink(missing_ok=True)
        os.link(version, tmp)
        os.replace(tmp, self.out / MODEL_FILE)  # the server sees the old model or the new one, never a mix
        for old in sorted(folder.glob("model-*.safetensors"))[:-self.keep]:
            old.unlink(missing_ok=True)
        self.last_time, self.last_records = time.monotonic(), records_seen
        return version
