"""Config of the sparsify-model idea (pydantic; no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mi_ideas import IdeaConfig


class SparsifyModelConfig(IdeaConfig):
    """Jacobian SAE pairs at every MLP of the model, over a sweep of the Jacobian penalty."""

    layers: list[int] | None = Field(None, description="MLP layers to sparsify (None: every layer).")
    lambdas: list[float] = Field([0.0, 0.3, 1.0], description="Jacobian L1 coefficients swept; 0 "
                                 "(the plain TopK pair) is always run as the control.")
    d_sae: int = Field(256, ge=4, description="Latents of each SAE of a pair.")
    k: int = Field(8, ge=1, description="TopK: active latents per token in each SAE.")
    steps: int = Field(100, ge=10, description="SAETrainer steps per pair (the `full` preset: 300).")
    batch_size: int = Field(256, ge=8, description="Tokens per training step.")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate (SAETrainer, constant with warm-up).")
    jacobian_eps: float = Field(0.05, gt=0, description="Jacobian density counts entries with |J| "
                                "above this value (in latent-activation units).")
    jacobian_kernel: Literal["auto", "c", "torch"] = Field(
        "auto", description="How the k x k Jacobian term is computed in training: 'c' a compiled "
        "per-token CPU pass (built on first use with the system C compiler), 'torch' blocked "
        "bmm over gathered rows (any device), 'auto' the first where it runs, else the "
        "second. Both give the same values (tests); 'c' is ~2x faster on CPU.")
    edge_min_tokens: int = Field(5, ge=1, description="An edge (input latent i -> output latent j) "
                                 "needs i and j co-active on at least this many held-out tokens.")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction of the harvested "
                                 "token rows (the last ones) held out for evaluation: at least "
                                 "64 rows, and at least every row of the CE texts, so no scored "
                                 "text is trained on.")
    max_length: int = Field(64, ge=4, description="Tokens per text (BOS included).")
    ce_texts: int = Field(24, ge=1, description="Texts scored for the spliced CE loss: the last "
                          "min(ce_texts, eval_fraction x texts) of the dataset, all held out.")
    save_dictionaries: bool = Field(True, description="Write every (layer, lambda) pair of the "
                                    "model as two SAELens dictionaries under artifacts/"
                                    "dictionaries/layer{L}.lambda{l}/in and /out (loadable with "
                                    "SAE.load_from_disk or --sae DIR; ~0.3 MB each at the defaults).")
    toy: bool = Field(True, description="Also run the planted toy MLP (a sparse, known "
                      "feature-to-feature map; metrics prefixed toy.).")
    toy_features: int = Field(24, ge=2, le=256, description="Toy: input (= output) features.")
    toy_lambdas: list[float] = Field([0.05], description="Toy: Jacobian coefficients (0 is always "
                                     "run; 0.05 recovers the planted edges at seeds 0-3, 0.1 starts "
                                     "to pull SAE 2 off the planted output directions).")
    toy_steps: int = Field(800, ge=10, description="Toy: SAETrainer steps per pair.")
    reinit_control: bool = Field(True, description="Repeat the lambda sweep on the re-initialised "
                                 "model (same architecture, fresh weights).")
    scale_match_control: bool = Field(True, description="Rescale the re-initialised model's MLP "
                                      "input and output (and its MLP to match) per layer so their "
                                      "mean norms on the training tokens equal the trained "
                                      "model's: the control then differs in its weights, not in "
                                      "the scale lambda and eps are read against (raw norms and "
                                      "the scales are reported: reinit.mlp_*_norm, "
                                      "reinit.mlp_*_scale).")

    @model_validator(mode="after")
    def _check(self) -> "SparsifyModelConfig":
        if self.k > self.d_sae:
            raise ValueError(f"k ({self.k}) is larger than d_sae ({self.d_sae}).")
        if any(v < 0 for v in self.lambdas):
            raise ValueError("lambdas must be >= 0 (0 is the plain TopK pair).")
        return self
