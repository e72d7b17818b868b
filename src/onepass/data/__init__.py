"""The data layer: sources, formats and mini-batches."""

from .batches import Batch, Stream
from .sources import FORMATS, Input, resolve

__all__ = ["Batch", "Stream", "FORMATS", "Input", "resolve"]
