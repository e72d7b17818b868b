"""Opening an input as a binary stream: a local file, standard input, decompressed on the fly by its suffix."""

from __future__ import annotations

import bz2
import gzip
import lzma
import sys
from typing import BinaryIO

from .sources import Input

OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
COMPRESSED = tuple(OPENERS)


def open_input(inp: Input) -> BinaryIO:
    """A binary file object for `inp` (the caller closes it, except standard input's)."""
    if inp.path == "-":
        return sys.stdin.buffer
    lower = inp.path.lower()
    opener = next((o for ext, o in OPENERS.items() if lower.endswith(ext)), open)
    return opener(inp.path, "rb")
