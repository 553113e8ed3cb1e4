"""Bounded read-outs along interpolation paths: JS and total variation next to KL and L2.

The shared sweep engine (``common/sweep.py``) reads out KL and L2 only; onset metrics need a
bounded read-out (JS ≤ ln 2, TV ≤ 1): KL keeps growing after a boundary, so "where it
reaches half its endpoint" is not where the output jumped. Until the engine reports them,
this sweep asks the model for the whole next-token distribution at the last position
(``StatsRequest(topk=d_vocab)``, computed next to the model, so it also runs remotely, one
request per batch of rows) and computes KL, JS and TV from it with ``mi_ideas.metrics``.
Locally each forward starts at the perturbed block from the cached clean residual stream
(``Subject.forward(start_at=...)``), which gives the same numbers as the remote path to the
last bit. The engine's faster last-position path (prefix key/value cache) is not used here:
its float32 rounding differs from the full forward's by ~3e-4 of JS at the first steps of a
path, enough to move the log–log fits between a local and a remote run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


# mi_ideas.metrics' KL / JS / TV, in float64: they compute in float32, whose cancellation
# error (~1e-7 nats) is the size of JS itself at the first steps of a path, so the onset and
# log-log fits there were rounding noise (and differed between a local and a remote run).


def _kl(ref: Any, lp: Any) -> Any:
    return (ref.exp() * (ref - lp)).sum(-1)


def _js(p: Any, q: Any) -> Any:
    import math

    import torch

    mix = torch.logsumexp(torch.stack([p, q]), dim=0) - math.log(2.0)
    return 0.5 * _kl(p, mix) + 0.5 * _kl(q, mix)


def _tv(p: Any, q: Any) -> Any:
    return 0.5 * (p.exp() - q.exp()).abs().sum(-1)


@dataclass
class BoundedSweep:
    """Read-outs ``(n_prompts, n_paths, n_steps)`` along paths (KL, JS, TV in float64 nats;
    L2 float32), and the steps."""

    steps: Any
    kl: Any
    l2: Any
    js: Any
    tv: Any


def bounded_sweep(subject: Any, clean: Any, site: str, paths: Any, steps: Any, *,
                  kind: str = "target", rows_per_forward: int = 1024) -> BoundedSweep:
    """KL, JS, TV (next token, last position) and L2 (final residual stream) of every
    (prompt, path, step) row of ``paths`` ``(n, m, d)`` at ``steps``, in batches of prompts."""
    import torch

    from mi_ideas.subject import Batch, Intervention, StatsRequest

    from ..common.sweep import path_points

    n, m, d = paths.shape
    steps = torch.as_tensor(steps, dtype=torch.float32)
    s = len(steps)
    per_prompt = m * s
    group = max(1, int(rows_per_forward) // per_prompt)
    out = {k: torch.empty(n, m, s, dtype=torch.float64) for k in ("kl", "js", "tv")}
    out["l2"] = torch.empty(n, m, s)
    vocab = int(subject.d_vocab)
    for start in range(0, n, group):
        g = torch.arange(start, min(start + group, n))
        pts = path_points(clean.x[g], paths[g], steps, kind).reshape(-1, d)
        idx = g.repeat_interleave(per_prompt)
        batch = Batch(clean.batch.input_ids[idx], clean.batch.attention_mask[idx])
        request = StatsRequest(topk=vocab, l2_reference=clean.final[idx])
        if subject.remote:
            res = subject.forward(batch, stats=request, interventions=[
                Intervention(site, "replace", pts, positions="last")])
        else:
            resid = clean.resid[idx].clone()
            resid[:, -1] = pts
            res = subject.forward(batch, stats=request, start_at=site, start_resid=resid)
        ids = res.stats["topk_ids"].long().reshape(len(idx), -1)
        vals = res.stats["topk_logprobs"].float().reshape(len(idx), -1)
        lp = torch.full((len(idx), vocab), float("-inf"), dtype=torch.float64).scatter(
            1, ids, vals.double())
        ref = clean.logprobs[idx].double()
        shape = (len(g), m, s)
        out["kl"][g] = _kl(ref, lp).reshape(shape)
        out["js"][g] = _js(ref, lp).clamp_min(0).reshape(shape)
        out["tv"][g] = _tv(ref, lp).reshape(shape)
        out["l2"][g] = res.stats["l2"].float().reshape(shape)
    return BoundedSweep(steps=steps, **out)
