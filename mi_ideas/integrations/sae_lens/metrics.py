"""The built-in evaluator metrics, registered in
:data:`~mi_ideas.integrations.sae_lens.evaluation.METRICS` when the package is imported.

Keys are prefixed (``mi_ideas/`` by default); "eval set" is the evaluator's fixed set of
held-out activations, x̂ the SAE's reconstruction in the model's own units (SAELens's
activation scaler undone), x̄ the eval set's mean.

``explained-variance``
    ``explained_variance`` = 1 − Σᵢ‖xᵢ − x̂ᵢ‖² / Σᵢ‖xᵢ − x̄‖² over the eval set
    (:func:`mi_ideas.metrics.explained_variance`). 1 is perfect; 0 is no better than
    predicting x̄; an untrained SAE (x̂ ≈ 0) scores ≈ −‖x̄‖²/variance, often negative.
``kmeans-baseline``
    ``kmeans_explained_variance``: the same quantity when each eval activation is replaced
    by its nearest centroid of a k-means fit (scikit-learn) with k = the SAE's width
    ``d_sae``, capped at ``kmeans_max_k`` and at the number of fitting rows
    (``kmeans_k`` reports the k used). The centroids are fitted once on held-out rows
    *disjoint from the eval set* and cached (in memory and under
    ``$MI_IDEAS_CACHE/kmeans``), so both numbers are out-of-sample. A k-means
    reconstruction is a dictionary of k atoms used one at a time with coefficient 1: an
    SAE that does not beat it is not using its sparsity.
``sparsity``
    ``l0``, the mean number of non-zero latents per eval token, and
    ``dead_latents_fraction``, the fraction of the ``d_sae`` latents that are zero on
    every eval token.
``spliced-kl``
    ``spliced_kl``: the mean KL(clean ‖ spliced) in nats of the next-token distribution,
    where "spliced" runs the model with x̂ written over the site
    (``Intervention(site, "replace", x̂, positions=mask)``, at exactly the eval set's
    rows), at the last token of each eval text (``kl_positions="last"``) or at every
    spliced position (``"all"``). ``mean_ablation_kl`` is the same with x̄ written
    instead (computed once), and ``spliced_kl_fraction`` = spliced_kl / mean_ablation_kl
    (0 = the SAE preserves the output, 1 = as bad as erasing the site to its mean). The
    KL is computed next to the model (:class:`~mi_ideas.subject.StatsRequest`), so a
    remote subject sends back one number per position, never logits.
``plateau-preservation`` (not in the defaults)
    the fraction of eval texts whose spliced KL stays below
    ``options["plateau_kl_threshold"]`` (default 0.1 nats), the same for isotropic errors
    of the same length per row, and the ratio of their median KLs.
"""

from __future__ import annotations

from mi_ideas.integrations.sae_lens.evaluation import EvalContext, register_metric
from mi_ideas.metrics import explained_variance

__all__: list[str] = []  # nothing to import: the metrics are reached through METRICS


@register_metric(
    "explained-variance", keys=("explained_variance",),
    description="1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² of the SAE on the held-out eval set")
def _explained_variance(ctx: EvalContext) -> dict[str, float]:
    return {"explained_variance": explained_variance(ctx.x, ctx.x_hat)}


@register_metric(
    "kmeans-baseline", keys=("kmeans_explained_variance", "kmeans_k"), needs_fit_rows=True,
    description="the same explained variance for nearest-centroid k-means with k = d_sae "
                "(capped), fitted once on other held-out rows")
def _kmeans_baseline(ctx: EvalContext) -> dict[str, float]:
    ev = ctx.evaluator
    k = min(int(ctx.sae.cfg.d_sae), ev.kmeans_max_k, len(ctx.x_fit))
    km = ev.kmeans(k)
    return {"kmeans_explained_variance": km.explained_variance(ctx.x), "kmeans_k": float(k)}


@register_metric(
    "sparsity", keys=("l0", "dead_latents_fraction"),
    description="mean non-zero latents per eval token (l0) and the fraction of latents "
                "zero on every eval token")
def _sparsity(ctx: EvalContext) -> dict[str, float]:
    active = ctx.feature_acts != 0
    return {"l0": float(active.sum(-1).float().mean()),
            "dead_latents_fraction": float((~active.any(0)).float().mean())}


@register_metric(
    "spliced-kl", keys=("spliced_kl", "mean_ablation_kl", "spliced_kl_fraction"),
    needs_model=True,
    description="next-token KL(clean ‖ spliced) in nats with the SAE reconstruction "
                "written over the site, next to the KL of mean ablation")
def _spliced_kl(ctx: EvalContext) -> dict[str, float]:
    ev = ctx.evaluator
    state = ctx.state
    if "mean_ablation_kl" not in state:
        state["mean_ablation_kl"] = ev.spliced_kl(ctx.x.mean(0))
    kl = ev.spliced_kl(ctx.x_hat)
    ablation = state["mean_ablation_kl"]
    return {"spliced_kl": kl, "mean_ablation_kl": ablation,
            "spliced_kl_fraction": kl / ablation if ablation > 0 else float("nan")}


@register_metric(
    "plateau-preservation",
    keys=("plateau_in_fraction", "plateau_in_fraction_isotropic", "plateau_kl_ratio"),
    needs_model=True,
    description="does the reconstruction stay in x's plateau? the fraction of eval texts "
                "whose spliced KL stays below options['plateau_kl_threshold'] (default 0.1 "
                "nats), next to the same for isotropic errors of the same length per row, "
                "and the ratio of their median KLs")
def _plateau_preservation(ctx: EvalContext) -> dict[str, float]:
    import torch

    threshold = float(ctx.options.get("plateau_kl_threshold", 0.1))
    state = ctx.state
    if "directions" not in state:  # one fixed set of random directions across calls
        g = torch.Generator().manual_seed(int(ctx.options.get("seed", 0)))
        d = torch.randn(ctx.x.shape, generator=g)
        state["directions"] = d / d.norm(dim=-1, keepdim=True)
    err = (ctx.x - ctx.x_hat).norm(dim=-1, keepdim=True)
    iso = ctx.x + err * state["directions"]
    kl_hat = ctx.evaluator.spliced_kl_values(ctx.x_hat)
    kl_iso = ctx.evaluator.spliced_kl_values(iso)
    median_iso = float(kl_iso.median())
    return {
        "plateau_in_fraction": float((kl_hat < threshold).double().mean()),
        "plateau_in_fraction_isotropic": float((kl_iso < threshold).double().mean()),
        "plateau_kl_ratio": float(kl_hat.median()) / median_iso if median_iso > 0 else float("nan"),
    }
