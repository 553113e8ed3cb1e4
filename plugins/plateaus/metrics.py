"""Metrics of read-out curves d(α) along perturbation paths (pure torch).

Definitions (reported next to every value):

- **sharpness**: the maximum finite-difference slope of the normalised curve
  f(α) = d(α) / d(α_max) over the steps, (f(α_{k+1}) − f(α_k)) / ((α_{k+1} − α_k) / α_max).
  A linear response gives 1; a plateau followed by a jump gives ≫ 1. Near zero, KL is
  quadratic for any smooth model, so KL curves of a smooth response give about 2; L2
  curves give 1.
- **max-slope step**: the α/α_max at which that slope is reached.
- **plateau length**: the first step at which the read-out exceeds a threshold (in steps;
  ``n_steps`` when it never does).
- **KS distance**: the two-sample Kolmogorov–Smirnov statistic between two samples of a
  metric (scipy).
"""

from __future__ import annotations

from typing import Any


def sharpness(curves: Any, steps: Any) -> tuple[Any, Any]:
    """(sharpness, max-slope α fraction) of curves ``(..., n_steps)`` along ``steps``."""
    import torch

    end = curves[..., -1:].clamp_min(1e-12)
    f = curves / end
    x = steps / steps[-1]
    slopes = (f[..., 1:] - f[..., :-1]) / (x[1:] - x[:-1])
    value, where = slopes.max(dim=-1)
    mid = (x[1:] + x[:-1]) / 2
    return value, mid[where] if where.ndim == 0 else torch.take(mid, where)


def first_crossing(curves: Any, threshold: float) -> Any:
    """Index of the first step where ``curves > threshold`` (``n_steps`` if never)."""
    import torch

    above = curves > threshold
    n = curves.shape[-1]
    idx = torch.where(above.any(-1), above.float().argmax(-1), torch.full(above.shape[:-1], n))
    return idx


def ks_distance(a: Any, b: Any) -> float:
    """Two-sample Kolmogorov–Smirnov statistic between two 1-d samples."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(a.reshape(-1).numpy(), b.reshape(-1).numpy()).statistic)
