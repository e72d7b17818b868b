"""Counting the operations that read a device value back to the host: each one stalls a GPU's queue.

On a GPU an `update` is fast only if it never waits for the device: `.item()`, `float(t)`, `if t.any():`, a
boolean mask (its result's length is data), `nonzero`, `unique`, `bincount` (its length is the maximum) and a
copy to the CPU all make the host wait until every queued kernel has run. This module counts them on any
device, CPU included, so that the budget of each algorithm is checked without a GPU:

>>> import torch
>>> from onepass.host_reads import HostReads
>>> x = torch.arange(4.0)
>>> with HostReads([x]) as reads:
...     y = (x * 2)[x > 1]          # a boolean mask: its length is data
...     z = float(y.sum())          # a scalar read
>>> reads.total, sorted(op.split()[-1] for op in reads.ops)
(2, ['aten._local_scalar_dense', 'aten.index.Tensor[bool]'])

Only values that would live on the device are watched: the tensors given (a state's, a batch's) and whatever is
computed from them. Host-side work (a CPU random generator's draws, Python numbers) is free, as it is on a GPU.
The CPU-only branches an algorithm takes (NumPy's argmin on a CPU tensor) are not counted: `.numpy()` is refused
on a CUDA tensor, so such a branch cannot run there.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_MARK = "_onepass_on_device"
_PACKAGE = str(Path(__file__).parent)
# Operators whose every call waits for the device: a scalar read, or an output whose shape is data.
_ALWAYS = {"_local_scalar_dense", "nonzero", "argwhere", "masked_select", "unique", "_unique", "_unique2",
           "unique_dim", "unique_consecutive", "unique_dim_consecutive", "bincount", "histc", "equal",
           "is_nonzero", "_assert_async"}
# Operators that wait only when indexed by a boolean mask (its number of True entries sets the result's size).
_MASKED = {"index", "index_put", "index_put_", "_index_put_impl_"}


def _on_device(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, _MARK, False)


def mark(tensors: Iterable[torch.Tensor | None]) -> None:
    """Watch these tensors (and everything computed from them) as if they lived on the device."""
    for t in tensors:
        if t is not None:
            setattr(t, _MARK, True)


def _reads(func, args, kwargs) -> str | None:
    """The name to count a call under when it waits for the device, else None."""
    name = func._schema.name.split("::")[-1]
    if name in _ALWAYS:
        return str(func.overloadpacket)
    if name in _MASKED:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ()):
            return f"{func}[bool]"
    if name == "repeat_interleave" and isinstance(args[0], torch.Tensor) and args[0].dim() and \
            kwargs.get("output_size") is None and (len(args) < 4 or args[3] is None):
        return f"{func}[no output_size]"
    return None


def _count(counts: Counter, what: str) -> None:
    """Count `what` under the innermost line of onepass that called it (`module.py:line what`)."""
    f = sys._getframe(2)
    while f is not None and (not f.f_code.co_filename.startswith(_PACKAGE) or f.f_code.co_filename == __file__):
        f = f.f_back
    counts[f"{Path(f.f_code.co_filename).name}:{f.f_lineno} {what}" if f else what] += 1


class _Dispatch(TorchDispatchMode):
    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if any(_on_device(t) for t in tree_flatten((args, kwargs))[0]):
            what = _reads(func, args, kwargs)
            if what:
                _count(self.counts, what)
            written = [args[i] if i < len(args) else kwargs.get(a.name)
                       for i, a in enumerate(func._schema.arguments) if a.alias_info and a.alias_info.is_write]
            # a write into a view (`d2[j] = ...`, `out=buffer[1:]`) puts device values into its base too
            done = [t for t in tree_flatten((out, written))[0] if isinstance(t, torch.Tensor)]
            mark(done + [t._base for t in done if t._base is not None])
        return out


class _Function(TorchFunctionMode):
    """What the dispatcher does not see. Reads: `.tolist()` and `.cpu()` (a no-op on a CPU tensor). Values that
    would be on the device: a tensor moved by `.to(device)` (a no-op here too) or made with `device=`; a watched
    tensor's `.numpy()` sets `numpy_of_device` (a `torch.from_numpy` right after it is its CPU branch's result)."""

    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts
        self.numpy_of_device = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        # only when nothing of torch's runs in between (np.argmin(t.numpy()) then torch.from_numpy)
        self.numpy_of_device = name == "numpy" and bool(args) and _on_device(args[0])
        if args and _on_device(args[0]) and name in ("tolist", "cpu"):
            _count(self.counts, f"Tensor.{name}")
        out = func(*args, **kwargs)
        moved = name == "to" and any(isinstance(a, (str, torch.device)) for a in (*args[1:], kwargs.get("device")))
        if moved and out is args[0]:  # a no-op here: the host's tensor stays unwatched, its device copy is watched
            out = out.view_as(out)
        if moved or (kwargs.get("device") is not None and name != "to"):
            mark(t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return out


class HostReads:
    """Context manager: counts host reads of `watched` tensors' values (and what is computed from them) in
    `ops` (`file:line operator` -> calls, the line the innermost onepass code that asked); `total` is their sum."""

    def __init__(self, watched: Iterable[torch.Tensor | None] = ()):
        self.ops: Counter = Counter()
        mark(watched)
        self._modes = (_Function(self.ops), _Dispatch(self.ops))

    def _array_to_tensor(self, a):
        t = self._from_numpy(a)
        if self._modes[0].numpy_of_device:
            self._modes[0].numpy_of_device = False
            mark([t])
        return t

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def __enter__(self) -> "HostReads":
        # An array of a watched tensor made a tensor again is the CPU branch of a device computation (NumPy's
        # argmin standing in for torch's): its result is watched as the device's would be.
        self._from_numpy = torch.from_numpy
        torch.from_numpy = self._array_to_tensor
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for m in reversed(self._modes):
            m.__exit__(*exc)
        torch.from_numpy = self._from_numpy


def device_tensors(state) -> list[torch.Tensor]:
    """The tensors of `state` that `State.to(device)` moves to a device (a random generator's state stays)."""
    moved = state.to("meta").tensors
    return [t for k, t in state.tensors.items() if moved[k].device.type == "meta"]


def batch_tensors(batch) -> list[torch.Tensor]:
    """A batch's tensors: the trainer moves them to the state's device before `update`."""
    return [v for v in vars(batch).values() if isinstance(v, torch.Tensor)]


def steady_state_reads(case, warmup: int, batches: int, seed: int = 0) -> list[Counter]:
    """Host reads of each of `batches` updates of `case` (a `testing.Case`) after `warmup` updates (filling a
    summary, a scaler's sample, the first optimizer steps), the state and batches watched as device tensors."""
    from . import testing

    n = (warmup + batches) * case.batch_size
    data = case.make_data(n, seed)
    made = case.make_batches(data, case.batch_size) if case.make_batches else \
        testing.batches(data, case.batch_size, labelled=case.label_column is not None, sparse=case.sparse)
    algo, state, counts = case.algo, None, []
    for i, b in enumerate(made):
        if state is None:
            state = algo.init(case.hyperparameters, b.x.shape[1], seed, "cpu")
        if i < warmup:
            state = algo.update(state, b)
            continue
        with HostReads(device_tensors(state) + batch_tensors(b)) as reads:
            state = algo.update(state, b)
        counts.append(reads.ops)
        if len(counts) == batches:
            break
    assert len(counts) == batches, f"{case.algorithm}: {n} records made only {len(counts)} steady batches"
    return counts
