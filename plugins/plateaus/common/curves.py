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


# --- Onset metrics on bounded read-outs, log–log exponent, endpoint floor -----------------
#
# Max-slope sharpness cannot tell a plateau from a smooth quadratic: a KL (or JS) curve is
# quadratic near 0 for any smooth model, and α² has a max normalised slope of ~2, as does
# a curve that is flat up to α = 0.6 and then rises linearly (tests/test_plateau_ground_truth.py).
# What separates them is *where* a bounded read-out rises (onset) and how it starts (the
# log–log exponent near α = 0). A path whose endpoint read-out is below a stated floor says
# nothing about its shape (its normalised curve is noise): it is excluded and counted,
# never clamped.

#: Default endpoint floors per read-out (in the read-out's units). A path whose endpoint
#: read-out is below the floor is excluded from every normalised metric and counted in
#: ``n_excluded``. JS and KL are in nats; float32 read-outs (``mi_ideas.metrics`` computes in
#: float32) are rounding noise below about 1e-6, so 1e-3 leaves three orders of magnitude
#: between the 10% onset level and the noise.
FLOORS: dict[str, float] = {"js": 1e-3, "kl": 1e-3, "tv": 1e-2, "l2": 1e-6}

#: Default number of grid points (the first ones with α > 0) of the log–log fit.
N_FIT = 5

_FLOOR_RULE = (
    "paths whose endpoint read-out d(α_max) is below the floor (default {floor}) or not "
    "positive are excluded (NaN) and counted in n_excluded, never clamped"
)


def _onset_text(q: str, readout: str, floor: float) -> str:
    return (
        f"onset-{q}: the smallest α at which the read-out d(α) along a path first reaches "
        f"{q} of its endpoint d(α_max), linearly interpolated between the two grid points "
        f"around the crossing (α in the path's step units: a fraction of the path for "
        f"relative steps); read-out d = {readout}; " + _FLOOR_RULE.format(floor=floor)
        + ". A plateau followed by a jump gives onset-10% ≈ onset-50% ≈ the jump; a pure "
        "quadratic d ∝ α² (α from 0) gives onset-10% ≈ 0.32 α_max and onset-50% ≈ 0.71 α_max"
    )


_JS = ("Jensen–Shannon divergence JS(clean ‖ perturbed) of the next-token distribution at "
       "the last position, in nats (bounded by ln 2)")
_TV = ("total variation distance ½ Σ|p_clean − p_perturbed| of the next-token distribution "
       "at the last position (bounded by 1)")

_LOGLOG = (
    "log–log slope: the least-squares slope of log d(α) against log α over the first "
    f"n_fit (default {N_FIT}) grid points with α > 0, using those of them where d(α) is "
    "above the resolution (default 0: d > 0); NaN with fewer than 3 such points. A power "
    "law c·α^p gives p: ≈ 2 for a smooth (quadratic) start of KL, JS or TV², ≈ 1 for a "
    "linear one; a read-out that is exactly flat (below resolution) at the start, as on a "
    "plateau, gives NaN. Paths whose endpoint is below the floor (default 0: only "
    "non-positive endpoints) are NaN and counted in n_excluded"
)

DEFINITIONS.update({
    "onset": _onset_text("q", "the stated bounded read-out", FLOORS["js"]),
    "onset10_js": _onset_text("10%", _JS, FLOORS["js"]),
    "onset50_js": _onset_text("50%", _JS, FLOORS["js"]),
    "onset10_tv": _onset_text("10%", _TV, FLOORS["tv"]),
    "onset50_tv": _onset_text("50%", _TV, FLOORS["tv"]),
    "loglog_slope": _LOGLOG,
    "loglog_slope_js": _LOGLOG + "; read-out d = " + _JS,
    "loglog_slope_tv": _LOGLOG + "; read-out d = " + _TV,
    "sharpness_floored": _SHARPNESS + "; " + _FLOOR_RULE.format(floor=f"{FLOORS['kl']} for "
                         f"KL, {FLOORS['l2']} for L2"),
    "n_excluded": "n_excluded: the number of paths whose endpoint read-out d(α_max) is below "
                  "the stated floor or not positive (or not finite); they are left out of "
                  "every normalised metric (NaN), not clamped",
})


def valid_paths(endpoint: Any, floor: float) -> Any:
    """Boolean mask of paths whose endpoint read-out is finite, positive and ``>= floor``."""
    import torch

    endpoint = torch.as_tensor(endpoint)
    return torch.isfinite(endpoint) & (endpoint > 0) & (endpoint >= floor)


def exclude_small(curves: Any, floor: float) -> tuple[Any, int]:
    """(mask of kept paths, ``n_excluded``) for curves ``(..., n_steps)``: a path is kept
    when its endpoint ``curves[..., -1]`` passes :func:`valid_paths`."""
    mask = valid_paths(curves[..., -1], floor)
    return mask, int((~mask).sum())


def sharpness_with_floor(curves: Any, steps: Any, floor: float) -> tuple[Any, Any, int]:
    """(sharpness, max-slope α fraction, ``n_excluded``) as :func:`sharpness`, with NaN for
    the paths whose endpoint is below ``floor`` (excluded, not clamped)."""
    import torch

    curves = torch.as_tensor(curves)
    mask, n_excluded = exclude_small(curves, floor)
    safe = torch.where(mask[..., None], curves, torch.ones_like(curves))
    value, where = sharpness(safe, torch.as_tensor(steps, dtype=curves.dtype))
    nan = torch.tensor(float("nan"), dtype=value.dtype)
    return (torch.where(mask, value, nan),
            torch.where(mask, torch.as_tensor(where, dtype=value.dtype), nan), n_excluded)


def onset(curves: Any, steps: Any, fraction: float, floor: float = 0.0) -> Any:
    """α at which each curve ``(..., n_steps)`` first reaches ``fraction`` × its endpoint.

    Linear interpolation between the grid points around the first crossing; ``steps[0]``
    when the first point already reaches it. NaN for paths excluded by
    :func:`valid_paths` (endpoint below ``floor`` or not positive). Meant for bounded
    read-outs (JS ∈ [0, ln 2], total variation ∈ [0, 1]). Float64 result.
    """
    import torch

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"onset fraction must be in (0, 1], got {fraction}")
    c = torch.as_tensor(curves).double()
    s = torch.as_tensor(steps).double()
    mask = valid_paths(c[..., -1], floor)
    target = fraction * c[..., -1:]
    above = c >= target
    # the endpoint itself always reaches the target, so a crossing exists on kept paths
    k = torch.where(above.any(-1), above.to(torch.uint8).argmax(-1),
                    torch.full(above.shape[:-1], c.shape[-1] - 1))
    k0 = (k - 1).clamp_min(0)
    c1 = c.gather(-1, k[..., None])[..., 0]
    c0 = c.gather(-1, k0[..., None])[..., 0]
    s1, s0 = s[k], s[k0]
    t = target[..., 0]
    denom = c1 - c0
    frac = torch.where(denom > 0, (t - c0) / torch.where(denom > 0, denom, 1.0), 1.0)
    alpha = torch.where(k == 0, s[0].expand_as(s1), s0 + frac * (s1 - s0))
    return torch.where(mask, alpha, torch.tensor(float("nan"), dtype=alpha.dtype))


def loglog_slope(curves: Any, steps: Any, n_fit: int = N_FIT, *, resolution: float = 0.0,
                 floor: float = 0.0, min_points: int = 3) -> Any:
    """Least-squares slope of log d(α) vs log α over the first ``n_fit`` grid points with
    α > 0, using those where ``d > resolution`` (NaN with fewer than ``min_points``).

    A power law c·α^p gives p (≈ 2 for a smooth KL / JS start, ≈ 1 for a linear one).
    ``resolution``: values at or below it are rounding, not signal (float32 read-outs are
    noise below about 1e-6). Paths whose endpoint is below ``floor`` (or not positive) are
    NaN. Float64 result.
    """
    import torch

    if n_fit < 2 or min_points < 2:
        raise ValueError("loglog_slope needs n_fit >= 2 and min_points >= 2")
    c = torch.as_tensor(curves).double()
    s = torch.as_tensor(steps).double()
    idx = torch.nonzero(s > 0).flatten()[:n_fit]
    x = s[idx].log()
    y_raw = c[..., idx]
    use = torch.isfinite(y_raw) & (y_raw > max(resolution, 0.0))
    w = use.double()
    y = torch.where(use, y_raw, torch.ones_like(y_raw)).log()
    n = w.sum(-1)
    n_safe = n.clamp_min(1.0)
    xm = (w * x).sum(-1) / n_safe
    ym = (w * y).sum(-1) / n_safe
    dx = x - xm[..., None]
    sxx = (w * dx * dx).sum(-1)
    sxy = (w * dx * (y - ym[..., None])).sum(-1)
    ok = (n >= min_points) & (sxx > 0) & valid_paths(c[..., -1], floor)
    slope = sxy / torch.where(sxx > 0, sxx, torch.ones_like(sxx))
    return torch.where(ok, slope, torch.tensor(float("nan"), dtype=slope.dtype))
