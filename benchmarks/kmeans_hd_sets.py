"""High-dimensional data sets for the k-means measurements (issue 29), generated in memory, repeatable by seed.

- `mixture(n, d)`: a Gaussian mixture of 50 clusters whose means and within-cluster noise both lie along
  directions of decaying variance (the i-th of d directions has standard deviation ~ i^-0.7, as image and text
  features have; the noise along the leading 64), plus a little isotropic noise: no cluster is far from the others in most directions.
- `digits_up(n)`: scikit-learn's 1,797 digits upsampled from 8 x 8 to 28 x 28 (784 features, MNIST's shape),
  each record one digit shifted by up to a pixel each way, with pixel noise.
"""

from __future__ import annotations

import numpy as np


def mixture(n: int, d: int, clusters: int = 50, seed: int = 0, chunk: int = 50_000):
    """Yield (m, d) float32 chunks of the decaying-spectrum mixture."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scale = (np.arange(1, d + 1) ** -0.7).astype(np.float32)
    means = ((rng.standard_normal((clusters, d)) * 6.0 * scale) @ q.T).astype(np.float32)
    r = min(d, 64)  # within-cluster: the 64 leading directions of the same spectrum (cheap to draw)
    noise_basis = (scale[:r, None] * q[:, :r].T).astype(np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        lab = rng.integers(0, clusters, m)
        z = rng.standard_normal((m, r), dtype=np.float32)
        yield means[lab] + 2.0 * (z @ noise_basis) + 0.05 * rng.standard_normal((m, d), dtype=np.float32)


def digits_up(n: int, seed: int = 0, chunk: int = 20_000):
    """Yield (m, 784) float32 chunks of shifted, noisy, upsampled digits."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    imgs = load_digits().images.astype(np.float32)
    up = np.stack([zoom(im, 28 / 8, order=1) for im in imgs])  # (1797, 28, 28)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        pick = up[rng.integers(0, len(up), m)]
        dx, dy = rng.integers(-1, 2, m), rng.integers(-1, 2, m)
        out = np.empty_like(pick)
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                sel = (dx == a) & (dy == b)
                out[sel] = np.roll(pick[sel], (a, b), axis=(1, 2))
        out += rng.normal(scale=0.5, size=out.shape).astype(np.float32)
        yield out.reshape(m, 784)


def make(name: str, n: int, d: int = 0, seed: int = 0) -> np.ndarray:
    parts = mixture(n, d, seed=seed) if name == "mixture" else digits_up(n, seed=seed)
    return np.concatenate(list(parts))
