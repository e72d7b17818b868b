"""The command line: `onepass train | finalize | predict | evaluate | merge | inspect | datasets | convert`.

Exit codes: 0 done, 2 bad usage, 3 bad data, 4 interrupted (train: checkpoint written, `--resume` continues; the
other commands leave no half-written output), 5 a damaged, foreign or incompatible state or model file, 1 anything
else. Every error is one line, `onepass COMMAND: error: ...`, naming what and where.

Every command that writes a file or a run folder makes its missing parent folders, and writes files whole (a
temporary name, then a rename), so a failed or stopped command leaves nothing that looks finished.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import signal
import threading
import time
from contextlib import closing
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, algorithms, datasets, distributed, merge, predictions
from ._files import atomic_output, read_file
from .algorithms.base import Model
from .data.batches import CATEGORICAL_FORMATS, Stream
from .data.hashing import keep_in_model, summary as hashing_summary
from .data.sources import FORMATS
from ._process import tune_allocator
from .errors import Interrupted, OnepassError, UsageError
from .hyperparameters import SAGEMAKER_KEYS, load_json
from .state import MODEL_FILE, STATE_FILE, State
from .train import _brief, check_sparse, train


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (the command's usage is a screen long): what is wrong, and where to
    read more."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind, low: float, *, strict: bool = False):
    """An argparse type: an int or float of at least `low` (above it when `strict`), refused with a message."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got "
                                             f"{text!r}") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected a number {'above' if strict else 'of at least'} {low:g}, "
                                             f"got {text}")
        return value
    return parse


_POSITIVE, _NOT_NEGATIVE = _number(int, 1), _number(int, 0)


def _label(value: str | None):
    return None if value in (None, "none") else value


def _column_list(value: str) -> list[str | int]:
    return [int(c) if c.strip().lstrip("-").isdigit() else c.strip() for c in value.split(",") if c.strip()]


def _header(value: str) -> bool | None:
    return {"auto": None, "true": True, "false": False}[value]


def _storage_options(value: str) -> dict[str, Any]:
    try:
        options = json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e})") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"anon\": true}'")
    return options


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-options", type=_storage_options, metavar="JSON",
                   help="fsspec options for URLs, e.g. '{\"endpoint_url\": \"http://host:9000\", \"key\": ...}' "
                        "(default: the standard AWS_* variables and ~/.aws files); never saved in a checkpoint")
    p.add_argument("--query", help="a SQL query to read from the database URL given as --data "
                                   "(sqlite:///file.db, postgresql+psycopg://user@host/db)")
    p.add_argument("--data-format", choices=FORMATS, help="detected from file names if omitted")
    p.add_argument("--label-column", default=None,
                   help="none (default for unsupervised), first, last, an index or a column name")
    p.add_argument("--weight-column", default=None,
                   help="the column holding each record's weight (an index or a name; default: every record weighs 1)")
    p.add_argument("--columns", default=None, type=_column_list,
                   help="the feature columns to read, comma-separated names or indices (default: all but the label "
                        "and weight)")
    p.add_argument("--csv-header", choices=("auto", "true", "false"), default="auto",
                   help="whether CSV files start with a header line (default: detect)")
    p.add_argument("--zero-based", action="store_true", default=None,
                   help="LibSVM: feature indices start at 0 (default: at 1, as SVMlight's)")
    p.add_argument("--text-column", default=None, metavar="NAME",
                   help="ntm: the column of raw text (CSV, JSON lines, Parquet) to tokenize and count; plain text "
                        "files, one document a line, are --data-format text")
    p.add_argument("--categorical-columns", default=None, type=_column_list, metavar="NAMES",
                   help="linear-learner, factorization-machines: columns whose values (text or integers) are each "
                        "hashed into the feature_dim slots after the numeric columns, no vocabulary needed "
                        "(MurmurHash3 of 'column\\0value'; see the README); CSV, Parquet, Arrow, JSON lines, SQL. "
                        "predict and evaluate take them from the model")


def _add_bad_record_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-bad-record", choices=("fail", "skip"), default=None,
                   help="fail (default): stop at the first bad record, naming it; skip: leave bad records out and "
                        "count them by reason")
    p.add_argument("--max-bad-fraction", type=_number(float, 0.0), default=None, metavar="F",
                   help="with skip: stop once more than this share of the records read were bad (checked after "
                        "1000 records and at the end; default 0.01)")


def _per_algorithm(title: str, attribute: str) -> str:
    """--help's list of every algorithm's hyperparameters (train) or choices (finalize)."""
    return "\n\n".join(f"{title} of {name}:\n" + getattr(algo, attribute).doc()
                       for name, algo in sorted(algorithms.ALGORITHMS.items()))


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `--k` must reach the algorithm, not be read as `--k-range`.
    parser = _Parser(prog="onepass", description="One-pass training on streams of any length.", allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"onepass {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", allow_abbrev=False, help="train an algorithm on a source",
                       description="Train ALGO on SRC into the run folder DIR. Hyperparameters use SageMaker's "
                                   "names with - for _ (e.g. --k 10 --extra-center-factor 4).",
                       epilog=_per_algorithm("hyperparameters", "HYPERPARAMETERS"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("algorithm", help=f"one of: {', '.join(sorted(algorithms.ALGORITHMS))}")
    t.add_argument("--data", required=True, help="a file, glob, folder, FIFO, SageMaker pipe-mode channel, URL "
                                                 "(s3://bucket/prefix/*.csv), database URL with --query, or - for "
                                                 "standard input")
    t.add_argument("--out", required=True, help="the run folder: state, model and metrics")
    t.add_argument("--validation", help="a source to evaluate on at the end of every epoch")
    t.add_argument("--test", help="a labelled source to measure the final model on (metrics prefixed test:)")
    t.add_argument("--epochs", type=_POSITIVE, help="passes over the data (default: the algorithm's, 1 for most)")
    t.add_argument("--mini-batch-size", type=_POSITIVE, help="records per mini-batch (default: the algorithm's)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--threads", type=_POSITIVE, help="CPU threads for compute and parsing (default: all cores); 1 is "
                   "one thread in all, without read-ahead")
    t.add_argument("--seed", type=int, help="random seed (default 0)")
    t.add_argument("--checkpoint-every", type=_POSITIVE, metavar="N", help="write a checkpoint every N records")
    t.add_argument("--checkpoint-seconds", type=_number(float, 0.0), default=600.0, metavar="T",
                   help="write a checkpoint every T seconds (default 600; 0 disables)")
    t.add_argument("--epoch-cache-mib", type=_number(float, 0.0), metavar="MIB",
                   help="with --epochs > 1: keep a whole pass's parsed batches (and the validation source's) in "
                   "memory up to MIB and read later epochs from there (default 256; 0 reads the source every epoch)")
    t.add_argument("--resume", action="store_true", help="continue DIR's checkpoint at the exact next record")
    t.add_argument("--init-from", metavar="DIR", help="continue an earlier state on new data")
    t.add_argument("--overwrite", action="store_true", help="start over in a DIR that holds a state")
    t.add_argument("--hyperparameters", metavar="FILE.json", help="a SageMaker hyperparameter JSON file")
    t.add_argument("--quiet", action="store_true", help="no progress line")
    t.add_argument("--nproc", type=_POSITIVE, metavar="N", help="train on N local processes (launches torchrun; "
                   "each process reads its shard and needs its own core: --threads 1 on N cores)")
    t.add_argument("--max-restarts", type=_NOT_NEGATIVE, default=0, metavar="R",
                   help="with --nproc: restart the processes up to R times after a failure, from the last checkpoint")
    t.add_argument("--sync-every", type=_NOT_NEGATIVE, metavar="K", help="several processes, SGD algorithms: "
                   "average the models every K mini-batches (default 100; 0: once, at the end)")
    t.add_argument("--dist-timeout", type=_number(float, 0.0, strict=True), metavar="S", help="several processes: "
                   "seconds to wait for the others to start or answer before failing (default 300)")
    t.add_argument("--dist-backend", choices=("auto", "nccl", "gloo"), default="auto",
                   help="several processes: how they communicate (auto: NCCL on CUDA, gloo on the CPU; gloo on "
                   "CUDA lets processes share a GPU)")
    _add_data_options(t)
    _add_bad_record_options(t)
    t.add_argument("--publish-every", metavar="T|N", help="publish a model into DIR every T (60s, 5m, 1h) or N "
                   "records while training: models/ keeps the last versions, model.safetensors (which serve "
                   "reloads) is the newest")
    t.add_argument("--half-life", type=_POSITIVE, metavar="N", help="forget, so that the model follows a drifting "
                   "stream: a record's weight halves after N records (k-means' half_life_time_size; the linear "
                   "learner forgets through its learning rate: --use-lr-scheduler false keeps it constant)")
    t.add_argument("--stream-field", metavar="FIELD", help="a live Redis stream: the entry's field that holds the "
                   "record (default data)")
    t.add_argument("--start-at", choices=("earliest", "latest"), help="a live stream trained afresh: from its "
                   "oldest record (earliest, the default) or only the records that come after training started "
                   "(latest); --resume always goes on from the checkpoint's position")
    t.add_argument("--allow-trimmed", action="store_true", default=None, help="a live stream trimmed past the "
                   "position to read from (retention, MAXLEN) goes on from its oldest record, the loss counted and "
                   "warned of (default: an error naming the partition and how many records were lost)")

    f = sub.add_parser("finalize", allow_abbrev=False, help="another model from a state, without reading data",
                       description="A model from the state in DIR (or a state file), chosen by --CHOICE VALUE "
                                   "options (below, per algorithm), without reading the data again.",
                       epilog=_per_algorithm("choices", "CHOICES"), formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("state", help="a run folder or a state file")
    f.add_argument("--out", help="where to write the model (default: DIR/model.safetensors)")
    f.add_argument("--k-range", metavar="A:B", help="kmeans: report the cost for each k in A..B (elbow)")
    f.add_argument("--plot", metavar="FILE.png", help="kmeans: the cost against k; linear_learner (binary): "
                   "precision against recall; pca: the explained variance "
                   "of every component the state holds; ntm: each topic's top words with their weights "
                   "(needs matplotlib)")

    p = sub.add_parser("predict", allow_abbrev=False, help="apply a model to a source")
    p.add_argument("model", help="a run folder or a model file")
    p.add_argument("--data", required=True, help="the records to predict: any source train reads")
    p.add_argument("--output", default="-", help="output file, written whole or not at all (default: standard "
                                                 "output)")
    p.add_argument("--format", choices=("json", "jsonl", "csv"), default=None,
                   help="json (SageMaker's one object), jsonl (a line a record) or csv (default: from the output's "
                        "extension, .json, .jsonl or .csv; else jsonl)")
    p.add_argument("--mini-batch-size", type=_POSITIVE, default=10000, help="records predicted at once (default "
                                                                             "10000)")
    p.add_argument("--id-column", metavar="NAME|INDEX", help="CSV: a column whose text goes with each prediction "
                   "(key NAME, or id), so that outputs join back to their records even when bad ones are skipped; "
                   "not a feature unless --columns names it")
    p.add_argument("--join-source", choices=("none", "input"), default="none",
                   help="input: each output also holds the record as read (label, then features), as SageMaker's "
                        "batch transform join_source=Input (default none)")
    p.add_argument("--plot", metavar="FILE.png", help="deepar: a forecast fan (median, 50 %% and 90 %% intervals "
                   "after the last observed points) of the series --series picks (needs matplotlib)")
    p.add_argument("--series", default="0", metavar="I,J,...", help="with --plot: which series of --data to draw, "
                   "0-based in the order read (default 0)")
    _add_data_options(p)
    _add_bad_record_options(p)

    e = sub.add_parser("evaluate", allow_abbrev=False, help="score a model on labelled data",
                       description="The metrics training reports (validation and --test: accuracy, AUC, ... for "
                                   "the linear learner; msd for k-means and PCA) of MODEL on the records of SRC.")
    e.add_argument("model", help="a run folder or a model file")
    e.add_argument("--data", required=True, help="labelled records (the label first by default for supervised "
                                                 "models, as in training)")
    e.add_argument("--mini-batch-size", type=_POSITIVE, default=10000, help="records scored at once (default "
                                                                             "10000)")
    e.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    _add_data_options(e)
    _add_bad_record_options(e)

    m = sub.add_parser("merge", allow_abbrev=False, help="merge states trained on different data into one")
    m.add_argument("states", nargs="+", help="run folders or state files, same algorithm and configuration")
    m.add_argument("--out", required=True, help="a run folder (or .safetensors file) for the merged state")
    m.add_argument("--overwrite", action="store_true", help="replace the state (and model) OUT already holds")
    m.add_argument("--allow-same", action="store_true", help="merge a state with an identical one (its records "
                                                              "then count twice)")

    i = sub.add_parser("inspect", allow_abbrev=False, help="show what a state or model file holds")
    i.add_argument("file", help="a state or model file, or a run folder")
    i.add_argument("--json", action="store_true", help="the whole header, summary and tensor list as JSON")

    d = sub.add_parser("datasets", allow_abbrev=False, help="write a shipped data set or a generated stream as CSV")
    d.add_argument("name", choices=datasets.NAMES)
    d.add_argument("--out", default="-", help="a CSV file, or - for standard output")
    d.add_argument("--n", type=_POSITIVE, default=1_000_000, help="blobs: records")
    d.add_argument("--d", type=_POSITIVE, default=50, help="blobs: features")
    d.add_argument("--k", type=_POSITIVE, default=10, help="blobs: clusters")
    d.add_argument("--seed", type=int, default=0, help="blobs: random seed")
    d.add_argument("--no-label", action="store_true", help="leave the label column out (it is written first)")

    v = sub.add_parser("serve", allow_abbrev=False, help="answer SageMaker's inference requests over HTTP",
                       description="Serve a model on SageMaker's inference contract (GET /ping, POST /invocations). "
                                   "Without MODEL, as SageMaker's container entry point: the model in /opt/ml/model "
                                   "(/opt/ml/models with SAGEMAKER_MULTI_MODEL=true), 0.0.0.0, SAGEMAKER_BIND_TO_PORT "
                                   "(8080), SAGEMAKER_MODEL_SERVER_WORKERS and SAGEMAKER_MODEL_SERVER_TIMEOUT. A run "
                                   "folder is watched: a new model written by train or finalize answers within half "
                                   "a second.")
    v.add_argument("model", nargs="?", help="a run folder or a model file (default: SageMaker's /opt/ml/model)")
    v.add_argument("--host", help="the address to bind (default 127.0.0.1; 0.0.0.0 as a SageMaker container)")
    v.add_argument("--port", type=int, help="the port (default 8080, or SAGEMAKER_BIND_TO_PORT)")
    v.add_argument("--workers", type=int, help="server processes (default 1, or SAGEMAKER_MODEL_SERVER_WORKERS)")
    v.add_argument("--model-root", metavar="DIR", help="multi-model endpoint: POST /models loads models by name "
                   "from under DIR only")
    v.add_argument("--auth-token", help="require 'Authorization: Bearer TOKEN' on every route but /ping (default: "
                   "the ONEPASS_AUTH_TOKEN environment variable; none: no token)")
    v.add_argument("--max-body-mib", type=float, help="the largest request body (default 6, SageMaker's limit)")
    v.add_argument("--max-concurrency", type=int, default=64, help="requests in progress at once before answering "
                   "503 (default 64)")
    v.add_argument("--timeout", type=float, help="seconds a prediction may take before 504 (default 60)")
    v.add_argument("--device", default="cpu", help="where models predict: cpu, cuda or cuda:N (default cpu)")

    u = sub.add_parser("tune", allow_abbrev=False, help="search hyperparameters, continuing the best trials' states",
                       description="Search RANGES (SageMaker's HyperparameterTuner JSON) for the configuration of ALGO "
                                   "that is best on --objective, Hyperband-style: every trial trains in rungs of "
                                   "records, paused with a checkpoint, and only the promising ones are continued "
                                   "from their states, never retrained. Fixed hyperparameters as in train "
                                   "(--k 10 ...). DIR gets trials.jsonl, objective.png and best/ (the best trial's "
                                   "run folder).")
    u.add_argument("algorithm", help=f"one of: {', '.join(sorted(algorithms.ALGORITHMS))}")
    u.add_argument("--data", required=True, help="the training source (as train's --data)")
    u.add_argument("--validation", required=True, help="the source every trial is scored on")
    u.add_argument("--out", required=True, help="the study's folder")
    u.add_argument("--ranges", required=True, metavar="RANGES.json", help="ContinuousParameterRanges, "
                   "IntegerParameterRanges, CategoricalParameterRanges (SageMaker's format)")
    u.add_argument("--objective", required=True, help="a validation metric: validation:rmse, "
                   "validation:roc_auc_score, validation:msd, ...")
    u.add_argument("--direction", choices=("minimize", "maximize"), help="default: maximize for accuracy, AUC, "
                   "precision, recall and F scores, minimize otherwise")
    u.add_argument("--trials", type=int, default=20, help="configurations to try (default 20)")
    u.add_argument("--strategy", choices=("hyperband", "asha", "bayesian", "random"), default="hyperband",
                   help="hyperband: random configurations, Hyperband's brackets; asha: random configurations, "
                        "successive halving alone (cheapest); bayesian: TPE with Hyperband's brackets; random: every "
                        "configuration on the whole budget (default hyperband)")
    u.add_argument("--max-records", type=int, help="a trial's whole budget in records (default: one pass)")
    u.add_argument("--min-records", type=int, help="the first rung (default: max-records / 27)")
    u.add_argument("--seed", type=int, default=0, help="makes a study repeatable (default 0)")
    u.add_argument("--resume", action="store_true", help="continue DIR's study after a crash or a stop")
    u.add_argument("--overwrite", action="store_true", help="start over in a DIR that holds a study")
    u.add_argument("--device", default="cpu", help="where trials train (default cpu)")
    u.add_argument("--threads", type=int, help="CPU threads for each trial")
    u.add_argument("--hyperparameters", metavar="FILE.json", help="fixed hyperparameters, SageMaker's JSON")
    _add_data_options(u)

    c = sub.add_parser("convert", allow_abbrev=False, help="stream a source into another format",
                       description="Write every record of SRC (any source and format onepass reads) to FILE, "
                                   "streamed in bounded memory; the label (--label-column) goes with each record.")
    c.add_argument("--data", required=True, help="a file, glob, folder, URL, or - for standard input")
    c.add_argument("--to", required=True, choices=("recordio-protobuf",), help="the output format")
    c.add_argument("--out", required=True, help="the output file (.gz, .bz2 or .xz compress it), or - for stdout")
    c.add_argument("--feature-dim", type=_POSITIVE, help="LibSVM sources: the number of features")
    _add_data_options(c)
    return parser


def _extra_options(extra: list[str], command: str) -> dict[str, Any]:
    """`--name value` and `--name=value` pairs that argparse did not know: hyperparameters or choices."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or tok == "--":
            raise UsageError(f"{command}: unexpected argument {tok!r}")
        if "=" in tok:
            name, value = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise UsageError(f"{command}: option {tok} needs a value")
            name, value = tok[2:], extra[i + 1]
            i += 2
        out[name.replace("-", "_")] = value
    return out


def cmd_train(args, extra: list[str]) -> int:
    hp: dict[str, Any] = {}
    if args.hyperparameters:
        hp.update({k.replace("-", "_"): v for k, v in load_json(args.hyperparameters).items()})
    hp.update(_extra_options(extra, "train"))
    _check_options(hp, algorithms.get(args.algorithm), args.option_names)
    out = Path(args.out)
    before = None if args.resume else (_stamp(out / STATE_FILE), _stamp(out / MODEL_FILE))  # what it held before
    made = _make_folder(out, "--out") if distributed.rank() == 0 else False
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        code = distributed.launch(main, args.argv, args.nproc, args.max_restarts, device=args.device)
        if code:
            _undo_refused(out, before if code == UsageError.exit_code else None, made)
        return code
    try:
        result = _train(args, hp)
    except OnepassError as e:
        if "WORLD_SIZE" not in os.environ:  # (under torchrun, the processes' own files)
            _undo_refused(out, before if isinstance(e, UsageError) else None, made)
        raise
    if distributed.rank() > 0:
        return 0  # rank 0 speaks for all processes
    st, model = result.state, result.model
    print(f"trained {st.algorithm} on {st.meta['records_seen']:,} records of {st.meta['n_features']} features "
          f"({_epochs(st, result.out)})"
          + (f" ({len(st.meta['lineage'])} earlier run(s) continued)" if st.meta.get("lineage") else ""))
    _print_model(st.algorithm, model)
    for k, v in result.metrics.items():
        if k != "bad_records":
            print(f"  {k}: {_fmt(v)}")
    if "bad_records" in result.metrics:
        print(result.metrics["bad_records"])
    print(f"state:   {result.state_path}")
    print(f"model:   {result.model_path}")
    print(f"metrics: {result.out / 'metrics.jsonl'}")
    return 0


def _stream_options(args) -> dict[str, Any]:
    """The data options of a command (its --data-format, --label-column, ...), as `Stream`'s arguments."""
    return dict(data_format=args.data_format, label_column=_label(args.label_column), header=_header(args.csv_header),
                zero_based=args.zero_based, weight_column=_label(args.weight_column), columns=args.columns,
                storage_options=args.storage_options, query=args.query,
                on_bad_record=getattr(args, "on_bad_record", None),
                max_bad_fraction=getattr(args, "max_bad_fraction", None), text_column=args.text_column,
                categorical_columns=args.categorical_columns)


def _check_options(given: dict[str, Any], algo, options: list[str]) -> None:
    """A name that is no hyperparameter of `algo` but close to an option of the command (`--thread` for
    `--threads`) is a mistyped option: say which, rather than listing every hyperparameter."""
    for name in given:
        if name in algo.HYPERPARAMETERS.specs or name.startswith(SAGEMAKER_KEYS):
            continue
        close = difflib.get_close_matches(f"--{name.replace('_', '-')}", options, n=1, cutoff=0.8)
        if close and not difflib.get_close_matches(name, algo.HYPERPARAMETERS.specs, n=1, cutoff=0.8):
            raise UsageError(f"unknown option --{name.replace('_', '-')}; did you mean {close[0]}?")


def _train(args, hp: dict[str, Any]):
    """The trainer on the command's options."""
    return train(args.algorithm, args.data, args.out, hyperparameters=hp, validation=args.validation,
                 test=args.test, epochs=args.epochs, mini_batch_size=args.mini_batch_size, device=args.device,
                 threads=args.threads, seed=args.seed, checkpoint_every=args.checkpoint_every,
                 checkpoint_seconds=args.checkpoint_seconds or None, resume=args.resume,
                 init_from=args.init_from, overwrite=args.overwrite, epoch_cache_mib=args.epoch_cache_mib,
                 processes=distributed.Processes(args.sync_every, args.dist_timeout, args.dist_backend),
                 progress=_progress(args.quiet or distributed.rank() > 0), publish_every=args.publish_every,
                 **_stream_options(args), stream_field=args.stream_field, allow_trimmed=args.allow_trimmed,
                 start_at=args.start_at, half_life=args.half_life)


def _make_folder(path: Path, option: str) -> bool:
    """Make the folder `path` and its missing parents (the rule of every command that writes); whether it was
    made now. One that cannot be made is a usage error naming it, before any work."""
    if path.is_dir():
        return False
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        raise UsageError(f"{option} {path}: exists and is not a folder") from None
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot create the folder ({e.strerror})") from None
    return True


def _stamp(path: Path) -> tuple[int, int] | None:
    """Which file `path` is (inode and modification time), or None: a state written since differs."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _undo_refused(out: Path, before: tuple | None, made: bool) -> None:
    """A fresh run refused with a usage error (settings that cannot work: a k larger than the data allows, a
    feature_dim the data does not have) leaves no state of its own behind: it would make a corrected rerun stop
    with "already holds a training state", and resuming it with other settings is refused anyway. A state that
    was there before (a refused --overwrite) is kept. (Bad data and interruptions keep their checkpoint: `--resume`
    continues once the data is fixed.) A folder this command made that holds no state goes too, whatever the
    error. `before`: None to keep any checkpoint (a resumed run's, or one kept after bad data)."""
    if before is not None and _stamp(out / STATE_FILE) != before[0]:
        for p in [out / STATE_FILE, out / "checkpoint.json", *out.glob("state.rank*-of-*.safetensors")]:
            p.unlink(missing_ok=True)
        if _stamp(out / MODEL_FILE) != before[1]:
            (out / MODEL_FILE).unlink(missing_ok=True)
    if made and out.is_dir() and all(p.name.startswith("metrics") for p in out.iterdir()):  # (metrics: the log)
        for p in out.iterdir():
            p.unlink()
        out.rmdir()


def _epochs(state: State, out: Path) -> str:
    """"1 epoch", or "1,500 records x 2 epochs": the passes a run made (from its metrics' epoch events), and the
    records a pass (the records of earlier runs that --init-from continued left out)."""
    epochs = 0
    try:
        for line in (out / "metrics.jsonl").read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "start" and not event.get("resume"):
                epochs = 0
            elif event.get("event") == "epoch":
                epochs = max(epochs, int(event.get("epoch", 0)))
    except (OSError, ValueError):
        pass
    if epochs <= 1:
        return "1 epoch"
    earlier = int((state.meta.get("lineage") or [{}])[-1].get("records_seen") or 0)
    return f"{(int(state.meta['records_seen']) - earlier) // epochs:,} records x {epochs} epochs"


def _progress(quiet: bool):
    from .progress import Progress
    return Progress(enabled=False) if quiet else None


def _fmt(v: Any) -> str:
    return f"{v:,.6g}" if isinstance(v, float) else str(v)


def _print_model(algorithm: str, model: Model) -> None:
    print("\n".join(algorithms.get(algorithm).summary(model)))


def cmd_finalize(args, extra: list[str]) -> int:
    state = State.load(args.state)
    algo = algorithms.get(state.algorithm)
    plotted = ("kmeans", "pca", "linear_learner", "ntm")
    if (args.k_range and state.algorithm != "kmeans") or (args.plot and state.algorithm not in plotted):
        raise UsageError(f"{state.algorithm} has no {'--k-range' if args.k_range else '--plot'} "
                         "(--k-range: kmeans; --plot: kmeans, pca, binary linear_learner and ntm)")
    choice = _extra_options(extra, "finalize")
    if args.k_range:  # every request checked before anything is written: a refusal leaves the old model as it was
        _k_range(args.k_range, 1, state.meta["n_active"])
    model = keep_in_model(algo.finalize(state, **choice), state.meta)  # hashed categorical columns
    if state.algorithm == "linear_learner" and args.plot and model.meta["predictor_type"] != "binary_classifier":
        raise UsageError("--plot: the precision-recall plot is for binary classifiers")
    out = Path(args.out) if args.out else (Path(args.state) if Path(args.state).is_dir()
                                           else Path(args.state).parent) / MODEL_FILE
    _make_folder(out.parent, "--out")
    if args.plot:
        _make_folder(Path(args.plot).parent, "--plot")
    _print_model(state.algorithm, model)
    if state.algorithm == "kmeans" and (args.k_range or args.plot):
        ks = _k_range(args.k_range, model.meta["k"], state.meta["n_active"])
        costs = algo.costs(state, ks, **{k: v for k, v in choice.items() if k != "k"})
        print("  k  cost")
        for k, c in costs.items():
            print(f"{k:3d}  {c:,.6g}")
        if args.plot:
            from .plots import elbow
            print(f"plot:  {elbow(costs, args.plot, chosen=model.meta['k'])}")
    elif state.algorithm == "pca" and args.plot:
        from .plots import explained_variance
        ratios = algo.finalize(state, **{**choice, "num_components": algo.available_components(
            state, model.meta["subtract_mean"])}).meta["explained_variance_ratio"]
        print(f"plot:  {explained_variance(ratios, args.plot, chosen=model.meta['num_components'])}")
    elif state.algorithm == "linear_learner" and args.plot:
        from .plots import precision_recall
        recall, precision = algo.precision_recall(model)
        point = (model.meta["validation"].get("recall"), model.meta["validation"].get("precision"))
        print(f"plot:  {precision_recall(recall, precision, args.plot, chosen=point)}")
    elif state.algorithm == "ntm" and args.plot:
        from .plots import topics
        print(f"plot:  {topics(model.top_word_weights(), args.plot)}")
    model.save(out)  # last: a failure above leaves the model file as it was
    print(f"model: {out}")
    return 0


def _k_range(text: str | None, k: int, most: int) -> list[int]:
    if not text:
        return list(range(1, min(most, 2 * k) + 1))
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(f"--k-range {text!r}: expected A:B, e.g. 2:20") from None
    if not 1 <= a <= b <= most:
        raise UsageError(f"--k-range {text}: expected 1 <= A <= B <= {most} (the summary's size)")
    return list(range(a, b + 1))


def _stream(args, n_features: int | None = None, model=None) -> Stream:
    """The --data source with the data options every reading command shares; a model's categorical columns unless
    --categorical-columns says otherwise."""
    categorical = getattr(args, "categorical_columns", None)
    inherited = model.meta.get("categorical_columns") if categorical is None and model is not None else None
    id_column = getattr(args, "id_column", None)
    stream = Stream(args.data, data_format=args.data_format, label_column=_label(args.label_column),
                  header=_header(args.csv_header), n_features=n_features, zero_based=bool(args.zero_based),
                  weight_column=_label(args.weight_column), columns=args.columns,
                  storage_options=args.storage_options, query=args.query,
                  on_bad_record=getattr(args, "on_bad_record", None),
                  max_bad_fraction=getattr(args, "max_bad_fraction", None),
                  id_column=int(id_column) if id_column and id_column.lstrip("-").isdigit() else id_column,
                  text_column=getattr(args, "text_column", None), categorical_columns=categorical)
    if inherited and stream.format in CATEGORICAL_FORMATS:  # raw values, as trained (LibSVM: hashed already)
        stream = stream.replace(categorical_columns=inherited)
        layout = model.meta.get("categorical_layout")
        if layout and not args.columns:  # the numeric columns it was trained on, in their order
            stream.hashing.numeric = layout["numeric"]
    return stream


def _say_header(command: str, stream: Stream) -> None:
    """What --csv-header auto decided: always on a terminal, and wherever a line was read as column names (a line
    with no output: what joins predictions back to the records must know it)."""
    if stream.header_note and (sys.stderr.isatty() or any(h for h, _ in stream.headers.values())):
        print(f"onepass {command}: CSV header: {stream.header_note}", file=sys.stderr)


def cmd_predict(args, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"predict: unexpected arguments {' '.join(extra)}")
    model = Model.load(args.model)
    if hasattr(model, "forecast_stream"):  # DeepAR: series records in, SageMaker's forecasts out
        return _forecast(model, args)
    if args.plot:
        raise UsageError(f"predict --plot draws forecasts of series (deepar), not {model.algorithm}'s predictions")
    n_features = model.meta.get("n_features")
    stream = _stream(args, n_features, model)
    algo = algorithms.get(model.algorithm)
    if (args.text_column is not None or stream.format == "text") and hasattr(algo, "examples"):
        stream = algo.examples(stream, {}, model)  # raw text, counted over the model's vocabulary
    check_sparse(algo, stream)
    if args.join_source == "input" and stream.sparse:
        raise UsageError(f"--join-source input: {stream.name} gives sparse records, which are not written out")
    fmt = predictions.output_format(args.format, args.output)
    id_key = "id" if args.id_column is None or args.id_column.lstrip("-").isdigit() else args.id_column
    tty = sys.stderr.isatty()
    from .progress import Progress
    progress, started, n = Progress(enabled=tty), time.monotonic(), 0
    if args.output != "-":
        _make_folder(Path(args.output).parent, "--output")
    with (atomic_output(args.output) if args.output != "-" else predictions.standard_output()) as out:
        first = True
        if fmt == "json":
            out.write('{"%s":[' % getattr(model, "json_key", "predictions"))  # SageMaker's key per algorithm
        with closing(_Width(stream, n_features).batches(args.mini_batch_size)) as batches:
            for batch in batches:
                pred = model.predict(batch.x)
                names = list(pred)
                if fmt == "csv":
                    predictions.write_csv(out, pred, batch, args.join_source == "input")
                else:
                    cols = [predictions.json_values(n, pred[n]) for n in names]
                    lead = predictions.joined(batch, args.join_source == "input", id_key)
                    for i, row in enumerate(zip(*cols)):
                        text = json.dumps({**{k: v[i] for k, v in lead.items()}, **dict(zip(names, row))})
                        if fmt == "jsonl":
                            out.write(text + "\n")
                        else:
                            out.write(("" if first else ",") + text)
                        first = False
                n += len(batch)
                progress.update(n, batch.fraction, 0, 1)
        if fmt == "json":
            out.write("]}\n")
    progress.close()
    _say_header("predict", stream)
    if stream.bad is not None:  # skipped records have no output line
        print(f"onepass predict: {stream.bad.summary()} (no output line for them)", file=sys.stderr)
    if tty:
        where = "standard output" if args.output == "-" else args.output
        print(f"onepass predict: {n:,} records predicted in {time.monotonic() - started:.1f} s -> {where} ({fmt})",
              file=sys.stderr)
    return 0


class _Width:
    """A stream whose batches must have the model's number of features: one that has not is a usage error naming
    the source (and the likely cause), before the model sees it."""

    def __init__(self, stream: Stream, n_features: int | None):
        self.stream, self.n_features = stream, n_features

    def batches(self, size: int):
        with closing(self.stream.batches(size)) as batches:
            for batch in batches:
                if self.n_features is not None and batch.x.shape[1] != self.n_features:
                    raise UsageError(f"{self.stream.name}: has {batch.x.shape[1]} features, the model expects "
                                     f"{self.n_features} (a label column to leave out? see --label-column)")
                yield batch


def cmd_evaluate(args, extra: list[str]) -> int:
    """The metrics of a finished model on labelled data: train's own `evaluate`, as --test reports them."""
    if extra:
        raise UsageError(f"evaluate: unexpected arguments {' '.join(extra)}")
    from .train import evaluate
    model = Model.load(args.model)
    algo = algorithms.get(model.algorithm)
    if args.label_column is None and getattr(algo, "SUPERVISED", False):
        args.label_column = "first"  # as training reads it: SageMaker's layout
    stream = _stream(args, model.meta.get("n_features"), model)
    check_sparse(algo, stream)
    hp = {"mini_batch_size": args.mini_batch_size, "eval_metrics": ["msd", "ssd"]}
    metrics = evaluate(model, _Width(stream, model.meta.get("n_features")), hp, algo)
    _say_header("evaluate", stream)
    if stream.bad is not None:
        print(f"onepass evaluate: {stream.bad.summary()} (not scored)", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{model.algorithm} model {args.model} on {stream.name}:")
        for k, v in metrics.items():
            print(f"  {k}: {_fmt(v)}")
    return 0


def _forecast(model: Model, args) -> int:
    """`predict` for a forecaster: one SageMaker prediction object a series (jsonl), or {"predictions": [...]}
    (json); the configuration (num_samples, output_types, quantiles) from DEEPAR_INFERENCE_CONFIG, as SageMaker's
    batch transform takes it."""
    fmt = predictions.output_format(args.format, args.output)
    if fmt == "csv":
        raise UsageError("predict: forecasts are JSON (--format jsonl or json), not CSV")
    try:
        config = json.loads(os.environ.get("DEEPAR_INFERENCE_CONFIG") or "{}")
    except json.JSONDecodeError as e:
        raise UsageError(f"DEEPAR_INFERENCE_CONFIG is not JSON ({e})") from None
    stream = Stream(args.data, data_format=args.data_format, storage_options=args.storage_options, query=args.query)
    chosen = _series_choice(args.series) if args.plot else []
    if args.plot:
        if not stream.rereadable:
            raise UsageError(f"predict --plot reads the chosen series again: {stream.name} can be read only once")
        _make_folder(Path(args.plot).parent, "--plot")
    if args.output != "-":
        _make_folder(Path(args.output).parent, "--output")
    with (atomic_output(args.output) if args.output != "-" else predictions.standard_output()) as out:
        out.write('{"predictions":[' if fmt == "json" else "")
        for i, pred in enumerate(model.forecast_stream(stream, config)):
            text = json.dumps(pred)
            out.write(text + "\n" if fmt == "jsonl" else ("," if i else "") + text)
        out.write("]}\n" if fmt == "json" else "")
    if args.plot:
        path = _fan_plot(model, stream, chosen, args.plot)
        print(f"plot:  {path}", file=sys.stderr)
    return 0


def _series_choice(text: str) -> list[int]:
    try:
        chosen = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        chosen = [-1]
    if not chosen or chosen[0] < 0:
        raise UsageError(f"--series {text!r}: expected 0-based series numbers separated by commas, e.g. 0,3")
    return chosen


def _fan_plot(model: Model, stream: Stream, chosen: list[int], path: str) -> Path:
    """The chosen series' last points (four horizons) and their forecast fans, in one picture."""
    from .data.windows import Frequency
    from .plots import forecast_fan

    P = model.hp["prediction_length"]
    recs = [r for i, r in zip(range(chosen[-1] + 1), stream.series(horizon=P)) if i in chosen]
    if len(recs) < len(chosen):
        raise UsageError(f"--series {chosen[-1]}: {stream.name} has fewer series (numbers are 0-based)")
    fc = model.forecast(recs, quantiles=[0.05, 0.25, 0.5, 0.75, 0.95], output_types=["quantiles"])
    freq, drawn = Frequency.parse(model.hp["time_freq"]), []
    for i, r in zip(chosen, recs):
        T = r.target.size
        keep = min(T, 4 * P)
        drawn.append((f"series {i} (line {r.line})", freq.times(r.start, T - keep, T + P).astype("datetime64[m]"),
                      r.target[T - keep:]))
    return forecast_fan(drawn, fc, path)


def cmd_merge(args, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"merge: unexpected arguments {' '.join(extra)}")
    if len(args.states) < 2:
        raise UsageError("merge: give at least two states")
    out = Path(args.out)
    target = out if out.suffix == ".safetensors" else out / STATE_FILE
    if target.exists() and not args.overwrite:
        raise UsageError(f"--out {out} already holds a state; give another --out, or --overwrite to replace it")
    files = [Path(p) / STATE_FILE if Path(p).is_dir() else Path(p) for p in args.states]
    headers = [read_file(f, expect_kind="state")[0] for f in files]
    for i, j in ((i, j) for j in range(len(files)) for i in range(j)):
        if headers[i]["checksum"] == headers[j]["checksum"] and not args.allow_same:
            raise UsageError(f"{args.states[i]} and {args.states[j]} hold the same state: merging would count its "
                             f"{headers[i]['meta'].get('records_seen', 0):,} records twice (--allow-same to do it "
                             "anyway)")
    states = [State.load(p) for p in files]
    merged = functools.reduce(merge, states)  # refuses other algorithms and configurations
    merged.meta["complete"] = True
    merged.meta["merged_from"] = [str(p) for p in args.states]
    model = keep_in_model(algorithms.get(merged.algorithm).finalize(merged), merged.meta)  # before writing
    _make_folder(target.parent, "--out")
    path = merged.save(target)
    if out.suffix != ".safetensors":
        model.save(out / MODEL_FILE)
    print(f"merged {len(states)} {merged.algorithm} states: {merged.meta['records_seen']:,} records")
    _print_model(merged.algorithm, model)
    print(f"state: {path}")
    return 0


def cmd_inspect(args, extra: list[str]) -> int:
    path = Path(args.file)
    files = [p for p in (path / STATE_FILE, path / MODEL_FILE) if p.exists()] if path.is_dir() else [path]
    if not files:
        raise UsageError(f"{path} holds neither {STATE_FILE} nor {MODEL_FILE}")
    report = {}
    for p in files:
        header, tensors = read_file(p)
        summary = {}
        if header.get("kind") == "state":  # what the algorithm makes of it: counts, sizes, error bounds
            algo = algorithms.get(header["algorithm"])
            summary = {"summary": algo.describe(State(header["algorithm"], header["hyperparameters"], tensors,
                                                      header["meta"]))}
        report[str(p)] = {**{k: v for k, v in header.items()}, **summary,
                          "checksum_ok": True,
                          "tensors": {n: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
                                      for n, t in sorted(tensors.items())}}
        if not args.json:
            print("\n".join(_brief_report(p, report[str(p)], tensors)))
    if args.json:
        print(json.dumps(report if len(report) > 1 else next(iter(report.values())), indent=2))
    return 0


def _brief_report(path: Path, info: dict[str, Any], tensors: dict) -> list[str]:
    """What a file holds in a few lines: kind, algorithm, records and features, the algorithm's summary."""
    meta = info.get("meta", {})
    mib = sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20
    lines = [f"{path}: {info.get('algorithm')} {info.get('kind')}, checksum ok, {len(tensors)} tensors "
             f"({mib:,.3g} MiB)"]
    if info.get("kind") == "state":
        done = "finished" if meta.get("complete") else "not finished (a checkpoint: --resume continues it)"
        lines.append(f"  {meta.get('records_seen', 0):,} records of {meta.get('n_features')} features, {done}")
        lines += [f"  {k}: {_fmt(v)}" for k, v in _brief(info.get("summary", {})).items()]
        if "categorical" in meta:  # hashed categorical columns and their collisions (data/hashing.py)
            lines.append(f"  {hashing_summary(meta['categorical'])}")
        hp = info.get("hyperparameters", {})
        lines.append("  hyperparameters: " + ", ".join(f"{k}={v}" for k, v in hp.items()))
    else:
        model = Model.load(path)
        lines += ["  " + line for line in algorithms.get(model.algorithm).summary(model)]
        if meta.get("categorical_columns"):
            lines.append(f"  categorical columns (hashed; predict and serve hash them alike): "
                         f"{','.join(map(str, meta['categorical_columns']))}")
    lines.append("  (--json: the whole header and every tensor)")
    return lines


def cmd_datasets(args, extra: list[str]) -> int:
    if args.out != "-":
        _make_folder(Path(args.out).parent, "--out")
    out = datasets.export(args.name, args.out, n=args.n, d=args.d, k=args.k, seed=args.seed,
                          label=not args.no_label)
    if out != "-":
        print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_convert(args, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"convert: unexpected arguments {' '.join(extra)}")
    from .data.recordio import write_chunks
    stream = _stream(args, args.feature_dim)
    if args.out != "-":
        _make_folder(Path(args.out).parent, "--out")
    n = write_chunks(stream.chunks(), args.out)
    _say_header("convert", stream)
    if args.out != "-":
        print(f"wrote {n:,} records to {args.out}", file=sys.stderr)
    return 0


def cmd_serve(args, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"serve: unexpected arguments {' '.join(extra)}")
    try:
        from .serving import Settings, run as serve, sagemaker_settings
    except ImportError as e:
        raise UsageError(f"serve needs Starlette and uvicorn ({e}); pip install 'onepass[serve]'") from None
    if args.model is None:
        settings, server = sagemaker_settings()
    else:
        settings, server = Settings(model=args.model), {"host": "127.0.0.1", "port": 8080, "workers": 1}
    for name, value in (("host", args.host), ("port", args.port), ("workers", args.workers)):
        if value is not None:
            server[name] = value
    if server["workers"] < 1:
        raise UsageError(f"--workers must be at least 1, got {server['workers']}")
    settings.model_root = args.model_root or settings.model_root
    settings.auth_token = args.auth_token or os.environ.get("ONEPASS_AUTH_TOKEN") or None
    settings.max_concurrency, settings.device = args.max_concurrency, args.device
    if args.max_body_mib is not None:
        settings.max_body_bytes = int(args.max_body_mib * 1024 * 1024)
    if args.timeout is not None:
        settings.timeout = args.timeout
    if settings.model is not None and not Path(settings.model).exists():
        raise UsageError(f"serve: {settings.model}: no such run folder or model file")
    print(f"onepass serve: http://{server['host']}:{server['port']} ({server['workers']} worker(s))", file=sys.stderr,
          flush=True)
    try:
        serve(settings, **server)
    except ValueError as e:
        raise UsageError(f"serve: {e}") from None
    return 0


def cmd_tune(args, extra: list[str]) -> int:
    from .tuning import tune

    hp: dict[str, Any] = {}
    if args.hyperparameters:
        hp.update({k.replace("-", "_"): v for k, v in load_json(args.hyperparameters).items()})
    hp.update(_extra_options(extra, "tune"))
    options = {k: v for k, v in _stream_options(args).items() if v is not None}
    result = tune(args.algorithm, args.data, args.validation, args.out, ranges=args.ranges, objective=args.objective,
                  direction=args.direction, trials=args.trials, strategy=args.strategy, max_records=args.max_records,
                  min_records=args.min_records, seed=args.seed, hyperparameters=hp, resume=args.resume,
                  overwrite=args.overwrite, device=args.device, threads=args.threads, **options)
    names = list(result.table[0]["hyperparameters"]) if result.table else []
    varied = [n for n in names if len({json.dumps(r["hyperparameters"][n]) for r in result.table}) > 1]
    print(f"{'trial':>5}  {'state':<8} {'records':>12}  {args.objective:>24}  " + "  ".join(varied))
    for r in result.table:
        print(f"{r['trial']:>5}  {r['state']:<8} {r['records_trained']:>12,}  {r['objective']:>24.6g}  "
              + "  ".join(_fmt(r["hyperparameters"][n]) for n in varied))
    print(f"best: trial {result.table[0]['trial']}, {args.objective} {result.best_objective:.6g}; "
          f"{result.records_trained:,} records trained in all")
    print(f"best run: {result.best}")
    print(f"trials:   {Path(args.out) / 'trials.jsonl'}")
    return 0


COMMANDS = {"train": cmd_train, "finalize": cmd_finalize, "predict": cmd_predict, "evaluate": cmd_evaluate,
            "merge": cmd_merge,
            "inspect": cmd_inspect,
            "datasets": cmd_datasets, "convert": cmd_convert, "serve": cmd_serve,
            "tune": cmd_tune}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.option_names = [o for a in _subparser(parser, args.command)._actions for o in a.option_strings]
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for `train --nproc`, which runs them again
    tune_allocator()
    # SIGTERM stops a command as Ctrl-C does (train's loop catches both itself, to checkpoint first): outputs
    # under way are removed, and the exit code is 4. Not in a worker of `train --nproc`: its agent's handler rules.
    if threading.current_thread() is threading.main_thread() and "WORLD_SIZE" not in os.environ:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return COMMANDS[args.command](args, extra)
    except OnepassError as e:
        return _error(args.command, str(e), e.exit_code)
    except KeyboardInterrupt:
        print(f"onepass {args.command}: interrupted; no output was left half-written", file=sys.stderr)
        return Interrupted.exit_code
    except BrokenPipeError:
        return 0
    except OSError as e:  # a file that cannot be read or written: one line naming it, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        return _error(args.command, f"{where}{e.strerror or e}", 1)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _error(command: str, message: str, code: int) -> int:
    """Say an error once. A worker of `train --nproc` leaves its message to the launcher (distributed.launch), which
    prints the first cause once rather than one copy per process."""
    folder = os.environ.get(distributed.ERRORS_ENV)
    if folder and "WORLD_SIZE" in os.environ:
        try:
            Path(folder, f"rank{distributed.rank()}").write_text(f"{code}\n{message}")
            return code
        except OSError:
            pass
    print(f"onepass {command}: error: {message}", file=sys.stderr)
    return code


def run() -> None:
    """The `onepass` command: `main`, then leave at once with its exit status. Leaving without the interpreter's
    teardown avoids a race in it between pyarrow's and torch's native thread pools, which aborted about one run in
    twenty on a loaded machine, after all the work was done ("terminate called without an active exception",
    apache/arrow#34314). Every file onepass writes is closed (and fsynced) before `main` returns."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
