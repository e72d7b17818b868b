"""The algorithms, by name. Each is a module following the protocol in `base`."""

from __future__ import annotations

from types import ModuleType

from ..errors import UsageError
from . import deepar, fm, kmeans, linear, ntm, pca

ALGORITHMS: dict[str, ModuleType] = {deepar.NAME: deepar, fm.NAME: fm, kmeans.NAME: kmeans, linear.NAME: linear,
                                     ntm.NAME: ntm, pca.NAME: pca}


def get(name: str) -> ModuleType:
    try:
        return ALGORITHMS[name.replace("-", "_").lower()]
    except KeyError:
        raise UsageError(f"unknown algorithm {name!r}; available: {', '.join(sorted(ALGORITHMS))}") from None
