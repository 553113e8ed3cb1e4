"""Config of activation-plateaus (nothing here imports torch).

Family names are definitions, shared by the three plateau ideas
(``plugins/plateaus/common/directions.py``): ``toward_*`` are target paths x → t
(interpolation; their direction is unit(t − x)), ``dir_*`` are unit directions d (paths
x + s·d). ``toward_real_arc`` is this idea's norm-preserving spherical path towards the
same real targets as ``toward_real``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mi_ideas import IdeaConfig

TargetFamily = Literal["toward_real", "toward_real_arc", "toward_cov_sample", "toward_iso_sample",
                       "toward_sae_synthetic", "toward_sae_recon"]
DirectionFamily = Literal["dir_isotropic", "dir_cov", "dir_sae_latent", "dir_sae_inactive",
                          "dir_real_diff"]
TARGET_FAMILIES = ("toward_real", "toward_real_arc", "toward_cov_sample", "toward_iso_sample",
                   "toward_sae_synthetic", "toward_sae_recon")
DIRECTION_FAMILIES = ("dir_isotropic", "dir_cov", "dir_sae_latent", "dir_sae_inactive",
                      "dir_real_diff")
SAE_FAMILIES = ("toward_sae_synthetic", "toward_sae_recon", "dir_sae_latent", "dir_sae_inactive")
BASES = ("real", "sae_synthetic", "cov_sample")

#: Old family names (before the review): what each one really was, and its new name.
OLD_FAMILIES: dict[str, str] = {
    "real": "the old 'real' was the interpolation towards another prompt's real activation "
            "(and, in absolute steps, unit(t − x) towards it): now `toward_real`; a direction "
            "between two other real activations is `dir_real_diff`",
    "real_arc": "the old 'real_arc' was the norm-preserving spherical path towards a real "
                "activation: now `toward_real_arc`",
    "cov_gauss": "the old 'cov_gauss' was unit(t − x) towards a sample t of N(μ, Σ), so it "
                 "pointed at the pool mean (cos ≈ −0.6 with x): now `toward_cov_sample`; a "
                 "covariance-shaped direction around x (no x subtracted) is `dir_cov`",
    "isotropic": "the old 'isotropic' was unit(t − x) towards an isotropic sample t of N(μ, "
                 "tr Σ/d · I), so it pointed at the pool mean: now `toward_iso_sample`; a truly "
                 "isotropic direction unit(z), z ~ N(0, I), is `dir_isotropic`",
    "sae_latent": "the old 'sae_latent' was +w_i, the decoder direction of a latent active at "
                  "x, always with a plus sign (cos ≈ +0.4 with x): now `dir_sae_latent`, with a "
                  "random sign by default (`sae_sign`) and the radial component removed "
                  "(`radial`)",
    "sae_synthetic": "the old 'sae_synthetic' was the interpolation towards an SAE-synthetic "
                     "activation decoded with a non-accumulating scatter (colliding latents "
                     "lost their mass): now `toward_sae_synthetic`, decoded with an "
                     "accumulating scatter; the SAE reconstruction of a real activation is "
                     "`toward_sae_recon`",
    "cov_random": "the old 'cov_random' was unit(Σ^{1/2} z) without subtracting x: now "
                  "`dir_cov`",
}
OLD_BASES = {"cov_gauss": "cov_sample", "gaussian": "cov_sample", "synthetic": "sae_synthetic"}


def _old_names(kind: str, values: Any, table: dict[str, str]) -> Any:
    if not isinstance(values, (list, tuple)):
        return values
    old = [v for v in values if isinstance(v, str) and v in table]
    if old:
        raise ValueError(
            f"{kind} lists old family name(s) {', '.join(repr(v) for v in old)}, renamed after "
            f"a review found the old names did not say what the families were. "
            + "; ".join(table[v] for v in old).capitalize()[:1]
            + "; ".join(table[v] for v in old)[1:]
            + f". Write the new names instead (targets: {', '.join(TARGET_FAMILIES)}; "
              f"directions: {', '.join(DIRECTION_FAMILIES)}).")
    return values


class PlateauConfig(IdeaConfig):
    site: str = Field(
        "resid_pre.2",
        description="Residual-stream site perturbed (resid_pre.L), at the last position of "
                    "each prompt. Default: the zoo SAE's site, so the SAE families apply.")
    n_prompts: int = Field(40, ge=2, le=2000,
                           description="Reference prompts (activations x), deduplicated.")
    n_pool: int = Field(400, ge=20, le=20000,
                        description="Other prompts whose activations form the pool of real "
                                    "activations (targets, mean and covariance); never an "
                                    "exact copy of a reference or of another pool prompt.")
    prompt_tokens: int = Field(10, ge=2, le=128,
                               description="Tokens per prompt, BOS included (stories truncated).")
    families: list[TargetFamily | DirectionFamily] = Field(
        ["toward_real", "toward_real_arc", "toward_cov_sample", "toward_iso_sample",
         "toward_sae_synthetic", "toward_sae_recon", "dir_isotropic", "dir_cov",
         "dir_sae_latent", "dir_sae_inactive", "dir_real_diff"],
        description="Families of perturbations (plugins/plateaus/common/directions.py). Target "
                    "paths x → t: toward_real (another distinct prompt's activation), "
                    "toward_real_arc (the same targets along a norm-preserving arc), "
                    "toward_cov_sample (a sample of N(μ, Σ) of the pool), toward_iso_sample (a "
                    "sample of N(μ, tr Σ/d · I)), toward_sae_synthetic (a real activation with "
                    "its active latents swapped for latents of similar firing frequency, "
                    "accumulating decode), toward_sae_recon (the SAE reconstruction of another "
                    "real activation); they run in relative steps (interpolation) and absolute "
                    "steps along unit(t − x). Directions x + s·d (absolute steps only): "
                    "dir_isotropic (unit(z), z ~ N(0, I)), dir_cov (unit(Σ^½ z)), "
                    "dir_sae_latent / dir_sae_inactive (±w_i of a latent active / inactive at "
                    "x), dir_real_diff (unit(x_j − x_k), two other real activations).")
    radial: Literal["project", "match", "keep"] = Field(
        "project",
        description="The component of direction families along x: project (remove it and "
                    "renormalise: every family has cos(d, x) = 0), match (every family gets "
                    "the same cos(d, x) distribution, the reference cosines pooled over the "
                    "run's direction families), keep (as drawn). Target paths are not changed; "
                    "their cos(t − x, x) is reported the same way.")
    sae_sign: Literal["random", "plus", "minus"] = Field(
        "random", description="Sign of SAE decoder directions ±w_i: random (default), plus, "
                              "minus.")
    n_paths: int = Field(2, ge=1, le=64, description="Paths per prompt and family.")
    n_steps: int = Field(40, ge=5, le=400, description="Steps per path.")
    step_modes: list[Literal["relative", "absolute"]] = Field(
        ["relative", "absolute"],
        description="relative: α from 0 to 1 towards the target (onset, sharpness; target "
                    "families only); absolute: fixed step lengths along the unit direction "
                    "(threshold crossings; every family).")
    abs_max_distance: float = Field(
        1.5, gt=0, le=100, description="Absolute mode: the longest step, in units of the median "
                               "distance between two real activations.")
    kl_threshold: float = Field(0.1, gt=0, description="KL (nats) that ends a plateau "
                                                       "(absolute steps).")
    compare_bases: bool = Field(
        True, description="Sub-question 7 (synthetic vs real): perturb along dir_isotropic "
                          "directions (absolute steps) from real bases, SAE-synthetic bases "
                          "(each reference's own latents swapped) and covariance-matched "
                          "Gaussian bases, paired by prompt.")
    layers: list[int] = Field(
        [0, 1, 2, 3], max_length=256,
        description="Sub-question 2 (regions through layers): at resid_pre.L for each L, "
                    "toward_real interpolation (onset, sharpness) and the crossing steps of "
                    "toward_real and dir_isotropic directions ([] to skip).")
    steering: bool = Field(
        True, description="Sub-question 5 (steering through the plateau lens): crossing steps "
                          "along a difference-of-means steering vector (emotion happy − sad "
                          "prompts) vs dir_isotropic and dir_real_diff directions, all under "
                          "the same radial option, paired by prompt.")
    sae_reconstruction: bool = Field(
        True, description="Sub-question 4 (features): does the SAE reconstruction x̂ stay in "
                          "x's plateau? KL of x → x̂ against dir_isotropic steps of the same "
                          "length, paired by prompt.")
    reinit_control: bool = Field(
        True, description="Repeat toward_real interpolation on the same architecture "
                          "re-initialised (a random network responds smoothly).")
    grokking: bool = Field(
        False, description="Sub-question 3: train a modular-addition MLP to grokking and its "
                           "no-weight-decay control (grokking.py; about 30 CPU-seconds; needs "
                           "no model); metrics under grokking.*.")
    grokking_steps: int = Field(2500, ge=10, le=100000,
                                description="Training steps of the grokking run.")
    e2e_sae: bool = Field(
        False, description="Sub-question 6: train an end-to-end SAE next to an MSE SAE of the "
                           "same size and L0 at site and compare the spread of their "
                           "reconstructions inside plateaus (e2e_sae.py; about a minute on the "
                           "zoo; local models only); metrics under e2e.*.")
    e2e_steps: int = Field(400, ge=10, le=100000, description="Training steps of both SAEs.")
    rows_per_forward: int = Field(1024, ge=1, le=16384,
                                  description="Sweep rows batched per forward.")

    @field_validator("families", mode="before")
    @classmethod
    def _renamed(cls, v: Any) -> Any:
        return _old_names("families", v, OLD_FAMILIES)

    @field_validator("families")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("families must list at least one family")
        twice = sorted({f for f in v if v.count(f) > 1})
        if twice:
            raise ValueError(f"families lists {', '.join(twice)} twice")
        return v

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int]) -> list[int]:
        bad = [layer for layer in v if layer < 0]
        if bad:
            raise ValueError(f"layers must be block indices >= 0 (resid_pre.L); got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"layers lists a layer twice: {v}")
        return v

    @model_validator(mode="after")
    def _modes(self) -> "PlateauConfig":
        if not self.step_modes:
            raise ValueError("step_modes must list relative, absolute or both")
        if "absolute" not in self.step_modes and not any(f in TARGET_FAMILIES
                                                         for f in self.families):
            raise ValueError(f"step_modes={self.step_modes} runs only target families, but "
                             f"families={self.families} has none: add 'absolute' to "
                             f"step_modes or a toward_* family")
        return self
