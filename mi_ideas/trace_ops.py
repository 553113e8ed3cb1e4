"""Pure-torch operations that run inside model traces.

This module imports nothing but torch, on purpose: for a remote run nnsight ships it by
value to a server that does not have mi_ideas installed (``nnsight.register``), and the
TransformerLens back-end uses the same functions so both back-ends compute the same thing.
Position specs are turned into an index *before* a trace (``mi_ideas.subject``): here an
index is ``None`` (all positions), an int, a long tensor of positions, or a boolean
``(batch, seq)`` mask.
"""

from __future__ import annotations

import torch


def select(x: torch.Tensor, index):
    """Select positions from a ``(batch, seq, ...)`` tensor."""
    if index is None:
        return x
    if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
        return x[index]
    return x[:, index]


def intervene(x: torch.Tensor, op: str, value, index) -> torch.Tensor:
    """``x`` with ``op`` (add / replace / ablate) applied at ``index``; out of place."""
    x = x.clone()
    sel = select(x, index)
    if value is not None:
        value = value.to(device=x.device, dtype=x.dtype)
    if op == "add":
        new = sel + value
    elif value is not None:  # replace, or mean-ablate
        new = value.expand_as(sel)
    else:  # zero-ablate
        new = torch.zeros_like(sel)
    if index is None:
        return new.clone()
    if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
        x[index] = new
    else:
        x[:, index] = new
    return x


def stats(logits: torch.Tensor, final_resid, index, kl_reference, topk: int,
          entropy: bool, final_norm: bool, l2_reference=None) -> dict:
    """KL(reference ‖ run), top-k, entropy, final-residual norm and L2 distance at ``index``."""
    out = {}
    picked = select(logits, index)
    lp = picked.float().log_softmax(-1)
    if kl_reference is not None:
        # In float64: near the reference the KL is ~1e-5 nats, where float32 rounding of the
        # log-softmax (different between the last-token and the full forward) is ~1e-7.
        lp64 = picked.double().log_softmax(-1)
        ref = kl_reference.to(lp.device).double()
        out["kl"] = (ref.exp() * (ref - lp64)).sum(-1).float()
    if topk:
        vals, ids = lp.topk(topk, dim=-1)
        out["topk_ids"] = ids
        out["topk_logprobs"] = vals
    if entropy:
        out["entropy"] = -(lp.exp() * lp).sum(-1)
    if final_resid is not None and (final_norm or l2_reference is not None):
        resid = select(final_resid, index).float()
        if final_norm:
            out["final_norm"] = resid.norm(dim=-1)
        if l2_reference is not None:
            out["l2"] = (resid - l2_reference.to(resid.device).float()).norm(dim=-1)
    return out
