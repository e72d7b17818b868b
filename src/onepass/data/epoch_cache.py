"""Later epochs from memory: the parsed batches of a whole pass, kept while they fit a fixed budget.

Parsing is most of the cost of an epoch over a text file (CSV: about half the linear learner's training time on
adult), and every epoch after the first parses the same bytes into the same batches again. Vowpal Wabbit keeps
a cache file for that. `EpochCache` keeps the batches of one complete pass in memory, up to a budget fixed before
the first record, and hands the same batches out again, in the same order, with the same positions: a run with
the cache gives the same state, bit for bit, as one that reads the source every epoch, and a checkpoint taken in
a replayed epoch resumes from the source at the exact record.

It records only a pass read from the start to the end, and never:
- a pass that outgrows the budget (it is dropped at once and every later epoch reads the source again);
- a pipe-mode channel (SageMaker writes one FIFO per epoch and waits for each to be read);
- a pass with skipped bad records (a replay could not count them again as a new read does); a clean pass is
  replayed with the tally counting its records as a read would.

    >>> import numpy as np, tempfile, os
    >>> from onepass.data.batches import Stream
    >>> path = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> np.savetxt(path, np.arange(12.0).reshape(6, 2), delimiter=",")
    >>> cache = EpochCache(Stream(path), budget=CacheBudget(1 << 20))
    >>> first = [b.x.sum().item() for b in cache.batches(4)]
    >>> cache.ready, [b.x.sum().item() for b in cache.batches(4)] == first
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Iterator

import torch

from .batches import Batch, Stream

DEFAULT_MIB = 256  # the default budget of a run's caches together (training and validation source)


@dataclass
class CacheBudget:
    """Bytes that the caches of one run may still take, shared by them."""

    left: int


def tensor_bytes(t: torch.Tensor | None) -> int:
    if t is None:
        return 0
    if t.layout == torch.sparse_csr:
        return sum(tensor_bytes(p) for p in (t.crow_indices(), t.col_indices(), t.values()))
    return t.element_size() * t.nelement()


def batch_bytes(b: Batch) -> int:
    """Every tensor a batch holds (a subclass's too: DeepAR's windows carry masks, features and codes)."""
    return sum(tensor_bytes(v) for f in fields(b) if isinstance(v := getattr(b, f.name), torch.Tensor))


class EpochCache:
    """`batches` as `Stream.batches`; after one complete pass within the budget, later passes come from memory."""

    def __init__(self, stream: Stream, budget: CacheBudget):
        self.stream, self.budget = stream, budget
        self._kept: list[Batch] | None = None  # the complete pass, once recorded
        self._size = 0                          # its batch size
        self._bytes = 0
        # never worth trying: pipe mode (a FIFO per pass), a source read only once, or no budget at all
        self.off = (not stream.rereadable or stream.piped
                    or budget.left <= 0)
        self.dropped: str | None = None  # why recording stopped, for the run's log
        self.reported = False            # the trainer logged that (or that the cache is ready)

    @property
    def ready(self) -> bool:
        return self._kept is not None

    @property
    def nbytes(self) -> int:
        return self._bytes

    def batches(self, batch_size: int, start: dict[str, Any] | None = None, prefetch: int = 2) -> Iterator[Batch]:
        if self._kept is not None and start is None and batch_size == self._size:
            return self._replay()
        inner = self.stream.batches(batch_size, start=start, prefetch=prefetch)
        if self.off or self._kept is not None or start is not None:
            return inner
        return self._record(inner, batch_size)

    def _record(self, inner: Iterator[Batch], batch_size: int) -> Iterator[Batch]:
        tally = self.stream.bad
        skipped = tally.skipped if tally is not None else 0
        kept: list[Batch] | None = []
        taken = 0
        complete = False
        try:
            for b in inner:
                if kept is not None:
                    size = batch_bytes(b)
                    if size > self.budget.left:
                        self.dropped = (f"a pass holds more than the cache's budget ({(taken + self.budget.left) / 2**20:,.0f} "
                                        "MiB): every epoch reads the source")
                        self.off = True
                        kept = None
                        self.budget.left += taken
                        taken = 0
                    else:
                        self.budget.left -= size
                        taken += size
                        kept.append(b)
                yield b
            complete = True
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()
            if kept is not None and complete and tally is not None and tally.skipped != skipped:
                self.dropped = "the pass skipped bad records: every epoch reads the source and counts them again"
                self.off = True
                kept = None
            if kept is not None and complete:
                self._kept, self._size, self._bytes = kept, batch_size, taken
            elif taken:
                self.budget.left += taken  # an unfinished pass: not kept (the next one may record)

    def _replay(self) -> Iterator[Batch]:
        tally = self.stream.bad
        for b in self._kept:
            if tally is not None:  # the tally counts the records as a new read of the clean pass would
                tally.records += len(b)
                tally.check()
                b = replace(b, bad=tally.to_meta())
            yield b
        if tally is not None:
            tally.check(at_end=True)
