"""Config of the cis-toy-model idea: one flat, frozen pydantic model.

Each task's fields carry the task's prefix (``uand_``, ``cc_``, ``tms_``) so they can be
set from the command line (``--set task=tms --set tms_feature_prob=0.1``); only the selected
task's fields are used. Nothing here imports torch.
"""

from __future__ import annotations

from math import comb
from typing import Literal

from pydantic import Field, model_validator

from mi_ideas import IdeaConfig

Task = Literal["u-and", "compressed-computation", "tms"]


class CisConfig(IdeaConfig):
    """Settings of the three toy models of computation in superposition."""

    task: Task = Field(
        "u-and",
        description="Which toy model to train: 'u-and' (universal AND of boolean features), "
        "'compressed-computation' (100 ReLUs with 50 neurons, Braun et al. 2025, with the "
        "Bhagat et al. 2025 clean-label control) or 'tms' (toy model of superposition, "
        "Elhage et al. 2022).",
    )

    # --- U-AND -----------------------------------------------------------------------
    uand_n_features: int = Field(
        20, ge=2, le=2000, description="U-AND: number m of boolean input features."
    )
    uand_n_active: int = Field(
        3,
        ge=1,
        description="U-AND: active features per sample (exactly this many with "
        "uand_input='exact'; on average, each feature on with probability "
        "n_active/n_features, with uand_input='bernoulli').",
    )
    uand_input: Literal["exact", "bernoulli"] = Field(
        "exact",
        description="U-AND: input distribution: 'exact' (exactly n_active features on, "
        "uniformly chosen) or 'bernoulli' (each feature on independently).",
    )
    uand_n_gates: int | None = Field(
        None,
        ge=1,
        description="U-AND: number of AND gates (feature pairs), drawn at random without "
        "replacement; None means all m(m-1)/2 pairs.",
    )
    uand_n_neurons: int = Field(
        128,
        ge=1,
        description="U-AND: ReLU neurons in the trained MLP's hidden layer (fewer than "
        "gates for computation in superposition).",
    )
    uand_steps: int = Field(1500, ge=1, description="U-AND: Adam steps (MLP and control each).")
    uand_batch_size: int = Field(512, ge=1, description="U-AND: samples per training step.")
    uand_lr: float = Field(
        1e-2, gt=0, le=1, description="U-AND: peak Adam learning rate (cosine decay to 0)."
    )
    uand_threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="U-AND: a trained model (MLP or linear control) predicts gate (i,j) "
        "on when its linear readout is >= this value (targets are 0 or 1).",
    )
    uand_construction_p: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="U-AND construction: probability that a neuron is connected to a "
        "feature (W ~ Bernoulli(p), bias -1).",
    )
    uand_construction_neurons: int | None = Field(
        None,
        ge=1,
        description="U-AND construction: number of neurons; None means uand_n_neurons.",
    )
    uand_construction_threshold: float = Field(
        1.0,
        gt=0,
        description="U-AND construction: gate (i,j) is predicted on when the mean "
        "activation of the neurons connected to both i and j is >= this value (it is "
        ">= 1 whenever both features are on).",
    )
    uand_eval_samples: int = Field(
        20000,
        ge=100,
        description="U-AND: evaluation samples; with uand_input='exact' every input is "
        "enumerated instead when there are at most this many.",
    )

    # --- Compressed computation --------------------------------------------------------
    cc_n_features: int = Field(100, ge=2, description="Compressed computation: features n.")
    cc_n_neurons: int = Field(
        50, ge=1, description="Compressed computation: ReLU neurons in the MLP."
    )
    cc_d_embed: int = Field(
        1000,
        ge=2,
        description="Compressed computation: residual-stream width; W_E is a fixed random "
        "n x d_embed matrix with unit-norm rows, the unembedding is W_E^T.",
    )
    cc_feature_prob: float = Field(
        0.01,
        gt=0,
        le=1,
        description="Compressed computation: probability that a feature is non-zero "
        "(then uniform in [-1, 1]).",
    )
    cc_mixing_scale: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Compressed computation: sigma, the off-diagonal standard deviation "
        "of the mixing term in the labels (the MLP's target is ReLU(x) - sigma * M_hat x, "
        "with M_hat = W_E W_E^T - I normalised to unit off-diagonal std). The clean-label "
        "control (sigma = 0) is always trained as well; sigma = the embedding's own "
        "off-diagonal std (metric natural_mixing_scale, about 1/sqrt(d_embed)) gives "
        "exactly the original labels x + ReLU(x).",
    )
    cc_steps: int = Field(800, ge=1, description="Compressed computation: Adam steps per model.")
    cc_batch_size: int = Field(1024, ge=1, description="Compressed computation: batch size.")
    cc_lr: float = Field(
        1e-2, gt=0, le=1, description="Compressed computation: peak Adam learning rate."
    )
    cc_eval_samples: int = Field(
        200_000, ge=1000, description="Compressed computation: held-out evaluation samples."
    )

    # --- TMS ---------------------------------------------------------------------------
    tms_n_features: int = Field(5, ge=2, description="TMS: number of features n.")
    tms_n_dims: int = Field(2, ge=1, description="TMS: hidden dimensions m.")
    tms_feature_prob: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="TMS: probability that a feature is non-zero (1 - sparsity); values "
        "uniform in [0, 1]. The dense control uses probability 1.",
    )
    tms_importance_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="TMS: feature i has importance decay**i in the loss (1 = uniform).",
    )
    tms_n_instances: int = Field(
        8,
        ge=1,
        le=256,
        description="TMS: models trained in parallel from different initialisations; the "
        "lowest-loss one is reported.",
    )
    tms_steps: int = Field(2000, ge=1, description="TMS: Adam steps.")
    tms_batch_size: int = Field(512, ge=1, description="TMS: batch size per instance.")
    tms_lr: float = Field(1e-2, gt=0, le=1, description="TMS: Adam learning rate.")

    @model_validator(mode="after")
    def _check_sizes(self) -> "CisConfig":
        m = self.uand_n_features
        if self.uand_n_active > m:
            raise ValueError(f"uand_n_active ({self.uand_n_active}) > uand_n_features ({m})")
        if self.uand_input == "exact" and self.uand_n_active < 2:
            raise ValueError("uand_n_active must be >= 2 with uand_input='exact' (no AND is on)")
        if self.uand_n_gates is not None and self.uand_n_gates > comb(m, 2):
            raise ValueError(
                f"uand_n_gates ({self.uand_n_gates}) > number of feature pairs ({comb(m, 2)})"
            )
        if self.cc_n_neurons > self.cc_n_features:
            raise ValueError("cc_n_neurons must be <= cc_n_features (the naive baseline "
                             "gives one neuron to each of the first cc_n_neurons features)")
        if self.cc_d_embed < self.cc_n_features:
            raise ValueError("cc_d_embed must be >= cc_n_features (W_E must have full row rank)")
        if self.tms_n_dims > self.tms_n_features:
            raise ValueError("tms_n_dims must be <= tms_n_features")
        return self
