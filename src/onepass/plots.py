"""Pictures people would rather look at than read. Needs matplotlib (`pip install onepass[plot]`)."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plots need matplotlib: pip install matplotlib") from None
    return plt


def elbow(costs: dict[int, float], path: str | Path, chosen: int | None = None) -> Path:
    """k-means cost against k, from one state: pick k where the curve bends."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ks, cs = list(costs), list(costs.values())
    ax.plot(ks, cs, marker="o")
    if chosen in costs:
        ax.plot([chosen], [costs[chosen]], marker="o", color="red", markersize=10, label=f"k = {chosen}")
        ax.legend()
    ax.set_xlabel("k (number of clusters)")
    ax.set_ylabel("cost (sum of squared distances)")
    ax.set_title("k-means cost against k, from one state")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
