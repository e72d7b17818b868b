"""NumPy ``.npz`` archives, read in row slices without loading an array whole, and never unpickled.

Arrays: the features are the array ``x`` (or ``X``, or the archive's only array). A label or weight is taken only when
asked for (as in every format, so that an unsupervised run never trains on labels by mistake): ``label_column``
(``weight_column``) naming an array of the archive, such as ``y`` (``w``), takes that array, one value per row of the
features; ``first``, ``last`` or an index takes a column of the features, as for ``.npy``. ``columns`` chooses feature
columns by index.

Arrays stored uncompressed (``np.savez``) are memory-mapped at their place in the zip file. Compressed ones
(``np.savez_compressed``) are decompressed as a stream, one slice of rows at a time; resuming decompresses from the
array's start up to the row (that is how zip members seek). A compressed array in Fortran order is loaded whole: its
rows are not contiguous.
"""

from __future__ import annotations

import os
import struct
import tokenize
import zipfile
import zlib
from typing import Iterator

import numpy as np

from ..errors import DataError, UsageError
from .chunks import Chunk, checked_rows, resolve_columns
from .sources import Input

SLICE_BYTES = 1 << 24
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local header: signature ... name length, extra length
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError, RuntimeError)


class _Array:
    """One array of an archive, read by rows: a memory map (stored member) or a decompressing stream."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str):
        self.name = info.filename.removesuffix(".npy")
        f = zf.open(info)
        version = np.lib.format.read_magic(f)
        try:
            if version == (1, 0):
                self.shape, fortran, self.dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                self.shape, fortran, self.dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"array {self.name!r} is in .npy format version {version}, which is not read")
        except (SyntaxError, tokenize.TokenError, TypeError) as e:  # NumPy parses the header as a Python literal
            raise ValueError(f"array {self.name!r} has a damaged header ({type(e).__name__}: {e})") from None
        if self.dtype.hasobject:
            raise DataError(f"array {self.name!r} holds Python objects (reading them would unpickle code; never done)",
                            source=path, reason="bad npz")
        data_at = f.tell()
        row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        if info.file_size < data_at + row_bytes * (self.shape[0] if self.shape else 1):
            raise DataError(f"array {self.name!r} is truncated", source=path, reason="bad npz")
        self._f, self._row_bytes, self._at, self._whole, self._map = f, row_bytes, data_at, None, None
        order = "F" if fortran else "C"
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1 and self.shape and self.shape[0]:
            zf.fp.seek(info.header_offset)
            sig, *_, name_len, extra_len = _LOCAL_HEADER.unpack(zf.fp.read(_LOCAL_HEADER.size))
            if sig == b"PK\x03\x04":
                start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + data_at
                self._map = np.memmap(zf.filename, dtype=self.dtype, mode="r", offset=start, shape=self.shape,
                                      order=order)
        if self._map is None and fortran:
            f.seek(0)
            self._whole = np.lib.format.read_array(f, allow_pickle=False)

    def rows(self, r0: int, r1: int) -> np.ndarray:
        if self._map is not None:
            return self._map[r0:r1]
        if self._whole is not None:
            return self._whole[r0:r1]
        r1 = min(r1, self.shape[0])
        self._f.seek(self._at + r0 * self._row_bytes)  # a no-op when reading on from the last slice
        data = self._f.read((r1 - r0) * self._row_bytes)
        if len(data) != (r1 - r0) * self._row_bytes:
            raise EOFError(f"array {self.name!r} ends early")
        return np.frombuffer(data, dtype=self.dtype).reshape((r1 - r0, *self.shape[1:]))

    def close(self) -> None:
        self._f.close()
        self._map = self._whole = None


def read(inp: Input, file_index: int, *, label: str | int | None = None, header: bool | None = None,
         start: int = 0, line: int = 0, block_size: int | None = None, weight: str | int | None = None,
         columns: list[str | int] | None = None, bad=None) -> Iterator[Chunk]:
    """Yield chunks from row `start` on; a chunk's offset is its first row. `bad` (on_bad_record="skip"): rows
    holding a value that is not finite are left out and attached to the chunks."""
    if not (inp.seekable and os.path.isfile(inp.path)):
        raise DataError("an .npz archive needs random access: read it from a local, uncompressed file",
                        source=inp.path if inp.path != "-" else "<stdin>", reason="bad npz")
    arrays: list[_Array] = []
    try:
        with zipfile.ZipFile(inp.path) as zf:
            members = {i.filename.removesuffix(".npy"): i for i in zf.infolist() if not i.is_dir()}
            x_name = next((n for n in ("x", "X") if n in members), None)
            if x_name is None and len(members) == 1:
                x_name = next(iter(members))
            if x_name is None:
                raise DataError(f"no features: the archive has no array 'x' or 'X' (arrays: "
                                f"{', '.join(members) or 'none'})", source=inp.path, reason="bad npz")
            x_arr = _Array(zf, members[x_name], inp.path)
            arrays.append(x_arr)
            if len(x_arr.shape) not in (1, 2) or x_arr.dtype.kind not in "biuf":
                raise DataError(f"array {x_name!r}: expected a 1-D or 2-D numeric array, found shape "
                                f"{x_arr.shape} of {x_arr.dtype}", source=inp.path, reason="bad npz")
            n = x_arr.shape[0]
            if n == 0:
                raise DataError("file is empty: no records", source=inp.path, reason="empty")
            extra = {}
            for role, option, chosen in (("y", "--label-column", label), ("w", "--weight-column", weight)):
                if isinstance(chosen, str) and chosen in members and chosen != x_name:
                    extra[role] = _Array(zf, members[chosen], inp.path)
                    arrays.append(extra[role])
                    _check_per_row(extra[role], n, inp.path)
                elif isinstance(chosen, str) and chosen not in ("none", "first", "last") \
                        and not chosen.lstrip("-").isdigit():
                    raise UsageError(f"{option} {chosen!r}: {inp.path} has no such array (arrays: "
                                     f"{', '.join(members)}) and {x_name!r} has no named columns")
            width = x_arr.shape[1] if len(x_arr.shape) == 2 else 1
            y_col, w_col, x_cols = resolve_columns(None if "y" in extra else label, None if "w" in extra else weight,
                                                   [str(i) for i in range(width)], inp.path, columns)
            if not x_cols:
                raise DataError(f"no feature columns: array {x_name!r} has only the label or weight", source=inp.path,
                                reason="no features")
            step = max(1, SLICE_BYTES // max(1, width * x_arr.dtype.itemsize))
            for r in range(start, n, step):
                block = x_arr.rows(r, r + step).reshape(-1, width)
                # always a copy: a view of the read-only memory map would make read-only batches
                x = np.array(block[:, x_cols], dtype=np.float32, order="C", copy=True)
                y = (extra["y"].rows(r, r + step).reshape(-1) if "y" in extra else
                     block[:, y_col] if y_col is not None else None)
                w = (extra["w"].rows(r, r + step).reshape(-1) if "w" in extra else
                     block[:, w_col] if w_col is not None else None)
                y = None if y is None else y.astype(np.float32)
                w = None if w is None else w.astype(np.float32)
                x, y, w, events = checked_rows(x, y, w, inp.path, r, skip=bad is not None)
                yield Chunk(x, y, file_index, r, 0, r, min(1.0, (r + step) / n), w, events)
    except _READ_ERRORS as e:
        raise DataError(f"not a readable .npz archive ({e})", source=inp.path, reason="bad npz") from None
    finally:
        for a in arrays:
            a.close()


def _check_per_row(a: _Array, n: int, path: str) -> None:
    """A label or weight array holds one number per record: shape (n,) or (n, 1)."""
    if a.dtype.kind not in "biuf" or a.shape not in ((n,), (n, 1)):
        raise DataError(f"array {a.name!r}: expected {n} numbers (one per row of the features), found shape "
                        f"{a.shape} of {a.dtype}", source=path, reason="bad npz")
