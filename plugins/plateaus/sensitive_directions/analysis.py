"""Sensitivity read-outs of KL-vs-t curves and the family comparisons (torch + scipy).

- **t_cross** (crossing length): the perturbation length t at which KL(clean ‖ perturbed)
  first exceeds the threshold, linearly interpolated between the two grid steps around
  the first crossing (:func:`..common.curves.first_crossing` gives the step); ``inf`` when the
  curve never crosses within the grid (censored). Smaller = more sensitive.
- **curvature**: KL(t_s) / t_s² at the small step t_s (the grid's first nonzero step).
  KL is quadratic near zero for any smooth model, KL ≈ ½ dᵀ F d t² (F the Fisher
  information of the next-token distribution w.r.t. the activation), so this estimates
  ½ dᵀ F d, the small-step sensitivity. Larger = more sensitive.
- **KS distance**: the family's shared KS statistic (``DEFINITIONS["ks"]`` in
  :mod:`..common.curves`) between two families' t_cross samples (censored values sort
  above every finite one).
- **AUC** (probability of superiority): P(t_a < t_b) + ½ P(t_a = t_b) over all pairs of
  a path of family a and one of family b (Mann–Whitney U / (n_a n_b)); > 0.5 means a
  crosses earlier (is more sensitive).
"""

from __future__ import annotations

import math
from typing import Any

from ..common.curves import first_crossing, ks_distance


def crossing_t(kl: Any, steps: Any, threshold: float) -> Any:
    """Interpolated t at the first crossing of ``threshold`` (``inf`` if none): shape ``kl[..., 0]``."""
    import torch

    idx = first_crossing(kl, threshold)
    n = kl.shape[-1]
    hi = idx.clamp(max=n - 1)
    lo = (hi - 1).clamp(min=0)
    k_hi = kl.gather(-1, hi[..., None])[..., 0]
    k_lo = kl.gather(-1, lo[..., None])[..., 0]
    t_hi, t_lo = steps[hi], steps[lo]
    frac = ((threshold - k_lo) / (k_hi - k_lo).clamp_min(1e-30)).clamp(0, 1)
    t = torch.where(hi > lo, t_lo + frac * (t_hi - t_lo), t_hi)
    return torch.where(idx >= n, torch.full_like(t, math.inf), t)


def curvature(kl: Any, steps: Any, index: int = 1) -> Any:
    """KL(t_s) / t_s² at ``steps[index]``: the small-step sensitivity."""
    return kl[..., index] / steps[index] ** 2


def summary(values: Any) -> dict[str, float]:
    """Median, quartiles (inf-aware) and the censored (inf) fraction of a sample."""
    import torch

    v = values.reshape(-1).double()
    q = torch.quantile(torch.where(torch.isinf(v), torch.full_like(v, 1e300), v),
                       torch.tensor([0.25, 0.5, 0.75], dtype=v.dtype))
    q = [math.inf if x >= 1e299 else float(x) for x in q]
    return {"median": q[1], "q25": q[0], "q75": q[2], "iqr": q[2] - q[0],
            "censored_frac": float(torch.isinf(v).float().mean()), "n": int(v.numel())}


def ks(a: Any, b: Any) -> float:
    """KS distance between two t_cross samples (inf kept: it sorts above every number)."""
    import torch

    big = 1e30
    return ks_distance(torch.nan_to_num(a.double(), posinf=big),
                       torch.nan_to_num(b.double(), posinf=big))


def compare(a: Any, b: Any) -> dict[str, float]:
    """Is family ``a`` more sensitive than ``b``? ``a``, ``b``: t_cross ``(n_prompts, paths)``.

    Pooled: AUC = P(t_a < t_b) + ½ P(tie) (Mann–Whitney, two-sided p) and the ratio of
    medians. Paired by prompt (prompts differ in sensitivity): the fraction of prompts
    whose median t_a is below their median t_b, and the two-sided Wilcoxon signed-rank p
    on the per-prompt log-ratio of the medians (censored medians compare as larger).
    """
    import numpy as np
    import torch
    from scipy.stats import mannwhitneyu, wilcoxon

    big = 1e30
    fa = torch.nan_to_num(a.double(), posinf=big)
    fb = torch.nan_to_num(b.double(), posinf=big)
    u = mannwhitneyu(fa.reshape(-1).numpy(), fb.reshape(-1).numpy(), alternative="two-sided")
    auc = 1.0 - float(u.statistic) / (fa.numel() * fb.numel())  # U counts a > b
    ma, mb = torch.quantile(fa, 0.5, dim=-1), torch.quantile(fb, 0.5, dim=-1)
    both_censored = (ma >= big) & (mb >= big)
    diff = (torch.log(ma.clamp(max=1e6)) - torch.log(mb.clamp(max=1e6)))[~both_censored]
    frac = float((ma < mb).double().mean() + 0.5 * (ma == mb).double().mean())
    try:
        w_p = float(wilcoxon(diff.numpy()).pvalue) if (diff != 0).any() else 1.0
    except ValueError:
        w_p = math.nan
    med_a, med_b = summary(a)["median"], summary(b)["median"]
    ratio = med_a / med_b if np.isfinite(med_a) and np.isfinite(med_b) else math.nan
    return {"auc": auc, "mannwhitney_p": float(u.pvalue), "median_ratio": ratio,
            "prompt_frac": frac, "wilcoxon_p": w_p}
