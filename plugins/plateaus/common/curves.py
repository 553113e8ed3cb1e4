"""Metrics of read-out curves d(α) along perturbation paths (pure torch; scipy for KS).

A read-out curve is one number per step of a path (α = α_0 = 0, …, α_max): KL(clean ‖
perturbed) of the next-token distribution or the L2 distance of the final residual
stream from the clean run. :data:`DEFINITIONS` is the one place the family's shared
metric definitions are written; every idea's result quotes them from there, adding only
what is specific to it (read-out, path, aggregation).
"""

from __future__ import annotations

from typing import Any

_SHARPNESS = (
    "sharpness: the maximum over steps of the finite-difference slope of the normalised "
    "read-out f(α) = d(α)/d(α_max) along a path, (f(α_{k+1}) − f(α_k)) / ((α_{k+1} − α_k) / "
    "α_max); 1 for a linear response, ≫ 1 for a plateau followed by a jump"
)

#: The family's shared metric definitions, quoted next to every value.
DEFINITIONS: dict[str, str] = {
    "sharpness": _SHARPNESS,
    "sharpness_kl": _SHARPNESS + "; read-out d = KL(clean ‖ perturbed) of the next-token "
                    "distribution at the last position (KL is quadratic near 0, so a smooth "
                    "response gives about 2)",
    "sharpness_l2": _SHARPNESS + "; read-out d = L2 distance of the final residual stream "
                    "(last position) from the clean run",
    "max_slope_step": "max-slope step: α/α_max at the middle of the step where the normalised "
                      "read-out f(α) = d(α)/d(α_max) is steepest (where the sharpness is "
                      "reached)",
    "crossing": "crossing (plateau length): the index of the first step at which the KL "
                "read-out exceeds a threshold (n_steps when it never does)",
    "ks": "two-sample Kolmogorov–Smirnov statistic (the largest gap between the two "
          "empirical CDFs: 0 = same distribution, 1 = disjoint)",
}


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
