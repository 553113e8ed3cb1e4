"""Config of sensitive-directions (nothing here imports torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mi_ideas import IdeaConfig

Family = Literal["sae_active", "sae_active_minus", "sae_inactive", "sae_dead", "real", "pca", "cov_random",
                 "cov_gauss", "isotropic", "sae_error"]
ALL_FAMILIES: tuple[str, ...] = ("sae_active", "sae_active_minus", "sae_inactive", "sae_dead",
                                 "real", "pca", "cov_random", "cov_gauss", "isotropic",
                                 "sae_error")


class SensitiveDirectionsConfig(IdeaConfig):
    """Settings of the sensitive-directions sweep (defaults run on the zoo in < 1 CPU-minute)."""

    n_prompts: int = Field(24, ge=2, le=4096, description="Reference prompts: the first "
                           "n_prompts texts of the dataset, each truncated to prompt_tokens.")
    prompt_tokens: int = Field(10, ge=2, le=1024, description="Tokens per prompt, BOS "
                               "included; x is the SAE site's activation at the last one.")
    pool_stories: int = Field(200, ge=1, le=20000, description="Texts after the prompts whose "
                              "activations (every token but BOS) form the pool: covariance, "
                              "PCA, real activations and SAE firing frequencies (dead latents).")
    families: tuple[Family, ...] = Field(ALL_FAMILIES, min_length=1, description=(
        "Direction families to sweep: sae_active / sae_inactive / sae_dead (unit SAE decoder "
        "rows +w_i of latents active at x / inactive at x but alive / never firing on the "
        "pool), sae_active_minus (-w_i of latents active at x), "
        "real (unit(x' - x)), pca (top principal components), cov_random (unit(Sigma^1/2 z), "
        "x not subtracted), cov_gauss (unit(g - x), g ~ N(mu, Sigma): subtracts x), "
        "isotropic (uniform on the sphere), sae_error (unit(x_hat - x))."))
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
    sae_family: Family = Field("sae_active", description="The SAE family in the headline "
                               "question 'are SAE directions more sensitive than the baseline?'.")
    baseline_family: Family = Field("cov_random", description="The baseline of that "
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
