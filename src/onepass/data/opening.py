"""Opening an input as a binary stream: a local file, a FIFO, standard input or an fsspec URL (streamed by range
reads, never downloaded whole), decompressed on the fly by its suffix (.gz, .bz2, .xz, .zst)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import sys
from typing import IO, BinaryIO, Callable

from .sources import Input, filesystem, remote_error

REMOTE_BLOCK = 1 << 23  # 8 MiB range reads: few requests, bounded memory


class _Zstd(io.RawIOBase):
    """Zstandard decompression of a binary stream (all its frames), raising EOFError when the stream ends inside a
    frame and OSError on corrupt data, as the stdlib's decompressors do (zstandard's own reader stops silently)."""

    def __init__(self, raw: IO[bytes]):
        import zstandard

        self._raw, self._new, self._error = raw, zstandard.ZstdDecompressor().decompressobj, zstandard.ZstdError
        self._d, self._pending, self._at, self._in_frame = self._new(), b"", 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._at == len(self._pending):
            data = self._raw.read(1 << 16)  # small reads: what one read decompresses to stays bounded
            if not data:
                if self._in_frame:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                return 0
            out = []
            try:
                while data:
                    self._in_frame = True
                    out.append(self._d.decompress(data))
                    data = b""
                    if self._d.eof:  # a frame ended: the rest is the next frame
                        data, self._d, self._in_frame = self._d.unused_data, self._new(), False
            except self._error as e:
                raise OSError(f"corrupt zstandard data ({e})") from None
            self._pending, self._at = b"".join(out), 0
        n = min(len(b), len(self._pending) - self._at)
        b[:n] = memoryview(self._pending)[self._at:self._at + n]
        self._at += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def _zstd(f: IO[bytes]) -> BinaryIO:
    return io.BufferedReader(_Zstd(f), buffer_size=1 << 20)


# Each takes a binary file object; the stdlib's decompressors do not close a file object they were given.
DECOMPRESSORS: dict[str, Callable[[IO[bytes]], BinaryIO]] = {
    ".gz": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile, ".zst": _zstd}
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".zst": lambda p, mode: _zstd(open(p, mode))}
COMPRESSED = tuple(OPENERS)


def open_input(inp: Input) -> BinaryIO:
    """A binary file object for `inp` (the caller closes it, except standard input's)."""
    if inp.path == "-":
        return sys.stdin.buffer
    if isinstance(inp.memory, bytes):  # a block of a live stream's messages (data/live/base.py)
        return io.BytesIO(inp.memory)
    lower = inp.path.lower()
    ext = next((e for e in COMPRESSED if lower.endswith(e)), None)
    if not inp.remote:
        return (OPENERS[ext] if ext else open)(inp.path, "rb")
    raw = io.BufferedReader(open_remote(inp), buffer_size=1 << 16)  # read1 and readline, which fsspec lacks
    if ext is None:
        return raw
    f = DECOMPRESSORS[ext](raw)
    if ext != ".zst":  # closing the decompressor closes the remote file too
        close = f.close

        def close_both() -> None:
            try:
                close()
            finally:
                raw.close()
        f.close = close_both
    return f


def open_remote(inp: Input):
    """The fsspec file object of a URL: seekable through range reads; a failure is a DataError naming the URL."""
    fs, path = filesystem(inp.path, inp.storage_options)
    try:
        return fs.open(path, "rb", block_size=REMOTE_BLOCK)
    except Exception as e:  # each store raises its own kinds
        raise remote_error(e, inp.path) from None


def random_access(inp: Input):
    """What pyarrow's readers that seek (Parquet) take: a local path, or the fsspec file of a URL."""
    return open_remote(inp) if inp.remote else inp.path
