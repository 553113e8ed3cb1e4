"""Config of saes-vs-clustering (nothing here imports torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mi_ideas import IdeaConfig

Method = Literal["kmeans", "kmeans_scaled", "pca_kmeans", "sae", "random"]
ALL_METHODS: tuple[str, ...] = ("kmeans", "kmeans_scaled", "pca_kmeans", "sae", "random")


class SaesVsClusteringConfig(IdeaConfig):
    """Settings of saes-vs-clustering (the defaults run on the zoo in well under a CPU-minute)."""

    site: str = Field("resid_pre.2", description="Site whose activations are harvested (a "
                      "standard site name or a TransformerLens hook name); the zoo SAE reads "
                      "resid_pre.2. Ignored with activations=PATH.")
    activations: str | None = Field(None, description="Your own activations instead of a "
                                    "harvest: a safetensors file whose tensor 'activations' has "
                                    "shape (n_rows, d). The last eval_fraction of the rows are "
                                    "held out; no CE loss or purity is computed (no model "
                                    "produced these rows, no labels come with them).")
    sizes: list[int] = Field([16, 64, 256], min_length=1, description="Dictionary sizes K "
                             "of the sweep: k-means clusters, 1-sparse directions, SAE latents "
                             "and random directions, each at every K.")
    methods: list[Method] = Field(list(ALL_METHODS), min_length=1, description=(
        "Methods at each K: kmeans (nearest-centroid reconstruction), kmeans_scaled (one "
        "unit direction per cluster times its best coefficient, plus the mean: a 1-sparse "
        "dictionary), pca_kmeans (k-means on the top pca_dims principal components, "
        "centroids mapped back), sae (a TopK SAE trained with SAELens at d_sae = K), random "
        "(K random unit directions, the sae_k largest |projections| refitted by least "
        "squares, plus the mean). SAEs given with --sae are evaluated at their own size "
        "when they read this site."))
    n_texts: int | None = Field(None, ge=2, description="Use only the first n_texts texts of "
                                "the dataset (default: all of them).")
    n_eval_texts: int = Field(50, ge=1, description="Texts at the end of the dataset held "
                              "out for every evaluation (EV, CE, purity); dictionaries are "
                              "fitted on the others.")
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="With activations=PATH: the "
                                 "fraction of rows (the last ones) held out.")
    max_length: int = Field(64, ge=2, le=4096, description="Tokens per text (BOS included).")
    harvest_batch_size: int = Field(64, ge=1, description="Texts per forward pass (one "
                                    "request each for a remote subject).")
    kmeans_iters: int = Field(25, ge=1, le=1000, description="Lloyd iterations of every "
                              "k-means (and of the 1-sparse fit).")
    kmeans_backend: Literal["torch", "sklearn", "faiss"] = Field(
        "torch", description="k-means back-end: torch (batched, streams rows from disk; "
        "chosen by benchmarks/kmeans.py), sklearn or faiss (both read every row into "
        "memory; faiss needs faiss-cpu). Same k-means++ seeding for all.")
    pca_dims: int = Field(16, ge=1, description="Principal components kept by pca_kmeans.")
    sae_k: int = Field(8, ge=1, description="Active latents of the trained TopK SAEs (and "
                       "atoms of the random dictionary); at K <= sae_k it is K // 2.")
    sae_steps: int = Field(400, ge=10, description="SAELens training steps per SAE.")
    sae_batch_size: int = Field(256, ge=8, description="Rows per SAE training step.")
    sae_lr: float = Field(3e-3, gt=0, description="SAE learning rate (Adam, SAELens defaults).")
    purity_top: int = Field(10, ge=2, description="Top-activating held-out rows per unit "
                            "whose concept labels decide its purity.")
    purity_size: int | None = Field(None, description="The K the headlines and the answer "
                                    "quote (default: the largest of sizes); purity and the "
                                    "paired SAE-vs-clustering comparison are measured at every "
                                    "K of sizes, SAEs given with --sae at their own size.")
    purity_bootstrap: int = Field(500, ge=50, description="Resamples of the held-out texts in "
                                  "the paired bootstrap comparing SAE and clustering purity "
                                  "(cmp.sae_vs_METHOD.K.*).")
    ce: bool = Field(True, description="Compute the CE loss with each reconstruction spliced "
                     "into the model (harvested activations only).")
    ce_texts: int | None = Field(16, ge=1, description="Held-out texts (the first ones) whose "
                                 "positions are spliced for the CE loss (None: all n_eval_texts). "
                                 "Every splice is one forward pass per batch, and remotely each "
                                 "returns the logits of every scored position, so this is what "
                                 "a remote run pays for; the `ce_all` preset splices all.")
    torch_threads: int = Field(1, ge=0, description="Torch threads for the run (0: leave "
                               "torch's setting). One is fastest for zoo-sized models on a "
                               "shared machine and makes the numbers reproducible.")
    budget_mb: float = Field(256.0, gt=0, description="Training rows are held in memory when "
                             "they fit this budget, else streamed from the harvest's shards "
                             "on every pass.")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(k < 2 for k in v):
            raise ValueError(f"every dictionary size must be at least 2; got {v}.")
        if len(set(v)) != len(v):
            raise ValueError(f"sizes has repeated values: {v}.")
        return sorted(v)

    @field_validator("activations")
    @classmethod
    def _activations(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from mi_ideas.errors import UsageError
        from mi_ideas_plugins.dictionary.common.files import check_activations_header

        try:
            check_activations_header(v)  # reads the header only
        except UsageError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"methods has repeated values: {v}.")
        return v

    @model_validator(mode="after")
    def _purity_size(self) -> "SaesVsClusteringConfig":
        if self.purity_size is not None and self.purity_size not in self.sizes:
            raise ValueError(f"purity_size={self.purity_size} is not one of sizes={self.sizes}; "
                             f"pick one of them or leave it unset (the largest).")
        return self
