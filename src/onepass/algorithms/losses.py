"""The linear learner's losses, each with its gradient in closed form, for many models at once.

Scores `s` have shape (n, M) for one output per model (binary classification, regression) or (n, M, C) for C
classes; labels `y` have shape (n,): 0/1 for binary losses, a class index for softmax, a real number otherwise.
Every function returns the loss per record and model, shape (n, M), and dL/ds, the shape of `s`. The closed
forms are checked against autograd in the tests.

    >>> import torch
    >>> loss, grad = loss_and_grad("logistic", torch.tensor([[0.0]]), torch.tensor([1.0]))
    >>> round(float(loss), 4), float(grad)
    (0.6931, -0.5)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

BINARY = ("logistic", "hinge_loss")
MULTICLASS = ("softmax_loss",)
REGRESSION = ("squared_loss", "absolute_loss", "huber_loss", "quantile_loss", "eps_insensitive_squared_loss",
              "eps_insensitive_absolute_loss")
LOSSES = BINARY + MULTICLASS + REGRESSION


def loss_and_grad(name: str, s: torch.Tensor, y: torch.Tensor, **p: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss (n, M), dL/ds like s). Parameters: margin (hinge), huber_delta, quantile, loss_insensitivity."""
    return loss_only(name, s, y, **p), grad_only(name, s, y, **p)


def loss_only(name: str, s: torch.Tensor, y: torch.Tensor, **p: Any) -> torch.Tensor:
    """The loss (n, M) alone: for scoring, where the gradient would be thrown away."""
    if name == "softmax_loss":                                   # -log softmax(s)_y = logsumexp(s) - s_y
        idx = y.long()[:, None, None].expand(-1, s.shape[1], 1)
        return torch.logsumexp(s, dim=-1) - s.gather(-1, idx)[..., 0]  # one pass, writing only (n, M)
    y = _check(name, y[:, None].to(s.dtype))
    if name == "logistic":                                       # L = log(1 + e^s) - y s
        return F.softplus(s) - y * s
    if name == "hinge_loss":                                     # L = max(0, margin - t s), t = 2y - 1
        return (p.get("margin", 1.0) - (2 * y - 1) * s).clamp(min=0)
    r = s - y                                                    # residual
    if name == "squared_loss":                                   # L = r^2 / 2
        return 0.5 * r * r
    if name == "absolute_loss":                                  # L = |r|
        return r.abs()
    if name == "huber_loss":                                     # r^2 / 2 inside delta, linear outside
        delta = p.get("huber_delta", 1.0)
        return torch.where(r.abs() <= delta, 0.5 * r * r, delta * (r.abs() - 0.5 * delta))
    if name == "quantile_loss":                                  # pinball: tau (y - s)+ + (1 - tau) (s - y)+
        tau = p.get("quantile", 0.5)
        return torch.where(r < 0, -tau * r, (1 - tau) * r)
    excess = (r.abs() - p.get("loss_insensitivity", 0.01)).clamp(min=0)
    if name == "eps_insensitive_squared_loss":                  # L = max(0, |r| - eps)^2 / 2
        return 0.5 * excess * excess
    return excess                                                # eps_insensitive_absolute_loss: max(0, |r| - eps)


def grad_only(name: str, s: torch.Tensor, y: torch.Tensor, **p: Any) -> torch.Tensor:
    """dL/ds alone: for training on records that are not scored."""
    if name == "softmax_loss":                                   # softmax(s) - onehot(y)
        idx = y.long()[:, None, None].expand(-1, s.shape[1], 1)
        return torch.softmax(s, dim=-1).scatter_add_(-1, idx, torch.full_like(idx, -1, dtype=s.dtype))
    y = _check(name, y[:, None].to(s.dtype))
    if name == "logistic":
        return torch.sigmoid(s) - y
    if name == "hinge_loss":
        t = 2 * y - 1
        return torch.where(p.get("margin", 1.0) - t * s > 0, -t, torch.zeros_like(s))
    r = s - y
    if name == "squared_loss":
        return r
    if name == "absolute_loss":
        return torch.sign(r)
    if name == "huber_loss":
        delta = p.get("huber_delta", 1.0)
        return torch.where(r.abs() <= delta, r, delta * torch.sign(r))
    if name == "quantile_loss":
        tau = p.get("quantile", 0.5)
        return torch.where(r < 0, torch.full_like(r, -tau), torch.full_like(r, 1 - tau))
    excess = (r.abs() - p.get("loss_insensitivity", 0.01)).clamp(min=0)
    if name == "eps_insensitive_squared_loss":
        return excess * torch.sign(r)
    return torch.where(excess > 0, torch.sign(r), torch.zeros_like(r))


def _check(name: str, y: torch.Tensor) -> torch.Tensor:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return y
