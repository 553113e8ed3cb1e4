"""Config of the transcoder-clustering idea (pydantic; no torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mi_ideas import IdeaConfig

Source = Literal["toy", "uand", "model"]


class TranscoderClusteringConfig(IdeaConfig):
    """Where to cluster transcoder latents, how to measure co-activation, how to cluster."""

    sources: list[Source] = Field(
        ["toy", "model"],
        description="What to run: 'toy' (the planted-module MLP; metrics without prefix, "
        "e.g. coact.ari), 'uand' (a cis-toy-model U-AND MLP, gates as modules; prefix "
        "uand.) and 'model' (the subject with its transcoder, --model / --sae; prefix "
        "model.). Each trains or loads its own transcoder.",
    )
    affinity: Literal["phi", "jaccard", "correlation"] = Field(
        "phi", description="Latent co-activation affinity: phi coefficient of firing, Jaccard "
        "index of firing sets, or Pearson correlation of activations (negatives set to 0).")
    method: Literal["spectral", "agglomerative"] = Field(
        "spectral", description="scikit-learn clustering on the precomputed affinity: "
        "spectral, or average-linkage agglomerative on 1 - affinity.")
    n_clusters: int | None = Field(
        None, ge=2, description="Number of clusters; None chooses it by the eigengap of the "
        "normalised Laplacian of the co-activation affinity (up to max_clusters).")
    max_clusters: int = Field(40, ge=2, le=500, description="Largest k the eigengap criterion considers.")
    min_fires: int = Field(10, ge=1, description="Latents firing on fewer samples are left out "
                           "(their co-activation is noise); the count left out is reported.")
    n_seeds: int = Field(3, ge=1, le=20, description="Toy / U-AND: transcoders trained from this "
                         "many seeds (stability across seeds: mean and range of coact.ari).")

    # --- toy -------------------------------------------------------------------------
    toy_modules: int = Field(8, ge=2, le=64, description="Toy: number M of modules.")
    toy_features: int = Field(4, ge=1, le=32, description="Toy: input features per module.")
    toy_redundancy: int = Field(4, ge=1, le=32, description="Toy: redundant ReLUs R per module "
                                "(staggered thresholds). R = 1 is the no-redundancy case.")
    toy_d_in: int = Field(48, ge=2, description="Toy: MLP input dimension (feature embedding).")
    toy_output: Literal["shared", "orthogonal"] = Field(
        "shared", description="Toy: where the modules write. 'shared': ReLU r of every module "
        "writes the same random output direction, so decoder directions carry no module "
        "information (latents are assigned to modules by what their encoder reads); "
        "'orthogonal': each module writes into its own orthogonal output subspace (decoder "
        "cosine then separates modules as well as co-activation; latents assigned by decoder).")
    toy_d_out: int | None = Field(None, ge=2, description="Toy: MLP output dimension "
                                  "(None: 8 with toy_output='shared', where the M * R random "
                                  "directions overlap; 32 with 'orthogonal', which needs a "
                                  "multiple of toy_modules: each module writes to d_out / M).")
    toy_module_prob: float = Field(0.1, gt=0, le=1, description="Toy: probability that a "
                                   "module is active in a sample (1.0: no module gating).")
    toy_feature_prob: float = Field(0.5, gt=0, le=1, description="Toy: probability that a "
                                    "feature of an active module is on.")
    toy_samples: int = Field(16384, ge=512, description="Toy: training samples for the transcoder.")
    toy_eval_samples: int = Field(8192, ge=512, description="Toy: held-out samples whose "
                                  "latent activations are clustered.")
    toy_d_sae: int = Field(64, ge=2, description="Toy / U-AND: transcoder latents.")
    l1_coefficient: float = Field(1.0, gt=0, description="Toy / U-AND: transcoder L1 coefficient "
                                  "(SAELens StandardTrainingSAE, decoder-norm weighted).")
    steps: int = Field(800, ge=10, description="Toy / U-AND: transcoder training steps (SAETrainer).")
    batch_size: int = Field(256, ge=8, description="Toy / U-AND: transcoder batch size.")
    lr: float = Field(3e-3, gt=0, description="Toy / U-AND: transcoder learning rate.")
    assign_threshold: float = Field(0.5, gt=0, le=1, description="A latent belongs to the "
                                    "module holding at least this share of its decoder's "
                                    "squared norm; others are unassigned (counted, not scored).")

    # --- U-AND -----------------------------------------------------------------------
    uand_features: int = Field(16, ge=4, description="U-AND: boolean input features.")
    uand_gates: int = Field(8, ge=2, description="U-AND: AND gates (random feature pairs), the modules.")
    uand_neurons: int = Field(32, ge=2, description="U-AND: hidden ReLU neurons.")
    uand_steps: int = Field(800, ge=10, description="U-AND: Adam steps training the MLP.")

    # --- model -----------------------------------------------------------------------
    model_texts: int = Field(200, ge=8, description="Model: texts of the dataset harvested.")
    model_texts: int | None = Field(None, ge=4, description="Model: use only the first this "
                                    "many texts of the dataset (None: all of --data).")
    model_max_length: int = Field(48, ge=4, description="Model: tokens per text (BOS included).")
    model_clusters: int | None = Field(32, ge=2, description="Model: number of clusters "
                                       "(None: the eigengap criterion, up to max_clusters; on "
                                       "the zoo it picks 2, see the docs page).")
    top_contexts: int = Field(20, ge=1, description="Model: top-activating tokens kept per "
                                "cluster (their concept purity is reported).")

    @model_validator(mode="before")
    @classmethod
    def _default_d_out(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("toy_d_out") is None:
            data = dict(data, toy_d_out=8 if data.get("toy_output", "shared") == "shared" else 32)
        return data

    @model_validator(mode="after")
    def _check(self) -> "TranscoderClusteringConfig":
        if not self.sources:
            raise ValueError("sources is empty: give at least one of 'toy', 'uand', 'model'.")
        if self.toy_output == "orthogonal" and self.toy_d_out % self.toy_modules:
            raise ValueError(f"toy_d_out ({self.toy_d_out}) must be a multiple of toy_modules "
                             f"({self.toy_modules}): each module writes to d_out / M dimensions.")
        if self.toy_d_sae < self.toy_modules:
            raise ValueError(f"toy_d_sae ({self.toy_d_sae}) is below toy_modules "
                             f"({self.toy_modules}): give the transcoder at least one latent per module.")
        return self
