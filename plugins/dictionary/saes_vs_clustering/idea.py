"""The saes-vs-clustering idea class (short idea 2). Cheap to import (no torch): the
pipeline is :mod:`.run`; shared pieces live in :mod:`mi_ideas_plugins.dictionary.common`."""

from __future__ import annotations

import math
from typing import Any

from mi_ideas import Headline, Idea, MemoryItem, RunContext

from .config import SaesVsClusteringConfig
from .result import SaesVsClusteringResult


class SaesVsClustering(Idea):
    """How much of the activations' structure do generic clustering methods explain?

    Seed (Heimersheim, short idea 2): 50%, 90%, 99% of the variance? And do clusters look
    as interpretable as SAE latents? At every dictionary size K of ``sizes``, fitted on the
    training rows and scored on held-out rows: k-means with centroid reconstruction,
    k-means with a per-point scale (a 1-sparse dictionary), PCA then k-means, a TopK SAE
    trained with SAELens's classes and trainer at d_sae = K, SAEs given with ``--sae`` (at
    their own size), and a dictionary of K random directions (Szegedy et al. 2013).

    Metrics ``METHOD.K.ev`` (explained variance 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²), ``.mse``,
    ``.l0`` and, for harvested activations, ``.ce_increase`` / ``.ce_loss_score`` with the
    reconstruction spliced into the model. On the zoo corpus (every concept word labelled
    by its generator), ``METHOD.K.purity`` at every K: the concept purity of each unit's
    top-activating held-out contexts, next to the same units with shuffled labels, and
    ``cmp.sae_vs_METHOD.K.*``: SAE latents' excess purity minus each clustering's, with a
    paired bootstrap over held-out texts.

    Inputs: a harvest of ``site`` (``--model``, ``--data``), or your own rows with
    ``activations=PATH`` (a safetensors file with a tensor ``activations`` of shape
    ``(n, d)``). The SAE side is also written as SAEBench-style JSON
    (``artifacts/saebench-*.json``).
    """

    name = "saes-vs-clustering"
    summary = ("Explained variance, spliced CE and top-context purity of k-means, 1-sparse, "
               "PCA+k-means, TopK SAEs and random dictionaries over dictionary size K.")
    size = "short"
    Config = SaesVsClusteringConfig
    Result = SaesVsClusteringResult
    remote = True  # the model is only called to harvest and to splice (ctx.subject)
    uses_model = True
    uses_saes = True
    uses_data = True
    default_data = "zoo:stories:200"
    presets = {"quick": {"sizes": [16, 64], "sae_steps": 300},
               "ce_all": {"ce_texts": None}}

    @classmethod
    def estimate_memory(cls, config: SaesVsClusteringConfig, subject: Any = None,
                        dataset: Any = None) -> list[MemoryItem] | None:
        """Held-out rows with a few reconstructions of them, the training rows when they fit
        ``budget_mb`` (else one shard at a time), the k-means distance chunk and the SAE."""
        d = int(getattr(subject, "d_model", 0) or 768)
        n_texts = len(dataset) if dataset is not None else 1000
        k = max(config.sizes)
        eval_rows = config.n_eval_texts * config.max_length
        train_bytes = max(0, n_texts - config.n_eval_texts) * config.max_length * d * 4
        return [
            MemoryItem("held-out rows, their reconstructions and unit scores",
                       eval_rows * (4 * d + 12 * k) * 4, ("n_eval_texts", "max_length", "sizes")),
            MemoryItem("training rows (in memory up to budget_mb, else streamed)",
                       int(min(train_bytes, config.budget_mb * 2**20)), ("budget_mb",)),
            MemoryItem("k-means distance chunk and sums", (8192 * k + 2 * k * d) * 8, ("sizes",)),
            MemoryItem("SAE weights and Adam state", 4 * 4 * 2 * k * d, ("sizes",)),
        ]

    @classmethod
    def headlines(cls, result) -> list[Headline]:
        sizes = (result.details or {}).get("sizes") or []
        if not sizes:
            return []
        k = sizes[-1]
        kp = result.details.get("purity_size", k)
        return [
            Headline(f"kmeans.{k}.ev", f"sae.{k}.ev", f"EV of k-means vs TopK SAE at K={k}"),
            Headline(f"kmeans_scaled.{k}.ev", f"random.{k}.ev",
                     f"EV of the 1-sparse k-means vs random directions at K={k}"),
            Headline(f"sae.{kp}.purity", f"sae.{kp}.purity_shuffled",
                     f"SAE latents' top-context purity vs shuffled labels (K={kp})"),
            Headline(f"kmeans.{kp}.purity", f"kmeans.{kp}.purity_shuffled",
                     f"k-means clusters' top-context purity vs shuffled labels (K={kp})"),
            Headline(f"kmeans.{k}.ce_increase", f"sae.{k}.ce_increase",
                     f"CE increase when spliced: k-means vs SAE (K={k})"),
        ]

    @classmethod
    def answer(cls, result) -> str:
        m = result.metrics
        sizes = (result.details or {}).get("sizes") or []
        if not sizes:
            return ""
        k = sizes[-1]
        parts = []
        names = {"kmeans": "k-means", "kmeans_scaled": "1-sparse k-means",
                 "pca_kmeans": "PCA+k-means", "sae": "the TopK SAE", "random": "random directions"}
        for meth, label in names.items():
            v = m.get(f"{meth}.{k}.ev")
            if v is not None and not math.isnan(v):
                parts.append(f"{label} {v:.0%}")
        if not parts:
            return ""
        text = f"At K={k}, the share of held-out variance explained is " + ", ".join(parts) + "."
        kp = result.details.get("purity_size", k)
        pur = []
        for meth, label in (("sae", "SAE latents"), ("kmeans", "k-means clusters"),
                            ("random", "random directions")):
            p, lo, hi = (m.get(f"{meth}.{kp}.purity_excess{s}") for s in ("", "_ci_lo", "_ci_hi"))
            if p is None or math.isnan(p):
                continue
            verdict = ("above chance" if lo > 0 else "below chance" if hi < 0
                       else "no different from chance")
            pur.append(f"{label} {m[f'{meth}.{kp}.purity']:.2f} vs {m[f'{meth}.{kp}.purity_shuffled']:.2f} "
                       f"shuffled ({verdict}, 95% CI of the excess [{lo:+.2f}, {hi:+.2f}])")
        if pur:
            text += f" Top-context concept purity at K={kp}: " + "; ".join(pur) + "."
        c = f"cmp.sae_vs_kmeans.{kp}.purity_excess_diff"
        if c in m and not math.isnan(m[c]) and not math.isnan(m.get(c + "_ci_lo", math.nan)):
            lo, hi = m[c + "_ci_lo"], m[c + "_ci_hi"]
            verdict = ("SAE latents purer" if lo > 0 else "k-means clusters purer" if hi < 0
                       else "no clear difference")
            text += (f" SAE minus k-means excess purity at K={kp}: {m[c]:+.2f} (95% CI "
                     f"[{lo:+.2f}, {hi:+.2f}], paired bootstrap over "
                     f"{int(m[f'cmp.sae_vs_kmeans.{kp}.n_texts'])} held-out texts): {verdict}.")
        return text

    def run(self, ctx: RunContext, config: SaesVsClusteringConfig) -> SaesVsClusteringResult:
        import contextlib

        from .run import run

        threads = ctx.torch_threads(config.torch_threads) if config.torch_threads else contextlib.nullcontext()
        with threads:
            return run(ctx, config)
