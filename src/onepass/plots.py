"""Pictures people would rather look at than read. Needs matplotlib (`pip install onepass[plot]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UsageError


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plots need matplotlib: pip install matplotlib") from None
    return plt


def _save(fig, path: str | Path) -> None:
    """The picture, whole or not at all, in `path` (its missing folders made, as every output's)."""
    from ._files import atomic_output

    with atomic_output(path, "wb") as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".").lower() or "png")


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
    _save(fig, path)
    plt.close(fig)
    return Path(path)


def explained_variance(ratios: list[float], path: str | Path, chosen: int | None = None, most: int = 100) -> Path:
    """PCA's explained variance ratio per component and its running total, from one state (a scree plot)."""
    plt = _pyplot()
    ratios = ratios[:most]
    ks = list(range(1, len(ratios) + 1))
    total, cumulative = 0.0, []
    for r in ratios:
        total += r
        cumulative.append(total)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.bar(ks, ratios, color="tab:blue", alpha=0.7, label="per component")
    ax.plot(ks, cumulative, marker="o", markersize=3, color="tab:orange", label="cumulative")
    if chosen is not None and 1 <= chosen <= len(ratios):
        ax.axvline(chosen + 0.5, color="red", linestyle="--",
                   label=f"{chosen} components: {cumulative[chosen - 1]:.1%}")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance ratio")
    ax.set_title("PCA explained variance, from one state")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return Path(path)


def precision_recall(recall: list[float], precision: list[float], path: str | Path,
                     chosen: tuple[float | None, float | None] | None = None) -> Path:
    """A binary linear learner's precision against recall on its validation records, with the chosen threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(recall, precision, color="tab:blue")
    if chosen and None not in chosen:
        ax.plot([chosen[0]], [chosen[1]], marker="o", color="red", markersize=8,
                label=f"threshold: recall {chosen[0]:.3f}, precision {chosen[1]:.3f}")
        ax.legend()
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall on validation, chosen model")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return Path(path)


def topics(weights: list[list[tuple[str, float]]], path: str | Path, most: int = 50,
           title: str = "topics: top words and their weights") -> Path:
    """A topic model's topics, one small panel each: its top words as bars of their weight in the topic."""
    plt = _pyplot()
    shown = weights[:most]
    cols = min(5, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 0.25 * max(len(t) for t in shown) * rows + 0.6 * rows),
                             dpi=100, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(shown):
            ax.axis("off")
            continue
        words, ws = [w for w, _ in shown[k]][::-1], [v for _, v in shown[k]][::-1]  # the largest on top
        ax.barh(range(len(ws)), ws, color=plt.cm.tab20(k % 20))
        ax.set_yticks(range(len(ws)), words, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"topic {k}", fontsize=9)
    fig.suptitle(title + (f" (the first {most} of {len(weights)})" if len(weights) > most else ""))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return Path(path)


def forecast_fan(series: list[tuple[str, Any, Any]], forecasts: list[dict[str, Any]], path: str | Path) -> Path:
    """DeepAR's forecasts as fans: for each (label, times, history) its last points and, after them, the median
    with the 50 % and 90 % intervals of its forecast (`quantiles` "0.05" ... "0.95") at the forecast's `times`."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 2.6 * len(series)), dpi=100, squeeze=False)
    for ax, (label, times, history), f in zip(axes[:, 0], series, forecasts):
        q = f["quantiles"]
        ax.plot(times[:len(history)], history, color="black", linewidth=1, label="observed")
        t = times[len(history):]
        ax.fill_between(t, q["0.05"], q["0.95"], color="tab:blue", alpha=0.2, label="90 % interval")
        ax.fill_between(t, q["0.25"], q["0.75"], color="tab:blue", alpha=0.4, label="50 % interval")
        ax.plot(t, q["0.5"], color="tab:blue", linewidth=1.5, label="median")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return Path(path)
