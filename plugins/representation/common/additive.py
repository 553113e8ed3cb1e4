"""Additive (main-effects) models of activations over a factorial grid (numpy only).

Written by hand because no installed library fits a multi-output ANOVA with a sum-to-zero
coding, leave-one-out predictions from the hat matrix and replicated-context interaction
tests in a few lines (scikit-learn's OneHotEncoder(drop=...) gives treatment coding only
and no hat matrix; statsmodels is not a dependency). Everything is float64.

Model: h_c ≈ μ + Σ_s a_s[v_s(c)] for cell c with slot values v_s(c). The one-hot design
(an intercept plus one column per value) is rank-deficient (each slot's columns sum to
the intercept); :func:`sum_to_zero_design` uses the full-rank deviation coding instead:
for slot s with n_s values, n_s − 1 columns, value j < n_s − 1 coded +1 in column j, the
last value −1 in every column. Its coefficients are the effects a_s[j] with
Σ_j a_s[j] = 0, so on a balanced (full factorial) grid a_s[j] is the marginal mean of
value j minus the grand mean, and the slots' sums of squares add up to the fit's.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

import numpy as np


def sum_to_zero_design(levels: np.ndarray, n_levels: Sequence[int],
                       intercept: bool = True) -> tuple[np.ndarray, list[slice]]:
    """The full-rank deviation-coded design of ``levels`` ((N, S) value indices) and the
    column slice of each slot."""
    levels = np.asarray(levels, dtype=int)
    cols, slices, at = [], [], int(intercept)
    if intercept:
        cols.append(np.ones((levels.shape[0], 1)))
    for s, n in enumerate(n_levels):
        block = np.zeros((levels.shape[0], n - 1))
        for j in range(n - 1):
            block[levels[:, s] == j, j] = 1.0
        block[levels[:, s] == n - 1, :] = -1.0
        cols.append(block)
        slices.append(slice(at, at + n - 1))
        at += n - 1
    return np.concatenate(cols, axis=1), slices


def interaction_columns(x: np.ndarray, a: slice, b: slice) -> np.ndarray:
    """Columns of the a x b interaction: every product of a column of slot a's coding with
    one of slot b's ((n_a − 1)(n_b − 1) columns)."""
    xa, xb = x[:, a], x[:, b]
    return (xa[:, :, None] * xb[:, None, :]).reshape(x.shape[0], -1)


def r2(y: np.ndarray, fitted: np.ndarray) -> float:
    """1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖² over rows and dimensions (ȳ the mean row)."""
    tss = float(((y - y.mean(0)) ** 2).sum())
    return 1.0 - float(((y - fitted) ** 2).sum()) / tss if tss > 0 else float("nan")


def _lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares through the normal equations (Cholesky): the codings here are full rank
    and well conditioned, and numpy's SVD-based lstsq was 30x slower on a busy machine;
    a rank-deficient design falls back to lstsq."""
    try:
        from scipy.linalg import cho_factor, cho_solve

        return cho_solve(cho_factor(x.T @ x), x.T @ y)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(x, y, rcond=None)[0]


@dataclass(frozen=True)
class AdditiveFit:
    """The additive fit of cell activations ``y`` ((N, d))."""

    r2: float
    effects: list[np.ndarray]  # per slot, (n_s, d), summing to zero over values
    shares: list[float]        # per slot: Σ_c ‖a_s[v_s(c)]‖² / Σ_c ‖y_c − ȳ‖²
    loco: np.ndarray           # (N, d) leave-one-combination-out predictions
    cell_fit: np.ndarray       # (N,) 1 − ‖y_c − ŷ_c‖² / (TSS / N); its mean is r2
    n_params: int              # Σ_s (n_s − 1), the design's rank minus the intercept


def fit_additive(y: np.ndarray, levels: np.ndarray, n_levels: Sequence[int]) -> AdditiveFit:
    """Fit h ≈ μ + Σ_s a_s[v_s] by least squares; leave-one-out predictions from the hat
    matrix (exact for least squares: ŷ_(−i) = y_i − e_i / (1 − H_ii))."""
    y = np.asarray(y, dtype=np.float64)
    x, slices = sum_to_zero_design(levels, n_levels)
    coef = _lstsq(x, y)
    fitted = x @ coef
    resid = y - fitted
    tss = float(((y - y.mean(0)) ** 2).sum())
    effects, shares = [], []
    for sl in slices:
        beta = coef[sl]
        eff = np.concatenate([beta, -beta.sum(0, keepdims=True)], axis=0)
        effects.append(eff)
        contrib = x[:, sl] @ beta
        shares.append(float((contrib ** 2).sum()) / tss if tss > 0 else float("nan"))
    hat = np.einsum("ij,jk,ik->i", x, np.linalg.pinv(x.T @ x), x)
    if np.any(hat > 1 - 1e-9):
        raise ValueError("a cell alone determines a parameter (hat value 1): leave-one-out "
                         "prediction is impossible for this design")
    loco = y - resid / (1.0 - hat)[:, None]
    cell_fit = 1.0 - (resid ** 2).sum(1) / (tss / len(y)) if tss > 0 else np.full(len(y), np.nan)
    return AdditiveFit(r2=r2(y, fitted), effects=effects, shares=shares,
                       loco=loco, cell_fit=cell_fit, n_params=x.shape[1] - 1)


def loco_scores(y: np.ndarray, loco: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: the cosine between the leave-one-out prediction and the actual activation,
    both centred on the mean of the other cells; and whether the actual activation's nearest
    (Euclidean) leave-one-out prediction among all cells' is its own."""
    n = len(y)
    others = (y.sum(0, keepdims=True) - y) / (n - 1)
    a, p = y - others, loco - others
    cos = (a * p).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(p, axis=1),
                                       1e-300)
    d2 = (y ** 2).sum(1)[:, None] - 2 * y @ loco.T + (loco ** 2).sum(1)[None, :]
    hit = d2.argmin(1) == np.arange(n)
    return cos, hit.astype(float)


def shuffled_r2(y: np.ndarray, levels: np.ndarray, n_levels: Sequence[int], rng: Any,
                n: int) -> tuple[float, np.ndarray, float]:
    """Mean R² of the additive fit with the cells' labels permuted (``n`` permutations),
    the per-cell fit averaged over them, and the exact expectation p / (N − 1).

    For any data, a uniformly random permutation of the rows makes the expected projection
    onto the p centred design columns (p / (N − 1)) times the identity on centred data, so
    E[R²] = p / (N − 1), p = Σ_s (n_s − 1).
    """
    x, _ = sum_to_zero_design(levels, n_levels)
    y = np.asarray(y, dtype=np.float64)
    tss = float(((y - y.mean(0)) ** 2).sum())
    hat = x @ _lstsq(x, np.eye(len(y)))  # the projection onto the design, computed once
    values, cell = [], np.zeros(len(y))
    for _ in range(n):
        perm = rng.permutation(len(y))
        yp = y[perm]
        resid = yp - hat @ yp
        values.append(r2(yp, yp - resid))
        back = np.empty(len(y))
        back[perm] = 1.0 - (resid ** 2).sum(1) / (tss / len(y))  # per original cell
        cell += back / n
    return float(np.mean(values)), cell, (x.shape[1] - 1) / (len(y) - 1)


def interactions(obs: np.ndarray, levels: np.ndarray, n_levels: Sequence[int],
                 names: Sequence[str]) -> tuple[dict[str, dict[str, float]], float]:
    """Pairwise interaction strength from replicated contexts.

    ``obs``: (N cells, K contexts, d). The base model is additive in the slots plus an
    additive context shift; for each slot pair (a, b) the a x b term is added. Returns, per
    pair, ``share`` = (RSS_base − RSS_base+ab) / TSS and ``f_ratio`` = [(RSS_base −
    RSS_base+ab) / df_ab] / [RSS_cells / df_cells], the mean square of the interaction over
    that of the replicates' residual, where RSS_cells is the residual of the saturated
    cell + context model (y_ck − ȳ_c· − ȳ_·k + ȳ_··, df (N − 1)(K − 1)), pooled over the d
    dimensions (≈ 1 without interaction when the residual is isotropic); and the noise
    share RSS_cells / TSS. TSS = Σ‖y_ck − ȳ‖² over all N·K rows. Needs K ≥ 2.
    """
    n, k, d = obs.shape
    y = obs.reshape(n * k, d).astype(np.float64)
    cell_levels = np.repeat(np.asarray(levels, dtype=int), k, axis=0)
    ctx = np.tile(np.arange(k), n)[:, None]
    x, slices = sum_to_zero_design(cell_levels, n_levels)
    xc, _ = sum_to_zero_design(ctx, [k], intercept=False)
    base = np.concatenate([x, xc], axis=1)
    tss = float(((y - y.mean(0)) ** 2).sum())
    rss_base = float(((y - base @ _lstsq(base, y)) ** 2).sum())
    two_way = obs - obs.mean(1, keepdims=True) - obs.mean(0, keepdims=True) + obs.mean((0, 1))
    rss_cells = float((two_way ** 2).sum())
    ms_cells = rss_cells / ((n - 1) * (k - 1))
    out = {}
    for (ia, a), (ib, b) in combinations(enumerate(names), 2):
        cols = interaction_columns(x, slices[ia], slices[ib])
        full = np.concatenate([base, cols], axis=1)
        rss = float(((y - full @ _lstsq(full, y)) ** 2).sum())
        gain = max(rss_base - rss, 0.0)
        out[f"{a}_x_{b}"] = {"share": gain / tss if tss > 0 else float("nan"),
                             "f_ratio": (gain / cols.shape[1]) / ms_cells if ms_cells > 0
                             else float("nan")}
    return out, rss_cells / tss if tss > 0 else float("nan")
