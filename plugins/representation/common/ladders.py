"""Intensity ladders: is a concept's intensity a magnitude along its direction? (numpy,
scipy.)

Activations ``h[l, c, k]`` (level l weakest first, concept c, context k, dimension d).
The concept-specific part at a level is ``s[l, c, k] = h[l, c, k] − mean_c' h[l, c', k]``
(what the intensity word adds to every concept alike cancels). Concept c's direction is
``u_c = unit(mean_{l, k} s[l, c, k])`` (its prompts' mean minus the mean of all concepts'
prompts) and its projection at a level ``p[l, c, k] = <s[l, c, k], u_c>``.

The step cosine is taken on s too: a step of the raw activations h[l+1] − h[l] is dominated
by what the intensity word adds to every concept alike, so its cosine measures the level
words' geometry, not the concept's. That raw cosine is kept as ``raw_diff_cosine``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: projections whose spread across levels is below this fraction of the concept-specific
#: part's norm are ties (no order): their Spearman ρ is NaN, not a ρ of rounding noise
TIE_TOLERANCE = 1e-5
#: a step of s whose norm is below this fraction of the concept-specific part's norm is no
#: step (rounding noise): the cosines it enters are NaN
STEP_TOLERANCE = 1e-4


@dataclass(frozen=True)
class LadderScores:
    """Per-concept scores (each a mean over contexts) and the per-level projections."""

    spearman: np.ndarray      # (C,) Spearman ρ(level, p[:, c, k]), mean over k
    diff_cosine: np.ndarray   # (C,) cos(δ_l, δ_{l+1}), δ_l = s[l+1] − s[l], mean over l, k
    raw_diff_cosine: np.ndarray  # (C,) the same on raw h: δ_l = h[l+1] − h[l]
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
    cos = _step_cosines(s, STEP_TOLERANCE * np.maximum(scale, 1e-300))
    hn = np.linalg.norm(h, axis=-1).mean(0)  # (C, K)
    raw = _step_cosines(h, 1e-6 * np.maximum(hn, 1e-300))
    sn = np.linalg.norm(s, axis=-1)
    ratio = np.where(sn[0] > 0, sn[-1] / np.where(sn[0] > 0, sn[0], 1.0), np.nan)
    with np.errstate(all="ignore"):
        return LadderScores(spearman=_nanmean(rho, 1), diff_cosine=_nanmean(cos, (0, 2)),
                            raw_diff_cosine=_nanmean(raw, (0, 2)),
                            norm_ratio=_nanmean(ratio, 1), projection=p.mean(2))


def _step_cosines(x: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """(L − 2, C, K) cos(x[l+1] − x[l], x[l+2] − x[l+1]); NaN where either step's norm is
    at most ``floor`` (C, K): a zero step has no direction."""
    step = x[1:] - x[:-1]
    norms = np.linalg.norm(step, axis=-1)  # (L − 1, C, K)
    dots = (step[:-1] * step[1:]).sum(-1)
    ok = (norms[:-1] > floor) & (norms[1:] > floor)
    denom = np.where(ok, norms[:-1] * norms[1:], 1.0)
    return np.where(ok, dots / denom, np.nan)


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    finite = np.isfinite(x)
    count = finite.sum(axis)
    total = np.where(finite, x, 0.0).sum(axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
