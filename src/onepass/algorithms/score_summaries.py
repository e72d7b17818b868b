"""Bounded, mergeable summaries of (score, label) pairs per model, and the metrics and thresholds they give.

The linear learner keeps one summary per model of its validation records, so that finalize can choose a model and
a decision threshold under any criterion without reading data again. Summaries are sums, so they merge by addition.

- binary:     weighted counts of scores per bin, for negatives and positives: shape (M, 2, BINS). Bins are uniform
              in the raw score (the logit for logistic loss) over [-SCORE_RANGE, SCORE_RANGE], so a threshold is a
              bin edge and every metric at a threshold is exact for the binned scores.
- multiclass: weighted true-positive, false-positive and false-negative counts per class (M, C, 3), and weighted
              top-1 and top-k hits (M, 2): O(M C), not a C x C confusion matrix.
- regression: weighted sums of squared and absolute errors (M, 2), in the label's units.
All three also keep the weighted loss sum (M,) and total weight (M,).
"""

from __future__ import annotations

import math

import torch

BINS = 2048
SCORE_RANGE = 16.0
CRITERIA = ("accuracy", "f_beta", "precision_at_target_recall", "recall_at_target_precision", "loss_function")


def empty(kind: str, models: int, classes: int, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    z = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
    out = {"loss": z(models), "weight": z(models)}  # weight per model: best epochs may differ by model
    if kind == "binary":
        out["hist"] = z(models, 2, BINS)
    elif kind == "multiclass":
        out["class_counts"], out["hits"] = z(models, classes, 3), z(models, 2)
    else:
        out["errors"] = z(models, 2)
    return out


def score_bins(s: torch.Tensor) -> torch.Tensor:
    """The bin of each raw score."""
    scaled = (s.double() + SCORE_RANGE) * (BINS / (2 * SCORE_RANGE))
    return scaled.floor().clamp(0, BINS - 1).long()


def bin_edge(i: int) -> float:
    """The raw score at the lower edge of bin i: records in bins >= i are predicted positive."""
    return -SCORE_RANGE + i * (2 * SCORE_RANGE / BINS)


def add(summary: dict[str, torch.Tensor], kind: str, s: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
        loss: torch.Tensor, top_k: int = 3) -> None:
    """Add records with scores s ((n, M) or (n, M, C); regression scores in label units), labels y (n,),
    weights w (n,) and per-model losses (n, M)."""
    w = w.double()
    summary["loss"] += (loss.double() * w[:, None]).sum(0)
    summary["weight"] += w.sum()
    if kind == "binary":
        n, M = s.shape
        index = (torch.arange(M, device=s.device)[None, :] * 2 + (y[:, None] > 0.5).long()) * BINS + score_bins(s)
        summary["hist"].view(-1).index_add_(0, index.reshape(-1), w[:, None].expand(n, M).reshape(-1))
    elif kind == "multiclass":
        n, M, C = s.shape
        label = y.long()
        pred = s.argmax(-1)                                                     # (n, M)
        hit = pred == label[:, None]
        counts = summary["class_counts"]
        cols = torch.arange(M, device=s.device)[None, :].expand(n, M)
        wm = w[:, None].expand(n, M)
        flat = counts.view(-1)
        # true positives at (m, label), false positives at (m, pred) when wrong, false negatives at (m, label)
        flat.index_add_(0, ((cols * C + label[:, None]) * 3)[hit], wm[hit])
        flat.index_add_(0, ((cols * C + pred) * 3 + 1)[~hit], wm[~hit])
        flat.index_add_(0, ((cols * C + label[:, None].expand(n, M)) * 3 + 2)[~hit], wm[~hit])
        # in the top k when fewer than k classes score strictly higher than the true one (ties count for it):
        # a comparison and a count, where topk sorted every row (5 ms against 0.6 ms at 1,000 x 32 x 26)
        true_score = s.gather(-1, label[:, None, None].expand(n, M, 1))
        in_top = (s > true_score).sum(-1) < top_k
        summary["hits"][:, 0] += (hit.double() * wm).sum(0)
        summary["hits"][:, 1] += (in_top.double() * wm).sum(0)
    else:
        r = (s.double() - y.double()[:, None])
        summary["errors"][:, 0] += (r * r * w[:, None]).sum(0)
        summary["errors"][:, 1] += (r.abs() * w[:, None]).sum(0)


def merged(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: a[k] + b[k] for k in a}


# ----------------------------------------------------------------------------------------------- binary metrics

def _curves(hist: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For thresholds at every bin edge i = 0..BINS (predict positive when bin >= i): tp, fp, fn, tn, each
    (..., BINS + 1)."""
    neg, pos = hist[..., 0, :], hist[..., 1, :]
    zero = torch.zeros_like(neg[..., :1])
    # suffix sums: weight at or above each edge
    tp = torch.cat([pos.flip(-1).cumsum(-1).flip(-1), zero], -1)
    fp = torch.cat([neg.flip(-1).cumsum(-1).flip(-1), zero], -1)
    P, N = pos.sum(-1, keepdim=True), neg.sum(-1, keepdim=True)
    return tp, fp, P - tp, N - fp


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / b.clamp(min=1e-300), torch.zeros_like(a))


def binary_at(hist: torch.Tensor, edge: int, beta: float = 1.0) -> dict[str, float]:
    """Accuracy, precision, recall and F-beta of one model's histogram (2, BINS) at threshold bin `edge`."""
    tp, fp, fn, tn = (float(c[edge]) for c in _curves(hist))
    total = tp + fp + fn + tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    b2 = beta * beta
    f = (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall else 0.0
    return {"binary_classification_accuracy": (tp + tn) / total if total else float("nan"),
            "precision": precision, "recall": recall, "binary_f_beta": f}


def roc_auc(hist: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve per model, ties within a bin counted half (the Mann-Whitney statistic)."""
    neg, pos = hist[..., 0, :].double(), hist[..., 1, :].double()
    below = neg.cumsum(-1) - neg                                  # negatives in lower bins
    pairs = (pos * (below + 0.5 * neg)).sum(-1)
    total = pos.sum(-1) * neg.sum(-1)
    return torch.where(total > 0, pairs / total.clamp(min=1e-300), torch.full_like(total, float("nan")))


def choose_threshold(hist: torch.Tensor, criterion: str, *, beta: float = 1.0, target_precision: float = 0.8,
                     target_recall: float = 0.8, default_edge: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every model (hist (M, 2, BINS), or (M, 2, U) over U distinct scores): the best threshold edge under `criterion` and its value (higher is
    better; -inf where a target cannot be met). `loss_function` keeps `default_edge` and scores nothing here."""
    tp, fp, fn, tn = _curves(hist)
    total = (tp + fp + fn + tn).clamp(min=1e-300)
    precision, recall = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    minus_inf = torch.full_like(tp, -math.inf)
    if criterion == "accuracy":
        value = (tp + tn) / total
    elif criterion == "f_beta":
        b2 = beta * beta
        value = _safe_div((1 + b2) * precision * recall, b2 * precision + recall)
    elif criterion == "precision_at_target_recall":
        value = torch.where(recall >= target_recall, precision, minus_inf)
    elif criterion == "recall_at_target_precision":
        value = torch.where((precision >= target_precision) & (tp > 0), recall, minus_inf)
    else:
        edge = torch.full(tp.shape[:-1], default_edge, dtype=torch.long, device=tp.device)
        return edge, torch.zeros(tp.shape[:-1], dtype=tp.dtype, device=tp.device)
    # among equal values prefer the threshold nearest the default (argmax would take the lowest edge)
    width = hist.shape[-1]  # BINS, or a histogram over one model's distinct scores (selection.exact_threshold)
    distance = (torch.arange(width + 1, device=tp.device) - default_edge).abs().double()
    best = (value - 1e-12 * distance / width).argmax(-1)
    return best, value.gather(-1, best[..., None])[..., 0]


# --------------------------------------------------------------------------------------------- other metrics

def multiclass_metrics(class_counts: torch.Tensor, hits: torch.Tensor, weight: float,
                       beta: float = 1.0) -> dict[str, float]:
    """One model's accuracy, top-k accuracy and macro precision, recall and F-beta."""
    tp, fp, fn = class_counts[:, 0], class_counts[:, 1], class_counts[:, 2]
    present = (tp + fn) > 0                                       # classes seen among the labels
    p, r = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    b2 = beta * beta
    f = _safe_div((1 + b2) * p * r, b2 * p + r)
    mean = lambda v: float(v[present].mean()) if present.any() else float("nan")  # noqa: E731
    return {"multiclass_accuracy": float(hits[0]) / weight if weight else float("nan"),
            "multiclass_top_k_accuracy": float(hits[1]) / weight if weight else float("nan"),
            "macro_precision": mean(p), "macro_recall": mean(r), "macro_f_beta": mean(f)}


def regression_metrics(errors: torch.Tensor, weight: float) -> dict[str, float]:
    mse = float(errors[0]) / weight if weight else float("nan")
    return {"mse": mse, "rmse": math.sqrt(mse) if weight else float("nan"),
            "absolute_loss": float(errors[1]) / weight if weight else float("nan")}
