"""Config of sensitive-directions (nothing here imports torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mi_ideas import IdeaConfig

#: The families of this idea: the plateau family's shared names (common/directions.py) plus
#: three of its own (dir_sae_dead, dir_pca, dir_sae_error); definitions in .families.
ALL_FAMILIES: tuple[str, ...] = ("dir_sae_latent", "dir_sae_inactive", "dir_sae_dead",
                                 "dir_real_diff", "toward_real", "dir_pca", "dir_cov",
                                 "toward_cov_sample", "dir_isotropic", "dir_sae_error")
IDEA = "sensitive-directions"


def _family(name: str) -> str:
    from ..common.directions import family_error

    msg = family_error(name, IDEA, ALL_FAMILIES)
    if msg is not None:
        raise ValueError(msg)
    return name


Family = str


class SensitiveDirectionsConfig(IdeaConfig):
    """Settings of the sensitive-directions sweep (defaults run on the zoo in < 1 CPU-minute)."""

    n_prompts: int = Field(24, ge=2, le=4096, description="Reference prompts: the first "
                           "n_prompts texts of the dataset, each truncated to prompt_tokens.")
    prompt_tokens: int = Field(10, ge=2, le=1024, description="Tokens per prompt, BOS "
                               "included; x is the SAE site's activation at the last one.")
    pool_stories: int = Field(200, ge=1, le=20000, description="Texts after the prompts whose "
                              "activations at positions 1 .. prompt_tokens - 1 (the story "
                              "openings x is taken from; BOS skipped) form the pool: covariance, "
                              "PCA, real activations and SAE firing frequencies (dead latents); "
                              "exact duplicates and copies of a reference are dropped.")
    families: tuple[Family, ...] = Field(ALL_FAMILIES, min_length=1, description=(
        "Direction families to sweep (unit d, x + t d): dir_sae_latent / dir_sae_inactive / "
        "dir_sae_dead (s * w_i, w_i the unit SAE decoder row of a latent active at x / "
        "inactive at x but alive / never firing on the pool, s by sae_sign), dir_real_diff "
        "(unit(x_j - x_k), two other real activations), toward_real (unit(x' - x): toward "
        "another real activation), dir_pca (a top principal component, random sign), dir_cov "
        "(unit(Sigma^1/2 z), x not subtracted), toward_cov_sample (unit(g - x), g ~ N(mu, "
        "Sigma): subtracts x), dir_isotropic (uniform on the sphere), dir_sae_error "
        "(unit(x_hat - x)). Old names (sae_active, real, cov_random, isotropic, ...) are "
        "refused with their new name."))
    radial: Literal["project", "match", "keep"] = Field("project", description=(
        "What to do with each direction's component along x (downstream LayerNorms absorb "
        "growth along x, so it decides much of a direction's sensitivity): 'project' removes "
        "it (cos(d, x) = 0 for every family), 'match' gives every family the same cos(d, x) "
        "distribution (drawn from the pooled cosines of all families' raw directions), "
        "'keep' uses the families as defined. dir_sae_error is always kept (t = ||x - x_hat|| "
        "must land on x_hat). Every family's cos(d, x) mean and std are reported."))
    sae_sign: Literal["random", "plus", "minus"] = Field("random", description=(
        "Sign of the SAE decoder directions (dir_sae_latent, dir_sae_inactive, dir_sae_dead): "
        "'random' a fair coin per path, 'plus' +w_i (more of the latent), 'minus' -w_i."))
    n_paths: int = Field(8, ge=1, le=512, description="Directions per prompt and family "
                         "(sae_error has one per prompt).")
    n_steps: int = Field(20, ge=2, le=200, description="Equal steps of t from t_max/n_steps "
                         "to t_max (plus t = 0 and the small step).")
    t_max_rel: float = Field(2.0, gt=0, le=100, description="Largest perturbation length, "
                             "as a multiple of the median norm of the references x.")
    small_t_rel: float = Field(0.02, gt=0, description="The small step t_s for the "
                               "curvature KL(t_s)/t_s^2, as a multiple of the median ||x||; "
                               "must be below t_max_rel / n_steps.")
    kl_threshold: float = Field(0.1, gt=0, description="KL (nats) whose first crossing "
                                "defines the crossing length t_cross.")
    sae_family: Family = Field("dir_sae_latent", description="The SAE family in the headline "
                               "question 'are SAE directions more sensitive than the baseline?'.")
    baseline_family: Family = Field("dir_cov", description="The baseline of that "
                                    "question (covariance-matched, x not subtracted).")
    optimise: bool = Field(False, description="LOCAL MODELS ONLY (needs autograd through "
                           "the model; refused for remote subjects): also find the most "
                           "sensitive direction per prompt by gradient ascent of KL at "
                           "t = opt_t_rel * median ||x||, sweep it as family 'optimised' and "
                           "compare it with SAE decoder directions (max |cos|) against "
                           "random directions.")
    opt_t_rel: float = Field(0.25, gt=0, le=100, description="optimise: the length t of the "
                             "perturbation whose KL is maximised, times the median ||x||.")
    opt_restarts: int = Field(2, ge=1, le=64, description="optimise: random starts per "
                              "prompt (the best is kept).")
    opt_steps: int = Field(50, ge=1, le=10000, description="optimise: Adam steps.")
    opt_lr: float = Field(0.1, gt=0, description="optimise: Adam learning rate on the "
                          "unnormalised direction (initial norm about sqrt(d_model)).")
    rows_per_forward: int = Field(512, ge=1, le=16384, description="Perturbed rows per batched "
                                  "forward of the sweep engine.")

    @field_validator("families", "sae_family", "baseline_family")
    @classmethod
    def _known_families(cls, value):
        for name in (value if isinstance(value, tuple) else (value,)):
            _family(name)
        return value

    @model_validator(mode="after")
    def _check(self) -> "SensitiveDirectionsConfig":
        if len(set(self.families)) != len(self.families):
            twice = sorted({f for f in self.families if self.families.count(f) > 1})
            raise ValueError(f"families lists {', '.join(twice)} twice")
        for field in ("sae_family", "baseline_family"):
            if getattr(self, field) not in self.families:
                raise ValueError(f"{field}={getattr(self, field)!r} is not in families "
                                 f"({', '.join(self.families)})")
        first = self.t_max_rel / self.n_steps
        if self.small_t_rel >= first:
            raise ValueError(
                f"small_t_rel={self.small_t_rel:g} must be below the first grid step t_max_rel / "
                f"n_steps = {self.t_max_rel:g} / {self.n_steps} = {first:g}: lower small_t_rel "
                f"(e.g. {first / 2:g}) or n_steps, or raise t_max_rel")
        return self
