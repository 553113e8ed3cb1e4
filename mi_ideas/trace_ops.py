"""Pure-torch operations that run inside model traces (and :func:`intervene_at`, which
applies them to an envoy).

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


def intervene_at(envoy, where: str, tuple_index, ivs):
    """Inside a trace: read ``envoy.<where>`` (``input`` / ``output``; element
    ``tuple_index`` of a tuple), apply the ``(op, value, index)`` interventions ``ivs`` with
    :func:`intervene` and write the result back (the tuple's other elements kept). Returns
    the value after the interventions, for reads. Works on any envoy-like object with that
    attribute; the nnsight back-end's forward and generate traces both use it."""
    raw = getattr(envoy, where)
    value = raw[tuple_index] if isinstance(raw, tuple) else raw
    if ivs:
        for op, v, idx in ivs:
            value = intervene(value, op, v, idx)
        setattr(envoy, where, (value, *raw[1:]) if isinstance(raw, tuple) else value)
    return value


def stats(logits: torch.Tensor, final_resid, index, kl_reference, topk: int,
          entropy: bool, final_norm: bool, l2_reference=None, js: bool = False,
          tv: bool = False, target_ids=None, reference_rows=None) -> dict:
    """Statistics of the next-token distribution at ``index`` (and of the final residual).

    With ``p`` the reference distribution (``kl_reference``, log-probabilities) and ``q``
    the run's, at the same positions, all in float64 (returned as float32):

    - ``kl``: KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), nats;
    - ``js`` (``js=True``): Jensen–Shannon divergence ½ KL(p ‖ m) + ½ KL(q ‖ m) with
      m = ½ (p + q), nats (0 ≤ JS ≤ ln 2), clamped at 0;
    - ``tv`` (``tv=True``): total variation ½ Σ_v |p_v − q_v| (0 ≤ TV ≤ 1);
    - ``target_logprob`` (``target_ids``, one token id per selected position): log q_t of
      that token (minus the cross-entropy), without downloading logits;
    - ``topk`` ids and log-probs, ``entropy`` −Σ q log q (float32); ``final_norm`` and
      ``l2`` (distance to ``l2_reference``) of the final residual stream.

    ``reference_rows`` (a long tensor, one entry per batch row): row i is compared with
    ``kl_reference[reference_rows[i]]`` and ``l2_reference[reference_rows[i]]``, so rows
    that share a reference (the rows of one prompt) send it once, not once per row.
    """
    out = {}
    if reference_rows is not None:
        rows = reference_rows.long()
        if kl_reference is not None:
            kl_reference = kl_reference[rows.to(kl_reference.device)]
        if l2_reference is not None:
            l2_reference = l2_reference[rows.to(l2_reference.device)]
    picked = select(logits, index)
    # float32 log-probs only for the outputs that read them (topk, entropy)
    lp = picked.float().log_softmax(-1) if (topk or entropy) else None
    wants64 = kl_reference is not None or target_ids is not None
    # In float64: near the reference the KL is ~1e-5 nats (JS ~1e-6), where float32 rounding
    # of the log-softmax (different between the last-token and the full forward) is ~1e-7.
    lp64 = picked.double().log_softmax(-1) if wants64 else None
    if kl_reference is not None:
        ref = kl_reference.to(picked.device).double()
        p = ref.exp()
        out["kl"] = (p * (ref - lp64)).sum(-1).float()
        if js or tv:
            q = lp64.exp()
            if js:
                mix = torch.logsumexp(torch.stack([ref, lp64]), dim=0) - 0.6931471805599453
                kl_pm = (p * (ref - mix)).sum(-1)
                kl_qm = (q * (lp64 - mix)).sum(-1)
                out["js"] = (0.5 * kl_pm + 0.5 * kl_qm).clamp_min(0).float()
            if tv:
                out["tv"] = (0.5 * (p - q).abs().sum(-1)).float()
    if target_ids is not None:
        ids = target_ids.to(lp64.device).long().reshape(lp64.shape[:-1])
        out["target_logprob"] = lp64.gather(-1, ids[..., None])[..., 0].float()
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


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU random generator seeded with ``seed`` (made inside a generation trace, so a
    remote server draws the same numbers as this machine)."""
    return torch.Generator().manual_seed(int(seed))


def next_tokens(logits: torch.Tensor, do_sample: bool, temperature: float, generator=None):
    """The next token of each row from its ``(batch, vocab)`` last-position logits,
    ``(batch, 1)``: the argmax, or (``do_sample``) one draw from softmax(logits /
    temperature), made on the CPU with ``generator`` so the draw does not depend on the
    device the model runs on."""
    if not do_sample:
        return logits.argmax(-1, keepdim=True)
    probs = (logits.float() / max(temperature, 1e-6)).softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=generator).to(logits.device)


def force_next(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``(batch, seq, vocab)`` logits whose last position has its argmax at ``ids``
    (``(batch, 1)``): 0 there, −inf elsewhere, so a greedy decoder picks exactly ``ids``."""
    out = logits.clone()
    last = torch.full_like(out[:, -1], float("-inf"))
    last.scatter_(-1, ids.to(last.device).long(), 0.0)
    out[:, -1] = last
    return out
