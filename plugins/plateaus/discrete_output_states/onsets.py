"""Per-path curve metrics of the pair paths and the "plateau-like or not" verdict.

Max-slope sharpness cannot see a plateau: a KL curve that is flat and then rises linearly
(what a hard boundary gives, since KL keeps growing past it) and a smooth quadratic both
have a maximum normalised slope of about 2. The verdict is therefore made on onset metrics of
a bounded read-out (JS, bounded by ln 2): the path fraction α at which JS first reaches 10% and
50% of its endpoint (:func:`..common.curves.onset`), and their gap, the **jump width**
onset50 − onset10. A step (the output state changes at one boundary) has a jump width of
about 0; any power law c·α^p has 0.5^(1/p) − 0.1^(1/p) (0.39 for p = 2, 0.33 for p = 3, 0.24
for p = 5, 0.14 for p = 10). Paths whose endpoint read-out is below the floor
(:data:`..common.curves.FLOORS`) are excluded and counted, never clamped.
"""

from __future__ import annotations

import math
from typing import Any

#: Jump widths up to this count as a step-like rise: sharper than any power law α^p with
#: p < 10 (whose width is 0.5^(1/p) − 0.1^(1/p) ≥ 0.14).
JUMP_MAX = 0.15
#: JS values at or below this are float32 rounding, not signal (log–log fit resolution).
RESOLUTION = 1e-6

JUMP_DEFINITION = (
    "jump width: onset-50% − onset-10% of the JS read-out along a path (α in path fractions); "
    "≈ 0 for a step (a plateau, then the output state changes at one boundary), 0.5^(1/p) − "
    "0.1^(1/p) for a power law c·α^p (0.39 for p = 2, 0.33 for p = 3)")
EXPONENT_DEFINITION = (
    "onset exponent: ln 0.2 / ln(onset10 / onset50) of the JS read-out, the exponent p of the "
    "power law c·α^p with the same two onsets (2 = quadratic, smooth; → ∞ for a step)")
VERDICT_DEFINITION = (
    f"plateau_like: 1 if the 95% bootstrap interval over reference prompts of the median jump "
    f"width of other-cluster paths lies below {JUMP_MAX} (a step-like rise, sharper than any "
    f"power law α^p with p < 10), 0 if it lies above (a gradual, power-law-like rise), 0.5 if "
    f"it contains {JUMP_MAX} (undecided)")


def path_metrics(kl: Any, l2: Any, js: Any, tv: Any, steps: Any) -> dict[str, Any]:
    """Per-path metrics ``(n_prompts, n_paths)`` (NaN where excluded) and exclusion masks."""
    import torch

    from ..common.curves import FLOORS, loglog_slope, onset, sharpness_with_floor

    s_kl, _, _ = sharpness_with_floor(kl, steps, FLOORS["kl"])
    s_l2, _, _ = sharpness_with_floor(l2, steps, FLOORS["l2"])
    o10 = onset(js, steps, 0.1, FLOORS["js"])
    o50 = onset(js, steps, 0.5, FLOORS["js"])
    ratio = (o10 / o50).clamp(max=1.0)
    exponent = torch.where(ratio < 1, math.log(0.2) / ratio.log(), torch.full_like(ratio, math.inf))
    exponent = torch.where(torch.isnan(ratio), ratio, exponent)
    return {
        "sharpness_kl": s_kl.double(), "sharpness_l2": s_l2.double(),
        "onset10_js": o10, "onset50_js": o50, "jump_js": o50 - o10,
        "onset_exponent_js": exponent,
        "onset10_tv": onset(tv, steps, 0.1, FLOORS["tv"]),
        "onset50_tv": onset(tv, steps, 0.5, FLOORS["tv"]),
        "loglog_slope_js": loglog_slope(js, steps, resolution=RESOLUTION, floor=FLOORS["js"]),
        "excluded_kl": torch.isnan(s_kl), "excluded_js": torch.isnan(o10),
    }


def verdict(jump_per_unit: Any, rng: Any = 0) -> tuple[float, float, float, float, int]:
    """(plateau_like, median jump width, low, high, n_units) from per-prompt jump widths."""
    from mi_ideas.stats import unit_interval

    med, lo, hi, n = unit_interval(jump_per_unit, rng=rng)
    if n == 0:
        return math.nan, med, lo, hi, n
    value = 1.0 if hi < JUMP_MAX else 0.0 if lo > JUMP_MAX else 0.5
    return value, med, lo, hi, n


def answer_sentence(m: dict) -> str:
    """One sentence from the metrics (says "no difference" where the paired test does)."""
    k = int(m.get("k", 0))
    head = f"{k} output state{'s' if k != 1 else ''} (best silhouette {m.get('best_silhouette', math.nan):.2f})"
    if k < 2 or "plateau_like" not in m:
        return head + ": no discrete states to probe or interpolate between."
    word = {1.0: "step-like (plateau-like)", 0.0: "NOT plateau-like (a gradual rise)",
            0.5: "undecided between step-like and gradual"}.get(m["plateau_like"], "undecided")
    key = "cmp.jump_js.across_vs_within_far"
    p = m.get(f"{key}.wilcoxon_p", math.nan)
    if p < 0.05:
        ctrl = (f"{'narrower' if m[f'{key}.diff_mean'] < 0 else 'wider'} than on "
                f"distance-matched same-state paths by {abs(m[f'{key}.diff_mean']):.3f} [95% CI "
                f"{m[f'{key}.ci_low']:+.3f}, {m[f'{key}.ci_high']:+.3f}], Wilcoxon p = {p:.2g}")
    else:
        ctrl = f"no difference from distance-matched same-state paths (Wilcoxon p = {p:.2g})"
    return (f"{head}; paths to another state are {word}: JS reaches 10% / 50% of its endpoint "
            f"at alpha = {m['across.onset10_js_median']:.2f} / {m['across.onset50_js_median']:.2f}, "
            f"jump width {m['across.jump_js_median']:.3f} [95% CI {m['across.jump_js_ci_low']:.3f}, "
            f"{m['across.jump_js_ci_high']:.3f}] (step ~0, alpha^2 0.39, step-like below "
            f"{JUMP_MAX}), onset exponent {m['across.onset_exponent_js_median']:.2f}; {ctrl}. "
            f"Max-slope KL sharpness {m['across.sharpness_kl_median']:.2f} vs "
            f"{m['within_far.sharpness_kl_median']:.2f} (about 2 for a smooth or a "
            f"flat-then-linear KL curve alike).")
