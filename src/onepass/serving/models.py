"""The models a server answers with: one per name, each reloaded when its file changes, and, for SageMaker's
multi-model API, models loaded by name from under one root folder only.

A slot watches its model file (a run folder's `model.safetensors`, or a file): between requests, at most every
`RELOAD_CHECK_S`, it compares the file's identity (inode, size, modification time) with the one it loaded, and on a
change loads and verifies the new file before swapping it in with one assignment. A request holds the model it
started with until it ends, so an answer never mixes two models. onepass writes model files atomically (temporary
name, fsync, rename), so a half-written file is never seen; a file that fails verification anyway (edited, foreign)
is not swapped in, the old model keeps answering, and the failure is logged once per file identity.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..algorithms.base import Model
from ..errors import OnepassError
from ..state import MODEL_FILE

RELOAD_CHECK_S = 0.5  # a stat() every half second: a new model answers within that of its rename
log = logging.getLogger("onepass.serve")


def model_file(path: str | os.PathLike) -> Path:
    """The model file a run folder or a file names."""
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class Slot:
    """One model, reloaded when its file changes."""

    path: Path
    model: Model | None = None
    loaded: tuple[int, int, int] | None = None
    failed: tuple[int, int, int] | None = None
    checked: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Slot":
        slot = cls(model_file(path))
        slot.refresh(force=True)
        return slot

    @property
    def ready(self) -> bool:
        return self.model is not None

    def current(self) -> Model | None:
        """The model to answer with now (reloaded first if its file changed since the last look)."""
        if time.monotonic() - self.checked >= RELOAD_CHECK_S:
            self.refresh()
        return self.model

    def refresh(self, force: bool = False) -> None:
        with self.lock:
            self.checked = time.monotonic()
            now = _identity(self.path)
            if now is None or (now == self.loaded and not force) or now == self.failed:
                return
            try:
                model = Model.load(self.path)
            except (OnepassError, OSError) as e:
                self.failed = now
                log.warning("onepass serve: %s not loaded (%s); %s", self.path, e,
                            "still answering with the previous model" if self.model else "no model yet")
                return
            self.model, self.loaded, self.failed = model, now, None
            log.info("onepass serve: model %s (%s) loaded from %s", model.algorithm, model.checksum, self.path)


class Registry:
    """Models by name under `root` (SageMaker's multi-model endpoint): a name or url is resolved inside the root,
    and refused if it leads outside it by any spelling (``..``, an absolute path, a symbolic link)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.slots: dict[str, tuple[str, Slot]] = {}
        self.lock = threading.Lock()

    def resolve(self, url: str) -> Path:
        """The model file `url` names under the root; ValueError when it is not inside."""
        given = Path(url)
        candidate = (given if given.is_absolute() else self.root / given).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise ValueError(f"{url!r} is not inside the model root {self.root}")
        found = model_file(candidate)
        if not found.is_file():
            raise FileNotFoundError(f"{url!r}: no {MODEL_FILE} or model file there")
        return found

    def load(self, name: str, url: str) -> Slot:
        with self.lock:
            if name in self.slots:
                raise KeyError(name)
        slot = Slot.open(self.resolve(url))
        if not slot.ready:
            raise ValueError(f"{url!r} does not hold a readable onepass model")
        with self.lock:
            if name in self.slots:
                raise KeyError(name)
            self.slots[name] = (url, slot)
        return slot

    def get(self, name: str) -> Slot | None:
        entry = self.slots.get(name)
        return entry[1] if entry else None

    def unload(self, name: str) -> bool:
        with self.lock:
            return self.slots.pop(name, None) is not None

    def listing(self) -> list[dict[str, str]]:
        return [{"modelName": n, "modelUrl": u} for n, (u, _) in sorted(self.slots.items())]
