"""DeepAR's output distributions: the network's raw outputs at a step become a distribution of that step's value.

Each likelihood maps k raw outputs (and the window's scale s, DeepAR's mean absolute value) to the parameters of a
distribution of the target y, gives its negative log-likelihood (closed forms, checked against torch.distributions in
the tests), its mean and samples. Location-scale families model z = y / s, so a series of any magnitude looks alike
to the network; the negative binomial scales its mean by s (its logits shift by log s, as GluonTS does); beta models
values in [0, 1] unscaled.

    gaussian            mu, sigma = softplus + floor                 real values
    student-T           mu, sigma, nu = 2 + softplus                 real values, heavy tails (SageMaker's default)
    negative-binomial   r = softplus, logits + log s                 counts (y >= 0)
    beta                a, b = softplus + floor                      values in [0, 1]
    deterministic-L1    mu; loss |z - mu|                            a point forecast (every sample is mu)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import distributions as D

NAMES = ("gaussian", "student-T", "negative-binomial", "beta", "deterministic-L1")
SIGMA_FLOOR = 1e-5  # of the scaled value: a noiseless periodic series drives sigma towards 0
_BETA_EPS = 1e-5    # beta's support is open: targets are held this far inside (0, 1)


def n_params(name: str) -> int:
    return {"gaussian": 2, "student-T": 3, "negative-binomial": 2, "beta": 2, "deterministic-L1": 1}[name]


def uses_scale(name: str) -> bool:
    """Whether the window's scale applies (beta's values are in [0, 1] already)."""
    return name != "beta"


def parameters(name: str, raw: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Distribution parameters from raw outputs (..., k) and scales broadcastable to raw[..., 0]."""
    a = raw[..., 0]
    if name == "gaussian":
        return {"mu": a, "sigma": F.softplus(raw[..., 1]) + SIGMA_FLOOR, "scale": scale}
    if name == "student-T":
        return {"mu": a, "sigma": F.softplus(raw[..., 1]) + SIGMA_FLOOR, "nu": 2.0 + F.softplus(raw[..., 2]),
                "scale": scale}
    if name == "negative-binomial":
        return {"r": F.softplus(a) + SIGMA_FLOOR, "logits": raw[..., 1] + torch.log(scale)}
    if name == "beta":
        return {"a": F.softplus(a) + SIGMA_FLOOR, "b": F.softplus(raw[..., 1]) + SIGMA_FLOOR}
    return {"mu": a, "scale": scale}


def nll(name: str, p: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of y per point (of z = y / s for the location-scale families: the log s they would add
    does not depend on the parameters; L1: |z - mu|)."""
    if name in ("gaussian", "student-T", "deterministic-L1"):
        z = y / p["scale"]
        if name == "deterministic-L1":
            return (z - p["mu"]).abs()
        u = (z - p["mu"]) / p["sigma"]
        if name == "gaussian":
            return 0.5 * u * u + torch.log(p["sigma"]) + 0.5 * math.log(2 * math.pi)
        nu = p["nu"]
        return (-torch.lgamma((nu + 1) / 2) + torch.lgamma(nu / 2) + 0.5 * torch.log(nu * math.pi)
                + torch.log(p["sigma"]) + (nu + 1) / 2 * torch.log1p(u * u / nu))
    if name == "negative-binomial":
        r, logits = p["r"], p["logits"]
        return -(torch.lgamma(y + r) - torch.lgamma(r) - torch.lgamma(y + 1)
                 + r * F.logsigmoid(-logits) + y * F.logsigmoid(logits))
    a, b = p["a"], p["b"]
    z = y.clamp(_BETA_EPS, 1 - _BETA_EPS)
    return -((a - 1) * torch.log(z) + (b - 1) * torch.log1p(-z) - torch.lgamma(a) - torch.lgamma(b)
             + torch.lgamma(a + b))


def distribution(name: str, p: dict[str, torch.Tensor]) -> D.Distribution | None:
    """The distribution of y itself (None for the point forecast)."""
    if name == "gaussian":
        return D.Normal(p["mu"] * p["scale"], p["sigma"] * p["scale"], validate_args=False)
    if name == "student-T":
        return D.StudentT(p["nu"], p["mu"] * p["scale"], p["sigma"] * p["scale"], validate_args=False)
    if name == "negative-binomial":
        return D.NegativeBinomial(p["r"], logits=p["logits"], validate_args=False)
    if name == "beta":
        return D.Beta(p["a"], p["b"], validate_args=False)
    return None


def sample(name: str, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """One draw of y per point (torch's global generator: callers fork and seed it)."""
    d = distribution(name, p)
    return p["mu"] * p["scale"] if d is None else d.sample()


def mean(name: str, p: dict[str, torch.Tensor]) -> torch.Tensor:
    d = distribution(name, p)
    return p["mu"] * p["scale"] if d is None else d.mean
