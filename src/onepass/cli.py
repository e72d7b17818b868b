"""The command line: `onepass train | finalize | predict | merge | inspect | datasets`.

Exit codes: 0 done, 2 bad usage, 3 bad data, 4 interrupted (checkpoint written; `--resume` continues),
5 a damaged, foreign or incompatible state or model file, 1 anything else.
"""

from __future__ import annotations

import argparse
import functools
from contextlib import closing
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, algorithms, datasets, distributed, merge
from ._files import read_file
from .algorithms.base import Model
from .data.batches import Stream
from .data.sources import FORMATS
from ._process import tune_allocator
from .errors import OnepassError, UsageError
from .hyperparameters import load_json
from .state import MODEL_FILE, STATE_FILE, State
from .train import check_sparse, train


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


def _add_bad_record_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-bad-record", choices=("fail", "skip"), default=None,
                   help="fail (default): stop at the first bad record, naming it; skip: leave bad records out and "
                        "count them by reason")
    p.add_argument("--max-bad-fraction", type=float, default=None, metavar="F",
                   help="with skip: stop once more than this share of the records read were bad (checked after "
                        "1000 records and at the end; default 0.01)")


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `--k` must reach the algorithm, not be read as `--k-range`.
    parser = argparse.ArgumentParser(prog="onepass", description="One-pass training on streams of any length.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"onepass {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", allow_abbrev=False, help="train an algorithm on a source",
                       description="Train ALGO on SRC into the run folder DIR. Hyperparameters use SageMaker's "
                                   "names with - for _ (e.g. --k 10 --extra-center-factor 4).",
                       epilog="\n\n".join(f"hyperparameters of {name}:\n" + algo.HYPERPARAMETERS.doc()
                                          for name, algo in sorted(algorithms.ALGORITHMS.items())),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("algorithm", help=f"one of: {', '.join(sorted(algorithms.ALGORITHMS))}")
    t.add_argument("--data", required=True, help="a file, glob, folder, FIFO, SageMaker pipe-mode channel, URL "
                                                 "(s3://bucket/prefix/*.csv), database URL with --query, or - for "
                                                 "standard input")
    t.add_argument("--out", required=True, help="the run folder: state, model and metrics")
    t.add_argument("--validation", help="a source to evaluate on at the end of every epoch")
    t.add_argument("--test", help="a labelled source to measure the final model on (metrics prefixed test:)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--mini-batch-size", type=int)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--threads", type=int, help="CPU threads for compute and parsing (default: all cores); 1 is one "
                   "thread in all, without read-ahead")
    t.add_argument("--seed", type=int, help="random seed (default 0)")
    t.add_argument("--checkpoint-every", type=int, metavar="N", help="write a checkpoint every N records")
    t.add_argument("--checkpoint-seconds", type=float, default=600.0, metavar="T",
                   help="write a checkpoint every T seconds (default 600; 0 disables)")
    t.add_argument("--epoch-cache-mib", type=float, metavar="MIB",
                   help="with --epochs > 1: keep a whole pass's parsed batches (and the validation source's) in "
                   "memory up to MIB and read later epochs from there (default 256; 0 reads the source every epoch)")
    t.add_argument("--resume", action="store_true", help="continue DIR's checkpoint at the exact next record")
    t.add_argument("--init-from", metavar="DIR", help="continue an earlier state on new data")
    t.add_argument("--overwrite", action="store_true", help="start over in a DIR that holds a state")
    t.add_argument("--hyperparameters", metavar="FILE.json", help="a SageMaker hyperparameter JSON file")
    t.add_argument("--quiet", action="store_true", help="no progress line")
    t.add_argument("--nproc", type=int, metavar="N", help="train on N local processes (launches torchrun; "
                   "each process reads its shard and needs its own core: --threads 1 on N cores)")
    t.add_argument("--max-restarts", type=int, default=0, metavar="R",
                   help="with --nproc: restart the processes up to R times after a failure, from the last checkpoint")
    t.add_argument("--sync-every", type=int, metavar="K", help="several processes, SGD algorithms: average the "
                   "models every K mini-batches (default 100; 0: once, at the end)")
    t.add_argument("--dist-timeout", type=float, metavar="S", help="several processes: seconds to wait for the "
                   "others to start or answer before failing (default 300)")
    t.add_argument("--dist-backend", choices=("auto", "nccl", "gloo"), default="auto",
                   help="several processes: how they communicate (auto: NCCL on CUDA, gloo on the CPU; gloo on "
                   "CUDA lets processes share a GPU)")
    _add_data_options(t)
    _add_bad_record_options(t)

    f = sub.add_parser("finalize", allow_abbrev=False, help="another model from a state, without reading data")
    f.add_argument("state", help="a run folder or a state file")
    f.add_argument("--out", help="where to write the model (default: DIR/model.safetensors)")
    f.add_argument("--k-range", metavar="A:B", help="kmeans: report the cost for each k in A..B (elbow)")
    f.add_argument("--plot", metavar="FILE.png", help="kmeans: the cost against k; linear_learner (binary): "
                   "precision against recall; pca: the explained variance "
                   "of every component the state holds (needs matplotlib)")

    p = sub.add_parser("predict", allow_abbrev=False, help="apply a model to a source")
    p.add_argument("model", help="a run folder or a model file")
    p.add_argument("--data", required=True)
    p.add_argument("--output", default="-", help="output file (default: standard output)")
    p.add_argument("--format", choices=("json", "jsonl", "csv"), default="jsonl")
    p.add_argument("--mini-batch-size", type=int, default=10000)
    _add_data_options(p)
    _add_bad_record_options(p)

    m = sub.add_parser("merge", allow_abbrev=False, help="merge states trained on different data into one")
    m.add_argument("states", nargs="+", help="run folders or state files, same algorithm and configuration")
    m.add_argument("--out", required=True, help="a run folder (or .safetensors file) for the merged state")

    i = sub.add_parser("inspect", allow_abbrev=False, help="show what a state or model file holds")
    i.add_argument("file", help="a state or model file, or a run folder")

    d = sub.add_parser("datasets", allow_abbrev=False, help="write a shipped data set or a generated stream as CSV")
    d.add_argument("name", choices=datasets.NAMES)
    d.add_argument("--out", default="-", help="a CSV file, or - for standard output")
    d.add_argument("--n", type=int, default=1_000_000, help="blobs: records")
    d.add_argument("--d", type=int, default=50, help="blobs: features")
    d.add_argument("--k", type=int, default=10, help="blobs: clusters")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-label", action="store_true", help="leave the label column out")

    c = sub.add_parser("convert", allow_abbrev=False, help="stream a source into another format",
                       description="Write every record of SRC (any source and format onepass reads) to FILE, "
                                   "streamed in bounded memory; the label (--label-column) goes with each record.")
    c.add_argument("--data", required=True, help="a file, glob, folder, URL, or - for standard input")
    c.add_argument("--to", required=True, choices=("recordio-protobuf",), help="the output format")
    c.add_argument("--out", required=True, help="the output file (.gz, .bz2 or .xz compress it), or - for stdout")
    c.add_argument("--feature-dim", type=int, help="LibSVM sources: the number of features")
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
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return distributed.launch(main, args.argv, args.nproc, args.max_restarts, device=args.device)
    result = train(args.algorithm, args.data, args.out, hyperparameters=hp, validation=args.validation,
                   test=args.test, epochs=args.epochs, mini_batch_size=args.mini_batch_size, device=args.device,
                   threads=args.threads, seed=args.seed, checkpoint_every=args.checkpoint_every,
                   checkpoint_seconds=args.checkpoint_seconds or None, resume=args.resume,
                   init_from=args.init_from, overwrite=args.overwrite, epoch_cache_mib=args.epoch_cache_mib,
                   processes=distributed.Processes(args.sync_every, args.dist_timeout, args.dist_backend),
                   progress=_progress(args.quiet or distributed.rank() > 0), **_stream_options(args))
    if distributed.rank() > 0:
        return 0  # rank 0 speaks for all processes
    st, model = result.state, result.model
    print(f"trained {st.algorithm} on {st.meta['records_seen']:,} records of {st.meta['n_features']} features"
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
                max_bad_fraction=getattr(args, "max_bad_fraction", None))


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
    plotted = ("kmeans", "pca", "linear_learner")
    if (args.k_range and state.algorithm != "kmeans") or (args.plot and state.algorithm not in plotted):
        raise UsageError(f"{state.algorithm} has no {'--k-range' if args.k_range else '--plot'} "
                         "(--k-range: kmeans; --plot: kmeans, pca and binary linear_learner)")
    choice = _extra_options(extra, "finalize")
    model = algo.finalize(state, **choice)
    out = Path(args.out) if args.out else (Path(args.state) if Path(args.state).is_dir()
                                           else Path(args.state).parent) / MODEL_FILE
    model.save(out)
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
        if model.meta["predictor_type"] != "binary_classifier":
            raise UsageError("--plot: the precision-recall plot is for binary classifiers")
        from .plots import precision_recall
        recall, precision = algo.precision_recall(model)
        point = (model.meta["validation"].get("recall"), model.meta["validation"].get("precision"))
        print(f"plot:  {precision_recall(recall, precision, args.plot, chosen=point)}")
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


def cmd_predict(args, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"predict: unexpected arguments {' '.join(extra)}")
    model = Model.load(args.model)
    if hasattr(model, "forecast_stream"):  # DeepAR: series records in, SageMaker's forecasts out
        return _forecast(model, args)
    n_features = model.meta.get("n_features")
    stream = Stream(args.data, data_format=args.data_format, label_column=_label(args.label_column),
                    header=_header(args.csv_header), n_features=n_features, zero_based=bool(args.zero_based),
                    weight_column=_label(args.weight_column), columns=args.columns,
                    storage_options=args.storage_options, query=args.query, on_bad_record=args.on_bad_record,
                    max_bad_fraction=args.max_bad_fraction)
    check_sparse(algorithms.get(model.algorithm), stream)
    out = sys.stdout if args.output == "-" else open(args.output, "w")
    try:
        first = True
        if args.format == "json":
            out.write('{"%s":[' % getattr(model, "json_key", "predictions"))  # SageMaker's key per algorithm
        with closing(stream.batches(args.mini_batch_size)) as batches:
            for batch in batches:
                if n_features is not None and batch.x.shape[1] != n_features:
                    raise UsageError(f"{stream.name}: has {batch.x.shape[1]} features, the model expects {n_features}"
                                     " (a label column to leave out? see --label-column)")
                pred = model.predict(batch.x)
                names = list(pred)
                cols = [pred[n].cpu().numpy().tolist() for n in names]
                if args.format == "csv":
                    np.savetxt(out, np.column_stack([pred[n].cpu().numpy() for n in names]), delimiter=",", fmt="%.9g")
                    continue
                for row in zip(*cols):
                    text = json.dumps(dict(zip(names, row)))
                    if args.format == "jsonl":
                        out.write(text + "\n")
                    else:
                        out.write(("" if first else ",") + text)
                    first = False
        if args.format == "json":
            out.write("]}\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if stream.bad is not None:  # skipped records have no output line
        print(f"onepass predict: {stream.bad.summary()} (no output line for them)", file=sys.stderr)
    return 0


def _forecast(model: Model, args) -> int:
    """`predict` for a forecaster: one SageMaker prediction object a series (jsonl), or {"predictions": [...]}
    (json); the configuration (num_samples, output_types, quantiles) from DEEPAR_INFERENCE_CONFIG, as SageMaker's
    batch transform takes it."""
    if args.format == "csv":
        raise UsageError("predict: forecasts are JSON (--format jsonl or json), not CSV")
    try:
        config = json.loads(os.environ.get("DEEPAR_INFERENCE_CONFIG") or "{}")
    except json.JSONDecodeError as e:
        raise UsageError(f"DEEPAR_INFERENCE_CONFIG is not JSON ({e})") from None
    stream = Stream(args.data, data_format=args.data_format, storage_options=args.storage_options, query=args.query)
    out = sys.stdout if args.output == "-" else open(args.output, "w")
    try:
        out.write('{"predictions":[' if args.format == "json" else "")
        for i, pred in enumerate(model.forecast_stream(stream, config)):
            text = json.dumps(pred)
            out.write(text + "\n" if args.format == "jsonl" else ("," if i else "") + text)
        out.write("]}\n" if args.format == "json" else "")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_merge(args, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"merge: unexpected arguments {' '.join(extra)}")
    if len(args.states) < 2:
        raise UsageError("merge: give at least two states")
    states = [State.load(p) for p in args.states]
    merged = functools.reduce(merge, states)  # refuses other algorithms and configurations
    merged.meta["complete"] = True
    merged.meta["merged_from"] = [str(p) for p in args.states]
    out = Path(args.out)
    if out.suffix != ".safetensors":
        out.mkdir(parents=True, exist_ok=True)
    path = merged.save(out)
    model = algorithms.get(merged.algorithm).finalize(merged)
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
    print(json.dumps(report if len(report) > 1 else next(iter(report.values())), indent=2))
    return 0


def cmd_datasets(args, extra: list[str]) -> int:
    out = datasets.export(args.name, args.out, n=args.n, d=args.d, k=args.k, seed=args.seed,
                          label=not args.no_label)
    if out != "-":
        print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_convert(args, extra: list[str]) -> int:
    if extra:
        raise UsageError(f"convert: unexpected arguments {' '.join(extra)}")
    from .data.recordio import write_chunks
    stream = Stream(args.data, data_format=args.data_format, label_column=_label(args.label_column),
                    header=_header(args.csv_header), n_features=args.feature_dim, zero_based=bool(args.zero_based),
                    weight_column=_label(args.weight_column), columns=args.columns,
                    storage_options=args.storage_options, query=args.query)
    n = write_chunks(stream.chunks(), args.out)
    if args.out != "-":
        print(f"wrote {n:,} records to {args.out}", file=sys.stderr)
    return 0


COMMANDS = {"train": cmd_train, "finalize": cmd_finalize, "predict": cmd_predict, "merge": cmd_merge,
            "inspect": cmd_inspect,
            "datasets": cmd_datasets, "convert": cmd_convert}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for `train --nproc`, which runs them again
    tune_allocator()
    try:
        return COMMANDS[args.command](args, extra)
    except OnepassError as e:
        print(f"onepass {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"onepass {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


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
