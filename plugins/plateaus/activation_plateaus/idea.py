"""The activation-plateaus idea class (cheap to import: the procedure, in :mod:`.run`,
imports torch when a run starts)."""

from __future__ import annotations

import math
from typing import Any

from mi_ideas import Headline, Idea, IdeaResult, MemoryItem, RunContext

from .config import PlateauConfig

#: (comparison prefix, metric, control, label, what B and A are, unit) of the headlines
_HEADLINES = (
    ("cmp.bases.dir_isotropic.cov_sample.vs.real", "bases.real.dir_isotropic.crossing_median",
     "bases.cov_sample.dir_isotropic.crossing_median",
     "crossing step from real bases vs Gaussian bases (dir_isotropic)",
     "paths from Gaussian bases", "paths from real bases", "steps"),
    ("cmp.crossing.dir_real_diff.vs.dir_isotropic", "dir_real_diff.crossing_median",
     "dir_isotropic.crossing_median",
     "crossing step along real-difference vs truly isotropic directions (cos_x matched)",
     "paths along real-difference directions", "paths along truly isotropic directions", "steps"),
    ("cmp.steering.vs.dir_isotropic", "steering.crossing_median",
     "steering.dir_isotropic.crossing_median",
     "crossing step along the happy − sad steering vector vs truly isotropic directions",
     "paths along the steering vector", "paths along truly isotropic directions", "steps"),
    ("cmp.onset50.toward_real.vs.reinit", "toward_real.onset50_js_median",
     "reinit.toward_real.onset50_js_median",
     "onset-50% (JS) of real→real paths, trained vs re-initialised model",
     "the trained model", "the re-initialised model", "α"),
)


class ActivationPlateaus(Idea):
    """Probe activation plateaus: perturb a real activation and watch the output.

    Seed (large idea 1): activation space seems made of discrete regions, each giving one
    output distribution, with sharp changes at region boundaries. Following Janiak et al.
    2024 (arXiv 2409.17113), Giglemiani et al. 2024 (arXiv 2409.15019) and Heimersheim &
    Mendel 2024: take the residual stream at an early site, last position of ~10-token
    prompts (deduplicated; the pool never holds a copy of a reference); move it along
    target paths (``toward_*``: another real activation, a covariance-matched or isotropic
    Gaussian sample, an SAE-synthetic activation, an SAE reconstruction, a norm-preserving
    arc) in relative steps (α from 0 to 1) and along unit directions (``dir_*``: truly
    isotropic, covariance-shaped, ±SAE decoder directions, real differences; their
    component along x removed by default, ``radial``) in absolute steps; read out KL, JS and
    total variation of the next-token distribution and the L2 distance of the final
    residual stream.

    Reports onset metrics on JS (α at 10% / 50% of the endpoint, log–log exponent, the
    step-like fraction) next to sharpness, with paths below an endpoint floor excluded and
    counted; threshold-crossing steps; cos(d, x) of every family next to its numbers; and
    every "A vs B" as a paired comparison over prompts (Wilcoxon signed-rank, bootstrap
    interval). Sub-questions of the seed are switches: layers (2), grokking (3), SAE
    reconstructions (4), steering (5), e2e SAEs (6), synthetic vs real bases (7).
    """

    name = "activation-plateaus"
    summary = ("Perturb real activations along real / synthetic / random paths and directions; "
               "measure plateau onsets and threshold crossings, paired by prompt.")
    size = "large"
    Config = PlateauConfig
    Result = IdeaResult
    uses_model = True
    uses_saes = True
    uses_data = True
    default_data = "zoo:stories"
    remote = True
    presets = {
        "quick": {"n_prompts": 16, "n_pool": 150, "n_steps": 20, "layers": [0, 3],
                  "families": ["toward_real", "toward_cov_sample", "toward_iso_sample",
                               "toward_sae_synthetic", "dir_isotropic", "dir_sae_latent",
                               "dir_real_diff"]},
    }

    @classmethod
    def estimate_memory(cls, config: PlateauConfig, subject: Any = None) -> list[MemoryItem] | None:
        """The run's peak: see :mod:`.memory`."""
        from .memory import estimate

        return estimate(config, subject)

    @classmethod
    def headlines(cls, result: IdeaResult) -> list[Headline]:
        """Real vs Gaussian bases; real-difference vs truly isotropic directions; the steering
        vector vs truly isotropic directions; trained vs re-initialised onset."""
        return [Headline(metric, control, label) for _, metric, control, label, *_ in _HEADLINES]

    @classmethod
    def answer(cls, result: IdeaResult) -> str:
        """One clause per headline comparison, from its paired test over prompts."""
        m = result.metrics
        parts = []
        for cmp, metric, control, _, b, a, unit in _HEADLINES:
            if f"{cmp}.mean_diff" not in m:
                continue
            diff, lo, hi = m[f"{cmp}.mean_diff"], m[f"{cmp}.ci_low"], m[f"{cmp}.ci_high"]
            p, n = m[f"{cmp}.p_wilcoxon"], int(m[f"{cmp}.n_units"])
            stat = (f"mean paired difference {diff:+.2f} {unit}, 95% CI [{lo:+.2f}, {hi:+.2f}], "
                    f"Wilcoxon p = {p:.2g}, {n} prompts")
            if math.isfinite(p) and p < 0.05 and (lo > 0 or hi < 0):
                if unit == "steps":
                    how = "later" if diff > 0 else "sooner"
                    parts.append(f"{b} cross the KL threshold {how} than {a} ({stat})")
                else:
                    how = "larger" if diff > 0 else "smaller"
                    parts.append(f"{b} reaches half its JS endpoint at a {how} α than {a} "
                                 f"({stat})")
            else:
                parts.append(f"no difference between {b} and {a} ({stat})")
        return "; ".join(parts) + "." if parts else ""

    def run(self, ctx: RunContext, config: PlateauConfig) -> IdeaResult:
        from .run import run

        return run(ctx, config)
