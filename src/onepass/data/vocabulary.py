"""A vocabulary: the words of a bag-of-words' features, in feature-id order, kept in a state or model file.

SageMaker's NTM reads it from `vocab.txt` (its `auxiliary` channel): UTF-8, one word a line, line i naming feature
i. In a safetensors file it is one uint8 tensor, the words joined by newlines, so that a vocabulary of a million
words costs its bytes and nothing in the JSON header.
"""

from __future__ import annotations

import hashlib
import os

import torch

from ..errors import UsageError


def read(path: str | os.PathLike) -> list[str]:
    """The words of a vocab.txt file, one a line (trailing blanks stripped, the line order kept)."""
    try:
        with open(path, encoding="utf-8") as f:
            words = [line.rstrip("\r\n").strip() for line in f]
    except OSError as e:
        raise UsageError(f"vocabulary {path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"vocabulary {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    while words and not words[-1]:
        words.pop()  # a final newline, or blank lines at the end
    empty = [i + 1 for i, w in enumerate(words) if not w]
    if empty:
        raise UsageError(f"vocabulary {path}: line {empty[0]} is empty (one word a line, line i naming feature i)")
    if not words:
        raise UsageError(f"vocabulary {path}: no words")
    return words


def to_tensor(words: list[str]) -> torch.Tensor:
    """The words as one uint8 tensor (UTF-8, joined by newlines)."""
    if any("\n" in w for w in words):
        raise UsageError("a vocabulary word holds a newline")
    return torch.frombuffer(bytearray("\n".join(words).encode("utf-8")), dtype=torch.uint8).clone()


def from_tensor(t: torch.Tensor) -> list[str]:
    return bytes(t.cpu().numpy().tobytes()).decode("utf-8").split("\n") if t.numel() else []


def digest(words: list[str]) -> str:
    """A short fingerprint, to tell two vocabularies apart in messages and merges."""
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()[:16]


class Words(str):
    """A vocabulary handed from an algorithm's `examples` hook to its `init` through the hyperparameters dict: it
    reads (and logs) as a short string, "2,000 words 0123abcd...", and carries the words themselves."""

    words: list[str]

    def __new__(cls, words: list[str]) -> "Words":
        self = super().__new__(cls, f"{len(words):,} words {digest(words)}")
        self.words = list(words)
        return self
