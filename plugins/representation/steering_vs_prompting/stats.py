"""Prompt-level bootstrap intervals, ratios and paired comparisons (numpy / scipy).

One matrix of resampled prompt indices is drawn per run and shared by every statistic, so
a ratio or a paired difference is computed on the same resampled prompts as its parts
(hand-written for that reason: scipy.stats.bootstrap resamples each call on its own).
"""

from __future__ import annotations

import math
from typing import Any

LEVEL = 0.95


def resample_indices(n: int, n_boot: int, rng: Any) -> Any:
    """``(n_boot, n)`` prompt indices drawn with replacement."""
    return rng.integers(0, n, size=(n_boot, n))


def _interval(values: Any) -> tuple[float, float]:
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(v, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return float(lo), float(hi)


def mean_ci(x: Any, idx: Any) -> dict[str, float]:
    """Mean over prompts and its 95% percentile bootstrap interval."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    lo, hi = _interval(x[idx].mean(axis=1))
    return {"mean": float(x.mean()), "ci_low": lo, "ci_high": hi}


def retained(with_ignore: Any, without: Any, baseline: Any, idx: Any,
             ignore_baseline: Any = None) -> dict[str, float]:
    """(mean(with_ignore) − mean(g)) / (mean(without) − mean(baseline)), over the same
    prompts, g = ``ignore_baseline`` when given (the ignore line alone) else ``baseline``;
    NaN where the denominator (the method's effect) is not positive."""
    import numpy as np

    a, b, z = (np.asarray(v, dtype=float) for v in (with_ignore, without, baseline))
    g = z if ignore_baseline is None else np.asarray(ignore_baseline, dtype=float)

    def ratio(am: Any, bm: Any, zm: Any, gm: Any) -> Any:
        den = bm - zm
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, (am - gm) / np.where(den > 0, den, 1.0), np.nan)

    point = float(ratio(a.mean(), b.mean(), z.mean(), g.mean()))
    boots = ratio(a[idx].mean(1), b[idx].mean(1), z[idx].mean(1), g[idx].mean(1))
    lo, hi = _interval(boots) if math.isfinite(point) else (math.nan, math.nan)
    return {"mean": point, "ci_low": lo, "ci_high": hi,
            "effect": float(b.mean() - z.mean()),
            "undefined_fraction": float(np.mean(~np.isfinite(boots)))}


def paired(a: Any, b: Any, idx: Any) -> dict[str, float]:
    """Mean of the per-prompt difference a − b, its bootstrap interval, and the two-sided
    Wilcoxon signed-rank p-value (scipy; zero differences dropped; exact without ties, the
    normal approximation with tie correction otherwise; 1.0 when all are 0)."""
    import numpy as np
    from scipy.stats import wilcoxon

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    lo, hi = _interval(d[idx].mean(axis=1))
    if np.all(d == 0):
        p = 1.0
    else:
        nz = d[d != 0]
        # exact null distribution when there are no ties (and n is small), else the normal
        # approximation with tie correction (scipy's "auto" would run a slow permutation test)
        method = "exact" if len(np.unique(np.abs(nz))) == nz.size <= 50 else "asymptotic"
        p = float(wilcoxon(nz, zero_method="wilcox", alternative="two-sided",
                           method=method).pvalue)
    return {"mean": float(d.mean()), "ci_low": lo, "ci_high": hi, "p_wilcoxon": p,
            "n": int(d.size), "n_nonzero": int(np.count_nonzero(d))}
