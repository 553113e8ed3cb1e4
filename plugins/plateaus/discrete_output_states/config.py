"""Config of discrete-output-states (nothing here imports torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mi_ideas import IdeaConfig


class DiscreteOutputStatesConfig(IdeaConfig):
    """Settings of the discrete-output-states experiment.

    The prompt family is the run's ``--data`` (default ``template:person_adjective``);
    every random choice (prompt subset, k-means starts, probe folds, pairs, the null
    partition) is drawn from the run's ``--seed``.
    """

    max_prompts: int = Field(
        256, ge=8, le=8192,
        description="Use at most this many prompts of the dataset (a random subset, drawn "
        "from the run's seed, when the dataset is larger).",
    )
    representation: Literal["hellinger", "logprob", "js"] = Field(
        "hellinger",
        description="What is clustered: 'hellinger' = k-means on sqrt(p) (Euclidean "
        "distance = sqrt(2) x Hellinger distance; weights tokens by probability), "
        "'logprob' = k-means on log-probs clamped at logprob_floor, 'js' = average-linkage "
        "agglomerative clustering on Jensen-Shannon distances.",
    )
    logprob_floor: float = Field(
        -20.0, lt=0, description="Clamp for log-probs in the 'logprob' representation (nats)."
    )
    k_min: int = Field(2, ge=2, le=256,
                       description="Smallest k tried by the silhouette criterion.")
    k_max: int = Field(
        16, ge=2, le=256, description="Largest k tried (both criteria); at most max_prompts - "
        "1, and capped at the number of prompts used - 1."
    )
    criterion: Literal["silhouette", "gap"] = Field(
        "silhouette",
        description="How k is chosen: 'silhouette' = the k in k_min..k_max with the largest "
        "mean silhouette, or k = 1 when that is below min_silhouette; 'gap' = the gap "
        "statistic (Tibshirani et al. 2001) over k = 1..k_max, the smallest k with "
        "Gap(k) >= Gap(k+1) - s(k+1). Both curves are reported either way.",
    )
    min_silhouette: float = Field(
        0.5, ge=-1, le=1,
        description="Silhouette criterion: below this best mean silhouette the answer is "
        "k = 1, no discrete states (Kaufman & Rousseeuw: <= 0.5 is weak structure that "
        "may be artificial, > 0.5 reasonable, > 0.7 strong).",
    )
    kmeans_restarts: int = Field(10, ge=1, le=100,
                                 description="k-means restarts (n_init) per k.")
    gap_references: int = Field(
        10, ge=2, le=100, description="Gap statistic: uniform reference sets per k."
    )
    stability_resamples: int = Field(
        5, ge=1, le=100,
        description="Cluster stability: random 80% subsets of the prompts re-clustered "
        "with the chosen k and compared with the full clustering (adjusted Rand index).",
    )
    probe_sites: list[str] | None = Field(
        None, max_length=256,
        description="Sites probed for the cluster label, at the last position; None means "
        "resid_pre.0 (token + position embedding) and resid_post.L for every layer.",
    )
    probe_folds: int = Field(5, ge=2, le=20, description="Cross-validation folds of the probe.")
    probe_c: float = Field(
        1.0, gt=0, description="Inverse L2 regularisation strength of the logistic probe."
    )
    probe_shuffles: int = Field(
        3, ge=1, le=100, description="Shuffled-label control: label permutations per site."
    )
    site: str = Field(
        "resid_pre.1",
        description="Where pairs are interpolated (a resid_pre.L site, last position), "
        "with the shared sweep engine, kind='target'.",
    )
    n_pairs: int = Field(
        48, ge=2, le=4096,
        description="Reference prompts; each gets a same-cluster partner, an other-cluster "
        "partner, a distance-matched same-cluster path and two null-partition partners.",
    )
    n_steps: int = Field(21, ge=3, le=400,
                         description="Interpolation steps, alpha = 0..1 inclusive.")
    kl_threshold: float = Field(
        0.5, gt=0,
        description="KL (nats) a curve must exceed to count as having left its start's "
        "output state (plateau length = first step above it).",
    )
    rows_per_forward: int = Field(
        512, ge=1, le=16384,
        description="Sweep rows (prompt x path x step) per forward pass."
    )

    @model_validator(mode="after")
    def _check(self) -> "DiscreteOutputStatesConfig":
        if self.k_max < self.k_min:
            raise ValueError(f"k_min={self.k_min} exceeds k_max={self.k_max}: the range of k "
                             f"tried is k_min..k_max; lower k_min or raise k_max.")
        if self.k_max > self.max_prompts - 1:
            raise ValueError(f"k_max={self.k_max} exceeds max_prompts - 1 = "
                             f"{self.max_prompts - 1}: k clusters need at least k + 1 prompts; "
                             f"lower k_max or raise max_prompts.")
        if self.probe_folds > self.max_prompts:
            raise ValueError(f"probe_folds={self.probe_folds} exceeds max_prompts="
                             f"{self.max_prompts}: each fold needs a held-out prompt; lower "
                             f"probe_folds.")
        if self.criterion == "gap" and self.representation == "js":
            raise ValueError("the gap criterion needs a Euclidean representation "
                             "(hellinger or logprob), not js.")
        return self
