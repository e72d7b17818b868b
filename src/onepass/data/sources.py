"""Sources: turn what the user typed (a path, a glob, a folder, ``-``) into an ordered list of inputs."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, UsageError

FORMATS = ("csv", "parquet", "npy", "libsvm", "jsonl", "arrow", "npz")
_SUFFIXES = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet",
             ".npy": "npy", ".libsvm": "libsvm", ".svm": "libsvm", ".svmlight": "libsvm",
             ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".arrow": "arrow", ".arrows": "arrow",
             ".feather": "arrow", ".ipc": "arrow", ".npz": "npz"}
_COMPRESSED = (".gz", ".bz2", ".xz")


@dataclass(frozen=True)
class Input:
    """One readable input: a file path, or standard input when `path` is ``"-"``."""

    path: str
    size: int | None  # bytes, when known

    @property
    def seekable(self) -> bool:
        return self.path != "-" and not self.path.lower().endswith(_COMPRESSED) and Path(self.path).is_file()


def resolve(spec: str | os.PathLike | list) -> list[Input]:
    """Expand a path, glob, folder or ``-`` into inputs, in a stable (sorted) order.

    Hidden files and names starting with ``_`` (``_SUCCESS``, ``_metadata``) in a folder are skipped.
    """
    if isinstance(spec, (list, tuple)):
        return [i for s in spec for i in resolve(s)]
    spec = os.fspath(spec)
    if spec == "-":
        return [Input("-", None)]
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
        if not files:
            raise DataError("folder holds no data files", source=spec)
    elif path.exists():
        files = [path]
    elif glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError("no file matches this pattern", source=spec)
    else:
        raise DataError("no such file or folder", source=spec)
    return [Input(str(p), _size(p)) for p in files]


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size if p.is_file() else None
    except OSError:
        return None


def detect_format(inputs: list[Input], given: str | None) -> str:
    """The format named by the user, or the one the file names say; stdin defaults to CSV."""
    if given:
        if given not in FORMATS:
            raise UsageError(f"--data-format {given!r} is not supported; valid values: {', '.join(FORMATS)}")
        return given
    def format_of(inp: Input) -> str | None:
        name = inp.path.lower()
        for ext in _COMPRESSED:
            name = name.removesuffix(ext)
        return _SUFFIXES.get(Path(name).suffix, "csv" if inp.path == "-" else None)

    found = {format_of(inp) for inp in inputs}
    if None in found:
        bad = next(i.path for i in inputs if format_of(i) is None)
        raise UsageError(f"cannot tell the format of {bad!r} from its name; pass --data-format "
                         f"({', '.join(FORMATS)})")
    if len(found) > 1:
        raise UsageError(f"the source mixes formats {sorted(found)}; pass one format with --data-format")
    return found.pop()
