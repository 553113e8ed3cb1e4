"""Would end-to-end SAEs map all activations of a plateau to a single point?

Sub-question 6 of activation-plateaus. An **e2e SAE** (Braun et al. 2024, "Identifying
Functionally Important Features with End-to-End Sparse Dictionary Learning",
``ApolloResearch/e2e_sae``) is trained on KL(p_clean ‖ p_spliced) of the model's downstream
output with its reconstruction x̂ spliced in, not on ‖x − x̂‖². Directions the downstream
model ignores give it no training signal to reconstruct, so it may collapse a plateau (a set
of activations with one output) to fewer points than an MSE SAE does.

Both dictionaries are SAELens ``TopKTrainingSAE`` objects of the same ``d_sae`` and ``k``:
with TopK every row has exactly ``k`` active latents, so "same size and L0" holds by
construction and neither loss needs a sparsity penalty. They start from the same seeded
initialisation, see the same batches with the same optimiser (Adam, constant ``lr``), and
differ only in the loss: the MSE SAE uses SAELens's own TopK training loss (MSE + AuxK,
``training_forward_pass``); the e2e loss is written here (SAELens has no e2e objective).

- :func:`make_downstream` — a differentiable ``downstream(resid, attention_mask) -> logits``
  running blocks ≥ L of a local subject from a residual stream. ``Subject.forward(start_at=
  ...)`` gives the same numbers but no gradients (it runs under ``torch.no_grad`` and
  returns detached copies), so this calls the underlying torch modules.
- :func:`train_e2e_and_mse` — both SAEs on the same activations.
- :func:`spread_ratios` / :func:`within_plateau_spread` — how much of a plateau's spread the
  reconstructions keep; :func:`global_spread` / :func:`relative_plateau_spread` — the same
  divided by how much the SAE shrinks the activation distribution as a whole (an e2e SAE
  shrinks every direction somewhat, so the raw ratio alone overstates any collapse: see the
  null in ``tests/test_e2e_sae.py``); :func:`paired_comparison` — e2e vs MSE per plateau.
- :func:`run_e2e_plateaus` — the zoo experiment: harvest, train, build plateaus along
  real→real paths, compare.

On the zoo model (defaults, seeds 0 and 1, ~50 s each on one CPU thread) the e2e SAE has
the lower held-out spliced KL (0.018 vs 0.020–0.023 nats) at far lower explained variance
(0.61 vs 0.95). Its raw within-plateau spread ratio is lower than the MSE SAE's (median
0.90 vs 1.17–1.20, lower on 73% of plateaus, Wilcoxon p ≤ 2e-5), but no lower on plateaus
than along whole paths (plateau / whole-path ≈ 1.02–1.06, as for the MSE SAE), and
relative to its global shrinkage (0.66) it keeps *more* of a plateau's spread than the
MSE SAE does (1.50–1.58 vs 1.26–1.31, p = 0.005 / 0.04). So these e2e SAEs do not map
real→real plateaus to points; the toy with a planted ignored subspace shows the code would
see it if they did.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mi_ideas.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Every reported quantity in words (quoted next to each value by the integrating idea).
DEFINITIONS: dict[str, str] = {
    "spread_ratio": "within-plateau spread ratio of one plateau: tr Cov(x̂) / tr Cov(x) over "
                    "the points x sampled inside it and their SAE reconstructions x̂ (0: the "
                    "SAE maps the whole plateau to one point; 1: it keeps all the spread)",
    "within_plateau_spread": "mean over plateaus of the spread ratio tr Cov(x̂) / tr Cov(x)",
    "plateau": "plateau of a real→real path x_a + α(x_b − x_a) (x_a, x_b last-position "
               "activations of two prompts): α from 0 up to the last grid step before the "
               "first one where KL(clean ‖ perturbed) of the next-token distribution exceeds "
               "kl_threshold; points are sampled uniformly in α on that stretch",
    "whole_path": "the same spread ratio for points sampled uniformly in α ∈ [0, 1] on the "
                  "same paths (crossing plateau boundaries): the control for a spread "
                  "reduction that is not specific to plateaus",
    "explained_variance": "1 − Σᵢ‖xᵢ − x̂ᵢ‖² / Σᵢ‖xᵢ − x̄‖² over held-out rows (every non-BOS "
                          "token of the held-out stories), x̄ their mean",
    "spliced_kl": "mean over every non-BOS token of the held-out stories of KL(p_clean ‖ "
                  "p_spliced) in nats of the next-token distribution, x̂ written over the "
                  "site at all those tokens at once (the e2e training objective)",
    "mean_ablation_kl": "spliced_kl with the training mean x̄ written instead of x̂ (the scale: "
                        "an SAE at this value preserves nothing)",
    "dead_fraction": "fraction of latents that are zero on every held-out row",
    "l0": "mean number of active latents per held-out row (k, by construction of TopK)",
    "global_spread": "tr Cov(x̂) / tr Cov(x) over all held-out rows (every non-BOS token of "
                     "the held-out stories): the spread ratio of the whole activation "
                     "distribution, the control for a plateau spread ratio",
    "wilcoxon": "two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon) of the paired "
                "per-plateau spread ratios, e2e against MSE",
    "bootstrap": "95% percentile-bootstrap interval (2000 resamples of the plateaus) of the "
                 "mean paired difference e2e − MSE",
}


# --------------------------------------------------------------------------- downstream


def make_downstream(subject: Any, site: str) -> Callable[..., "torch.Tensor"]:
    """A differentiable ``downstream(resid, attention_mask) -> logits`` from ``site``.

    ``resid``: ``(batch, seq, d_model)`` residual stream entering block L (``site`` is
    ``resid_pre.L``), left-padded like a :class:`~mi_ideas.subject.Batch` with
    ``attention_mask`` ``(batch, seq)``; returns ``(batch, seq, vocab)`` logits, the same
    numbers as ``subject.forward(batch, start_at=site, start_resid=resid, logits=True)``
    but with gradients flowing back into ``resid``.

    nnsight subjects: the Hugging Face model's own forward, with blocks before L bypassed
    (they return their input) and a pre-hook on block L that sets its input to ``resid``
    (how the back-end's last-token path runs the model; position ids from the mask, so
    padding is handled as in ``Subject.forward``). TransformerLens subjects:
    ``model(resid, start_at_layer=L)``. Remote subjects cannot give gradients: refused.
    """
    import torch

    from mi_ideas.subject import Batch

    s = subject.site(site)
    if s.kind != "resid_pre":
        raise UsageError(f"e2e SAEs here read a resid_pre.L site, not {site!r}.")
    if getattr(subject, "remote", False):
        raise UsageError(
            f"training an e2e SAE needs gradients through the model; {subject.spec} is "
            f"remote. Use a local model.")
    layer = s.layer
    backend = getattr(subject, "backend", "")

    if backend == "transformer_lens":
        model = subject.model

        def tl_downstream(resid: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
            return model(resid, start_at_layer=layer, attention_mask=attention_mask,
                         padding_side="left", prepend_bos=False)

        return tl_downstream

    if backend != "nnsight":
        raise UsageError(f"make_downstream knows the nnsight and TransformerLens back-ends, "
                         f"not {backend!r}.")
    module = subject.model._module
    blocks = [subject.model.layers[i]._module for i in range(subject.n_layers)]
    as_tuple = bool(getattr(subject, "block_output_is_tuple", False))

    def nnsight_downstream(resid: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
        mask = attention_mask.long()
        position_ids = Batch(mask, mask).position_ids

        def replace(mod: Any, args: tuple, kw: dict) -> Any:
            h = args[0] if args else kw["hidden_states"]
            new = resid.to(device=h.device, dtype=h.dtype)
            if args:
                return (new, *args[1:]), kw
            return args, {**kw, "hidden_states": new}

        def identity(*args: Any, **kwargs: Any) -> Any:
            h = args[0] if args else kwargs["hidden_states"]
            return (h,) if as_tuple else h

        saved = []
        handle = blocks[layer].register_forward_pre_hook(replace, with_kwargs=True)
        try:
            for block in blocks[:layer]:
                saved.append((block, block.__dict__.get("forward")))
                block.forward = identity
            # Token ids only feed the bypassed embedding: zeros of the right shape do.
            out = module(input_ids=torch.zeros_like(mask), attention_mask=mask,
                         position_ids=position_ids, use_cache=False)
        finally:
            handle.remove()
            for block, forward in saved:
                if forward is None:
                    del block.forward
                else:
                    block.forward = forward
        return out.logits

    return nnsight_downstream


# --------------------------------------------------------------------------- SAEs


def topk_sae(d_in: int, d_sae: int, k: int, *, seed: int, hook_name: str | None = None,
             model_name: str | None = None) -> Any:
    """A seeded SAELens ``TopKTrainingSAE`` (SAELens defaults otherwise: decoder rows of
    norm 0.1, ``W_enc = W_decᵀ``, activations rescaled by the decoder norm)."""
    import torch
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    meta = {k_: v for k_, v in (("hook_name", hook_name), ("model_name", model_name)) if v}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TopKTrainingSAE(TopKTrainingSAEConfig(
            d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu",
            apply_b_dec_to_input=True, metadata=SAEMetadata(**meta)))


@dataclass
class SAEPair:
    """What :func:`train_e2e_and_mse` returns: both SAEs (in the model's units, the
    training scale folded in) and per-step training curves."""

    e2e: Any
    mse: Any
    #: SAELens's "expected_average_only_in" factor the SAEs were trained at: √d / mean ‖x‖
    scale: float
    #: per step: ``e2e_kl`` (the e2e loss on the step's batch, before the update) and
    #: ``mse_loss`` (SAELens's MSE + AuxK, at the training scale); every ``monitor_every``
    #: steps (at ``mse_kl_step``): ``mse_kl``, the MSE SAE's spliced KL on the same batch
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def __iter__(self):
        return iter((self.e2e, self.mse))


def _spliced_logprobs(downstream: Callable, sae: Any, acts: "torch.Tensor",
                      attention_mask: "torch.Tensor | None", mask: "torch.Tensor | None",
                      scale: float) -> "torch.Tensor":
    """Log-probs of the downstream run with x̂ = sae(x) written at ``mask`` (all rows of a
    2-D ``acts``), at the KL positions: ``(n, vocab)``."""
    if acts.ndim == 2:
        x_hat = sae(acts * scale) / scale
        return downstream(x_hat, None).float().log_softmax(-1)
    x_hat = sae(acts[mask] * scale) / scale
    resid = acts.clone()
    resid[mask] = x_hat.to(resid.dtype)  # index_put: differentiable in x_hat
    return downstream(resid, attention_mask).float().log_softmax(-1)[mask]


def _clean_logprobs(downstream: Callable, acts: "torch.Tensor", attention_mask: Any,
                    mask: Any, chunk: int) -> "torch.Tensor":
    import torch

    parts = []
    with torch.no_grad():
        for i in range(0, len(acts), chunk):
            a = acts[i:i + chunk]
            if acts.ndim == 2:
                parts.append(downstream(a, None).float().log_softmax(-1))
            else:
                lp = downstream(a, attention_mask[i:i + chunk]).float().log_softmax(-1)
                parts.append(lp[mask[i:i + chunk]])
    return torch.cat(parts)


def train_e2e_and_mse(downstream: Callable, acts: "torch.Tensor", d_sae: int, k: int,
                      steps: int = 400, lr: float = 3e-3, seed: int = 0, *,
                      attention_mask: "torch.Tensor | None" = None,
                      mask: "torch.Tensor | None" = None, batch_size: int | None = None,
                      dead_window: int | None = None, hook_name: str | None = None,
                      model_name: str | None = None, monitor_every: int = 10,
                      log: Callable[[str], None] | None = None) -> SAEPair:
    """Train an e2e and an MSE TopK SAE of the same ``d_sae`` and ``k`` on ``acts``.

    ``acts`` is either

    - ``(n, d)`` rows, with ``downstream(x, None) -> (n, vocab)`` logits (a toy model), or
    - ``(n_seq, seq, d)`` residual streams at the site with their ``attention_mask``
      ``(n_seq, seq)`` and ``downstream(resid, attention_mask) -> (n_seq, seq, vocab)``
      (see :func:`make_downstream`); ``mask`` (default: every real token but each row's
      first, the BOS) marks the tokens the SAEs reconstruct: the MSE SAE's rows, and where
      the e2e SAE's x̂ is spliced and its KL counted.

    Each step draws ``batch_size`` rows / sequences (default 256 rows / 16 sequences);
    both SAEs see the same batch. Losses:

    - e2e: ``KL(p_clean ‖ p_spliced)`` of the downstream next-token distribution, averaged
      over the KL positions, p_spliced from the downstream run with x̂ written over x at
      every masked token at once. SAELens has no e2e objective; this is written here,
      following Braun et al. 2024's KL(original ‖ spliced) of the downstream output (with
      TopK fixing L0 = k, their sparsity penalty is not needed).
    - MSE: SAELens's ``TopKTrainingSAE.training_forward_pass`` loss (Σ_d (x − x̂)² averaged
      over rows, plus AuxK on latents that have not fired for ``dead_window`` steps,
      default ``max(steps // 10, 20)``).

    Both are trained at SAELens's ``expected_average_only_in`` scale (x · √d / mean ‖x‖,
    from the training rows), from the same seeded initialisation with ``b_dec`` at the
    training mean, with Adam at a constant ``lr``; the scale is folded into the weights at
    the end (``fold_activation_norm_scaling_factor``), so both read and write model units.
    Gradients of the e2e loss are taken with respect to the SAE's parameters only (the
    model's parameters get none).
    """
    import torch
    from sae_lens.saes.sae import TrainStepInput

    from mi_ideas.metrics import kl_divergence

    t0 = time.time()
    acts = acts.detach().float()
    if acts.ndim == 3:
        if attention_mask is None:
            raise UsageError("residual streams (n_seq, seq, d) come with their attention_mask.")
        attention_mask = attention_mask.long()
        if mask is None:
            from mi_ideas.metrics import row_mask
            from mi_ideas.subject import Batch

            mask = row_mask(Batch(attention_mask, attention_mask))
        mask = mask.bool()
        rows = acts[mask]
        batch_size = batch_size or 16
    elif acts.ndim == 2:
        rows = acts
        batch_size = batch_size or 256
    else:
        raise UsageError(f"acts must be (n, d) rows or (n_seq, seq, d) streams, not {tuple(acts.shape)}.")
    n, d = len(acts), acts.shape[-1]
    dead_window = dead_window or max(steps // 10, 20)
    scale = float(math.sqrt(d) / rows.norm(dim=-1).mean())
    mean = rows.mean(0) * scale

    saes = {}
    for kind in ("e2e", "mse"):
        sae = topk_sae(d, d_sae, k, seed=seed, hook_name=hook_name, model_name=model_name)
        with torch.no_grad():
            sae.b_dec.copy_(mean)
        saes[kind] = sae
    params = {kind: [p for p in sae.parameters() if p.requires_grad] for kind, sae in saes.items()}
    opts = {kind: torch.optim.Adam(params[kind], lr=lr) for kind in saes}
    since_fired = {kind: torch.zeros(d_sae, dtype=torch.long) for kind in saes}
    clean_lp = _clean_logprobs(downstream, acts, attention_mask, mask, batch_size)
    # the KL positions of each sequence / row, into clean_lp
    if acts.ndim == 3:
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), mask.sum(1).cumsum(0)])
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"e2e_kl": [], "mse_loss": [], "mse_kl": [],
                                       "mse_kl_step": []}
    order = torch.randperm(n, generator=gen)
    pos = 0
    for step in range(steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + min(batch_size, n)]
        pos += batch_size
        if acts.ndim == 3:
            batch, am, m = acts[idx], attention_mask[idx], mask[idx]
            ref = torch.cat([clean_lp[offsets[i]:offsets[i + 1]] for i in idx.tolist()])
            x = batch[m]
        else:
            batch, am, m = acts[idx], None, None
            ref = clean_lp[idx]
            x = batch

        # e2e: KL(p_clean ‖ p_spliced), gradients into the SAE only
        e2e = saes["e2e"]
        lq = _spliced_logprobs(downstream, e2e, batch, am, m, scale)
        loss = kl_divergence(ref, lq).mean()
        grads = torch.autograd.grad(loss, params["e2e"])
        for p, g in zip(params["e2e"], grads):
            p.grad = g
        opts["e2e"].step()
        history["e2e_kl"].append(float(loss.detach()))
        with torch.no_grad():
            fired = (e2e.encode(x * scale) > 0).any(0)
        since_fired["e2e"] = torch.where(fired, 0, since_fired["e2e"] + 1)

        # MSE: SAELens's own TopK training loss (MSE + AuxK)
        mse = saes["mse"]
        out = mse.training_forward_pass(TrainStepInput(
            sae_in=x * scale, coefficients={}, dead_neuron_mask=since_fired["mse"] >= dead_window,
            n_training_steps=step, is_logging_step=False))
        opts["mse"].zero_grad()
        out.loss.backward()
        opts["mse"].step()
        history["mse_loss"].append(float(out.loss.detach()))
        since_fired["mse"] = torch.where((out.feature_acts > 0).any(0).detach(), 0,
                                         since_fired["mse"] + 1)
        if step % monitor_every == 0 or step == steps - 1:
            with torch.no_grad():
                history["mse_kl"].append(float(kl_divergence(
                    ref, _spliced_logprobs(downstream, mse, batch, am, m, scale)).mean()))
            history["mse_kl_step"].append(step)
        if log and (step % max(steps // 5, 1) == 0 or step == steps - 1):
            log(f"step {step}: e2e KL {history['e2e_kl'][-1]:.4f}, MSE SAE KL "
                f"{history['mse_kl'][-1]:.4f} (step {history['mse_kl_step'][-1]}), MSE loss "
                f"{history['mse_loss'][-1]:.4f}")
    for sae in saes.values():
        sae.fold_activation_norm_scaling_factor(scale)
        sae.eval()
    return SAEPair(e2e=saes["e2e"], mse=saes["mse"], scale=scale, history=history,
                   seconds=time.time() - t0)


# --------------------------------------------------------------------------- spreads


def _trace_cov(x: "torch.Tensor") -> "torch.Tensor":
    x = x.double()
    return (x - x.mean(0)).pow(2).sum() / max(len(x) - 1, 1)


def spread_ratios(sae: Any, points_by_plateau: Sequence["torch.Tensor"]) -> "torch.Tensor":
    """Per plateau, tr Cov(x̂) / tr Cov(x): ``x`` the ``(n_i, d)`` points of that plateau,
    ``x̂ = sae(x)`` their reconstructions (float64; a plateau whose points are all equal is
    refused)."""
    import torch

    out = []
    with torch.no_grad():
        for pts in points_by_plateau:
            denom = _trace_cov(pts)
            if float(denom) == 0.0:
                raise UsageError("a plateau's points are all equal: its spread ratio is undefined.")
            out.append(_trace_cov(sae(pts.float())) / denom)
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def within_plateau_spread(sae: Any, points_by_plateau: Sequence["torch.Tensor"]) -> float:
    """Mean over plateaus of tr Cov(x̂) / tr Cov(x), over the points x of each plateau and
    their reconstructions x̂ = sae(x).

    0 means the SAE maps every plateau to a single point; 1 means the reconstructions are as
    spread as the points (an SAE that is the identity); it can exceed 1 (the SAE amplifies
    the spread). ``points_by_plateau``: one ``(n_i, d)`` tensor per plateau, n_i ≥ 2.
    """
    return float(spread_ratios(sae, points_by_plateau).mean())


def global_spread(sae: Any, rows: "torch.Tensor") -> float:
    """tr Cov(x̂) / tr Cov(x) over ``rows`` (``(n, d)``, e.g. held-out activations) and their
    reconstructions: how much the SAE shrinks (or inflates) the activation distribution as
    a whole."""
    import torch

    with torch.no_grad():
        return float(_trace_cov(sae(rows.float())) / _trace_cov(rows))


def relative_plateau_spread(sae: Any, points_by_plateau: Sequence["torch.Tensor"],
                            rows: "torch.Tensor") -> float:
    """:func:`within_plateau_spread` / :func:`global_spread` on ``rows``.

    The raw spread ratio mixes two things: collapsing plateaus and shrinking everything.
    An SAE that scales every reconstruction towards the mean has a small raw ratio on any
    set of points, plateau or not (the toy null in ``tests/test_e2e_sae.py``: an e2e SAE
    whose model reads every direction still has ~0.55× the MSE SAE's raw spread). Divided
    by the global ratio, 1 means plateaus keep the same share of their spread as the
    distribution does, < 1 that the SAE collapses plateaus more than it shrinks the rest.
    """
    return within_plateau_spread(sae, points_by_plateau) / global_spread(sae, rows)


def paired_comparison(a: "torch.Tensor", b: "torch.Tensor", *, seed: int = 0) -> dict[str, float]:
    """Paired comparison of per-plateau values ``a`` (e2e) and ``b`` (MSE), by the family's
    :func:`~mi_ideas.stats.paired_comparison` (Wilcoxon signed-rank
    and a 95% percentile-bootstrap interval of the mean difference a − b, 2000 resamples of
    the plateaus), plus the fraction of plateaus with a < b."""
    import torch

    from mi_ideas.stats import paired_comparison as shared

    c = shared(b.double().numpy(), a.double().numpy(), test="wilcoxon", rng=seed)
    diff = (a - b).double()
    return {"mean_diff": c.mean_diff, "median_diff": c.median_diff,
            "frac_e2e_lower": float((diff < 0).double().mean()), "n": float(c.n_units),
            "ci_low": c.ci_low, "ci_high": c.ci_high, "wilcoxon_p": c.p_wilcoxon}


# --------------------------------------------------------------------------- the zoo run


@dataclass
class E2EPlateauResult:
    """What :func:`run_e2e_plateaus` finds: ``metrics`` (name → value) and ``definitions``
    (name → words, for every metric), ``details`` (settings, counts, per-plateau arrays),
    and the two SAEs."""

    metrics: dict[str, float]
    definitions: dict[str, str]
    details: dict[str, Any]
    saes: SAEPair


def _texts(data: Any) -> list[str]:
    if isinstance(data, str):
        import mi_ideas

        return list(mi_ideas.load_dataset(data).texts)
    if hasattr(data, "texts"):
        return list(data.texts)
    texts = list(data)
    if not all(isinstance(t, str) for t in texts):
        raise UsageError("prompts_or_acts must be a data spec, a Dataset or a list of texts.")
    return texts


def harvest_streams(subject: Any, site: str, texts: Sequence[str], *, max_length: int = 64,
                    chunk: int = 32) -> tuple[Any, "torch.Tensor"]:
    """(Batch, ``(n, seq, d)`` residual stream at ``site``) of texts tokenized together
    (left-padded to one width, BOS prepended, at most ``max_length`` tokens), read with
    ``subject.activations`` ``chunk`` texts per forward."""
    import torch

    from mi_ideas.subject import Batch

    batch = subject.tokenize(list(texts), max_length=max_length)
    parts = []
    for i in range(0, len(batch), chunk):
        part = Batch(batch.input_ids[i:i + chunk], batch.attention_mask[i:i + chunk])
        parts.append(subject.activations(part, [site])[site].float())
    return batch, torch.cat(parts)


def _eval_sae(downstream: Callable, sae: Any, resid: "torch.Tensor", am: "torch.Tensor",
              mask: "torch.Tensor", clean_lp: "torch.Tensor", chunk: int = 16
              ) -> dict[str, float]:
    import torch

    from mi_ideas.metrics import explained_variance, kl_divergence

    with torch.no_grad():
        x = resid[mask]
        x_hat = sae(x)
        kls = []
        for i in range(0, len(resid), chunk):
            sl = slice(i, i + chunk)
            lq = _spliced_logprobs(downstream, sae, resid[sl], am[sl], mask[sl], 1.0)
            kls.append(kl_divergence(clean_lp[int(mask[:i].sum()):int(mask[:i + chunk].sum())], lq))
        dead = float((~(sae.encode(x) > 0).any(0)).double().mean())
    return {"explained_variance": explained_variance(x, x_hat),
            "global_spread": float(_trace_cov(x_hat) / _trace_cov(x)),
            "spliced_kl": float(torch.cat(kls).mean()), "dead_fraction": dead,
            "l0": float((sae.encode(x) > 0).sum(-1).double().mean())}


def _plateau_prompts(subject: Any, texts: Sequence[str], n: int, lengths: tuple[int, int],
                     gen: "torch.Generator") -> Any:
    """``n`` prompts: texts truncated to a random length in ``lengths`` (BOS included), so
    that templated stories do not give identical prefixes."""
    import torch

    rows = []
    for text in texts:
        ids = subject.tokenize(text).input_ids[0]
        if len(ids) < lengths[0]:
            continue
        hi = min(lengths[1], len(ids))
        t = int(torch.randint(lengths[0], hi + 1, (1,), generator=gen))
        rows.append(ids[:t].tolist())
        if len(rows) == n:
            break
    if len(rows) < 2:
        raise UsageError("need at least two prompts of at least "
                         f"{lengths[0]} tokens to build real→real paths.")
    return subject.batch_from_ids(rows)


def run_e2e_plateaus(subject: Any = "zoo:stories-gpt2", site: str = "resid_pre.2",
                     prompts_or_acts: Any = "zoo:stories:600", *, d_sae: int = 256,
                     k: int = 16, steps: int = 400, lr: float = 3e-3, batch_size: int = 16,
                     max_length: int = 64, n_eval: int = 40, n_paths: int = 2,
                     n_alpha: int = 21, kl_threshold: float = 0.1,
                     points_per_plateau: int = 16, prompt_tokens: tuple[int, int] = (8, 40),
                     seed: int = 0, generator: "torch.Generator | None" = None,
                     threads: int | None = 1, log: Callable[[str], None] | None = None
                     ) -> E2EPlateauResult:
    """Do e2e SAEs collapse plateaus more than MSE SAEs? The zoo experiment.

    1. Texts (a data spec, Dataset or list): the last ``n_eval`` are held out, the others
       train. The residual stream at ``site`` over each text (at most ``max_length``
       tokens) is harvested with ``subject.activations``; every non-BOS token is a row.
    2. :func:`train_e2e_and_mse` at equal ``d_sae`` and ``k`` (``steps``, ``lr``,
       ``batch_size`` sequences per step, ``seed``).
    3. Each SAE's explained variance and spliced KL on the held-out tokens
       (:data:`DEFINITIONS`).
    4. Plateaus: the held-out texts truncated at random lengths in ``prompt_tokens`` are the
       prompts; x_a = the site's activation at a prompt's last token; ``n_paths`` targets
       x_b per prompt are other prompts' x (drawn with ``generator``). The sweep engine
       (``common/sweep.py``) reads KL(clean ‖ perturbed) at ``n_alpha`` steps α ∈ [0, 1]
       of x_a + α(x_b − x_a); the plateau of x_a on that path runs from α = 0 to the last
       step before the first KL > ``kl_threshold`` (the whole path if none). Paths whose
       first step already crosses are dropped (their plateau is narrower than the grid).
       ``points_per_plateau`` α are drawn uniformly on the plateau, and as the control on
       the whole path.
    5. Per plateau, the spread ratio tr Cov(x̂)/tr Cov(x) of each SAE, and the paired
       comparison e2e vs MSE (Wilcoxon signed-rank and a bootstrap interval).

    Defaults: 600 stories (560 train; with 160 the e2e SAE overfits: held-out KL 0.065 vs
    0.036 on its training batches), 400 steps at lr 3e-3 (at lr 1e-3 / 300 steps the e2e
    SAE is still shrinking every direction, global spread 0.24–0.30, which inflates the raw
    e2e–MSE gap), d_sae 256, k 16, 16 sequences of ≤ 64 tokens per step.

    ``subject``: a Subject or spec (local). ``threads``: torch threads for the run (restored
    afterwards; ``None`` leaves the setting alone): one is fastest for the zoo model, and
    much faster than two on a loaded machine. Returns an :class:`E2EPlateauResult`.
    """
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(subject, site, prompts_or_acts, d_sae=d_sae, k=k, steps=steps, lr=lr,
                    batch_size=batch_size, max_length=max_length, n_eval=n_eval,
                    n_paths=n_paths, n_alpha=n_alpha, kl_threshold=kl_threshold,
                    points_per_plateau=points_per_plateau, prompt_tokens=prompt_tokens,
                    seed=seed, generator=generator, log=log)
    finally:
        torch.set_num_threads(before)


def _run(subject: Any, site: str, prompts_or_acts: Any, *, d_sae: int, k: int, steps: int,
         lr: float, batch_size: int, max_length: int, n_eval: int, n_paths: int,
         n_alpha: int, kl_threshold: float, points_per_plateau: int,
         prompt_tokens: tuple[int, int], seed: int, generator: Any, log: Any
         ) -> E2EPlateauResult:
    import torch

    from mi_ideas.metrics import kl_divergence, row_mask

    from ..common.curves import first_crossing
    from ..common.sweep import clean_run, sweep

    t0 = time.time()
    if isinstance(subject, str):
        import mi_ideas

        subject = mi_ideas.load_subject(subject)
    site = subject.site(site).name
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    say = log or (lambda msg: None)
    texts = _texts(prompts_or_acts)
    if len(texts) <= n_eval + 1:
        raise UsageError(f"{len(texts)} texts leave nothing to train on with n_eval={n_eval}.")
    train_texts, eval_texts = texts[:-n_eval], texts[-n_eval:]

    # 1. activations
    downstream = make_downstream(subject, site)
    train_batch, train_resid = harvest_streams(subject, site, train_texts, max_length=max_length)
    eval_batch, eval_resid = harvest_streams(subject, site, eval_texts, max_length=max_length)
    train_mask, eval_mask = row_mask(train_batch), row_mask(eval_batch)
    say(f"harvested {int(train_mask.sum())} training and {int(eval_mask.sum())} held-out "
        f"rows at {site} ({time.time() - t0:.1f} s)")

    # 2. both SAEs
    pair = train_e2e_and_mse(downstream, train_resid, d_sae, k, steps, lr, seed,
                             attention_mask=train_batch.attention_mask, mask=train_mask,
                             batch_size=batch_size, hook_name=_hook_name(site),
                             model_name=subject.spec, log=say)
    say(f"trained both SAEs in {pair.seconds:.1f} s")

    # 3. explained variance and spliced KL, held out
    metrics: dict[str, float] = {}
    defs: dict[str, str] = {}
    eval_am = eval_batch.attention_mask
    clean_lp = _clean_logprobs(downstream, eval_resid, eval_am, eval_mask, 16)
    for name, sae in (("e2e", pair.e2e), ("mse", pair.mse)):
        for key, value in _eval_sae(downstream, sae, eval_resid, eval_am, eval_mask,
                                    clean_lp).items():
            metrics[f"{name}.{key}"] = value
            defs[f"{name}.{key}"] = (DEFINITIONS[key] + "; the "
                                     + ("e2e" if name == "e2e" else "MSE") + " SAE")
    with torch.no_grad():
        mean = train_resid[train_mask].mean(0)
        ablated = eval_resid.clone()
        ablated[eval_mask] = mean
        lq = downstream(ablated, eval_am).float().log_softmax(-1)[eval_mask]
    metrics["mean_ablation_kl"] = float(kl_divergence(clean_lp, lq).mean())
    defs["mean_ablation_kl"] = DEFINITIONS["mean_ablation_kl"]

    # 4. plateaus along real→real paths
    prompts = _plateau_prompts(subject, eval_texts, n_eval, prompt_tokens, gen)
    clean = clean_run(subject, prompts, site)
    n_prompts = len(prompts)
    offs = torch.randint(1, n_prompts, (n_prompts, n_paths), generator=gen)
    target_idx = (torch.arange(n_prompts)[:, None] + offs) % n_prompts
    targets = clean.x[target_idx]
    alphas = torch.linspace(0, 1, n_alpha)
    res = sweep(subject, clean, site, targets, alphas, kind="target")
    cross = first_crossing(res.kl, kl_threshold)  # (n_prompts, n_paths)
    plateau_pts, whole_pts, ends, kept = [], [], [], []
    for i in range(n_prompts):
        for j in range(n_paths):
            c = int(cross[i, j])
            if c < 2:  # only α = 0 is inside: narrower than the grid
                continue
            end = float(alphas[c - 1]) if c < n_alpha else 1.0
            delta = targets[i, j] - clean.x[i]
            if float(delta.norm()) == 0.0:
                continue
            a_in = torch.rand(points_per_plateau, generator=gen) * end
            a_all = torch.rand(points_per_plateau, generator=gen)
            plateau_pts.append(clean.x[i] + a_in[:, None] * delta)
            whole_pts.append(clean.x[i] + a_all[:, None] * delta)
            ends.append(end)
            kept.append((i, j))
    n_paths_total = n_prompts * n_paths
    details: dict[str, Any] = {
        "site": site, "d_sae": d_sae, "k": k, "steps": steps, "lr": lr,
        "batch_size": batch_size, "seed": seed, "scale": pair.scale,
        "n_train_rows": int(train_mask.sum()), "n_eval_rows": int(eval_mask.sum()),
        "n_paths": n_paths_total, "n_plateaus": len(plateau_pts),
        "plateau_end_alpha": ends, "plateau_paths": kept, "history": pair.history,
        "alphas": alphas.tolist(), "kl_curves": res.kl.tolist(),
        "crossing_steps": cross.tolist(), "kl_threshold": kl_threshold,
    }
    metrics["n_plateaus"] = float(len(plateau_pts))
    defs["n_plateaus"] = (f"paths (of {n_paths_total}) whose plateau is wider than one grid "
                          f"step; {DEFINITIONS['plateau']}")
    if ends:
        metrics["plateau_end_alpha_median"] = float(torch.tensor(ends).median())
        defs["plateau_end_alpha_median"] = "median over paths of the α where the plateau ends; " \
            + DEFINITIONS["plateau"]
    if len(plateau_pts) >= 2:
        per = {}
        region_words = {"plateau": DEFINITIONS["plateau"], "whole_path": DEFINITIONS["whole_path"],
                        "plateau_rel": DEFINITIONS["plateau"] + "; divided by the SAE's "
                        + DEFINITIONS["global_spread"]}
        for name, sae in (("e2e", pair.e2e), ("mse", pair.mse)):
            per[("plateau", name)] = spread_ratios(sae, plateau_pts)
            per[("whole_path", name)] = spread_ratios(sae, whole_pts)
            per[("plateau_rel", name)] = per[("plateau", name)] / metrics[f"{name}.global_spread"]
        for region, words in region_words.items():
            for name in ("e2e", "mse"):
                r = per[(region, name)]
                details[f"{region}.{name}.spread_ratios"] = r.tolist()
                metrics[f"{region}.{name}.spread"] = float(r.mean())
                metrics[f"{region}.{name}.spread_median"] = float(r.median())
                base = f"{DEFINITIONS['spread_ratio']}; {words}"
                who = "e2e" if name == "e2e" else "MSE"
                defs[f"{region}.{name}.spread"] = f"mean over paths of the {base}; the {who} SAE"
                defs[f"{region}.{name}.spread_median"] = (f"median over paths of the {base}; "
                                                          f"the {who} SAE")
            cmp = paired_comparison(per[(region, "e2e")], per[(region, "mse")], seed=seed)
            for key, value in cmp.items():
                if key != "n":
                    metrics[f"{region}.e2e_vs_mse.{key}"] = value
                    defs[f"{region}.e2e_vs_mse.{key}"] = (
                        f"{_CMP_WORDS[key]}; per-path values of {region}.*.spread, e2e − MSE")
        for name in ("e2e", "mse"):
            rel = per[("plateau", name)] / per[("whole_path", name)]
            metrics[f"{name}.plateau_over_whole_path"] = float(rel.median())
            defs[f"{name}.plateau_over_whole_path"] = (
                "median over paths of (plateau spread ratio / whole-path spread ratio): < 1 "
                "when the SAE shrinks the plateau stretch more than the rest of its path")
    else:
        say(f"only {len(plateau_pts)} plateaus wider than the grid: no spread comparison")
    details["seconds"] = time.time() - t0
    say(f"done in {details['seconds']:.1f} s")
    return E2EPlateauResult(metrics=metrics, definitions=defs, details=details, saes=pair)


_CMP_WORDS = {
    "mean_diff": "mean paired difference",
    "median_diff": "median paired difference",
    "frac_e2e_lower": "fraction of paths where the e2e SAE's value is below the MSE SAE's",
    "ci_low": "lower end of the " + DEFINITIONS["bootstrap"],
    "ci_high": "upper end of the " + DEFINITIONS["bootstrap"],
    "wilcoxon_p": "p-value of the " + DEFINITIONS["wilcoxon"],
}


def _hook_name(site: str) -> str | None:
    try:
        from mi_ideas.sites import to_hook_name

        return to_hook_name(site)
    except Exception:  # pragma: no cover - only metadata
        return None
