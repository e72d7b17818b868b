"""The trainer: drives any algorithm over a stream, with epochs, validation, checkpoints, resume and progress.

    result = train("kmeans", "data/*.csv", "runs/km", hyperparameters={"k": 10})

A run folder holds `state.safetensors` (the checkpoint: written every N records, every T seconds, at the end of
each epoch that ends a second or more after the last checkpoint, and on SIGINT/SIGTERM), `model.safetensors`
(written only once training has finished) and `metrics.jsonl`. A checkpoint records the stream position, so
`resume=True` continues at the exact next record and gives the same state, bit for bit on the CPU, as a run that
was never interrupted.
"""

from __future__ import annotations

import inspect
import signal
import sys
from contextlib import closing, nullcontext
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow
import torch

from . import _blas, algorithms, distributed
from .algorithms.base import Model
from .data.bad_records import BadRecords, resolve as resolve_bad_records
from .data.hashing import SLOTS_TENSOR, summary as hashing_summary
from .data import memory
from .data.batches import Stream
from .data.to_device import to_device
from .data.live import is_live
from .data.epoch_cache import DEFAULT_MIB as DEFAULT_CACHE_MIB, CacheBudget, EpochCache
from .errors import IncompatibleStateError, Interrupted, UsageError
from .progress import Metrics, Progress
from .publish import Publisher, parse_every
from .state import MODEL_FILE, STATE_FILE, State

METRICS_FILE = "metrics.jsonl"
# An epoch-end checkpoint is skipped when the last one is younger than this: on small data an epoch takes tens of
# milliseconds and the write (serialize, hash, two fsyncs) 5-10 ms of it; a crash then loses at most a second.
EPOCH_CHECKPOINT_GAP_S = 1.0
DATA_KEYS = ("data_format", "label_column", "zero_based", "weight_column", "columns", "query", "on_bad_record",
             "max_bad_fraction", "text_column", "stream_field", "categorical_columns")  # the data options a checkpoint keeps (RUN_KEYS)
RUN_KEYS = ("mini_batch_size", "seed") + DATA_KEYS


@dataclass
class TrainResult:
    state: State
    model: Model
    out: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    paused: bool = False  # stopped at max_records with a checkpoint: resume=True continues it

    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    @property
    def model_path(self) -> Path:
        return self.out / MODEL_FILE


def read_size(algo, hp: dict[str, Any], dev: torch.device) -> int:
    """Records a batch the trainer reads: mini_batch_size, times the algorithm's GPU_BATCH_FACTOR on a GPU (an
    algorithm whose result does not depend on how the stream is cut says so there; off on the CPU, whose results
    stay those of mini_batch_size)."""
    return hp["mini_batch_size"] * (getattr(algo, "GPU_BATCH_FACTOR", 1) if dev.type == "cuda" else 1)


def resolve_device(device: str | None) -> torch.device:
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r}: valid values: auto, cpu, cuda, cuda:N")
    return torch.device(device)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the next batch boundary and stops.

    pyarrow's own handlers are off meanwhile: a signal during a CSV block's parse in this thread (--threads 1
    reads without a read-ahead thread) would cancel the parse, which read as a parse error, not as a stop."""

    def __init__(self, forward: Callable[[int, Any], None] | None = None):
        self.signal: int | None = None
        self._old: dict[int, Any] = {}
        self._forward = forward  # several processes: the session holds the signal, and all stop together

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
            pyarrow.enable_signal_handlers(False)
        return self

    def _handle(self, signum, frame):
        if self._forward is not None:
            self._forward(signum, frame)
        else:
            self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._old:
            pyarrow.enable_signal_handlers(True)  # pyarrow's default (it has no getter to restore from)


def train(algorithm: str, data, out: str | Path, *, hyperparameters: dict[str, Any] | None = None,
          validation=None, test=None, epochs: int | None = None, mini_batch_size: int | None = None,
          device: str | None = "auto", threads: int | None = None, seed: int | None = None,
          checkpoint_every: int | None = None, checkpoint_seconds: float | None = 600.0,
          resume: bool = False, init_from: str | Path | None = None, overwrite: bool = False,
          epoch_cache_mib: float | None = None, max_records: int | None = None,
          processes: distributed.Processes | None = None, progress: Progress | None = None, on_event=None,
          publish_every: str | int | None = None, half_life: int | None = None, **stream_options: Any) -> TrainResult:
    """Train `algorithm` on `data` into the run folder `out`. See the module docstring.

    data, validation, test: a `Stream`, or anything a `Stream` reads (a path, glob, folder, URL, ``-``; a NumPy
    array, SciPy sparse matrix or torch tensor, an (X, y[, w]) tuple, an iterable of those or of `Batch`es).
    stream_options: `Stream`'s options (data_format, label_column, header, weight_column, columns, zero_based,
    storage_options, query, on_bad_record, max_bad_fraction...) for every source not given as a `Stream`: a new
    format's options belong to `Stream`, and reach here without a change to `train`.

    A supervised algorithm reads the label from the first column unless told otherwise (SageMaker's layout), except
    from data in memory, whose labels come as (X, y). On --resume, data options not given again are the
    checkpoint's, and those given must match it.

    on_bad_record: "fail" (default) stops at the first bad record; "skip" leaves bad records out, counts them by
    reason (in the state's meta, `bad_records`, so a resumed run goes on counting, and in metrics.jsonl) and stops
    once more than `max_bad_fraction` of the records (default 0.01) were bad.

    epoch_cache_mib: with several epochs, the parsed batches of a whole pass over the data (and over the
    validation source) are kept in memory up to this budget (default 256 MiB; 0 turns it off) and later epochs
    read them instead of the source: the same batches in the same order, so the same state (epoch_cache.py).

    max_records: pause once this many records were trained in all (counted over epochs and earlier runs of the
    state, at a batch boundary): a checkpoint is written, no model file, and the result says `paused`; `resume=True`
    with a larger `max_records` (or none) goes on from the exact next record. The tuner trains its trials in such
    rungs (tuning.py).

    processes: how several processes train together under torchrun (`distributed.Processes`: sync_every,
    timeout, backend); ignored when this process runs alone.

    A live stream (``redis://``, ``nats://``, ``kafka://``, ``kinesis://``: data/live) is read until stopped
    (SIGTERM or SIGINT write a checkpoint; `resume=True` continues at the next record), in one epoch.
    publish_every: ``"60s"`` (a time) or a number of records: finalize and publish a model into `out` that often
    (publish.py: `models/` keeps the last versions; model.safetensors, which `onepass serve` reloads, is the newest).
    half_life: forget, so that a model follows a drifting stream: a record's weight halves after this many records,
    where the algorithm has such a hyperparameter (its `HALF_LIFE`: k-means' half_life_time_size); elsewhere
    refused, saying how that algorithm follows a drift (its `FORGETTING`).

    on_event: a function called with every event of metrics.jsonl (a dict: "event", "time" and its fields), just
    after the line is written: start, checkpoint, validation, epoch, bad_records, early_stop, finished, ... An
    exception it raises stops training like any other error; the last checkpoint is kept."""
    algo = algorithms.get(algorithm)
    out = Path(out)
    processes = processes or distributed.Processes()
    spec = _stream_spec(data, stream_options, "data")
    if spec["label_column"] is None and getattr(algo, "SUPERVISED", False) and not resume \
            and not memory.holds(spec["source"]):
        spec["label_column"] = "first"  # SageMaker's layout: the label leads the record
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    if threads:
        torch.set_num_threads(int(threads))
        pyarrow.set_cpu_count(int(threads))  # the parser's threads too: --threads bounds the whole process
    # --threads 1 is one thread in all: no read-ahead thread either (parsing and compute take turns), so that N
    # processes of one thread each measure parallel efficiency honestly on N cores
    read_ahead = 0 if threads == 1 else 2
    dev = resolve_device(device)
    given = dict(hyperparameters or {})
    if epochs is not None:
        given["epochs"] = epochs
    if mini_batch_size is not None:
        given["mini_batch_size"] = mini_batch_size
    if half_life is not None:
        given[_half_life_name(algo, given)] = half_life
    if resume and init_from:
        raise UsageError("--resume and --init-from exclude each other: resume continues this run, "
                         "--init-from starts a new run from an earlier state")
    if max_records is not None and max_records < 1:
        raise UsageError(f"max_records must be at least 1, got {max_records}")
    live = is_live(spec["source"])
    if live:  # a live stream never ends: one epoch, read until stopped
        if given.get("epochs") not in (None, 1, "1"):
            raise UsageError(f"--epochs {given['epochs']}: {spec['source']} is a live stream, read once as it comes "
                             "(train runs until stopped); give --epochs 1 or none")
        given["epochs"] = 1
    parse_every(publish_every)  # refused now, before any work; the publisher is made once the state is known
    publisher: Publisher | None = None

    # Under torchrun: join the other processes, checking they were all given the same (distributed.py).
    session, dev = distributed.Session.from_env(dev, algo, dict(
        algorithm=algo.NAME, data=_described(spec["source"]), out=str(out), hyperparameters=given,
        validation=_described(validation), seed=seed, resume=resume, init_from=init_from, overwrite=overwrite,
        checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds,
        **{k: spec[k] for k in DATA_KEYS + ("header",)}),
        timeout=processes.timeout, sync_every=processes.sync_every, backend=processes.backend)
    if session and max_records is not None:
        raise UsageError("max_records pauses one process's run; several processes cannot pause at one record")
    if session and session.restarted and session.has_checkpoint(out):
        resume, init_from = True, None  # torchrun restarted the group after a failure: continue the checkpoint
    state_path = session.checkpoint_path(out, resume) if session else out / STATE_FILE
    state: State | None = None
    position: dict[str, Any] | None = None
    # saved in the checkpoint: never storage_options, which may hold secrets
    run = {"mini_batch_size": None, "seed": seed, **{k: spec[k] for k in DATA_KEYS}}
    if resume:
        if not state_path.exists():
            raise UsageError(f"--resume: {out} holds no checkpoint ({STATE_FILE}); start without --resume")
        state = State.load(state_path).to(dev)
        _check_same_algorithm(state, algo, state_path)
        hp = _resumed_hyperparameters(algo, state, given)
        saved = state.meta.get("run", {})
        # What was not given again is taken from the checkpoint; what was given must match it.
        run = {k: (saved.get(k) if v is None else v) for k, v in run.items()}
        if spec["on_bad_record"] is not None and spec["max_bad_fraction"] is None \
                and spec["on_bad_record"] != saved.get("on_bad_record"):
            run["max_bad_fraction"] = None  # another policy, refused below: not with the checkpoint's fraction
        run["on_bad_record"], run["max_bad_fraction"] = resolve_bad_records(run["on_bad_record"],
                                                                            run["max_bad_fraction"])
        _check_same_run(saved, {**run, "mini_batch_size": hp["mini_batch_size"]})
        position = state.meta.get("position")
    elif init_from:
        state = State.load(init_from).to(dev)
        _check_same_algorithm(state, algo, init_from)
        hp = _continued_hyperparameters(algo, state, given)
        state.hyperparameters.update(hp)
        state.meta["lineage"] = state.meta.get("lineage", []) + [
            {"init_from": str(init_from), "records_seen": state.meta.get("records_seen")}]
        state.meta["complete"] = False
        if hasattr(algo, "continued"):  # the earlier run's best models and early stopping are history
            state = algo.continued(state)
        if session:
            state = session.continued(state, algo, seed if seed is not None else state.meta.get("seed", 0))
    else:
        hp = algo.HYPERPARAMETERS.parse(given)
        if state_path.exists() and not overwrite:
            raise UsageError(f"{out} already holds a training state; use --resume to continue it, "
                             f"--init-from {out} to continue it on new data, or --overwrite to start over")
        if session:
            session.clear(out)  # rank 0 removes every process's files, then all meet
        for name in (STATE_FILE, MODEL_FILE, METRICS_FILE) if not session else ():
            (out / name).unlink(missing_ok=True)
    run["mini_batch_size"] = hp["mini_batch_size"]
    run["zero_based"] = bool(run["zero_based"])
    run["on_bad_record"], run["max_bad_fraction"] = resolve_bad_records(run["on_bad_record"], run["max_bad_fraction"])
    run["seed"] = seed = int(run["seed"] if run["seed"] is not None else
                             (state.meta.get("seed", 0) if state is not None else 0))
    spec.update({k: run[k] for k in DATA_KEYS})
    if spec["n_features"] is None:
        spec["n_features"] = hp.get("feature_dim")  # sparse formats (LibSVM) take their width from feature_dim
    # the options of the training data hold for the validation and test sources given as paths too
    shared = {k: spec[k] for k in spec if k not in ("source", "shard")}
    epochs = hp["epochs"]

    stream = examples_of(algo, hp, Stream(**{**spec, "shard": session and session.shard}), state)
    if session:
        session.check_inputs(stream)
    if stream.bad is not None and state is not None and resume:  # go on counting where the checkpoint stood
        stream.bad.restore(state.meta.get("bad_records"))
    hashing = getattr(stream, "hashing", None)  # categorical columns hashed into features (data/hashing.py)

    def finalized(st: State):
        """The state's model; with hashed categorical columns, knowing them, so that predict and serve hash alike."""
        model = algo.finalize(st)
        if hashing is not None:
            model.meta.update(hashing.model_meta())
        return model

    if hashing is not None and state is not None and SLOTS_TENSOR in state.tensors:  # their collision tally too
        hashing.tally.restore(state.tensors[SLOTS_TENSOR].cpu().numpy())
    check_sparse(algo, stream)
    if epochs > 1 and not stream.rereadable:
        raise UsageError(f"--epochs {epochs} needs a source that can be read again; {stream.name} "
                         "can be read once (standard input, a named pipe or an iterator)")
    val_stream = examples_of(algo, hp, _stream(validation, shared), state) if validation is not None else None
    # opened now, so that a test source that is not there stops the run before training, not after it; its
    # examples are made after training, with what the trained state knows (a topic model's vocabulary)
    test_source = _stream(test, shared) if test is not None else None
    budget = CacheBudget(int(float(DEFAULT_CACHE_MIB if epoch_cache_mib is None else epoch_cache_mib) * 2**20)
                         if epochs > 1 else 0)
    if budget.left < 0:
        raise UsageError(f"--epoch-cache-mib must be at least 0, got {epoch_cache_mib}")
    cache = EpochCache(stream, budget)
    val_cache = EpochCache(val_stream, budget) if val_stream is not None else None
    out.mkdir(parents=True, exist_ok=True)
    if not live and publish_every is None:
        (out / MODEL_FILE).unlink(missing_ok=True)  # a model appears only once this run has finished
    if publish_every is not None:
        publisher = Publisher(out, publish_every, state.meta.get("records_seen", 0) if state is not None else 0)
    metrics = Metrics(out / (session.metrics_name if session else METRICS_FILE), on_event)
    progress = progress or Progress()
    start_epoch = 0
    if position and position.get("complete"):
        start_epoch = epochs
    elif position:
        start_epoch = int(position.get("epoch", 0))
        if position.get("file") is None:
            position = None
    if resume and position and not stream.seekable:
        warning = (f"{stream.name} cannot seek: the {int(position.get('records', 0)):,} records of epoch "
                   f"{start_epoch + 1} read before the checkpoint cannot be skipped, training continues with the "
                   "data that arrives now")
        metrics.log("warning", message=warning)
        print(f"onepass: warning: {warning}", file=sys.stderr)
        position = None
    if max_records is not None and state is not None and state.meta.get("records_seen", 0) >= max_records \
            and not state.meta.get("complete"):  # paused there already (a tuner's crash after the pause)
        return TrainResult(state, finalized(state), out, _brief(algo.describe(state)), paused=True)
    last_ckpt_records = state.meta.get("records_seen", 0) if state else 0
    last_ckpt_time = time.monotonic()
    val_metrics: dict[str, float] = {}
    if session:  # decided together, over every process's records (Session.batches)
        session.checkpoint_every, session.checkpoint_seconds = checkpoint_every, checkpoint_seconds
        checkpoint_every = checkpoint_seconds = None

    def checkpoint(reason: str) -> None:
        nonlocal last_ckpt_records, last_ckpt_time
        if state is None:
            return
        state.meta["run"] = run
        if hashing is not None:
            _keep_hashing(state, hashing)
        if session:
            session.checkpoint(out, state, reason)  # every process's part together, then rank 0's manifest
        else:
            state.save(state_path)
        last_ckpt_records, last_ckpt_time = state.meta["records_seen"], time.monotonic()
        metrics.log("checkpoint", reason=reason, records_seen=state.meta["records_seen"],
                    position=state.meta.get("position"))
        if stream.bad is not None:
            metrics.log("bad_records", reason=reason, **state.meta.get("bad_records", BadRecords().to_meta()))

    # set just before the try whose finally gives them back, so that an error before it changes nothing
    compute_threads = torch.get_num_threads()
    blocks = 1  # threads for k-means' row blocks of products (_blas.row_blocks)
    if stream.format == "csv" and dev.type == "cpu" and compute_threads > 1:
        # A CSV source is parsed on pyarrow's CPU count of threads while the update runs; torch's threads then
        # wait at every parallel step for one the parser holds off its core. Measured on 2 cores: k-means (k = 10)
        # of 10^6 x 100 in 3.5-3.7 s with one compute thread against 3.8-3.9 s with two; the linear learner on
        # KDD04 in 1.0-1.1 s against 1.15 s; k-means at k = 100 11.2 s against 11.5 s.
        torch.set_num_threads(max(1, compute_threads // 2))
        blocks = compute_threads  # the parser needs its core only part of the time: blocks of products may use it
    blocks_before = _blas.set_block_threads(blocks)
    try:
        with _StopFlag(forward=session.on_signal if session else None) as stop:
            # announced once a signal would be caught: from here on SIGTERM checkpoints at the next batch
            metrics.log("start", algorithm=algo.NAME, data=stream.name, hyperparameters=hp, device=str(dev),
                        resume=resume, init_from=str(init_from) if init_from else None, epoch=start_epoch)
            for epoch in range(start_epoch, epochs):
                # closed however the loop ends, so the read-ahead thread stops before the process exits
                with closing(cache.batches(read_size(algo, hp, dev), start=position, prefetch=read_ahead)) as read:
                    batches = to_device(read, dev)  # on a GPU: pinned, copied one batch ahead (the CPU: as read)
                    for batch in (session.batches(batches, lambda: state, checkpoint) if session else batches):
                        if not len(batch):  # a quiet live stream: nothing to train, a look at signals and the clock
                            if stop.signal is not None and state is None:
                                raise Interrupted(f"stopped by {signal.Signals(stop.signal).name} before any record "
                                                  f"arrived from {stream.name}")
                            if state is None:
                                continue
                        elif state is None:
                            state = algo.init(hp, batch.x.shape[1], seed, dev)
                            if val_stream is not None:  # validated on that source, nothing held out
                                state.meta["external_validation"] = True
                        if len(batch):
                            state = algo.update(state, batch)
                            state.meta["position"] = {"epoch": epoch, **batch.position}
                            if batch.bad is not None:
                                state.meta["bad_records"] = batch.bad
                            progress.update(state.meta["records_seen"], batch.fraction, epoch, epochs)
                        if publisher is not None and publisher.due(state.meta["records_seen"]):
                            version = publisher.publish(finalized(state), state.meta["records_seen"])
                            metrics.log("published", model=str(version), records_seen=state.meta["records_seen"],
                                        position=state.meta.get("position"))
                        if stop.signal is not None:
                            checkpoint(f"signal {signal.Signals(stop.signal).name}")
                            raise Interrupted(f"stopped by {signal.Signals(stop.signal).name} after "
                                              f"{state.meta['records_seen']:,} records; checkpoint in {state_path}; "
                                              "continue with --resume")
                        if (checkpoint_every and state.meta["records_seen"] - last_ckpt_records >= checkpoint_every) or (
                                checkpoint_seconds and time.monotonic() - last_ckpt_time >= checkpoint_seconds):
                            checkpoint("periodic")
                        if max_records is not None and state.meta["records_seen"] >= max_records:
                            checkpoint("paused")
                            metrics.log("paused", records_seen=state.meta["records_seen"], epoch=epoch,
                                        message=f"paused after {state.meta['records_seen']:,} records (max_records); "
                                                "continue with resume")
                            return TrainResult(state, finalized(state), out, _brief(algo.describe(state)),
                                               paused=True)
                position = None
                if state is None:
                    raise UsageError(f"{stream.name}: no records to train on")
                state.meta["position"] = {"epoch": epoch + 1, "file": None, "records": 0}
                if stream.bad is not None:  # the pass is over: bad records after its last batch count too
                    state.meta["bad_records"] = stream.bad.to_meta()
                stop_early = False
                if hasattr(algo, "end_epoch"):  # the algorithm validates its own models (and may stop early)
                    with closing(val_cache.batches(hp["mini_batch_size"])) if val_cache is not None \
                            else nullcontext(None) as val_batches:
                        state, stop_early = algo.end_epoch(state, val_batches)
                    if session:  # every process stops, or none
                        stop_early = session.all_agree(stop_early)
                if val_stream is not None or hasattr(algo, "end_epoch"):
                    # this epoch's figures (an algorithm that keeps its best epochs reports that apart)
                    if not hasattr(algo, "end_epoch"):
                        val_metrics = evaluate(finalized(state), val_cache, hp, algo)
                    elif hasattr(algo, "epoch_metrics"):
                        val_metrics = algo.epoch_metrics(state)
                    else:  # the finalized model's own figures
                        val_metrics = finalized(state).meta.get("validation", {})
                    metrics.log("validation", epoch=epoch + 1, **val_metrics)
                _log_cache(metrics, epoch + 1, cache, val_cache)
                metrics.log("epoch", epoch=epoch + 1, **algo.describe(state))
                if stop_early:
                    state.meta["position"] = {"epoch": epochs, "file": None, "records": 0}
                    metrics.log("early_stop", epoch=epoch + 1, message="no model improved on validation for "
                                f"{hp.get('early_stopping_patience')} epochs")
                if stop_early or epoch == epochs - 1:
                    break  # the finished checkpoint follows at once
                if session or time.monotonic() - last_ckpt_time >= EPOCH_CHECKPOINT_GAP_S:
                    checkpoint("epoch end")  # (a session's processes checkpoint together: always)
    finally:
        progress.close()
        torch.set_num_threads(compute_threads)
        _blas.set_block_threads(blocks_before)
        if session:
            session.restore_signals()
    if state is None:
        raise UsageError(f"{stream.name}: no records to train on")
    state.meta["position"] = {"epoch": epochs, "file": None, "records": 0, "complete": True}
    state.meta["complete"] = True
    checkpoint("finished")
    if session:  # rank 0 merges every process's state and alone writes the final state and model
        state, model = session.finish(out, state, algo, metrics)
    else:
        model = finalized(state)
    if not session:
        model.save(out / MODEL_FILE)
    if hasattr(algo, "end_epoch"):  # the finished model's figures: its best epoch's, not the last epoch's
        val_metrics = model.meta.get("validation", {})
    summary = {**_brief(algo.describe(state)), **{f"validation:{k}": v for k, v in val_metrics.items()}}
    if stream.bad is not None:
        tally = BadRecords(run["max_bad_fraction"])
        tally.restore(state.meta.get("bad_records"))
        summary["bad_records"] = tally.summary()
    if hashing is not None:
        summary["categorical"] = hashing_summary(hashing.to_meta())
    if getattr(stream, "header_note", None):  # what --csv-header auto decided, said where the user looks
        summary["csv_header"] = stream.header_note
    if test_source is not None:
        test_stream = examples_of(algo, hp, test_source, state)
        summary.update({f"test:{k}": v for k, v in evaluate(model, test_stream, hp, algo).items()})
    metrics.log("finished", model=str(out / MODEL_FILE), model_meta=model.meta, **summary)
    return TrainResult(state, model, out, summary)


def _half_life_name(algo, given: dict[str, Any]) -> str:
    """The algorithm's hyperparameter that --half-life sets; refused where it has none, or given both ways."""
    name = getattr(algo, "HALF_LIFE", None)
    if name is None:
        raise UsageError(f"--half-life: {algo.NAME} has no half-life; " + getattr(
            algo, "FORGETTING", "it weighs every record alike"))
    if given.get(name) is not None:
        raise UsageError(f"--half-life and {name} say the same: give one")
    return name


def _keep_hashing(state: State, hashing) -> None:
    """The categorical columns' collision tally in the state: counts in its meta, the slots' fingerprints as a
    tensor, so that a resumed run goes on counting (data/hashing.py)."""
    table = hashing.tally.snapshot()
    if table is not None:
        state.tensors[SLOTS_TENSOR] = torch.from_numpy(table)
    state.meta["categorical"] = hashing.to_meta()


def _stream_spec(data, options: dict[str, Any], what: str) -> dict[str, Any]:
    """`Stream`'s arguments for `data`: a Stream's own, or `options` around anything else."""
    if isinstance(data, Stream):
        if options:
            raise UsageError(f"{what} is a Stream: give its options ({', '.join(sorted(options))}) to the Stream")
        return dict(data.spec)
    unknown = set(options) - set(inspect.signature(Stream).parameters)
    if unknown:
        raise TypeError(f"train() got unexpected keyword argument(s) {', '.join(sorted(unknown))}: neither the "
                        "trainer's nor a Stream's")
    return {**{k: None for k in inspect.signature(Stream).parameters}, **options, "source": data}


def _stream(source, shared: dict[str, Any]) -> Stream:
    """A validation or test source: as given when a Stream, else read with the training data's options."""
    if isinstance(source, Stream):
        return source if source.spec["n_features"] is not None or shared["n_features"] is None \
            else source.replace(n_features=shared["n_features"])
    if memory.holds(source) and shared["label_column"] == "first":
        shared = {**shared, "label_column": None}  # labels in memory come as (X, y)
    return Stream(source, **shared)


def _described(source) -> Any:
    """What processes compare of a source: paths as given, in-memory data by its kind."""
    return f"<{type(source).__name__}>" if source is not None and memory.holds(source) else source


def examples_of(algo, hp: dict[str, Any], stream: Stream, state: State | None = None):
    """The batches an algorithm trains on, from a stream of records: the stream itself (rows) unless the
    algorithm says otherwise with `examples(stream, hyperparameters[, state])` (see algorithms/base.py); the state
    is the one training continues (resume, --init-from) or has made (a test source), None on a fresh run."""
    examples = getattr(algo, "examples", None)
    if examples is None:
        return stream
    return examples(stream, hp, state) if len(inspect.signature(examples).parameters) > 2 else examples(stream, hp)


def _log_cache(metrics: Metrics, epoch: int, *caches: EpochCache | None) -> None:
    """Say once when an epoch cache holds a pass, or why it could not keep one."""
    for name, c in zip(("data", "validation"), caches):
        if c is None or c.reported or not (c.ready or c.dropped):
            continue
        if c.ready:
            metrics.log("epoch_cache", epoch=epoch, source=name, mib=round(c.nbytes / 2**20, 3),
                        message=f"later epochs read the {name} source's parsed batches from memory")
        else:
            metrics.log("epoch_cache", epoch=epoch, source=name, message=c.dropped)
        c.reported = True


def check_sparse(algo, stream: Stream) -> None:
    """Refuse a sparse source for an algorithm that takes dense batches only (it declares ACCEPTS_SPARSE)."""
    if stream.sparse and not getattr(algo, "ACCEPTS_SPARSE", False):
        raise UsageError(f"{algo.NAME} takes dense data only; {stream.name} is {stream.format}, which gives sparse "
                         "batches (use a dense format such as CSV)")


def _brief(described: dict[str, Any]) -> dict[str, Any]:
    """What the end-of-run summary shows of `describe`: its numbers and words, not its tables (a model grid)."""
    return {k: v for k, v in described.items() if not isinstance(v, (list, dict))}


def evaluate(model: Model, stream: Stream | EpochCache, hp: dict[str, Any], algo) -> dict[str, float]:
    """Metrics of `model` over a whole stream, with SageMaker's names (for k-means: msd, ssd). An algorithm
    whose `evaluate` gives sums of tensors names its metrics itself (`metrics(model, sums)`)."""
    sums: dict[str, Any] = {}
    with closing(stream.batches(hp["mini_batch_size"])) as batches:
        for batch in batches:
            for k, v in algo.evaluate(model, batch).items():
                sums[k] = sums[k] + v if k in sums else v
    if hasattr(algo, "metrics"):
        return algo.metrics(model, sums)
    out = {}
    wanted = hp.get("eval_metrics", ["msd"])
    if "ssd" in sums and "count" in sums:
        if "msd" in wanted:
            out["msd"] = sums["ssd"] / sums["count"] if sums["count"] else float("nan")
        if "ssd" in wanted:
            out["ssd"] = sums["ssd"]
    return out


def _check_same_algorithm(state: State, algo, where) -> None:
    if state.algorithm != algo.NAME:
        raise IncompatibleStateError(f"{where} holds a {state.algorithm} state, not {algo.NAME}")


def _resumed_hyperparameters(algo, state: State, given: dict[str, Any]) -> dict[str, Any]:
    """Resume uses the checkpoint's hyperparameters; a different value given now is an error."""
    hp = algo.HYPERPARAMETERS.parse({}, base=state.hyperparameters)
    asked = algo.HYPERPARAMETERS.parse(given, base=hp)
    diff = {k: (hp[k], asked[k]) for k in hp if hp[k] != asked[k] and k != "epochs"}
    if diff:
        raise IncompatibleStateError("--resume continues the checkpoint's run, which differs in " + ", ".join(
            f"{k} (checkpoint {a!r}, asked {b!r})" for k, (a, b) in diff.items()))
    return asked


def _continued_hyperparameters(algo, state: State, given: dict[str, Any]) -> dict[str, Any]:
    """--init-from keeps the state's structure; settings that do not change it may be given anew."""
    base = algo.HYPERPARAMETERS.parse({}, base=state.hyperparameters)
    hp = algo.HYPERPARAMETERS.parse(given, base=base)
    fixed = [k for k in getattr(algo, "STRUCTURAL", ()) if hp[k] != base[k]]
    if fixed:
        raise IncompatibleStateError("--init-from cannot change " + ", ".join(
            f"{k} (state {base[k]!r}, asked {hp[k]!r})" for k in fixed) + ": they fix the state's shape")
    return hp


def _check_same_run(saved: dict[str, Any], now: dict[str, Any]) -> None:
    diff = [k for k in RUN_KEYS if k in saved and saved[k] != now.get(k)]
    if diff:
        raise IncompatibleStateError("--resume needs the same run settings as the checkpoint; differs in " +
                                     ", ".join(f"{k} (checkpoint {saved[k]!r}, now {now.get(k)!r})" for k in diff))
