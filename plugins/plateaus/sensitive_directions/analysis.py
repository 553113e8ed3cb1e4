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
- **paired comparison** (every "A vs B" verdict): per prompt, the median t_cross of each
  family's paths (censored medians set to ``cap``, just beyond the grid, and counted); the
  per-prompt log ratio log(t_A / t_B) is compared with the Wilcoxon signed-rank test over
  prompts (:func:`mi_ideas.stats.paired_comparison`), with a 95% bootstrap interval over
  prompts of its mean. Paths of one prompt are not independent, so no test pools them.
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


def per_prompt_median(t: Any, cap: float) -> Any:
    """Median over each prompt's paths of ``t`` ``(n_prompts, paths)``; ``inf`` → ``cap``."""
    import torch

    capped = torch.nan_to_num(t.double(), posinf=cap).clamp(max=cap)
    return torch.quantile(capped, 0.5, dim=-1)


def compare(a: Any, b: Any, cap: float, *, rng: Any = 0) -> dict[str, Any]:
    """Is family ``a`` more sensitive than ``b``? ``a``, ``b``: t_cross ``(n_prompts, paths)``.

    Paired over prompts: the per-prompt log ratio log(median t_a / median t_b) (censored
    medians set to ``cap``), Wilcoxon signed-rank p, bootstrap 95% interval of its mean;
    ``ratio`` = exp(mean log ratio) (< 1: a crosses earlier, i.e. is more sensitive).
    """
    import numpy as np

    from mi_ideas.stats import paired_comparison

    ma, mb = per_prompt_median(a, cap), per_prompt_median(b, cap)
    both = (ma >= cap) & (mb >= cap)
    la = np.log(ma.numpy())
    lb = np.log(mb.numpy())
    la[both.numpy()] = np.nan  # no information on a prompt where neither family crosses
    pc = paired_comparison(lb, la, test="wilcoxon", rng=rng)  # B - A = log t_a - log t_b
    sig = pc.significant()
    verdict = (1.0 if pc.mean_diff < 0 else -1.0) if sig else 0.0
    frac = float((ma < mb).double().mean() + 0.5 * (ma == mb).double().mean())
    return {"log_ratio_mean": pc.mean_diff, "log_ratio_ci_low": pc.ci_low,
            "log_ratio_ci_high": pc.ci_high, "ratio": math.exp(pc.mean_diff),
            "ratio_ci_low": math.exp(pc.ci_low), "ratio_ci_high": math.exp(pc.ci_high),
            "wilcoxon_p": pc.p_wilcoxon, "n_prompts": pc.n_units, "prompt_frac": frac,
            "n_censored_prompts": int(((ma >= cap) | (mb >= cap)).sum()),
            "verdict": verdict, "test": "Wilcoxon signed-rank over prompts (two-sided), "
            "95% percentile bootstrap interval over prompts",
            "describe": pc.describe()}
