"""Data-parallel training on torch.distributed: the trainer's glue for several processes.

Launched by torchrun (or anything that sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT), every process reads
its own shard of the source (`Stream(shard=(rank, world_size))`) and trains a local state; `train` asks this
module for everything the processes must do together:

- start: join the process group (gloo on CPU, NCCL on CUDA; `--dist-backend gloo` on CUDA lets processes share a
  GPU, communicating through the CPU) within `--dist-timeout` seconds, and check that every
  process was started with the same settings (a mismatch names the differing keys; no hang, no silent mix).
- control: between batches, about every CONTROL_SECONDS (or every `--sync-every` K steps), one all_reduce of a
  few numbers decides together whether to checkpoint (records or seconds), whether to stop (a signal reached
  any process) and whether every shard is done. A process whose shard ends keeps answering these collectives
  until all are done, so shards of unequal size never deadlock.
- model averaging (`--sync-every K`, SGD algorithms only): the state tensors an algorithm names in `AVERAGED`
  are replaced every K steps by their average over the processes, weighted by the records each saw since the
  last average (see algorithms/base.py).
- checkpoints: each process writes its part as `state.rank{r}-of-{N}.g{G}.safetensors`; once all have, rank 0
  writes `checkpoint.json` (atomically) naming generation G's N files; only then are older generations removed.
  A crash at any point leaves the previous manifest and the complete set of files it names. Resume needs the
  same N: each part holds its own shard's stream position.
- finish: the states are gathered to rank 0 and merged by the algorithm's own `merge` (exact for PCA sums and
  k-means summaries); rank 0 alone writes the final state and model, and hands both back to every process.

States and settings travel as safetensors or JSON bytes in uint8 tensors: nothing is ever pickled (torch's
`*_object` collectives pickle, so they are not used). The run folder must be shared by all processes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import signal
import sys
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from . import _files
from .algorithms.base import Model
from .data import hashing
from .data.batches import Batch, Stream
from .errors import IncompatibleStateError, Interrupted, OnepassError, StateFileError, UsageError
from .progress import Metrics
from .state import MODEL_FILE, STATE_FILE, State

MANIFEST = "checkpoint.json"
DEFAULT_TIMEOUT = 300.0  # seconds: joining the group and any one collective
# Measured on 2-process PCA over 10^7 records: meeting every 50 ms made the ranks wait for each other for 30 % of
# the wall time (26.5 s); every second, 18.7 s. A signal or a checkpoint is then decided at most a second late.
CONTROL_SECONDS = 1.0
# SGD models (AVERAGED) are averaged every DEFAULT_SYNC_EVERY mini-batches unless --sync-every says otherwise.
# Measured (RESULTS_DISTRIBUTED.md, linear learner, 10^7 records on 2 processes): every 100 steps took the same
# time as averaging once at the end (44.0 s and 44.1 s) with a tenth of its validation log-loss; every 10 steps
# took 50.3 s.
DEFAULT_SYNC_EVERY = 100
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# `--nproc`: the folder where each failed worker leaves its error message (a file per rank), for the launcher to
# say the first cause once instead of every process printing its own copy and its consequences.
ERRORS_ENV = "ONEPASS_ERRORS_DIR"


class DistributedError(OnepassError):
    """The processes could not reach each other or could not write a checkpoint together (raised on every
    process that can tell, instead of hanging)."""


def rank() -> int:
    """This process's rank under torchrun (0 when running alone)."""
    return int(os.environ.get("RANK", "0") or 0)


def _trained(state: State) -> int:
    """Records a state's model was trained on (an SGD learner may hold some back: a scaling sample, a holdout)."""
    return int(state.meta.get("records_trained", state.meta["records_seen"]))


def _backend(backend: str | None, device: torch.device) -> str:
    """auto: NCCL when every process on this machine can have a GPU of its own, else gloo (CPU tensors;
    processes may then share GPUs). Decided alike on every process: from LOCAL_WORLD_SIZE, or, where the launcher
    did not set it, from WORLD_SIZE (as if all processes shared this machine)."""
    backend = (backend or "auto").lower()
    if backend == "auto":
        if device.type != "cuda":
            return "gloo"
        here = _local_world() or int(os.environ.get("WORLD_SIZE", "1") or 1)
        return "nccl" if device.index is None and here <= torch.cuda.device_count() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise UsageError(f"--dist-backend {backend!r}: valid values: auto, nccl, gloo")
    if backend == "nccl" and device.type != "cuda":
        raise UsageError("--dist-backend nccl needs --device cuda (NCCL moves CUDA tensors); on the CPU use gloo")
    return backend


def _local_world() -> int | None:
    """Processes on this machine, where the launcher says (torchrun's LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE") or 0) or None


def _process_gpu(device: torch.device, backend: str) -> torch.device:
    """This process's GPU: the one named, else LOCAL_RANK's (modulo the GPUs here, with gloo). NCCL needs a GPU
    per process: refused on every process alike (they all see the same LOCAL_WORLD_SIZE and GPUs), before any
    of them waits for the others."""
    local, here, count = int(os.environ.get("LOCAL_RANK", "0") or 0), _local_world(), torch.cuda.device_count()
    if backend == "nccl" and here and here > 1 and device.index is not None:
        raise UsageError(f"--device {device}: all {here} processes on this machine would share that GPU, which "
                         "NCCL refuses; give --device cuda (a GPU per process) or --dist-backend gloo")
    if backend == "nccl" and ((here and here > count) or local >= count):
        raise UsageError(f"{here or local + 1} processes on this machine need a GPU each with NCCL, and it has "
                         f"{count}: run at most {count} a machine, or let processes share GPUs with "
                         "--dist-backend gloo")
    return torch.device("cuda", device.index if device.index is not None else local % count)


@dataclass(frozen=True)
class Processes:
    """How several processes train together (`train(..., processes=Processes(sync_every=10))`); ignored when a
    process runs alone. sync_every: average the SGD models every K mini-batches (None: every DEFAULT_SYNC_EVERY;
    0: once, at the end); timeout: seconds to wait for the others (None: DEFAULT_TIMEOUT); backend: auto, nccl or
    gloo."""

    sync_every: int | None = None
    timeout: float | None = None
    backend: str | None = None


class Session:
    """One process's part in a training run on several processes (None from `from_env` when running alone)."""

    def __init__(self, rank: int, world: int, device: torch.device, averaged: tuple[str, ...],
                 sync_every: int | None, owns_group: bool, backend: str = "gloo"):
        self.rank, self.world, self.device, self.backend = rank, world, device, backend
        self.comm = device if backend == "nccl" else torch.device("cpu")  # NCCL wants CUDA tensors, gloo CPU ones
        self.averaged, self.sync_every, self.owns_group = averaged, sync_every, owns_group
        self.checkpoint_every: int | None = None  # set by the trainer: decided together, over all processes
        self.checkpoint_seconds: float | None = None
        self.generation = 0  # of the last checkpoint written (or resumed)
        self._ckpt_records: int | None = None
        self._ckpt_time = time.monotonic()
        self._avg_records = 0
        self._signal: int | None = None
        self._handlers: dict[int, Any] = {}  # the signal handlers before hold_signals
        self.algo = None  # the algorithm module, for its optional shared_parameters hooks
        self.stats = {"control_syncs": 0, "control_bytes": 0, "averages": 0, "average_bytes": 0,
                      "checkpoints": 0, "gather_bytes": 0}

    # ------------------------------------------------------------------------------------------ start

    @classmethod
    def from_env(cls, device: torch.device, algo, config: dict[str, Any], *, timeout: float | None = None,
                 sync_every: int | None = None, backend: str | None = None) -> tuple["Session | None", torch.device]:
        """Join the process group torchrun describes, or (None, device) when this process runs alone.

        `config`: what the user asked for (algorithm, hyperparameters, data, run settings); every process must
        have been given the same, which is checked here. Returns the session and this process's device (with
        CUDA, the GPU of its LOCAL_RANK unless one was named; with gloo, LOCAL_RANK modulo the GPUs here).
        `backend`: auto (NCCL on CUDA, gloo on the CPU), nccl or gloo.
        """
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return None, device
        missing = [k for k in _ENV if not os.environ.get(k)]
        if missing:
            raise UsageError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun "
                             "(or `onepass train --nproc N`), which sets them")
        r = int(os.environ["RANK"])
        averaged = tuple(getattr(algo, "AVERAGED", ()))
        if sync_every is None:
            sync_every = DEFAULT_SYNC_EVERY if averaged else None
        elif sync_every == 0:
            sync_every = None  # once, at the end
        else:
            if sync_every < 0:
                raise UsageError(f"--sync-every must be 0 (once, at the end) or at least 1, got {sync_every}")
            if not averaged:
                raise UsageError(f"--sync-every: {algo.NAME} has no averaged model; its states merge exactly once "
                                 "at the end (only SGD algorithms average every K steps)")
        backend = _backend(backend, device)
        if device.type == "cuda":
            device = _process_gpu(device, backend)
            torch.cuda.set_device(device)
        timeout = float(timeout or DEFAULT_TIMEOUT)
        owns = not dist.is_initialized()
        if owns:
            where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
            try:
                dist.init_process_group(backend, store=_store(r, world, timeout),
                                        rank=r, world_size=world, timeout=timedelta(seconds=timeout))
            except Exception as e:  # torch raises DistStoreError, RuntimeError, TimeoutError... by backend
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise DistributedError(
                    f"process {r} of {world} could not reach the others through {where} within {timeout:g} s "
                    f"(--dist-timeout): {first}. Are all {world} processes started, with the same MASTER_ADDR "
                    "and MASTER_PORT?") from None
        session = cls(r, world, device, averaged, sync_every, owns, backend)
        session.algo = algo
        session.hold_signals()  # from now on a signal stops every process together, at a control step
        session.check_same({**config, "sync_every": sync_every, "world_size": world,
                            "device": device.type, "backend": backend}, "settings")
        return session, device

    def check_same(self, config: dict[str, Any], what: str) -> None:
        """Refuse to go on (on every process alike) unless every process holds the same `config`."""
        blob = json.dumps(_files.to_jsonable(config), sort_keys=True, default=str).encode()
        blobs = self._all_gather_bytes(blob)
        if all(b == blob for b in blobs):
            return
        configs = [_flat(json.loads(b)) for b in blobs]
        keys = sorted({k for c in configs for k in c if any(c.get(k) != o.get(k) for o in configs)})
        raise UsageError(f"the {self.world} processes were started with different {what}; every process must be "
                         "given the same. Differing: " + "; ".join(
                             f"{k} (" + ", ".join(f"rank {r}: {c.get(k)!r}" for r, c in enumerate(configs)) + ")"
                             for k in keys))

    def check_inputs(self, stream: Stream) -> None:
        """Every process must see the same files (names and sizes) before taking its shard of them."""
        listing = [[i.path, i.size] for i in stream.all_inputs]
        self.check_same({"inputs": hashlib.sha256(json.dumps(listing).encode()).hexdigest()},
                        "inputs (the data changed while they started, or the paths differ)")

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    @property
    def restarted(self) -> bool:
        """Whether torchrun restarted the group after a failure (then the run resumes its last checkpoint)."""
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0

    @property
    def metrics_name(self) -> str:
        return "metrics.jsonl" if self.rank == 0 else f"metrics.rank{self.rank}.jsonl"

    # ------------------------------------------------------------------------------------- run folder

    def has_checkpoint(self, out: Path) -> bool:
        return (out / MANIFEST).exists()

    def checkpoint_path(self, out: Path, resume: bool) -> Path:
        """With `resume`: this process's part of the last checkpoint. Otherwise the file whose existence means
        that `out` already holds a run (the manifest, or a single-process state)."""
        manifest = _read_manifest(out)
        if not resume:
            return out / MANIFEST if manifest is not None else out / STATE_FILE
        if manifest is None:
            hint = (f"; its {STATE_FILE} can be continued with --init-from" if (out / STATE_FILE).exists()
                    else "; start without --resume")
            raise UsageError(f"--resume: {out} holds no checkpoint of a run on several processes ({MANIFEST}){hint}")
        n = manifest["world_size"]
        if n != self.world:
            raise IncompatibleStateError(
                f"--resume: the checkpoint in {out} was written by {n} processes; resume it with {n} "
                f"(--nproc {n}, or torchrun --nproc-per-node {n}), not {self.world}: each part holds its own "
                "shard's stream position")
        self.generation = int(manifest["generation"])
        return out / manifest["files"][self.rank]

    def clear(self, out: Path) -> None:
        """Start over in `out`: rank 0 removes every process's files of earlier runs; then all meet."""
        if self.rank == 0:
            for p in [*out.glob("state.rank*-of-*.safetensors"), *out.glob(".state.rank*.tmp"),
                      *out.glob("metrics.rank*.jsonl")]:
                p.unlink(missing_ok=True)
            for name in (MANIFEST, STATE_FILE, MODEL_FILE, "metrics.jsonl"):
                (out / name).unlink(missing_ok=True)
        self._sum([0.0])  # a barrier: nothing is written before every process has passed it

    def continued(self, state: State, algo, seed: int) -> State:
        """--init-from: rank 0 continues the state; the others start empty, so that the merge at the end counts
        the earlier state once. SGD algorithms (AVERAGED) start every process from the earlier model."""
        if self.rank == 0 or self.averaged:
            return state
        return algo.init(state.hyperparameters, state.meta["n_features"], seed, self.device)

    # ------------------------------------------------------------------------------------ the loop

    def batches(self, batches: Iterable[Batch], state_of: Callable[[], State | None],
                checkpoint: Callable[[str], None]) -> Iterator[Batch]:
        """This process's `batches`, with the collective decisions taken between them; ends when every
        process's shard has ended. `state_of()` gives the current state, `checkpoint(reason)` writes one (it
        calls `self.checkpoint` on every process at once)."""
        it = iter(batches)  # signals are held since from_env (hold_signals), restored by train
        finished, steps, last = False, 0, time.monotonic()
        if self._ckpt_records is None:
            state = state_of()
            self._ckpt_records = state.meta["records_seen"] if state is not None else 0
            self._avg_records = _trained(state) if state is not None else 0
        while True:
            if not finished:
                batch = next(it, None)
                if batch is None:
                    finished = True
                else:
                    yield batch
                    steps += 1
                    due = steps % self.sync_every == 0 if self.sync_every else \
                        time.monotonic() - last >= CONTROL_SECONDS
                    if not due:
                        continue
            last = time.monotonic()
            state = state_of()
            records, signals, done, empty, waiting, elapsed = self._control(state, finished)
            if empty:
                raise UsageError(f"{int(empty)} of the {self.world} processes got no records: the source holds "
                                 "fewer records than processes")
            if waiting:  # a live stream's process still without a record (so without a state): nothing to average
                if signals:  # or to checkpoint together; nothing was checkpointed yet either (a fresh run)
                    name = signal.Signals(self._signal).name if self._signal else "a signal to another process"
                    raise Interrupted(f"stopped by {name} before each of the {self.world} processes had a record "
                                      "of its partitions: no checkpoint; start again")
                continue
            if self.sync_every:
                self._average(state)
            if signals:
                name = signal.Signals(self._signal).name if self._signal else "a signal to another process"
                checkpoint(f"signal {name}")
                raise Interrupted(f"stopped by {name} after {state.meta['records_seen']:,} records on process "
                                  f"{self.rank}; checkpoint generation {self.generation}; continue with --resume "
                                  f"on {self.world} processes")
            if (self.checkpoint_every and records >= self.checkpoint_every) or (
                    self.checkpoint_seconds and elapsed >= self.checkpoint_seconds):
                checkpoint("periodic")
            if done == self.world:
                return

    def all_agree(self, flag: bool) -> bool:
        """Whether `flag` holds on every process: decisions taken apart (early stopping on each process's own
        validation) must come out the same everywhere, or the processes' collectives would no longer match."""
        return self._sum([float(bool(flag))])[0] == self.world

    def on_signal(self, signum, frame) -> None:
        """Hold SIGINT/SIGTERM until the next control step, where every process learns of it."""
        self._signal = signum

    def hold_signals(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self._handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._handlers[sig] = signal.signal(sig, self.on_signal)

    def restore_signals(self) -> None:
        for sig, old in self._handlers.items():
            signal.signal(sig, old)
        self._handlers.clear()

    def _control(self, state: State | None, finished: bool) -> list[float]:
        """One all_reduce: records since the last checkpoint (all processes), signals, finished shards,
        processes whose shard ended without a record, processes without a state yet (a live stream's partitions
        may have none so far), and rank 0's seconds since the last checkpoint."""
        values = [float((state.meta["records_seen"] if state is not None else 0) - self._ckpt_records),
                  float(self._signal is not None), float(finished), float(state is None and finished),
                  float(state is None), time.monotonic() - self._ckpt_time if self.rank == 0 else 0.0]
        self.stats["control_syncs"] += 1
        self.stats["control_bytes"] = 8 * len(values)
        return self._sum(values)

    def _average(self, state: State) -> None:
        """Replace the AVERAGED tensors by their average over processes, weighted by the records each saw since
        the last average (a process that saw none, its shard done, takes the others' average)."""
        weight = float(_trained(state) - self._avg_records)
        self._avg_records = _trained(state)
        # an algorithm whose tensors depend on a per-process scaling averages them in a shared form instead
        shared = getattr(self.algo, "shared_parameters", None)
        tensors = list(shared(state).values()) if shared else [state.tensors[name] for name in self.averaged]
        flat = torch.cat([t.detach().reshape(-1).to(self.comm, torch.float64) * weight for t in tensors]
                         + [torch.tensor([weight], dtype=torch.float64, device=self.comm)])
        self._collective(dist.all_reduce, flat)
        self.stats["averages"] += 1
        self.stats["average_bytes"] = flat.numel() * flat.element_size()
        total = float(flat[-1])
        if total <= 0:
            return
        at = 0
        for t in tensors:
            t.copy_((flat[at:at + t.numel()] / total).view(t.shape).to(t.device, t.dtype))
            at += t.numel()
        if shared:
            self.algo.set_shared_parameters(state, dict(zip(self.averaged, tensors)))

    # ---------------------------------------------------------------------------------- checkpoints

    def checkpoint(self, out: Path, state: State, reason: str) -> None:
        """Every process writes its part of generation G + 1; once all have, rank 0 writes the manifest naming
        them; then each removes its files of other generations. A failure anywhere leaves generation G."""
        gen = self.generation + 1
        name = f"state.rank{self.rank}-of-{self.world}.g{gen}.safetensors"
        error = ""
        try:
            state.save(out / name)
        except OSError as e:
            error = f"{out / name}: {e}"
        slots = [0.0] * (2 * self.world)
        slots[self.rank], slots[self.world + self.rank] = float(bool(error)), float(state.meta["records_seen"])
        totals = self._sum(slots)
        failed = [r for r in range(self.world) if totals[r]]
        if failed:
            raise DistributedError(f"checkpoint {gen} ({reason}): process(es) {failed} could not write their part"
                                   f"{': ' + error if error else ''}; the previous checkpoint stands")
        error = ""
        if self.rank == 0:
            manifest = {"format": "onepass-checkpoint", "version": 1, "algorithm": state.algorithm,
                        "world_size": self.world, "generation": gen, "reason": reason,
                        "files": [f"state.rank{r}-of-{self.world}.g{gen}.safetensors" for r in range(self.world)],
                        "records_seen": [int(v) for v in totals[self.world:]],
                        "complete": bool(state.meta.get("complete"))}
            try:
                _write_json(out / MANIFEST, manifest)
            except OSError as e:
                error = f"{out / MANIFEST}: {e}"
        if self._sum([float(bool(error))])[0]:  # also the barrier before older generations go
            raise DistributedError(f"checkpoint {gen} ({reason}): the manifest could not be written"
                                   f"{': ' + error if error else ''}; the previous checkpoint stands")
        self.generation = gen
        self.stats["checkpoints"] += 1
        for p in [*out.glob(f"state.rank{self.rank}-of-*.safetensors"), *out.glob(f".state.rank{self.rank}-of-*.tmp")]:
            if p.name != name:
                p.unlink(missing_ok=True)
        self._ckpt_records, self._ckpt_time = state.meta["records_seen"], time.monotonic()

    # --------------------------------------------------------------------------------------- finish

    def finish(self, out: Path, state: State, algo, metrics: Metrics | None = None) -> tuple[State, Model]:
        """Merge every process's state on rank 0 (in rank order, by the algorithm's `merge`), which alone writes
        the final state and model; every process gets both back."""
        blob = _encode(_state_header(state), state.tensors)
        parts = self._gather_bytes(blob)
        state_blob = model_blob = None
        if self.rank == 0:
            states = [state] + [_decode_state(b).to(self.device) for b in parts[1:]]
            merged = functools.reduce(lambda a, b: hashing.merged(algo.merge(a, b), a, b), states)
            for key in ("run", "lineage", "seed"):  # what the algorithm's merge does not carry
                if key in state.meta and key not in merged.meta:
                    merged.meta[key] = state.meta[key]
            merged.meta.update(position=state.meta["position"], complete=True,
                               distributed={"world_size": self.world,
                                            "records_seen": [s.meta["records_seen"] for s in states]})
            merged.save(out / STATE_FILE)
            model = hashing.keep_in_model(algo.finalize(merged), merged.meta)
            model.save(out / MODEL_FILE)
            state_blob = _encode(_state_header(merged), merged.tensors)
            model_blob = _encode({"kind": "model", "algorithm": model.algorithm, "model_version": model.version,
                                  "meta": _files.to_jsonable(model.meta)}, model.tensors)
        state_blob, model_blob = self._broadcast_bytes(state_blob), self._broadcast_bytes(model_blob)
        if self.rank:
            merged = _decode_state(state_blob).to(self.device)
            header, tensors = _decode(model_blob, "the merged model")
            model = algo.Model({k: v.to(self.device) for k, v in tensors.items()}, header["meta"])
        if metrics is not None:
            metrics.log("distributed", world_size=self.world, rank=self.rank, **self.stats,
                        state_bytes=len(blob))
        if self.owns_group:
            dist.destroy_process_group()
        return merged, model

    # ---------------------------------------------------------------------------------- collectives

    def _collective(self, op: Callable, *args, **kwargs) -> None:
        """A collective; a process that is gone (it failed, and printed why) breaks it on the others, which say
        so in one line rather than with gloo's or NCCL's traceback."""
        try:
            op(*args, **kwargs)
        except Exception as e:  # gloo and NCCL raise RuntimeError (or DistError) subclasses when a peer is gone
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise DistributedError(f"process {self.rank} of {self.world} lost contact with the others "
                                   f"({op.__name__}: {first}); another process probably failed first, "
                                   "and said why") from None

    def _sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.comm)
        self._collective(dist.all_reduce, t)
        return t.tolist()

    def _sizes(self, n: int) -> list[int]:
        sizes = torch.zeros(self.world, dtype=torch.int64, device=self.comm)
        sizes[self.rank] = n
        self._collective(dist.all_reduce, sizes)
        return sizes.tolist()

    def _padded(self, blob: bytes, size: int) -> torch.Tensor:
        t = torch.zeros(size, dtype=torch.uint8)
        if blob:
            t[:len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        return t.to(self.comm)

    def _all_gather_bytes(self, blob: bytes) -> list[bytes]:
        sizes = self._sizes(len(blob))
        out = [torch.zeros(max(sizes), dtype=torch.uint8, device=self.comm) for _ in range(self.world)]
        self._collective(dist.all_gather, out, self._padded(blob, max(sizes)))
        return [bytes(t[:n].cpu().numpy()) for t, n in zip(out, sizes)]

    def _gather_bytes(self, blob: bytes) -> list[bytes] | None:
        """Every process's bytes, on rank 0 (None elsewhere)."""
        sizes = self._sizes(len(blob))
        self.stats["gather_bytes"] = sum(sizes)
        out = [torch.zeros(max(sizes), dtype=torch.uint8, device=self.comm) for _ in range(self.world)] \
            if self.rank == 0 else None
        self._collective(dist.gather, self._padded(blob, max(sizes)), out, dst=0)
        return [bytes(t[:n].cpu().numpy()) for t, n in zip(out, sizes)] if out is not None else None

    def _broadcast_bytes(self, blob: bytes | None) -> bytes:
        size = torch.tensor([len(blob) if blob is not None else 0], dtype=torch.int64, device=self.comm)
        self._collective(dist.broadcast, size, src=0)
        t = self._padded(blob or b"", int(size))
        self._collective(dist.broadcast, t, src=0)
        return bytes(t.cpu().numpy())


def _store(rank: int, world: int, timeout: float) -> dist.Store:
    """The rendezvous store (torchrun's agent's, or one rank 0 hosts), under a prefix per torchrun attempt: the
    agent's store keeps a failed attempt's keys (seen with torch 2.13 and --standalone), and restarted workers
    read the dead workers' addresses from them and fail to connect."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent and rank == 0, timeout=timedelta(seconds=timeout))
    return dist.PrefixStore(f"onepass/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """One level of nesting spelled out (hyperparameters.k), so that a mismatch names the very key."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def _read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StateFileError(f"{path}: unreadable checkpoint manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "onepass-checkpoint":
        raise StateFileError(f"{path}: not a onepass checkpoint manifest")
    return manifest


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomically, as `_files.write_file` writes states: a temporary file, fsync, rename, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(value, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _state_header(state: State) -> dict[str, Any]:
    return {"kind": "state", "algorithm": state.algorithm, "hyperparameters": _files.to_jsonable(state.hyperparameters),
            "meta": _files.to_jsonable(state.meta)}


def _encode(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    """The bytes of a state or model file, in memory (what processes send each other: no pickle)."""
    header = {"format": _files.FORMAT_NAME, "format_version": _files.FORMAT_VERSION, **header}
    return _st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                    metadata={_files._HEADER_KEY: json.dumps(header, sort_keys=True)})


def _decode(blob: bytes, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    header = _files.read_header(blob, name)  # checks the framing and the format version
    return header, _st_load(blob)


def _decode_state(blob: bytes) -> State:
    header, tensors = _decode(blob, "a state sent by another process")
    return State(header["algorithm"], header["hyperparameters"], tensors, header["meta"])


# ------------------------------------------------------------------------------------------ launcher

def launch(main: Callable[[list[str]], int], argv: list[str], nproc: int, max_restarts: int = 0,
           device: str | None = None) -> int:
    """`onepass train --nproc N ...`: `main(argv)` (the command line's entry, handed down so that this module never
    imports the command line) on N local processes under torchrun's elastic agent, which restarts the group up to
    `max_restarts` times. Returns the exit status: 0, or the first failed worker's.

    The agent runs in this process and forks the workers from it (torchrun's `start_method="fork"`): they start
    with torch and onepass imported, where a worker started by `python -m onepass` spent a second importing them
    (measured: 2-process PCA of 10^7 records, 18.1 s with a second interpreter for torchrun and fresh workers)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--nproc", "--max-restarts"):
            skip = True
        elif not a.startswith(("--nproc=", "--max-restarts=")):
            args.append(a)
    # torchrun's rule: one thread a process unless the user says otherwise (pyarrow's pool reads it too)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # A failed worker prints its own error; the agent would add a traceback of its own polling loop
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"onepass-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=max_restarts,
                          start_method=_start_method(device))
    errors = Path(tempfile.mkdtemp(prefix="onepass-errors-"))
    os.environ[ERRORS_ENV] = str(errors)
    try:
        elastic_launch(config, _worker)(main, args)
    except ChildFailedError as e:
        # the failing workers left their messages; the exit status tells the user what kind (usage, data, ...)
        rank, failure = e.get_first_failure()
        code = failure.exitcode if failure.exitcode and failure.exitcode > 0 else 1
        code, message = _first_cause(errors, nproc, code)
        print(f"onepass train: error: {message}" if message else f"onepass train: process {rank} of {nproc} failed "
              f"(exit status {failure.exitcode})", file=sys.stderr)
        if max_restarts:
            print(f"onepass train: the group stopped after {max_restarts} restart(s)", file=sys.stderr)
        return code
    except SignalException as e:  # the agent passed the signal on: each worker checkpointed and said so above
        print(f"onepass train: stopped by {signal.Signals(e.sigval).name}", file=sys.stderr)
        return Interrupted.exit_code
    finally:
        os.environ.pop(ERRORS_ENV, None)
        shutil.rmtree(errors, ignore_errors=True)
    return 0


def _first_cause(errors: Path, nproc: int, code: int) -> tuple[int, str | None]:
    """(exit code, message) of the error that stopped the group: the lowest rank's among the processes that failed
    for a reason of their own, not for losing the others (a consequence); None if no process left a message."""
    found = []
    for r in range(nproc):
        try:
            status, message = (errors / f"rank{r}").read_text().split("\n", 1)
        except (OSError, ValueError):
            continue
        found.append((" lost contact with the others " in message, int(status), message))
    if not found:
        return code, None
    _, status, message = min(found, key=lambda f: f[0])  # causes first, then by rank (min keeps the first)
    return status, message


def _start_method(device: str | None) -> str:
    """fork, unless the workers may use CUDA (`device`, the command's --device, is not cpu): a CUDA driver touched
    before the fork fails in the children, and torchrun's own LaunchConfig asks `torch.cuda.is_available()` in
    this process (on an H200 both forked workers failed). A CPU-only build of torch, or --device cpu, keeps fork's
    quicker start. ONEPASS_START_METHOD (fork or spawn) overrides the choice."""
    if os.environ.get("ONEPASS_START_METHOD") in ("fork", "spawn"):
        return os.environ["ONEPASS_START_METHOD"]
    if torch.version.cuda is None or (device or "auto").lower() == "cpu":
        return "fork"
    return "spawn"


def _worker(main: Callable[[list[str]], int], argv: list[str]) -> None:
    """One worker: the command line's `main` on `argv`; a failure leaves with its exit status. An unexpected
    error's traceback is printed here: torchrun's agent would keep it in its error file, and the user would see
    only that a process failed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))  # a fork kept the parent's
    try:
        code = main(argv)
    except SignalException:  # the agent stopping the group because another process failed: that one says why
        code = Interrupted.exit_code
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        _leave(code)


def _leave(code: int) -> None:
    """A failed worker has said why and leaves at once, its signals ignored: on the way out through
    multiprocessing's exit handlers, the agent's SIGTERM to the group (whose handler raises) printed a
    traceback after the message (1 run in 4 of a 2-process run with a bad record)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os._exit(code)
