"""Unit-level statistics for "A vs B" verdicts, shared by every idea (numpy / scipy only).

Paths that share a prompt are not independent: a Mann–Whitney test over paths treats 40
paths of one prompt as 40 observations and finds "effects" that are one prompt's quirk
(pseudo-replication; ``tests/test_plateau_ground_truth.py`` shows it). Every comparison here
is made over independent units (prompts): collapse per-path values with :func:`per_unit`,
then compare the two conditions, paired by unit, with :func:`paired_comparison`: the mean
and median difference, a 95% percentile-bootstrap interval over units, and the Wilcoxon
signed-rank p-value. :data:`DEFINITIONS` states each number in words.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Default number of bootstrap resamples (over units).
N_BOOT = 2000
#: Below this many units the percentile bootstrap interval is too narrow (it uses the
#: plug-in spread and normal-like quantiles, not Student's t); :meth:`describe` says so.
FEW_UNITS = 10

DEFINITIONS: dict[str, str] = {
    "per_unit": "per-unit value: the median (or the stated reduction) over a unit's paths of "
                "a per-path metric, NaN paths (excluded by the floor) left out; units "
                "(prompts) are the independent observations, paths are not",
    "n_units": "n_units: the number of units (prompts) with a finite value in both "
               "conditions, the sample size of the comparison",
    "mean_diff": "mean difference: the mean over units of b − a (condition B minus "
                 "condition A, paired by unit)",
    "median_diff": "median difference: the median over units of b − a",
    "ci95": "95% interval: the 2.5th and 97.5th percentiles of the mean difference over "
            "bootstrap resamples of the units (with replacement, n_boot resamples; percentile "
            "method; too narrow below 10 units). With interval = expanded: Hesterberg's "
            "expanded percentile interval, the percentiles Φ(±√(n/(n−1)) t_{n−1, 0.975}) of "
            "the same resamples (n units), which keeps its coverage with few units",
    "wilcoxon_p": "Wilcoxon signed-rank p-value (two-sided, scipy.stats.wilcoxon, zero "
                  "differences dropped; 1 when every difference is 0) of the per-unit "
                  "differences b − a; with n units the smallest possible exact p is 2/2^n "
                  "(0.0625 for 5 units)",
    "bootstrap_p": "bootstrap p-value: twice the smaller of the fractions of bootstrap mean "
                   "differences ≤ 0 and ≥ 0 (two-sided, at least 1/(n_boot + 1))",
    "significant": "significant: for test = wilcoxon, Wilcoxon p < 0.05; for test = "
                   "bootstrap, the 95% interval excludes 0",
}


@dataclass(frozen=True)
class PairedComparison:
    """The result of :func:`paired_comparison` (every field a plain number or string)."""

    test: str
    n_units: int
    n_dropped: int
    mean_diff: float
    median_diff: float
    ci_low: float
    ci_high: float
    p_wilcoxon: float
    p_bootstrap: float
    n_boot: int
    confidence: float = 0.95
    interval: str = "percentile"

    @property
    def p_value(self) -> float:
        """p-value of the test used."""
        return self.p_wilcoxon if self.test == "wilcoxon" else self.p_bootstrap

    @property
    def ci_excludes_zero(self) -> bool:
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def significant(self, alpha: float = 0.05) -> bool:
        """Wilcoxon p < alpha (test = wilcoxon) or the 95% interval excludes 0 (bootstrap)."""
        if self.test == "wilcoxon":
            return bool(self.p_wilcoxon < alpha)
        return self.ci_excludes_zero

    def describe(self) -> str:
        few = (f"; only {self.n_units} units: percentile interval too narrow"
               if self.n_units < FEW_UNITS and self.interval == "percentile" else "")
        dropped = f", {self.n_dropped} dropped (NaN)" if self.n_dropped else ""
        return (f"B − A over {self.n_units} units{dropped}: mean {self.mean_diff:+.4g} "
                f"[{self.confidence:.0%} {self.interval} bootstrap CI "
                f"{self.ci_low:+.4g}, {self.ci_high:+.4g}], median "
                f"{self.median_diff:+.4g}; {self.test} p = {self.p_value:.3g} "
                f"(Wilcoxon signed-rank p = {self.p_wilcoxon:.3g}){few}")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "p_value": self.p_value, "significant": self.significant()}


@dataclass(frozen=True)
class PerUnit:
    """Per-unit values from :func:`per_unit`: ``units`` sorted, ``values`` aligned with
    them, ``n_paths`` the finite per-path values behind each."""

    units: np.ndarray
    values: np.ndarray
    n_paths: np.ndarray
    reduce: str


def per_unit(values: Any, unit_ids: Any, reduce: str = "median") -> PerUnit:
    """Collapse per-path ``values`` to one value per unit (prompt) of ``unit_ids``.

    NaN paths (excluded by a floor) are left out; a unit with none left is NaN.
    ``reduce``: ``"median"`` or ``"mean"``.
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    ids = np.asarray(unit_ids).reshape(-1)
    if v.shape != ids.shape:
        raise ValueError(f"per_unit: {v.size} values but {ids.size} unit ids")
    if reduce not in ("median", "mean"):
        raise ValueError(f"per_unit: reduce must be 'median' or 'mean', got {reduce!r}")
    units, inverse = np.unique(ids, return_inverse=True)
    out = np.full(len(units), np.nan)
    counts = np.zeros(len(units), dtype=int)
    for i in range(len(units)):
        u = v[inverse == i]
        u = u[np.isfinite(u)]
        counts[i] = u.size
        if u.size:
            out[i] = np.median(u) if reduce == "median" else np.mean(u)
    return PerUnit(units=units, values=out, n_paths=counts, reduce=reduce)


def _aligned(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, PerUnit) or isinstance(b, PerUnit):
        if not (isinstance(a, PerUnit) and isinstance(b, PerUnit)):
            raise ValueError("paired_comparison: pass two PerUnit results or two arrays")
        if a.units.shape != b.units.shape or not np.array_equal(a.units, b.units):
            raise ValueError("paired_comparison: the two conditions have different units; "
                             "pair them by unit first")
        return a.values, b.values
    av = np.asarray(a, dtype=float).reshape(-1)
    bv = np.asarray(b, dtype=float).reshape(-1)
    if av.shape != bv.shape:
        raise ValueError(f"paired_comparison: {av.size} vs {bv.size} units; values must be "
                         "paired by unit")
    return av, bv


def paired_comparison(a: Any, b: Any, *, test: str = "wilcoxon", n_boot: int = N_BOOT,
                      rng: Any = None, confidence: float = 0.95,
                      interval: str = "percentile") -> PairedComparison:
    """Compare condition B with condition A over units (prompts), paired by unit.

    ``a``, ``b``: per-unit values (arrays in the same unit order, or two :class:`PerUnit`
    with the same units). Units with a NaN in either condition are dropped and counted.
    ``test``: ``"wilcoxon"`` (verdict from the signed-rank p) or ``"bootstrap"`` (verdict
    from the interval); both numbers are always reported. ``rng``: a seed or
    ``numpy.random.Generator`` for the bootstrap. ``interval``: ``"percentile"`` (the
    plain percentile interval) or ``"expanded"`` (Hesterberg's expanded percentile
    interval: percentiles at Φ(±√(n/(n−1)) t_{n−1}), which keeps its coverage with few
    units, where the plain one is too narrow).
    """
    from scipy.stats import norm, t, wilcoxon

    if interval not in ("percentile", "expanded"):
        raise ValueError(f"paired_comparison: interval must be 'percentile' or 'expanded', "
                         f"got {interval!r}")
    if test not in ("wilcoxon", "bootstrap"):
        raise ValueError(f"paired_comparison: test must be 'wilcoxon' or 'bootstrap', got {test!r}")
    av, bv = _aligned(a, b)
    d_all = bv - av
    keep = np.isfinite(d_all)
    d = d_all[keep]
    n = int(d.size)
    n_dropped = int((~keep).sum())
    if n < 2:
        raise ValueError(f"paired_comparison needs at least 2 units with finite values, got {n}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    boot = d[gen.integers(0, n, size=(int(n_boot), n))].mean(axis=1)
    lo_q = (1 - confidence) / 2
    if interval == "expanded":
        lo_q = float(norm.cdf(-np.sqrt(n / (n - 1)) * t.ppf(1 - lo_q, n - 1)))
    hi_q = 1 - lo_q
    ci_low, ci_high = (float(x) for x in np.quantile(boot, [lo_q, hi_q]))
    p_boot = float(min(1.0, max(2 * min((boot <= 0).mean(), (boot >= 0).mean()),
                                1.0 / (n_boot + 1))))
    if np.all(d == 0):
        p_w = 1.0
    else:
        p_w = float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedComparison(test=test, n_units=n, n_dropped=n_dropped,
                            mean_diff=float(d.mean()), median_diff=float(np.median(d)),
                            ci_low=ci_low, ci_high=ci_high, p_wilcoxon=p_w,
                            p_bootstrap=p_boot, n_boot=int(n_boot), confidence=confidence,
                            interval=interval)


def unit_interval(values: Any, *, reduce: str = "median", n_boot: int = N_BOOT, rng: Any = None,
                  confidence: float = 0.95, interval: str = "percentile"
                  ) -> tuple[float, float, float, int]:
    """(estimate, low, high, n_units): the median (or mean) over units of per-unit ``values``
    and its bootstrap interval over units (NaN units dropped). ``interval``: as in
    :func:`paired_comparison` (``"expanded"``: Hesterberg's expanded percentiles, for few
    units; it needs two units, with fewer the interval is NaN)."""
    from scipy.stats import norm, t

    if interval not in ("percentile", "expanded"):
        raise ValueError(f"unit_interval: interval must be 'percentile' or 'expanded', got {interval!r}")
    if reduce not in ("median", "mean"):
        raise ValueError(f"unit_interval: reduce must be 'median' or 'mean', got {reduce!r}")
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    f = np.median if reduce == "median" else np.mean
    if interval == "expanded" and n < 2:
        return float(f(v)), float("nan"), float("nan"), n
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    boot = f(v[gen.integers(0, n, size=(int(n_boot), n))], axis=1)
    lo_q = (1 - confidence) / 2
    if interval == "expanded":
        lo_q = float(norm.cdf(-np.sqrt(n / (n - 1)) * t.ppf(1 - lo_q, n - 1)))
    lo, hi = np.quantile(boot, [lo_q, 1 - lo_q])
    return float(f(v)), float(lo), float(hi), n


DEFINITIONS["unit_interval"] = (
    "95% interval of a median (or mean, reduce = mean) over units: the 2.5th and 97.5th "
    "percentiles of the median over bootstrap resamples of the units (prompts, with "
    "replacement, n_boot resamples); with interval = expanded, Hesterberg's expanded "
    "percentiles Φ(±√(n/(n−1)) t_{n−1, 0.975}) of the same resamples (n units; NaN below 2)")
