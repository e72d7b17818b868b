"""DeepAR's network: the inputs of each step, the LSTM unrolled over a window, its loss and ancestral sampling.

Functions of the state's parameters (a dict of tensors) and of the run's facts (`meta`: lags, lag history, numbers
of features and cat fields; `hp`: the hyperparameters), so that training, validation, test metrics and forecasts
share one forward pass. See `deepar` for the model.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.func import functional_call

from ..data.windows import WindowBatch
from . import likelihoods as lik


def to_device(b: WindowBatch, device: torch.device) -> WindowBatch:
    """The batch's tensors on `device` (a reader's batches are on the CPU)."""
    return WindowBatch(b.x.to(device), observed=b.observed.to(device), features=b.features.to(device),
                       cat=b.cat.to(device), last=b.last.to(device), position=b.position)


@functools.lru_cache(maxsize=16)
def lstm_template(n_in: int, cells: int, layers: int, dropout: float) -> torch.nn.LSTM:
    """A template whose parameters are replaced by the state's at every call (torch.func.functional_call). Made
    aside from torch's generator: its own initialisation must not draw from the state's (dropout) stream."""
    with torch.random.fork_rng(devices=[]):
        return torch.nn.LSTM(n_in, cells, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)


def scale_of(meta: dict[str, Any], hp: dict[str, Any], b: WindowBatch) -> torch.Tensor:
    """Each window's scale: the mean absolute observed value of its context; 1 where that is 0 or unobserved."""
    if not lik.uses_scale(hp["likelihood"]):
        return torch.ones(len(b.x), device=b.x.device)
    H, C = meta["history"], hp["context_length"]
    o = b.observed[:, H:H + C]
    s = (b.x[:, H:H + C].abs() * o).sum(1) / o.sum(1).clamp(min=1)
    return torch.where(s > 0, s, torch.ones_like(s))


def step_inputs(meta: dict[str, Any], hp: dict[str, Any], params: dict[str, torch.Tensor], b: WindowBatch,
            z: torch.Tensor, scale: torch.Tensor, steps: range) -> torch.Tensor:
    """The LSTM's inputs at window steps `steps` (absolute positions in the window): lags of z, the step's features,
    the series' embeddings and log scale."""
    H = meta["history"]
    at = torch.tensor(list(steps), device=z.device)
    lags = torch.tensor(meta["lags"], device=z.device)
    lagged = z[:, at[:, None] - lags[None, :]]
    feats = b.features[:, at - H]
    static = [params[f"embed.{j}"][b.cat[:, j]] for j in range(meta["n_cat"])] + [torch.log(scale)[:, None]]
    static = torch.cat(static, 1)[:, None, :].expand(-1, len(steps), -1)
    return torch.cat([lagged, feats, static], 2)


def run(meta: dict[str, Any], hp: dict[str, Any], params: dict[str, torch.Tensor], inputs: torch.Tensor,
        hidden: tuple[torch.Tensor, torch.Tensor] | None = None,
        train: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The head's raw outputs at every step of `inputs` (n, steps, k) and the LSTM's state after the last."""
    lstm = lstm_template(meta["n_inputs"], hp["num_cells"], hp["num_layers"], float(hp["dropout_rate"]))
    lstm.train(train)
    out, hidden = functional_call(lstm, {k[5:]: v for k, v in params.items() if k.startswith("lstm.")},
                                  (inputs, hidden))
    raw = out @ params["head.weight"].T + params["head.bias"]
    return raw, hidden


def loss_sum(meta: dict[str, Any], hp: dict[str, Any], params: dict[str, torch.Tensor], b: WindowBatch,
             train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed negative log-likelihood of the observed points of every window's context and prediction steps,
    and their number."""
    H, S = meta["history"], hp["context_length"] + hp["prediction_length"]
    scale = scale_of(meta, hp, b)
    z = b.x / scale[:, None]
    raw, _ = run(meta, hp, params, step_inputs(meta, hp, params, b, z, scale, range(H, H + S)), train=train)
    p = lik.parameters(hp["likelihood"], raw, scale[:, None])
    o = b.observed[:, H:]
    nll = lik.nll(hp["likelihood"], p, b.x[:, H:])
    return (torch.where(o > 0, nll, torch.zeros_like(nll))).sum(), o.sum()


@torch.no_grad()
def sample_paths(meta: dict[str, Any], hp: dict[str, Any], params: dict[str, torch.Tensor], b: WindowBatch,
                 num_samples: int) -> torch.Tensor:
    """(n, num_samples, P) ancestral samples of each window's prediction steps, from its history and context."""
    H, C, P = meta["history"], hp["context_length"], hp["prediction_length"]
    n = len(b.x)
    scale = scale_of(meta, hp, b)
    rep = lambda a: a.repeat_interleave(num_samples, 0)  # noqa: E731
    big = WindowBatch(rep(b.x), observed=rep(b.observed), features=rep(b.features), cat=rep(b.cat))
    s = rep(scale)
    z = big.x / s[:, None]
    z[:, H + C:] = 0.0
    _, hidden = run(meta, hp, params, step_inputs(meta, hp, params, big, z, s, range(H, H + C)))
    out = []
    for t in range(H + C, H + C + P):
        raw, hidden = run(meta, hp, params, step_inputs(meta, hp, params, big, z, s, range(t, t + 1)), hidden)
        y = lik.sample(hp["likelihood"], lik.parameters(hp["likelihood"], raw[:, 0], s))
        z[:, t] = y / s
        out.append(y)
    return torch.stack(out, 1).reshape(n, num_samples, P)
