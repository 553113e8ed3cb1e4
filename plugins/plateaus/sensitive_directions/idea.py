"""The sensitive-directions idea class (large idea 2): which directions move the output
first?

Cheap to import (no torch): the experiment lives in :mod:`.run` (pipeline),
:mod:`.families` (direction families), :mod:`.analysis` (crossing length, curvature,
comparisons), :mod:`.optimise` (gradient search, local only), :mod:`.report` (the result's
metrics and artifacts) and :mod:`.figures`.
"""

from __future__ import annotations

from typing import Any

from mi_ideas import Headline, Idea, MemoryItem, RunContext

from .config import SensitiveDirectionsConfig
from .result import SensitiveDirectionsResult


class SensitiveDirections(Idea):
    """Which directions of activation space is the output most sensitive to?

    Seed (Heimersheim, large idea 2): use how sensitive the output is to a direction to
    find the "true features". Following Heimersheim 2024, Lee & Heimersheim 2024 (arXiv
    2410.12555) and Gurnee 2024: at the SAE's site (last token of short prompts), perturb
    x + t·d along unit directions d from several families (SAE decoder directions of
    active / inactive / dead latents, differences of real activations, directions toward
    another real activation, PCA components, covariance-shaped random without subtracting
    x, the old baseline toward a Gaussian sample that does subtract x, truly isotropic
    random, and the SAE reconstruction error x̂ − x) and measure
    KL(clean ‖ perturbed) of the next token against t with the batched sweep engine.

    Every direction goes through a radial option (``radial``: ``project`` by default, which
    removes its component along x; ``match`` gives every family the same cos(d, x); ``keep``):
    downstream LayerNorms absorb growth along x, so without it a family's sensitivity mostly
    measures its cos(d, x). SAE directions get a random sign by default; every family's
    cos(d, x) mean and std are reported next to its sensitivities.

    Per family: the crossing length t_cross (first t with KL > kl_threshold,
    interpolated) and the small-step curvature KL(t_s)/t_s², as medians and IQRs; and the
    headline answer, paired over prompts (Wilcoxon signed-rank on the per-prompt log ratio
    of median crossing lengths, with a bootstrap interval): are SAE directions
    (``sae_family``) more sensitive than the covariance-shaped baseline
    (``baseline_family``)? Also Gurnee's comparison: the KL of splicing in x̂ against random
    perturbations of the same length ||x − x̂||.

    Optionally (``optimise=true``, local models only) gradient-ascends KL at a fixed small
    t to find the most sensitive direction per prompt and compares it (max |cos|) with
    the SAE's decoder directions against random directions as the control.
    """

    name = "sensitive-directions"
    summary = ("KL vs perturbation length along SAE / real / PCA / random / SAE-error "
               "directions: are SAE directions more sensitive than a covariance-matched baseline?")
    size = "large"
    Config = SensitiveDirectionsConfig
    Result = SensitiveDirectionsResult
    remote = True
    uses_model = True
    uses_saes = True
    uses_data = True

    @classmethod
    def estimate_memory(cls, config: SensitiveDirectionsConfig, subject: Any = None,
                        dataset: Any = None) -> list[MemoryItem] | None:
        """The run's peak (the dataset bounds the pool): see :mod:`.memory`."""
        from .memory import estimate

        return estimate(config, subject, dataset)

    @classmethod
    def headlines(cls, result: Any) -> list[Headline]:
        d = result.details or {}
        sae, base = d.get("sae_family", "dir_sae_latent"), d.get("baseline_family", "dir_cov")
        return [
            Headline(f"{sae}.t_cross_median", f"{base}.t_cross_median",
                     "median crossing length: SAE directions vs the covariance baseline"),
            Headline("sae_vs_baseline.ratio", "sae_vs_baseline.wilcoxon_p",
                     "per-prompt crossing ratio (< 1: SAE more sensitive) and its Wilcoxon p"),
            Headline(f"{sae}.cos_x_mean", f"{base}.cos_x_mean",
                     "mean cos(d, x) of the two families (the radial nuisance)"),
            Headline("toward_real.t_cross_median", "dir_isotropic.t_cross_median",
                     "toward another real activation vs a truly isotropic direction"),
            Headline("splice_vs_dir_isotropic_kl_ratio", None,
                     "KL of splicing in x_hat / KL of an isotropic step of equal length"),
        ]

    @classmethod
    def answer(cls, result: Any) -> str:
        return str((result.details or {}).get("answer", ""))

    def run(self, ctx: RunContext, config: SensitiveDirectionsConfig) -> SensitiveDirectionsResult:
        from .run import run

        return run(ctx, config)
