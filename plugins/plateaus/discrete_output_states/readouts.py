"""Bounded read-outs along the pair paths: JS and total variation of the next token.

The shared sweep engine (``common/sweep.py``) reads out KL and L2 only. Onset metrics need a
bounded read-out (JS ≤ ln 2, TV ≤ 1): KL keeps growing after a boundary, so "where it reaches
half its endpoint" is not where the output jumped. Until the engine reports them, this asks
the model for the whole next-token distribution at the last position
(``StatsRequest(topk=d_vocab)``, computed next to the model, so it also runs remotely, one
request per batch of rows) and computes JS and TV from it with :mod:`mi_ideas.metrics`.
(activation-plateaus has the same helper; both should move into the engine.)
"""

from __future__ import annotations

from typing import Any


def bounded_readouts(subject: Any, clean: Any, site: str, paths: Any, steps: Any, *,
                     kind: str = "target", rows_per_forward: int = 512,
                     progress: Any = None) -> dict[str, Any]:
    """``{"js", "tv", "kl"}``, each ``(n_prompts, n_paths, n_steps)``, for the rows of
    ``paths`` ``(n, m, d)`` at ``steps``; path points are built one group of prompts at a time."""
    import torch

    from mi_ideas.metrics import js_divergence, kl_divergence, total_variation
    from mi_ideas.subject import Batch, Intervention, StatsRequest

    from ..common.sweep import path_points

    n, m, d = paths.shape
    steps = torch.as_tensor(steps, dtype=torch.float32)
    s = len(steps)
    per_prompt = m * s
    group = max(1, int(rows_per_forward) // per_prompt)
    out = {k: torch.empty(n, m, s) for k in ("js", "tv", "kl")}
    vocab = int(subject.d_vocab)
    starts = range(0, n, group)
    for start in (progress(starts, total=len(starts), desc="JS / TV") if progress else starts):
        g = torch.arange(start, min(start + group, n))
        pts = path_points(clean.x[g], paths[g], steps, kind).reshape(-1, d)
        idx = g.repeat_interleave(per_prompt)
        batch = Batch(clean.batch.input_ids[idx], clean.batch.attention_mask[idx])
        request = StatsRequest(topk=vocab)
        if subject.remote:
            res = subject.forward(batch, stats=request, interventions=[
                Intervention(site, "replace", pts, positions="last")])
        else:
            resid = clean.resid[idx].clone()
            resid[:, -1] = pts
            res = subject.forward(batch, stats=request, start_at=site, start_resid=resid)
        ids = res.stats["topk_ids"].long().reshape(len(idx), -1)
        vals = res.stats["topk_logprobs"].float().reshape(len(idx), -1)
        lp = torch.full((len(idx), vocab), float("-inf")).scatter(1, ids, vals)
        ref = clean.logprobs[idx].float()
        shape = (len(g), m, s)
        out["js"][g] = js_divergence(ref, lp).clamp_min(0).reshape(shape)
        out["tv"][g] = total_variation(ref, lp).reshape(shape)
        out["kl"][g] = kl_divergence(ref, lp).reshape(shape)
    return out
