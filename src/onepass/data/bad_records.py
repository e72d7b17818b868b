"""Bad records: fail at the first (the default), or skip them, count them by reason and stop past a fraction.

Readers get a `BadRecords` only under ``on_bad_record="skip"`` (under ``fail`` they raise as they always did, so the
fast paths are untouched). A reader whose vectorized checks refuse a block reads it again record by record and
attaches each bad record's DataError to the chunk of good records as ``(k, error)``: `k` good records of the chunk
come before it. The batcher counts them in stream order; a batch's position says how many
skipped records after its restart offset were counted already (``bad_skip``), so a resumed run, which reads from
that offset again and meets the same bad records in the same order, leaves those out and its totals equal an
uninterrupted run's.

Counts belong to the run: the batcher puts a snapshot in every batch, the trainer keeps the latest in the state's
meta (``bad_records``) and gives it back to the stream on resume. Every epoch that reads a bad record counts it.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import DataError, UsageError

POLICIES = ("fail", "skip")
DEFAULT_SKIP_FRACTION = 0.01  # with skip: more than 1 % bad records is more likely a wrong format or layout
MIN_RECORDS = 1000  # the fraction is checked once this many records were read (and at the end of every pass)
EXAMPLES = 5


def resolve(policy: str | None, max_fraction: float | None) -> tuple[str, float]:
    """The policy and the largest fraction of bad records allowed (0 under fail, where any bad record stops)."""
    policy = policy or "fail"
    if policy not in POLICIES:
        raise UsageError(f"--on-bad-record {policy!r}: valid values: {', '.join(POLICIES)}")
    if policy == "fail":
        if max_fraction:
            raise UsageError("--max-bad-fraction needs --on-bad-record skip (fail stops at the first bad record)")
        return policy, 0.0
    fraction = DEFAULT_SKIP_FRACTION if max_fraction is None else float(max_fraction)
    if not 0 <= fraction <= 1:
        raise UsageError(f"--max-bad-fraction {max_fraction}: give a fraction between 0 and 1")
    return policy, fraction


class BadRecords:
    """The skip policy's running tally of one stream: records read, bad records by reason, the first examples."""

    def __init__(self, max_fraction: float = DEFAULT_SKIP_FRACTION, source: str = ""):
        self.max_fraction, self.source = max_fraction, source
        self.records = 0  # good records handed on
        self.skipped = 0
        self.counts: dict[str, int] = {}
        self.examples: list[dict[str, Any]] = []

    def add(self, error: DataError) -> None:
        """Count one skipped record (the batcher calls this in stream order)."""
        self.skipped += 1
        reason = error.reason or "bad record"
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < EXAMPLES:
            example = {"source": error.source, "reason": reason, "message": str(error)}
            example.update({k: v for k, v in (("line", error.line), ("row", error.row)) if v is not None})
            self.examples.append(example)

    @property
    def seen(self) -> int:
        return self.records + self.skipped

    def check(self, at_end: bool = False) -> None:
        """Raise a DataError when more than `max_fraction` of the records read were bad (after MIN_RECORDS)."""
        if self.skipped and (at_end or self.seen >= MIN_RECORDS) and self.skipped > self.max_fraction * self.seen:
            raise DataError(f"too many bad records: {self.summary()}; more than --max-bad-fraction "
                            f"{self.max_fraction:g} (raise it, or fix the data)", source=self.source or None,
                            reason="too many bad records")

    def summary(self) -> str:
        """One line: 'skipped 12 bad records of 1,000,000 (0.0012 %): 10 not a number, ...; first: ...'."""
        by_reason = ", ".join(f"{n:,} {r}" for r, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        text = (f"skipped {self.skipped:,} bad record{'s' * (self.skipped != 1)} of {self.seen:,} "
                f"({100 * self.skipped / max(1, self.seen):.4g} %)")
        if by_reason:
            text += f": {by_reason}"
        if self.examples:
            text += f"; first: {self.examples[0]['message']}"
        return text

    def to_meta(self) -> dict[str, Any]:
        """A JSON-able snapshot, for a batch and the state's meta."""
        return {"records": self.records, "skipped": self.skipped, "counts": dict(self.counts),
                "examples": copy.deepcopy(self.examples)}

    def restore(self, meta: dict[str, Any] | None) -> None:
        """Continue the counts of a snapshot (a resumed run)."""
        meta = meta or {}
        self.records, self.skipped = int(meta.get("records", 0)), int(meta.get("skipped", 0))
        self.counts = {str(k): int(v) for k, v in meta.get("counts", {}).items()}
        self.examples = copy.deepcopy(list(meta.get("examples", [])))
