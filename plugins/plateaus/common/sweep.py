"""The batched perturbation sweep shared by the plateau family of ideas.

A sweep perturbs one activation — a site at the last position of each prompt — along many
paths, at many step sizes, and measures how the output moves:

    x(α) = x + α · d          ("direction" paths: d a direction, α a length)
    x(α) = x + α · (t − x)    ("target" paths: interpolate towards t, α in [0, 1])
    x(α) = |x| · slerp(x̂, t̂, α)  ("arc" paths: norm-preserving interpolation)

Read-outs per row: KL(clean ‖ perturbed) of the next-token distribution at the last
position, and the L2 distance of the final residual stream (last position) from the clean
run — both computed next to the model, so a remote run downloads two numbers per row.

Every (prompt, path, step) row is batched into few forwards of ``rows_per_forward`` rows.
Locally, each forward starts at the perturbed block (``Subject.forward(start_at=...)``)
from the cached clean residual stream: the blocks before it are never recomputed. A remote
subject instead sends the perturbation as a ``replace`` intervention (a vector per row, not
a whole residual stream), one request per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mi_ideas.errors import UsageError

PathKind = Literal["direction", "target", "arc"]


@dataclass
class CleanRun:
    """What a sweep needs from the unperturbed prompts, computed once."""

    batch: Any            # the prompts' Batch
    resid: Any            # (n_prompts, seq, d) residual stream at the site (all positions)
    x: Any                # (n_prompts, d) the reference activations (last position)
    logprobs: Any         # (n_prompts, vocab) clean next-token log-probs (last position)
    final: Any            # (n_prompts, d) clean final residual stream (last position)


@dataclass
class SweepResult:
    """Read-outs of a sweep: ``kl`` and ``l2`` have shape ``(n_prompts, n_paths, n_steps)``."""

    steps: Any
    kl: Any
    l2: Any
    n_forwards: int


def clean_run(subject: Any, prompts: Any, site: str) -> CleanRun:
    """One clean forward over the prompts: the site's residual stream, log-probs, final resid."""
    s = subject.site(site)
    if s.kind != "resid_pre":
        raise UsageError(f"sweeps perturb the residual stream at resid_pre.L, not {site!r}.")
    batch = subject.as_batch(prompts)
    final_site = f"resid_post.{subject.n_layers - 1}"
    out = subject.forward(batch, read=[s.name, final_site], logits=True)
    resid = out.activations[s.name]
    return CleanRun(batch=batch, resid=resid, x=resid[:, -1].clone(),
                    logprobs=out.logits[:, -1].float().log_softmax(-1),
                    final=out.activations[final_site][:, -1].clone())


def rebase(subject: Any, clean: CleanRun, site: str, new_x: Any) -> CleanRun:
    """A clean run whose reference activations are ``new_x`` (e.g. synthetic bases).

    The residual stream at the site keeps its other positions; the last position becomes
    ``new_x``, and the log-probs and final residual are those of that activation.
    """
    resid = clean.resid.clone()
    resid[:, -1] = new_x
    final_site = f"resid_post.{subject.n_layers - 1}"
    out = subject.forward(clean.batch, read=[final_site], positions="last", logits=True,
                          start_at=site, start_resid=resid)
    return CleanRun(batch=clean.batch, resid=resid, x=new_x.clone(),
                    logprobs=out.logits[:, -1].float().log_softmax(-1),
                    final=out.activations[final_site])


def path_points(x: Any, paths: Any, steps: Any, kind: PathKind) -> Any:
    """Perturbed activations ``(n_prompts, n_paths, n_steps, d)`` for each path and step."""
    import torch

    x = x[:, None, None, :]
    p = paths[:, :, None, :]
    a = steps.to(x.dtype)[None, None, :, None]
    if kind == "direction":
        return x + a * p
    if kind == "target":
        return x + a * (p - x)
    if kind == "arc":
        # Spherical interpolation between the unit vectors, at the norm of x: the norm
        # stays fixed, so only the direction can move the output.
        u, v = x / x.norm(dim=-1, keepdim=True), p / p.norm(dim=-1, keepdim=True)
        omega = torch.arccos((u * v).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
        so = torch.sin(omega)
        unit = (torch.sin((1 - a) * omega) * u + torch.sin(a * omega) * v) / so
        return unit * x.norm(dim=-1, keepdim=True)
    raise UsageError(f"path kind must be direction, target or arc, not {kind!r}.")


def sweep(subject: Any, clean: CleanRun, site: str, paths: Any, steps: Any, *,
          kind: PathKind = "direction", rows_per_forward: int = 512,
          progress: Any = None) -> SweepResult:
    """Run every (prompt, path, step) row in batches; see the module docstring.

    ``paths``: ``(n_prompts, n_paths, d)`` directions or targets, one set per prompt.
    """
    import torch

    from mi_ideas.subject import Batch, Intervention, StatsRequest

    n, m, d = paths.shape
    if n != clean.x.shape[0] or d != clean.x.shape[1]:
        raise UsageError(
            f"paths have shape {tuple(paths.shape)}; expected ({clean.x.shape[0]}, n_paths, "
            f"{clean.x.shape[1]}) for these prompts."
        )
    steps = torch.as_tensor(steps, dtype=torch.float32)
    points = path_points(clean.x, paths, steps, kind).reshape(-1, d)
    prompt_of = torch.arange(n).repeat_interleave(m * len(steps))
    kl = torch.empty(len(points))
    l2 = torch.empty(len(points))
    local = not subject.remote
    chunks = range(0, len(points), rows_per_forward)
    n_forwards = 0
    for start in (progress(chunks, total=len(chunks), desc="sweep") if progress else chunks):
        rows = slice(start, start + rows_per_forward)
        idx = prompt_of[rows]
        batch = Batch(clean.batch.input_ids[idx], clean.batch.attention_mask[idx])
        request = StatsRequest(kl_reference=clean.logprobs[idx], l2_reference=clean.final[idx])
        if local:
            resid = clean.resid[idx].clone()
            resid[:, -1] = points[rows]
            out = subject.forward(batch, stats=request, start_at=site, start_resid=resid)
        else:
            out = subject.forward(batch, stats=request, interventions=[
                Intervention(site, "replace", points[rows], positions="last")])
        n_forwards += 1
        kl[rows] = out.stats["kl"].float()
        l2[rows] = out.stats["l2"].float()
    shape = (n, m, len(steps))
    return SweepResult(steps=steps, kl=kl.reshape(shape), l2=l2.reshape(shape),
                       n_forwards=n_forwards)


def naive_sweep(subject: Any, clean: CleanRun, site: str, paths: Any, steps: Any, *,
                kind: PathKind = "direction") -> SweepResult:
    """The same read-outs with one full forward per (prompt, path, step): the baseline."""
    import torch

    from mi_ideas.metrics import kl_divergence
    from mi_ideas.subject import Batch, Intervention

    n, m, d = paths.shape
    steps = torch.as_tensor(steps, dtype=torch.float32)
    points = path_points(clean.x, paths, steps, kind)
    kl = torch.empty(n, m, len(steps))
    l2 = torch.empty(n, m, len(steps))
    final_site = f"resid_post.{subject.n_layers - 1}"
    for i in range(n):
        one = Batch(clean.batch.input_ids[i:i + 1], clean.batch.attention_mask[i:i + 1])
        for j in range(m):
            for k in range(len(steps)):
                out = subject.forward(one, read=[final_site], positions="last", logits=True,
                                      interventions=[Intervention(site, "replace",
                                                                  points[i, j, k], "last")])
                lp = out.logits[0, -1].float().log_softmax(-1)
                kl[i, j, k] = kl_divergence(clean.logprobs[i], lp)
                l2[i, j, k] = (out.activations[final_site][0] - clean.final[i]).norm()
    return SweepResult(steps=steps, kl=kl, l2=l2, n_forwards=n * m * len(steps))
