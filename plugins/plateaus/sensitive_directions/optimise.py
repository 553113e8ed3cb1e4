"""Gradient search for the most sensitive directions (local models only; torch).

For each reference x, maximise KL(p(x) ‖ p(x + t·unit(v))) over v at a fixed length t by
Adam on the unnormalised v (the objective only sees unit(v), so this is ascent on the
sphere), from ``restarts`` random starts; the best restart per prompt is kept.

This needs autograd through the model, which the :class:`~mi_ideas.subject.Subject`
interface does not give (its forwards run under ``no_grad``, and remote ones on a
server). :func:`readout_for` therefore builds a differentiable read-out from the *local*
model object behind a subject: the Hugging Face module of an nnsight subject (a forward
pre-hook on block L replaces the last position's residual stream), or a TransformerLens
``HookedTransformer`` (a hook on ``blocks.L.hook_resid_pre``). Remote subjects are refused.
"""

from __future__ import annotations

from typing import Any, Callable

from mi_ideas.errors import UsageError
from mi_ideas.metrics import kl_divergence

Readout = Callable[[Any], Any]


def readout_for(subject: Any, batch: Any, site: str, repeats: int = 1) -> Readout:
    """``f(x_last) -> log-probs``: the next-token log-probs (last position) with the
    site's last-position activation replaced by ``x_last`` ``(len(batch)·repeats, d)``,
    differentiable in ``x_last``. Rows are the batch's prompts, each repeated ``repeats``
    times in a row (``repeat_interleave``)."""
    import torch

    if getattr(subject, "remote", False):
        raise UsageError(
            "optimise=true needs gradients through the model, which remote (NDIF) subjects "
            "do not give: run it with a local model (--model zoo:stories-gpt2, hf:..., tl:...) "
            "or set optimise=false."
        )
    s = subject.site(site)
    if s.kind != "resid_pre":
        raise UsageError(f"direction optimisation perturbs resid_pre.L, not {site!r}.")
    ids = batch.input_ids.repeat_interleave(repeats, 0)
    mask = batch.attention_mask.repeat_interleave(repeats, 0)
    backend = getattr(subject, "backend", "")
    if backend == "nnsight":
        hf = subject.model._module
        block = subject.model.layers[s.layer]._module
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)

        def f(x_last: Any) -> Any:
            def pre_hook(module, args, kwargs):
                if args:
                    h = args[0]
                    h = torch.cat([h[:, :-1], x_last[:, None].to(h.dtype)], 1)
                    return (h, *args[1:]), kwargs
                h = kwargs["hidden_states"]
                kwargs = dict(kwargs, hidden_states=torch.cat(
                    [h[:, :-1], x_last[:, None].to(h.dtype)], 1))
                return args, kwargs

            handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
            try:
                out = hf(input_ids=ids, attention_mask=mask, position_ids=position_ids)
            finally:
                handle.remove()
            return out.logits[:, -1].float().log_softmax(-1)

        return f
    if backend == "transformer_lens":
        model = subject.model

        def f(x_last: Any) -> Any:
            def hook(h, hook):
                return torch.cat([h[:, :-1], x_last[:, None].to(h.dtype)], 1)

            logits = model.run_with_hooks(ids, attention_mask=mask, padding_side="left",
                                          prepend_bos=False,
                                          fwd_hooks=[(f"blocks.{s.layer}.hook_resid_pre", hook)])
            return logits[:, -1].float().log_softmax(-1)

        return f
    raise UsageError(
        f"optimise=true supports local nnsight and TransformerLens subjects, not the "
        f"{backend!r} back-end; set optimise=false."
    )


def optimise_directions(readout: Readout, x: Any, ref_logprobs: Any, t: float, *,
                        restarts: int, steps: int, lr: float, gen: Any) -> tuple[Any, Any]:
    """Best unit directions ``(n, d)`` and their KL at ``t`` ``(n,)`` after ``steps`` Adam
    steps from ``restarts`` isotropic random starts per reference (rows of ``readout``
    are the references each repeated ``restarts`` times)."""
    import torch

    n, d = x.shape
    v = torch.randn(n * restarts, d, generator=gen).requires_grad_(True)
    base = x.detach().float().repeat_interleave(restarts, 0)
    ref = ref_logprobs.detach().float().repeat_interleave(restarts, 0)
    opt = torch.optim.Adam([v], lr=lr)
    for _ in range(steps):
        u = v / v.norm(dim=-1, keepdim=True)
        loss = -kl_divergence(ref, readout(base + t * u)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        u = v / v.norm(dim=-1, keepdim=True)
        kl = kl_divergence(ref, readout(base + t * u)).reshape(n, restarts)
        best = kl.argmax(-1)
        rows = torch.arange(n) * restarts + best
        return u[rows].detach(), kl[torch.arange(n), best]


def max_abs_cos(dirs: Any, dictionary: Any) -> Any:
    """max_i |cos(d, w_i)| over the rows of ``dictionary`` for each direction ``(..., d)``."""
    w = dictionary / dictionary.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    u = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (u @ w.T).abs().max(-1).values
