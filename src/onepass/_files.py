"""Safe, checksummed, atomically written files of named tensors plus a JSON header.

A file is a plain safetensors file. Its ``__metadata__`` holds one key, ``onepass``, whose value is the JSON
header: the kind of file (state or model), the algorithm, the format version, the algorithm's own metadata and
a SHA-256 checksum over the header and every tensor's bytes. Nothing is ever unpickled, and a file is either
read whole and verified, or refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from .errors import StateFileError, UsageError

FORMAT_NAME = "onepass"
FORMAT_VERSION = 1
_HEADER_KEY = "onepass"


def _checksum(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    body = {k: v for k, v in header.items() if k != "checksum"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too
    return "sha256:" + h.hexdigest()


def write_file(path: str | os.PathLike, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write atomically: a temporary file in the same folder, fsync, rename, fsync of the folder."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **header}
    header["checksum"] = _checksum(header, tensors)
    blob = _st_save(tensors, metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)})
    with atomic_output(path, "wb", shared=False) as f:
        f.write(blob)
    return path


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w", shared: bool = True) -> Iterator[IO]:
    """A file opened for writing that appears at `path` only whole: written under a temporary name in the same
    folder (missing folders are made, the one rule of every command that writes), fsynced and renamed when the
    block ends; removed, leaving `path` as it was, when the block raises (an error, Ctrl-C, SIGTERM). `shared`:
    the permissions a plain `open` gives (the umask's); otherwise the owner's only, as mkstemp makes it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # named as the user gave it, not by the temporary name
        raise UsageError(f"{path}: cannot create the file ({e.strerror or e})") from None
    if shared:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_header(blob: bytes, name: str) -> dict[str, Any]:
    """Parse and check the safetensors framing and the onepass header, without touching tensor data."""
    if len(blob) < 8:
        raise StateFileError(f"{name}: not a onepass file: only {len(blob)} bytes (truncated or empty)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8 or n > 100_000_000:
        raise StateFileError(f"{name}: not a onepass file, or truncated: its header claims {n} bytes "
                             f"but the file has {len(blob) - 8} after the length field")
    try:
        st_header = json.loads(blob[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StateFileError(f"{name}: not a onepass file: the safetensors header is not JSON ({e})") from None
    if not isinstance(st_header, dict):
        raise StateFileError(f"{name}: not a onepass file: malformed safetensors header")
    meta = st_header.get("__metadata__") or {}
    if _HEADER_KEY not in meta:
        raise StateFileError(f"{name}: a safetensors file without a onepass header (written by another program?)")
    try:
        header = json.loads(meta[_HEADER_KEY])
    except json.JSONDecodeError as e:
        raise StateFileError(f"{name}: corrupted onepass header ({e})") from None
    if header.get("format") != FORMAT_NAME:
        raise StateFileError(f"{name}: not a onepass file (format {header.get('format')!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StateFileError(f"{name}: written by a newer onepass (format version {version}; this onepass "
                             f"reads up to {FORMAT_VERSION}). Upgrade onepass to read it.")
    # Every tensor's data must lie inside the file: a truncated file is refused before anything is loaded.
    end = 0
    for key, info in st_header.items():
        if key != "__metadata__":
            end = max(end, int(info["data_offsets"][1]))
    if 8 + n + end != len(blob):
        raise StateFileError(f"{name}: truncated or padded: tensor data should end at byte {8 + n + end}, "
                             f"the file has {len(blob)} bytes")
    return header


def read_file(path: str | os.PathLike, *, expect_kind: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify a file written by `write_file`. Raises StateFileError and returns nothing on any doubt."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise StateFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise StateFileError(f"{path}: is a folder, not a state or model file") from None
    header = read_header(blob, str(path))
    try:
        tensors = _st_load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise StateFileError(f"{path}: corrupted tensor data ({e})") from None
    if header.get("checksum") != _checksum(header, tensors):
        raise StateFileError(f"{path}: checksum mismatch: the file is corrupted or was edited")
    if expect_kind is not None and header.get("kind") != expect_kind:
        raise StateFileError(f"{path}: holds a {header.get('kind')}, not a {expect_kind}")
    return header, tensors


def rng_to_tensor(gen: torch.Generator) -> torch.Tensor:
    return gen.get_state().clone()


def tensor_to_rng(state: torch.Tensor, device: str | torch.device = "cpu") -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.set_state(state.to(torch.uint8).cpu())
    return gen


def to_jsonable(value: Any) -> Any:
    """Plain JSON values from numpy scalars and tuples, for headers and metrics."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
