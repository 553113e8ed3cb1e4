"""One definition of each shared quantity (torch only, imported lazily by callers).

Every idea and integration computes these through this module, so a number called
"KL" or "explained variance" means the same thing everywhere; ``DEFINITIONS`` states each
in words, for results to quote next to the value. :mod:`mi_ideas.trace_ops` keeps its own
copy of the KL (it ships to servers without this package); ``tests/test_metrics.py``
asserts the two agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mi_ideas.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFINITIONS: dict[str, str] = {
    "kl": "KL(p ‖ q) = Σ_v p(v) (log p(v) − log q(v)) in nats, p the reference next-token "
          "distribution, q the compared one",
    "js": "Jensen–Shannon divergence ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2, in nats",
    "total_variation": "total variation distance ½ Σ_v |p(v) − q(v)|",
    "explained_variance": "1 − Σᵢ‖xᵢ − x̂ᵢ‖² / Σᵢ‖xᵢ − x̄‖², x̄ the mean row of x (float64)",
}


def kl_divergence(ref_logprobs: "torch.Tensor", logprobs: "torch.Tensor") -> "torch.Tensor":
    """KL(ref ‖ q) over the last dimension, from log-probabilities (nats)."""
    ref, lp = ref_logprobs.float(), logprobs.float()
    return (ref.exp() * (ref - lp)).sum(-1)


def js_divergence(logprobs_p: "torch.Tensor", logprobs_q: "torch.Tensor") -> "torch.Tensor":
    """Jensen–Shannon divergence over the last dimension, from log-probabilities (nats)."""
    import math

    import torch

    p, q = logprobs_p.float(), logprobs_q.float()
    m = torch.logsumexp(torch.stack([p, q]), dim=0) - math.log(2.0)
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


def total_variation(logprobs_p: "torch.Tensor", logprobs_q: "torch.Tensor") -> "torch.Tensor":
    """Total variation distance ½ Σ|p − q| over the last dimension, from log-probabilities."""
    return 0.5 * (logprobs_p.float().exp() - logprobs_q.float().exp()).abs().sum(-1)


def explained_variance(x: "torch.Tensor", x_hat: "torch.Tensor") -> float:
    """1 − Σᵢ‖xᵢ − x̂ᵢ‖² / Σᵢ‖xᵢ − x̄‖² (x̄ the mean row of ``x``), in float64."""
    x = x.double()
    resid = (x - x_hat.double()).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    if float(total) == 0.0:
        raise UsageError("explained variance is undefined on rows that are all equal.")
    return float(1.0 - resid / total)


def row_mask(batch: Any, positions: str = "all", *, skip_bos: bool = True,
             prepend_bos: bool = True) -> "torch.Tensor":
    """The boolean ``(batch, seq)`` mask of the token rows a harvest stores for a
    left-padded ``batch``: every real token (the BOS at each row's first real position
    skipped) or each text's last token."""
    import torch

    if positions not in ("all", "last"):
        raise UsageError(f"positions must be 'all' or 'last' (as a harvest), not {positions!r}.")
    if positions == "last":
        mask = torch.zeros(tuple(batch.input_ids.shape), dtype=torch.bool)
        mask[:, -1] = True
        return mask
    mask = batch.attention_mask.bool().clone()
    if skip_bos and prepend_bos:
        first = mask.float().argmax(dim=1)
        mask[torch.arange(mask.shape[0]), first] = False
    return mask
