"""Steering vectors: difference of means (AxBench's DiffMean) or an SAE latent's decoder
direction, and the activation norm that sets the coefficient's unit (torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class SteeringVector:
    """A unit direction at a site, the unit of its coefficient, and how it was made."""

    unit: Any                 # (d,) unit vector
    norm_unit: float          # mean L2 norm of the site's activations over the negative texts
    kind: str                 # "diff_means" or "sae_latent"
    raw_norm: float           # |mean(pos) - mean(neg)| (diff_means) or |W_dec[j]| (sae_latent)
    latent: int | None = None
    n_pos: int = 0
    n_neg: int = 0


def token_activations(subject: Any, texts: Sequence[str], site: str, max_length: int,
                      batch_size: int) -> Any:
    """Activations at ``site`` of every non-BOS, non-padding position of ``texts``, (n, d)."""
    import torch

    rows = []
    for start in range(0, len(texts), batch_size):
        batch = subject.tokenize(list(texts[start:start + batch_size]), max_length=max_length)
        acts = subject.activations(batch, [site], positions="all")[site].float()
        mask = batch.attention_mask.bool()
        mask &= batch.attention_mask.long().cumsum(1) > 1  # drop each row's BOS
        rows.append(acts[mask])
    return torch.cat(rows)


def build_vector(subject: Any, site: str, pos: Sequence[str], neg: Sequence[str], *,
                 kind: str, sae: Any = None, latent: int | None = None, max_length: int = 128,
                 batch_size: int = 32) -> SteeringVector:
    """The steering direction for one concept from texts with (``pos``) and without
    (``neg``) the word, averaged over every token position."""
    import torch

    xp = token_activations(subject, pos, site, max_length, batch_size)
    xn = token_activations(subject, neg, site, max_length, batch_size)
    norm_unit = float(xn.norm(dim=1).mean())
    if kind == "diff_means":
        v = xp.mean(0) - xn.mean(0)
        return SteeringVector((v / v.norm()).float(), norm_unit, kind, float(v.norm()),
                              n_pos=len(pos), n_neg=len(neg))
    dtype = sae.W_dec.dtype
    with torch.no_grad():
        if latent is None:
            fp = sae.encode(xp.to(sae.W_dec.device, dtype)).float().mean(0)
            fn = sae.encode(xn.to(sae.W_dec.device, dtype)).float().mean(0)
            latent = int((fp - fn).argmax())
        w = sae.W_dec[latent].detach().float().cpu()
    return SteeringVector(w / w.norm(), norm_unit, "sae_latent", float(w.norm()), latent,
                          n_pos=len(pos), n_neg=len(neg))


def random_like(d: int, generator: Any) -> Any:
    """A random unit direction (the control; matched in norm by the caller)."""
    import torch

    r = torch.randn(d, generator=generator)
    return r / r.norm()
