"""The data layer: sources, formats and mini-batches."""

from .batches import Batch, Examples, Stream
from .sources import FORMATS, Input, resolve

__all__ = ["Batch", "Examples", "Stream", "FORMATS", "Input", "resolve"]
