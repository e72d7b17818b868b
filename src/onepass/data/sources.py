"""Sources: turn what the user typed (a path, a glob, a folder, ``-``, a FIFO, an fsspec URL, a database URL with a
query) into an ordered list of inputs."""

from __future__ import annotations

import glob
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, OnepassError, UsageError
from . import live

FORMATS = ("csv", "parquet", "npy", "libsvm", "jsonl", "arrow", "npz", "recordio-protobuf", "text")
_SUFFIXES = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet",
             ".npy": "npy", ".libsvm": "libsvm", ".svm": "libsvm", ".svmlight": "libsvm",
             ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".arrow": "arrow", ".arrows": "arrow",
             ".feather": "arrow", ".ipc": "arrow", ".npz": "npz",
             ".rec": "recordio-protobuf", ".recordio": "recordio-protobuf", ".pbr": "recordio-protobuf"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
PIPE_WAIT_SECONDS = 60.0  # how long a pipe-mode pass waits for its FIFO to appear (SageMaker makes it lazily)


@dataclass(frozen=True)
class Input:
    """One readable input: a file path, a FIFO, an fsspec URL, standard input (``"-"``) or a SQL query.

    query:           a SQL query; `path` is then the database URL with any password masked, `connect` the real one.
    pipe:            SageMaker pipe mode: `path` names a channel whose passes are the FIFOs ``path_0``, ``path_1``...
    storage_options: fsspec options for a URL (credentials, endpoint); never shown, compared or saved.
    memory:          data held in memory (memory.Source): `path` then only names it.
    live:            a live stream (data/live: Redis, NATS, Kafka, Kinesis): `path` is its URL with any password
                     masked, `connect` the real one.
    """

    path: str
    size: int | None  # bytes, when known
    storage_options: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    query: str | None = None
    pipe: bool = False
    connect: str | None = field(default=None, compare=False, repr=False)
    memory: Any = field(default=None, compare=False, repr=False)
    live: Any = field(default=None, compare=False, repr=False)

    @property
    def remote(self) -> bool:
        """An fsspec URL (``s3://``, ``https://``...), read through fsspec."""
        return self.query is None and self.memory is None and self.live is None and is_url(self.path)

    @property
    def compressed(self) -> bool:
        return self.path.lower().endswith(_COMPRESSED)

    @property
    def seekable(self) -> bool:
        """Whether reading can restart at a saved offset: files and URLs of known size (range reads), uncompressed."""
        if self.memory is not None:
            return self.memory.seekable
        if self.live is not None:  # every broker reads on from a saved position
            return True
        if self.path == "-" or self.query is not None or self.pipe or self.compressed:
            return False
        if self.remote:
            return self.size is not None
        return Path(self.path).is_file()

    @property
    def rereadable(self) -> bool:
        """Whether another pass (epoch) can read it again: anything but stdin and a lone FIFO (a query runs again,
        a pipe-mode channel opens its next FIFO)."""
        if self.memory is not None:
            return self.memory.rereadable
        if self.live is not None:  # a live stream is read once, as it comes (the trainer refuses epochs)
            return False
        return self.path != "-" and (self.remote or self.query is not None or self.pipe or not is_fifo(self.path))

    def in_pass(self, n: int, wait: float | None = None) -> Input:
        """The input of pass `n`: a pipe-mode channel's FIFO ``path_n`` (waiting for it to appear); else itself."""
        if not self.pipe:
            return self
        fifo = f"{self.path}_{n}"
        deadline = time.monotonic() + (PIPE_WAIT_SECONDS if wait is None else wait)
        while not os.path.exists(fifo):
            if time.monotonic() >= deadline:
                raise DataError(f"pipe mode: pass {n} has no FIFO (waited {PIPE_WAIT_SECONDS if wait is None else wait:g} s "
                                f"for {fifo})", source=self.path)
            time.sleep(0.05)
        return Input(fifo, None)


def is_url(path: str) -> bool:
    return bool(_URL.match(path))


def is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def redact(url: str) -> str:
    """`url` with the password of its user part masked, for messages, logs and checkpoints."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", url)


def resolve(spec: str | os.PathLike | list, storage_options: dict[str, Any] | None = None,
            query: str | None = None) -> list[Input]:
    """Expand a path, glob, folder, FIFO, URL, ``-`` or database URL (with `query`) into inputs, in a stable
    (sorted) order.

    Hidden files and names starting with ``_`` (``_SUCCESS``, ``_metadata``) in a folder are skipped. A path that
    does not exist but whose ``PATH_0`` is a FIFO is a SageMaker pipe-mode channel (one FIFO per pass).
    """
    if isinstance(spec, (list, tuple)):
        return [i for s in spec for i in resolve(s, storage_options, query)]
    spec = os.fspath(spec)
    if query is not None:
        if not is_url(spec):
            raise UsageError(f"--query needs a database URL as --data (sqlite:///file.db, postgresql://...), "
                             f"not {spec!r}")
        return [Input(redact(spec), None, query=query, connect=spec)]
    if live.is_live(spec):
        return [Input(redact(spec), None, storage_options, connect=spec, live=live.parse(spec))]
    if is_url(spec):
        return _resolve_url(spec, storage_options or {})
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
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file() or is_fifo(p))
        if not files:
            raise DataError("no file matches this pattern", source=spec)
    elif is_fifo(f"{spec}_0"):
        return [Input(spec, None, pipe=True)]
    else:
        raise DataError("no such file or folder", source=spec)
    return [Input(str(p), _size(p)) for p in files]


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size if p.is_file() else None
    except OSError:
        return None


def filesystem(url: str, storage_options: dict[str, Any] | None):
    """The fsspec filesystem of `url` and the path inside it; a missing protocol package is named."""
    import fsspec

    scheme = _URL.match(url).group(1).lower()
    if scheme.split("+")[0] not in fsspec.available_protocols():
        raise UsageError(f"{url}: fsspec knows no protocol {scheme!r}; a database URL needs --query 'SELECT ...'")
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as e:
        extra = {"s3": "s3", "s3a": "s3", "http": "http", "https": "http"}.get(scheme)
        raise UsageError(f"{url}: {e}" + (f" (pip install 'onepass[{extra}]')" if extra else "")) from None
    except (TypeError, ValueError) as e:
        raise UsageError(f"{url}: bad storage options ({e})") from None


def remote_error(e: BaseException, url: str) -> DataError:
    """A clear error naming the URL for a failure of the store (missing object, credentials, network)."""
    if isinstance(e, FileNotFoundError):
        return DataError("no such object or folder", source=url, reason="missing")
    if isinstance(e, PermissionError):
        return DataError(f"access denied ({e}); check the credentials (AWS_* environment variables, ~/.aws, "
                         "--storage-options)", source=url, reason="access denied")
    return DataError(f"cannot read: {type(e).__name__}: {e}", source=url, reason="unreadable")


def _resolve_url(url: str, options: dict[str, Any]) -> list[Input]:
    """Objects under a URL, a URL glob or a URL prefix ("folder"), sorted by name, with their sizes."""
    fs, path = filesystem(url, options)
    try:
        if glob.has_magic(path):
            found = fs.glob(path, detail=True)
            if not found:
                raise DataError("no object matches this pattern", source=url, reason="missing")
        else:
            info = fs.info(path)
            found = fs.find(path, detail=True) if info.get("type") == "directory" else {path: info}
    except OnepassError:
        raise
    except Exception as e:  # s3fs, gcsfs, aiohttp... raise their own kinds; each is named with the URL
        raise remote_error(e, url) from None
    root = path.rstrip("/") + "/"
    def hidden(p: str) -> bool:  # inside a folder: names starting with . or _ (_SUCCESS, _metadata)
        return p.startswith(root) and any(part.startswith((".", "_")) for part in p[len(root):].split("/"))

    files = sorted(((p, i) for p, i in found.items() if i.get("type", "file") == "file" and not hidden(p)),
                   key=lambda item: item[0])
    if not files:
        raise DataError("folder holds no data files", source=url, reason="missing")
    return [Input(p if is_url(p) else fs.unstrip_protocol(p), i.get("size"), options or None) for p, i in files]


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
        return _SUFFIXES.get(Path(name).suffix, "csv" if inp.path == "-" or inp.pipe or inp.live else None)

    found = {format_of(inp) for inp in inputs}
    if None in found:
        bad = next(i.path for i in inputs if format_of(i) is None)
        raise UsageError(f"cannot tell the format of {bad!r} from its name; pass --data-format "
                         f"({', '.join(FORMATS)})")
    if len(found) > 1:
        raise UsageError(f"the source mixes formats {sorted(found)}; pass one format with --data-format")
    return found.pop()
