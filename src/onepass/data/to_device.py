"""Batches moved to a CUDA device one ahead of the update: pinned host memory, copies on a side stream.

A parsed batch lives in ordinary (pageable) host memory; copying it to a GPU from there is synchronous. Copied
from pinned memory with `non_blocking=True` on a stream of its own, batch i + 1 travels while the update of batch
i runs, and the update's stream waits only for its own batch's copy (an event, not a host synchronization).
On the CPU the batches pass through unchanged (nothing to copy, and pinning needs CUDA).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

import torch

from .batches import Batch


def to_device(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    """`batches` with their tensors on `device`, each copy issued one batch ahead of its use."""
    if device.type != "cuda":
        yield from batches
        return
    side = torch.cuda.Stream(device)
    pending = None
    for batch in batches:
        moved = _issue(batch, device, side)
        if pending is not None:
            yield _ready(*pending, device)
        pending = moved
    if pending is not None:
        yield _ready(*pending, device)


def _issue(batch: Batch, device: torch.device, side: torch.cuda.Stream) -> tuple[Batch, torch.cuda.Event]:
    """Start copying the batch's tensors to `device` on the side stream; the event marks the copies' end."""
    fields = {k: v for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}
    with torch.cuda.stream(side):
        # a sparse CSR batch is copied as it is (synchronously): pinning covers strided tensors
        moved = {k: (v.pin_memory() if v.layout == torch.strided else v).to(device, non_blocking=True)
                 for k, v in fields.items()}
        done = side.record_event()
    return dataclasses.replace(batch, **moved), done


def _ready(batch: Batch, done: torch.cuda.Event, device: torch.device) -> Batch:
    """The compute stream waits for the batch's copies; its memory is then in use by that stream (so the
    caching allocator does not hand it out while the update may still read it)."""
    compute = torch.cuda.current_stream(device)
    compute.wait_event(done)
    for v in vars(batch).values():
        if isinstance(v, torch.Tensor):
            parts = (v.crow_indices(), v.col_indices(), v.values()) if v.layout == torch.sparse_csr else (v,)
            for p in parts:
                p.record_stream(compute)
    return batch
