"""Config of activation-plateaus (nothing here imports torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mi_ideas import IdeaConfig

Family = Literal["real", "real_arc", "cov_gauss", "isotropic", "sae_latent", "sae_synthetic"]


class PlateauConfig(IdeaConfig):
    site: str = Field(
        "resid_pre.2",
        description="Residual-stream site perturbed (resid_pre.L), at the last position of "
                    "each prompt. Default: the zoo SAE's site, so the SAE families apply.")
    n_prompts: int = Field(40, ge=2, le=2000, description="Reference prompts (activations x).")
    n_pool: int = Field(400, ge=20, le=20000,
                        description="Other prompts whose activations form the pool of real "
                                    "activations (targets, mean and covariance).")
    prompt_tokens: int = Field(10, ge=2, le=128,
                               description="Tokens per prompt, BOS included (stories truncated).")
    families: list[Family] = Field(
        ["real", "cov_gauss", "isotropic", "sae_latent", "sae_synthetic", "real_arc"],
        description="Target types. real: another prompt's activation; real_arc: the same, "
                    "norm-preserving spherical path; cov_gauss: covariance-matched Gaussian "
                    "sample; isotropic: same mean and total variance, isotropic; sae_latent: x "
                    "plus a typical distance along an active latent's decoder direction; "
                    "sae_synthetic: a real activation with its SAE latents swapped for latents "
                    "of similar firing frequency.")
    n_paths: int = Field(2, ge=1, le=64, description="Paths per prompt and family.")
    n_steps: int = Field(40, ge=5, le=400, description="Steps per path.")
    step_modes: list[Literal["relative", "absolute"]] = Field(
        ["relative", "absolute"],
        description="relative: α from 0 to 1 towards the target (sharpness); absolute: fixed "
                    "step lengths along the unit direction (threshold crossings).")
    abs_max_distance: float = Field(
        1.5, gt=0, le=100, description="Absolute mode: the longest step, in units of the median "
                               "distance between two real activations.")
    kl_threshold: float = Field(0.5, gt=0, description="KL (nats) that ends a plateau.")
    compare_bases: bool = Field(
        True, description="Also perturb (isotropic directions, absolute steps) away from "
                          "covariance-matched Gaussian bases instead of real activations.")
    layers: list[int] = Field(
        [0, 1, 2, 3], max_length=256,
        description="Regions through layers: repeat real→real interpolation and the "
                    "real/isotropic crossing comparison at resid_pre.L for each L ([] to "
                    "skip).")
    steering: bool = Field(
        True, description="Steering through the plateau lens: KL along a difference-of-means "
                          "steering vector (emotion happy − sad prompts) vs real directions.")
    sae_reconstruction: bool = Field(
        True, description="Does the SAE reconstruction x̂ stay in x's plateau? (KL of x → x̂ "
                          "against isotropic steps of the same length).")
    reinit_control: bool = Field(
        True, description="Repeat real→real interpolation on the same architecture "
                          "re-initialised (sharpness should be ~1 there).")
    rows_per_forward: int = Field(1024, ge=1, le=16384,
                                  description="Sweep rows batched per forward.")

    @field_validator("families")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or not v:
            raise ValueError("families must be a non-empty list without repeats")
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
