"""Does a threshold chosen from the linear learner's state hold on fresh records? (issue 20, section 1)

A binary problem like the issue's (12 features, AUC about 0.61): x ~ N(0, I), P(y = 1 | x) = sigmoid(x . beta).
Trains on `--n` records with the held-out sample (the default) and without it (`validation_reservoir_mib 0`:
records scored as they came), chooses a threshold for target recall r (and target precision p), and measures
recall (precision) on as many fresh records of the same distribution.

    python benchmarks/run_selection.py --n 250000 --epochs 3
    python benchmarks/run_selection.py --small     # model choice by accuracy or loss on small held-out sets
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from onepass.algorithms import linear as ll
from onepass.data.batches import Batch

BETA = torch.tensor([0.25, -0.2, 0.15, 0.1, -0.1, 0.08, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0])


def make(n: int, seed: int, beta: torch.Tensor = BETA) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(beta), generator=g) + 1.0
    p = torch.sigmoid((x - 1.0) @ beta)
    return x, (torch.rand(n, generator=g) < p).float()


def fit(hp: dict, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int = 1000):
    state = ll.init({**hp, "epochs": epochs}, x.shape[1], 0)
    for _ in range(epochs):
        for s in range(0, len(x), batch):
            state = ll.update(state, Batch(x[s:s + batch], y[s:s + batch]))
        state, stop = ll.end_epoch(state)
        if stop:
            break
    return state


def recall_precision(model, x, y) -> tuple[float, float]:
    pred = model.predict(x)["predicted_label"]
    tp = float((pred * y).sum())
    return tp / float(y.sum()), tp / max(float(pred.sum()), 1.0)


def thresholds(args) -> None:
    x, y = make(args.n, 1)
    xf, yf = make(args.n, 2)
    print(f"{args.n:,} records, positives {float(y.mean()):.3f}; fresh records: {args.n:,}")
    for mib in args.mib:
        t0 = time.perf_counter()
        state = fit({"predictor_type": "binary_classifier", "validation_reservoir_mib": mib}, x, y, args.epochs)
        took = time.perf_counter() - t0
        for crit, key, target in (("precision_at_target_recall", "target_recall", 0.9),
                                  ("recall_at_target_precision", "target_precision", 0.6)):
            m = ll.finalize(state, binary_classifier_model_selection_criteria=crit, **{key: target})
            r, p = recall_precision(m, xf, yf)
            held = m.meta["validation"]
            got, said = (r, held["recall"]) if key == "target_recall" else (p, held["precision"])
            rows = ll.describe(state).get("validation_reservoir", {}).get("rows", 0)
            print(f"  reservoir {mib:5g} MiB ({rows:6,} rows, {took:5.1f} s): {crit} "
                  f"{target}: held-out {said:.4f}, fresh {got:.4f}")


def small(args) -> None:
    """Test accuracy of the model chosen on a held-out set of n records: by accuracy (model and threshold), by the
    loss (threshold at probability 0.5), and the loss's model with accuracy's threshold."""
    for n_val in (42, 100, 300, 1000, 3000):
        acc_by: dict[str, list[float]] = {"accuracy": [], "loss": [], "loss+threshold": []}
        for seed in range(args.seeds):
            beta = torch.randn(4, generator=torch.Generator().manual_seed(seed)) * 0.7
            x, y = make(3000, 100 + seed, beta)
            xv, yv = make(n_val, 200 + seed, beta)
            xt, yt = make(20_000, 300 + seed, beta)
            state = ll.init({"predictor_type": "binary_classifier", "epochs": args.epochs}, 4, seed)
            for _ in range(args.epochs):
                for s in range(0, 3000, 100):
                    state = ll.update(state, Batch(x[s:s + 100], y[s:s + 100]))
                state, _ = ll.end_epoch(state, [Batch(xv, yv)])
            by_loss = ll.finalize(state, binary_classifier_model_selection_criteria="loss_function")
            models = {"accuracy": ll.finalize(state, binary_classifier_model_selection_criteria="accuracy"),
                      "loss": by_loss,
                      "loss+threshold": ll.finalize(state, binary_classifier_model_selection_criteria="accuracy",
                                                    model=by_loss.meta["model_index"])}
            for name, m in models.items():
                acc_by[name].append(float((m.predict(xt)["predicted_label"] == yt).float().mean()))
        print(f"  held-out {n_val:5d}: test accuracy of the model chosen by " + ", ".join(
            f"{k} {sum(v) / len(v):.4f}" for k, v in acc_by.items()) + f" ({args.seeds} problems)", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=250_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--mib", type=float, nargs="*", default=[0, 1, 32])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--seeds", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    small(a) if a.small else thresholds(a)
