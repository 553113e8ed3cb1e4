"""Intensity ladders: is a concept's intensity a magnitude along its direction? (numpy,
scipy.)

Activations ``h[l, c, k]`` (level l weakest first, concept c, context k, dimension d).
The concept-specific part at a level is ``s[l, c, k] = h[l, c, k] − mean_c' h[l, c', k]``
(what the intensity word adds to every concept alike cancels). Concept c's direction is
``u_c = unit(mean_{l, k} s[l, c, k])`` (its prompts' mean minus the mean of all concepts'
prompts) and its projection at a level ``p[l, c, k] = <s[l, c, k], u_c>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: projections whose spread across levels is below this fraction of the concept-specific
#: part's norm are ties (no order): their Spearman ρ is NaN, not a ρ of rounding noise
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class LadderScores:
    """Per-concept scores (each a mean over contexts) and the per-level projections."""

    spearman: np.ndarray      # (C,) Spearman ρ(level, p[:, c, k]), mean over k
    diff_cosine: np.ndarray   # (C,) cos(δ_l, δ_{l+1}), δ_l = h[l+1] − h[l], mean over l, k
    norm_ratio: np.ndarray    # (C,) ‖s[top]‖ / ‖s[bottom]‖, mean over k
    projection: np.ndarray    # (L, C) p[l, c, k] mean over k


def ladder_scores(h: np.ndarray) -> LadderScores:
    """Scores of activations ``h`` of shape (L, C, K, d)."""
    from scipy.stats import spearmanr

    h = np.asarray(h, dtype=np.float64)
    n_l, n_c, n_k, _ = h.shape
    s = h - h.mean(1, keepdims=True)
    u = s.mean((0, 2))
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-300)
    p = np.einsum("lckd,cd->lck", s, u)
    scale = np.linalg.norm(s, axis=-1).mean(0)  # (C, K)
    rho = np.full((n_c, n_k), np.nan)
    levels = np.arange(n_l)
    for c in range(n_c):
        for k in range(n_k):
            col = p[:, c, k]
            if np.ptp(col) > TIE_TOLERANCE * max(float(scale[c, k]), 1e-300):
                rho[c, k] = float(spearmanr(levels, col).statistic)
    step = h[1:] - h[:-1]
    norms = np.linalg.norm(step, axis=-1)
    dots = (step[:-1] * step[1:]).sum(-1)
    denom = norms[:-1] * norms[1:]
    ok = denom > 1e-12 * max(float(norms.max()), 1e-300) ** 2
    cos = np.where(ok, dots / np.where(ok, denom, 1.0), np.nan)  # (L − 2, C, K)
    sn = np.linalg.norm(s, axis=-1)
    ratio = np.where(sn[0] > 0, sn[-1] / np.where(sn[0] > 0, sn[0], 1.0), np.nan)
    with np.errstate(all="ignore"):
        return LadderScores(spearman=_nanmean(rho, 1), diff_cosine=_nanmean(cos, (0, 2)),
                            norm_ratio=_nanmean(ratio, 1), projection=p.mean(2))


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    finite = np.isfinite(x)
    count = finite.sum(axis)
    total = np.where(finite, x, 0.0).sum(axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
